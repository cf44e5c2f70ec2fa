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
    ``BEGIN IMMEDIATE`` transaction, verifies the chain from the last verified event and the
    anchors, checks the policy binding, the time, the once-only key and every rolling budget
    period (and the window) the release falls in, and appends a *reserve* event: the charge
    counts from this moment, so two processes cannot overspend together and a crash before
    publication leaves the reservation counted. There is no cancel. :meth:`Ledger.publish`
    appends a *publish* event with the SHA-256 of every released file and of the card;
    :meth:`Ledger.abort` records a publication that did not complete (the charge still
    counts) and :meth:`Ledger.reconcile` finishes or aborts reservations a crash left behind
    (:mod:`segments.privacy.publishing` is the one path that stages, fsyncs, renames, then
    publishes).

Time
    On a controller's ledger a release is charged on the date it is recorded (the ledger's
    clock); its as-of may not run ahead of today or behind the population's latest release.
    Evaluation and demo ledgers, for data proven synthetic
    (:mod:`segments.privacy.synthetic`), charge on the simulated as-of.

One ledger per controller, bound to its policy
    A registry in the per-user data folder records each controller's ledger (path, id, head
    hash, event count). A controller's ledger is created at its default path by the first
    release, or at another path only with ``init=True``; a second ledger for the controller is
    refused, naming the registered one. The first *policy* event binds the ledger to the
    policy's budget, period, window, δ and DP family (and the policy file's SHA-256); a policy
    with other parameters is refused, and :meth:`Ledger.change_policy` records a change, which
    may only tighten before a full period has passed.

Tamper evidence
    Every event is a link of one hash chain: its hash is the SHA-256 of its canonical JSON
    body, which holds every column (sequence, ids, times, population, as-of, charge date,
    once-only key) and the previous event's hash (the first links to the hash of the ledger's
    identity). After every append the head hash and event count are written beside the file
    (``<ledger>.anchor.json``) and to the registry, and every release card carries them, so a
    ledger that is missing, truncated, rolled back or replaced is refused, not recreated.
    :meth:`Ledger.verify_chain` recomputes the chain and checks the anchors;
    :meth:`Ledger.verify_cards` also recomputes the SHA-256 of every published file and card.

Budget accounting
    See :mod:`segments.privacy.composition`: pure ε adds in ε, zCDP adds in ρ (pure ε counts as
    ε²/2 when mixed) and is stated as (ε, δ) at the policy's δ; that ε is compared with the
    policy's ``budget_epsilon`` per ``budget_period_months`` over every rolling period the
    release falls in, and with ``budget_epsilon × window / period`` over the policy's
    ``budget_window_months`` (the retention window; every card states the population's total
    over it). k-anonymous releases charge nothing but appear in the history.

Evaluation ledgers
    Opened with ``evaluation=True``, allowed only for data proven synthetic: benchmarks and
    backtests may release many times (reservations over the policy's budget are recorded and
    flagged, up to a stated cap of :data:`EVALUATION_CAP_FACTOR` times the budget per period
    and window, over which they are refused) and every output is labelled
    ``EVALUATION LEDGER — synthetic data only``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import re
import sqlite3
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segments.exceptions import (
    BudgetExceededError,
    PolicyError,
    ReleaseRefusedError,
    WorkspaceError,
)
from segments.privacy.composition import (
    Composition,
    DPFamily,
    PrivacyLoss,
    add_months,
    compose,
    in_period,
    max_period_total,
    peak_period_total,
    period_start,
    rho_to_epsilon,
)
from segments.privacy.guards import Guarantee, check_release
from segments.workspace import CARD_NAMES, Workspace, fsync_dir, pid_alive, private_folder

__all__ = [
    "EVALUATION_CAP_FACTOR",
    "EVALUATION_LABEL",
    "LEDGER_DIR_ENV",
    "THROWAWAY_LABEL",
    "Balance",
    "Ledger",
    "LedgerEntry",
    "ReleaseRequest",
    "Reservation",
    "Verification",
    "cite_rule",
    "claim_population_data",
    "ledger_today",
    "controller_slug",
    "default_ledger_dir",
    "default_ledger_path",
    "missing_ledgers",
    "registered_ledgers",
]

LEDGER_DIR_ENV = "SEGMENTS_LEDGER_DIR"
#: An evaluation ledger (synthetic data, benchmarks) may spend this many times the policy's
#: budget in any period or window, and no more; over it a release is refused and
#: ``segments ledger`` exits 1, as on any ledger.
EVALUATION_CAP_FACTOR = 100
EVALUATION_LABEL = "EVALUATION LEDGER — synthetic data only"
THROWAWAY_LABEL = (
    "THROW-AWAY DEMO LEDGER — lives in the workspace and is lost with it; not the "
    "controller's ledger"
)

if TYPE_CHECKING:
    from segments.policy import Policy

_FORMAT = "segments-ledger"
_SCHEMA_VERSION = "2"
_BUSY_TIMEOUT_S = 60.0
_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KINDS = ("dp", "kanon")
_EVENTS = ("reserve", "publish", "abort", "policy")
#: Columns of ``events`` that are also fields of the hashed body: every one is in the chain.
_HASHED_COLUMNS = (
    "seq",
    "release_id",
    "event",
    "recorded_at",
    "population",
    "as_of",
    "charged_on",
    "once_key",
    "prev_hash",
)
#: The policy's privacy parameters a ledger is bound to (a change is a ledger event).
BOUND_PARAMETERS = (
    "budget_epsilon",
    "budget_period_months",
    "budget_window_months",
    "delta",
    "dp_family",
)
_MIN_FREE_BYTES = 16 * 1024 * 1024
#: Specifications only their own job may reserve (spec name → job), and the one function
#: (module, name) that runs the job: :meth:`Ledger.reserve` records such an entry only when
#: it is called from that function's own code, defined in that module's source file. No
#: token, flag or argument a caller could pass grants it.
#: The one population a ledger charges: the controller's customers, each a person (sole
#: traders' accounts linked). Survey respondents, buyers and segments are all these people,
#: so a second name would be a second budget for the same people (r13 finding 1).
POPULATION = "customers"
_JOB_SPECS = {"private_segments": "dp-kmeans"}
_JOB_FUNCTIONS = {"dp-kmeans": ("segments.privacy.kmeans", "fit_private_segments")}


def _caller(frame: Any) -> Any:
    """The code that asked for a reservation: the caller of
    :func:`segments.privacy.publishing.begin` (the one publishing path) when that is what
    called :meth:`Ledger.reserve`, else the caller of ``reserve`` itself."""
    import importlib.util

    spec = importlib.util.find_spec("segments.privacy.publishing")
    if frame is None or spec is None or spec.origin is None or frame.f_code.co_name != "begin":
        return frame
    try:
        if Path(frame.f_code.co_filename).resolve() == Path(spec.origin).resolve():
            return frame.f_back
    except OSError:
        pass
    return frame


def _called_by_job(job: str, frame: Any) -> bool:
    """Whether ``frame`` (the caller of :meth:`Ledger.reserve`) runs the job's own function:
    its code object's name and source file must be the job's (a replacement function, a
    monkeypatched module attribute or a caller's own code has another file or name)."""
    import importlib.util

    module, name = _JOB_FUNCTIONS[job]
    spec = importlib.util.find_spec(module)
    if frame is None or spec is None or spec.origin is None:
        return False
    code = frame.f_code
    try:
        same_file = Path(code.co_filename).resolve() == Path(spec.origin).resolve()
    except OSError:
        return False
    return same_file and code.co_name == name


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY,
        release_id TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('reserve', 'publish', 'abort', 'policy')),
        recorded_at TEXT NOT NULL,
        population TEXT NOT NULL,
        as_of TEXT NOT NULL,
        charged_on TEXT NOT NULL,
        once_key TEXT UNIQUE,
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


def _proven_synthetic(
    synthetic: Any, workspace: str | os.PathLike[str] | None
) -> tuple[bool, str, str | None]:
    """(proven, why not, the proven raw data's digest) from a signed
    :class:`~segments.privacy.synthetic.SyntheticProof`, or from proving ``workspace`` when
    ``synthetic`` is True: the caller never declares it. With a workspace, a proof must be
    about that workspace's raw files: a proof made for workspace A proves nothing about B."""
    from segments.privacy.synthetic import SyntheticProof, prove_synthetic

    if isinstance(synthetic, SyntheticProof):
        if not synthetic.signed:
            return False, "the proof given is not one prove_synthetic signed for this user", None
        if workspace is not None and not synthetic.is_for(Path(workspace)):
            return (
                False,
                "the proof given was made for other raw data than "
                f"{Workspace(Path(workspace)).raw} holds (another workspace, or raw files "
                "changed since); pass "
                "prove_synthetic(workspace) of this workspace",
                None,
            )
        return synthetic.proven, synthetic.reason, synthetic.raw if synthetic.proven else None
    if synthetic is True and workspace is not None:
        proof = prove_synthetic(Path(workspace))
        proven = proof.proven and proof.signed
        return proven, proof.reason, proof.raw if proven else None
    if synthetic is True:
        return False, "True is not a proof: pass prove_synthetic(workspace)", None
    return False, "no proof was given", None


def _clock() -> dt.datetime:
    """The ledger's clock (UTC). A release on a controller's ledger is charged on this date;
    tests replace this function, callers cannot pass a time."""
    return dt.datetime.now(dt.UTC)


