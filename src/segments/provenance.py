"""Signed provenance: what a stage read and wrote, bound by an HMAC under a per-user secret.

``segments prepare`` records the SHA-256 of the raw files it read and of every file it wrote in
``W/prepared/<purpose>/provenance.json``, signed with an HMAC under a per-user secret
(``proof-secret.key``, created 0600 in the per-user data folder beside the registry of
controller ledgers). :func:`verify_prepared` recomputes both: a release on a demo or evaluation
ledger reads only frames derived from the raw data proven synthetic
(:mod:`segments.privacy.synthetic`, whose cached verdicts are signed the same way). A forged
or edited record fails its signature; someone who reads their own secret and signs a forged
record deliberately is outside what this can stop (README, limits).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from segments.workspace import (
    Workspace,
    copy_hashed,
    folder_files,
    forget_raw_hashes,
    partition_meets,
    private_folder,
    raw_hashed_once,
    raw_hashes,
    sha256_file,
)

if TYPE_CHECKING:
    from segments.policy import Policy


__all__ = [
    "PROVENANCE_FILE",
    "REPLAY_FILE",
    "VerifiedFrames",
    "population_data_ids",
    "prepared_as_of",
    "forget_raw_hashes",
    "hashing_raw_once",
    "raw_hashed_once",
    "raw_hashes",
    "read_verified",
    "recorded_as_of",
    "recorded_key_id",
    "signed_record",
    "verified_frames",
    "verified_origin",
    "verify_prepared",
    "verify_replay",
    "verify_segment_names",
]

#: The provenance record prepare writes beside its frames.
PROVENANCE_FILE = "provenance.json"
#: The record the backfill's rewind writes in its replay workspace (``W/.history``).
REPLAY_FILE = "replay.json"


def _secret_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("segments")) / "proof-secret.key"


def _secret() -> bytes:
    """The per-user secret (32 random bytes, created 0600 on first use)."""
    path = _secret_path()
    private_folder(path.parent)  # owner-only, its parents too
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 32:
            raise OSError(f"{path} is not a proof secret (too short); remove it") from None
        return key
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
        handle.flush()
        os.fsync(handle.fileno())
    return path.read_bytes()


def _mac(record: dict[str, Any]) -> str:
    body = json.dumps(
        {k: v for k, v in record.items() if k != "mac"}, sort_keys=True, separators=(",", ":")
    )
    return hmac.new(_secret(), body.encode("utf-8"), hashlib.sha256).hexdigest()


def _sign(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "mac": _mac(record)}


def _signed(record: dict[str, Any]) -> bool:
    mac = record.get("mac")
    return isinstance(mac, str) and hmac.compare_digest(mac, _mac(record))


# --- segment names: what a release shows is what the segmentation wrote -------------------
def _sign_segment_names(
    names: dict[str, str], *, names_from: str, bound_to: dict[str, str]
) -> dict[str, Any]:
    """The signed record of a segmentation's names, kept in its ``metadata.json``: the names,
    where they came from and the SHA-256 of the model file they describe (``bound_to``: file
    name → digest). Private to the three writers of names (``segments segment``, ``segments
    segment --private`` and its DP profile release); a release shows names only when
    :func:`verify_segment_names` accepts the record, so a name edited in the file never
    reaches it. Code in the same Python process holding the per-user secret can sign names
    deliberately: the same documented trust limit as prepare's record (README, limits)."""
    return _sign(
        {
            "segments": {str(k): str(v) for k, v in names.items()},
            "names_from": names_from,
            "bound_to": dict(sorted(bound_to.items())),
        }
    )


