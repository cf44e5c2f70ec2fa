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
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

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

_T = TypeVar("_T")

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
    """The public privacy parameters: a policy's ``[privacy]`` section, and the scope of a
    release (its retention window and public domains). The one owner of these facts, their
    defaults and their checks: the parser builds it from the file, a release reads it from
    :meth:`from_policy` (narrowed to a workspace's domains by :meth:`with_domains`);
    nothing else holds a copy (``segments.privacy.specs.PrivacyParams`` is this class).

    Parameters
    ----------
    min_k, suppression_limit, min_l : int, float, int
        Microdata release: k-anonymity, the share of rows that may be suppressed, l-diversity.
    dp_family : DPFamily
        Laplace noise and ε-DP (``pure``), or Gaussian noise and ρ-zCDP (``zcdp``).
    delta : float
        δ used to state a zCDP loss as (ε, δ); 0 for pure DP.
    budget_epsilon : float
        Budget per period, charged by the ledger.
    budget_period_months, budget_window_months : int
        Budget period and the rolling window over which a population's losses are totalled.
    max_cells_per_person : int
        Cells one person may touch in a histogram or series release.
    spend_bound_sek : int
        Clipping bound of one person's total spend in a release.
    cell_spend_bound_sek, cell_units_bound : int
        Clipping bounds of one person's spend and units in one cell: the largest per-cell
        bound, and the bound of every category without its own.
    survey_score_bounds : tuple of int
        Bounds of a survey score.
    feature_bounds : mapping of str to (float, float)
        Public clipping bounds of the segmentation features.
    private_segments_k, private_segments_iterations, private_segments_epsilon
        DP k-means.
    cell_spend_sek_by_category, cell_units_by_category : mapping of str to int
        Smaller per-category cell bounds (a chair is not bought by the hundred); each must
        divide the largest bound. Each category's cells are released on the largest bound's
        scale (value x largest / own bound), so its noise, once scaled back, is proportional
        to its own bound (:meth:`cell_weights`).
    contribution_quantile, contribution_bound_factor : float
        Per-cell releases bound each person's whole vector of cells (units or SEK, weighted
        by :meth:`cell_weights`) to a norm (L1 for Laplace, L2 for Gaussian); where no public
        norm bound is given, the bound is this quantile of the per-person norms, chosen by
        OpenDP's private quantile (:mod:`segments.privacy.bounds`) and charged, times the
        factor (public). A middle quantile is found reliably at a small ε (the exponential
        mechanism's score gap is ``(1 - q) × people``); the factor carries it to the tail
        (measured: 2 × the 90th percentile of a month's units is near the 98th).
    contribution_bound_share : float
        Share of such a query's loss spent on choosing its bounds privately.
    units_norm_bound, sek_norm_bound : int
        Public norm bounds of a person's weighted units / SEK vector in one release; 0 =
        choose privately per release.
    max_relative_error : float
        A mean is published only where its noisy count's relative half-width is at most
        this; the accuracy planner refuses a release whose typical cell is expected to be
        worse (:mod:`segments.privacy.planner`).
    max_fully_generalised_columns : int or None
        A k-anonymous table may leave at most this many columns fully generalised (one
        value in every row); None: no threshold, a warning only.
    retention_months : int
        Months of data inside retention: the policy's longest window, narrowed to the
        release's purpose by :meth:`from_policy`; a month older than this is
        not released.
    categories : tuple of str
        The public product taxonomy cells are keyed by: the built-in one for synthetic data,
        a mapping's declared one for an ingested export (:meth:`with_domains`).
    geography_column : str or None
        The column geographic keys come from (``county_code``), or None when the data
        declares no geography.
    geography_values : tuple of str
        The public list of its codes (empty: the 21 Swedish counties).
    """

    min_k: int
    suppression_limit: float
    min_l: int
    dp_family: DPFamily
    delta: float
    budget_epsilon: float
    budget_period_months: int
    budget_window_months: int
    max_cells_per_person: int
    spend_bound_sek: int
    cell_spend_bound_sek: int
    cell_units_bound: int
    survey_score_bounds: tuple[int, int]
    feature_bounds: Mapping[str, tuple[float, float]]
    private_segments_k: int
    private_segments_iterations: int
    private_segments_epsilon: float
    retention_months: int
    # optional in a policy file
    cell_spend_sek_by_category: Mapping[str, int] = field(default_factory=dict)
    cell_units_by_category: Mapping[str, int] = field(default_factory=dict)
    contribution_quantile: float = 0.9
    contribution_bound_factor: float = 2.0
    contribution_bound_share: float = 0.2
    units_norm_bound: int = 0
    sek_norm_bound: int = 0
    max_relative_error: float = 0.5
    max_fully_generalised_columns: int | None = None
    # the data's public domains (segments.ingest.public_domains), set by with_domains
    categories: tuple[str, ...] = PRODUCT_CATEGORIES
    geography_column: str | None = "county_code"
    geography_values: tuple[str, ...] = ()

    #: keys of the policy file's ``[privacy]`` table that may be left out (defaults above)
    OPTIONAL_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "cell_spend_sek_by_category",
            "cell_units_by_category",
            "contribution_quantile",
            "contribution_bound_factor",
            "contribution_bound_share",
            "units_norm_bound",
            "sek_norm_bound",
            "max_relative_error",
            "max_fully_generalised_columns",
        }
    )
    #: fields that are not keys of the policy file (the release's scope)
    SCOPE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"retention_months", "categories", "geography_column", "geography_values"}
    )

    def __post_init__(self) -> None:
        if self.dp_family not in tuple(DPFamily):
            raise PolicyError(
                f"key 'privacy.dp_family': unknown family {self.dp_family!r}; fix: use one of "
                f"{', '.join(repr(f.value) for f in DPFamily)}"
            )
        object.__setattr__(self, "dp_family", DPFamily(self.dp_family))
        for name in CELL_BOUND_TABLES:  # pairs or a mapping in; a read-only mapping kept
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "survey_score_bounds", tuple(self.survey_score_bounds))
        if self.dp_family == DPFamily.PURE and self.delta != 0:
            raise PolicyError(
                f"key 'privacy.delta': pure DP has delta 0, got {self.delta}; fix: set "
                'delta = 0.0 or dp_family = "zcdp"'
            )
        if self.dp_family == DPFamily.ZCDP and not 0 < self.delta < 1e-3:
            raise PolicyError(
                f"key 'privacy.delta': delta {self.delta} is not in (0, 1e-3) (it states ρ as "
                "(ε, δ)); fix: use a small delta such as 1e-7"
            )
        if not 0 <= self.suppression_limit < 1:
            raise PolicyError(
                f"key 'privacy.suppression_limit': {self.suppression_limit} is not a fraction "
                "below 1; fix: use e.g. 0.05"
            )
        for name in (
            "min_k",
            "min_l",
            "max_cells_per_person",
            "spend_bound_sek",
            "cell_spend_bound_sek",
            "cell_units_bound",
            "retention_months",
            "budget_period_months",
            "budget_window_months",
            "private_segments_k",
            "private_segments_iterations",
        ):
            _require_positive_int(name, getattr(self, name))
        for name in ("budget_epsilon", "private_segments_epsilon"):
            if not getattr(self, name) > 0:
                raise PolicyError(
                    f"key 'privacy.{name}': value {getattr(self, name)} is not positive; fix: "
                    "give a positive number"
                )
        for name in CELL_BOUND_TABLES:
            self._check_category_bounds(name)
        if not 0.5 <= self.contribution_quantile < 1.0:
            raise PolicyError(
                f"privacy.contribution_quantile={self.contribution_quantile!r} must lie in "
                "[0.5, 1), e.g. 0.9; fix the policy's [privacy] section"
            )
        if not 1.0 <= self.contribution_bound_factor <= 100.0:
            raise PolicyError(
                f"privacy.contribution_bound_factor={self.contribution_bound_factor!r} must "
                "lie in [1, 100], e.g. 2; fix the policy's [privacy] section"
            )
        if not 0.0 < self.contribution_bound_share < 1.0:
            raise PolicyError(
                f"privacy.contribution_bound_share={self.contribution_bound_share!r} must lie "
                "in (0, 1), e.g. 0.1; fix the policy's [privacy] section"
            )
        if not self.max_relative_error > 0:
            raise PolicyError(
                f"privacy.max_relative_error={self.max_relative_error!r} must be positive, "
                "e.g. 0.5; fix the policy's [privacy] section"
            )
        for name in ("units_norm_bound", "sek_norm_bound"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise PolicyError(
                    f"privacy.{name}={value!r} must be a non-negative integer (0: chosen "
                    "privately per release); fix the policy's [privacy] section"
                )
        low, high = self.survey_score_bounds
        if not low < high:
            raise PolicyError(
                f"privacy.survey_score_bounds={self.survey_score_bounds!r} must be (lower, "
                "upper) with lower < upper"
            )

    def _check_category_bounds(self, name: str) -> None:
        top_name = CELL_BOUND_TABLES[name]
        top = getattr(self, top_name)
        for category, bound in getattr(self, name).items():
            if category not in self.categories:
                raise PolicyError(
                    f"privacy.{name}: category {category!r} is not a product category; use "
                    f"one of {list(self.categories)}"
                )
            if not isinstance(bound, int) or bound < 1 or top % bound:
                raise PolicyError(
                    f"key 'privacy.{name}.{category}': {bound!r} does not divide the largest "
                    f"cell bound privacy.{top_name} = {top}; fix: use a positive divisor of "
                    f"{top} (cells are released on its scale)"
                )

    @classmethod
    def from_policy(cls, policy: Policy, purpose: str | None = None) -> PrivacyParameters:
        """The parameters a release for ``purpose`` reads: the policy's ``[privacy]``
        section with the purpose's retention window (without a purpose: the policy's
        longest), keyed by the built-in taxonomy, or by the policy's own when its cell
        bounds name only categories of another business (checked against the workspace's
        declared ones by :meth:`with_domains`).

        Raises
        ------
        PolicyError
            For an undeclared purpose, or cell bounds naming a category outside the
            taxonomy (a typo beside the built-in names).

        Examples
        --------
        >>> policy = Policy.load("alloffice")
        >>> PrivacyParameters.from_policy(policy, "microdata").retention_months
        14
        """
        privacy = policy.privacy
        window = policy.purpose(purpose).longest_window_months if purpose is not None else 0
        named = {c for name in CELL_BOUND_TABLES for c in getattr(privacy, name)}
        own = bool(named) and not named & set(PRODUCT_CATEGORIES)
        return replace(
            privacy,
            retention_months=window or privacy.retention_months,
            categories=tuple(sorted(named)) if own else PRODUCT_CATEGORIES,
        )

    def with_domains(self, domains: Any) -> PrivacyParameters:
        """These parameters keyed by a workspace's public domains
        (:func:`segments.ingest.public_domains`): its taxonomy and geography."""
        return replace(
            self,
            categories=tuple(domains.categories),
            geography_column=domains.geography_column,
            geography_values=tuple(domains.geography_values),
        )

    def cell_bounds(self, aggregate: str) -> dict[str, int]:
        """Per-cell clipping bound of ``aggregate`` (``"units"`` or ``"sek"``) per category.

        Examples
        --------
        >>> p = replace(Policy.load("alloffice").privacy, cell_units_by_category={"paper": 10})
        >>> p.cell_bounds("units")["paper"], p.cell_bounds("units")["furniture"]
        (10, 200)
        """
        name = {"units": "cell_units_by_category", "sek": "cell_spend_sek_by_category"}[aggregate]
        top = getattr(self, CELL_BOUND_TABLES[name])
        own = dict(getattr(self, name))
        return {c: own.get(c, top) for c in self.categories}

    def cell_weights(self, aggregate: str) -> dict[str, int]:
        """Largest bound / category bound: the factor a category's cells are released at.

        Examples
        --------
        >>> Policy.load("alloffice").privacy.cell_weights("units")["furniture"]
        10
        """
        bounds = self.cell_bounds(aggregate)
        top = max(bounds.values())
        return {c: top // b for c, b in bounds.items()}

    def to_dict(self) -> dict[str, Any]:
        """The fields by name (shallow: mappings stay read-only mappings)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyError(
            f"key 'privacy.{name}': {value!r} is not a positive integer (a public bound); "
            "fix: give a positive integer in the policy's [privacy] section"
        )


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
        """The declared purpose ``name``; refuses an undeclared one (``purpose_refusal`` clauses).

        Raises
        ------
        PolicyError
            If the policy does not declare the purpose.
        """
        return self._declared("purpose", name, self.purposes, PolicyError, "processed only for")

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
        return self._declared(
            "recipient", name, self.recipients, ReleaseRefusedError, "sent only to"
        )

    def _declared(
        self, kind: str, name: str, table: Mapping[str, _T], error: type[Exception], use: str
    ) -> _T:
        """``table[name]``; an undeclared ``kind`` is refused with ``error`` naming the rule's
        clauses (``<kind>_refusal``), what the policy declares, and the fix."""
        if name in table:
            return table[name]
        raise error(
            f"{kind} {name!r} is not declared by policy {self.name!r} ({self.controller}); "
            f"data may be {use} declared {kind}s ({self.cite(kind + '_refusal')}); "
            f"declared {kind}s are {sorted(table)}; choose one of them or declare it in the "
            "policy file"
        )

    @property
    def longest_window_months(self) -> int:
        """Longest finite retention period over all purposes, in months."""
        return max(p.longest_window_months for p in self.purposes.values())