def ledger_today() -> dt.date:
    """Today on the ledger's clock (UTC): the one "today" for default as-of dates and the
    ledger's checks, whatever the local time zone (east of UTC, the local date runs ahead)."""
    return _clock().date()


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
        folder = Path(override)
        if folder.exists() and not folder.is_dir():
            raise WorkspaceError(
                f"{LEDGER_DIR_ENV}={override} is a file, not a folder; set {LEDGER_DIR_ENV} to "
                "the folder of the controllers' ledgers (or unset it for the per-user default)"
            )
        return folder
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
    return _clock().isoformat(timespec="microseconds")


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
        A :class:`segments.policy.Guarantee` (or its text).
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
    once_key : str, optional
        Names a release the ledger allows once per population, e.g.
        ``"monthly_category/2026-09"``: a unique key in the ledger refuses a second charge in
        the reserving transaction (a retry is allowed only after an *aborted* publication).
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
    once_key: str | None = None

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "as_of", _as_date(self.as_of, "ReleaseRequest.as_of"))
        setattr_(self, "clause_ids", tuple(str(c) for c in self.clause_ids))
        setattr_(self, "destination", str(self.destination).upper())
        for name in ("epsilon", "delta", "rho", "policy_delta", "budget_epsilon"):
            setattr_(self, name, _optional_float(getattr(self, name)))
        if not self.kind:
            kind = "kanon" if self.guarantee == Guarantee.K_ANONYMOUS else "dp"
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
        if self.kind == "dp" and not ((loss.epsilon or 0.0) > 0 or (loss.rho or 0.0) > 0):
            raise ValueError(
                f"ReleaseRequest of kind 'dp' states no privacy loss (epsilon={self.epsilon!r}, "
                f"rho={self.rho!r}); a noisy release loses more than 0 — pass epsilon (pure DP) "
                "or rho (zCDP) > 0 as OpenDP computed it"
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
        if self.once_key is not None and not re.match(r"^[A-Za-z0-9._/-]{1,128}$", self.once_key):
            raise ValueError(
                f"ReleaseRequest.once_key={self.once_key!r} must be 1-128 letters, digits, "
                "'.', '_', '/' or '-', e.g. 'monthly_category/2026-09'"
            )
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
    def for_policy(cls, policy: Policy, **fields: Any) -> ReleaseRequest:
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
    charged_on : date
        The date the charge counts on: the recording date on a controller's ledger, the
        simulated ``as_of`` on an evaluation or demo ledger.
    window_total : Composition
        The population's total loss over the policy's window ending ``charged_on``, including
        this release: what a person retained through the whole window has lost.
    anchor : dict
        ``{"ledger_id", "events", "head"}`` right after the reservation, for the release card.
    """

    release_id: str
    request: ReleaseRequest
    reserved_at: str
    hash: str
    period_total: Composition
    over_budget: bool
    evaluation: bool
    label: str
    charged_on: dt.date = dt.date.min
    window_total: Composition | None = None
    anchor: Mapping[str, Any] = field(default_factory=dict)

    def card_fields(self) -> dict[str, Any]:
        """What every release card states about its charge and the ledger it is bound to."""
        window = self.window_total
        request = self.request
        return _jsonable(
            {
                "release_id": self.release_id,
                "ledger_head_hash": self.hash,
                "ledger_anchor": dict(self.anchor),
                "charged_on": self.charged_on,
                "reserved_at": self.reserved_at,
                "population_total_loss": {
                    "window_months": request.budget_window_months,
                    "period_months": request.budget_period_months,
                    "budget_epsilon_per_period": request.budget_epsilon,
                    "window_epsilon": None if window is None else window.epsilon,
                    "window_delta": None if window is None else window.delta,
                    "period_epsilon": self.period_total.epsilon,
                    "text": (
                        f"population {request.population!r} has lost "
                        + ("nothing" if window is None else window.describe())
                        + f" over the {request.budget_window_months}-month window ending "
                        f"{self.charged_on}, this release included (at most "
                        f"ε = {request.budget_epsilon:g} in any {request.budget_period_months} "
                        "months)"
                    ),
                },
            }
        )


@dataclass(frozen=True)
class LedgerEntry:
    """One release as the ledger knows it: its reservation and, once published, its files.

    ``status`` is ``"reserved"``, ``"published"`` or ``"aborted"`` (the publication did not
    complete; the charge still counts). ``files`` maps every published file, the card
    included (``card`` names it), to its SHA-256. ``reserve_hash`` is the hash a release's
    card carries; ``head_hash`` is the hash of the release's latest event.
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
    charged_on: dt.date = dt.date.min
    output: str | None = None
    process: Mapping[str, Any] | None = None
    card: str | None = None
    aborted_at: str | None = None
    abort_reason: str | None = None
    job: str | None = None

    @property
    def head_hash(self) -> str:
        """The entry's latest hash: its publication's once published, else its reservation's."""
        return self.publish_hash or self.reserve_hash

    @property
    def loss(self) -> PrivacyLoss:
        """The privacy loss the entry charges (its request's)."""
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
        """JSON-able record, each total with its family and its wording (for the ledger report)."""
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
    >>> from segments.policy import Policy
    >>> policy = Policy.load("alloffice")  # budget ε = 4 per 12 months
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.sqlite"
    >>> from segments.privacy.synthetic import _verdict
    >>> proof = _verdict(True, "example")  # what prove_synthetic(W) signs for generated data
    >>> ledger = Ledger.open(path, controller=policy.controller, policy=policy, throwaway=True,
    ...     synthetic=proof)  # a demo ledger: simulated time, for data proven synthetic
    >>> request = ReleaseRequest.for_policy(policy, population="customers",
    ...     purpose="statistics", recipient="purchasing", destination="SE",
    ...     guarantee="end-to-end ε-DP", as_of="2026-06-30", epsilon=0.5, mechanism="laplace")
    >>> res = ledger.reserve(request)
    >>> entry = ledger.publish(res, files={"table.parquet": "0" * 64})
    >>> entry.status, entry.head_hash == ledger.head_hash()
    ('published', True)
    >>> ledger.balance("customers", "2026-06-30").remaining_epsilon
    3.5
    >>> bool(ledger.verify_chain())
    True
    """

    def __init__(
        self,
        path: Path,
        meta: Mapping[str, str],
        policy: Policy | None = None,
        synthetic: bool = False,
        proven_raw: str | None = None,
    ) -> None:
        self._path = path
        self._synthetic = synthetic
        # the raw data the synthetic proof was about (raw_digest): simulated time is for
        # releases of that data only (check_workspace)
        self._proven_raw = proven_raw if synthetic else None
        self._meta = dict(meta)
        self._policy = policy
        # the last event this object verified: the next check resumes from there
        self._verified: tuple[int, str] = (0, self._meta["genesis_hash"])

    # --- opening --------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        controller: str | None = None,
        *,
        evaluation: bool = False,
        synthetic: Any = None,
        throwaway: bool = False,
        create: bool = True,
        policy: Policy | None = None,
        init: bool = False,
        releases: str | os.PathLike[str] | None = None,
        workspace: str | os.PathLike[str] | None = None,
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
            Open an evaluation ledger (benchmarks and backtests); needs the data proven
            synthetic unless ``create=False`` (reading). An evaluation ledger and a real one
            are never the same file.
        synthetic : SyntheticProof or True, optional
            Where "synthetic" comes from, never a flag: the signed verdict of
            :func:`segments.privacy.synthetic.prove_synthetic`, or ``True`` to have the ledger
            prove ``workspace`` itself. Evaluation and demo ledgers refuse anything else (a
            bare ``True`` without a workspace, an unsigned or hand-made proof, data not
            proven).
        throwaway : bool
            Mark a newly created ledger as the demo's throw-away ledger (stored in the file;
            ignored when the file exists).
        create : bool
            Create the file if missing (False: raise instead, and open only to read or to
            publish reservations).
        policy : segments.Policy, optional
            Used by the guards and for default budgets; otherwise the policy a request names
            is loaded with ``segments.policy.Policy.load``.
        init : bool
            Explicitly start (or move) the controller's ledger at ``path`` when it is not the
            default path. Refused while the registry knows another ledger of the controller.
        releases : path-like, optional
            The workspace's releases folder: a release card there of this controller and kind
            of ledger that names another ledger, more events, or another head hash at its
            event count refuses the ledger — checked *before* a missing file is created, so a
            refusal never leaves a ledger behind.
        workspace : path-like, optional
            The workspace whose raw data ``synthetic=True`` asks the ledger to prove.

        Raises
        ------
        ReleaseRefusedError
            Another controller's ledger, an evaluation or demo ledger for data not proven
            synthetic, an evaluation/real mismatch with the existing file, a controller's
            ledger at a new path, or a ledger missing or rolled back behind its anchors.
        WorkspaceError
            The file is missing (with ``create=False``) or not a segments ledger.
        """
        target = Path(path)
        simulated = evaluation or throwaway
        # proven only when it is needed: a read-only open (create=False) does not regenerate
        needed = simulated and (create or synthetic is not True)
        proven, why, proven_raw = (
            _proven_synthetic(synthetic, workspace) if needed else (False, "", None)
        )
        if simulated and create and not proven:
            kind = "evaluation" if evaluation else "throw-away demo"
            raise ReleaseRefusedError(
                f"{kind} ledger {target} refused{cite_rule(policy)}: evaluation and demo "
                "ledgers allow simulated "
                "time and repeated releases and are for data proven synthetic only, and the "
                f"data is not proven synthetic ({why}; the raw files must be what the "
                "generator produces for the manifest's seed and parameters); use the "
                "controller's ledger"
            )
        registered = _registry_get(controller) if controller and not simulated else None
        if not target.exists():
            anchor = _read_anchor(target)
            if anchor is not None:
                raise ReleaseRefusedError(
                    f"privacy ledger {target}{cite_rule(policy)} is missing but its anchor "
                    f"{_anchor_path(target)} records {anchor.get('events')} events (head "
                    f"{str(anchor.get('head'))[:12]}…): the ledger was deleted or moved. "
                    "Restore it from a backup; a ledger is never recreated over its history"
                )
            if registered is not None:
                where = Path(registered["path"])
                state = "exists" if where.exists() else "is MISSING (restore it from a backup)"
                raise ReleaseRefusedError(
                    f"no privacy ledger at {target}{cite_rule(policy)}, and controller "
                    f"{controller!r} already has one: {where} (ledger id "
                    f"{registered.get('ledger_id')}, "
                    f"{registered.get('events')} events), which {state}. A controller has one "
                    "ledger: pass --ledger "
                    f"{where}; to move it, copy that file here and open it with --init-ledger"
                )
            if not create:
                raise WorkspaceError(
                    f"no privacy ledger at {target}; it is created by the first release "
                    "(`segments release ...`), or pass the right --ledger/--policy"
                )
            if controller is None:
                raise ValueError(f"controller is required to create a ledger at {target}")
            if releases is not None:
                label = _label(evaluation, throwaway)
                charged = _card_contradictions(
                    releases, label, lambda name: _policy_is_of(name, controller, policy)
                )
                if charged:
                    raise ReleaseRefusedError(_contradiction_message(target, charged, policy))
            default = default_ledger_path(controller)
            if not simulated and not init and target.resolve() != default.resolve():
                raise ReleaseRefusedError(
                    f"no privacy ledger of {controller!r} at {target}: a controller's ledger is "
                    f"created at its default path {default} by the first release, or at "
                    "another path only when initialised explicitly (--init-ledger, "
                    "Ledger.open(..., init=True))"
                )
            private_folder(target.parent)
        meta = _init_or_read_meta(target, controller, evaluation, throwaway)
        if meta.get("schema_version") != _SCHEMA_VERSION:
            raise WorkspaceError(
                f"privacy ledger {target} has format {meta.get('schema_version')!r}; this "
                f"version reads format {_SCHEMA_VERSION!r} (every field in the hash chain). "
                "Keep the old file as the record of past releases and start the new format "
                "with --init-ledger at a new path"
            )
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
        if not needed and synthetic is not None and (is_evaluation or meta["throwaway"] == "true"):
            # an existing demo or evaluation file opened without asking for one: the same proof
            proven, why, proven_raw = _proven_synthetic(synthetic, workspace)
        ledger = cls(target, meta, policy, proven, proven_raw)
        if ledger._policy is not None and ledger._policy.controller != meta["controller"]:
            raise ReleaseRefusedError(
                f"policy {ledger._policy.name!r} belongs to controller "
                f"{ledger._policy.controller!r}, but ledger {target} belongs to "
                f"{meta['controller']!r}; use that controller's policy"
            )
        if create:
            problems = ledger._anchor_problems()
            if problems:
                raise ReleaseRefusedError(_broken_message(target, problems))
            folders = [] if releases is None else [Path(releases)]
            if not ledger.simulated_time:
                # every workspace that released with this ledger, not only this one: a
                # per-user folder restored from a backup (ledger, anchor and registry rolled
                # back together) is refused as soon as any of them holds a later card
                folders += _release_folders(ledger.ledger_id)
            contradicted = [c for f in _unique(folders) for c in ledger.contradicting_cards(f)]
            if contradicted:
                raise ReleaseRefusedError(_contradiction_message(target, contradicted, policy))
            if not ledger.simulated_time:
                ledger._register(registered, init)
                if releases is not None:
                    _remember_release_folder(ledger.ledger_id, Path(releases))
            if policy is not None:
                ledger._check_policy(policy)
        return ledger

    @classmethod
    def for_policy(
        cls,
        policy: Policy,
        *,
        path: str | os.PathLike[str] | None = None,
        evaluation: bool = False,
        synthetic: Any = None,
        create: bool = True,
        init: bool = False,
        releases: str | os.PathLike[str] | None = None,
    ) -> Ledger:
        """Open the ledger of the policy's controller (default path per controller).

        Parameters
        ----------
        policy : segments.Policy
            Supplies the controller, the guards' facts and the default budget.
        path : path-like, optional
            Overrides :func:`default_ledger_path` (a new file only with ``init=True``).
        evaluation, synthetic, create, init, releases
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
            init=init,
            releases=releases,
        )

    @classmethod
    def for_workspace(
        cls,
        workspace: Workspace | str | os.PathLike[str],
        controller: str,
        *,
        evaluation: bool = False,
        synthetic: Any = None,
        create: bool = True,
        policy: Policy | None = None,
    ) -> Ledger:
        """Open the demo's throw-away ledger in ``W/ledger/`` (labelled as such everywhere).

        Parameters
        ----------
        workspace : Workspace or path-like
            The workspace (its ``releases/`` cards are checked against the ledger, before a
            missing ledger is created).
        controller : str
            As in :meth:`open`.
        synthetic : SyntheticProof or True, optional
            As in :meth:`open`; ``True`` proves this workspace's raw data.
        """
        # a Workspace, or the workspace folder itself (a Path's own .root is "/")
        root = Path(workspace) if isinstance(workspace, str | os.PathLike) else workspace.root
        ws = Workspace(root)
        prefix = "evaluation-" if evaluation else ""
        target = ws.ledger_folder / f"{prefix}{controller_slug(controller)}.sqlite"
        return cls.open(
            target,
            controller,
            evaluation=evaluation,
            synthetic=synthetic,
            throwaway=True,
            create=create,
            policy=policy,
            releases=ws.releases,
            workspace=root,
        )

    # --- identity -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The ledger's SQLite file."""
        return self._path

    @property
    def controller(self) -> str:
        """The controller whose releases this ledger accounts for."""
        return self._meta["controller"]

    @property
    def ledger_id(self) -> str:
        """Its identity, recorded by its anchors and cards so none passes for another ledger's."""
        return self._meta["ledger_id"]

    @property
    def created_at(self) -> str:
        """When the ledger was created, as its metadata records it."""
        return self._meta["created_at"]

    @property
    def evaluation(self) -> bool:
        """Whether this is an evaluation ledger (its releases labelled as evaluations)."""
        return self._meta["evaluation"] == "true"

    @property
    def throwaway(self) -> bool:
        """Whether this is a demo's or evaluation's throw-away ledger (``W/ledger/``)."""
        return self._meta["throwaway"] == "true"

    @property
    def simulated_time(self) -> bool:
        """True for evaluation and demo ledgers: charges count on the release's ``as_of``
        (a simulated history of synthetic data); a controller's ledger charges on the
        recording date."""
        return self.evaluation or self.throwaway

    def check_workspace(
        self, workspace: Workspace | str | os.PathLike[str], rule: str = ""
    ) -> None:
        """Refuse, before anything is charged, a release of ``workspace`` on an evaluation or
        demo ledger opened with a proof about other raw data, or on a controller's ledger
        when another controller name already released on the workspace's people.

        Simulated time is granted to the data proven synthetic, not to the ledger object: a
        demo ledger opened for workspace A (its proof) and handed to a release of workspace B
        would otherwise date B's releases as the caller likes. Every library release calls
        this with the workspace it reads (its frames are bound to the workspace's raw data by
        :func:`segments.provenance.signed_record`). On a controller's ledger the people of the
        workspace are bound to the controller's name (:func:`claim_population_data`), as the
        CLI binds them: a Python caller with a renamed copy of the policy gets no fresh budget
        for people another controller name released on.

        Raises
        ------
        ReleaseRefusedError
            The ledger is an evaluation or demo ledger and ``W/raw/`` is not the raw data
            its synthetic proof was about; or a controller's ledger and the workspace's
            people are bound to another controller name.
        """
        root = Path(workspace) if isinstance(workspace, str | os.PathLike) else workspace.root
        if not self.simulated_time:
            from segments.provenance import population_data_ids

            ids = population_data_ids(Workspace(root))
            claim_population_data(self.controller, ids, self._policy)
            return
        from segments.privacy.synthetic import raw_digest

        if self._proven_raw is None or raw_digest(root) != self._proven_raw:
            rule = rule or cite_rule(self._policy)
            raise ReleaseRefusedError(
                f"{self.label}: refused before anything was charged{rule}: {self._path} was "
                "opened with a synthetic proof about other raw data than "
                f"{Workspace(root).raw} holds (another workspace, or raw files changed since); "
                "evaluation and demo ledgers "
                "take releases of the data proven synthetic only — open the ledger for this "
                "workspace (Ledger.for_workspace(workspace, ..., synthetic=True)) or use the "
                "controller's ledger"
            )

    def charge_date(self, as_of: dt.date | str) -> dt.date:
        """The date a release with this as-of would be charged on: today on a controller's
        ledger (its clock), the as-of itself on an evaluation or demo ledger."""
        return _as_date(as_of, "as_of") if self.simulated_time else _clock().date()

    @property
    def anchor_path(self) -> Path:
        """``<ledger>.anchor.json``: head hash and event count, rewritten on every append."""
        return _anchor_path(self._path)

    @property
    def label(self) -> str:
        """``EVALUATION LEDGER — synthetic data only``, the throw-away notice, or ``""``."""
        return _label(self.evaluation, self.throwaway)

    def __repr__(self) -> str:
        flags = f" [{self.label}]" if self.label else ""
        return f"Ledger({str(self._path)!r}, controller={self.controller!r}){flags}"

    # --- writing --------------------------------------------------------------------------
    def reserve(
        self,
        request: ReleaseRequest,
        *,
        policy: Policy | None = None,
        output: str | os.PathLike[str] | None = None,
    ) -> Reservation:
        """Check the guards, the chain, the time and the budget, then record the charge —
        before anything runs.

        Parameters
        ----------
        request : ReleaseRequest
        policy : segments.Policy, optional
            The policy's facts for the guards (default: the ledger's policy, else
            ``Policy.load(request.policy)``).
        output : path-like, optional
            The folder the release will be published to; recorded so that
            :meth:`reconcile` can finish or abort a publication a crash interrupted.

        Returns
        -------
        Reservation

        Raises
        ------
        ReleaseRefusedError
            A guard fails (destination, recipient, guarantee, purpose), the policy belongs to
            another controller or differs from the one the ledger is bound to, the request's
            budget differs from the policy's, an evaluation or demo ledger gets data not proven
            synthetic, the chain or an anchor is broken, the as-of runs ahead of today or
            behind the population's latest release (controller's ledger), or a once-only
            release (``once_key``) was already charged.
        BudgetExceededError
            The release would push a rolling period (or the window) over the budget (stating
            spent, requested and remaining); nothing is recorded.
        """
        policy_obj = self._policy_for(request, policy)
        recipient = check_release(
            purpose=request.purpose,
            recipient=request.recipient,
            destination=request.destination,
            guarantee=request.guarantee,
            kind=request.kind,
            policy=policy_obj,
        )
        _check_budget_matches_policy(request, policy_obj)
        spec_name = request.spec.get("name") if isinstance(request.spec, Mapping) else None
        job_name = _JOB_SPECS.get(str(spec_name))
        # a job's entry (the DP k-means, whose entry keys "end-to-end" releases) is recorded
        # only when the job's own function calls: a caller cannot declare one
        if job_name is not None and not _called_by_job(job_name, _caller(sys._getframe(1))):
            raise ReleaseRefusedError(
                f"a {spec_name!r} entry is recorded only by its own job ({job_name}: "
                "segments.privacy.kmeans.fit_private_segments), which runs the mechanism after "
                "the charge; a caller cannot declare one — run `segments segment --private`"
            )
        if request.population != POPULATION:
            raise ReleaseRefusedError(
                f"release for population {request.population!r} refused before anything was "
                f"charged{cite_rule(policy_obj)}: every release "
                f"charges the people of the controller's data, population {POPULATION!r}, "
                "whose budget a new name cannot restart; release with that population"
            )
        # the proof given when the ledger was opened; a request can only withdraw it
        synthetic = self._synthetic and request.synthetic is not False
        if self.simulated_time and not synthetic:
            raise ReleaseRefusedError(
                f"{self.label}: release for population {request.population!r} is on data not "
                "proven synthetic; evaluation and demo ledgers take synthetic data only — "
                "record it in the controller's ledger instead"
            )
        release_id = request.release_id or _new_release_id(request)
        request = dataclasses.replace(request, release_id=release_id)
        with self._appending() as conn:
            self._bind_policy(conn, request, policy_obj)
            own = self._check_claims(request, _bound_policy(conn), policy_obj)
            if not request.clause_ids:  # the ledger records the clauses, not the caller
                request = dataclasses.replace(request, clause_ids=own)
            charged_on = self._charge_date(conn, request)
            once_key = self._once_key(conn, request)
            months = max(request.budget_period_months, request.budget_window_months)
            dated = self._dated_losses(conn, request.population, charged_on, months)
            dated.append((charged_on, request.loss))
            delta = (
                request.conversion_delta or _policy_delta(policy_obj) or _latest_zcdp_delta(dated)
            )
            worst_end, worst = max_period_total(
                dated, charged_on, request.budget_period_months, delta
            )
            window_end, window_worst = max_period_total(
                dated, charged_on, request.budget_window_months, delta
            )
            window_cap = window_budget(request)
            over = worst.epsilon > request.budget_epsilon or window_worst.epsilon > window_cap
            # an evaluation ledger records releases over the policy's budget (flagged), up to
            # its own stated cap; no ledger is without one
            factor = self.cap_factor
            if worst.epsilon > request.budget_epsilon * factor:
                raise self._budget_error(request, dated[:-1], worst_end, worst, delta)
            if window_worst.epsilon > window_cap * factor:
                raise self._budget_error(
                    request, dated[:-1], window_end, window_worst, delta, window=True
                )
            window_total = compose(
                (
                    loss
                    for day, loss in dated
                    if in_period(day, charged_on, request.budget_window_months)
                ),
                delta,
            )
            recorded_at = _now()
            data = {
                "controller": self.controller,
                "recipient_kind": recipient.kind,
                "evaluation": self.evaluation,
                "throwaway": self.throwaway,
                "conversion_delta": delta,
                "output": None if output is None else os.fspath(output),
                "process": _process_token(),
                **({"job": job_name} if job_name is not None else {}),
                "request": request.to_dict(),
            }
            seq, event_hash = self._append(
                conn,
                release_id,
                "reserve",
                recorded_at,
                data,
                population=request.population,
                as_of=request.as_of,
                charged_on=charged_on,
                once_key=once_key,
            )
        return Reservation(
            release_id=release_id,
            request=request,
            reserved_at=recorded_at,
            hash=event_hash,
            period_total=worst,
            over_budget=over,
            evaluation=self.evaluation,
            label=self.label,
            charged_on=charged_on,
            window_total=window_total,
            anchor={"ledger_id": self.ledger_id, "events": seq, "head": event_hash},
        )

    def publish(
        self,
        reservation: Reservation | str,
        files: Mapping[str, str],
        *,
        card: str | None = None,
    ) -> LedgerEntry:
        """Record the release's files (name → SHA-256) and return its entry.

        Parameters
        ----------
        reservation : Reservation or str
            The reservation (or its release id).
        files : mapping of str to str
            Every published file (the card included) and its SHA-256 hex digest
            (:func:`segments.workspace.sha256_file`).
        card : str, optional
            Which of ``files`` is the release card (``ledger --cards`` recomputes them all).

        Returns
        -------
        LedgerEntry

        Raises
        ------
        ReleaseRefusedError
            No such reservation, or it is already published or aborted.
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
        if card is not None and card not in files:
            raise ValueError(f"card {card!r} of release {release_id!r} is not among its files")
        data = {"files": dict(sorted(files.items())), "card": card}
        self._close_entry(release_id, "publish", data)
        return self.entry(release_id)

    def abort(self, release_id: str, reason: str) -> LedgerEntry:
        """Record that a reserved release was not published; its charge still counts.

        A once-only release (``once_key``) may be reserved again after this.
        """
        self._close_entry(release_id, "abort", {"reason": str(reason)})
        return self.entry(release_id)

    def change_policy(self, policy: Policy) -> dict[str, Any]:
        """Record a change of the policy's privacy parameters as a ledger event.

        A change that tightens (budget ε and δ not larger, period and window not shorter,
        same DP family) is recorded at once; any other change only once a full budget period
        (of the parameters in force) has passed since the last change, on the ledger's clock.

        Returns
        -------
        dict
            The parameters now in force.

        Raises
        ------
        ReleaseRefusedError
            A loosening before a period has passed.
        """
        params = _policy_parameters(policy)
        facts = _policy_facts(policy)
        with self._appending() as conn:
            bound = _bound_policy(conn)
            if bound is not None:
                current = bound["parameters"]
                if bound.get("policy_facts") is not None:
                    loosened = _policy_loosenings(bound["policy_facts"], facts)
                    if loosened:
                        raise ReleaseRefusedError(
                            f"policy {policy.name!r} loosens rules of the policy ledger "
                            f"{self._path} is bound to{cite_rule(policy)} "
                            f"({'; '.join(loosened[:6])}"
                            f"{' …' if len(loosened) > 6 else ''}); a policy change may only "
                            "tighten (no new or changed recipient, destination or purpose, "
                            "min_k and min_l not lower); a looser policy needs its own "
                            "controller's ledger"
                        )
                same_facts = bound.get("policy_digest") == _sha256_text(_canonical(facts))
                if _same_parameters(current, params) and same_facts:
                    return dict(current)
                if not _tightens(current, params):
                    since = dt.datetime.fromisoformat(bound["recorded_at"]).date()
                    allowed = add_months(since, int(current["budget_period_months"]))
                    if _clock().date() < allowed:
                        raise ReleaseRefusedError(
                            f"policy {policy.name!r} loosens the privacy parameters the ledger "
                            f"{self._path} is bound to{cite_rule(policy)} "
                            f"({_describe_params(current)} → "
                            f"{_describe_params(params)}); a policy may only tighten before a "
                            f"full period has passed since the last change ({since}); "
                            f"allowed from {allowed}"
                        )
            self._append_policy(conn, str(policy.name), params, policy)
        return params

    def bound_policy(self) -> dict[str, Any] | None:
        """The privacy parameters (and policy hash) the ledger is bound to, or None."""
        with self._connect() as conn:
            bound = _bound_policy(conn)
        return None if bound is None else dict(bound)

    def reconcile(self) -> list[dict[str, str]]:
        """Finish or abort reservations a crash left unpublished, and report each.

        A reserved release whose process is gone (no live process with the id, host and
        start time its reservation recorded) is *published*
        when its folder is complete on disk (a card naming it whose files all match their
        SHA-256), otherwise *aborted* (the charge still counts) and its staging leftovers
        removed. Releases still in flight in a live process are left alone.

        Returns
        -------
        list of dict
            ``{"release_id", "action": "published" | "aborted", "detail"}`` per entry.
        """
        done: list[dict[str, str]] = []
        for entry in self.entries():
            if entry.status != "reserved" or _process_alive(entry.process):
                continue  # published, aborted, or still running in a live process
            found = _complete_release(entry)
            if found is not None:
                files, card = found
                self._close_entry(entry.release_id, "publish", {"files": files, "card": card})
                done.append(
                    {
                        "release_id": entry.release_id,
                        "action": "published",
                        "detail": f"its folder {entry.output} was complete on disk",
                    }
                )
                continue
            removed = _remove_staging(entry)
            reason = (
                "the publication did not complete (no complete release folder at "
                f"{entry.output or 'an unrecorded place'}); the charge still counts"
            )
            self._close_entry(entry.release_id, "abort", {"reason": reason})
            done.append(
                {
                    "release_id": entry.release_id,
                    "action": "aborted",
                    "detail": reason + (f"; removed {removed}" if removed else ""),
                }
            )
        return done

    # --- reading --------------------------------------------------------------------------
    def head_hash(self) -> str:
        """Hash of the latest event (the genesis hash of an empty ledger)."""
        with self._connect() as conn:
            row = conn.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return row[0] if row else self._meta["genesis_hash"]

    def anchor(self) -> dict[str, Any]:
        """``{"ledger_id", "events", "head"}`` now (what the anchor file and cards record)."""
        with self._connect() as conn:
            row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, head = row if row else (0, self._meta["genesis_hash"])
        return {"ledger_id": self.ledger_id, "events": seq, "head": head}

    def events(self) -> list[dict[str, Any]]:
        """Every chain event, oldest first: ``seq``, ``hash``, ``prev_hash`` and its body."""
        with self._connect() as conn:
            rows = conn.execute("SELECT seq, hash, body FROM events ORDER BY seq").fetchall()
        return [{**json.loads(body), "seq": seq, "hash": digest} for seq, digest, body in rows]

    def entries(self, population: str | None = None) -> list[LedgerEntry]:
        """Every release (reserved, published or aborted), oldest reservation first."""
        if population is None:
            return self._entries("", ())
        return self._entries(" WHERE population = ?", (population,))

    def _entries(self, where: str, params: tuple[str, ...]) -> list[LedgerEntry]:
        query = "SELECT release_id, event, recorded_at, hash, body, charged_on FROM events" + where
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY seq", params).fetchall()
        closing = {
            (rid, ev): (at, digest, body)
            for rid, ev, at, digest, body, _ in rows
            if ev in ("publish", "abort")
        }
        entries = []
        for release_id, event, recorded_at, digest, body, charged_on in rows:
            if event != "reserve":
                continue
            data = json.loads(body)["data"]
            pub = closing.get((release_id, "publish"))
            abort = closing.get((release_id, "abort"))
            pub_data = json.loads(pub[2])["data"] if pub else {}
            status = "published" if pub else "aborted" if abort else "reserved"
            entries.append(
                LedgerEntry(
                    release_id=release_id,
                    status=status,
                    controller=data["controller"],
                    request=ReleaseRequest(**data["request"]),
                    recipient_kind=data["recipient_kind"],
                    reserved_at=recorded_at,
                    published_at=pub[0] if pub else None,
                    files=pub_data.get("files", {}),
                    reserve_hash=digest,
                    publish_hash=pub[1] if pub else None,
                    ledger_id=self.ledger_id,
                    evaluation=data["evaluation"],
                    throwaway=data["throwaway"],
                    label=self.label,
                    charged_on=dt.date.fromisoformat(charged_on),
                    output=data.get("output"),
                    process=data.get("process"),
                    card=pub_data.get("card"),
                    aborted_at=abort[0] if abort else None,
                    abort_reason=json.loads(abort[2])["data"].get("reason") if abort else None,
                    job=data.get("job"),
                )
            )
        return entries

    def entry(self, release_id: str, *, entry_hash: str | None = None) -> LedgerEntry:
        """The entry of one release.

        Parameters
        ----------
        release_id : str
        entry_hash : str, optional
            The hash a release card or derived artefact carries for it: the reserve hash
            (``Reservation.hash``, ``card["ledger_head_hash"]``) or the publish hash.

        Raises
        ------
        KeyError
            No such release in this ledger, or ``entry_hash`` is neither of its hashes.
        """
        for entry in self._entries(" WHERE release_id = ?", (release_id,)):
            if entry_hash is not None and entry_hash not in (
                entry.reserve_hash,
                entry.publish_hash,
            ):
                raise KeyError(
                    f"release {release_id!r} is in ledger {self._path} but with another hash "
                    f"(not {entry_hash[:12]}…): the reference does not match what was recorded"
                )
            return entry
        raise KeyError(f"release {release_id!r} is not in ledger {self._path}")

    def populations(self) -> list[str]:
        """Populations with at least one release."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT population FROM events WHERE event = 'reserve' ORDER BY 1"
            ).fetchall()
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

        Charges count on their charge dates (the recording date on a controller's ledger).
        Budget parameters default to the ledger's policy, else to the latest release of the
        population; ``as_of`` defaults to the latest charge date.

        Raises
        ------
        ValueError
            No budget is known (no policy and no release of the population) — pass it.
        """
        entries = self.entries(population)
        latest_entry = max(entries, key=lambda e: e.charged_on) if entries else None
        latest = latest_entry.request if latest_entry else None
        privacy = getattr(self._policy, "privacy", None)
        bound = self.bound_policy()  # what the ledger recorded wins over a policy file
        recorded = bound["parameters"] if bound else {}

        def pick(given: Any, name: str, policy_name: str | None = None) -> Any:
            if given is not None:
                return given
            if recorded.get(policy_name or name) is not None:
                return recorded[policy_name or name]
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
        dated = [(e.charged_on, e.loss) for e in entries]
        delta = delta or (latest.conversion_delta if latest else None) or _latest_zcdp_delta(dated)
        end = (
            _as_date(as_of, "as_of")
            if as_of is not None
            else (latest_entry.charged_on if latest_entry else None)
        )
        if end is None:
            end = _clock().date()
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
        """Recompute the hash chain from the ledger's identity to its head, and check the
        anchors (beside the file and in the registry of controller ledgers).

        Detects an edited event (its body or any column: every column is a hashed field), a
        removed or reordered event, a changed identity (controller, evaluation or throw-away
        flag), a publication without a reservation, and a ledger truncated, rolled back or
        replaced behind an anchor. Release cards are checked by :meth:`verify_cards`.
        """
        problems: list[str] = []
        meta = _read_meta_raw(self._path)
        if meta.get("genesis_hash") != _genesis_hash(meta):
            problems.append(
                "the ledger identity (controller, id, creation time or flags) does not match its "
                "genesis hash: it was edited"
            )
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_ROW_COLUMNS} FROM events ORDER BY seq").fetchall()
        prev = meta.get("genesis_hash", "")
        reserved: set[str] = set()
        closed: set[str] = set()
        for index, row in enumerate(rows, start=1):
            problems += _row_problems(row, index, prev, meta.get("ledger_id", ""))
            release_id, event = row[1], row[2]
            if event == "reserve":
                reserved.add(release_id)
            elif event in ("publish", "abort"):
                if release_id not in reserved:
                    problems.append(
                        f"event {row[0]} ({event} of {release_id!r}): without an earlier "
                        "reservation"
                    )
                if release_id in closed:
                    problems.append(
                        f"event {row[0]} ({event} of {release_id!r}): the release was already "
                        "published or aborted"
                    )
                closed.add(release_id)
            prev = row[-1]
        problems += self._anchor_problems()
        return Verification(not problems, tuple(problems), len(rows), prev)

    def verify_cards(
        self,
        cards: Iterable[Mapping[str, Any] | str | os.PathLike[str]],
        folder: str | os.PathLike[str] | None = None,
    ) -> Verification:
        """Check release cards against the ledger: detects a truncated or replaced ledger,
        and a released file or card changed after publication.

        Parameters
        ----------
        cards : iterable of dict or path-like
            Release cards (``card.json``, or a k-anonymity certificate) with ``release_id``
            and ``ledger_head_hash`` (or ``ledger_head``). A card given as a path is also
            checked byte for byte: the SHA-256 of every file the ledger recorded for its
            release (the card included) is recomputed in the card's folder, and a file there
            the ledger did not record is a problem.
        folder : path-like, optional
            The releases folder the cards were found in: every release the ledger published
            into it must still have its card (a deleted card or release folder is a problem).

        Returns
        -------
        Verification
            Problems of the chain itself (:meth:`verify_chain`) and of every card.
        """
        chain = self.verify_chain()
        problems = list(chain.problems)
        with self._connect() as conn:
            seq_of = dict(conn.execute("SELECT hash, seq FROM events").fetchall())
            reserve_seq = dict(
                conn.execute("SELECT release_id, seq FROM events WHERE event = 'reserve'")
            )
        entries = {entry.release_id: entry for entry in self.entries()}
        checked: set[str] = set()
        for card in cards:
            data = _load_card(card)
            release_id = data.get("release_id")
            head = data.get("ledger_head") or data.get("ledger_head_hash")
            if not release_id or not head:
                problems.append(
                    f"card {_card_name(card)} lacks 'release_id' or 'ledger_head_hash'; every "
                    "release card records the ledger head hash at its time"
                )
                continue
            if release_id not in reserve_seq:
                anchor = data.get("ledger_anchor")
                other = anchor.get("ledger_id") if isinstance(anchor, Mapping) else None
                if other and other != self.ledger_id:
                    # a card of another ledger (a demo or evaluation ledger's card beside the
                    # controller's) says nothing about this ledger's truncation
                    label = data.get("ledger_label") or "a controller ledger"
                    problems.append(
                        f"release {release_id!r} (card {_card_name(card)}) belongs to another "
                        f"ledger (id {str(other)[:12]}…, {label}), not to ledger {self._path}; "
                        "check it against its own ledger (e.g. `segments ledger -w W "
                        "--demo-ledger --cards W/releases`)"
                    )
                    continue
                problems.append(
                    f"release {release_id!r} (card {_card_name(card)}) is not in ledger "
                    f"{self._path}: the ledger was truncated or replaced"
                )
                continue
            if head not in seq_of:
                problems.append(
                    f"release {release_id!r}: the ledger head {head[:12]}… on its card is not in "
                    "the chain: the ledger was rewritten or replaced"
                )
            elif seq_of[head] < reserve_seq[release_id]:
                problems.append(
                    f"release {release_id!r}: the ledger head on its card precedes its "
                    "reservation: the ledger was rewritten"
                )
            checked.add(str(release_id))
            problems += _card_claim_problems(entries[release_id], data, _card_name(card))
            if isinstance(card, Mapping):
                continue
            problems += _file_problems(entries[release_id], Path(card))
        published = [e for e in entries.values() if e.status == "published" and e.output]
        if folder is not None and not checked and published:
            # "0 cards verified" of an empty or wrong folder is no verification at all
            where = sorted({str(Path(str(e.output)).parent) for e in published})
            problems.append(
                f"no release card of ledger {self._path} is under {folder}, but the ledger "
                f"published {len(published)} releases (into {', '.join(where[:3])}); point "
                "--cards at the releases folder of the workspace (W/releases)"
            )
        if folder is not None:
            # the folder, and where its cards' releases were first published (a copied
            # workspace's cards name the original's folder)
            roots = {Path(folder).resolve()} | {
                Path(str(entries[rid].output)).resolve().parent
                for rid in checked
                if entries[rid].output
            }
            for entry in entries.values():
                if entry.status != "published" or not entry.output:
                    continue
                output = Path(entry.output).resolve()
                if output.parent in roots and entry.release_id not in checked:
                    problems.append(
                        f"release {entry.release_id!r} was published to {output}, but no card "
                        f"of it is under {folder}: a release folder or card was deleted"
                    )
        return Verification(not problems, tuple(problems), chain.n_events, chain.head)

    def contradicting_cards(self, releases: str | os.PathLike[str]) -> list[str]:
        """Release cards under ``releases`` that say this ledger lost events or was replaced.

        A card carries the ledger's anchor at its reservation (ledger id, event count and the
        head hash at that count). A card of this controller and this kind of ledger (same
        label) that names another ledger id, more events than the ledger has, or another head
        hash at its count (a ledger rolled back, then padded with new releases up to the count)
        means the ledger was deleted, truncated or rolled back: opening it to spend is refused.
        """
        with self._connect() as conn:
            hashes = dict(conn.execute("SELECT seq, hash FROM events").fetchall())
        return _card_contradictions(
            releases, self.label, self._same_controller, self.ledger_id, hashes, self._path
        )

    def _same_controller(self, policy_name: Any) -> bool:
        return _policy_is_of(policy_name, self.controller, self._policy)

    def over_budget(self) -> list[str]:
        """Populations whose peak rolling period exceeds the budget (times
        :attr:`cap_factor` on an evaluation ledger), described."""
        found = []
        for population in self.populations():
            balance = self.balance(population)
            cap = balance.budget_epsilon * self.cap_factor
            if balance.peak_period_total.epsilon > cap:
                found.append(
                    f"population {population!r}: a rolling {balance.budget_period_months}-month "
                    f"period ending {balance.peak_period_end} spent "
                    f"ε = {balance.peak_period_total.epsilon:.6g} > budget "
                    f"ε = {cap:g}{self._cap_note()}"
                )
        return found

    @property
    def cap_factor(self) -> float:
        """How many times the policy's budget a period may spend: 1, or
        :data:`EVALUATION_CAP_FACTOR` on an evaluation ledger (repeated releases of
        synthetic data for benchmarks, still capped)."""
        return float(EVALUATION_CAP_FACTOR) if self.evaluation else 1.0

    def _cap_note(self) -> str:
        if not self.evaluation:
            return ""
        return (
            f" (the evaluation ledger's stated cap: {EVALUATION_CAP_FACTOR} × the policy's "
            "budget per period and window)"
        )

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

    @contextlib.contextmanager
    def _appending(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that first verifies the events since the last verified one and,
        once it commits, anchors its last appended event (the anchor file and the registry
        name a head only after it is durable; a transaction that appends nothing writes none).

        The head is read inside the transaction, under the write lock: threads may share a
        ``Ledger``, so its state after the commit may already be another thread's.
        """
        before = self._verified
        try:
            with self._transaction() as conn:
                self._verify_new_events(conn)
                before = self._verified
                try:
                    yield conn
                except BaseException:
                    # restored before the rollback releases the lock: no other thread checks
                    # from an event that is about to vanish
                    self._verified = before
                    raise
                head = self._verified  # this transaction's last event (_append sets it)
        except BaseException:
            self._verified = before  # also when the COMMIT itself failed
            raise
        if head != before:
            self._write_anchors(*head)

    def _verify_new_events(self, conn: sqlite3.Connection) -> None:
        """Inside the reserving transaction: the identity, the last verified event (still
        there, unchanged), every event after it, and the anchors — or refuse."""
        problems: list[str] = []
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta != self._meta or meta.get("genesis_hash") != _genesis_hash(meta):
            problems.append("the ledger identity changed or does not match its genesis hash")
        seq, head = self._verified
        if seq:
            row = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
            if row is None or row[0] != head:
                problems.append(
                    f"event {seq}, verified earlier, is gone or changed: the ledger was "
                    "rolled back or rewritten"
                )
        rows = conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
        prev = head
        for index, row in enumerate(rows, start=seq + 1):
            problems += _row_problems(row, index, prev, self.ledger_id)
            prev = row[-1]
        problems += self._anchor_problems(conn)
        if problems:
            raise ReleaseRefusedError(_broken_message(self._path, problems))
        if rows:
            self._verified = (rows[-1][0], rows[-1][-1])

    def _anchor_problems(self, conn: sqlite3.Connection | None = None) -> list[str]:
        anchors = []
        beside = _read_anchor(self._path)
        if beside is not None:
            anchors.append((f"its anchor {self.anchor_path}", beside))
        if not self.simulated_time:
            registered = _registry_get(self.controller)
            if registered is not None and registered.get("ledger_id") == self.ledger_id:
                anchors.append((f"the registry {_registry_path()}", registered))
        if not anchors:
            return []
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self._connect())
            count = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            problems = []
            for where, anchor in anchors:
                if anchor.get("ledger_id") != self.ledger_id:
                    problems.append(
                        f"{where} belongs to ledger {anchor.get('ledger_id')}, not "
                        f"{self.ledger_id}: the ledger file was replaced"
                    )
                    continue
                events = int(anchor.get("events", 0))
                if count < events:
                    problems.append(
                        f"the ledger has {count} events but {where} records {events}: it was "
                        "truncated or rolled back"
                    )
                    continue
                if events:
                    row = conn.execute(
                        "SELECT hash FROM events WHERE seq = ?", (events,)
                    ).fetchone()
                    if row is None or row[0] != anchor.get("head"):
                        problems.append(
                            f"event {events} does not have the head hash {where} records: "
                            "the ledger was rewritten or replaced"
                        )
        return problems

    def _write_anchors(self, events: int, head: str) -> None:
        record = {
            "ledger_id": self.ledger_id,
            "controller": self.controller,
            "events": events,
            "head": head,
            "written_at": _now(),
        }
        current = _read_anchor(self._path)
        if current is None or int(current.get("events", 0)) <= events:
            _write_json_durably(self.anchor_path, record)
        if not self.simulated_time:
            _registry_update(self.controller, {**record, "path": str(self._path.resolve())})

    def _register(self, registered: Mapping[str, Any] | None, init: bool) -> None:
        here = str(self._path.resolve())
        if registered is None:
            _registry_update(self.controller, {**self.anchor(), "path": here})
            return
        if registered.get("ledger_id") != self.ledger_id:
            raise ReleaseRefusedError(
                f"ledger {self._path} is not the ledger of {self.controller!r}"
                f"{cite_rule(self._policy)}: the registry "
                f"{_registry_path()} names {registered.get('path')} (ledger id "
                f"{registered.get('ledger_id')}, {registered.get('events')} events). A "
                f"controller has one ledger; pass --ledger {registered.get('path')}"
            )
        if registered.get("path") != here:
            if not init:
                raise ReleaseRefusedError(
                    f"the ledger of {self.controller!r}{cite_rule(self._policy)} is registered at "
                    f"{registered.get('path')}, not {self._path}; pass that path, or open "
                    "this copy with --init-ledger (init=True) to move the ledger here"
                )
            _registry_update(self.controller, {**self.anchor(), "path": here})

    def check_policy(self, policy: Policy) -> None:
        """Refuse, writing nothing, a policy whose privacy parameters or facts differ from
        those this ledger is bound to (an unbound ledger is bound by its first release).

        Raises
        ------
        ReleaseRefusedError
            Another policy, or a copied and edited one.
        """
        with self._connect() as conn:
            bound = _bound_policy(conn)
        if bound is None:
            return
        params = _policy_parameters(policy)
        if not _same_parameters(bound["parameters"], params):
            raise self._policy_error(str(policy.name), bound, params, policy)
        self._check_policy_facts(str(policy.name), bound, policy)

    def _check_policy(self, policy: Policy) -> None:
        """Bind a new ledger to the policy's privacy parameters; refuse a policy that differs
        from the ones it is bound to."""
        params = _policy_parameters(policy)
        with self._connect() as conn:
            bound = _bound_policy(conn)
        if bound is not None:
            if not _same_parameters(bound["parameters"], params):
                raise self._policy_error(str(policy.name), bound, params, policy)
            self._check_policy_facts(str(policy.name), bound, policy)
            if bound.get("policy_digest") is not None:
                return
        with self._appending() as conn:
            bound = _bound_policy(conn)
            if bound is not None and bound.get("policy_digest") is not None:
                return  # another process bound it first; checked on the next use
            self._append_policy(conn, str(policy.name), params, policy)

    def _append_policy(
        self,
        conn: sqlite3.Connection,
        name: str,
        params: Mapping[str, Any],
        policy: Policy,
    ) -> None:
        """Record the policy this ledger is bound to (its parameters, file digest and facts)."""
        self._append(
            conn,
            f"policy-{uuid.uuid4().hex[:12]}",
            "policy",
            _now(),
            {
                "parameters": params,
                "policy": name,
                "policy_sha256": _policy_hash(policy),
                **_policy_binding(policy),
            },
        )

    def _bind_policy(
        self, conn: sqlite3.Connection, request: ReleaseRequest, policy: Policy
    ) -> None:
        params = _policy_parameters(policy)
        bound = _bound_policy(conn)
        if bound is None:
            self._append_policy(conn, request.policy, params, policy)
        elif not _same_parameters(bound["parameters"], params):
            raise self._policy_error(request.policy, bound, params, policy)
        else:
            self._check_policy_facts(request.policy, bound, policy)
            if bound.get("policy_digest") is None:
                # a ledger bound before the whole policy was: bind its facts now
                self._append_policy(conn, request.policy, bound["parameters"], policy)

    def _check_policy_facts(self, name: str, bound: Mapping[str, Any], policy: Policy) -> None:
        """Refuse a policy whose facts (recipients, destinations, purposes, min_k, bounds,
        clauses, ...) differ from those the ledger is bound to: a copied and edited policy
        file must not lift a rule. A change is adopted only as a recorded tightening."""
        digest = bound.get("policy_digest")
        if digest is None:
            return
        facts = _policy_facts(policy)
        if _sha256_text(_canonical(facts)) == digest:
            return
        changed = _policy_differences(bound.get("policy_facts") or {}, facts)
        raise ReleaseRefusedError(
            f"policy {name!r} differs from the policy ledger {self._path} is bound to"
            f"{cite_rule(policy)} (policy {bound.get('policy')!r}, digest "
            f"{str(digest)[:12]}…, recorded "
            f"{bound.get('recorded_at')}): {'; '.join(changed[:6])}"
            f"{' …' if len(changed) > 6 else ''}; use the policy the ledger is bound to, or "
            f"record the change with `segments ledger --policy NAME --adopt-policy` (only a "
            f"tightening is adopted: no new or changed recipient, destination or purpose, "
            f"min_k and min_l not lower; budget changes as before)"
        )

    def _check_claims(
        self,
        request: ReleaseRequest,
        bound: Mapping[str, Any] | None,
        facts: Policy,
    ) -> tuple[str, ...]:
        """Refuse what a request states about itself that the policy the ledger recorded
        contradicts: clause ids the policy does not list for the purpose, and a loss whose
        δ is not the policy's (a caller-chosen δ states ρ as a smaller ε).

        Both are read from the ledger's own record (the bound policy event), never from the
        request, so a hand-built :class:`ReleaseRequest` is held to the same rules as
        :meth:`segments.privacy.releases.ReleasePlan.execute`.
        """
        recorded = (bound or {}).get("policy_facts")
        if recorded is not None:
            anonymity = recorded.get("clauses", {}).get("anonymous_release", ())
            purpose = recorded.get("purposes", {}).get(request.purpose, {})
            own = tuple(dict.fromkeys((*anonymity, *purpose.get("clause_ids", ()))))
        else:  # no facts recorded (bound before they were): the policy's own list
            own = facts.release_clause_ids(request.purpose)
        foreign = [c for c in request.clause_ids if c not in own]
        where = (
            f"release for population {request.population!r} refused before anything was "
            f"charged{cite_rule(facts)}"
        )
        if foreign:
            raise ReleaseRefusedError(
                f"{where}: clause_ids {foreign} are not clauses policy {facts.name!r} (as "
                f"recorded in ledger {self._path}) lists for purpose {request.purpose!r} (its "
                f"own: {list(own)}); a release cites only its own policy's clauses for its "
                "purpose — leave clause_ids out or use those"
            )
        params = (bound or {}).get("parameters") or {}
        policy_delta = float(params.get("delta") or 0.0)
        loss = request.loss
        if loss.family == "approx":
            raise ReleaseRefusedError(
                f"{where}: an approximate (ε, δ) loss (δ = {request.delta:g}) is not "
                "accounted by this ledger, whose budget is an ε at the policy's δ; state the "
                "loss as OpenDP computed it, ε (pure DP) or ρ (zCDP)"
            )
        if loss.family == DPFamily.ZCDP and policy_delta <= 0:
            raise ReleaseRefusedError(
                f"{where}: policy {facts.name!r} states pure ε-DP (δ = 0) but the release "
                f"states ρ = {request.rho:g}, which only holds as (ε, δ) at a δ > 0 the "
                "policy does not give; release with Laplace noise (ε), or adopt a zCDP "
                "policy with its δ"
            )
        for name, stated in (("policy_delta", request.policy_delta), ("delta", request.delta)):
            if loss.family == DPFamily.ZCDP and stated is not None and stated != policy_delta:
                raise ReleaseRefusedError(
                    f"{where}: ReleaseRequest.{name}={stated:g} but the policy the ledger "
                    f"recorded states δ = {policy_delta:g}; a ρ is stated as (ε, δ) at the "
                    "policy's δ only (a larger δ would state a smaller ε) — build the request "
                    "with ReleaseRequest.for_policy"
                )
        if loss.family == DPFamily.PURE and request.policy_delta not in (None, policy_delta):
            raise ReleaseRefusedError(
                f"{where}: ReleaseRequest.policy_delta={request.policy_delta:g} but the "
                f"policy the ledger recorded states δ = {policy_delta:g}; build the request "
                "with ReleaseRequest.for_policy"
            )
        return own

    def _policy_error(
        self,
        name: str,
        bound: Mapping[str, Any],
        params: Mapping[str, Any],
        policy: Policy | None,
    ) -> ReleaseRefusedError:
        return ReleaseRefusedError(
            f"policy {name!r} has privacy parameters {_describe_params(params)} but ledger "
            f"{self._path}{cite_rule(policy)} is bound to "
            f"{_describe_params(bound['parameters'])} (policy "
            f"{bound.get('policy')!r}, sha256 {str(bound.get('policy_sha256'))[:12]}…, "
            f"recorded {bound.get('recorded_at')}); use the policy the ledger was created with, "
            "or record the change with `segments ledger --policy NAME --adopt-policy` (a "
            "change may only tighten before a full budget period has passed)"
        )

    def _charge_date(self, conn: sqlite3.Connection, request: ReleaseRequest) -> dt.date:
        policy = self._policy if self._policy is not None else _load_policy_quietly(request.policy)
        row = conn.execute(
            "SELECT MAX(as_of) FROM events WHERE population = ? AND event = 'reserve'",
            (request.population,),
        ).fetchone()
        latest_as_of = dt.date.fromisoformat(row[0]) if row and row[0] else None
        if self.simulated_time:
            # a simulated history moves forward too (r17 #6): dated back, a release would
            # land in a period of its own and find the budget whole again
            if (
                latest_as_of is not None
                and request.as_of < latest_as_of
                and not _replays_a_closed_month(request)
            ):
                raise ReleaseRefusedError(
                    f"{self.label}: release for population {request.population!r} refused "
                    f"before anything was charged{cite_rule(policy)}: its as-of {request.as_of} is "
                    f"behind the population's latest release on this ledger (as of "
                    f"{latest_as_of}); simulated time only moves forward, as the controller's "
                    "does — only a closed month of a monthly series is replayed behind it, "
                    "once, dated at its close (`segments release backfill`)"
                )
            return request.as_of
        now = _clock()
        latest = conn.execute("SELECT MAX(recorded_at) FROM events").fetchone()[0]
        if latest and now < dt.datetime.fromisoformat(latest):
            raise ReleaseRefusedError(
                f"release for population {request.population!r} refused before anything "
                f"ran{cite_rule(policy)}: the system clock ({now.isoformat(timespec='seconds')}) "
                f"is earlier than the ledger's latest recorded event ({latest[:19]}); on a "
                "controller's ledger time only moves forward — correct the system clock (UTC) "
                "and retry"
            )
        today = now.date()
        if request.as_of > today:
            raise ReleaseRefusedError(
                f"release for population {request.population!r} refused before anything "
                f"ran{cite_rule(policy)}: its as-of {request.as_of} runs ahead of today ({today}); "
                "on a controller's ledger a release is charged when it is recorded — release "
                "data as of today or earlier"
            )
        if latest_as_of is not None and request.as_of < latest_as_of:
            raise ReleaseRefusedError(
                f"release for population {request.population!r} refused before anything "
                f"ran{cite_rule(policy)}: its as-of {request.as_of} is behind the population's "
                f"latest release (as of {latest_as_of}); on a controller's ledger time only moves "
                "forward — past months are released when they close, or replayed on the "
                "evaluation or demo ledger for synthetic data"
            )
        return today

    def _once_key(self, conn: sqlite3.Connection, request: ReleaseRequest) -> str | None:
        """The unique key of a once-only release: population|key#attempt (a new attempt only
        after every earlier one was aborted)."""
        if request.once_key is None:
            return None
        prefix = f"{request.population}|{request.once_key}#"
        rows = conn.execute(
            "SELECT r.release_id, r.once_key, (SELECT event FROM events c WHERE"
            " c.release_id = r.release_id AND c.event IN ('publish', 'abort')) FROM events r"
            " WHERE r.event = 'reserve' AND substr(r.once_key, 1, ?) = ? ORDER BY r.seq",
            (len(prefix), prefix),
        ).fetchall()
        for release_id, _, closing in rows:
            if closing != "abort":
                state = (
                    "published"
                    if closing == "publish"
                    else "reserved but not published (run `segments ledger` to reconcile it, "
                    "then retry if it is aborted)"
                )
                raise ReleaseRefusedError(
                    f"{request.once_key} for population {request.population!r} was already "
                    f"charged in ledger {self._path} ({release_id}, {state}); it is released "
                    "once"
                )
        return f"{prefix}{len(rows)}"

    def _close_entry(self, release_id: str, event: str, data: Mapping[str, Any]) -> None:
        with self._appending() as conn:
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
            for done in ("publish", "abort"):
                if done in rows:
                    raise ReleaseRefusedError(
                        f"release {release_id!r} is already {done}ed in ledger {self._path}; a "
                        "release is published or aborted once — reserve a new release"
                        + (" (its charge still counts)" if done == "abort" else "")
                    )
            reserve = json.loads(rows["reserve"])
            self._append(
                conn,
                release_id,
                event,
                _now(),
                dict(data),
                population=reserve["population"],
                as_of=dt.date.fromisoformat(reserve["as_of"]),
                charged_on=dt.date.fromisoformat(reserve["charged_on"]),
            )

    def _append(
        self,
        conn: sqlite3.Connection,
        release_id: str,
        event: str,
        recorded_at: str,
        data: Mapping[str, Any],
        *,
        population: str = "",
        as_of: dt.date | None = None,
        charged_on: dt.date | None = None,
        once_key: str | None = None,
    ) -> tuple[int, str]:
        """Append one event to the chain inside ``conn``'s transaction; returns its sequence
        number and hash."""
        row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (row[0] + 1, row[1]) if row else (1, self._meta["genesis_hash"])
        day = recorded_at[:10]
        fields = {
            "seq": seq,
            "release_id": release_id,
            "event": event,
            "recorded_at": recorded_at,
            "population": population,
            "as_of": as_of.isoformat() if as_of else day,
            "charged_on": charged_on.isoformat() if charged_on else day,
            "once_key": once_key,
            "prev_hash": prev_hash,
        }
        body = _canonical({**fields, "ledger_id": self.ledger_id, "data": data})
        digest = _sha256_text(body)
        try:
            conn.execute(
                f"INSERT INTO events ({', '.join(_HASHED_COLUMNS)}, body, hash)"
                f" VALUES ({', '.join('?' * (len(_HASHED_COLUMNS) + 2))})",
                (*(fields[name] for name in _HASHED_COLUMNS), body, digest),
            )
        except sqlite3.IntegrityError as exc:
            if once_key is not None and "once_key" in str(exc):
                raise ReleaseRefusedError(
                    f"{once_key.split('#')[0]} was charged by another process at the same "
                    f"moment (ledger {self._path}); it is released once"
                ) from None
            raise ReleaseRefusedError(
                f"release id {release_id!r} is already {event}d in ledger {self._path}; "
                "choose a new release id"
            ) from None
        self._verified = (seq, digest)
        return seq, digest

    def _dated_losses(
        self, conn: sqlite3.Connection, population: str, near: dt.date, months: int
    ) -> list[tuple[dt.date, PrivacyLoss]]:
        """Charges of ``population`` dated within ``months`` of ``near`` (others cannot share
        a rolling period with a release charged on ``near``). Every row summed is re-hashed
        and its charge date read from the hashed body."""
        # No column is trusted to select rows: every charge of the population is re-hashed
        # and its date read from the hashed body.
        rows = conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM events WHERE event = 'reserve' ORDER BY seq"
        ).fetchall()
        low, high = period_start(near, months), add_months(near, months)
        dated = []
        for row in rows:
            problems = _row_problems(row, row[0], row[-3], self.ledger_id)
            if problems:
                raise ReleaseRefusedError(_broken_message(self._path, problems))
            body = json.loads(row[-2])
            day = dt.date.fromisoformat(body["charged_on"])
            if body["population"] != population or not low < day < high:
                continue
            request = body["data"]["request"]
            loss = PrivacyLoss(request.get("epsilon"), request.get("delta"), request.get("rho"))
            dated.append((day, loss))
        return dated

    def _policy_for(self, request: ReleaseRequest, policy: Policy | None) -> Policy:
        """The policy a reservation is guarded by: the caller's, else the ledger's, else the
        one the request names; refused if it is not the request's or the controller's."""
        facts = policy if policy is not None else self._policy
        if facts is None:
            facts = _load_policy(request.policy)
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
        return facts

    def _budget_error(
        self,
        request: ReleaseRequest,
        before: list[tuple[dt.date, PrivacyLoss]],
        worst_end: dt.date,
        worst: Composition,
        delta: float | None,
        window: bool = False,
    ) -> BudgetExceededError:
        months = request.budget_window_months if window else request.budget_period_months
        start = period_start(worst_end, months)
        spent = compose((loss for day, loss in before if in_period(day, worst_end, months)), delta)
        budget = (window_budget(request) if window else request.budget_epsilon) * self.cap_factor
        remaining = max(0.0, budget - spent.epsilon)
        asked = _describe_loss(request.loss, delta)
        # one banner: an evaluation ledger's label says what it is (its card label keeps both)
        banner = EVALUATION_LABEL if self.evaluation else self.label
        prefix = f"[{banner}] " if banner else ""
        # the budget is the anonymity claim's condition: cite the policy's own clause
        policy = self._policy if self._policy is not None else _load_policy_quietly(request.policy)
        what = (
            f"the {months}-month window ({start}, {worst_end}] (budget ε = "
            f"{request.budget_epsilon:g} per {request.budget_period_months} months, so at most "
            f"ε = {budget:.6g} over the window)"
            if window
            else f"the rolling {months}-month period ({start}, {worst_end}]"
        )
        exc = BudgetExceededError(
            f"{prefix}release for population {request.population!r} (purpose {request.purpose!r}, "
            f"recipient {request.recipient!r}) refused before anything ran{cite_rule(policy)}: "
            f"{what} has spent "
            f"ε = {spent.epsilon:.6g} of the budget ε = {budget:.6g} ({spent.describe()}); "
            f"requested {asked} would make it ε = {worst.epsilon:.6g}; remaining "
            f"ε = {remaining:.6g}{self._cap_note()}. Lower the release's privacy loss to "
            "fit, release fewer "
            "queries, or wait until earlier releases leave the period (ledger "
            f"{self._path}, controller {self.controller!r})"
        )
        exc.spent_epsilon = spent.epsilon  # type: ignore[attr-defined]
        exc.requested_epsilon = worst.epsilon - spent.epsilon  # type: ignore[attr-defined]
        exc.remaining_epsilon = remaining  # type: ignore[attr-defined]
        exc.budget_epsilon = budget  # type: ignore[attr-defined]
        return exc