def verify_segment_names(record: Any) -> bool:
    """Whether ``record`` is a names record signed by a segmentation for this user."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("segments"), dict)
        and isinstance(record.get("bound_to"), dict)
        and _signed(record)
    )


# --- what is released is what was proven --------------------------------------------------
# ``raw_hashes``, ``raw_hashed_once`` and ``forget_raw_hashes`` live in segments.workspace (the
# one enumeration of the raw files, which the key resolution below this module needs too);
# they are imported above and exported from here as before.


_P = ParamSpec("_P")
_R = TypeVar("_R")


def hashing_raw_once(release: Callable[_P, _R]) -> Callable[_P, _R]:
    """A release function whose whole call runs in :func:`raw_hashed_once`."""

    @functools.wraps(release)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with raw_hashed_once():
            return release(*args, **kwargs)

    return call


def _sign_prepared(
    raw: dict[str, str],
    outputs: dict[str, str],
    *,
    purpose: str,
    as_of: dt.date,
    key_id: str | None = None,
    demo_key: bool,
) -> dict[str, Any]:
    """The signed record prepare writes as ``provenance.json``: the raw files it read, the
    SHA-256 of the bytes it wrote (``outputs``: path relative to the folder → digest, computed
    by prepare's writer from the bytes it serialised, never by re-reading a folder), the
    data's as-of, the pseudonymisation key's id and its kind (``key_kind``, from
    ``demo_key``: what prepare knew when it resolved the key, which yields the demo key only
    for raw data proven synthetic; the facts the ledger binds; ``policy_report.json`` is
    only a report).

    Private to prepare's write path (:func:`segments.prepare._write_atomically`): there is
    no public function that signs a folder of frames. A caller in the same Python process
    who holds the per-user secret can still call this; that is the documented trust limit
    (README, privacy: what the ledger cannot protect against)."""
    record: dict[str, Any] = {
        "purpose": purpose,
        "as_of": as_of.isoformat(),
        "raw": raw,
        "outputs": dict(sorted(outputs.items())),
    }
    if key_id is not None:
        record["key_id"] = key_id
    record["key_kind"] = _KEY_KINDS[1] if demo_key else _KEY_KINDS[0]
    return _sign(record)


#: The kinds of pseudonymisation key prepare signs into its record: the steward's key, or the
#: public demo key, which prepare resolves only for raw data proven synthetic.
_KEY_KINDS = ("steward", "demo (raw proven synthetic)")


def _unkeyed(record: dict[str, Any]) -> str | None:
    """Why a signed record cannot be trusted about its pseudonymisation key, or None.

    Records signed before prepare wrote ``key_kind`` may hold pseudonyms made with the public
    demo key on data never proven synthetic (reversible by anyone): none is believed."""
    from segments.prepare.pseudonym import is_public_demo_key_id

    if record.get("key_kind") == _KEY_KINDS[0] and is_public_demo_key_id(str(record.get("key_id"))):
        return (
            "its 'steward' key is a public demo key (its key id is a demo key's: pseudonyms "
            "reversible by anyone; key custody); prepare again with the steward's own key"
        )
    if record.get("key_kind") in _KEY_KINDS:
        return None
    return (
        "it records no pseudonymisation key kind (signed before prepare refused the public "
        "demo key on data not proven synthetic, so its pseudonyms may be reversible by "
        "anyone; key custody)"
    )


def _files_under(folder: Path, *, holds_tables: bool = True) -> dict[str, Path]:
    """Every file under ``folder`` but the record itself (relative posix path → path): month
    partitions in sub-folders are outputs like any other. Enumerated as every reader of a
    table enumerates them (:func:`segments.workspace.folder_files`: a symbolic link inside is
    refused)."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in folder_files(folder, holds_tables=holds_tables)
        if path.relative_to(folder).as_posix() != PROVENANCE_FILE
    }


