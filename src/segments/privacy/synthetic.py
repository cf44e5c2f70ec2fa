"""Proof that a workspace's raw data is synthetic: regenerate it and compare the bytes.

Evaluation and demo ledgers allow simulated time and repeated releases, so they accept only
synthetic data — and "synthetic" is proven, not declared. The manifest's ``synthetic`` flag
is one editable line; instead the raw files' SHA-256 must equal what the generator
(:func:`segments.synth.generate`) produces for the manifest's seed and parameters. The data
is regenerated in a temporary folder inside the workspace and compared file by file; the
verdict is cached by the files' hashes (in memory and in the per-user data folder), so the
proof runs once per dataset. Editing the manifest cannot help: other parameters give other
bytes, and any other data fails the comparison.
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

from segments.workspace import Workspace, sha256_file

__all__ = ["SyntheticProof", "prove_synthetic"]

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
    """

    proven: bool
    reason: str
    key: str = ""

    def __bool__(self) -> bool:
        return self.proven


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
    if not ws.manifest.exists():
        return SyntheticProof(False, f"{ws.manifest} is missing: no generator parameters")
    try:
        manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
        parameters = _generator_parameters(manifest)
    except (ValueError, KeyError, TypeError) as exc:
        return SyntheticProof(False, f"{ws.manifest} names no generator parameters ({exc})")
    names = sorted(str(name) for name in manifest.get("files", {}))
    if not names:
        return SyntheticProof(False, f"{ws.manifest} lists no files")
    actual = {}
    for name in names:
        path = ws.raw / name
        if not path.is_file():
            return SyntheticProof(False, f"{path} is missing")
        actual[name] = sha256_file(path)
    key = hashlib.sha256(
        json.dumps({"files": actual, "parameters": parameters}, sort_keys=True).encode()
    ).hexdigest()
    cached = _CACHE.get(key) or _read_cached(key)
    if cached is not None:
        _CACHE[key] = cached
        return cached
    proof = _regenerate_and_compare(ws, parameters, actual, key)
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
    ws: Workspace, parameters: dict[str, Any], actual: dict[str, str], key: str
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
    except Exception as exc:  # the manifest's parameters do not even generate
        return SyntheticProof(False, f"the manifest's parameters do not generate data ({exc})", key)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, digest in sorted(expected.items()):
        if actual.get(name) != digest:
            return SyntheticProof(
                False,
                f"raw/{name} is not what the generator produces for seed {parameters['seed']} "
                f"and parameters {parameters}",
                key,
            )
    return SyntheticProof(True, f"raw files equal the generator's output for {parameters}", key)


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("segments")) / "synthetic-proofs"


def _read_cached(key: str) -> SyntheticProof | None:
    try:
        data = json.loads((_cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("key") != key or not isinstance(data.get("proven"), bool):
        return None
    return SyntheticProof(data["proven"], str(data.get("reason", "")), key)


def _write_cached(proof: SyntheticProof) -> None:
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{proof.key}.tmp"
        tmp.write_text(
            json.dumps({"key": proof.key, "proven": proof.proven, "reason": proof.reason}),
            encoding="utf-8",
        )
        tmp.replace(folder / f"{proof.key}.json")
    except OSError:
        pass  # the cache only saves time