# --- module internals ----------------------------------------------------------------------------
_ROW_COLUMNS = ", ".join((*_HASHED_COLUMNS, "body", "hash"))


_SERIES_MONTH = re.compile(r"^[A-Za-z0-9_+.-]+/(\d{4})-(\d{2})$")


def _replays_a_closed_month(request: ReleaseRequest) -> bool:
    """Whether ``request`` is the backfill of one closed month of a monthly series: a once-only
    release (``once_key`` ``<series>/<YYYY-MM>``, which the ledger's unique key lets through
    once) dated at that month's close. Only these may be dated behind a simulated ledger's
    latest release: each month once, never a fresh period for any other release."""
    found = _SERIES_MONTH.match(request.once_key or "")
    if found is None:
        return False
    month = dt.date(int(found[1]), int(found[2]), 1)
    return request.as_of == add_months(month, 1)


def window_budget(request: ReleaseRequest) -> float:
    """The most a person retained through the policy's whole window may lose:
    ``budget_epsilon × window / period``.

    The window is the retention window (the policy requires it to cover the longest
    retention), so a person can be in every release inside it. The ledger checks this bound on
    every reservation, and every card states the population's total over the window. When the
    window is a whole number of periods the rolling-period budget already implies the bound;
    otherwise (e.g. 18 months at ε per 12) it is stricter than the periods alone."""
    return float(request.budget_epsilon) * (
        request.budget_window_months / request.budget_period_months
    )