def signed_record(
    workspace: Workspace | str | Path, purpose: str, rule: str = ""
) -> dict[str, Any]:
    """Prepare's signed provenance record of ``W/prepared/<purpose>/``, prepared from the
    workspace's raw files as they are now.

    Every release reads its frames through this record (:func:`verified_frames`,
    :func:`read_verified`), whatever ledger object a Python caller passes: this is the one
    place that binds what is charged to the workspace's own raw data.

    Raises
    ------
    ReleaseRefusedError
        No record, one not signed by ``segments prepare`` for this user, signed for another
        purpose, or naming other raw files than ``W/raw/`` holds now.
    """
    from segments.exceptions import ReleaseRefusedError

    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    record = _signed_for_purpose(ws, purpose, rule)
    # a signed folder prepared from another workspace's raw data (copied here, or this
    # workspace's raw files replaced since) is not this workspace's data
    if record.get("raw") != raw_hashes(ws):
        raise ReleaseRefusedError(
            f"refused before anything was charged{rule}: the frames in "
            f"{ws.prepared_dir(purpose)} were prepared from other raw data than {ws.raw} holds "
            f"now (the raw files' SHA-256 in {PROVENANCE_FILE} differ); run `segments prepare "
            f"--purpose {purpose}` in this workspace"
        )
    return record


def prepared_as_of(
    workspace: Workspace | str | Path,
    purpose: str,
    policy: Policy | None = None,
    *,
    charged: bool = True,
) -> dt.date:
    """The day the prepared frames of ``purpose`` were prepared as of, from prepare's SIGNED
    record: the one reader of that date for everything that reads the frames (the DP
    k-means' default as-of and its floor, the exploratory segmentation's recency).

    ``policy_report.json`` is an editable report: a report whose as-of differs from the
    record's is refused, never believed. ``charged=False`` (the exploratory segmentation,
    which charges nothing) checks the record's signature and purpose but not the raw files
    (no hashing of ``W/raw/``), and takes the report's as-of for hand-made frames with no
    record at all.

    Raises
    ------
    ReleaseRefusedError
        As :func:`signed_record`, or the report states another as-of than the record.
    WorkspaceError
        ``charged=False``, no record and no as-of in the report.
    """
    from segments.exceptions import ReleaseRefusedError, WorkspaceError

    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    rule = _rule(policy)
    report = ws.policy_report(purpose)
    if not charged and not (ws.prepared_dir(purpose) / PROVENANCE_FILE).exists():
        return ws.prepared_as_of(purpose)
    record = signed_record(ws, purpose, rule) if charged else _signed_for_purpose(ws, purpose)
    signed = dt.date.fromisoformat(str(record["as_of"])[:10])
    refused = f"refused{' before anything was charged' if charged else ''}{rule}"
    try:
        stated: dt.date | str = ws.prepared_as_of(purpose) if report.is_file() else signed
    except WorkspaceError:  # a report that states no as-of claims nothing
        stated = signed
    except ValueError as exc:  # unreadable JSON or date: a report that cannot be checked
        stated = f"an unreadable as_of ({exc.__class__.__name__})"
    if stated != signed:
        raise ReleaseRefusedError(
            f"{refused}: {report} states as_of {stated}, but prepare's signed record "
            f"({PROVENANCE_FILE}) dates the frames of purpose {purpose!r} as of {signed}; the "
            f"report is not the record: run `segments prepare --purpose {purpose}` again"
        )
    return signed


