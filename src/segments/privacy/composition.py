"""Privacy accounting: how the ledger adds up the losses of many releases.

The rule (sound, and stated in every ``segments ledger`` output)
----------------------------------------------------------------
Each charged release carries the privacy loss OpenDP computed for it, in one of three forms:

* **pure** ``ε``-DP (``rho`` is None, ``delta`` is 0 or None);
* **zCDP** ``ρ`` (``rho`` is set; its ``delta`` is only the δ used to *report* it);
* **approximate** ``(ε, δ)``-DP with ``δ > 0`` and no ``ρ``.

k-anonymous releases carry no loss: they are recorded and shown, but charge nothing.

1. Only pure entries: the total is ``ε = Σ ε_i`` (basic composition is tight enough and exact),
   compared with the budget ``ε_B`` directly; ``δ = 0``.
2. Some zCDP entries: zCDP composes by adding ``ρ``, and a pure ``ε``-DP mechanism is
   ``ε²/2``-zCDP (Bun & Steinke 2016, Prop. 1.4). Two sound ``(ε, δ)`` statements follow, with
   the policy's ``δ`` and ``ε(ρ, δ) = ρ + 2·sqrt(ρ·ln(1/δ))`` (ibid., Prop. 1.3):

   a. everything in ``ρ``: ``ρ_all = Σ ρ_j + Σ ε_i²/2``, giving ``(ε(ρ_all, δ), δ)``;
   b. pure part apart: ``(Σ ε_i + ε(Σ ρ_j, δ), δ)`` by basic composition.

   Both hold, so the smaller ε holds; that ``ε`` is compared with ``ε_B`` (like with like:
   an ε-statement at the policy's δ against an ε budget).
3. Approximate entries add by basic composition: their ``Σ ε_k`` is added to the ε above and
   their ``Σ δ_k`` to the δ.

Sums use :func:`math.fsum` (correctly rounded) and the comparison has no tolerance, so a
budget can be spent exactly but never exceeded.

Noise scales and accuracies (one definition each, used by the releases, the accuracy planner,
the vector releases, DP k-means, private bounds and the audit): a loss ``ε`` of Laplace noise
at L1 sensitivity ``Δ₁`` has scale ``b = Δ₁/ε``; a loss ``ρ`` of Gaussian noise at L2
sensitivity ``Δ₂`` has ``σ = Δ₂/√(2ρ)`` (:func:`noise_scale`); an ``ε``-DP mechanism is
``ε²/2``-zCDP and back (:func:`pure_to_rho`, :func:`pure_epsilon_of_rho`). A scale's
half-width at ``1 − α`` is OpenDP's (:func:`noise_accuracy`, exact) or the continuous
approximation ``b·ln(1/α)`` / ``σ·z₁₋α/₂`` for planning (:func:`expected_half_width`).

Rolling periods are measured on the releases' ``as_of`` dates: the period ending at ``s`` is
``(s − P months, s]``. A new release dated ``t`` lies in every period ending in
``[t, t + P months)``; the ledger checks all of them (:func:`max_period_total`), so *no*
rolling period — earlier or later, including the backfill of past months — ever exceeds the
budget.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from segments.months import add_months

__all__ = [
    "EXACT_GAUSSIAN_SCALE",
    "Composition",
    "DP_FAMILIES",
    "DPFamily",
    "PrivacyLoss",
    "add_months",
    "compose",
    "discrete_gaussian_accuracy",
    "epsilon_to_rho",
    "expected_half_width",
    "loss_parameter",
    "max_period_total",
    "noise_accuracy",
    "noise_scale",
    "peak_period_total",
    "period_start",
    "privacy_measure",
    "pure_epsilon_of_rho",
    "quantile_rank_halfwidth",
    "pure_to_rho",
    "rho_to_epsilon",
    "scale_for_loss",
    "stated_epsilon",
]


class DPFamily(StrEnum):
    """The noise family a policy declares: Laplace noise and ε-DP, or Gaussian noise and
    ρ-zCDP (equal to its string, as written in the policy file)."""

    PURE = "pure"
    ZCDP = "zcdp"

    def __repr__(self) -> str:
        # messages write f"dp_family={family!r}": show 'pure' as the policy file does
        return repr(self.value)


#: The families' names, as a policy file writes them.
DP_FAMILIES: tuple[str, ...] = tuple(f.value for f in DPFamily)


@dataclass(frozen=True)
class PrivacyLoss:
    """The privacy loss of one release, as OpenDP computed it.

    Parameters
    ----------
    epsilon, delta, rho : float or None
        ``ε`` (pure or approximate DP), ``δ`` and ``ρ`` (zCDP). All None for a release that
        charges nothing (k-anonymous microdata).

    Examples
    --------
    >>> PrivacyLoss(epsilon=0.5).family == DPFamily.PURE == "pure"
    True
    >>> PrivacyLoss(rho=0.1, delta=1e-6).family == DPFamily.ZCDP
    True
    """

    epsilon: float | None = None
    delta: float | None = None
    rho: float | None = None

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta", "rho"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"privacy loss {name}={value!r} must be a finite number ≥ 0; pass the "
                    "value OpenDP computed (or None when it does not apply)"
                )
        if self.delta is not None and self.delta >= 1:
            raise ValueError(f"privacy loss delta={self.delta!r} must be < 1")

    @classmethod
    def from_dict(cls, stated: Mapping[str, Any]) -> PrivacyLoss:
        """The loss a card or a ledger entry states (``epsilon``, ``delta``, ``rho``)."""
        return cls(stated.get("epsilon"), stated.get("delta"), stated.get("rho"))

    def to_dict(self) -> dict[str, float | None]:
        """``{"epsilon", "delta", "rho"}``: the loss as a card or a report states it."""
        return {"epsilon": self.epsilon, "delta": self.delta, "rho": self.rho}

    @property
    def family(self) -> str:
        """``DPFamily.ZCDP``, ``DPFamily.PURE``, ``"approx"`` or ``"none"`` (charges
        nothing)."""
        if self.rho is not None:
            return DPFamily.ZCDP
        if self.epsilon is None:
            return "none"
        return "approx" if self.delta else DPFamily.PURE


@dataclass(frozen=True)
class Composition:
    """The composed loss of a set of releases (see the module docstring for the rule).

    Attributes
    ----------
    n_releases, n_charged : int
        Releases considered, and those that carry a loss.
    pure_epsilon : float
        ``Σ ε`` of the pure entries.
    zcdp_rho : float
        ``Σ ρ`` of the zCDP entries.
    rho : float or None
        ``ρ`` of everything pure or zCDP (pure converted as ``ε²/2``); None when no zCDP
        entry forces the conversion.
    approx_epsilon, approx_delta : float
        Basic composition of the approximate ``(ε, δ)`` entries.
    epsilon, delta : float
        The ``(ε, δ)``-DP statement that holds for the whole set and is compared with the
        budget.
    conversion_delta : float or None
        The δ used to state zCDP as ``(ε, δ)``.
    """

    n_releases: int
    n_charged: int
    pure_epsilon: float
    zcdp_rho: float
    rho: float | None
    approx_epsilon: float
    approx_delta: float
    epsilon: float
    delta: float
    conversion_delta: float | None

    @property
    def family(self) -> str:
        """``"none"``, ``"pure"``, ``"zcdp"`` (only zCDP) or ``"mixed"``."""
        kinds = {
            name
            for name, present in (
                (DPFamily.PURE, self.pure_epsilon > 0),
                (DPFamily.ZCDP, self.rho is not None),
                ("approx", self.approx_epsilon > 0 or self.approx_delta > 0),
            )
            if present
        }
        if not kinds:
            return "none"
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def describe(self) -> str:
        """One line: ``ε = 0.7 (pure ε-DP, Σε over 2 releases)``, or the (ε, δ) statement
        with the ρ it comes from."""
        if self.rho is None and self.approx_delta == 0:
            return f"ε = {self.epsilon:.6g} (pure ε-DP, Σε over {self.n_charged} releases)"
        text = f"(ε = {self.epsilon:.6g}, δ = {self.delta:.3g})"
        if self.rho is not None and self.conversion_delta is not None:
            all_in_rho = rho_to_epsilon(self.rho, self.conversion_delta)
            text += f" from zCDP ρ = {self.rho:.6g}"
            if self.pure_epsilon > 0:
                pure_apart = self.pure_epsilon + rho_to_epsilon(
                    self.zcdp_rho, self.conversion_delta
                )
                text += (
                    f" (pure ε as ε²/2; the smaller of ε(ρ) = {all_in_rho:.6g} and "
                    f"Σε_pure + ε(ρ_zCDP) = {pure_apart:.6g})"
                )
        if self.approx_delta > 0:
            text += (
                f"; approximate DP adds (ε = {self.approx_epsilon:.6g}, "
                f"δ = {self.approx_delta:.3g})"
            )
        return text + f" over {self.n_charged} releases"


def pure_to_rho(epsilon: float) -> float:
    """ρ of a pure ε-DP mechanism: ``ε²/2`` (Bun & Steinke 2016, Prop. 1.4).

    Examples
    --------
    >>> pure_to_rho(1.0)
    0.5
    """
    return epsilon * epsilon / 2.0


def pure_epsilon_of_rho(rho: float) -> float:
    """The ε at which a pure ε-DP mechanism is ρ-zCDP: ``√(2ρ)``, the inverse of
    :func:`pure_to_rho`.

    Examples
    --------
    >>> pure_epsilon_of_rho(pure_to_rho(0.7))
    0.7
    """
    return math.sqrt(2.0 * rho)


def noise_scale(family: str, sensitivity: float, loss: float) -> float:
    """Scale of the noise that spends exactly ``loss`` at ``sensitivity``.

    Parameters
    ----------
    family : {DPFamily.PURE, DPFamily.ZCDP}
        ``pure``: Laplace noise, ``loss`` is ε and ``sensitivity`` the L1 bound, ``b = Δ₁/ε``.
        ``zcdp``: Gaussian noise, ``loss`` is ρ and ``sensitivity`` the L2 bound,
        ``σ = Δ₂/√(2ρ)`` (ρ = Δ₂²/(2σ²)).
    sensitivity, loss : float
        Positive.

    Examples
    --------
    >>> noise_scale("pure", 10.0, 0.5), noise_scale("zcdp", 10.0, 0.5)
    (20.0, 10.0)
    """
    if family == DPFamily.PURE:
        return sensitivity / loss
    return sensitivity / math.sqrt(2.0 * loss)


def scale_for_loss(family: str, loss_at_unit_scale: float, loss: float) -> float:
    """The scale at which a mechanism whose loss at scale 1 is ``loss_at_unit_scale`` spends
    ``loss``: ε falls as 1/scale (pure), ρ as 1/scale² (zCDP).

    Examples
    --------
    >>> scale_for_loss("pure", 2.0, 0.5), scale_for_loss("zcdp", 2.0, 0.5)
    (4.0, 2.0)
    """
    if family == DPFamily.PURE:
        return loss_at_unit_scale / loss
    return math.sqrt(loss_at_unit_scale / loss)


def quantile_rank_halfwidth(
    family: str, loss: float, alpha: float, d_in: float, candidates: int, beta: float
) -> float:
    """Half-width, in people, of the rank interval of OpenDP's quantile over ``candidates``
    public candidates, at failure probability ``beta``.

    OpenDP scores a candidate ``c`` by ``K |#{x < c} - alpha (n - #{x = c})|`` (``K`` the
    integer scaling of ``alpha``; sensitivity ``K max(alpha, 1 - alpha)`` per person) and
    releases the lowest score after noise: exponential noise under ε-DP (``ExponentialMin``,
    ``ε = 2 Δ d_in / scale``), Gumbel noise under zCDP (``GumbelMin``: the exponential
    mechanism, ``ρ = ε² / 8`` for that same ε, Cesar & Rogers 2021; OpenDP maps
    ``sqrt(8 ρ) = 2 Δ d_in / scale``). Either way a candidate whose score exceeds the best by
    ``t`` wins with probability at most ``exp(-t / scale)``, so with probability ``1 - beta``
    (a union bound over the other candidates) the released candidate's rank is within
    ``2 d_in max(alpha, 1 - alpha) / ε * ln((candidates - 1) / beta)`` people of the exact
    quantile's, plus the people between two neighbouring candidates.

    Examples
    --------
    >>> round(quantile_rank_halfwidth("pure", 0.5, 0.5, 1, 101, 0.05), 2)
    15.2
    >>> quantile_rank_halfwidth("zcdp", 0.5**2 / 8, 0.5, 1, 101, 0.05) == (
    ...     quantile_rank_halfwidth("pure", 0.5, 0.5, 1, 101, 0.05))
    True
    """
    epsilon = loss if family == DPFamily.PURE else math.sqrt(8.0 * loss)
    spread = 2.0 * d_in * max(alpha, 1.0 - alpha) / epsilon
    return spread * math.log((candidates - 1) / beta)


def privacy_measure(family: str) -> Any:
    """OpenDP's output measure of ``family``: max-divergence (ε-DP) or zero-concentrated
    divergence (ρ-zCDP).

    Examples
    --------
    >>> str(privacy_measure("zcdp"))
    'ZeroConcentratedDivergence'
    """
    # OpenDP's own modules, not opendp.prelude (segments.privacy._opendp says why)
    from opendp.measures import max_divergence, zero_concentrated_divergence

    if family == DPFamily.PURE:
        return max_divergence()
    return zero_concentrated_divergence()


#: Above this scale the discrete Gaussian's accuracy is taken from the continuous one.
EXACT_GAUSSIAN_SCALE = 1000.0


def discrete_gaussian_accuracy(scale: float, alpha: float) -> float:
    """Half-width at ``1 - alpha`` of OpenDP's discrete Gaussian noise at ``scale``.

    OpenDP's exact ``discrete_gaussian_scale_to_accuracy`` sums the distribution term by
    term: its time grows with the scale (1.4 s at 10^6, the scale of a SEK cell under zCDP,
    so a zCDP policy's releases and accuracy plans took minutes). Above
    :data:`EXACT_GAUSSIAN_SCALE` the discrete distribution's tails are the continuous one's
    to far below one unit, so the continuous accuracy rounded up plus one is an upper bound
    that is at most one unit wider than the exact value (checked against OpenDP on scales
    500-30,000 and levels 50-99 % in tests/test_vectors.py): intervals stay conservative.

    Examples
    --------
    >>> import opendp.prelude as dp
    >>> discrete_gaussian_accuracy(1e6, 0.05) >= dp.discrete_gaussian_scale_to_accuracy(1e3, 0.05)
    True
    """
    from opendp.accuracy import discrete_gaussian_scale_to_accuracy, gaussian_scale_to_accuracy

    if scale < EXACT_GAUSSIAN_SCALE:
        return float(discrete_gaussian_scale_to_accuracy(scale, alpha))
    return float(math.ceil(gaussian_scale_to_accuracy(scale, alpha)) + 1)


@functools.lru_cache(maxsize=1024)
def noise_accuracy(distribution: str, scale: float, alpha: float) -> float:
    """OpenDP's accuracy (half-width at ``1 - alpha``) of one noise distribution.

    ``distribution`` is as OpenDP's summaries name it (``"Integer Laplace"``,
    ``"Float Gaussian"``, ...); a quantile's (``Exponential``, ``Gumbel``) has no data-free
    half-width and is NaN. Cached: a backfill asks for the same values every month. The
    discrete Gaussian's comes from :func:`discrete_gaussian_accuracy`.

    Examples
    --------
    >>> round(noise_accuracy("Float Laplace", 1.0, 0.05), 6)
    2.995732
    """
    import opendp.accuracy as dp

    integer = distribution.startswith("Integer")
    if integer and distribution.endswith("Gaussian"):
        # the exact discrete computation takes seconds at large scales: see the helper
        return discrete_gaussian_accuracy(scale, alpha)
    if distribution.endswith("Laplace"):
        convert = (
            dp.discrete_laplacian_scale_to_accuracy if integer else dp.laplacian_scale_to_accuracy
        )
    elif distribution.endswith("Gaussian"):
        convert = dp.gaussian_scale_to_accuracy
    elif distribution.startswith(("Exponential", "Gumbel")):
        # a quantile: its error depends on how the data spread over the candidates, so no
        # data-free half-width exists (the card says so)
        return math.nan
    else:  # pragma: no cover - OpenDP's polars plugin only adds these
        raise ValueError(f"unknown noise distribution {distribution!r}")
    return float(convert(scale, alpha))


def _z(alpha: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def expected_half_width(mechanism: str, bound: float, loss: float, alpha: float) -> float:
    """Half-width of a cell's (1 - alpha) interval: Laplace at ε = loss (pure) or Gaussian
    at ρ = loss, for a person norm ``bound`` (continuous approximation, for planning).

    Examples
    --------
    >>> round(expected_half_width("laplace", 100.0, 1.0, 0.05), 3)
    299.573
    """
    if mechanism == "laplace":
        return noise_scale(DPFamily.PURE, bound, loss) * math.log(1.0 / alpha)
    return noise_scale(DPFamily.ZCDP, bound, loss) * _z(alpha)


def rho_to_epsilon(rho: float, delta: float) -> float:
    """ε of ρ-zCDP at δ: ``ρ + 2·sqrt(ρ·ln(1/δ))`` (Bun & Steinke 2016, Prop. 1.3).

    Examples
    --------
    >>> round(rho_to_epsilon(0.5, 1e-6), 4)
    5.7565
    """
    _check_delta(delta)
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def epsilon_to_rho(epsilon: float, delta: float) -> float:
    """The largest ρ whose :func:`rho_to_epsilon` at δ is at most ``epsilon``.

    Solves ``ρ + 2·sqrt(ρ·L) = ε`` with ``L = ln(1/δ)``: ``ρ = (sqrt(L + ε) − sqrt(L))²``.

    Examples
    --------
    >>> rho = epsilon_to_rho(1.0, 1e-6)
    >>> round(rho_to_epsilon(rho, 1e-6), 12)
    1.0
    """
    _check_delta(delta)
    log_term = math.log(1.0 / delta)
    return (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2


def loss_parameter(family: str, epsilon: float, delta: float) -> float:
    """The loss a mechanism of ``family`` is given for an ε: ε itself under pure DP, the
    largest ρ within ε at δ (:func:`epsilon_to_rho`) under zCDP.

    Examples
    --------
    >>> loss_parameter("pure", 0.5, 1e-7)
    0.5
    """
    return float(epsilon) if family == DPFamily.PURE else epsilon_to_rho(epsilon, delta)


def stated_epsilon(family: str, loss: float, delta: float) -> float:
    """The ε a loss of ``family`` is stated as: itself under pure DP, ρ at δ
    (:func:`rho_to_epsilon`) under zCDP — the inverse of :func:`loss_parameter`.

    Examples
    --------
    >>> round(stated_epsilon("zcdp", loss_parameter("zcdp", 0.5, 1e-7), 1e-7), 12)
    0.5
    """
    return float(loss) if family == DPFamily.PURE else rho_to_epsilon(loss, delta)


def _check_delta(delta: float) -> None:
    if not (0.0 < delta < 1.0):
        raise ValueError(
            f"delta={delta!r} must lie in (0, 1) to state zCDP as (ε, δ); pass the "
            "policy's privacy.delta"
        )


def compose(losses: Iterable[PrivacyLoss], delta: float | None = None) -> Composition:
    """Compose privacy losses soundly (rule in the module docstring).

    Parameters
    ----------
    losses : iterable of PrivacyLoss
        One per release; releases with no loss count in ``n_releases`` only.
    delta : float, optional
        The policy's δ, needed only when a zCDP entry is present.

    Returns
    -------
    Composition

    Raises
    ------
    ValueError
        If a zCDP entry is present and ``delta`` is missing or not in (0, 1).

    Examples
    --------
    >>> compose([PrivacyLoss(epsilon=0.25), PrivacyLoss(epsilon=0.5)]).epsilon
    0.75
    >>> mixed = compose([PrivacyLoss(epsilon=0.1), PrivacyLoss(rho=0.005)], delta=1e-6)
    >>> round(mixed.rho, 6), round(rho_to_epsilon(mixed.rho, 1e-6), 4)  # all in ρ
    (0.01, 0.7534)
    >>> round(mixed.epsilon, 4)  # pure part apart is tighter here: 0.1 + ε(ρ = 0.005)
    0.6307
    """
    items = list(losses)
    pure = [loss.epsilon or 0.0 for loss in items if loss.family == DPFamily.PURE]
    zcdp = [loss.rho or 0.0 for loss in items if loss.family == DPFamily.ZCDP]
    approx = [loss for loss in items if loss.family == "approx"]
    pure_epsilon = math.fsum(pure)
    zcdp_rho = math.fsum(zcdp)
    approx_epsilon = math.fsum(loss.epsilon or 0.0 for loss in approx)
    approx_delta = math.fsum(loss.delta or 0.0 for loss in approx)
    rho: float | None = None
    conversion_delta: float | None = None
    if zcdp:
        if delta is None:
            raise ValueError(
                "delta is needed to compare zCDP spending with an ε budget; pass the "
                "policy's privacy.delta"
            )
        conversion_delta = delta
        rho = math.fsum([zcdp_rho, *(pure_to_rho(eps) for eps in pure)])
        all_in_rho = rho_to_epsilon(rho, delta)
        pure_apart = pure_epsilon + rho_to_epsilon(zcdp_rho, delta)
        dp_epsilon = min(all_in_rho, pure_apart)
        dp_delta = delta
    else:
        dp_epsilon, dp_delta = pure_epsilon, 0.0
    return Composition(
        n_releases=len(items),
        n_charged=sum(loss.family != "none" for loss in items),
        pure_epsilon=pure_epsilon,
        zcdp_rho=zcdp_rho,
        rho=rho,
        approx_epsilon=approx_epsilon,
        approx_delta=approx_delta,
        epsilon=dp_epsilon + approx_epsilon,
        delta=dp_delta + approx_delta,
        conversion_delta=conversion_delta,
    )


def period_start(end: dt.date, months: int) -> dt.date:
    """Exclusive start of the rolling period ``(start, end]`` of ``months`` months.

    Examples
    --------
    >>> period_start(dt.date(2026, 6, 30), 12)
    datetime.date(2025, 6, 30)
    """
    if months < 1:
        raise ValueError(f"a rolling period of {months} months must be at least 1 month")
    return add_months(end, -months)


def in_period(day: dt.date, end: dt.date, months: int) -> bool:
    """True if ``day`` lies in the rolling period ``(end − months, end]``."""
    return period_start(end, months) < day <= end


def max_period_total(
    dated: Sequence[tuple[dt.date, PrivacyLoss]],
    new_date: dt.date,
    months: int,
    delta: float | None = None,
) -> tuple[dt.date, Composition]:
    """The worst rolling period that contains ``new_date``, and its composed total.

    Every period ``(s − months, s]`` with ``s ≥ new_date`` that contains ``new_date`` is
    considered. A period's total only grows when a release enters it, which happens at a
    release's own date, so the candidates ``s`` are ``new_date`` and the dates after it.

    Parameters
    ----------
    dated : sequence of (date, PrivacyLoss)
        Releases to count, including the new one.
    new_date : date
        The date of the new release.
    months : int
        The period length.
    delta : float, optional
        The policy's δ (see :func:`compose`).

    Returns
    -------
    (date, Composition)
        The end of the worst period and its total.
    """
    # Only releases within `months` of new_date can share a period with it.
    horizon = add_months(new_date, months)
    near = [(day, loss) for day, loss in dated if period_start(new_date, months) < day < horizon]
    candidates = sorted(
        {new_date} | {day for day, _ in near if day > new_date and in_period(new_date, day, months)}
    )
    worst: tuple[dt.date, Composition] | None = None
    for end in candidates:
        total = compose((loss for day, loss in near if in_period(day, end, months)), delta)
        if worst is None or total.epsilon > worst[1].epsilon:
            worst = (end, total)
    assert worst is not None  # new_date is always a candidate
    return worst


def peak_period_total(
    dated: Sequence[tuple[dt.date, PrivacyLoss]],
    months: int,
    until: dt.date,
    delta: float | None = None,
) -> tuple[dt.date | None, Composition]:
    """The largest total of any rolling period ending on a release date up to ``until``.

    A period's total only grows when a release enters it, so the periods ending on release
    dates include the worst one. Returns ``(None, empty total)`` without releases.
    """
    ordered = sorted((item for item in dated if item[0] <= until), key=lambda item: item[0])
    days = [day for day, _ in ordered]
    peak_end: dt.date | None = None
    peak = compose([], delta)
    for end in sorted(set(days)):
        low = bisect.bisect_right(days, period_start(end, months))
        high = bisect.bisect_right(days, end)
        total = compose((loss for _, loss in ordered[low:high]), delta)
        if peak_end is None or total.epsilon > peak.epsilon:
            peak_end, peak = end, total
    return peak_end, peak