def _row_problems(row: tuple[Any, ...], index: int, prev: str, ledger_id: str) -> list[str]:
    """What is wrong with one event row: its hash, its link, or a column that differs from
    its hashed body."""
    fields = dict(zip(_HASHED_COLUMNS, row[: len(_HASHED_COLUMNS)], strict=True))
    body, digest = row[-2], row[-1]
    where = f"event {fields['seq']} ({fields['event']} of {fields['release_id']!r})"
    problems = []
    if fields["seq"] != index:
        problems.append(f"{where}: expected sequence number {index}; events were removed")
    if _sha256_text(body) != digest:
        problems.append(f"{where}: its hash does not match its content: it was edited")
    if fields["prev_hash"] != prev:
        problems.append(f"{where}: it does not link to the previous event's hash")
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return [*problems, f"{where}: its content is not JSON"]
    mismatched = [name for name, value in fields.items() if parsed.get(name) != value]
    if parsed.get("ledger_id") != ledger_id:
        mismatched.append("ledger_id")
    request = (parsed.get("data") or {}).get("request") or {}
    if fields["event"] == "reserve" and (
        request.get("population") != fields["population"] or request.get("as_of") != fields["as_of"]
    ):
        mismatched.append("request population/as_of")
    if mismatched:
        problems.append(f"{where}: columns {mismatched} differ from its hashed content")
    return problems


