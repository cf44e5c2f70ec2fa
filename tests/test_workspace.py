"""atomic_write and atomic_write_with: a target is either its old content or the new one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segments.workspace import atomic_write, atomic_write_with, sha256_file, write_json


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "table.bin"
    with atomic_write(target, "wb") as fh:
        fh.write(b"old")
    with pytest.raises(RuntimeError, match="disk"), atomic_write(target, "wb") as fh:
        fh.write(b"half of the new")
        raise RuntimeError("disk vanished")
    assert target.read_bytes() == b"old"
    assert _leftovers(target.parent) == []


def test_atomic_write_text_is_utf8(tmp_path: Path) -> None:
    target = tmp_path / "note.txt"
    with atomic_write(target, "w") as fh:
        fh.write("Västra Götaland")
    assert target.read_bytes() == "Västra Götaland".encode()


def test_atomic_write_with_cleans_up_after_a_failing_writer(tmp_path: Path) -> None:
    target = tmp_path / "frame.parquet"
    target.write_bytes(b"previous")

    def failing(path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError("writer failed")

    with pytest.raises(OSError, match="writer failed"):
        atomic_write_with(target, failing)
    assert target.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []
    atomic_write_with(target, lambda path: path.write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_write_json_is_sorted_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "card.json"
    write_json(target, {"b": 1, "a": "Örebro"})
    text = target.read_text(encoding="utf-8")
    assert json.loads(text) == {"a": "Örebro", "b": 1}
    assert text.index('"a"') < text.index('"b"') and "Örebro" in text


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    target = tmp_path / "x"
    target.write_bytes(b"x" * 3_000_000)  # more than one read block
    assert sha256_file(target) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_the_per_user_data_folder_and_synthetic_proofs_are_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18 review: ~/.local/share/segments and synthetic-proofs/ were 0755 and proof
    files 0644 (mkdir's parents ignore its mode). Everything there is owner-only now, and a
    loose folder left by an older version is tightened."""
    import stat

    from segments.privacy import synthetic
    from segments.workspace import private_folder

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "data" / "segments"
    proof = synthetic._verdict(True, "generated", "k" * 16)
    synthetic._write_cached(proof)
    written = root / "synthetic-proofs" / f"{proof.key}.json"
    assert written.is_file()
    for path in (root, root / "synthetic-proofs"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert synthetic._read_cached(proof.key) == proof

    root.chmod(0o755)  # a folder an older version made
    private_folder(root / "ledgers" / "evaluation")
    for path in (root, root / "ledgers", root / "ledgers" / "evaluation"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir(mode=0o755)
    private_folder(elsewhere / "a" / "b")  # outside it: only what it creates is tightened
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    assert stat.S_IMODE((elsewhere / "a").stat().st_mode) == 0o700


def test_a_writer_killed_mid_write_leaves_the_old_file_and_a_swept_leftover(
    tmp_path: Path,
) -> None:
    """``kill -9`` inside ``atomic_write`` (no ``finally`` runs): the target keeps its old
    bytes, and the temporary file the dead writer left is removed by the next run's sweep
    (its pid is in its name), while a live writer's is kept."""
    import os
    import signal
    import subprocess
    import sys

    from segments.workspace import Workspace

    ws = Workspace(tmp_path / "ws").create()
    target = ws.segments / "labels.parquet"
    target.write_bytes(b"old labels")
    script = (
        "import os, signal, sys\n"
        "from segments.workspace import atomic_write\n"
        "with atomic_write(sys.argv[1], 'wb') as fh:\n"
        "    fh.write(b'half of the new labels'); fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script, str(target)], env=env)
    assert done.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old labels"
    left = _leftovers(ws.segments)
    assert len(left) == 1 and left[0].startswith(".labels.parquet.p")
    with atomic_write(ws.segments / "profiles.parquet", "wb") as fh:  # a live writer's tmp
        fh.write(b"in progress")
        live = _leftovers(ws.segments)
        assert ws.sweep() == [ws.segments / left[0]]  # the dead writer's only
        assert _leftovers(ws.segments) == [n for n in live if n != left[0]]
    assert _leftovers(ws.segments) == []
