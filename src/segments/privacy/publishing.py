"""One publishing path for every release: check → reserve → stage → fsync → rename → publish.

Every release starts from a :class:`ReleaseContext` (who releases what to whom under which
policy, charged to which ledger), built once by :meth:`ReleaseContext.open`, which checks it
against the policy and the ledger; no release runs without one.

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
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segments.exceptions import ReleaseRefusedError, WorkspaceError
from segments.workspace import CARD, Workspace, fsync_dir, make_private, sha256_file

if TYPE_CHECKING:
    from segments.policy import Policy
    from segments.privacy.ledger import Ledger, ReleaseRequest


__all__ = [
    "MIN_FREE_BYTES",
    "Publication",
    "ReleaseContext",
    "begin",
    "check_writable",
    "durable_rename",
]


@dataclass(frozen=True)
class ReleaseContext:
    """Who releases what to whom under which policy, charged to which ledger: the facts
    every release records, travelling as one object (as OpenDP's ``Context`` does).

    Build it with :meth:`open`; every field is checked when it is built (a copy made with
    :func:`dataclasses.replace` is checked again), and the ledger when it is first used.

    Attributes
    ----------
    workspace : Workspace
        The workspace whose data is released (and whose ``releases/`` folder is written).
    policy : segments.Policy
        The policy whose facts the ledger guards; the ledger must be bound to it.
    purpose, recipient, destination : str
        Declared by the policy (refused otherwise, before any ledger is opened).
    synthetic : bool or None
        The caller withdraws (False) the synthetic proof the ledger was opened with, or
        leaves it to the ledger (None: evaluation and demo ledgers hold one).
    clause_ids : tuple of str
        The policy's own release clauses for ``purpose``: what every card cites.
    """

    workspace: Workspace
    policy: Policy
    purpose: str
    recipient: str
    destination: str
    synthetic: bool | None
    clause_ids: tuple[str, ...]
    opener: Callable[[], Ledger] = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        from segments.privacy.jobs import refuse_early

        self.policy.purpose(self.purpose)  # an undeclared purpose: refused, citing the policy
        refuse_early(self.policy, self.purpose, self.recipient, self.destination)
        own = own_clause_ids(self.policy, self.purpose, self.clause_ids)
        if tuple(self.clause_ids) != own:
            raise ReleaseRefusedError(
                f"release clause_ids {list(self.clause_ids)} are not the clauses policy "
                f"{self.policy.name!r} states for purpose {self.purpose!r} ({list(own)}); a card "
                "cites its policy's own release clauses — build the context with "
                "ReleaseContext.open(ledger, workspace, policy, ...)"
            )

    @classmethod
    def open(
        cls,
        ledger: Ledger | Callable[[], Ledger],
        workspace: Workspace | str | os.PathLike[str],
        policy: Policy | str,
        *,
        purpose: str,
        recipient: str,
        destination: str = "SE",
        synthetic: bool | None = None,
        clause_ids: Sequence[str] | None = None,
    ) -> ReleaseContext:
        """The one way to a release context: the facts checked against the policy now, the
        ledger checked against the policy now (or, given a function opening it, when the
        release first needs it: a refused release opens or creates no ledger file).

        Parameters
        ----------
        ledger : Ledger or callable
            The ledger charged, or a function opening it (called once).
        workspace : Workspace or path
        policy : segments.Policy or str
            The policy or its name.
        purpose, recipient, destination : str
        synthetic : bool, optional
            False withdraws the ledger's synthetic proof for these releases.
        clause_ids : sequence of str, optional
            Clauses a caller asks the card to cite: they must be among the policy's own for
            ``purpose`` (the card cites all of those), else refused before anything.

        Raises
        ------
        PolicyError, ReleaseRefusedError
            An undeclared purpose, recipient or destination, another policy's clause, or a
            ledger bound to another policy.
        """
        from segments.policy import Policy

        loaded = Policy.load(policy) if isinstance(policy, str) else policy
        opener = ledger if callable(ledger) else functools.partial(_same, ledger)
        context = cls(
            workspace=workspace if isinstance(workspace, Workspace) else Workspace(workspace),
            policy=loaded,
            purpose=purpose,
            recipient=recipient,
            destination=destination,
            synthetic=synthetic,
            clause_ids=own_clause_ids(loaded, purpose, clause_ids),
            opener=opener,
        )
        if not callable(ledger):
            context.ledger  # noqa: B018 - an open ledger is checked now
        return context

    @functools.cached_property
    def ledger(self) -> Ledger:
        """The ledger charged, opened on first use and checked to be bound to :attr:`policy`.

        Raises
        ------
        ReleaseRefusedError
            The ledger is bound to another policy's parameters or facts.
        """
        ledger = self.opener()
        ledger.check_policy(self.policy)
        return ledger

    def request(self, **fields: Any) -> ReleaseRequest:
        """The ledger request of a release in this context: the policy's name and budget,
        the population, purpose, recipient, destination, clause ids and synthetic claim from
        the context, the release's own ``fields`` (spec, guarantee, loss, ...) added."""
        from segments.privacy.ledger import POPULATION, ReleaseRequest

        parties = {
            "population": POPULATION,
            "purpose": self.purpose,
            "recipient": self.recipient,
            "destination": self.destination,
            "clause_ids": self.clause_ids,
            "synthetic": self.states_synthetic(),
        }
        return ReleaseRequest.for_policy(self.policy, **{**parties, **fields})

    def states_synthetic(self) -> bool:
        """What a release's request states: the caller's ``synthetic``, else the ledger's
        (evaluation and demo ledgers open only with a proof that the data is synthetic)."""
        return self.ledger.simulated_time if self.synthetic is None else self.synthetic


def _same(ledger: Ledger) -> Ledger:
    return ledger


def own_clause_ids(policy: Policy, purpose: str, asked: Sequence[str] | None) -> tuple[str, ...]:
    """The clauses a release cites: the policy's own for ``purpose``, always. Ids a caller or
    spec names that the policy's release clauses do not hold (another controller's promise)
    are refused before any charge."""
    own = policy.release_clause_ids(purpose)
    foreign = [c for c in (asked or ()) if c not in own]
    if foreign:
        raise ReleaseRefusedError(
            f"release clause_ids {foreign} are not clauses of policy {policy.name!r} for "
            f"purpose {purpose!r} (its own: {list(own)}); a card cites only its own policy's "
            "clauses — leave clause_ids out"
        )
    return own


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

    def complete(
        self,
        card_name: str = CARD,
        *,
        released: Sequence[str] | None = None,
        replaced: Path | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Bind the card to the ledger, make the folder durable, rename it, publish.

        Parameters
        ----------
        card_name : str
            The card the caller wrote into the staging folder (``card.json`` or
            ``certificate.json``).
        released : sequence of str, optional
            The released files (hashed into the card and the ledger); default every other
            file. The DP k-means folder also holds files that are not released (its labels,
            personal data, and its metadata).
        replaced : Path, optional
            Where the folder this one replaces is moved aside during the rename (the private
            segments' folder is replaced by each fit); see :func:`durable_rename`.

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
                if path.is_file()
                and path.name != card_name
                and (released is None or path.name in released)
            }
            card.update(_parties(self.reservation.request))
            card.update(self.reservation.card_fields())
            card["evaluation"] = bool(self.reservation.evaluation)
            card["ledger_label"] = str(self.reservation.label)
            card["files"] = files
            # files kept beside the release but not released (the DP k-means' labels and
            # metadata): named on the hashed card, so the ledger's check knows them
            kept = sorted(
                path.name
                for path in self.staging.iterdir()
                if path.is_file() and path.name != card_name and path.name not in files
            )
            if kept:
                card["kept_unreleased"] = kept
            tmp = card_path.with_name(f".{card_name}.tmp")
            tmp.write_text(
                json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n",
                encoding="utf-8",
            )
            os.replace(tmp, card_path)
            durable_rename(self.staging, self.final, replaced=replaced)
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


def _parties(request: ReleaseRequest) -> dict[str, Any]:
    """What every card states about who released what to whom, from the request the ledger
    reserved (so a card cannot state other parties than its entry)."""
    return {
        "policy": request.policy,
        "population": request.population,
        "purpose": request.purpose,
        "recipient": request.recipient,
        "destination": request.destination,
        "clause_ids": list(request.clause_ids),
    }


def begin(
    ledger: Ledger,
    request: ReleaseRequest,
    *,
    policy: Policy | None,
    final: Path,
    replaces: bool = False,
) -> Publication:
    """Check the folder, reserve the charge (recording ``final``) and open the staging folder.

    Releases, k-anonymous tables and the DP k-means all start here: the ledger records a
    job's own entry (the DP k-means's) only when the job's function calls this one.

    Parameters
    ----------
    replaces : bool
        ``final`` is a folder each publication replaces (the private segments'), not a new
        release folder that must not exist yet.

    Raises
    ------
    WorkspaceError
        ``final`` exists already (unless it ``replaces`` it), or its folder is not writable
        or has too little space — before anything is charged.
    ReleaseRefusedError, BudgetExceededError
        From :meth:`Ledger.reserve`.
    """
    if final.exists() and not replaces:
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
    fsync_dir(staging)
    if replaced is not None and final.exists():
        os.replace(final, replaced)
        os.replace(staging, final)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.replace(staging, final)
    fsync_dir(final.parent)


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
