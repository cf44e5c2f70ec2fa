"""The privacy ledger: one SQLite file per controller that records every release and cannot
be reset.

What it records
    Every release of any kind (DP aggregates, DP k-means centroids, k-anonymous tables): time,
    controller, population and its fingerprint, policy, purpose, recipient, destination,
    clause ids, specification, guarantee, mechanism, contribution bounds, the privacy loss
    OpenDP computed (ε, δ or ρ), the SHA-256 of each released file, its status (reserved or
    published) and whether the ledger is an evaluation ledger.

Whose budget
    The budget belongs to the controller and the people, not to a workspace or a dataset
    version. The default file is ``<user data dir>/ledgers/<controller-slug>.sqlite``
    (platformdirs ``user_data_dir("segments")``; override the folder with the environment
    variable ``SEGMENTS_LEDGER_DIR`` or pass a path), so re-running prepare with a new as-of,
    purpose or key, or starting a fresh workspace, changes nothing. The demo's throw-away
    ledger lives in the workspace (``W/ledger/``) and says so in every output. A ledger
    refuses to be opened for another controller. There is no API to delete or reset entries,
    and SQLite triggers refuse UPDATE and DELETE on its tables.

Reservation, then publication
    :meth:`Ledger.reserve` runs the guards (:mod:`segments.privacy.guards`), then, in one
    ``BEGIN IMMEDIATE`` transaction, checks every rolling budget period the release falls in
    and appends a *reserve* event: the charge counts from this moment, so two processes cannot
    overspend together and a crash before publication leaves the reservation counted. There is
    no cancel: a reserved charge is spent. :meth:`Ledger.publish` appends a *publish* event
    with the files' SHA-256 and returns the entry with the head hash the release card carries.

Tamper evidence
    Both kinds of event are links of one hash chain: an event's hash is the SHA-256 of its
    canonical JSON body, which holds the previous event's hash (the first holds the hash of the
    ledger's identity: id, controller, creation time and flags). :meth:`Ledger.verify_chain`
    recomputes the chain; :meth:`Ledger.verify_cards` checks that the head hashes recorded in
    release cards are still in it, which detects a truncated or replaced ledger.

Budget accounting
    See :mod:`segments.privacy.composition`: pure ε adds in ε, zCDP adds in ρ (pure ε counts as
    ε²/2 when mixed) and is stated as (ε, δ) at the policy's δ; that ε is compared with the
    policy's ``budget_epsilon`` per ``budget_period_months`` over every rolling period the
    release falls in. k-anonymous releases charge nothing but appear in the history.

Evaluation ledgers
    Opened with ``evaluation=True``, allowed only for synthetic data: benchmarks and backtests
    may release many times (over-budget reservations are recorded, not refused) and every
    output is labelled ``EVALUATION LEDGER — synthetic data only``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import re
import sqlite3
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segments.exceptions import BudgetExceededError, ReleaseRefusedError, WorkspaceError
from segments.privacy.composition import (
    Composition,
    PrivacyLoss,
    add_months,
    compose,
    in_period,
    max_period_total,
    peak_period_total,
    period_start,
    rho_to_epsilon,
)
from segments.privacy.guards import GUARANTEE_K_ANONYMOUS, PolicyFacts, check_release

__all__ = [
    "EVALUATION_LABEL",
    "LEDGER_DIR_ENV",
    "THROWAWAY_LABEL",
    "Balance",
    "Ledger",
    "LedgerEntry",
    "ReleaseRequest",
    "Reservation",
    "Verification",
    "controller_slug",
    "default_ledger_dir",
    "default_ledger_path",
]

LEDGER_DIR_ENV = "SEGMENTS_LEDGER_DIR"
EVALUATION_LABEL = "EVALUATION LEDGER — synthetic data only"
THROWAWAY_LABEL = (
    "THROW-AWAY DEMO LEDGER — lives in the workspace and is lost with it; not the "
    "controller's ledger"
)
_FORMAT = "segments-ledger"
_SCHEMA_VERSION = "1"
_BUSY_TIMEOUT_S = 60.0
_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KINDS = ("dp", "kanon")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY,
        release_id TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('reserve', 'publish')),
        recorded_at TEXT NOT NULL,
        population TEXT NOT NULL,
        as_of TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        UNIQUE (release_id, event)
    )""",
    "CREATE INDEX IF NOT EXISTS events_population ON events (population, event)",
    # Append-only: no statement through SQLite can change or delete what was recorded.
    """CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events BEGIN
        SELECT RAISE(ABORT, 'the privacy ledger is append-only: events cannot be changed'); END""",
    """CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events BEGIN
        SELECT RAISE(ABORT, 'the privacy ledger is append-only: events cannot be deleted'); END""",
    """CREATE TRIGGER IF NOT EXISTS meta_fixed_update BEFORE UPDATE ON meta BEGIN
        SELECT RAISE(ABORT, 'the privacy ledger identity cannot be changed'); END""",
    """CREATE TRIGGER IF NOT EXISTS meta_fixed_delete BEFORE DELETE ON meta BEGIN
        SELECT RAISE(ABORT, 'the privacy ledger identity cannot be deleted'); END""",
)


# --- helpers ----------------------------------------------------------------------------------
def controller_slug(controller: str) -> str:
    """File-name slug of a controller name.

    Examples
    --------
    >>> controller_slug("AllOffice Nordic AB")
    'alloffice-nordic-ab'
    >>> controller_slug("ALO Center AB (Malmö)")
    'alo-center-ab-malmo'
    """
    ascii_name = unicodedata.normalize("NFKD", controller).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    if not slug:
        raise ValueError(f"controller name {controller!r} has no letters or digits to name a file")
    return slug


def default_ledger_dir() -> Path:
    """Folder of the controllers' ledgers: ``$SEGMENTS_LEDGER_DIR`` if set, else
    ``platformdirs.user_data_dir("segments")/ledgers``."""
    override = os.environ.get(LEDGER_DIR_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir("segments")) / "ledgers"