def recorded_as_of(
    workspace: Workspace | str | Path, purpose: str, *, required: bool = False
) -> dt.date | None:
    """The as-of prepare's signed record gives the frames of ``purpose`` (signature and
    purpose checked, raw files not hashed), or None when the folder has no record (hand-made
    frames) and ``required`` is false. For readers that report rather than charge (the
    audit): they compare it with ``policy_report.json`` themselves. ``required`` is for
    readers that write pseudonyms out (target lists): without a record nothing says which
    key made them.

    Raises
    ------
    ReleaseRefusedError
        A record that is not signed by prepare for this user, or is of another purpose.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    if not required and not (ws.prepared_dir(purpose) / PROVENANCE_FILE).exists():
        return None
    return dt.date.fromisoformat(str(_signed_for_purpose(ws, purpose)["as_of"])[:10])


def recorded_key_id(workspace: Workspace | str | Path, purpose: str) -> str | None:
    """The id of the pseudonymisation key that made the frames of ``purpose``, as prepare's
    signed record gives it; None when the record names none. ``policy_report.json`` repeats
    it, but that report is editable.

    The record is trusted only as releases trust it (:func:`verify_prepared`): signed for
    this user and this purpose, every file in the folder with the SHA-256 it records, and
    the raw files it read being ``W/raw/`` now. A signature alone does not bind: the same
    user's record of another workspace, copied beside frames made under another key, is
    validly signed but names files that are not these frames.

    Raises
    ------
    ReleaseRefusedError
        No record, or one not bound to the frames beside it (not signed by prepare for this
        user, of another purpose, files or raw data other than it records).
    """
    from segments.exceptions import ReleaseRefusedError

    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    record, unbound = _bound_record(ws, purpose)
    if record is None:
        why = unbound or f"{ws.prepared_dir(purpose)} does not exist: nothing was prepared"
        fix = f"run `segments prepare --purpose {purpose}` in this workspace"
        raise ReleaseRefusedError(
            f"{why}; the key id it records is not bound to these frames"
            + ("" if "run `segments prepare" in why else f"; {fix}")
        )
    key_id = record.get("key_id")
    return key_id if isinstance(key_id, str) and key_id else None


def _signed_for_purpose(ws: Workspace, purpose: str, rule: str = "") -> dict[str, Any]:
    """The signed record of ``W/prepared/<purpose>/`` (signature and purpose checked, not
    yet the raw files it names)."""
    from segments.exceptions import ReleaseRefusedError

    path = ws.prepared_dir(purpose) / PROVENANCE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReleaseRefusedError(
            f"refused before anything was charged{rule}: {path.parent} has no "
            f"{PROVENANCE_FILE}: the frames of purpose {purpose!r} carry no signed provenance "
            f"record; run `segments prepare --purpose {purpose}` in this workspace"
        ) from None
    except (OSError, ValueError) as exc:
        raise ReleaseRefusedError(
            f"refused before anything was charged{rule}: "
            f"{path} cannot be read ({exc.__class__.__name__}): the frames of purpose "
            f"{purpose!r} carry no signed provenance record; run `segments prepare --purpose "
            f"{purpose}` in this workspace"
        ) from None
    if not isinstance(record, dict) or not _signed(record):
        raise ReleaseRefusedError(
            f"refused before anything was charged{rule}: "
            f"{path} is not signed by `segments prepare` for this user; run `segments prepare "
            f"--purpose {purpose}` in this workspace"
        )
    # a signed folder of one purpose copied in place of another's is prepare's output for
    # something else: refused, not released
    if record.get("purpose") != purpose:
        raise ReleaseRefusedError(
            f"refused before anything was charged{rule}: {path} was signed by `segments "
            f"prepare` for purpose {record.get('purpose')!r}, not {purpose!r}; run `segments "
            f"prepare --purpose {purpose}` in this workspace"
        )
    unkeyed = _unkeyed(record)
    if unkeyed is not None:
        raise ReleaseRefusedError(
            f"refused before anything was charged{rule}: {path}: {unkeyed}; run `segments "
            f"prepare --purpose {purpose}` again"
        )
    return record


def verify_prepared(workspace: Workspace | str | Path, purpose: str) -> str | None:
    """Why ``W/prepared/<purpose>/`` is not derived from the workspace's raw data, or None.

    The frames must carry prepare's signed provenance record, every file in the folder must
    have the SHA-256 it records, and the raw files it read must be the workspace's raw files
    now (the ones :func:`prove_synthetic` proves).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    return _bound_record(ws, purpose)[1]


