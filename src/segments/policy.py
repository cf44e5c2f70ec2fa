"""Policy as code: one TOML file per controller, loaded into a frozen, validated :class:`Policy`.

Each file in ``segments/policies/`` turns one retailer's published privacy policy
(``../shared/seeds/``) into rules the code enforces: the declared purposes with the columns
each may use and its retention rules, the exclusions (erasure, restriction, objection,
consent withdrawal, opt-outs), who may be profiled, the recipients and destinations a
release may go to, and the ``[privacy]`` section holding every public parameter later stages
need (k, l, the DP family and budget, contribution and clipping bounds, feature bounds), so
none of them is ever computed from the data. Every rule carries the clause ids of
``POLICY_CLAUSES.md`` it implements.

The rules are plain frozen dataclasses here; :mod:`segments.policy_parser` reads and checks
the TOML. Validation is strict: an unknown key, a negative period, a purpose without a
retention rule or a rule without a clause id raises :class:`~segments.exceptions.PolicyError`
naming the file, the key and the fix.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from segments.exceptions import PolicyError, ReleaseRefusedError
from segments.months import add_months
from segments.privacy.composition import DPFamily
from segments.taxonomy import PRODUCT_CATEGORIES

__all__ = [
    "ANCHORS",
    "CELL_BOUND_TABLES",
    "CLAUSE_KINDS",
    "EU_EEA",
    "FEATURE_NAMES",
    "Guarantee",
    "POLICY_NAMES",
    "RECIPIENT_KINDS",
    "ClausePromise",
    "ExclusionRule",
    "Policy",
    "PrivacyParameters",
    "ProfilingEligibility",
    "Purpose",
    "Recipient",
    "RetentionRule",
    "DPFamily",
    "months_before",
]

#: The policies shipped with segments (``segments/policies/<name>.toml``).
POLICY_NAMES = ("alloffice", "allkontor", "offix", "alocenter", "allcall")

#: What a retention period is counted from. ``collection``: the row's own date (order date);
#: ``last_order``: the person's last order; ``last_contact``: the later of the last order and
#: the last recorded contact (AL-1); ``end_of_relationship``: the person's end date, with
#: active customers kept (AK-3).
ANCHORS = ("collection", "last_order", "last_contact", "end_of_relationship")
#: Data a retention rule covers: order lines (``transactions``) or the customer record.
RETENTION_DATA = ("transactions", "customer")
RECIPIENT_KINDS = ("internal", "external", "third_party_marketing")


class Guarantee(StrEnum):
    """What a release claims: the one spelling on requests, ledger entries, cards, refusals,
    segment metadata and the reviewer's report."""

    END_TO_END = "end-to-end ε-DP"
    GIVEN_SEGMENTATION = "DP given a non-private segmentation"
    K_ANONYMOUS = "k-anonymous microdata"

    @property
    def kind(self) -> str:
        """The ledger's release kind the guarantee fits: ``"kanon"`` or ``"dp"``."""
        return "kanon" if self is Guarantee.K_ANONYMOUS else "dp"

    @property
    def end_to_end(self) -> bool:
        """Whether it holds end to end, so that the release may leave the controller."""
        return self is not Guarantee.GIVEN_SEGMENTATION