def default_ledger_path(controller: str, *, evaluation: bool = False) -> Path:
    """Default ledger file of a controller (evaluation ledgers live in ``evaluation/``)."""
    folder = default_ledger_dir() / ("evaluation" if evaluation else "")
    return folder / f"{controller_slug(controller)}.sqlite"


def _canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 text, no NaN."""
    return json.dumps(
        _jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _jsonable(obj: Any, where: str = "value") -> Any:
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}={obj!r} is not finite; the ledger stores JSON numbers")
        return obj
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {str(key): _jsonable(value, f"{where}[{key!r}]") for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(value, f"{where}[{i}]") for i, value in enumerate(obj)]
    if isinstance(obj, set | frozenset):
        return sorted(_jsonable(value, where) for value in obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item(), where)
    raise ValueError(
        f"{where} of type {type(obj).__name__} cannot be stored in the ledger; pass JSON-able "
        "values (str, int, float, bool, None, lists, dicts, dates)"
    )


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _as_date(value: Any, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{name}={value!r} is not a date; pass a datetime.date or 'YYYY-MM-DD'")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# --- value objects ------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ReleaseRequest:
    """What a release asks the ledger for (see docs/architecture.md, "The ledger").

    Parameters
    ----------
    policy : str
        Policy name.
    population : str
        The set of people whose budget is charged (e.g. ``"customers"``,
        ``"survey_respondents"``).
    purpose, recipient, destination : str
        Declared purpose, declared recipient and ISO country code of the destination.
    guarantee : str
        ``"end-to-end ε-DP"``, ``"DP given a non-private segmentation"`` or
        ``"k-anonymous microdata"``.
    as_of : date or str
        The release's reference date; budget periods are measured on it.
    budget_epsilon, budget_period_months, budget_window_months
        From ``policy.privacy``.
    clause_ids : tuple of str
        Policy clauses the release rests on.
    spec, bounds : dict
        JSON-able release specification and contribution bounds.
    mechanism : str
        e.g. ``"laplace"``, ``"gaussian"``, ``"generalisation"``.
    epsilon, delta, rho : float, optional
        The privacy loss as OpenDP computed it (None where not applicable). A zCDP release sets
        ``rho`` (its ``delta`` is then only the δ of its (ε, δ) statement).
    kind : str
        ``"dp"`` or ``"kanon"`` (default: from the guarantee).
    policy_delta : float, optional
        ``policy.privacy.delta``, used to state zCDP totals as (ε, δ); defaults to ``delta``.
    population_fingerprint : str
        e.g. the SHA-256 of the prepared customers file the release reads.
    synthetic : bool, optional
        The manifest's ``synthetic`` flag; an evaluation ledger refuses ``False``.
    release_id : str, optional
        A chosen id (letters, digits, ``._-``); generated when omitted.
    """

    policy: str
    population: str
    purpose: str
    recipient: str
    destination: str
    guarantee: str
    as_of: dt.date
    budget_epsilon: float
    budget_period_months: int
    budget_window_months: int
    clause_ids: tuple[str, ...] = ()
    spec: Mapping[str, Any] = field(default_factory=dict)
    mechanism: str = ""
    bounds: Mapping[str, Any] = field(default_factory=dict)
    epsilon: float | None = None
    delta: float | None = None
    rho: float | None = None
    kind: str = ""
    policy_delta: float | None = None
    population_fingerprint: str = ""
    synthetic: bool | None = None
    release_id: str | None = None

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "as_of", _as_date(self.as_of, "ReleaseRequest.as_of"))
        setattr_(self, "clause_ids", tuple(str(c) for c in self.clause_ids))
        setattr_(self, "destination", str(self.destination).upper())
        for name in ("epsilon", "delta", "rho", "policy_delta", "budget_epsilon"):
            setattr_(self, name, _optional_float(getattr(self, name)))
        if not self.kind:
            kind = "kanon" if self.guarantee == GUARANTEE_K_ANONYMOUS else "dp"
            setattr_(self, "kind", kind)
        # spec and bounds must be storable; keep them as plain JSON values.
        setattr_(self, "spec", _jsonable(dict(self.spec), "ReleaseRequest.spec"))
        setattr_(self, "bounds", _jsonable(dict(self.bounds), "ReleaseRequest.bounds"))
        self._validate()

    def _validate(self) -> None:
        for name in ("policy", "population", "purpose", "recipient", "destination", "guarantee"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"ReleaseRequest.{name} is empty; every release must state it")
        if self.kind not in _KINDS:
            raise ValueError(f"ReleaseRequest.kind={self.kind!r}; use one of {_KINDS}")
        loss = self.loss  # validates ε, δ, ρ ≥ 0
        if self.kind == "dp" and loss.family == "none":
            raise ValueError(
                "ReleaseRequest of kind 'dp' has no privacy loss; pass epsilon (pure DP) or "
                "rho (zCDP) as OpenDP computed it"
            )
        if self.kind == "kanon" and loss.family != "none":
            raise ValueError(
                "ReleaseRequest of kind 'kanon' carries a privacy loss; k-anonymous microdata "
                "has no ε, δ or ρ — leave them None"
            )
        if not (self.budget_epsilon is not None and self.budget_epsilon > 0):
            raise ValueError(
                f"ReleaseRequest.budget_epsilon={self.budget_epsilon!r} must be > 0; pass "
                "policy.privacy.budget_epsilon"
            )
        for name in ("budget_period_months", "budget_window_months"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"ReleaseRequest.{name}={value!r} must be a whole number of months ≥ 1"
                )
        if self.policy_delta is not None and not 0 < self.policy_delta < 1:
            raise ValueError(f"ReleaseRequest.policy_delta={self.policy_delta!r} must be in (0, 1)")
        if self.release_id is not None and not _RELEASE_ID.match(self.release_id):
            raise ValueError(
                f"ReleaseRequest.release_id={self.release_id!r} must be 1-128 letters, digits, "
                "'.', '_' or '-' (it names a folder)"
            )

    @property
    def loss(self) -> PrivacyLoss:
        """The release's privacy loss."""
        return PrivacyLoss(epsilon=self.epsilon, delta=self.delta, rho=self.rho)

    @property
    def conversion_delta(self) -> float | None:
        """δ for stating zCDP as (ε, δ): ``policy_delta``, else a zCDP release's ``delta``."""
        if self.policy_delta is not None:
            return self.policy_delta
        if self.rho is not None and self.delta:
            return self.delta
        return None

    @classmethod
    def for_policy(cls, policy: Any, **fields: Any) -> ReleaseRequest:
        """Build a request with the policy's name, budget and δ filled in.

        Parameters
        ----------
        policy : segments.Policy
            Supplies ``name`` and ``privacy.budget_epsilon``, ``budget_period_months``,
            ``budget_window_months`` and ``delta``.
        **fields
            The other :class:`ReleaseRequest` fields.
        """
        privacy = policy.privacy
        defaults = {
            "policy": policy.name,
            "budget_epsilon": privacy.budget_epsilon,
            "budget_period_months": privacy.budget_period_months,
            "budget_window_months": privacy.budget_window_months,
            # a pure-DP policy states delta = 0: there is no δ to report zCDP with
            "policy_delta": getattr(privacy, "delta", None) or None,
        }
        return cls(**{**defaults, **fields})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class Reservation:
    """A reserved charge: counted from now on, published later with :meth:`Ledger.publish`.

    Attributes
    ----------
    release_id : str
    request : ReleaseRequest
    reserved_at : str
        UTC time of the reservation.
    hash : str
        Hash of the reserve event.
    period_total : Composition
        Total of the worst rolling period that contains this release, including it.
    over_budget : bool
        True only on an evaluation ledger, which records over-budget releases.
    label : str
        The ledger's label (evaluation or throw-away), or ``""``.
    """

    release_id: str
    request: ReleaseRequest
    reserved_at: str
    hash: str
    period_total: Composition
    over_budget: bool
    evaluation: bool
    label: str