def _bound_record(ws: Workspace, purpose: str) -> tuple[dict[str, Any] | None, str | None]:
    """Prepare's record of ``W/prepared/<purpose>/`` and None when it binds the folder (see
    :func:`verify_prepared`), else None and why not; (None, None) when nothing is prepared.
    The record returned is the one read and checked here, never a second read."""
    from segments.exceptions import WorkspaceError

    folder = ws.prepared_dir(purpose)
    if not folder.is_dir():
        return None, None  # nothing prepared: nothing of it can be released
    try:
        record = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, (
            f"{folder} has no {PROVENANCE_FILE}: the frames were not written by "
            "`segments prepare` from this workspace's raw data"
        )
    except (OSError, ValueError) as exc:
        return None, f"{folder / PROVENANCE_FILE} cannot be read ({exc})"
    if not isinstance(record, dict) or not _signed(record):
        return None, f"{folder / PROVENANCE_FILE} is not signed by `segments prepare` for this user"
    if record.get("purpose") != purpose:
        return None, (
            f"{folder / PROVENANCE_FILE} was signed by `segments prepare` for purpose "
            f"{record.get('purpose')!r}, not {purpose!r}"
        )
    unkeyed = _unkeyed(record)
    if unkeyed is not None:
        return None, (
            f"{folder / PROVENANCE_FILE}: {unkeyed}; run `segments prepare --purpose "
            f"{purpose}` again"
        )
    outputs = record.get("outputs") or {}
    try:
        present = _files_under(folder)
    except WorkspaceError as exc:  # a linked month folder or file: not prepare's output
        return None, str(exc)
    for name in sorted(set(present) | set(outputs)):
        if name not in outputs:
            return None, f"{folder / name} was not written by `segments prepare`"
        if name not in present or sha256_file(present[name]) != outputs[name]:
            return (
                None,
                f"{folder / name} is not the file `segments prepare` wrote (SHA-256 differs)",
            )
    try:
        raw = raw_hashes(ws)
    except WorkspaceError as exc:  # a linked file or folder in W/raw/
        return None, str(exc)
    if record.get("raw") != raw:
        return None, (
            f"the frames in {folder} were prepared from other raw data than {ws.raw} holds now"
        )
    return record, None


