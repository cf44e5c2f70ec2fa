"""Proof that a workspace's raw data is synthetic: regenerate it and compare the bytes.

Evaluation and demo ledgers allow simulated time and repeated releases, so they accept only
synthetic data — and "synthetic" is proven, not declared. The manifest's ``synthetic`` flag
is one editable line; instead the raw files' SHA-256 must equal what the generator
(:func:`segments.synth.generate`) produces for the manifest's seed and parameters. The data
is regenerated in a temporary folder inside the workspace and compared file by file; a
table that differs must hold only rows the generator made (same columns, same values; only
the data-subject request flags may differ), which is what the project's own erasures,
retention purges, restored backups and restrictions leave. The verdict is cached by the
files' hashes (in memory and in the per-user data folder), so the proof runs once per
dataset. Editing the manifest cannot help: other parameters give other bytes, and a row, value
or column the generator never made fails the comparison.

The cached verdict and the provenance record of prepared frames are signed with an HMAC
under a per-user secret (``proof-secret.key``, created 0600 beside the registry of
controller ledgers): a forged or edited cache file is ignored (the proof runs again) and a
forged provenance record is refused. What is released on a demo or evaluation ledger is bound
to what was proven: :func:`segments.prepare.prepare` records the raw files' hashes it read and
its own outputs' hashes (``W/prepared/<purpose>/provenance.json``), and
:func:`verify_prepared` recomputes both before such a ledger is opened for the purpose.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segments._tables import RawChangedError, bound_file_bytes, reads_bound_to
from segments.provenance import (
    PROVENANCE_FILE,
    REPLAY_FILE,
    _sign,
    _signed,
    raw_hashes,
    verify_prepared,
    verify_replay,
)
from segments.workspace import MANIFEST, Workspace, raw_hashed_once, sha256_file

__all__ = [
    "PROVENANCE_FILE",
    "SyntheticProof",
    "prove_synthetic",
    "raw_digest",
    "raw_hashes",
    "verify_prepared",
]

_CACHE: dict[str, SyntheticProof] = {}
#: What a verdict decides (part of its cache key).
_RULE = "generated rows only, request flags aside"


@dataclass(frozen=True)
class SyntheticProof:
    """Verdict of :func:`prove_synthetic` (truthy when the data is proven synthetic).

    Attributes
    ----------
    proven : bool
    reason : str
        Why (not): the mismatching file, a missing manifest, or the parameters reproduced.
    key : str
        SHA-256 over the raw files' hashes and the generator parameters (the cache key).
    raw : str
        SHA-256 over every file under ``W/raw/`` (:func:`raw_digest`): the workspace the
        verdict is about. A ledger opened with this proof takes releases of that raw data
        only, never another workspace's.
    """

    proven: bool
    reason: str
    key: str = ""
    mac: str = ""
    raw: str = ""

    def __bool__(self) -> bool:
        return self.proven

    @property
    def signed(self) -> bool:
        """True when :func:`prove_synthetic` made this verdict (an HMAC under the per-user
        secret): a ledger takes only a signed proof, never a flag or a hand-made object."""
        record = {"key": self.key, "proven": self.proven, "reason": self.reason, "raw": self.raw}
        return bool(self.mac) and _signed({**record, "mac": self.mac})

    def is_for(self, workspace: Workspace | str | Path) -> bool:
        """True when this signed verdict is about ``workspace``'s raw files as they are now."""
        return self.signed and self.raw == raw_digest(workspace)


def raw_digest(workspace: Workspace | str | Path) -> str:
    """SHA-256 over the SHA-256 of every file under ``W/raw/`` (what a proof is about)."""
    return _digest_of(raw_hashes(workspace))