#: ISO 3166-1 alpha-2 codes of the EU member states and the other EEA states (IS, LI, NO).
_EU = "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK"
EU_EEA = frozenset((_EU + " IS LI NO").split(" "))
#: Exclusions every policy must state, with the clause ids that require them.
REQUIRED_EXCLUSIONS = (
    "erasure",
    "restriction",
    "objection",
    "consent_withdrawal",
    "marketing_opt_out",
)
#: Segmentation features with public bounds (docs/architecture.md).
FEATURE_NAMES = (
    "recency_days",
    "frequency_orders",
    "monetary_sek",
    "avg_basket_sek",
    *(f"share_{c}" for c in PRODUCT_CATEGORIES),
    *(f"line_share_{c}" for c in PRODUCT_CATEGORIES),
    "share_web",
    "share_store",
    "share_phone",
    "share_q1",
    "share_q2",
    "share_q3",
    "share_q4",
)
#: What each entry of a policy's ``[clauses]`` table backs. Clause ids are data: code never
#: names one; it asks the policy (:meth:`Policy.clauses_for`, :meth:`Policy.release_clause_ids`)
#: so a card, refusal or report cites only its own controller's promises.
CLAUSE_KINDS = {
    "anonymous_release": "the clause under which a released table (DP or k-anonymous) is "
    "claimed anonymous; every release cites it with its purpose's clauses",
    "purpose_refusal": "a release or frame for an undeclared purpose is refused",
    "recipient_refusal": "an undeclared recipient or a third party for marketing is refused",
    "person_linkage": "a person's accounts are one person, the unit of every guarantee",
    "minimisation": "only a purpose's columns enter a frame; direct identifiers never do",
    "key_custody": "the pseudonymisation key is held apart from the data",
    "useful_release": "a k-anonymous table with more columns fully generalised (one value in "
    "every row) than privacy.max_fully_generalised_columns is refused: it would not serve "
    "its purpose",
}
#: Optional ``[privacy]`` tables of per-category cell bounds, and the largest bound each must
#: divide.
CELL_BOUND_TABLES = {
    "cell_spend_sek_by_category": "cell_spend_bound_sek",
    "cell_units_by_category": "cell_units_bound",
}


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` calendar months earlier (clipped to the month's last day).

    Examples
    --------
    >>> months_before(dt.date(2026, 6, 30), 14)
    datetime.date(2025, 4, 30)
    >>> months_before(dt.date(2026, 3, 31), 1)
    datetime.date(2026, 2, 28)
    """
    return add_months(day, -months)


# --- value objects ---------------------------------------------------------------------
@dataclass(frozen=True)
class RetentionRule:
    """How long one purpose may use one kind of data.

    A row (``transactions``) or a person (``customer``) survives while its anchor date is on
    or after :meth:`cutoff`: data collected on day D with a 14-month rule is usable up to and
    including D + 14 months.
    """

    name: str
    data: str
    anchor: str
    months: int | None
    clause_ids: tuple[str, ...]
    categories: tuple[str, ...] = ()
    note: str = ""

    def cutoff(self, as_of: dt.date) -> dt.date | None:
        """First anchor date still inside the window on ``as_of``; None if unlimited."""
        return None if self.months is None else months_before(as_of, self.months)


@dataclass(frozen=True)
class Purpose:
    """A declared purpose: what it may use, for how long, and whom it covers."""

    name: str
    description: str
    clause_ids: tuple[str, ...]
    legal_basis: str
    profiling: bool
    exclude_objectors: bool
    exclude_survey_opt_outs: bool
    stop_at_consent_withdrawal: bool
    columns: Mapping[str, tuple[str, ...]]
    retention: tuple[RetentionRule, ...]

    def rules_for(self, data: str) -> tuple[RetentionRule, ...]:
        """The retention rules of this purpose for ``data`` (``transactions`` or ``customer``)."""
        return tuple(r for r in self.retention if r.data == data)

    @property
    def longest_window_months(self) -> int:
        """Longest finite retention period of this purpose, in months."""
        return max((r.months for r in self.retention if r.months is not None), default=0)


@dataclass(frozen=True)
class ExclusionRule:
    """A rule that removes or flags customers (erasure, restriction, objection, ...)."""

    name: str
    clause_ids: tuple[str, ...]
    note: str = ""
    #: Days allowed to carry out a request (erasure, restriction); GDPR art. 12(3) allows
    #: one month unless the policy file sets ``deadline_days``.
    deadline_days: int = 30


@dataclass(frozen=True)
class ProfilingEligibility:
    """Who may be profiled: never objectors; optionally only newsletter subscribers (AL-3)."""

    clause_ids: tuple[str, ...]
    newsletter_subscribers_only: bool
    exclude_consent_withdrawn: bool
    exclude_marketing_opt_out: bool
    note: str = ""

    def describe(self) -> str:
        """The rule in words, for reports."""
        parts = ["has not objected to profiling"]
        if self.newsletter_subscribers_only:
            parts.insert(0, "subscribes to the newsletter")
        if self.exclude_consent_withdrawn:
            parts.append("has not withdrawn consent")
        if self.exclude_marketing_opt_out:
            parts.append("has not opted out of marketing")
        return "eligible if the person " + " and ".join(parts)


@dataclass(frozen=True)
class ClausePromise:
    """What one clause promises: the policy's own Swedish words and an English gloss.

    The reviewer's report quotes both above the checks that verify the clause.
    """

    clause_id: str
    sv: str
    en: str
    #: names of the audit checks that verify the promise (``segments.audit.checks.CHECKS``)
    checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipient:
    """Who a release may be sent to, and where."""

    name: str
    kind: str
    country: str
    clause_ids: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in RECIPIENT_KINDS:
            raise PolicyError(
                f"recipient {self.name!r} has kind {self.kind!r}; the kinds are "
                f"{', '.join(RECIPIENT_KINDS)}"
            )


@dataclass(frozen=True)
class PrivacyParameters:
    """Public privacy parameters read by the k-anonymity, DP and segmentation stages."""

    min_k: int
    suppression_limit: float
    min_l: int
    dp_family: DPFamily
    delta: float
    budget_epsilon: float
    budget_period_months: int
    budget_window_months: int
    max_cells_per_person: int
    spend_bound_sek: float
    cell_spend_bound_sek: float
    cell_units_bound: int
    survey_score_bounds: tuple[float, float]
    feature_bounds: Mapping[str, tuple[float, float]]
    private_segments_k: int
    private_segments_iterations: int
    private_segments_epsilon: float
    # optional: smaller per-category cell bounds, each dividing the largest bound above
    cell_spend_sek_by_category: Mapping[str, int] = field(default_factory=dict)
    cell_units_by_category: Mapping[str, int] = field(default_factory=dict)
    # optional: how per-cell releases bound a person's whole contribution (a norm bound chosen
    # privately at this quantile, or public bounds; 0 = private), and the accuracy planner's
    # refusal threshold on a release's expected relative error on its typical cell
    contribution_quantile: float = 0.9
    contribution_bound_factor: float = 2.0
    contribution_bound_share: float = 0.2
    units_norm_bound: int = 0
    sek_norm_bound: int = 0
    max_relative_error: float = 0.5
    # optional: a k-anonymous table may leave at most this many columns fully generalised
    # (one value in every row); None: no threshold, a warning only
    max_fully_generalised_columns: int | None = None


@dataclass(frozen=True)
class Policy:
    """One controller's privacy policy as enforceable rules.

    Load with :meth:`Policy.load`; the object is frozen and validated.

    Examples
    --------
    >>> policy = Policy.load("alloffice")
    >>> policy.controller
    'AllOffice Nordic AB'
    >>> policy.purpose("segmentation").clause_ids
    ('AO-4',)
    >>> policy.privacy.dp_family in ("pure", "zcdp")
    True
    """

    name: str
    controller: str
    org_number: str | None
    joint_controllers: Mapping[str, str]
    source: str
    purposes: Mapping[str, Purpose]
    recipients: Mapping[str, Recipient]
    allowed_destinations: frozenset[str]
    destination_clause_ids: tuple[str, ...]
    exclusions: Mapping[str, ExclusionRule]
    profiling_eligibility: ProfilingEligibility
    privacy: PrivacyParameters
    clauses: Mapping[str, tuple[str, ...]]
    clause_prefix: str
    path: Path = field(compare=False)
    #: clause id → its promise quoted ([promises] of the policy file), in file order
    promises: Mapping[str, ClausePromise] = field(default_factory=dict)

    # --- loading ----------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str]) -> Policy:
        """Load a shipped policy by name (``"alloffice"``) or a TOML file by path.

        Raises
        ------
        PolicyError
            For an unknown policy name, or a file that breaks a validation rule (naming the
            file, the key and the fix).
        """
        from segments.policy_parser import load_policy  # the TOML reader and its checks

        return load_policy(name_or_path)

    # --- queries ----------------------------------------------------------------------
    def purpose(self, name: str) -> Purpose:
        """The declared purpose ``name``; refuses an undeclared one (AO-10).

        Raises
        ------
        PolicyError
            If the policy does not declare the purpose.
        """
        try:
            return self.purposes[name]
        except KeyError:
            raise PolicyError(
                f"purpose {name!r} is not declared by policy {self.name!r} ({self.controller}); "
                f"data may be processed only for declared purposes "
                f"({self.cite('purpose_refusal')}); declared purposes are {sorted(self.purposes)}"
            ) from None

    def clauses_for(self, kind: str) -> tuple[str, ...]:
        """The clause ids of this policy backing ``kind`` (a key of :data:`CLAUSE_KINDS`).

        Examples
        --------
        >>> Policy.load("allcall").clauses_for("anonymous_release")
        ('AC-2',)
        """
        if kind not in CLAUSE_KINDS:
            raise PolicyError(f"clause kind {kind!r} is unknown; use one of {sorted(CLAUSE_KINDS)}")
        return self.clauses[kind]

    def cite(self, kind: str) -> str:
        """``kind``'s clause ids as text for a message, or where the rule comes from."""
        ids = self.clauses_for(kind)
        return ", ".join(ids) if ids else f"a project rule; policy {self.name!r} has no clause"

    def release_clause_ids(self, purpose: str) -> tuple[str, ...]:
        """Clauses a release for ``purpose`` rests on: the anonymity clause and the purpose's.

        Examples
        --------
        >>> Policy.load("alloffice").release_clause_ids("statistics")
        ('AO-1', 'AO-4')
        """
        ids = (*self.clauses_for("anonymous_release"), *self.purpose(purpose).clause_ids)
        return tuple(dict.fromkeys(ids))

    def recipient(self, name: str) -> Recipient:
        """The declared recipient ``name``.

        Raises
        ------
        ReleaseRefusedError
            If the policy does not declare the recipient.
        """
        try:
            return self.recipients[name]
        except KeyError:
            raise ReleaseRefusedError(
                f"recipient {name!r} is not declared by policy {self.name!r}; declared "
                f"recipients are {sorted(self.recipients)}; add it to the policy file first"
            ) from None

    @property
    def longest_window_months(self) -> int:
        """Longest finite retention period over all purposes, in months."""
        return max(p.longest_window_months for p in self.purposes.values())