def _broken_message(path: Path, problems: Iterable[str]) -> str:
    listed = list(problems)
    return (
        f"privacy ledger {path} is not sound, so nothing is charged: {listed[0]}"
        + (f" (and {len(listed) - 1} more problems)" if len(listed) > 1 else "")
        + ". Run `segments ledger --ledger PATH` to see every problem; restore the ledger from "
        "a backup — a ledger that does not verify never spends"
    )


def _anchor_path(path: Path) -> Path:
    return path.with_name(path.name + ".anchor.json")


def _read_anchor(path: Path) -> dict[str, Any] | None:
    anchor = _anchor_path(path)
    try:
        loaded = json.loads(anchor.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"ledger_id": "unreadable", "events": 0, "head": ""}
    return loaded if isinstance(loaded, dict) else {"ledger_id": "unreadable"}


def _write_json_durably(path: Path, record: Mapping[str, Any]) -> None:
    """Write JSON atomically and durably (temp file, fsync, rename, fsync the folder), owner-only
    (0600) whatever the umask, like the ledger it anchors."""
    private_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        json.dump(_jsonable(dict(record)), handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _registry_path() -> Path:
    """The registry of controller ledgers, always in the per-user data folder (not moved by
    ``$SEGMENTS_LEDGER_DIR``): controller → path, ledger id, head hash and event count."""
    import platformdirs

    return Path(platformdirs.user_data_dir("segments")) / "ledger-registry.json"


def _registry_read() -> dict[str, Any]:
    try:
        loaded = json.loads(_registry_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ReleaseRefusedError(
            f"the registry of controller ledgers {_registry_path()} cannot be read ({exc}); "
            "restore it from a backup"
        ) from None
    return loaded if isinstance(loaded, dict) else {}


def registered_ledgers() -> list[Path]:
    """The controllers' ledger files the per-user registry records (those that exist), by
    controller: where a reader of releases (the forecast) looks for the ledger that charged
    them. Only a place to look: what is read is checked against that ledger itself.

    Raises
    ------
    ReleaseRefusedError
        The registry cannot be read.
    """
    paths = [
        Path(str(record["path"]))
        for _, record in sorted(_registry_read().items())
        if isinstance(record, dict) and record.get("path")
    ]
    return [path for path in paths if path.is_file()]


def missing_ledgers(controller: str, workspace: Workspace | str | os.PathLike[str]) -> list[str]:
    """The ledgers of ``controller`` that an anchor or the registry of controller ledgers
    records but whose file is gone (deleted or moved), one line each naming the file and what
    recorded it: the workspace's throw-away ledgers and the controller's (real and evaluation).

    A reader that finds no ledger (the audit) must not read that as "nothing was released":
    the anchors and the registry exist to show a ledger that was there.
    """
    root = Path(workspace) if isinstance(workspace, str | os.PathLike) else workspace.root
    folder = Workspace(root).ledger_folder
    slug = controller_slug(controller)
    paths = [
        folder / f"{slug}.sqlite",
        folder / f"evaluation-{slug}.sqlite",
        default_ledger_path(controller),
        default_ledger_path(controller, evaluation=True),
    ]
    try:
        registered = _registry_get(controller)
    except ReleaseRefusedError as exc:
        return [str(exc)]
    if registered is not None and registered.get("path"):
        paths.append(Path(str(registered["path"])))
    found: list[str] = []
    seen: set[str] = set()
    for path in paths:
        key = os.path.abspath(path)
        if key in seen or path.exists():
            continue
        seen.add(key)
        anchor = _read_anchor(path)
        if anchor is not None:
            found.append(
                f"{path} is missing, but its anchor {_anchor_path(path).name} records "
                f"{anchor.get('events')} events (ledger id {anchor.get('ledger_id')})"
            )
        elif registered is not None and os.path.abspath(str(registered.get("path"))) == key:
            found.append(
                f"{path} is missing, but the registry of controller ledgers records it for "
                f"{controller!r} ({registered.get('events')} events, ledger id "
                f"{registered.get('ledger_id')})"
            )
    return found


def _registry_get(controller: str | None) -> dict[str, Any] | None:
    if not controller:
        return None
    entry = _registry_read().get(controller_slug(controller))
    return entry if isinstance(entry, dict) else None


@contextlib.contextmanager
def _locked_registry() -> Iterator[tuple[Path, dict[str, Any]]]:
    """The registry's path and contents, read under its exclusive lock, held until the block
    ends: a change written back there (``_write_json_durably``) loses no other process's."""
    registry = _registry_path()
    private_folder(registry.parent)
    lock_path = registry.with_name(registry.name + ".lock")
    with open(os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield registry, _registry_read()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _registry_update(controller: str, record: Mapping[str, Any]) -> None:
    with _locked_registry() as (registry, current):
        slug = controller_slug(controller)
        old = current.get(slug) or {}
        if (
            old.get("ledger_id") == record.get("ledger_id")
            and int(old.get("events", 0)) > int(record.get("events", 0))
            and old.get("path") == record.get("path")
        ):
            return  # never move an anchor backwards
        current[slug] = {"controller": controller, **dict(record)}
        _write_json_durably(registry, current)


_DATA_KEY = "__population_data__"  # not a controller slug: slugs are [a-z0-9-]
_FOLDERS_KEY = "__release_folders__"  # ledger id → the release folders that used it


def _release_folders(ledger_id: str) -> list[Path]:
    """The release folders (workspaces' ``releases/``) a controller's ledger was opened for."""
    known = _registry_read().get(_FOLDERS_KEY)
    folders = known.get(ledger_id) if isinstance(known, dict) else None
    return [Path(f) for f in folders if isinstance(f, str)] if isinstance(folders, list) else []


def _remember_release_folder(ledger_id: str, releases: Path) -> None:
    """Record ``releases`` for ``ledger_id`` in the registry (once; cheap to check later)."""
    where = str(releases.resolve())
    if where in {str(f) for f in _release_folders(ledger_id)}:
        return
    with _locked_registry() as (registry, current):
        known = current.get(_FOLDERS_KEY)
        known = dict(known) if isinstance(known, dict) else {}
        folders = [f for f in known.get(ledger_id, []) if isinstance(f, str)]
        if where not in folders:
            known[ledger_id] = [*folders, where]
            current[_FOLDERS_KEY] = known
            _write_json_durably(registry, current)


def _unique(folders: Iterable[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for folder in folders:
        try:
            key = str(folder.resolve())
        except OSError:
            key = str(folder)
        seen.setdefault(key, folder)
    return list(seen.values())


def claim_population_data(
    controller: str,
    data_ids: Mapping[str, str],
    policy: Policy | None = None,
    *,
    record: bool = True,
) -> None:
    """Bind the people behind ``data_ids`` to ``controller`` in the per-user registry, or
    refuse when another controller name already released on them.

    A controller's budget protects its people, so a copy of a policy with a renamed controller
    must not get a fresh ledger for the same people. ``data_ids`` identify the population's
    data (e.g. the pseudonymisation key's fingerprint and the raw customer table's SHA-256,
    from :func:`segments.provenance.population_data_ids`); the first controller that opens its
    ledger on them owns them.

    Raises
    ------
    ReleaseRefusedError
        One of ``data_ids`` is bound to another controller (``record=False``: only this
        check, nothing written — run before a ledger is opened, so a refusal writes nothing).
    """
    if not data_ids:
        return
    with _locked_registry() as (registry, current):
        bound = current.get(_DATA_KEY)
        bound = dict(bound) if isinstance(bound, dict) else {}
        for what, value in sorted(data_ids.items()):
            owner = bound.get(_data_key(what, value))
            if owner is not None and owner != controller:
                raise ReleaseRefusedError(
                    f"privacy ledger of {controller!r} refused before anything was charged"
                    f"{cite_rule(policy)}: the data's {what} ({value[:16]}…) is already bound "
                    f"to controller {owner!r} in {registry}; a budget belongs to the people "
                    "and a renamed controller gets no fresh budget for them — release with "
                    f"{owner!r}'s policy and ledger"
                )
        new = {_data_key(what, value): controller for what, value in data_ids.items()}
        if record and any(key not in bound for key in new):
            current[_DATA_KEY] = {**bound, **new}
            _write_json_durably(registry, current)


def _data_key(what: str, value: str) -> str:
    return f"{what.split(' of ')[0]}:{value}"


def _process_token() -> dict[str, Any]:
    """Who is running a release: host, pid and the process's start time (pids are reused)."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22: start time in clock ticks


def _process_alive(token: Mapping[str, Any] | None) -> bool:
    """True if the process that reserved a release may still be running it."""
    import socket

    if not token or token.get("host") != socket.gethostname():
        return False
    pid = int(token.get("pid", 0))
    if not pid_alive(pid):
        return False
    start = _process_start(pid)
    return start is None or start == token.get("start")


def _label(evaluation: bool, throwaway: bool) -> str:
    labels = [EVALUATION_LABEL] if evaluation else []
    if throwaway:
        labels.append(THROWAWAY_LABEL)
    return "; ".join(labels)


def _policy_is_of(policy_name: Any, controller: str, policy: Policy | None) -> bool:
    """True when the policy a card names belongs to ``controller``."""
    if not policy_name:
        return False
    if policy is not None and policy.name == policy_name:
        return str(policy.controller) == controller
    try:
        return str(_load_policy(str(policy_name)).controller) == controller
    except Exception:  # an unknown policy name cannot be this controller's card
        return False


def _card_contradictions(
    releases: str | os.PathLike[str],
    label: str,
    same_controller: Any,
    ledger_id: str | None = None,
    hashes: Mapping[int, str] | None = None,
    path: Path | None = None,
) -> list[str]:
    """Cards under ``releases`` (of this controller and label) that contradict a ledger with
    ``ledger_id`` and event hashes ``hashes`` (seq → hash); with no ledger (None) every such
    card does: releases were charged to a ledger that is gone."""
    problems: list[str] = []
    folder = Path(releases)
    if not folder.is_dir():
        return problems
    hashes = hashes or {}
    for name in CARD_NAMES:
        for card_path in sorted(folder.glob(f"*/{name}")):
            try:
                card = json.loads(card_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            anchor = card.get("ledger_anchor") if isinstance(card, dict) else None
            if not isinstance(anchor, dict) or card.get("ledger_label", "") != label:
                continue
            if not same_controller(card.get("policy")):
                continue
            release = f"release {card.get('release_id')!r} ({card_path})"
            events = int(anchor.get("events", 0) or 0)
            if ledger_id is None:
                problems.append(
                    f"{release} was charged to ledger {anchor.get('ledger_id')} ({events} "
                    "events), which is missing here: the ledger was deleted or replaced"
                )
            elif anchor.get("ledger_id") != ledger_id:
                problems.append(
                    f"{release} was charged to ledger {anchor.get('ledger_id')}, not to "
                    f"{ledger_id} at {path}: the ledger was deleted or replaced"
                )
            elif events > len(hashes):
                problems.append(
                    f"{release} saw {events} events in the ledger, which now has "
                    f"{len(hashes)}: it was rolled back"
                )
            elif events and anchor.get("head") and hashes.get(events) != anchor.get("head"):
                problems.append(
                    f"{release} saw head {str(anchor.get('head'))[:12]}… at event {events}, but "
                    f"the ledger's event {events} has another hash: it was rolled back and "
                    "padded, or rewritten"
                )
    return problems


def _contradiction_message(path: Path, found: list[str], policy: Policy | None = None) -> str:
    more = f" (and {len(found) - 1} more cards)" if len(found) > 1 else ""
    return (
        f"privacy ledger {path} is refused before anything was charged{cite_rule(policy)}: "
        f"{found[0]}{more}; restore the ledger from a backup — it is never recreated over its "
        "history"
    )


def cite_rule(policy: Policy | None, kind: str = "anonymous_release") -> str:
    """`` (rule: the anonymity claim of every release, clause AO-1)``: the policy's own
    clause a refusal protects, or ``""`` when no policy (or no such clause) is known. Every
    refusal that has the policy at hand cites it this way (one wording for all modules)."""
    try:
        ids = policy.clauses_for(kind) if policy is not None else ()
    except (PolicyError, KeyError):  # a kind the policy has no clause for
        ids = ()
    if not ids:
        return ""
    what = "the anonymity claim of every release" if kind == "anonymous_release" else kind
    return f" (rule: {what}, clause {', '.join(ids)})"


def _complete_release(entry: LedgerEntry) -> tuple[dict[str, str], str] | None:
    """``(files, card)`` when the release's folder is complete on disk, else None."""
    if not entry.output:
        return None
    folder = Path(entry.output)
    for card_name in CARD_NAMES:
        card_path = folder / card_name
        if not card_path.is_file():
            continue
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        listed = card.get("files") if isinstance(card, dict) else None
        if card.get("release_id") != entry.release_id or not isinstance(listed, dict):
            return None
        files: dict[str, str] = {}
        for name, digest in listed.items():
            path = folder / name
            if not path.is_file() or _sha256_path(path) != digest:
                return None
            files[name] = digest
        files[card_name] = _sha256_path(card_path)
        return files, card_name
    return None


def _remove_staging(entry: LedgerEntry) -> str:
    """Remove the staging folders a killed publication left (``.<release-id>.*.tmp``)."""
    if not entry.output:
        return ""
    import shutil

    parent = Path(entry.output).parent
    removed = []
    for leftover in parent.glob(f".{entry.release_id}.*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover.name)
    return ", ".join(removed)


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _card_claim_problems(entry: LedgerEntry, card: Mapping[str, Any], name: str) -> list[str]:
    """What a card claims (loss, guarantee, clauses, policy, population, spec) that differs
    from its ledger entry: a card written with other claims than the ledger charged (r13 #4)
    is no card of that release, whatever its hashes."""
    request = entry.request
    loss = request.loss
    wanted: dict[str, Any] = {
        "policy": request.policy,
        "population": request.population,
        "guarantee": str(request.guarantee),
        "clause_ids": list(request.clause_ids),
        "spec": request.spec,
    }
    found = [key for key, value in wanted.items() if key in card and not _same(card[key], value)]
    stated = card.get("privacy_loss")
    if isinstance(stated, Mapping):
        found += [
            f"privacy_loss.{key}"
            for key in ("epsilon", "delta", "rho")
            if not _same_number(getattr(loss, key, None), stated.get(key))
        ]
    elif "privacy_loss" in card:
        found.append("privacy_loss")
    if not found:
        return []
    return [
        f"release {entry.release_id!r} (card {name}): the card's {', '.join(found)} differ "
        "from what the ledger charged and recorded for it; the card is not this release's "
        "— re-publish it, never edit a card"
    ]


def _same(claimed: Any, recorded: Any) -> bool:
    try:
        return _canonical(claimed) == _canonical(recorded)
    except (TypeError, ValueError):  # NaN or not JSON: not what the ledger recorded
        return False


def _same_number(recorded: float | None, claimed: Any) -> bool:
    if recorded is None or claimed is None:
        return recorded is None and claimed is None
    try:
        return math.isclose(float(recorded), float(claimed), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _file_problems(entry: LedgerEntry, card_path: Path) -> list[str]:
    """Recompute the SHA-256 of every file the ledger recorded for a release."""
    if entry.status != "published":
        return [
            f"release {entry.release_id!r} (card {card_path}) is {entry.status} in the ledger, "
            "not published"
        ]
    problems = []
    folder = card_path.parent
    if entry.card is not None and entry.card != card_path.name:
        problems.append(f"release {entry.release_id!r}: its card is {entry.card}, not {card_path}")
    # (a release published without its card's hash — the DP k-means writes its card after
    # publishing — has its released files checked, not its card)
    for name, digest in entry.files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"release {entry.release_id!r}: published file {path} is missing")
        elif _sha256_path(path) != digest:
            problems.append(
                f"release {entry.release_id!r}: {path} differs from what was published "
                "(SHA-256 recorded in the ledger)"
            )
    # a release folder holds exactly what was published, plus the files its hashed card names
    # as kept beside it unreleased (the DP k-means' labels and metadata, personal data)
    if entry.card is None:
        return problems
    kept: set[str] = set()
    if not problems:  # the card is the one the ledger recorded, so its list can be trusted
        card = json.loads(card_path.read_text(encoding="utf-8"))
        kept = set(card.get("kept_unreleased", ()))
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative not in entry.files and relative not in kept:
            problems.append(
                f"release {entry.release_id!r}: {path} is not a file the ledger recorded as "
                "published in it (added after publication)"
            )
    return problems


def _bound_policy(conn: sqlite3.Connection) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT recorded_at, body FROM events WHERE event = 'policy' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    data = json.loads(row[1])["data"]
    return {**data, "recorded_at": row[0]}


def _policy_parameters(policy: Policy) -> dict[str, Any]:
    """The bound parameters: the budget, δ and DP family of the policy's ``privacy`` table."""
    privacy = policy.privacy
    return {
        "budget_epsilon": float(privacy.budget_epsilon),
        "budget_period_months": int(privacy.budget_period_months),
        "budget_window_months": int(privacy.budget_window_months),
        "delta": float(privacy.delta or 0.0),
        "dp_family": str(privacy.dp_family or "") or None,
    }


def _same_parameters(bound: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    return all(
        bound.get(name) == params.get(name)
        for name in BOUND_PARAMETERS
        if bound.get(name) is not None and params.get(name) is not None
    )


def _tightens(bound: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    return (
        params["budget_epsilon"] <= bound["budget_epsilon"]
        and params["budget_period_months"] >= bound["budget_period_months"]
        and params["budget_window_months"] >= bound["budget_window_months"]
        and params["delta"] <= bound["delta"]
        and (bound.get("dp_family") in (None, params.get("dp_family")))
    )


def _describe_params(params: Mapping[str, Any]) -> str:
    return (
        f"ε = {params.get('budget_epsilon')} per {params.get('budget_period_months')} months, "
        f"window {params.get('budget_window_months')} months, δ = {params.get('delta')}"
        + (f", {params['dp_family']}" if params.get("dp_family") else "")
    )


#: Facts that only describe (wording, notes, the source): a change is adopted, never refused.
#: A promise's wording (sv, en) is; its audit ``checks`` are not (r13 #6: dropping the checks
#: that fail turned the audit's "2 fail" into "4 of 4 clauses verified").
_DESCRIPTIVE_FACTS = frozenset({"description", "note", "sv", "en", "source"})
#: Privacy facts only the budget rule of :meth:`Ledger.change_policy` governs.
_BUDGET_FACTS = frozenset(BOUND_PARAMETERS)
#: Public parameters of the private segments' DP k-means that move no privacy loss: every fit
#: is charged its own OpenDP loss at ``private_segments_epsilon`` whatever the number of
#: segments or Lloyd iterations, and a published model keeps the k its ledger entry recorded.
#: A change is adopted (``--adopt-policy``, recorded as a policy event), never refused as a
#: loosening; until adopted the ledger still refuses the changed file.
_MECHANISM_FACTS = frozenset({"private_segments_k", "private_segments_iterations"})
#: Facts a tightening may raise but never lower.
_AT_LEAST_FACTS = frozenset({"min_k", "min_l"})
#: Tables a tightening may drop entries of (a recipient, destination or purpose fewer).
_MAY_SHRINK = frozenset({"purposes", "recipients", "allowed_destinations"})
#: Tables a tightening may add entries to (one more exclusion).
_MAY_GROW = frozenset({"exclusions", "promises"})
#: Lists a tightening may add items to but never drop one of (a promise's audit checks).
_LISTS_MAY_GROW = frozenset({"checks"})


def _fact(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _fact(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _fact(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_fact(item) for item in value)
    if isinstance(value, (list, tuple)):
        return [_fact(item) for item in value]
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def _policy_facts(policy: Policy) -> dict[str, Any]:
    """Every fact of a parsed :class:`segments.Policy` (all but its file's path), canonical."""
    facts = {f.name: _fact(getattr(policy, f.name)) for f in dataclasses.fields(policy)}
    facts.pop("path", None)
    return facts


def _policy_binding(policy: Policy) -> dict[str, Any]:
    """The policy event's record of the whole policy: its facts and their digest."""
    facts = _policy_facts(policy)
    return {"policy_digest": _sha256_text(_canonical(facts)), "policy_facts": facts}


def _policy_differences(bound: Any, given: Any, where: str = "") -> list[str]:
    """Every fact that differs, named by its path (``recipients.x.kind 'a' → 'b'``)."""
    if isinstance(bound, dict) and isinstance(given, dict):
        out: list[str] = []
        for key in sorted(set(bound) | set(given)):
            name = f"{where}.{key}" if where else key
            if key not in given:
                out.append(f"{name} removed")
            elif key not in bound:
                out.append(f"{name} added")
            else:
                out.extend(_policy_differences(bound[key], given[key], name))
        return out
    if bound != given:
        return [f"{where} {bound!r} → {given!r}"]
    return []


def _policy_loosenings(bound: Any, given: Any, where: str = "") -> list[str]:
    """The differences that are not a tightening (budget parameters left to their own rule,
    descriptions free)."""
    last = where.rsplit(".", 1)[-1]
    if isinstance(bound, dict) and isinstance(given, dict):
        out: list[str] = []
        for key in sorted(set(bound) | set(given)):
            name = f"{where}.{key}" if where else key
            if key in _DESCRIPTIVE_FACTS or (
                where == "privacy" and key in _BUDGET_FACTS | _MECHANISM_FACTS
            ):
                continue
            if key not in given:
                if where not in _MAY_SHRINK:
                    out.append(f"{name} removed")
            elif key not in bound:
                if where not in _MAY_GROW:
                    out.append(f"{name} added")
            else:
                out.extend(_policy_loosenings(bound[key], given[key], name))
        return out
    if where in _MAY_SHRINK and isinstance(bound, list) and isinstance(given, list):
        return [f"{where}: {item!r} added" for item in given if item not in bound]
    if last in _LISTS_MAY_GROW and isinstance(bound, list) and isinstance(given, list):
        return [f"{where}: {item!r} removed" for item in bound if item not in given]
    if last in _AT_LEAST_FACTS and isinstance(bound, int) and isinstance(given, int):
        return [f"{where} {bound} → {given} (lower)"] if given < bound else []
    if bound != given:
        return [f"{where} {bound!r} → {given!r}"]
    return []


def _policy_hash(policy: Policy) -> str:
    """SHA-256 of the policy file (or of its name and privacy parameters without a file)."""
    path = policy.path
    if path is not None and Path(path).is_file():
        return _sha256_path(Path(path))
    described = {"name": policy.name, "privacy": repr(policy.privacy)}
    return _sha256_text(_canonical(described))


def _connect(path: Path) -> sqlite3.Connection:
    _owner_only(path)
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _owner_only(path: Path) -> None:
    """Create the ledger file 0600 whatever the umask (SQLite gives its journal the same
    mode), and take group/other bits off an existing one; a read-only file stays read-only."""
    if str(path) == ":memory:":
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            path.chmod(mode & 0o700)


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


def _policy_delta(policy: Policy | None) -> float | None:
    """``policy.privacy.delta`` if positive (a pure-DP policy states 0)."""
    delta = policy.privacy.delta if policy is not None else None
    return float(delta) if delta else None


def _latest_zcdp_delta(dated: list[tuple[dt.date, PrivacyLoss]]) -> float | None:
    deltas = [loss.delta for _, loss in dated if loss.family == DPFamily.ZCDP and loss.delta]
    return deltas[-1] if deltas else None


def _describe_loss(loss: PrivacyLoss, delta: float | None) -> str:
    if loss.family == DPFamily.ZCDP and loss.rho is not None:
        text = f"ρ = {loss.rho:.6g}"
        return text + (
            f" (ε = {rho_to_epsilon(loss.rho, delta):.6g} at δ = {delta:g})" if delta else ""
        )
    if loss.family == "approx":
        return f"(ε = {loss.epsilon:.6g}, δ = {loss.delta:.3g})"
    return f"ε = {loss.epsilon:.6g}"


def _check_budget_matches_policy(request: ReleaseRequest, policy: Policy) -> None:
    """Refuse a request whose budget differs from its policy's (a caller cannot raise it)."""
    for name in ("budget_epsilon", "budget_period_months", "budget_window_months"):
        expected = getattr(policy.privacy, name)
        if getattr(request, name) != expected:
            raise ReleaseRefusedError(
                f"release request has {name}={getattr(request, name)!r} but policy "
                f"{request.policy!r} sets privacy.{name}={expected!r}; the budget comes from the "
                "policy (build the request with ReleaseRequest.for_policy)"
            )


def _load_policy(name: str) -> Policy:
    from segments.policy import Policy

    return Policy.load(name)


def _load_policy_quietly(name: str) -> Policy | None:
    try:
        return _load_policy(name)
    except Exception:  # a policy the ledger cannot load cites no clause
        return None


def _load_card(card: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(card, Mapping):
        return card
    loaded = json.loads(Path(card).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"release card {card} is not a JSON object")
    return loaded


def _card_name(card: Mapping[str, Any] | str | os.PathLike[str]) -> str:
    return repr(card.get("release_id", "?")) if isinstance(card, Mapping) else str(card)