def _digest_of(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def _verdict(proven: bool, reason: str, key: str = "", raw: str = "") -> SyntheticProof:
    """A signed verdict (only this module signs them)."""
    record = _sign({"key": key, "proven": proven, "reason": reason, "raw": raw})
    return SyntheticProof(proven, reason, key, record["mac"], raw)


def prove_synthetic(workspace: Workspace | str | Path) -> SyntheticProof:
    """Prove that ``W/raw/`` holds only what the generator makes for its manifest.

    Parameters
    ----------
    workspace : Workspace or path

    Returns
    -------
    SyntheticProof
        ``proven`` True only when every file the generator writes exists in ``W/raw/`` with
        the same SHA-256 (the manifest's own hashes are not trusted: they are recomputed), or
        every table that differs holds only rows the generator made, request flags aside
        (what erasures, retention purges, restored backups and ``subject restrict`` leave).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    # One hashing per folder for the whole proof: a replay's check (verify_replay) and its
    # source's proof then judge the very digests the verdict names, so a swap of W/raw
    # between two readings cannot get a signed verdict for files nobody checked (r9a M1).
    with raw_hashed_once():
        return _prove(ws)


def _prove(ws: Workspace) -> SyntheticProof:
    hashes = raw_hashes(ws)  # every raw file, hashed once
    raw = _digest_of(hashes)
    if MANIFEST not in hashes:
        return _verdict(False, f"{ws.manifest} is missing: no generator parameters", raw=raw)
    try:
        with reads_bound_to(ws.raw, hashes):  # the manifest parsed is the one hashed, read once
            data = bound_file_bytes(ws.manifest)
        manifest = json.loads(data or b"")
    except ValueError as exc:
        return _verdict(False, f"{ws.manifest} is not JSON ({exc})", raw=raw)
    if isinstance(manifest, dict) and (ws.root / REPLAY_FILE).is_file():
        return _rewound(ws, manifest, raw)
    try:
        parameters = _generator_parameters(manifest)
    except (ValueError, KeyError, TypeError) as exc:
        return _verdict(False, f"{ws.manifest} names no generator parameters ({exc})", raw=raw)
    names = sorted(str(name) for name in manifest.get("files", {}))
    if not names:
        return _verdict(False, f"{ws.manifest} lists no files", raw=raw)
    actual = {}
    for name in names:
        if name not in hashes:
            return _verdict(False, f"{ws.raw / name} is missing", raw=raw)
        actual[name] = hashes[name]
    key = hashlib.sha256(
        json.dumps(
            {
                "files": actual,
                "raw": raw,  # a file beside the generated ones makes another verdict
                "parameters": parameters,
                "rule": _RULE,  # a verdict cached under an earlier rule is not reused
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    cached = _CACHE.get(key) or _read_cached(key)
    if cached is not None:
        _CACHE[key] = cached
        return cached
    proof = _regenerate_and_compare(ws, parameters, hashes, key, raw)
    _CACHE[key] = proof
    _write_cached(proof)
    return proof


def _rewound(ws: Workspace, manifest: dict[str, Any], raw: str) -> SyntheticProof:
    """A backfill's replay (``W/.history``): its rows are its source's, dated back, so it is
    proven when its signed replay record binds it to the source's raw files as they are now
    and the source itself is proven (never the replay's own manifest)."""
    source = manifest.get("rewound_from")
    if not isinstance(source, str) or Path(source).resolve() == ws.root.resolve():
        return _verdict(
            False, f"{ws.manifest} names no other workspace it was rewound from", raw=raw
        )
    origin = Workspace(Path(source))
    problem = verify_replay(origin, ws)
    if problem is not None:
        return _verdict(False, problem, raw=raw)
    if (origin.root / REPLAY_FILE).is_file():
        return _verdict(False, f"{origin.root} is itself a replay", raw=raw)
    proof = prove_synthetic(origin)
    reason = f"rewound (signed) from {origin.raw}, which is {'' if proof else 'not '}proven: "
    return _verdict(proof.proven and proof.signed, reason + proof.reason, raw=raw)


def _generator_parameters(manifest: dict[str, Any]) -> dict[str, Any]:
    parameters = manifest["parameters"]
    return {
        "customers": int(parameters["customers"]),
        "months": int(parameters["months"]),
        "as_of": dt.date.fromisoformat(str(parameters["as_of"])).isoformat(),
        "seed": int(manifest["seed"]),
    }


def _regenerate_and_compare(
    ws: Workspace, parameters: dict[str, Any], hashes: dict[str, str], key: str, raw: str
) -> SyntheticProof:
    """Regenerate in a scratch folder and compare: every generated file byte for byte, else
    every table that differs row by row (:func:`_generated_rows_only`). ``hashes`` is every
    raw file's SHA-256: a file the generator never wrote inside one of its tables (an extra
    month partition) makes that table differ too."""
    from segments.synth.generate import generate

    ws.root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=ws.root, prefix=f".synthetic-proof-p{os.getpid()}-"))
    try:
        try:
            result = generate(
                Workspace(scratch),
                customers=parameters["customers"],
                months=parameters["months"],
                as_of=dt.date.fromisoformat(parameters["as_of"]),
                seed=parameters["seed"],
                progress=False,
            )
        except Exception as exc:  # the manifest's parameters do not even generate
            reason = f"the manifest's parameters do not generate data ({exc})"
            return _verdict(False, reason, key, raw)
        expected = {name: sha256_file(result.path / name) for name in result.manifest["files"]}
        tables = {_table_of(name) for name in expected}
        differing = sorted(
            {name for name, digest in expected.items() if hashes.get(name) != digest}
            | {name for name in hashes if _table_of(name) in tables and name not in expected}
        )
        if not differing:
            return _verdict(
                True, f"raw files equal the generator's output for {parameters}", key, raw
            )
        try:
            with reads_bound_to(ws.raw, hashes):  # parse the bytes the verdict's key names
                removed = _generated_rows_only(ws, result.path, differing)
        except RawChangedError:
            raise  # a raw file changed while the proof read it: no verdict, nothing cached
        except Exception as exc:  # a raw table that does not even read
            removed = None
            differing = [f"{differing[0]} ({' '.join(str(exc).split())[:160]})"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if removed is not None:
        gone = ", ".join(f"{n} {t.removesuffix('.parquet')}" for t, n in removed.items() if n)
        return _verdict(
            True,
            f"raw files hold only rows the generator makes for {parameters} (rows removed: "
            f"{gone or 'none'}; request flags may differ)",
            key,
            raw,
        )
    return _verdict(
        False,
        f"raw/{differing[0]} is not what the generator produces for seed {parameters['seed']} "
        f"and parameters {parameters}, nor a subset of its rows (a row, value or column the "
        "generator never made)",
        key,
        raw,
    )


#: The data-subject request flags: ``subject restrict`` sets one, a controller's export marks
#: the others. A flipped boolean cannot carry anyone into the data, so these may differ from
#: the generator's values; every other value of a row must be the generator's.
REQUEST_FLAGS = ("erasure_requested", "restriction_requested", "profiling_objection")


def _table_of(name: str) -> str:
    """The table a raw file belongs to (a month partition stands for its table)."""
    return name.split("/", 1)[0] if not name.startswith("truth/") else name


def _generated_rows_only(
    ws: Workspace, generated: Path, differing: list[str]
) -> dict[str, int] | None:
    """Rows removed per table when every table that differs holds only rows the generator
    made (the same columns and values, :data:`REQUEST_FLAGS` aside); None otherwise.

    This is what the project's own flows leave on generated data: an erasure (logged or
    pending) and a retention purge remove rows, a restored backup is an earlier such state,
    ``subject restrict`` and the controller's request flags flip booleans. None of them can
    bring in a person the generator did not make, and that is what the public demo key needs:
    a row edited, added or given an extra column is not the generator's, so it is refused.
    """
    from segments._tables import read_table

    removed: dict[str, int] = {}
    for table in sorted({_table_of(name) for name in differing}):
        theirs = read_table(generated / table)
        ours = read_table(ws.raw / table)  # read as prepare reads it: every partition file
        if ours.schema != theirs.schema:
            return None  # a column added, dropped, renamed or retyped
        values = [c for c in theirs.columns if c not in REQUEST_FLAGS]
        foreign = ours.select(values).join(
            theirs.select(values).unique(), on=values, how="anti", nulls_equal=True
        )
        if foreign.height or ours.height > theirs.height:
            return None  # a row the generator never made, or more rows than it made
        removed[table] = theirs.height - ours.height
    return removed


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("segments")) / "synthetic-proofs"


def _read_cached(key: str) -> SyntheticProof | None:
    try:
        data = json.loads((_cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    if not isinstance(data.get("proven"), bool) or not isinstance(data.get("raw"), str):
        return None  # an older verdict that names no raw data: prove again
    if not _signed(data):
        return None  # forged or edited: prove again
    return SyntheticProof(
        data["proven"], str(data.get("reason", "")), key, str(data["mac"]), str(data.get("raw"))
    )


def _write_cached(proof: SyntheticProof) -> None:
    try:
        from segments.workspace import private_folder

        folder = private_folder(_cache_dir())  # owner-only, its parents too
        tmp = folder / f".{proof.key}.p{os.getpid()}.tmp"
        record = {
            "key": proof.key,
            "proven": proof.proven,
            "reason": proof.reason,
            "raw": proof.raw,
        }
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(_sign(record)))
        tmp.replace(folder / f"{proof.key}.json")
    except OSError:
        pass  # the cache only saves time