def _sign_replay(source_raw: dict[str, str], day: dt.date, replay: Workspace) -> None:
    """Record, signed, that ``replay/raw/`` was rewound to ``day`` from raw files with the
    hashes ``source_raw`` (``replay/replay.json``).

    Private to the rewind's write path (:func:`segments.prepare.history.rewind_raw`): a
    release from the replay's prepared frames is bound to its workspace by this record
    (:func:`verify_replay`), so frames of any other data put under ``W/.history`` are
    refused however validly prepare signed them there."""
    forget_raw_hashes(replay)  # the rewind just wrote these files: hash what they hold now
    record = _sign({"source_raw": source_raw, "day": day.isoformat(), "raw": raw_hashes(replay)})
    path = replay.root / REPLAY_FILE
    tmp = path.with_name(f".{REPLAY_FILE}.p{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def verify_replay(workspace: Workspace, replay: Workspace) -> str | None:
    """Why ``replay``'s raw data is not the rewind of ``workspace``'s raw files as they are
    now (:func:`segments.prepare.history.rewind_raw`, which signs ``replay.json``), or
    None."""
    path = replay.root / REPLAY_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{path} is missing or unreadable: {replay.root} is not a replay of {workspace.raw}"
    if not isinstance(record, dict) or not _signed(record):
        return f"{path} is not signed by the backfill's replay for this user"
    if record.get("source_raw") != raw_hashes(workspace):
        return f"{replay.root} was rewound from other raw data than {workspace.raw} holds now"
    if record.get("raw") != raw_hashes(replay):
        return f"{replay.raw} is not the raw data the replay rewound (SHA-256 differs)"
    return None


def population_data_ids(workspace: Workspace) -> dict[str, str]:
    """What identifies the people in a workspace's data, whatever a policy calls its
    controller: from prepare's SIGNED provenance record of every prepared purpose, the
    pseudonymisation key's id and the SHA-256 of the raw customer table it read, and the raw
    customer table now (bound to one controller name by
    :func:`segments.privacy.ledger.claim_population_data`). Nothing is taken from an
    editable report, and nothing missing is skipped silently.

    Raises
    ------
    ReleaseRefusedError
        A prepared purpose without a signed record (or one without the key's id), or
        nothing at all that identifies the people.
    """
    from segments.exceptions import ReleaseRefusedError

    ids: dict[str, str] = {}
    customers = workspace.raw_table("customers")
    if customers.is_file():
        ids["raw customer table"] = sha256_file(customers)
    prepared = workspace.prepared
    folders = (
        sorted(p for p in prepared.iterdir() if p.is_dir() and not p.name.startswith("."))
        if prepared.is_dir()
        else []
    )
    for folder in folders:
        # identifying, not releasing: a purpose prepared from an earlier extract names people too
        record = _signed_for_purpose(workspace, folder.name)
        key_id = record.get("key_id")
        if not isinstance(key_id, str) or not key_id:
            raise ReleaseRefusedError(
                f"{folder / PROVENANCE_FILE} records no pseudonymisation key id (prepared by "
                f"an older version); run `segments prepare --purpose {folder.name}` again"
            )
        ids[f"pseudonymisation key of {folder.name}"] = key_id
        raw_customers = (record.get("raw") or {}).get(customers.name)
        if isinstance(raw_customers, str) and raw_customers:
            ids[f"raw customer table of {folder.name}"] = raw_customers
    if not ids:
        raise ReleaseRefusedError(
            f"nothing identifies the people of {workspace.root}: {customers} is missing and "
            "no signed prepare record names the data; restore the raw data and run "
            "`segments prepare`"
        )
    return ids


#: The private copies :func:`verified_frames` made and hashed and that still exist (copy's
#: path -> (workspace root, purpose, frame name, SHA-256 of the bytes read)). Only that
#: function adds to it, and it removes its copies on leaving its block: a release planner
#: asks here, never a caller's mapping, whether an input path is a verified prepared frame.
_LIVE_COPIES: dict[str, tuple[str, str, str, str]] = {}


def verified_origin(path: str | os.PathLike[str]) -> tuple[Path, str, str, str] | None:
    """(workspace root, purpose, frame name, SHA-256 of the bytes read) when ``path`` is a
    private copy :func:`verified_frames` hashed against prepare's signed record and still
    holds (inside its block), else None."""
    found = _LIVE_COPIES.get(str(Path(path)))
    if found is None:
        return None
    root, purpose, name, digest = found
    return Path(root), purpose, name, digest


class VerifiedFrames(dict[str, Path]):
    """What :func:`verified_frames` yields: frame name → path of the private copy that was
    hashed, plus ``origins``: copy path → (the workspace file it was copied from, SHA-256 of
    the bytes read). A release names the workspace's prepared table and that hash on its
    card, never the scratch copy's path."""

    def __init__(self) -> None:
        super().__init__()
        self.origins: dict[str, tuple[str, str]] = {}

    def sha256(self, name: str) -> str:
        """SHA-256 of the bytes read for frame ``name`` (a folder: of its files' digests)."""
        return self.origins[str(self[name])][1]


def _rule(policy: Policy | None) -> str:
    ids = policy.clauses_for("anonymous_release") if policy is not None else ()
    return f" (rule: the anonymity claim of every release, clause {', '.join(ids)})" if ids else ""


def _not_prepares(folder: Path, name: str, purpose: str, rule: str, why: str) -> Exception:
    from segments.exceptions import ReleaseRefusedError

    return ReleaseRefusedError(
        f"refused before anything was charged{rule}: {folder / name} is not the file "
        f"`segments prepare` wrote ({why}); run `segments prepare --purpose {purpose}` again"
    )


@contextmanager
def verified_frames(
    workspace: Workspace | str | Path,
    purpose: str,
    names: Iterable[str],
    policy: Policy | None = None,
    *,
    window: tuple[dt.date, dt.date] | None = None,
) -> Iterator[VerifiedFrames]:
    """The prepared frames ``names`` of ``purpose`` as private copies whose bytes have the
    SHA-256 prepare's signed record states (file name → copy's path, valid inside the block).

    A release reads the copies, not the workspace's files: what is hashed is what is read,
    so a frame edited after the ledger verified the folder (a check-then-read gap) is
    refused, before anything is charged. A name that is a folder (a frame written as month
    partitions) is copied partition by partition: with ``window`` (a half-open ``[start,
    end)`` range of dates, the release's) only the partitions of the months it meets are
    copied, hashed and read — a month-closing reads one month, not the whole history — and
    each must be a file prepare recorded, with its digest, none it recorded for those months
    missing. The folder's list of files must still be prepare's (a file added or removed in
    any month is refused; listing costs no read), but a partition outside the window is
    neither read nor hashed, so its bytes cannot matter to this release.

    Raises
    ------
    ReleaseRefusedError
        No signed record, or a frame whose bytes are not the ones prepare wrote.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    wanted = list(names)
    copies = VerifiedFrames()
    if not wanted:
        yield copies
        return
    rule = _rule(policy)
    outputs = signed_record(ws, purpose, rule).get("outputs") or {}
    folder = ws.prepared_dir(purpose)
    # the copies are person-level data: in the workspace's private area (owner-only, swept
    # after a kill -9), never in the system's temporary folder
    with ws.scratch("frames") as tmp:
        for name in wanted:
            copy = tmp / name
            source = folder / name
            if source.is_dir():
                digest = _copy_partitions(source, copy, outputs, window, purpose, rule)
            else:
                digest = copy_hashed(source, copy)
                if outputs.get(name) != digest:
                    why = "SHA-256 of the bytes read differs from its signed record"
                    raise _not_prepares(folder, name, purpose, rule, why)
            copies[name] = copy
            copies.origins[str(copy)] = (str(source), digest)
        live = {
            str(copy): (str(ws.root), purpose, name, copies.sha256(name))
            for name, copy in copies.items()
        }
        _LIVE_COPIES.update(live)
        try:
            yield copies
        finally:
            for key in live:
                _LIVE_COPIES.pop(key, None)


def _copy_partitions(
    source: Path,
    copy: Path,
    outputs: dict[str, str],
    window: tuple[dt.date, dt.date] | None,
    purpose: str,
    rule: str,
) -> str:
    """Copy the partitions of ``source`` (a frame's folder) that ``window`` needs into
    ``copy``, each hashed as it is copied against prepare's record ``outputs``; return the
    SHA-256 of the sorted JSON of the copied files' digests (what this release read)."""
    name = source.name
    present = {f"{name}/{rel}" for rel in _files_under(source, holds_tables=False)}
    recorded = {k for k in outputs if k.startswith(f"{name}/")}
    for part in sorted(present ^ recorded):
        why = "a partition is missing, added or its SHA-256 differs"
        raise _not_prepares(source.parent, part, purpose, rule, why)
    read: dict[str, str] = {}
    for part in sorted(recorded):
        inner = part[len(name) + 1 :].split("/")
        if window is not None and not (len(inner) > 1 and partition_meets(inner[0], window)):
            continue  # another month's partition (or a file no windowed reader opens)
        target = copy.joinpath(*inner)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        read[part] = copy_hashed(source.joinpath(*inner), target)
        if read[part] != outputs[part]:
            why = "a partition is missing, added or its SHA-256 differs"
            raise _not_prepares(source.parent, part, purpose, rule, why)
    copy.mkdir(mode=0o700, exist_ok=True)  # a window with no month: an empty table
    return hashlib.sha256(json.dumps(read, sort_keys=True).encode()).hexdigest()


def read_verified(
    workspace: Workspace | str | Path,
    purpose: str,
    names: Iterable[str],
    policy: Policy | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Read whole prepared frames (polars) from bytes hashed against prepare's signed record.

    For jobs that hold the frames in memory (the k-anonymous release, the DP k-means): the
    same check as :func:`verified_frames`, so an edited frame is refused before anything
    is charged.

    Returns
    -------
    (dict, dict)
        Frame name → ``polars.DataFrame``; frame name → SHA-256 of the bytes read.
    """
    from segments._tables import read_table

    with verified_frames(workspace, purpose, names, policy) as copies:
        frames = {name: read_table(path) for name, path in copies.items()}
        return frames, {name: copies.sha256(name) for name in copies}
