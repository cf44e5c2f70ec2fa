"""Tests of segments.prepare.pseudonym: keyed HMAC pseudonyms and key handling."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segments.exceptions import PolicyError
from segments.prepare.pseudonym import (
    KEY_ENV_VAR,
    PseudonymKey,
    demo_key,
    load_key,
    pseudonymise,
)
from segments.workspace import Workspace, write_json

KEY_A = PseudonymKey(b"a" * 32, "steward key (test)")
KEY_B = PseudonymKey(b"b" * 32, "steward key (test)")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2**62), min_size=1, max_size=30, unique=True))
def test_same_key_same_pseudonyms_different_key_unlinkable(ids: list[int]) -> None:
    a1 = pseudonymise(KEY_A, "person", ids)
    assert a1 == pseudonymise(KEY_A, "person", ids)
    b = pseudonymise(KEY_B, "person", ids)
    assert not set(a1) & set(b)
    assert len(set(a1)) == len(ids)
    assert all(len(p) == 32 and int(p, 16) >= 0 and p == p.lower() for p in a1)


def test_namespaces_separate_person_and_order_pseudonyms() -> None:
    assert pseudonymise(KEY_A, "person", [5]) != pseudonymise(KEY_A, "order", [5])


def test_repr_never_shows_the_secret() -> None:
    assert "aaaa" not in repr(KEY_A)
    assert len(KEY_A.key_id) == 16 and KEY_A.key_id != KEY_B.key_id


def test_short_key_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"31 bytes is too short; a key needs at least 32"):
        PseudonymKey(b"x" * 31, "steward key (test)")


def test_short_key_from_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV_VAR, "short")
    with pytest.raises(PolicyError, match=r"environment variable.*too short"):
        load_key()


def test_environment_key_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV_VAR, "k" * 64)
    key = load_key()
    assert key.secret == b"k" * 64 and "environment variable" in key.provenance


def _workspace(tmp_path: Path, manifest: dict[str, object] | None) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.raw.mkdir(parents=True)
    if manifest is not None:
        write_json(ws.manifest, manifest)
    return ws


def test_demo_key_only_for_synthetic_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = _workspace(tmp_path, {"synthetic": True, "seed": 7})
    key = load_key(workspace=ws)
    assert key.is_demo and key.provenance == "demo key derived from dataset seed"
    assert key.secret == demo_key({"synthetic": True, "seed": 7}).secret
    assert key.secret != demo_key({"synthetic": True, "seed": 8}).secret


def test_no_key_on_real_data_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    ws = _workspace(tmp_path, {"synthetic": False})
    with pytest.raises(PolicyError, match=r"not marked synthetic, so a demo key is refused"):
        load_key(workspace=ws)
    with pytest.raises(PolicyError, match=r"no pseudonymisation key"):
        load_key(workspace=_workspace(tmp_path / "other", None))


def test_demo_key_on_real_data_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"demo pseudonymisation key is refused"):
        demo_key({"synthetic": False, "seed": 7})
    with pytest.raises(PolicyError, match=r"has no 'seed'"):
        demo_key({"synthetic": True})


def test_key_file_outside_the_workspace_is_used(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"synthetic": False})
    key_file = tmp_path / "steward.key"
    key_file.write_text("s" * 40 + "\n")
    key_file.chmod(0o600)  # the steward's alone (a readable key file is refused)
    key = load_key(key_file=key_file, workspace=ws)
    assert key.secret == b"s" * 40 and key.provenance == "steward key (key file)"


def test_key_file_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"synthetic": False})
    for inside in (ws.root / "k.key", ws.raw / "k.key"):
        inside.write_text("s" * 40)
        with pytest.raises(PolicyError, match=r"never be kept beside the data"):
            load_key(key_file=inside, workspace=ws)


def test_key_file_in_the_data_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "k.key").write_text("s" * 40)
    with pytest.raises(PolicyError, match=r"inside data"):
        load_key(key_file="data/k.key")


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"does not exist"):
        load_key(key_file=tmp_path / "none.key")
