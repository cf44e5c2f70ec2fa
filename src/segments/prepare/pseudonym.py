"""Keyed pseudonyms (HMAC-SHA256) and the handling of the pseudonymisation key.

Only the data steward holds the key (AO-9). It comes from the environment variable
``SEGMENTS_PSEUDONYM_KEY`` or from a key file kept outside the workspace and outside the data
folder; it is never written beside the data and never appears in a report (a report carries
its provenance and a keyed fingerprint, :attr:`PseudonymKey.key_id`). The same key gives the
same pseudonyms on every run; a different key gives pseudonyms that cannot be linked.

Synthetic data is the one exception: when the raw data is *proven* synthetic (the caller passes
:func:`segments.privacy.synthetic.prove_synthetic`, which regenerates the data from the
manifest's seed and compares the bytes), a demo key derived from the dataset's seed is used and
reported as such, so notebooks are reproducible. The manifest's ``"synthetic": true`` is one
editable line and decides nothing: on data not proven synthetic the demo key, which anyone can
recompute, is refused.

Pseudonyms are the first 32 hex digits (128 bits) of HMAC-SHA256 over a namespaced id
(``person:<id>``, ``order:<id>``): truncation keeps the key's protection and halves the
memory of 20 million order lines.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from segments._tables import reads_bound_to
from segments.exceptions import PolicyError
from segments.workspace import DEFAULT_WORKSPACE, Workspace, raw_hashed_once, raw_hashes

__all__ = [
    "KEY_ENV_VAR",
    "MIN_KEY_BYTES",
    "PSEUDONYM_HEX_DIGITS",
    "PseudonymKey",
    "SyntheticVerdict",
    "demo_key",
    "load_key",
    "pseudonymise",
    "pseudonymise_series",
    "remembered_pseudonyms",
]

KEY_ENV_VAR = "SEGMENTS_PSEUDONYM_KEY"
MIN_KEY_BYTES = 32
PSEUDONYM_HEX_DIGITS = 32
DEMO_PROVENANCE = "demo key derived from dataset seed"
_KEY_HINT = "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"


class SyntheticVerdict(Protocol):
    """What :func:`load_key` reads of a :class:`segments.privacy.synthetic.SyntheticProof`."""

    @property
    def proven(self) -> bool:
        """Whether the raw files are the generator's output."""

    @property
    def reason(self) -> str:
        """Why (not), for the refusal."""

    @property
    def signed(self) -> bool:
        """Whether the proof itself made the verdict (an HMAC under the per-user secret)."""


@dataclass(frozen=True)
class PseudonymKey:
    """A pseudonymisation key and where it came from; ``repr`` never shows the secret.

    Parameters
    ----------
    secret : bytes
        At least 32 bytes.
    provenance : str
        ``"demo key derived from dataset seed"`` or ``"steward key (...)"``.
    """

    secret: bytes = field(repr=False)
    provenance: str

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise PolicyError(
                f"pseudonymisation key ({self.provenance}): {len(self.secret)} bytes is too "
                f"short; a key needs at least {MIN_KEY_BYTES} bytes (key custody); {_KEY_HINT}"
            )

    @property
    def is_demo(self) -> bool:
        """Whether this is the synthetic dataset's published demo key (never for real data)."""
        return self.provenance == DEMO_PROVENANCE

    @property
    def key_id(self) -> str:
        """A keyed fingerprint (not the key): equal ids mean the same key was used."""
        return _key_id(self.secret)


def _key_id(secret: bytes) -> str:
    return hmac.digest(secret, b"segments key id", "sha256").hex()[:16]


