"""Proof that a workspace's raw data is synthetic: regenerate it and compare the bytes.

Evaluation and demo ledgers allow simulated time and repeated releases, so they accept only
synthetic data — and "synthetic" is proven, not declared. The manifest's ``synthetic`` flag
is one editable line; instead the raw files' SHA-256 must equal what the generator
(:func:`segments.synth.generate`) produces for the manifest's seed and parameters. The data
is regenerated in a temporary folder inside the workspace and compared file by file; the
verdict is cached by the files' hashes (in memory and in the per-user data folder), so the
proof runs once per dataset. Editing the manifest cannot help: other parameters give other
bytes, and any other data fails the comparison.

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

from segments.provenance import (
    PROVENANCE_FILE,
    _sign,
    _signed,
    raw_hashes,
    verify_prepared,
)
from segments.workspace import Workspace, sha256_file

__all__ = [
    "PROVENANCE_FILE",
    "SyntheticProof",
    "prove_synthetic",
    "raw_digest",
    "raw_hashes",
    "verify_prepared",
]

_CACHE: dict[str, SyntheticProof] = {}


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
    """Prove that ``W/raw/`` is exactly what the generator makes for its manifest.

    Parameters
    ----------
    workspace : Workspace or path

    Returns
    -------
    SyntheticProof
        ``proven`` True only when every file the generator writes exists in ``W/raw/`` with
        the same SHA-256 (the manifest's own hashes are not trusted: they are recomputed).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    hashes = raw_hashes(ws)  # every raw file, hashed once
    raw = _digest_of(hashes)
    if not ws.manifest.exists():
        return _verdict(False, f"{ws.manifest} is missing: no generator parameters", raw=raw)
    try:
        manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
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
    log = ws.subject_log
    key = hashlib.sha256(
        json.dumps(
            {
                "files": actual,
                "raw": raw,  # a file beside the generated ones makes another verdict
                "parameters": parameters,
                "erasure_log": sha256_file(log) if log.is_file() else None,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    cached = _CACHE.get(key) or _read_cached(key)
    if cached is not None:
        _CACHE[key] = cached
        return cached
    proof = _regenerate_and_compare(ws, parameters, actual, key, raw)
    _CACHE[key] = proof
    _write_cached(proof)
    return proof


def _generator_parameters(manifest: dict[str, Any]) -> dict[str, Any]:
    parameters = manifest["parameters"]
    return {
        "customers": int(parameters["customers"]),
        "months": int(parameters["months"]),
        "as_of": dt.date.fromisoformat(str(parameters["as_of"])).isoformat(),
        "seed": int(manifest["seed"]),
    }


def _regenerate_and_compare(
    ws: Workspace, parameters: dict[str, Any], actual: dict[str, str], key: str, raw: str
) -> SyntheticProof:
    from segments.synth.generate import generate

    ws.root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=ws.root, prefix=f".synthetic-proof-p{os.getpid()}-"))
    try:
        result = generate(
            Workspace(scratch),
            customers=parameters["customers"],
            months=parameters["months"],
            as_of=dt.date.fromisoformat(parameters["as_of"]),
            seed=parameters["seed"],
            progress=False,
        )
        expected = {name: sha256_file(result.path / name) for name in result.manifest["files"]}
        differing = sorted(name for name, digest in expected.items() if actual.get(name) != digest)
        if not differing:
            return _verdict(
                True, f"raw files equal the generator's output for {parameters}", key, raw
            )
        erased = _equal_after_erasures(ws, result.path, differing)
        if erased is not None:
            return _verdict(
                True,
                f"raw files equal the generator's output for {parameters} minus the "
                f"{erased} account(s) the erasure log records",
                key,
                raw,
            )
    except Exception as exc:  # the manifest's parameters do not even generate
        return _verdict(False, f"the manifest's parameters do not generate data ({exc})", key, raw)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _verdict(
        False,
        f"raw/{differing[0]} is not what the generator produces for seed {parameters['seed']} "
        f"and parameters {parameters}"
        + (" (nor that output minus the people the erasure log records)" if erased_log(ws) else ""),
        key,
        raw,
    )


def erased_log(ws: Workspace) -> list[dict[str, Any]]:
    """The erasure and restriction entries of the workspace's request log."""
    from segments.prepare.subject_log import log_entries

    try:
        return [e for e in log_entries(ws) if e.get("action") in ("erasure", "restriction")]
    except Exception:  # an unreadable log proves nothing
        return []


def _equal_after_erasures(ws: Workspace, generated: Path, differing: list[str]) -> int | None:
    """The number of erased accounts when the raw tables equal the regenerated ones minus
    exactly the accounts the erasure log records (their orders and lines, their truth rows;
    restricted accounts flagged), and nothing else differs; None otherwise."""
    import polars as pl

    from segments._tables import read_table
    from segments.prepare.pseudonym import load_key
    from segments.prepare.subject_log import account_hashes

    entries = erased_log(ws)
    if not entries or any(not e.get("completed", True) for e in entries):
        return None  # nothing logged, or an erasure still pending
    editable = {"customers.parquet", "orders.parquet", "order_lines.parquet"}
    # a partition file that differs stands for its table (erasures rewrite only the months
    # they touch; the whole table is then compared)
    differing = sorted({name.split("/month=")[0] for name in differing})
    if any(name not in editable and not name.startswith("truth/") for name in differing):
        return None  # a table no erasure touches differs
    hashes = {
        action: {h for e in entries if e["action"] == action for h in e["subject_hashes"]}
        for action in ("erasure", "restriction")
    }
    customers = pl.read_parquet(generated / "customers.parquet")
    key = load_key(workspace=ws)
    by_hash = account_hashes(key, customers)
    gone = customers.filter(by_hash.is_in(list(hashes["erasure"])))["customer_id"]
    restricted = customers.filter(by_hash.is_in(list(hashes["restriction"])))["customer_id"]
    if gone.len() != len(hashes["erasure"]) or restricted.len() != len(hashes["restriction"]):
        return None  # the log names accounts the generator never made
    mine = pl.col("customer_id").is_in(gone.implode())
    orders = pl.read_parquet(generated / "orders.parquet")
    gone_orders = orders.filter(mine)["order_id"]
    expected = {
        "customers.parquet": customers.filter(~mine).with_columns(
            pl.when(pl.col("customer_id").is_in(restricted.implode()))
            .then(pl.lit(True))
            .otherwise(pl.col("restriction_requested"))
            .alias("restriction_requested")
        ),
        "orders.parquet": orders.filter(~mine),
        "order_lines.parquet": read_table(generated / "order_lines.parquet").filter(
            ~pl.col("order_id").is_in(gone_orders.implode())
        ),
    }
    for path in sorted((generated / "truth").glob("*.parquet")):
        truth = pl.read_parquet(path)
        name = f"truth/{path.name}"
        expected[name] = truth.filter(~mine) if "customer_id" in truth.columns else truth
    for name in differing:
        if not read_table(ws.raw / name).equals(expected[name]):
            return None
    return int(gone.len())


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