@dataclass(frozen=True)
class LedgerEntry:
    """One release as the ledger knows it: its reservation and, once published, its files.

    ``head_hash`` is the hash of the release's latest event: after :meth:`Ledger.publish`,
    the ledger head hash its card carries.
    """

    release_id: str
    status: str
    controller: str
    request: ReleaseRequest
    recipient_kind: str
    reserved_at: str
    published_at: str | None
    files: Mapping[str, str]
    reserve_hash: str
    publish_hash: str | None
    ledger_id: str
    evaluation: bool
    throwaway: bool
    label: str

    @property
    def head_hash(self) -> str:
        return self.publish_hash or self.reserve_hash

    @property
    def loss(self) -> PrivacyLoss:
        return self.request.loss

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able record (request fields at top level)."""
        record = {key: value for key, value in asdict(self).items() if key != "request"}
        record.update(self.request.to_dict())
        record["head_hash"] = self.head_hash
        record["charged"] = self.loss.family != "none"
        return _jsonable(record)


@dataclass(frozen=True)
class Balance:
    """A population's spending at a date.

    Attributes
    ----------
    period_total : Composition
        Releases dated in the rolling period ``(period_start, as_of]``.
    window_total : Composition
        Releases dated in the policy's window ``(window_start, as_of]``.
    peak_period_total : Composition
        The largest total of any rolling period ending on a release date up to ``as_of``.
    remaining_epsilon : float
        ``budget_epsilon − period_total.epsilon`` (not below 0).
    """

    population: str
    as_of: dt.date
    budget_epsilon: float
    budget_period_months: int
    budget_window_months: int
    period_start: dt.date
    window_start: dt.date
    period_total: Composition
    window_total: Composition
    peak_period_total: Composition
    peak_period_end: dt.date | None
    n_reserved: int
    n_published: int
    remaining_epsilon: float
    evaluation: bool
    label: str

    def __repr__(self) -> str:
        label = f" [{self.label.split(' — ')[0]}]" if self.label else ""
        return (
            f"Balance({self.population} as of {self.as_of}: {self.period_total.describe()} spent "
            f"of ε {self.budget_epsilon:g} in the {self.budget_period_months}-month period from "
            f"{self.period_start}; ε {self.remaining_epsilon:.4g} left; {self.n_published} "
            f"published, {self.n_reserved} reserved{label})"
        )

    def to_dict(self) -> dict[str, Any]:
        record = _jsonable(asdict(self))
        for name in ("period_total", "window_total", "peak_period_total"):
            record[name]["family"] = getattr(self, name).family
            record[name]["text"] = getattr(self, name).describe()
        return record


@dataclass(frozen=True)
class Verification:
    """Result of :meth:`Ledger.verify_chain` or :meth:`Ledger.verify_cards` (truthy if ok)."""

    ok: bool
    problems: tuple[str, ...]
    n_events: int
    head: str

    def __bool__(self) -> bool:
        return self.ok


# --- the ledger -------------------------------------------------------------------------------
class Ledger:
    """A controller's privacy ledger (one SQLite file). Open with :meth:`open`,
    :meth:`for_policy` or :meth:`for_workspace`; there is no way to delete or reset entries.

    Each call opens its own SQLite connection, so a ``Ledger`` may be shared with or re-opened
    in other processes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from segments.privacy.guards import PolicyFacts, Recipient
    >>> facts = PolicyFacts(name="demo", controller="Demo AB",
    ...     recipients={"purchasing": Recipient("purchasing", "internal", "SE")},
    ...     allowed_destinations=frozenset({"SE"}), purposes=frozenset({"analytics"}))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.sqlite"
    >>> ledger = Ledger.open(path, controller="Demo AB", policy=facts)
    >>> request = ReleaseRequest(policy="demo", population="customers", purpose="analytics",
    ...     recipient="purchasing", destination="SE", guarantee="end-to-end ε-DP",
    ...     as_of="2026-06-30", epsilon=0.5, mechanism="laplace", budget_epsilon=1.0,
    ...     budget_period_months=12, budget_window_months=24)
    >>> res = ledger.reserve(request)
    >>> entry = ledger.publish(res, files={"table.parquet": "0" * 64})
    >>> entry.status, entry.head_hash == ledger.head_hash()
    ('published', True)
    >>> ledger.balance("customers", "2026-06-30").remaining_epsilon
    0.5
    >>> bool(ledger.verify_chain())
    True
    """

    def __init__(
        self, path: Path, meta: Mapping[str, str], policy: Any = None, synthetic: bool = False
    ) -> None:
        self._path = path
        self._synthetic = synthetic
        self._meta = dict(meta)
        self._facts = PolicyFacts.from_policy(policy) if policy is not None else None
        self._policy = policy

    # --- opening --------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        controller: str | None = None,
        *,
        evaluation: bool = False,
        synthetic: bool = False,
        throwaway: bool = False,
        create: bool = True,
        policy: Any = None,
    ) -> Ledger:
        """Open (or create) the ledger at ``path`` for ``controller``.

        Parameters
        ----------
        path : path-like
            The SQLite file.
        controller : str, optional
            The controller the ledger belongs to; refused if the file was created for another.
            May be omitted only to read an existing ledger.
        evaluation : bool
            Open an evaluation ledger (benchmarks and backtests); needs ``synthetic=True``
            unless ``create=False`` (reading). An evaluation ledger and a real one are never
            the same file.
        synthetic : bool
            The data manifest's ``synthetic`` flag.
        throwaway : bool
            Mark a newly created ledger as the demo's throw-away ledger (stored in the file;
            ignored when the file exists).
        create : bool
            Create the file if missing (False: raise instead, and open only to read or to
            publish reservations).
        policy : segments.Policy or PolicyFacts, optional
            Used by the guards and for default budgets; otherwise the policy a request names
            is loaded with ``segments.policy.Policy.load``.

        Raises
        ------
        ReleaseRefusedError
            Another controller's ledger, an evaluation ledger for non-synthetic data, or an
            evaluation/real mismatch with the existing file.
        WorkspaceError
            The file is missing (with ``create=False``) or not a segments ledger.
        """
        target = Path(path)
        if evaluation and create and not synthetic:
            raise ReleaseRefusedError(
                f"evaluation ledger {target} refused: evaluation ledgers allow repeated releases "
                "and are for synthetic data only, and the data is not marked synthetic "
                "(manifest 'synthetic' is false); use the controller's ledger"
            )
        if not target.exists():
            if not create:
                raise WorkspaceError(
                    f"no privacy ledger at {target}; it is created by the first release "
                    "(`segments release ...`), or pass the right --ledger/--policy"
                )
            if controller is None:
                raise ValueError(f"controller is required to create a ledger at {target}")
            target.parent.mkdir(parents=True, exist_ok=True)
        meta = _init_or_read_meta(target, controller, evaluation, throwaway)
        if controller is not None and meta["controller"] != controller:
            raise ReleaseRefusedError(
                f"ledger {target} belongs to controller {meta['controller']!r}, not "
                f"{controller!r}; a budget belongs to one controller — open that controller's "
                "ledger (default: one file per controller)"
            )
        is_evaluation = meta["evaluation"] == "true"
        if is_evaluation != evaluation and (evaluation or create):
            wanted, found = (
                ("an evaluation", "a real") if evaluation else ("a real", "an evaluation")
            )
            raise ReleaseRefusedError(
                f"ledger {target} is {found} ledger but {wanted} ledger was asked for; "
                "evaluation and real releases are never recorded in the same file"
            )
        ledger = cls(target, meta, policy, synthetic)
        if ledger._facts is not None and ledger._facts.controller != meta["controller"]:
            raise ReleaseRefusedError(
                f"policy {ledger._facts.name!r} belongs to controller "
                f"{ledger._facts.controller!r}, but ledger {target} belongs to "
                f"{meta['controller']!r}; use that controller's policy"
            )
        return ledger

    @classmethod
    def for_policy(
        cls,
        policy: Any,
        *,
        path: str | os.PathLike[str] | None = None,
        evaluation: bool = False,
        synthetic: bool = False,
        create: bool = True,
    ) -> Ledger:
        """Open the ledger of the policy's controller (default path per controller).

        Parameters
        ----------
        policy : segments.Policy
            Supplies the controller, the guards' facts and the default budget.
        path : path-like, optional
            Overrides :func:`default_ledger_path`.
        evaluation, synthetic, create
            As in :meth:`open`.
        """
        controller = str(policy.controller)
        target = Path(path) if path else default_ledger_path(controller, evaluation=evaluation)
        return cls.open(
            target,
            controller,
            evaluation=evaluation,
            synthetic=synthetic,
            create=create,
            policy=policy,
        )

    @classmethod
    def for_workspace(
        cls,
        workspace: Any,
        controller: str,
        *,
        evaluation: bool = False,
        synthetic: bool = False,
        create: bool = True,
        policy: Any = None,
    ) -> Ledger:
        """Open the demo's throw-away ledger in ``W/ledger/`` (labelled as such everywhere).

        Parameters
        ----------
        workspace : Workspace or path-like
            The workspace.
        controller : str
            As in :meth:`open`.
        """
        # a Workspace, or the workspace folder itself (a Path's own .root is "/")
        root = Path(workspace) if isinstance(workspace, str | os.PathLike) else workspace.root
        prefix = "evaluation-" if evaluation else ""
        target = root / "ledger" / f"{prefix}{controller_slug(controller)}.sqlite"
        return cls.open(
            target,
            controller,
            evaluation=evaluation,
            synthetic=synthetic,
            throwaway=True,
            create=create,
            policy=policy,
        )

    # --- identity -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def controller(self) -> str:
        return self._meta["controller"]

    @property
    def ledger_id(self) -> str:
        return self._meta["ledger_id"]

    @property
    def created_at(self) -> str:
        return self._meta["created_at"]

    @property
    def evaluation(self) -> bool:
        return self._meta["evaluation"] == "true"

    @property
    def throwaway(self) -> bool:
        return self._meta["throwaway"] == "true"

    @property
    def label(self) -> str:
        """``EVALUATION LEDGER — synthetic data only``, the throw-away notice, or ``""``."""
        labels = [EVALUATION_LABEL] if self.evaluation else []
        if self.throwaway:
            labels.append(THROWAWAY_LABEL)
        return "; ".join(labels)

    def __repr__(self) -> str:
        flags = f" [{self.label}]" if self.label else ""
        return f"Ledger({str(self._path)!r}, controller={self.controller!r}){flags}"

    # --- writing --------------------------------------------------------------------------
    def reserve(self, request: ReleaseRequest, *, policy: Any = None) -> Reservation:
        """Check the guards and the budget, then record the charge — before anything runs.

        Parameters
        ----------
        request : ReleaseRequest
        policy : segments.Policy or PolicyFacts, optional
            The policy's facts for the guards (default: the ledger's policy, else
            ``Policy.load(request.policy)``).

        Returns
        -------
        Reservation

        Raises
        ------
        ReleaseRefusedError
            A guard fails (destination AO-2/OF-3, recipient AC-4, guarantee AO-1, purpose
            AO-10), the policy belongs to another controller, the request's budget differs
            from the policy's, or an evaluation ledger gets non-synthetic data.
        BudgetExceededError
            The release would push a rolling period over the budget (stating spent,
            requested and remaining); nothing is recorded.
        """
        facts, policy_obj = self._facts_for(request, policy)
        recipient = check_release(
            purpose=request.purpose,
            recipient=request.recipient,
            destination=request.destination,
            guarantee=request.guarantee,
            kind=request.kind,
            facts=facts,
        )
        _check_budget_matches_policy(request, policy_obj)
        synthetic = self._synthetic if request.synthetic is None else request.synthetic
        if self.evaluation and not synthetic:
            raise ReleaseRefusedError(
                f"{EVALUATION_LABEL}: release for population {request.population!r} is on data "
                "not marked synthetic (manifest 'synthetic' is false); record it in the "
                "controller's ledger instead"
            )
        release_id = request.release_id or _new_release_id(request)
        request = dataclasses.replace(request, release_id=release_id)
        with self._transaction() as conn:
            dated = self._dated_losses(
                conn, request.population, request.as_of, request.budget_period_months
            )
            dated.append((request.as_of, request.loss))
            delta = (
                request.conversion_delta or _policy_delta(policy_obj) or _latest_zcdp_delta(dated)
            )
            worst_end, worst = max_period_total(
                dated, request.as_of, request.budget_period_months, delta
            )
            over = worst.epsilon > request.budget_epsilon
            if over and not self.evaluation:
                raise self._budget_error(request, dated[:-1], worst_end, worst, delta)
            recorded_at = _now()
            data = {
                "controller": self.controller,
                "recipient_kind": recipient.kind,
                "evaluation": self.evaluation,
                "throwaway": self.throwaway,
                "conversion_delta": delta,
                "request": request.to_dict(),
            }
            event_hash = self._append(conn, release_id, "reserve", recorded_at, request, data)
        return Reservation(
            release_id=release_id,
            request=request,
            reserved_at=recorded_at,
            hash=event_hash,
            period_total=worst,
            over_budget=over,
            evaluation=self.evaluation,
            label=self.label,
        )

    def publish(self, reservation: Reservation | str, files: Mapping[str, str]) -> LedgerEntry:
        """Record the release's files (name → SHA-256) and return its entry.

        Parameters
        ----------
        reservation : Reservation or str
            The reservation (or its release id).
        files : mapping of str to str
            Released file names and their SHA-256 hex digests
            (:func:`segments.workspace.sha256_file`).

        Returns
        -------
        LedgerEntry
            With ``head_hash``: the ledger head after publication, for the release card.

        Raises
        ------
        ReleaseRefusedError
            No such reservation, or it is already published.
        ValueError
            A digest is not 64 lowercase hex characters, or no file is given.
        """
        release_id = reservation if isinstance(reservation, str) else reservation.release_id
        if not files:
            raise ValueError(
                f"publish({release_id!r}) got no files; pass each released file's SHA-256"
            )
        for name, digest in files.items():
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise ValueError(
                    f"file {name!r} of release {release_id!r} has digest {digest!r}; pass the "
                    "SHA-256 as 64 lowercase hex characters (segments.workspace.sha256_file)"
                )
        with self._transaction() as conn:
            rows = dict(
                conn.execute(
                    "SELECT event, body FROM events WHERE release_id = ?", (release_id,)
                ).fetchall()
            )
            if "reserve" not in rows:
                raise ReleaseRefusedError(
                    f"release {release_id!r} has no reservation in ledger {self._path}; "
                    "reserve it (Ledger.reserve) before running and publishing it"
                )
            if "publish" in rows:
                raise ReleaseRefusedError(
                    f"release {release_id!r} is already published in ledger {self._path}; a "
                    "release is published once — reserve a new release"
                )
            request = _request_from_body(rows["reserve"])
            data = {"files": dict(sorted(files.items()))}
            self._append(conn, release_id, "publish", _now(), request, data)
        return self.entry(release_id)

    # --- reading --------------------------------------------------------------------------
    def head_hash(self) -> str:
        """Hash of the latest event (the genesis hash of an empty ledger)."""
        with self._connect() as conn:
            row = conn.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return row[0] if row else self._meta["genesis_hash"]

    def events(self) -> list[dict[str, Any]]:
        """Every chain event, oldest first: ``seq``, ``hash``, ``prev_hash`` and its body."""
        with self._connect() as conn:
            rows = conn.execute("SELECT seq, hash, body FROM events ORDER BY seq").fetchall()
        return [{"seq": seq, "hash": digest, **json.loads(body)} for seq, digest, body in rows]

    def entries(self, population: str | None = None) -> list[LedgerEntry]:
        """Every release (reserved or published), oldest reservation first."""
        if population is None:
            return self._entries("", ())
        return self._entries(" WHERE population = ?", (population,))

    def _entries(self, where: str, params: tuple[str, ...]) -> list[LedgerEntry]:
        query = "SELECT release_id, event, recorded_at, hash, body FROM events" + where
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY seq", params).fetchall()
        published = {
            rid: (at, digest, body) for rid, ev, at, digest, body in rows if ev == "publish"
        }
        entries = []
        for release_id, event, recorded_at, digest, body in rows:
            if event != "reserve":
                continue
            data = json.loads(body)["data"]
            pub = published.get(release_id)
            entries.append(
                LedgerEntry(
                    release_id=release_id,
                    status="published" if pub else "reserved",
                    controller=data["controller"],
                    request=ReleaseRequest(**data["request"]),
                    recipient_kind=data["recipient_kind"],
                    reserved_at=recorded_at,
                    published_at=pub[0] if pub else None,
                    files=json.loads(pub[2])["data"]["files"] if pub else {},
                    reserve_hash=digest,
                    publish_hash=pub[1] if pub else None,
                    ledger_id=self.ledger_id,
                    evaluation=data["evaluation"],
                    throwaway=data["throwaway"],
                    label=self.label,
                )
            )
        return entries

    def entry(self, release_id: str) -> LedgerEntry:
        """The entry of one release."""
        for entry in self._entries(" WHERE release_id = ?", (release_id,)):
            return entry
        raise KeyError(f"release {release_id!r} is not in ledger {self._path}")

    def populations(self) -> list[str]:
        """Populations with at least one release."""
        with self._connect() as conn:
            rows = conn.execute("SELECT DISTINCT population FROM events ORDER BY 1").fetchall()
        return [row[0] for row in rows]

    def balance(
        self,
        population: str,
        as_of: dt.date | str | None = None,
        *,
        budget_epsilon: float | None = None,
        budget_period_months: int | None = None,
        budget_window_months: int | None = None,
        delta: float | None = None,
    ) -> Balance:
        """Spending of ``population`` in the rolling period and the window ending ``as_of``.

        Budget parameters default to the ledger's policy, else to the latest release of the
        population; ``as_of`` defaults to the latest release date.

        Raises
        ------
        ValueError
            No budget is known (no policy and no release of the population) — pass it.
        """
        entries = self.entries(population)
        latest = max(entries, key=lambda e: e.request.as_of).request if entries else None
        privacy = getattr(self._policy, "privacy", None)

        def pick(given: Any, name: str, policy_name: str | None = None) -> Any:
            if given is not None:
                return given
            if privacy is not None and hasattr(privacy, policy_name or name):
                return getattr(privacy, policy_name or name)
            if latest is not None:
                return getattr(latest, name)
            raise ValueError(
                f"ledger {self._path} has no release for population {population!r} and no "
                f"policy; pass {name} (policy.privacy.{policy_name or name})"
            )

        budget = float(pick(budget_epsilon, "budget_epsilon"))
        period = int(pick(budget_period_months, "budget_period_months"))
        window = int(pick(budget_window_months, "budget_window_months"))
        delta = delta or _policy_delta(self._policy)
        dated = [(e.request.as_of, e.loss) for e in entries]
        delta = delta or (latest.conversion_delta if latest else None) or _latest_zcdp_delta(dated)
        end = _as_date(as_of, "as_of") if as_of is not None else (latest.as_of if latest else None)
        if end is None:
            end = dt.date.today()
        period_total = compose((loss for day, loss in dated if in_period(day, end, period)), delta)
        peak_end, peak = peak_period_total(dated, period, end, delta)
        return Balance(
            population=population,
            as_of=end,
            budget_epsilon=budget,
            budget_period_months=period,
            budget_window_months=window,
            period_start=period_start(end, period),
            window_start=period_start(end, window),
            period_total=period_total,
            window_total=compose(
                (loss for day, loss in dated if in_period(day, end, window)), delta
            ),
            peak_period_total=peak,
            peak_period_end=peak_end,
            n_reserved=sum(e.status == "reserved" for e in entries),
            n_published=sum(e.status == "published" for e in entries),
            remaining_epsilon=max(0.0, budget - period_total.epsilon),
            evaluation=self.evaluation,
            label=self.label,
        )

    # --- tamper evidence --------------------------------------------------------------------
    def verify_chain(self) -> Verification:
        """Recompute the hash chain from the ledger's identity to its head.

        Detects an edited event (body or columns), a removed or reordered event, a changed
        identity (controller, evaluation or throw-away flag) and a publication without a
        reservation. A truncated or replaced ledger needs the cards: :meth:`verify_cards`.
        """
        problems: list[str] = []
        meta = _read_meta_raw(self._path)
        expected_genesis = _genesis_hash(meta)
        if meta.get("genesis_hash") != expected_genesis:
            problems.append(
                "the ledger identity (controller, id, creation time or flags) does not match its "
                "genesis hash: it was edited"
            )
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT seq, release_id, event, recorded_at, population, as_of, body, prev_hash,"
                " hash FROM events ORDER BY seq"
            ).fetchall()
        prev = meta.get("genesis_hash", "")
        reserved: set[str] = set()
        for index, row in enumerate(rows, start=1):
            seq, release_id, event, recorded_at, population, as_of, body, prev_hash, digest = row
            where = f"event {seq} ({event} of {release_id!r})"
            if seq != index:
                problems.append(f"{where}: expected sequence number {index}; events were removed")
            if _sha256_text(body) != digest:
                problems.append(f"{where}: its hash does not match its content: it was edited")
            if prev_hash != prev:
                problems.append(f"{where}: it does not link to the previous event's hash")
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError:
                problems.append(f"{where}: its content is not JSON")
                prev = digest
                continue
            columns = {
                "seq": seq,
                "release_id": release_id,
                "event": event,
                "recorded_at": recorded_at,
                "prev_hash": prev_hash,
                "ledger_id": meta.get("ledger_id"),
            }
            mismatched = [k for k, v in columns.items() if parsed.get(k) != v]
            request = parsed.get("data", {}).get("request") or {}
            if event == "reserve" and (
                request.get("population") != population or request.get("as_of") != as_of
            ):
                mismatched.append("population/as_of")
            if mismatched:
                problems.append(f"{where}: columns {mismatched} differ from its hashed content")
            if event == "reserve":
                reserved.add(release_id)
            elif release_id not in reserved:
                problems.append(f"{where}: published without an earlier reservation")
            prev = digest
        return Verification(not problems, tuple(problems), len(rows), prev)

    def verify_cards(
        self, cards: Iterable[Mapping[str, Any] | str | os.PathLike[str]]
    ) -> Verification:
        """Check release cards against the ledger: detects a truncated or replaced ledger.

        Parameters
        ----------
        cards : iterable of dict or path-like
            Release cards (``card.json``, or a k-anonymity certificate) with ``release_id``
            and ``ledger_head`` (or ``ledger_head_hash``): the head hash at the release's time.

        Returns
        -------
        Verification
            Problems of the chain itself (:meth:`verify_chain`) and of every card: its release
            missing from the ledger, or its head hash not in the chain after its reservation.
        """
        chain = self.verify_chain()
        problems = list(chain.problems)
        with self._connect() as conn:
            seq_of = dict(conn.execute("SELECT hash, seq FROM events").fetchall())
            reserve_seq = dict(
                conn.execute("SELECT release_id, seq FROM events WHERE event = 'reserve'")
            )
        for card in cards:
            data = _load_card(card)
            release_id = data.get("release_id")
            head = data.get("ledger_head") or data.get("ledger_head_hash")
            if not release_id or not head:
                problems.append(
                    f"card {_card_name(card)} lacks 'release_id' or 'ledger_head'; every release "
                    "card records the ledger head hash at its time"
                )
                continue
            if release_id not in reserve_seq:
                problems.append(
                    f"release {release_id!r} (card {_card_name(card)}) is not in ledger "
                    f"{self._path}: the ledger was truncated or replaced"
                )
            elif head not in seq_of:
                problems.append(
                    f"release {release_id!r}: the ledger head {head[:12]}… on its card is not in "
                    "the chain: the ledger was rewritten or replaced"
                )
            elif seq_of[head] < reserve_seq[release_id]:
                problems.append(
                    f"release {release_id!r}: the ledger head on its card precedes its "
                    "reservation: the ledger was rewritten"
                )
        return Verification(not problems, tuple(problems), chain.n_events, chain.head)

    # --- internals --------------------------------------------------------------------------
    def _connect(self) -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(_connect(self._path))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken before the budget is read."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                # SQLite may already have rolled back (e.g. "database or disk is full"); a
                # failing ROLLBACK must not mask that real error.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _append(
        self,
        conn: sqlite3.Connection,
        release_id: str,
        event: str,
        recorded_at: str,
        request: ReleaseRequest,
        data: Mapping[str, Any],
    ) -> str:
        row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (row[0] + 1, row[1]) if row else (1, self._meta["genesis_hash"])
        body = _canonical(
            {
                "seq": seq,
                "release_id": release_id,
                "event": event,
                "recorded_at": recorded_at,
                "prev_hash": prev_hash,
                "ledger_id": self.ledger_id,
                "data": data,
            }
        )
        digest = _sha256_text(body)
        try:
            conn.execute(
                "INSERT INTO events (seq, release_id, event, recorded_at, population, as_of,"
                " body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    release_id,
                    event,
                    recorded_at,
                    request.population,
                    request.as_of.isoformat(),
                    body,
                    prev_hash,
                    digest,
                ),
            )
        except sqlite3.IntegrityError:
            raise ReleaseRefusedError(
                f"release id {release_id!r} is already {event}d in ledger {self._path}; "
                "choose a new release id"
            ) from None
        return digest

    def _dated_losses(
        self, conn: sqlite3.Connection, population: str, near: dt.date, months: int
    ) -> list[tuple[dt.date, PrivacyLoss]]:
        """Charges of ``population`` dated within ``months`` of ``near`` (others cannot share
        a rolling period with a release dated ``near``)."""
        rows = conn.execute(
            "SELECT as_of, json_extract(body, '$.data.request.epsilon'),"
            " json_extract(body, '$.data.request.delta'), json_extract(body, '$.data.request.rho')"
            " FROM events WHERE population = ? AND event = 'reserve' AND as_of > ? AND as_of < ?"
            " ORDER BY seq",
            (
                population,
                period_start(near, months).isoformat(),
                add_months(near, months).isoformat(),
            ),
        ).fetchall()
        return [
            (dt.date.fromisoformat(as_of), PrivacyLoss(epsilon, delta, rho))
            for as_of, epsilon, delta, rho in rows
        ]

    def _facts_for(self, request: ReleaseRequest, policy: Any) -> tuple[PolicyFacts, Any]:
        policy_obj = policy if policy is not None else self._policy
        if policy_obj is None:
            policy_obj = _load_policy(request.policy)
        facts = PolicyFacts.from_policy(policy_obj)
        if facts.name != request.policy:
            raise ReleaseRefusedError(
                f"release names policy {request.policy!r} but the ledger was given policy "
                f"{facts.name!r}; pass the policy the release is made under"
            )
        if facts.controller != self.controller:
            raise ReleaseRefusedError(
                f"policy {facts.name!r} belongs to controller {facts.controller!r}, but ledger "
                f"{self._path} belongs to {self.controller!r}; use that controller's ledger"
            )
        return facts, policy_obj

    def _budget_error(
        self,
        request: ReleaseRequest,
        before: list[tuple[dt.date, PrivacyLoss]],
        worst_end: dt.date,
        worst: Composition,
        delta: float | None,
    ) -> BudgetExceededError:
        months = request.budget_period_months
        start = period_start(worst_end, months)
        spent = compose((loss for day, loss in before if in_period(day, worst_end, months)), delta)
        budget = request.budget_epsilon
        remaining = max(0.0, budget - spent.epsilon)
        asked = _describe_loss(request.loss, delta)
        prefix = f"[{self.label}] " if self.label else ""
        exc = BudgetExceededError(
            f"{prefix}release for population {request.population!r} (purpose {request.purpose!r}, "
            f"recipient {request.recipient!r}) refused before anything ran: the rolling "
            f"{months}-month period ({start}, {worst_end}] has spent ε = {spent.epsilon:.6g} of "
            f"the budget ε = {budget:.6g} ({spent.describe()}); requested {asked} would make it "
            f"ε = {worst.epsilon:.6g}; remaining ε = {remaining:.6g}. Lower the release's "
            "privacy loss to fit, release fewer queries, or wait until earlier releases leave "
            f"the period (ledger {self._path}, controller {self.controller!r})"
        )
        exc.spent_epsilon = spent.epsilon  # type: ignore[attr-defined]
        exc.requested_epsilon = worst.epsilon - spent.epsilon  # type: ignore[attr-defined]
        exc.remaining_epsilon = remaining  # type: ignore[attr-defined]
        exc.budget_epsilon = budget  # type: ignore[attr-defined]
        return exc


# --- module internals ----------------------------------------------------------------------------
def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _genesis_hash(meta: Mapping[str, str]) -> str:
    identity = {
        key: meta.get(key)
        for key in ("format", "ledger_id", "controller", "created_at", "evaluation", "throwaway")
    }
    return _sha256_text(_canonical(identity))


def _read_meta_raw(path: Path) -> dict[str, str]:
    with contextlib.closing(_connect(path)) as conn:
        try:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise WorkspaceError(
                f"{path} is not a segments privacy ledger ({exc}); point --ledger at the "
                "controller's ledger file"
            ) from None


def _init_or_read_meta(
    path: Path, controller: str | None, evaluation: bool, throwaway: bool
) -> dict[str, str]:
    try:
        conn = _connect(path)
    except sqlite3.DatabaseError as exc:
        raise _not_a_ledger(path, exc) from None
    with contextlib.closing(conn):
        try:
            conn.execute("BEGIN IMMEDIATE")
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            existing: dict[str, str] = {}
            if "meta" in tables:
                existing = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if existing.get("format") == _FORMAT:
                    for statement in _SCHEMA:  # restores the append-only triggers if dropped
                        conn.execute(statement)
            elif not tables and controller is not None:  # a new, empty file: make it a ledger
                for statement in _SCHEMA:
                    conn.execute(statement)
                existing = {
                    "format": _FORMAT,
                    "schema_version": _SCHEMA_VERSION,
                    "ledger_id": uuid.uuid4().hex,
                    "controller": controller,
                    "created_at": _now(),
                    "evaluation": "true" if evaluation else "false",
                    "throwaway": "true" if throwaway else "false",
                }
                existing["genesis_hash"] = _genesis_hash(existing)
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", existing.items())
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise _not_a_ledger(path, exc) from None
    if existing.get("format") != _FORMAT:
        raise WorkspaceError(
            f"{path} is not a segments privacy ledger (no ledger identity in it); point "
            "--ledger at the controller's ledger file"
        )
    return existing


def _not_a_ledger(path: Path, exc: Exception) -> WorkspaceError:
    return WorkspaceError(
        f"{path} is not a segments privacy ledger ({exc}); point --ledger at the controller's "
        "ledger file"
    )


def _new_release_id(request: ReleaseRequest) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{request.kind}-{uuid.uuid4().hex[:8]}"


def _request_from_body(body: str) -> ReleaseRequest:
    return ReleaseRequest(**json.loads(body)["data"]["request"])


def _policy_delta(policy: Any) -> float | None:
    """``policy.privacy.delta`` if positive (a pure-DP policy states 0)."""
    delta = getattr(getattr(policy, "privacy", None), "delta", None)
    return float(delta) if delta else None


def _latest_zcdp_delta(dated: list[tuple[dt.date, PrivacyLoss]]) -> float | None:
    deltas = [loss.delta for _, loss in dated if loss.family == "zcdp" and loss.delta]
    return deltas[-1] if deltas else None


def _describe_loss(loss: PrivacyLoss, delta: float | None) -> str:
    if loss.family == "zcdp" and loss.rho is not None:
        text = f"ρ = {loss.rho:.6g}"
        return text + (
            f" (ε = {rho_to_epsilon(loss.rho, delta):.6g} at δ = {delta:g})" if delta else ""
        )
    if loss.family == "approx":
        return f"(ε = {loss.epsilon:.6g}, δ = {loss.delta:.3g})"
    return f"ε = {loss.epsilon:.6g}"


def _check_budget_matches_policy(request: ReleaseRequest, policy: Any) -> None:
    """Refuse a request whose budget differs from its policy's (a caller cannot raise it)."""
    privacy = getattr(policy, "privacy", None)
    if privacy is None:
        return
    for name in ("budget_epsilon", "budget_period_months", "budget_window_months"):
        expected = getattr(privacy, name, None)
        if expected is not None and getattr(request, name) != expected:
            raise ReleaseRefusedError(
                f"release request has {name}={getattr(request, name)!r} but policy "
                f"{request.policy!r} sets privacy.{name}={expected!r}; the budget comes from the "
                "policy (build the request with ReleaseRequest.for_policy)"
            )


def _load_policy(name: str) -> Any:
    try:
        from segments.policy import Policy  # type: ignore[attr-defined,import-not-found,unused-ignore]
    except ImportError:
        raise ReleaseRefusedError(
            f"cannot check release guards: policy {name!r} could not be loaded "
            "(segments.policy is unavailable); pass policy= to Ledger.reserve or Ledger.open"
        ) from None
    return Policy.load(name)


def _load_card(card: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(card, Mapping):
        return card
    loaded = json.loads(Path(card).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"release card {card} is not a JSON object")
    return loaded


def _card_name(card: Mapping[str, Any] | str | os.PathLike[str]) -> str:
    return repr(card.get("release_id", "?")) if isinstance(card, Mapping) else str(card)