def pseudonymise(key: PseudonymKey, namespace: str, ids: Iterable[Any]) -> list[str]:
    """Keyed pseudonyms of ``ids``: HMAC-SHA256 of ``"<namespace>:<id>"``, 32 hex digits.

    Examples
    --------
    >>> k = PseudonymKey(b"k" * 32, "steward key (example)")
    >>> a = pseudonymise(k, "person", [1, 2])
    >>> len(a[0]), a[0] != a[1], a == pseudonymise(k, "person", [1, 2])
    (32, True, True)
    """
    secret, prefix, n = key.secret, f"{namespace}:".encode(), PSEUDONYM_HEX_DIGITS
    digest = hmac.digest
    memo = _MEMO.get()
    if memo is None:
        return [digest(secret, prefix + str(i).encode(), "sha256").hex()[:n] for i in ids]
    known = memo.setdefault((secret, namespace), {})
    out = []
    for i in ids:
        pseudonym = known.get(i)
        if pseudonym is None:
            pseudonym = known[i] = digest(secret, prefix + str(i).encode(), "sha256").hex()[:n]
        out.append(pseudonym)
    return out


#: The pseudonyms computed inside :func:`remembered_pseudonyms` (None outside it).
_MEMO: ContextVar[dict[tuple[bytes, str], dict[Any, str]] | None] = ContextVar(
    "segments_pseudonym_memo", default=None
)


@contextlib.contextmanager
def remembered_pseudonyms() -> Iterator[None]:
    """Inside the block each (key, namespace, id) is hashed once, then looked up.

    A backfill prepares the rewound raw data once per month, the same ids each time (22
    times at 50,000 customers: 6.4 million HMACs, a fifth of the demo's backfill). The memo
    lives in this process's memory only, beside the key it is derived from, and is dropped
    when the block ends; the pseudonyms are the same as without it.

    Examples
    --------
    >>> k = PseudonymKey(b"k" * 32, "steward key (example)")
    >>> with remembered_pseudonyms():
    ...     remembered = pseudonymise(k, "person", [1, 2, 1])
    >>> remembered == pseudonymise(k, "person", [1, 2, 1]) and _MEMO.get() is None
    True
    """
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


#: Ids turned into Python objects at a time by :func:`pseudonymise_series`: the HMAC runs in
#: Python, and a whole column of ids and hex strings as Python objects is ~120 bytes an id
#: (0.4 GB for the 3.3 million orders of 10 million lines).
_SERIES_CHUNK = 1 << 20


def pseudonymise_series(key: PseudonymKey, namespace: str, ids: pl.Series, name: str) -> pl.Series:
    """:func:`pseudonymise` for a polars Series, returned as a Utf8 Series called ``name``
    (computed a chunk of ids at a time: only one chunk is ever held as Python objects)."""
    chunks = [
        pl.Series(
            name,
            pseudonymise(key, namespace, ids.slice(start, _SERIES_CHUNK).to_list()),
            dtype=pl.Utf8,
        )
        for start in range(0, ids.len(), _SERIES_CHUNK)
    ]
    return pl.concat(chunks) if chunks else pl.Series(name, [], dtype=pl.Utf8)


def demo_key(manifest: dict[str, Any]) -> PseudonymKey:
    """The reproducible demo key of a synthetic dataset, derived from its seed.

    Raises
    ------
    PolicyError
        If the manifest does not mark the data synthetic or has no seed.
    """
    if manifest.get("synthetic") is not True:
        raise PolicyError(
            "a demo pseudonymisation key is refused: the raw manifest does not mark the data "
            '"synthetic": true, so it may be real (key custody); give the steward key with '
            f"{KEY_ENV_VAR} or --key-file"
        )
    if "seed" not in manifest:
        raise PolicyError(
            "raw manifest marks the data synthetic but has no 'seed' to derive the demo key "
            f"from; regenerate the data or give a key with {KEY_ENV_VAR}"
        )
    return PseudonymKey(_demo_secret(manifest["seed"]), DEMO_PROVENANCE)


_DEMO_TEXT = b"segments demo pseudonym key|seed="


def _demo_secret(seed: Any) -> bytes:
    return hashlib.sha256(_DEMO_TEXT + str(seed).encode()).digest()


