"""One publishing path for every release: check → reserve → stage → fsync → rename → publish.

A release is complete or clearly not (issue 18):

1. :func:`begin` checks, *before anything is charged*, that the release folder can be written
   (the folder is writable and has free space) and that its id is unused, then reserves the
   charge in the ledger, recording the folder it will be published to, and opens a hidden
   staging folder beside it.
2. The caller runs the release and writes its files and card into ``publication.staging``.
3. :meth:`Publication.complete` adds to the card what binds it to the ledger (the reserve
   hash, the ledger's anchor, the charge date, the population's total loss over the window and
   the SHA-256 of every released file), fsyncs every file and the folder, renames the folder
   into place and only then publishes in the ledger the SHA-256 of every file and of the card.

A crash before the rename leaves a reservation and a staging folder: the next start
(:meth:`segments.privacy.ledger.Ledger.reconcile`) aborts it, the charge still counted. A
crash after the rename leaves a complete folder: reconciliation finishes the publication. A
failure inside the process aborts the entry at once (:meth:`Publication.fail`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segments.exceptions import WorkspaceError
from segments.workspace import CARD, make_private, sha256_file

if TYPE_CHECKING:
    from segments.policy import Policy
    from segments.privacy.guards import PolicyFacts
    from segments.privacy.ledger import Ledger, ReleaseRequest


__all__ = ["MIN_FREE_BYTES", "Publication", "begin", "check_writable", "durable_rename"]

#: Free space a release folder needs before anything is charged.
MIN_FREE_BYTES = 32 * 1024 * 1024


def check_writable(folder: Path, need_bytes: int = MIN_FREE_BYTES) -> None:
    """Refuse (before any charge) a folder that cannot take a release.

    Raises
    ------
    WorkspaceError
        The folder cannot be created or written, or has less than ``need_bytes`` free.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), folder)
        if not blocker.is_dir():  # a file where the release folder (or its parent) must be
            what = f"{folder}" if blocker == folder else f"{folder}: {blocker}"
            raise WorkspaceError(
                f"release folder {what} is a file, not a folder; nothing was charged — move "
                "or delete that file (releases are written in that folder)"
            ) from None
        raise WorkspaceError(
            f"release folder {folder} is not writable ({exc.strerror or exc}); nothing was "
            "charged — fix the permissions or choose another workspace"
        ) from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise WorkspaceError(
            f"release folder {folder} has {free / 2**20:.1f} MiB free, less than the "
            f"{need_bytes / 2**20:.0f} MiB a release needs; nothing was charged — free some "
            "space first"
        )


@dataclass
class Publication:
    """A reserved release being staged: write files into :attr:`staging`, then
    :meth:`complete` (or :meth:`fail`)."""

    ledger: Ledger
    reservation: Any
    final: Path
    staging: Path

    @property
    def release_id(self) -> str:
        """The id the ledger reserved for this release."""
        return str(self.reservation.release_id)

    def complete(self, card_name: str = CARD) -> tuple[Any, dict[str, Any]]:
        """Bind the card to the ledger, make the folder durable, rename it, publish.

        Parameters
        ----------
        card_name : str
            The card the caller wrote into the staging folder (``card.json`` or
            ``certificate.json``); every other file is a released file.

        Returns
        -------
        (LedgerEntry, dict)
            The published entry and the card as written.
        """
        try:
            card_path = self.staging / card_name
            card = json.loads(card_path.read_text(encoding="utf-8"))
            files = {
                path.name: sha256_file(path)
                for path in sorted(self.staging.iterdir())
                if path.is_file() and path.name != card_name
            }
            card.update(self.reservation.card_fields())
            card["ledger_label"] = str(getattr(self.ledger, "label", ""))
            card["files"] = files
            tmp = card_path.with_name(f".{card_name}.tmp")
            tmp.write_text(
                json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n",
                encoding="utf-8",
            )
            os.replace(tmp, card_path)
            durable_rename(self.staging, self.final)
        except BaseException as exc:
            self.fail(exc)
            raise
        recorded = {**files, card_name: sha256_file(self.final / card_name)}
        entry = self.ledger.publish(self.reservation, files=recorded, card=card_name)
        return entry, card

    def fail(self, exc: BaseException | None = None) -> None:
        """Remove the staging folder and record the entry as aborted (the charge counts)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        reason = f"the release failed before publication ({type(exc).__name__}: {exc})"
        with contextlib.suppress(Exception):
            self.ledger.abort(self.release_id, reason)


def begin(
    ledger: Ledger, request: ReleaseRequest, *, policy: Policy | PolicyFacts | None, final: Path
) -> Publication:
    """Check the folder, reserve the charge (recording ``final``) and open the staging folder.

    Raises
    ------
    WorkspaceError
        ``final`` exists already, or its folder is not writable or has too little space —
        before anything is charged.
    ReleaseRefusedError, BudgetExceededError
        From :meth:`Ledger.reserve`.
    """
    if final.exists():
        raise WorkspaceError(f"release folder {final} already exists; a release id is used once")
    check_writable(final.parent)
    reservation = ledger.reserve(request, policy=policy, output=final)
    try:
        # the pid lets a later run's sweep tell a killed publication's staging from a live one
        prefix = f".{reservation.release_id}.p{os.getpid()}-"
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=prefix, suffix=".tmp"))
    except OSError as exc:
        ledger.abort(reservation.release_id, f"the staging folder could not be made ({exc})")
        raise
    return Publication(ledger, reservation, final, staging)


def durable_rename(staging: Path, final: Path, *, replaced: Path | None = None) -> None:
    """Make a staged folder owner-only and durable (every file and the folder fsynced), then
    rename it to ``final`` and fsync the parent: after a crash, ``final`` is absent, the old
    folder or the new one, never half of one.

    Parameters
    ----------
    staging : Path
        The complete staged folder.
    final : Path
        Where it is published.
    replaced : Path, optional
        Where an existing ``final`` is moved aside before the rename and then removed (a
        folder that is replaced, such as the private segments'); without it ``final`` must
        not exist.
    """
    make_private(staging)  # owner-only whatever the umask; shared by a copy
    for path in staging.iterdir():
        _fsync_file(path)
    _fsync_dir(staging)
    if replaced is not None and final.exists():
        os.replace(final, replaced)
        os.replace(staging, final)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync_dir(final.parent)


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