def _given_key(
    key: PseudonymKey | bytes | str | None,
    key_file: str | os.PathLike[str] | None,
    workspace: Workspace | None,
) -> PseudonymKey | None:
    """The key the caller, a key file or the environment gives, in that order (or None)."""
    if isinstance(key, PseudonymKey):
        return key
    if key is not None:
        secret = key.encode() if isinstance(key, str) else bytes(key)
        return PseudonymKey(secret, "steward key (passed by caller)")
    if key_file is not None:
        return _read_key_file(Path(key_file), workspace)
    env = os.environ.get(KEY_ENV_VAR)
    if env:
        return PseudonymKey(
            env.strip().encode(), f"steward key (environment variable {KEY_ENV_VAR})"
        )
    return None


# Demo keys anybody can recompute: those of the seeds 0..PUBLIC_DEMO_SEEDS-1 (every seed
# the project, its docs and tests use is small) and of the manifest's own seed.
PUBLIC_DEMO_SEEDS = 1 << 16


@functools.cache
def _public_demo_key_ids() -> frozenset[str]:
    return frozenset(_key_id(_demo_secret(seed)) for seed in range(PUBLIC_DEMO_SEEDS))


def _is_demo_key_of(key: PseudonymKey, manifest: dict[str, Any]) -> bool:
    """Whether ``key`` is a public demo key (of the manifest's seed, whatever the manifest
    says of the data, or of any small seed), however it was passed: compared by key id, an
    HMAC, so the secret padded with zero bytes (HMAC pads keys shorter than its block) is
    the same key; the secret written in hex (with or without ``0x``) or base64 is decoded
    and compared too, and the public text a demo key is hashed from is refused as such."""
    if _DEMO_TEXT in key.secret:
        return True
    forms = [key.secret]
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        text = "".join(key.secret.decode("ascii").split())
        with contextlib.suppress(ValueError):
            forms.append(bytes.fromhex(text.removeprefix("0x").removeprefix("0X")))
        with contextlib.suppress(ValueError, binascii.Error):
            forms.append(base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_"))
        with contextlib.suppress(ValueError, binascii.Error):
            forms.append(base64.b64decode(text + "=" * (-len(text) % 4)))
    public = set(_public_demo_key_ids())
    if "seed" in manifest:
        public.add(_key_id(_demo_secret(manifest["seed"])))
    return any(_key_id(form) in public for form in forms if form)


def is_public_demo_key_id(key_id: str) -> bool:
    """Whether ``key_id`` (:attr:`PseudonymKey.key_id`) is the id of a public demo key (of a
    seed 0..PUBLIC_DEMO_SEEDS-1): pseudonyms made under it are reversible by anyone."""
    return key_id in _public_demo_key_ids()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _read_key_file(path: Path, workspace: Workspace | None) -> PseudonymKey:
    forbidden = [DEFAULT_WORKSPACE.parent]  # the project's data/ folder
    if workspace is not None:
        forbidden += [workspace.root, workspace.raw]
    for folder in forbidden:
        if _inside(path, folder):
            raise PolicyError(
                f"key file {path} is inside {folder}: the pseudonymisation key must never be "
                "kept beside the data (key custody); move it outside the workspace and the data "
                "folder"
            )
    if path.is_dir():
        raise PolicyError(
            f"key file {path} is a folder, not a file; give the path of the steward's key file"
        )
    if not path.exists():
        raise PolicyError(f"key file {path} does not exist; give the steward's key file")
    if not path.is_file():
        raise PolicyError(
            f"key file {path} is not a regular file (a device or a pipe); give the path of the "
            "steward's key file"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:  # like ssh: a key others can read is no longer the steward's alone
        raise PolicyError(
            f"key file {path} is readable or writable by group or others (mode {mode:o}); the "
            "pseudonymisation key must be the steward's alone (key custody), so it was not used. "
            f"Fix: chmod 600 {path}"
        )
    secret = path.read_bytes().strip()
    return PseudonymKey(secret, "steward key (key file)")


def _demo_key_when_proven(
    workspace: Workspace, synthetic_proof: Callable[[Workspace], SyntheticVerdict]
) -> PseudonymKey | str:
    """The demo key of the raw data's seed when ``synthetic_proof`` proves the raw data
    synthetic, else why not.

    The seed is parsed from the manifest bytes the proof hashed, read once: the raw files are
    hashed first (shared with the proof, :func:`segments.workspace.raw_hashed_once`) and the
    manifest is read bound to that digest (:func:`segments._tables.reads_bound_to`). A manifest
    swapped between the hashing and the reading is refused (``RawChangedError``), never
    trusted for a seed the proof did not see."""
    with raw_hashed_once(), reads_bound_to(workspace.raw, raw_hashes(workspace)):
        manifest = workspace.read_manifest()
        if manifest.get("synthetic") is not True:
            return "the raw data is not marked synthetic"
        verdict = synthetic_proof(workspace)
        if verdict.proven and verdict.signed:
            return demo_key(manifest)
        return f"the raw data is not proven synthetic ({verdict.reason})"


def load_key(
    key: PseudonymKey | bytes | str | None = None,
    *,
    key_file: str | os.PathLike[str] | None = None,
    workspace: Workspace | None = None,
    synthetic_proof: Callable[[Workspace], SyntheticVerdict] | None = None,
) -> PseudonymKey:
    """Resolve the pseudonymisation key.

    Order: ``key`` given by the caller, then ``key_file``, then the environment variable
    ``SEGMENTS_PSEUDONYM_KEY``, then — only for data that ``synthetic_proof(workspace)`` proves
    synthetic (a signed verdict) — the demo key derived from the dataset seed. The manifest's
    ``"synthetic"`` flag alone never selects the demo key.

    Parameters
    ----------
    key : PseudonymKey, bytes or str, optional
        The steward's key (str is encoded as UTF-8).
    key_file : path, optional
        A file holding the key; refused inside the workspace or the data folder.
    workspace : Workspace, optional
        The data the key is for.
    synthetic_proof : callable, optional
        :func:`segments.privacy.synthetic.prove_synthetic` (the prepare stage passes it; this
        module is below the proof in the layer order). Without it, no demo key.

    Raises
    ------
    PolicyError
        A key shorter than 32 bytes, a key file beside the data, or no steward key for data
        not proven synthetic.
    """
    given = _given_key(key, key_file, workspace)
    if workspace is None:
        if given is not None and not _is_demo_key_of(given, {}):
            return given
        why = "nothing proved the raw data synthetic"
    else:
        # a given key is checked against the manifest bytes of a hashing of W/raw/: the
        # calling run's own (prepare, an erasure, a purge: raw_hashed_once), so a manifest
        # swapped after that hashing is refused, never trusted to tell a demo key apart
        # (without a key, a refusal needs no hashing and the demo key's proof hashes itself)
        if given is None:
            manifest = workspace.read_manifest()
        else:
            with raw_hashed_once(), reads_bound_to(workspace.raw, raw_hashes(workspace)):
                manifest = workspace.read_manifest()
        if given is not None and not _is_demo_key_of(given, manifest):
            return given
        if manifest.get("synthetic") is not True:
            why = "the raw data is not marked synthetic"
        elif synthetic_proof is None:
            why = "nothing proved the raw data synthetic"
        else:
            found = _demo_key_when_proven(workspace, synthetic_proof)
            if isinstance(found, PseudonymKey):
                return found
            why = found
    if given is not None:
        why = (
            "the key given is a public demo key (the manifest seed's or a small seed's, in "
            f"any form: raw, zero-padded or hex) and {why}"
        )
    raise PolicyError(
        f"no pseudonymisation key: {why}, so the public demo key is refused (key custody); "
        f"set {KEY_ENV_VAR} or pass --key-file with the steward's key (at least "
        f"{MIN_KEY_BYTES} bytes, outside the workspace); {_KEY_HINT}"
    )
