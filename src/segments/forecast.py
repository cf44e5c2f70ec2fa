"""Purchasing forecasts built only from the differentially private release archive (AO-4).

The purchasing team plans from ``W/releases/archive/monthly_category.parquet``: one DP release
of units and SEK per product category and month, each month released once (see
docs/architecture.md, "Release archive"). Everything here is post-processing of those
releases, so it keeps their guarantee and spends no budget. :func:`load_archive` reads that
one file and nothing else: no prepared or raw data ever reaches a forecast.

Method
------
*Model.* Each category's series (and the total, the sum of the released categories) is
fitted on the released values: ``"ets"`` chooses between ETS(A,N,A) and ETS(A,Ad,A) by AICc,
``"sarima"`` is the airline model SARIMA(0,1,1)(0,1,1)12, ``"seasonal-naive"`` repeats the
value of the same month a year earlier. Model choice and tuning see only the released series.

*Noise-aware intervals.* A released value is ``y_t = x_t + e_t``: the true total plus DP noise
of known variance ``v_t`` (Laplace scale ``b``: ``2 b**2``; Gaussian ``sigma``: ``sigma**2``).
With the fitted parameters held fixed, every model here is a linear filter of the series, so
the noise's effect is exact linear algebra rather than guesswork. With ``A`` the response of
the one-step residuals and ``W`` the response of the forecasts to a unit change of each
released month (found by impulses through the fitted filter):

- each one-step residual's square contains the noise ``sum_s A[t, s]**2 v_s``; taking the
  noise off the residuals' sum of squares and dividing what is left by the residual degrees
  of freedom ``dof`` leaves the variance of the true demand's own innovations,
  ``s2_x = max((sum_t r_t**2 - sum_t sum_s A[t, s]**2 v_s) / dof, 0)``. (The impulses run
  through the whole fit, its start-up states included, so the noise term needs no degrees of
  freedom correction of its own; subtracting only its mean from ``sum_t r_t**2 / dof``, as an
  earlier version did, left ``n / dof - 1`` times a month's noise in ``s2_x``: the noise
  counted twice: 90 % intervals covered 0.95-0.97 of the truth at a noise sd about twice the
  demand's own one-step spread, 0.88-0.90 now; tests/test_forecast.py);
- the forecast of the true future total ``x_{T+h}`` then errs by the model's own error
  (``s2_x`` times the model's h-step multiplier ``c_h``) plus the noise carried into the
  forecast from the history, ``sum_s W[h, s]**2 v_s``; the two are independent.

So ``var_h = s2_x * c_h + sum_s W[h, s]**2 v_s``. Months released with more noise widen the
intervals through the second term, and a future month's own release noise is not added, as
the forecast targets true demand, not a future release. The method is exact for a linear
filter with independent noise; it does not add the uncertainty of the estimated parameters
(the backtest in benchmarks/backtest_forecast.py measures the coverage that results).

*The demand's variance is an estimate.* Where the release noise dominates, ``s2_x`` is a
small difference of two large sums and often comes out 0, and the plug-in interval (Student's
t around ``var_h``) then holds only the propagated noise. ``interval="posterior"`` carries
that estimate's uncertainty instead: the residuals' sum of squares given ``s2_x`` is taken as a
scaled chi-square with its exact mean and variance (the noise's part of both from the impulse
responses and the noise's published variances and kurtosis: post-processing, no privacy
cost), the prior is ``1 / (s2_x + N / dof)``, and the interval is the quantile of the normal
forecast error averaged over the posterior of ``s2_x`` (:func:`_signal_posterior`). Without
noise it is Student's t exactly. Measured (benchmarks/sim_forecast_intervals.py,
backtest_forecast.py ``--origins``), it is conservative where the noise dominates (pooled
0.93-0.97 at 90 %) and does not narrow the spread of one dataset's coverage, which comes from
the categories sharing the total's error; so it is an option, not the default. A
calibration check on series simulated from ETS(A,Ad,A) itself (benchmarks/
sim_signal_posterior.py) found the posterior of ``s2_x`` above the true value at every noise
level, without noise too (mean PIT 0.09-0.21 where 0.5 is calibrated): the refitted model's
residuals overstate the demand's innovation variance, so the posterior interval covers
0.95 at 90 % where the noise is 1.5-3x the demand's spread, the plug-in 0.88-0.90.

*Months released with more noise.* Each month's private bound is drawn anew, so a month can
carry several times the usual noise. ETS weighs every month alike, so the ETS models fit in
two passes: each month's one-step error is cut to ``s2 / (s2 + extra)`` of itself, ``extra``
being its noise variance above the median month's (:func:`_downweight_noisy_months`). This is
still a linear filter, so the noise propagation above stays exact.

*Top-down from the total (``"ets-topdown"``, the default for two seasons or more).* At the
policies' real budgets a category's monthly release carries noise of 10-25 % of its value,
and a per-category ETS fits that noise as seasonality (issue 14: +6.5 MAPE points over the
same model on the true totals). The sum of the categories carries the noise of all of them
but the demand of all of them too, so its relative noise is about a third. So the total is
forecast by ETS(A,Ad,A) (a damped trend, which nests no trend; AICc on a noisy total chose
no trend on one backtest dataset and cost 3 points there), and each category by the total's
forecast times its share for that month of the year. The share is the category's overall
share (thirty months of noise averaged out) plus its deviation in that month of the year,
shrunk by the deviation's released noise (empirical Bayes: the prior variance of the
deviations in a month of the year is estimated across categories, less their known noise,
so a July that differs for every category keeps its deviations and a quiet month is pulled
to the overall share). A category's forecast variance is ``share**2 * var_total +
total**2 * var_share``, with ``var_share`` the shrunk deviation's posterior variance, the
overall share's estimation variance and the share's own month-to-month variance (released
residual variance minus its noise). The
categories add up to the total by construction and are never negative. On true totals
(no noise) the deviations are not shrunk and the method is the total's ETS times the
month-of-year shares.

*The clip's bias, corrected from a charged estimate.* Each person's monthly vector is
clipped at a private bound before the noise, so every released month is biased low (3-4 %
on the synthetic data; no model of the released series can see it). Each monthly release
also measures, charged with it, the mass the clip removed (``<measure>_clip_excess``, with
its noise scale; segments.privacy.vectors, "The clip's own bias"). The forecast pools it
over the months it reads and scales every point forecast by ``1 + r``; the interval adds
the pooled estimate's own noise, ``var = (1 + r)**2 var_h + point**2 var_r`` (a sum of many
independent noises: its quantile is the normal's). Months released before the excess was
measured carry none: the pooled estimate uses the months that have it, and an archive with
none is forecast uncorrected (``<measure>_clip_correction`` is 0 and the card says so). Mass
above the excess's cap (twice the bound) is not estimated (0.2-0.3 % of a month on the
synthetic data).

*Each month's excess weighed by its published noise.* A month's excess is ``r x_t`` plus
noise of variance ``v_t``, ``x_t`` the month's released total; ``v_t`` follows the month's
private bound (the excess's sensitivity is the bound), which is drawn anew each month by a
noisy private quantile: under Offix's smaller ε, one month of a 50,000-customer backtest
drew a bound 9x the median month's, and that one month's excess noise was 3/4 of the
pooled estimate's variance (standard error 6.4 % of the level against a clipped share of
~4 %). So the months are pooled with inverse-variance weights, the least-squares estimate
of a common share under known unequal noise (Gauss-Markov):
``r = max(sum_t x_t excess_t / v_t / sum_t x_t**2 / v_t, 0)``, ``var_r = 1 / sum_t x_t**2 /
v_t``; with equal noise and equal months it is the plain ratio ``sum_t excess_t / sum_t
x_t`` (``pooling="equal"``, the earlier estimator, kept for the backtest's comparison). A
month whose noise grows gets a weight that falls towards 0, so one high-bound month no
longer sets the level. Why not shrink ``r`` towards 0 instead (a posterior-mean or James-
Stein weight from its own standard error, as one evaluation suggested after a corrected
forecast did worse than an uncorrected one on one dataset): with a single estimate the
weight must itself be estimated from ``r``, and for a true share 1.25-6 standard errors
above 0 (measured: ~1.4 for Offix, ~2 for AllOffice at 50,000 customers) that shrunk
correction is no better than the full one (benchmarks/sim_clip_shrinkage.py, root mean
squared error in standard errors: positive-part James-Stein 1.02-1.20, the plug-in weight
``r**2 / (r**2 + var_r)`` 0.92-1.12, the full correction 0.91-1.00; shrinking helps only
below about one standard error). Where the uncorrected forecast did better, the model on
the true totals over-forecast the held-out months: by +1.4 to +2.5 % on each of four 50,000-
customer synthetic datasets checked (July by 12-18 %), a mismatch between this synthetic
data and ETS, which a level biased low partly offsets; not a reason to leave the release's
known bias in.

*Consistency.* For every month ahead the base forecasts of the categories and of the total
are reconciled by weighted least squares with the forecast variances as weights (MinT with a
diagonal covariance): the gap between the total's forecast and the sum of the categories is
shared out in proportion to each forecast's variance, so noisy series move most. Categories
forced below zero are fixed at zero and the rest re-solved (the bound-constrained optimum),
and the reconciled total is the sum of the categories, so they add up exactly. Each interval
keeps its base forecast's variance around the reconciled point (we do not claim MinT's
variance reduction, which assumes independent errors across categories), and lower bounds are
clipped at zero.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from segments.exceptions import SchemaError, WorkspaceError
from segments.workspace import ARCHIVE_TABLE, CARD, Workspace

__all__ = [
    "ARCHIVE_COLUMNS",
    "FORECAST_MODELS",
    "TOTAL_CATEGORY",
    "SeriesForecast",
    "backtest_table",
    "choose_model",
    "clip_correction",
    "forecast_archive",
    "forecast_panel",
    "forecast_series",
    "load_archive",
    "mape",
    "noise_variance",
    "reconcile",
    "validate_archive",
]

#: Columns of the release archive (docs/architecture.md), plus ``epsilon`` or ``rho``.
ARCHIVE_COLUMNS = (
    "month",
    "category",
    "units",
    "sek",
    "units_scale",
    "sek_scale",
    "mechanism",
    "release_id",
)
_LOSS_COLUMNS = ("epsilon", "rho")
_MECHANISMS = ("laplace", "gaussian")
#: The noise-aware hierarchical model (see "Top-down from the total" above).
TOPDOWN_MODEL = "ets-topdown"
FORECAST_MODELS = ("ets", TOPDOWN_MODEL, "sarima", "seasonal-naive", "ses")
#: ``auto`` picks the richest model the released history supports (:func:`choose_model`).
AUTO_MODEL = "auto"
#: Label of the all-category rows in a forecast table.
TOTAL_CATEGORY = "total"
_MEASURES = ("units", "sek")
_SEASON = 12
_MAX_HORIZON = 12
#: Released months a model needs: two full seasons for the seasonal models, one season plus
#: one month (a first residual) for seasonal-naive.
_MIN_MONTHS = {
    "ets": 2 * _SEASON,
    TOPDOWN_MODEL: 2 * _SEASON,
    "sarima": 2 * _SEASON + 1,
    "seasonal-naive": _SEASON + 1,
    # non-seasonal simple exponential smoothing: a level, a smoothing weight, one residual
    "ses": 3,
}


def choose_model(n_months: int) -> tuple[str, str]:
    """The richest model ``n_months`` released months support, and why (for the card).

    ETS with additive seasonality needs two seasons (24 months); seasonal-naive one season
    plus a month (13); under that no seasonal pattern can be estimated and the forecast is
    non-seasonal simple exponential smoothing, which says so.

    Examples
    --------
    >>> choose_model(30)[0], choose_model(18)[0], choose_model(8)[0]
    ('ets-topdown', 'seasonal-naive', 'ses')
    """
    if n_months >= _MIN_MONTHS[TOPDOWN_MODEL]:
        return TOPDOWN_MODEL, (
            f"{n_months} released months: two seasons or more, seasonal ETS of the total "
            "and each category's noise-shrunk share of it per month of the year (a "
            "per-category ETS fits the release noise as seasonality)"
        )
    if n_months >= _MIN_MONTHS["seasonal-naive"]:
        return "seasonal-naive", (
            f"{n_months} released months: fewer than the {_MIN_MONTHS['ets']} seasonal ETS "
            "needs; seasonal-naive (last year's month) is the seasonal model this history "
            "supports"
        )
    if n_months >= _MIN_MONTHS["ses"]:
        return "ses", (
            f"{n_months} released months: fewer than the {_MIN_MONTHS['seasonal-naive']} any "
            "seasonal model needs; NON-SEASONAL forecast (simple exponential smoothing): it "
            "cannot foresee a seasonal peak"
        )
    raise ValueError(
        f"the archive has {n_months} released month(s); every model needs at least "
        f"{_MIN_MONTHS['ses']}; fix: release each month with `segments release --spec "
        "monthly_category --month YYYY-MM-01` as it closes"
    )


#: how the archive grows: one release per closed month (backfill rewinds synthetic data only)
_BACKFILL = (
    "`segments release --workspace {root} --spec monthly_category --month YYYY-MM-01` per "
    "closed month (`segments release backfill` for synthetic data)"
)


# --- the archive: the only input -----------------------------------------------------------
def load_archive(workspace: Workspace) -> pd.DataFrame:
    """Read and validate the release archive, the only data a forecast may read.

    Parameters
    ----------
    workspace : Workspace
        The workspace whose ``releases/archive/monthly_category.parquet`` is read.

    Returns
    -------
    pandas.DataFrame
        The validated archive, sorted by category and month (see :func:`validate_archive`).

    Raises
    ------
    WorkspaceError
        If the archive is missing or empty; the message names the command that builds it.
    SchemaError
        If the archive breaks its contract.
    """
    path = workspace.archive
    fix = _BACKFILL.format(root=workspace.root)
    frame = pd.read_parquet(path) if path.exists() else None
    archived = set() if frame is None else set(frame.get("release_id", pd.Series()).astype(str))
    lost = _published_months_missing(workspace, archived)
    if lost:  # a release killed before its archive update: rebuilt from the ledger's tables
        from segments.privacy.archive import rebuild_archive_from_ledgers

        if rebuild_archive_from_ledgers(workspace):
            frame = pd.read_parquet(path)
            lost = _published_months_missing(workspace, set(frame["release_id"].astype(str)))
    if lost:
        raise WorkspaceError(
            f"release archive {path} lacks {len(lost)} published month(s) ({', '.join(lost)}; "
            "a release was killed before the archive was updated); nothing was forecast. "
            f"Fix: run `segments ledger --cards {workspace.releases}`, which rebuilds the "
            "archive from the published tables the ledger recorded, then forecast again"
        )
    if frame is None:
        raise WorkspaceError(
            f"release archive {path} does not exist: forecasts read only the DP release "
            f"archive; build it with {fix} first"
        )
    if frame.empty:
        raise WorkspaceError(
            f"release archive {path} is empty (0 released months); release months into it "
            f"with {fix} first"
        )
    return validate_archive(frame)


def _published_months_missing(workspace: Workspace, archived: set[str]) -> list[str]:
    """Monthly releases published into ``W/releases`` (a card with its month next to the
    monthly table) whose rows are not in the archive, as ``YYYY-MM (release id)``."""
    name = ARCHIVE_TABLE  # a monthly release's table has the archive's name
    lost = []
    for card_path in sorted(workspace.releases.glob(f"*/{CARD}")):
        folder = card_path.parent
        if folder.name in archived or not (folder / name).is_file():
            continue
        try:
            month = json.loads(card_path.read_text(encoding="utf-8")).get("month")
        except (OSError, ValueError):
            continue  # not a readable card: `segments ledger --cards` reports it
        if month:
            lost.append(f"{str(month)[:7]} ({folder.name})")
    return lost


def validate_archive(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a frame against the release archive contract and normalise it.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows of ``monthly_category.parquet``.

    Returns
    -------
    pandas.DataFrame
        A copy with ``month`` as first-of-month timestamps, sorted by category and month.

    Raises
    ------
    SchemaError
        If a column is missing, a mechanism is unknown, a value or noise scale is not a
        positive finite number (a value without a noise scale was not released through the
        DP engine), a month is released twice, or the months have gaps or differ between
        categories.
    WorkspaceError
        If the frame has no rows.
    """
    missing = [c for c in ARCHIVE_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"release archive: columns {missing} missing (the contract in docs/architecture.md "
            f"'Release archive' needs {list(ARCHIVE_COLUMNS)} and epsilon or rho); rebuild it "
            "with `segments release backfill`"
        )
    if not any(c in frame.columns for c in _LOSS_COLUMNS):
        raise SchemaError(
            "release archive: neither column 'epsilon' nor 'rho' is present; every released "
            "month must state its privacy loss; rebuild it with `segments release backfill`"
        )
    if frame.empty:
        raise WorkspaceError(
            "release archive has no rows; release months with `segments release backfill`"
        )
    out = frame.copy()
    out["month"] = pd.to_datetime(out["month"])
    not_first = out.loc[out["month"].dt.day != 1, "month"]
    if len(not_first):
        raise SchemaError(
            f"release archive: column 'month' must hold the first day of each month; "
            f"{len(not_first)} rows do not (first: {not_first.iloc[0].date()})"
        )
    bad_mech = sorted(set(out["mechanism"]) - set(_MECHANISMS))
    if bad_mech:
        raise SchemaError(
            f"release archive: column 'mechanism' has {bad_mech}; the known mechanisms are "
            f"{list(_MECHANISMS)}"
        )
    for column in ("units", "sek"):
        _require_finite(out, column, positive=False)
    for column in ("units_scale", "sek_scale"):
        _require_finite(out, column, positive=True)
    for measure in _MEASURES:  # the charged clip excess: optional, null before it existed
        column = f"{measure}_clip_excess"
        if column not in out.columns:
            continue
        if f"{column}_scale" not in out.columns:
            raise SchemaError(
                f"release archive: column {column!r} comes without its noise scale "
                f"'{column}_scale'; rebuild the archive with `segments ledger --cards`"
            )
        measured = out[out[column].notna()]
        _require_finite(measured, column, positive=False)
        _require_finite(measured, f"{column}_scale", positive=True)
    dup = out.duplicated(["month", "category"])
    if dup.any():
        first = out.loc[dup].iloc[0]
        raise SchemaError(
            f"release archive: month {first['month'].date()} of category {first['category']!r} "
            "appears more than once; each month is released once and never re-released"
        )
    _require_common_contiguous_months(out)
    return out.sort_values(["category", "month"], kind="stable").reset_index(drop=True)


def _require_finite(frame: pd.DataFrame, column: str, *, positive: bool) -> None:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | ((values <= 0) if positive else False)
    if bad.any():
        rule = "a positive finite noise scale" if positive else "a finite released value"
        row = frame.loc[bad].iloc[0]
        raise SchemaError(
            f"release archive: column {column!r} must hold {rule}; {int(bad.sum())} rows do "
            f"not (first: month {row['month'].date()}, category {row['category']!r}, value "
            f"{row[column]!r}); only DP releases from `segments release backfill` belong here"
        )


def _require_common_contiguous_months(frame: pd.DataFrame) -> None:
    first, last = frame["month"].min(), frame["month"].max()
    expected = pd.date_range(first, last, freq="MS")
    for category, months in frame.groupby("category", sort=True)["month"]:
        gaps = expected.difference(pd.DatetimeIndex(months))
        if len(gaps):
            raise SchemaError(
                f"release archive: category {category!r} has no release for "
                f"{len(gaps)} of the months {first.date()}..{last.date()} (first missing: "
                f"{gaps[0].date()}); a forecast needs every month of every category; release "
                "the missing months with `segments release backfill`"
            )


def noise_variance(scale: np.ndarray | float, mechanism: np.ndarray | str) -> np.ndarray:
    """Variance of DP noise from its scale: Laplace ``b`` gives ``2 b**2``, Gaussian ``sigma``
    gives ``sigma**2``.

    Parameters
    ----------
    scale : array-like of float
        Noise scale of each released value (``units_scale`` or ``sek_scale``).
    mechanism : array-like of str or str
        ``"laplace"`` or ``"gaussian"``, per value or for all.

    Returns
    -------
    numpy.ndarray
        The noise variance of each value.

    Raises
    ------
    SchemaError
        For an unknown mechanism.

    Examples
    --------
    >>> noise_variance([1.0, 2.0], ["laplace", "gaussian"]).tolist()
    [2.0, 4.0]
    """
    scale_arr = np.asarray(scale, dtype=float)
    mech = np.broadcast_to(np.asarray(mechanism, dtype=object), scale_arr.shape)
    unknown = sorted({str(m) for m in mech.ravel()} - set(_MECHANISMS))
    if unknown:
        raise SchemaError(
            f"mechanism {unknown} is unknown; noise variance is defined for {list(_MECHANISMS)}"
        )
    return np.where(mech == "laplace", 2.0 * scale_arr**2, scale_arr**2)


# --- one series ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesForecast:
    """The forecast of one series before reconciliation.

    Attributes
    ----------
    point : numpy.ndarray
        Point forecast for 1..horizon months ahead.
    variance : numpy.ndarray
        Forecast-error variance for the true value: the model's own error plus the release
        noise carried into the forecast.
    model : str
        The fitted model, e.g. ``"ETS(A,Ad,A)"``.
    signal_variance : float
        One-step innovation variance of the true series (released residual variance minus
        its known noise part).
    noise_variance : numpy.ndarray
        The part of ``variance`` due to release noise in the history.
    dof : int
        Residual degrees of freedom behind ``signal_variance`` (months of residuals minus
        estimated parameters, initial states included).
    multiplier : numpy.ndarray
        The model's h-step variance over its one-step variance, ``c_h``.
    signal_draws : numpy.ndarray
        Equal-probability points of the posterior of the demand's own one-step variance
        given the residuals and the known noise (module docstring, "The demand's variance is
        an estimate"); :meth:`half_width` integrates the forecast error over them.
    """

    point: np.ndarray
    variance: np.ndarray
    model: str
    signal_variance: float
    noise_variance: np.ndarray
    dof: int
    multiplier: np.ndarray
    signal_draws: np.ndarray

    def half_width(
        self,
        level: float,
        scale: np.ndarray | float = 1.0,
        extra_variance: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """Half-width of the central ``level`` interval of ``scale`` times this forecast's
        error plus an independent normal error of variance ``extra_variance`` (per month
        ahead): the quantile of the normal mixture over :attr:`signal_draws`."""
        scale2 = np.broadcast_to(np.asarray(scale, dtype=float) ** 2, self.point.shape)
        slope = scale2 * self.multiplier
        base = scale2 * self.noise_variance + np.asarray(extra_variance, dtype=float)
        return _mixture_half_width(
            level, slope, np.broadcast_to(base, slope.shape), self.signal_draws
        )


@dataclass(frozen=True)
class _Fit:
    name: str
    fitted: np.ndarray  # one-step predictions (nan where the model has none)
    forecast: np.ndarray
    multiplier: np.ndarray  # h-step variance / one-step variance
    n_params: int
    first_residual: int
    # the fitted filter with its parameters fixed, applied to each column of a matrix:
    # (n, k) series -> (n, k) one-step predictions and (horizon, k) forecasts
    refilter: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _ets_filter(
    series: np.ndarray, params: dict[str, float], trend: str | None, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """The additive ETS recursions of statsmodels' ETSModel, vectorised over columns.

    statsmodels re-creates a model per series (tens of ms each); the impulse responses need
    one run per released month, so the same recursions run here on all columns at once.
    """
    from statsmodels.tsa.exponential_smoothing.initialization import (
        _initialization_heuristic,
    )

    n, k = series.shape
    level, slope = np.empty(k), np.zeros(k)
    season = np.empty((_SEASON, k))  # row 0 is the state of the same month a year back
    for j in range(k):
        l0, b0, s0 = _initialization_heuristic(
            series[:, j], trend=trend, seasonal="add", seasonal_periods=_SEASON
        )
        level[j], season[:, j] = l0, s0
        if b0 is not None:
            slope[j] = b0
    alpha, gamma = params["smoothing_level"], params["smoothing_seasonal"]
    beta, phi = params.get("smoothing_trend", 0.0), params.get("damping_trend", 1.0)
    fitted = np.empty((n, k))
    for t in range(n):
        fitted[t] = level + phi * slope + season[0]
        err = series[t] - fitted[t]
        level, slope = level + phi * slope + alpha * err, phi * slope + beta * err
        season = np.vstack([season[1:], season[0] + gamma * err])
    damp = np.cumsum(phi ** np.arange(1, horizon + 1))
    forecast = level + damp[:, None] * slope + season[np.arange(horizon) % _SEASON]
    return fitted, forecast


def _fit_ets(y: np.ndarray, horizon: int, damped_only: bool = False) -> _Fit:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    fits = []
    candidates = ((None, "ETS(A,N,A)"), ("add", "ETS(A,Ad,A)"))
    for trend, name in candidates[1:] if damped_only else candidates:
        model = ETSModel(
            pd.Series(y),  # a pandas series: statsmodels' ETS prediction needs an index
            error="add",
            trend=trend,
            damped_trend=trend is not None,
            seasonal="add",
            seasonal_periods=_SEASON,
            initialization_method="heuristic",
        )
        res = model.fit(disp=False)
        if np.isfinite(res.aicc):
            fits.append((res.aicc, name, trend, model, res))
    if not fits:
        raise ValueError("ETS: no candidate model could be fitted to the released series")
    _, name, trend, model, res = min(fits, key=lambda item: item[0])
    var = np.asarray(res.get_prediction(start=len(y), end=len(y) + horizon - 1).var_pred_mean)
    params = dict(zip(model.param_names, np.asarray(res.params), strict=True))
    fitted, forecast = np.asarray(res.fittedvalues), np.asarray(res.forecast(horizon))
    own_fitted, own_forecast = _ets_filter(y[:, None], params, trend, horizon)
    tol = 1e-6 * max(1.0, float(np.max(np.abs(y))))
    if not (
        np.allclose(own_fitted[:, 0], fitted, atol=tol)
        and np.allclose(own_forecast[:, 0], forecast, atol=tol)
    ):
        raise RuntimeError(  # pragma: no cover - guards against a statsmodels change
            "the vectorised ETS filter no longer matches statsmodels' ETSModel; the noise "
            "propagation would be wrong, so the forecast stops here"
        )
    # the heuristic start estimates states from the data too: a level, a slope with a trend,
    # and 11 free seasonal states (they sum to zero); a 30-month history has ~15 dof left
    initial_states = 1 + (trend is not None) + (_SEASON - 1)
    return _Fit(
        name=name,
        fitted=fitted,
        forecast=forecast,
        multiplier=var / var[0],
        n_params=len(params) + initial_states,
        first_residual=0,
        refilter=lambda series: _ets_filter(series, params, trend, horizon),
    )


def _fit_sarima(y: np.ndarray, horizon: int) -> _Fit:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    res = SARIMAX(y, order=(0, 1, 1), seasonal_order=(0, 1, 1, _SEASON)).fit(disp=False)
    var = np.asarray(res.get_forecast(horizon).var_pred_mean)

    def refilter(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        runs = [res.apply(series[:, j], refit=False) for j in range(series.shape[1])]
        return (
            np.column_stack([np.asarray(r.fittedvalues) for r in runs]),
            np.column_stack([np.asarray(r.forecast(horizon)) for r in runs]),
        )

    return _Fit(
        name="SARIMA(0,1,1)(0,1,1)12",
        fitted=np.asarray(res.fittedvalues),
        forecast=np.asarray(res.forecast(horizon)),
        multiplier=var / var[0],
        n_params=2,
        # the first 1 + 12 one-step predictions come from the diffuse start
        first_residual=1 + _SEASON,
        refilter=refilter,
    )


def _seasonal_naive(series: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    fitted = np.full(series.shape, np.nan)
    fitted[_SEASON:] = series[:-_SEASON]
    start = len(series) - _SEASON
    return fitted, series[start : start + horizon].copy()


def _fit_seasonal_naive(y: np.ndarray, horizon: int) -> _Fit:
    fitted, forecast = _seasonal_naive(y, horizon)
    return _Fit(
        name="seasonal-naive",
        fitted=fitted,
        forecast=forecast,
        multiplier=np.ones(horizon),  # one season ahead at most: every step is one-step
        n_params=0,
        first_residual=_SEASON,
        refilter=lambda series: _seasonal_naive(series, horizon),
    )


def _ses_filter(series: np.ndarray, horizon: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Simple exponential smoothing with fixed ``alpha`` on each column (linear in the
    series, as the noise propagation needs); the level starts at the first value."""
    y = series if series.ndim == 2 else series[:, None]
    fitted = np.full(y.shape, np.nan)
    level = y[0].astype(float).copy()
    for t in range(1, len(y)):
        fitted[t] = level
        level = alpha * y[t] + (1.0 - alpha) * level
    forecast = np.repeat(level[None, :], horizon, axis=0)
    if series.ndim == 1:
        return fitted[:, 0], forecast[:, 0]
    return fitted, forecast


def _fit_ses(y: np.ndarray, horizon: int) -> _Fit:
    # the smoothing weight with the least squared one-step error on a fixed grid: no
    # optimiser, so the same series always gives the same forecast
    grid = np.linspace(0.05, 1.0, 20)
    sse = [np.nansum((y - _ses_filter(y, horizon, a)[0]) ** 2) for a in grid]
    alpha = float(grid[int(np.argmin(sse))])
    fitted, forecast = _ses_filter(y, horizon, alpha)
    return _Fit(
        name="ses",
        fitted=fitted,
        forecast=forecast,
        multiplier=1.0 + alpha**2 * np.arange(horizon),  # h-step variance of ETS(A,N,N)
        n_params=1,  # alpha (the initial level is the first value)
        first_residual=1,
        refilter=lambda series: _ses_filter(series, horizon, alpha),
    )


def _downweight_noisy_months(
    fitter: Callable[[np.ndarray, int], _Fit], y: np.ndarray, noise_var: np.ndarray, horizon: int
) -> _Fit:
    """Fit ``fitter`` on the series with each month's noise above the typical month's taken
    out of its one-step error, the way a Kalman filter weighs a noisier observation.

    ETS fits one error variance ``s2`` to every month; its smoothing weights assume that. A
    month released with more noise than the typical month (its private bound drawn high: one
    month at 7x the usual noise scale moved a backtest's level by +24 % and its MAPE from 8
    to 16 %) should move the states by ``s2 / (s2 + extra)`` of its error only, ``extra`` its
    noise variance above the median month's. So a first fit gives the one-step predictions,
    each month becomes ``w y + (1 - w) prediction`` with ``w = s2 / (s2 + extra)``, and the
    model is refitted on that. The weights depend on the published noise variances only, so
    with its parameters fixed the whole is still a linear filter of the series, and the noise
    propagation (:func:`_noise_response`) stays exact. A series without extra noise (true
    totals, or every month at the same scale) is fitted as before.
    """
    first = fitter(y, horizon)
    extra = np.maximum(noise_var - float(np.median(noise_var)), 0.0)
    predicted = np.isfinite(first.fitted)
    if not (extra[predicted] > 0).any():
        return first
    s2 = float(np.mean((y - first.fitted)[predicted] ** 2))
    weight = np.where(predicted, s2 / np.maximum(s2 + extra, 1e-300), 1.0)

    def adjust(series: np.ndarray, fitted: np.ndarray) -> np.ndarray:
        w = weight if series.ndim == 1 else weight[:, None]
        return w * series + (1.0 - w) * np.nan_to_num(fitted)

    second = fitter(adjust(y, first.fitted), horizon)

    def refilter(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return second.refilter(adjust(series, first.refilter(series)[0]))

    return _Fit(
        name=second.name,
        fitted=second.fitted,
        forecast=second.forecast,
        multiplier=second.multiplier,
        n_params=second.n_params,
        first_residual=second.first_residual,
        refilter=refilter,
    )


#: models whose fit down-weights months released with more noise than the typical month
_NOISE_WEIGHTED = ("ets", "ets-topdown")

_FITTERS: dict[str, Callable[[np.ndarray, int], _Fit]] = {
    "ets": _fit_ets,
    # one series under the top-down model: the total's model
    TOPDOWN_MODEL: lambda y, horizon: _fit_ets(y, horizon, damped_only=True),
    "sarima": _fit_sarima,
    "seasonal-naive": _fit_seasonal_naive,
    "ses": _fit_ses,
}


def _check_horizon_and_model(horizon: int, model: str, n_months: int) -> None:
    if model not in FORECAST_MODELS:
        raise ValueError(f"model={model!r} is unknown; choose one of {list(FORECAST_MODELS)}")
    if not 1 <= int(horizon) <= _MAX_HORIZON:
        raise ValueError(
            f"horizon={horizon} is outside 1..{_MAX_HORIZON} months; purchasing plans 3-6 "
            "months ahead"
        )
    need = _MIN_MONTHS[model]
    if n_months < need:
        fix = "release more months as they close"
        if n_months >= _MIN_MONTHS["ses"]:
            fix = (
                f"use model={choose_model(n_months)[0]!r} (or 'auto'), which it supports, or {fix}"
            )
        raise ValueError(
            f"model={model!r} needs at least {need} released months per category; the "
            f"series has {n_months}; fix: {fix}"
        )


def _noise_response(
    fit: _Fit, y: np.ndarray, noise_var: np.ndarray, kurtosis: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact noise variance in each one-step residual and in each forecast step, and the
    variance of the noise's part of the residuals' sum of squares.

    The fitted filter is linear in the series, so pushing a unit impulse at month ``s``
    through it gives column ``s`` of the residual response ``A`` and forecast response ``W``;
    the noise variances are then ``A**2 @ v`` and ``W**2 @ v``. The noise's sum of squares
    ``sum_t (A e)_t**2`` over the residual months the fit uses has variance ``2 tr((A V
    A')**2)`` for normal noise plus ``sum_s kappa_s v_s**2 sum_t A[t, s]**4`` for noise of
    excess kurtosis ``kappa_s`` (3 for Laplace).
    """
    noisy = np.flatnonzero(noise_var > 0)
    if not len(noisy):
        return np.zeros(len(y)), np.zeros(len(fit.forecast)), 0.0
    step = max(float(np.std(y)), 1.0)  # an impulse on the series' own scale, for precision
    bumped = np.repeat(y[:, None], len(noisy), axis=1)
    bumped[noisy, np.arange(len(noisy))] += step
    fitted, forecast = fit.refilter(bumped)
    resid_response = ((bumped - fitted) - (y - fit.fitted)[:, None]) / step
    forecast_response = (forecast - fit.forecast[:, None]) / step
    v = noise_var[noisy]
    used = np.nan_to_num(resid_response)[fit.first_residual :]
    spread = 2.0 * float(np.sum(((used * v) @ used.T) ** 2)) + float(
        np.sum(used**4 @ (kurtosis[noisy] * v**2))
    )
    return np.nan_to_num(resid_response) ** 2 @ v, forecast_response**2 @ v, spread


def forecast_series(
    values: Sequence[float] | np.ndarray,
    noise_var: Sequence[float] | np.ndarray,
    horizon: int,
    model: str = "ets",
    noise_kurtosis: Sequence[float] | np.ndarray | float = 0.0,
) -> SeriesForecast:
    """Forecast one monthly series and the variance of its error for the true value.

    Parameters
    ----------
    values : array-like of float
        Consecutive monthly values (released, i.e. noisy), oldest first.
    noise_var : array-like of float
        Known noise variance of each value (0 for a value without noise).
    horizon : int
        Months ahead, 1..12.
    model : {"ets", "ets-topdown", "sarima", "seasonal-naive", "ses"}
        The model (see the module docstring).
    noise_kurtosis : float or array-like of float
        Excess kurtosis of each value's noise: 3 for Laplace, 0 for Gaussian, ``3 sum_j
        v_j**2 / (sum_j v_j)**2`` for a sum of Laplace noises (how much the noise's sum of
        squares varies; module docstring, "The demand's variance is an estimate").

    Returns
    -------
    SeriesForecast

    Raises
    ------
    ValueError
        For an unknown model, a horizon outside 1..12, too few months for the model, or
        ``noise_var`` of the wrong length or negative.

    Examples
    --------
    >>> y = [10.0 + (m % 12) for m in range(24)]
    >>> fc = forecast_series(y, [0.0] * 24, horizon=3, model="seasonal-naive")
    >>> fc.point.tolist()
    [10.0, 11.0, 12.0]
    """
    y = np.asarray(values, dtype=float)
    v = np.asarray(noise_var, dtype=float)
    _check_horizon_and_model(horizon, model, len(y))
    if v.shape != y.shape or (v < 0).any() or not np.isfinite(v).all():
        raise ValueError(
            f"noise_var must hold one finite non-negative variance per value ({len(y)}); got "
            f"shape {v.shape} with minimum {v.min() if v.size else None}"
        )
    with warnings.catch_warnings():
        # statsmodels warns about convergence and start values on short series; the fit is
        # still the maximum found, and the backtest measures the result
        warnings.simplefilter("ignore")
        if model in _NOISE_WEIGHTED:
            fit = _downweight_noisy_months(_FITTERS[model], y, v, int(horizon))
        else:
            fit = _FITTERS[model](y, int(horizon))
        kurtosis = np.broadcast_to(np.asarray(noise_kurtosis, dtype=float), y.shape)
        resid_noise, forecast_noise, spread = _noise_response(fit, y, v, kurtosis)
    residuals = (y - fit.fitted)[fit.first_residual :]
    dof = max(len(residuals) - fit.n_params, 1)
    # the residuals' squares hold the noise sum_t sum_s A[t, s]**2 v_s: it comes off the sum
    # before the degrees-of-freedom correction, which is the signal's (module docstring)
    sse = float(np.sum(residuals**2))
    noise_sse = float(np.sum(resid_noise[fit.first_residual :]))
    signal_var = max((sse - noise_sse) / dof, 0.0)
    return SeriesForecast(
        point=fit.forecast,
        variance=signal_var * fit.multiplier + forecast_noise,
        model=fit.name,
        signal_variance=signal_var,
        noise_variance=forecast_noise,
        dof=dof,
        multiplier=np.asarray(fit.multiplier, dtype=float),
        signal_draws=_signal_posterior(sse, noise_sse, spread, dof, len(residuals)),
    )


#: equal-probability points of the posterior of the demand's own variance
_POSTERIOR_POINTS = 1000


def _signal_posterior(
    sse: float, noise_sse: float, noise_sse_var: float, dof: int, n: int
) -> np.ndarray:
    """Equal-probability points of the posterior of the demand's one-step variance ``s2_x``.

    Likelihood: the residuals' sum of squares ``SSE`` given ``s2_x`` has mean ``dof * s2_x +
    N`` (``N`` the noise's known part) and variance ``2 dof s2_x**2 + 4 s2_x N dof / n +
    var_N`` (the demand's chi-square, the demand-noise cross term, the noise's own spread from
    :func:`_noise_response`); it is taken as the scaled chi-square with those two moments.
    Prior: ``1 / (s2_x + N / dof)``, the scale prior on the residuals' variance. The
    posterior is tabulated on a grid of ``s2_x >= 0`` and read at the midpoints of
    ``_POSTERIOR_POINTS`` equal slices of its distribution function. Without noise this is the
    posterior behind Student's t with ``dof`` degrees of freedom.
    """
    from scipy.stats import chi2

    if sse <= 0.0:
        return np.zeros(1)
    c = noise_sse / dof
    # s2_x beyond the pure-demand posterior's 1e-7 upper quantile is negligible
    top = max(sse, noise_sse) / float(chi2.ppf(1e-7, dof))
    grid = np.r_[0.0, np.geomspace(1e-6 * max(sse, noise_sse) / dof, top, 4000)]
    mean = dof * grid + noise_sse
    var = 2.0 * dof * grid**2 + 4.0 * grid * noise_sse * dof / n + noise_sse_var
    with np.errstate(divide="ignore", invalid="ignore"):  # s2_x = 0 without noise
        scale, k = var / (2.0 * mean), 2.0 * mean**2 / var
        log_post = chi2.logpdf(sse / scale, k) - np.log(scale) - np.log(grid + c)
    ok = np.isfinite(log_post)
    density = np.where(ok, np.exp(log_post - np.max(log_post[ok])), 0.0)
    cdf = np.r_[0.0, np.cumsum((density[1:] + density[:-1]) / 2.0 * np.diff(grid))]
    u = (np.arange(_POSTERIOR_POINTS) + 0.5) / _POSTERIOR_POINTS
    return np.interp(u * cdf[-1], cdf, grid)


def _mixture_half_width(
    level: float, slope: np.ndarray, base: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """Per cell, ``x`` with ``P(|e| <= x) = level`` for ``e ~ N(0, slope * s2 + base)``
    averaged over the equal-probability draws ``s2`` (bisection; the mixture's quantile lies
    between the normal quantiles of its smallest and largest variance)."""
    from scipy.stats import norm

    slope = np.asarray(slope, dtype=float)
    sd = np.sqrt(np.maximum(slope[..., None] * draws + np.asarray(base)[..., None], 0.0))
    z = float(norm.ppf(0.5 + level / 2.0))
    lo, hi = z * sd.min(axis=-1), z * sd.max(axis=-1)
    safe = np.where(sd > 0, sd, 1.0)
    for _ in range(60):
        mid = (lo + hi) / 2.0
        inside = np.where(sd > 0, 2.0 * norm.cdf(mid[..., None] / safe) - 1.0, 1.0).mean(axis=-1)
        low = inside < level
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
    return (lo + hi) / 2.0


def _quantile(level: float, dof: int) -> float:
    """Two-sided ``level`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, dof))


# --- reconciliation --------------------------------------------------------------------------
def reconcile(
    bottom: np.ndarray, bottom_var: np.ndarray, total: float, total_var: float
) -> np.ndarray:
    """Reconcile category forecasts with a total forecast for one month ahead.

    Weighted least squares with the forecast variances as weights (MinT, diagonal): the gap
    ``total - sum(bottom)`` is shared out in proportion to the variances; categories that
    would go negative are fixed at zero and the rest re-solved.

    Parameters
    ----------
    bottom : numpy.ndarray
        Base forecasts of the categories.
    bottom_var : numpy.ndarray
        Their forecast-error variances.
    total : float
        Base forecast of the total.
    total_var : float
        Its forecast-error variance.

    Returns
    -------
    numpy.ndarray
        Non-negative category forecasts; their sum is the reconciled total.

    Examples
    --------
    >>> reconcile(np.array([10.0, 10.0]), np.array([1.0, 3.0]), 24.0, 4.0).tolist()
    [10.5, 11.5]
    """
    base = np.asarray(bottom, dtype=float)
    # a variance of exactly zero (a noise-free perfect fit) would divide by zero
    tiny = 1e-12 * max(1.0, float(np.max(np.abs(np.r_[base, total]))) ** 2)
    w = np.maximum(np.asarray(bottom_var, dtype=float), tiny)
    w_total = max(float(total_var), tiny)
    active = np.ones(len(base), dtype=bool)
    out = np.zeros(len(base))
    while active.any():
        gap = total - base[active].sum()
        out[:] = 0.0
        out[active] = base[active] + w[active] * gap / (w_total + w[active].sum())
        negative = active & (out < 0)
        if not negative.any():
            break
        active &= ~negative
    out[~active] = 0.0
    return out


# --- a panel of series -----------------------------------------------------------------------
def forecast_panel(
    values: dict[str, pd.DataFrame],
    noise_var: dict[str, pd.DataFrame],
    horizon: int,
    model: str = "ets",
    level: float = 0.9,
    clip: dict[str, tuple[float, float]] | None = None,
    interval: str = "plug-in",
    noise_kurtosis: float | pd.DataFrame = 0.0,
) -> pd.DataFrame:
    """Forecast every category and the total, reconciled, with intervals.

    :func:`forecast_archive` calls this on a validated archive; evaluations (the backtest)
    call it directly on true totals with zero noise to measure the cost of privacy.

    Parameters
    ----------
    values : dict of str to pandas.DataFrame
        For each measure (``"units"``, ``"sek"``): a frame indexed by consecutive
        first-of-month timestamps with one column per category.
    noise_var : dict of str to pandas.DataFrame
        The known noise variance of each value, same shapes (zeros for true totals).
    horizon : int
        Months ahead, 1..12.
    model : {"ets", "ets-topdown", "sarima", "seasonal-naive", "ses"}
        The model of every series.
    level : float
        Coverage of the prediction intervals, in (0, 1).
    clip : dict of str to (float, float), optional
        Per measure, the pooled clipped share ``r`` of the released values and its variance
        (:func:`clip_correction`): points are scaled by ``1 + r`` and intervals widened by
        the estimate's noise (module docstring). None or a measure missing: uncorrected.
    interval : {"plug-in", "posterior"}
        ``"plug-in"`` (default): Student's t around the point estimate of the demand's own
        variance. ``"posterior"``: the forecast error integrated over that variance's
        posterior given the known noise (module docstring, "The demand's variance is an
        estimate"; measured, not the default: it over-covers where the noise dominates).
    noise_kurtosis : float or pandas.DataFrame
        Excess kurtosis of each released value's noise (3 Laplace, 0 Gaussian), one number
        or a frame shaped like the values (:func:`forecast_series`).

    Returns
    -------
    pandas.DataFrame
        One row per category and month ahead, then the ``"total"`` rows: ``category``,
        ``month``, ``horizon``, and per measure the point forecast, ``<measure>_lower``,
        ``<measure>_upper``, ``<measure>_model`` and ``<measure>_clip_correction`` (the
        ``r`` applied, 0 when none).

    Raises
    ------
    ValueError
        For a level outside (0, 1), a measure missing, shapes that differ, or the errors
        of :func:`forecast_series`.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} must lie in (0, 1), e.g. 0.9 for 90 % intervals")
    if interval not in _INTERVALS:
        raise ValueError(f"interval={interval!r} is unknown; choose one of {list(_INTERVALS)}")
    missing = [m for m in _MEASURES if m not in values or m not in noise_var]
    if missing:
        raise ValueError(
            f"values and noise_var need the measures {list(_MEASURES)}; missing {missing}"
        )
    first = values[_MEASURES[0]]
    categories = [str(c) for c in first.columns]
    months = pd.DatetimeIndex(first.index)
    future = pd.date_range(months[-1] + pd.offsets.MonthBegin(1), periods=horizon, freq="MS")
    out = pd.DataFrame(
        {
            "category": np.repeat([*categories, TOTAL_CATEGORY], horizon),
            "month": np.tile(future, len(categories) + 1),
            "horizon": np.tile(np.arange(1, horizon + 1), len(categories) + 1),
        }
    )
    for measure in _MEASURES:
        frame, var_frame = values[measure], noise_var[measure]
        if frame.shape != var_frame.shape or list(frame.columns) != list(first.columns):
            raise ValueError(
                f"measure {measure!r}: values and noise_var must share the categories and "
                f"months of {_MEASURES[0]!r}"
            )
        ratio = (clip or {}).get(measure)
        kappa = np.broadcast_to(np.asarray(noise_kurtosis, dtype=float), frame.shape)
        if model == TOPDOWN_MODEL:
            point, half, names_of = _topdown(frame, var_frame, future, level, interval, kappa)
            point, half = _clip_corrected(point, half, ratio, level)
            out[measure] = point.ravel()
            out[f"{measure}_lower"] = np.maximum(point - half, 0.0).ravel()
            out[f"{measure}_upper"] = (point + half).ravel()
            out[f"{measure}_model"] = np.repeat(names_of, horizon)
            out[f"{measure}_clip_correction"] = 0.0 if ratio is None else ratio[0]
            continue
        series = {
            c: (frame[c].to_numpy(float), var_frame[c].to_numpy(float), kappa[:, j])
            for j, c in enumerate(frame)
        }
        # the released total is the sum of released categories, its noise the sum of theirs
        series[TOTAL_CATEGORY] = (
            frame.to_numpy(float).sum(axis=1),
            var_frame.to_numpy(float).sum(axis=1),
            _sum_kurtosis(var_frame.to_numpy(float), kappa),
        )
        fits = {str(c): forecast_series(y, v, horizon, model, k) for c, (y, v, k) in series.items()}
        point = np.empty((len(categories) + 1, horizon))
        for h in range(horizon):
            cats = reconcile(
                np.array([fits[c].point[h] for c in categories]),
                np.array([fits[c].variance[h] for c in categories]),
                fits[TOTAL_CATEGORY].point[h],
                fits[TOTAL_CATEGORY].variance[h],
            )
            point[:-1, h] = cats
            point[-1, h] = cats.sum()
        names = [*categories, TOTAL_CATEGORY]
        half = np.array([_half_width(fits[c], level, interval) for c in names])
        point, half = _clip_corrected(point, half, ratio, level)
        out[measure] = point.ravel()
        out[f"{measure}_lower"] = np.maximum(point - half, 0.0).ravel()
        out[f"{measure}_upper"] = (point + half).ravel()
        out[f"{measure}_model"] = np.repeat(
            [fits[c].model for c in [*categories, TOTAL_CATEGORY]], horizon
        )
        out[f"{measure}_clip_correction"] = 0.0 if ratio is None else ratio[0]
    out["level"] = level
    return out


def _sum_kurtosis(noise_var: np.ndarray, kurtosis: np.ndarray) -> np.ndarray:
    """Excess kurtosis of each row's sum of independent noises (``sum_j kappa_j v_j**2 /
    (sum_j v_j)**2``; 0 for a row without noise)."""
    total = noise_var.sum(axis=1)
    moment = (kurtosis * noise_var**2).sum(axis=1)
    return np.divide(moment, total**2, out=np.zeros_like(total), where=total > 0)


#: how an interval treats the estimated variance of the demand (forecast_panel's ``interval``)
_INTERVALS = ("posterior", "plug-in")


def _half_width(
    fc: SeriesForecast,
    level: float,
    interval: str,
    scale: np.ndarray | float = 1.0,
    extra_variance: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Half-widths of ``scale`` x the series' forecast error plus an independent error of
    ``extra_variance``: over the posterior of the demand's variance, or (``"plug-in"``, the
    earlier formula) Student's t around its point estimate."""
    if interval == "plug-in":
        variance = np.asarray(scale, dtype=float) ** 2 * fc.variance + extra_variance
        return _quantile(level, fc.dof) * np.sqrt(variance)
    return fc.half_width(level, scale, extra_variance)


def _clip_corrected(
    point: np.ndarray, half: np.ndarray, ratio: tuple[float, float] | None, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points scaled by ``1 + r``; half-widths with the pooled estimate's noise added in
    quadrature at the normal quantile (module docstring, "The clip's bias")."""
    if ratio is None:
        return point, half
    r, var_r = ratio
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2.0))
    corrected = point * (1.0 + r)
    return corrected, np.sqrt(((1.0 + r) * half) ** 2 + (z * corrected / (1.0 + r)) ** 2 * var_r)


def clip_correction(
    archive: pd.DataFrame, pooling: str = "inverse-variance"
) -> dict[str, tuple[float, float]]:
    """The clipped share of each measure, pooled over the archive's months that carry the
    charged clip excess, and its variance (module docstring, "Each month's excess weighed by
    its published noise").

    With ``x_t`` a month's released total (at least 0) and ``v_t`` its excess's noise
    variance: ``r = max(sum_t x_t excess_t / v_t / sum_t x_t**2 / v_t, 0)`` and ``var_r = 1 /
    sum_t x_t**2 / v_t`` (``"inverse-variance"``, the default), or ``r = max(sum_t excess_t /
    sum_t x_t, 0)`` and ``var_r = sum_t v_t / (sum_t x_t)**2`` (``"equal"``: every month
    counts alike, the earlier estimator; for comparisons). Only published values and noise
    scales are read.

    Parameters
    ----------
    archive : pandas.DataFrame
        A validated release archive (:func:`validate_archive`).
    pooling : {"inverse-variance", "equal"}
        How the months are pooled.

    Returns
    -------
    dict of str to (float, float)
        Per measure with at least one month that carries the excess; empty when none does
        (an archive released before the excess was measured).

    Raises
    ------
    ValueError
        For an unknown ``pooling``.

    Examples
    --------
    >>> import pandas as pd
    >>> a = pd.DataFrame({"month": pd.to_datetime(["2025-01-01"] * 2 + ["2025-02-01"] * 2),
    ...     "category": ["paper", "writing"] * 2, "units": [60, 40, 50, 50],
    ...     "units_clip_excess": [6, 6, 2, 2], "units_clip_excess_scale": [1.0] * 4,
    ...     "mechanism": "laplace"})
    >>> r, var = clip_correction(a)["units"]
    >>> round(r, 3), round(var, 6)
    (0.04, 0.0001)

    A month released with ten times the excess's noise (February: 2 %) hardly counts any more
    next to January (6 %); pooled equally, both count alike:

    >>> b = a.assign(units_clip_excess_scale=[1.0, 1.0, 10.0, 10.0])
    >>> [round(clip_correction(b, p)["units"][0], 4) for p in ("inverse-variance", "equal")]
    [0.0596, 0.04]
    """
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling={pooling!r} is unknown; choose one of {list(_POOLINGS)}")
    out = {}
    for measure in _MEASURES:
        column = f"{measure}_clip_excess"
        if column not in archive.columns:
            continue
        months = archive[archive[column].notna()]
        if months.empty:
            continue
        per_month = months.groupby("month").agg(
            released=(measure, "sum"),
            excess=(column, "first"),
            scale=(f"{column}_scale", "first"),
            mechanism=("mechanism", "first"),
        )
        released = per_month["released"].clip(lower=0).to_numpy(float)
        if released.sum() <= 0:
            continue
        excess = per_month["excess"].to_numpy(float)
        variance = noise_variance(
            per_month["scale"].to_numpy(float), per_month["mechanism"].to_numpy()
        )
        if pooling == "equal":
            ratio = float(excess.sum()) / float(released.sum())
            out[measure] = (max(ratio, 0.0), float(variance.sum()) / float(released.sum()) ** 2)
            continue
        # each month's information about r is x_t**2 / v_t (a month released at 0 has none)
        information = released**2 / variance
        ratio = float(np.sum(released * excess / variance)) / float(information.sum())
        out[measure] = (max(ratio, 0.0), 1.0 / float(information.sum()))
    return out


#: how :func:`clip_correction` pools the months' clip excess
_POOLINGS = ("inverse-variance", "equal")


def seasonal_shares(
    values: np.ndarray, noise_var: np.ndarray, months: pd.DatetimeIndex, future: pd.DatetimeIndex
) -> tuple[np.ndarray, np.ndarray]:
    """Each category's share of the total in each future month, and its variance.

    The share in a month of the year is the overall share plus that month's mean deviation
    from it, shrunk towards zero by the deviation's released noise variance against the
    spread of true deviations in that month of the year (estimated across categories, less
    their noise: empirical Bayes). See the module docstring, "Top-down from the total".

    Parameters
    ----------
    values, noise_var : numpy.ndarray of shape (months, categories)
        Released values and their known noise variances.
    months : pandas.DatetimeIndex
        The released months (first of month), one per row.
    future : pandas.DatetimeIndex
        The months to forecast.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Shares of shape (future, categories), non-negative and summing to one per month,
        and the variance of each share's error.

    Examples
    --------
    >>> months = pd.date_range("2024-01-01", periods=24, freq="MS")
    >>> y = np.column_stack([np.full(24, 30.0), np.full(24, 70.0)])
    >>> ahead = months[:2] + pd.DateOffset(years=2)
    >>> share, var = seasonal_shares(y, np.zeros_like(y), months, ahead)
    >>> share.round(3).tolist(), bool((var == 0).all())
    ([[0.3, 0.7], [0.3, 0.7]], True)
    """
    y = np.asarray(values, dtype=float)
    v = np.asarray(noise_var, dtype=float)
    total = np.maximum(y.sum(axis=1), 1e-9)  # released values are non-negative
    share = y / total[:, None]
    share_var = v / total[:, None] ** 2
    overall = y.sum(axis=0) / total.sum()
    of_year = np.asarray(months.month) - 1
    deviation = np.zeros((_SEASON, y.shape[1]))
    deviation_var = np.zeros((_SEASON, y.shape[1]))
    for m in range(_SEASON):
        rows = of_year == m
        if rows.any():
            deviation[m] = (share[rows] - overall).mean(axis=0)
            deviation_var[m] = share_var[rows].mean(axis=0) / rows.sum()
    # the prior spread of true deviations per month of the year, relative to each share
    sized = overall > 0
    relative = np.where(sized, deviation / np.where(sized, overall, 1.0), 0.0)
    relative_var = np.where(sized, deviation_var / np.where(sized, overall, 1.0) ** 2, 0.0)
    prior = np.maximum((relative**2).mean(axis=1) - relative_var.mean(axis=1), 0.0)
    prior_var = prior[:, None] * overall[None, :] ** 2
    spread = prior_var + deviation_var
    weight = np.divide(prior_var, spread, out=np.ones_like(spread), where=spread > 0)
    posterior = np.divide(
        prior_var * deviation_var, spread, out=np.zeros_like(spread), where=spread > 0
    )
    shrunk = deviation * weight
    # year-to-year variation within a month of the year (the month means' own spread; the
    # uncertainty of the shrunk mean itself is the posterior variance)
    residual = share - (overall + deviation[of_year])
    dof = max(len(y) - _SEASON, 1)
    own = np.maximum((residual**2).sum(axis=0) / dof - share_var.mean(axis=0), 0.0)
    ahead = np.asarray(future.month) - 1
    out = np.clip(overall + shrunk[ahead], 0.0, None)
    sums = out.sum(axis=1, keepdims=True)
    out = np.divide(out, sums, out=np.full_like(out, 1.0 / out.shape[1]), where=sums > 0)
    # the overall share's own estimation error (the noise of every month, averaged)
    overall_var = share_var.mean(axis=0) / len(y)
    return out, posterior[ahead] + (own + overall_var)[None, :]


def _topdown(
    frame: pd.DataFrame,
    var_frame: pd.DataFrame,
    future: pd.DatetimeIndex,
    level: float,
    interval: str = "plug-in",
    kurtosis: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Point forecasts and interval half-widths, categories then the total, of one measure
    under the top-down model (rows: categories + total; columns: months ahead)."""
    y = frame.to_numpy(float)
    v = var_frame.to_numpy(float)
    kappa = np.broadcast_to(np.asarray(kurtosis, dtype=float), y.shape)
    fit = forecast_series(
        y.sum(axis=1), v.sum(axis=1), len(future), TOPDOWN_MODEL, _sum_kurtosis(v, kappa)
    )
    total = np.maximum(fit.point, 0.0)
    share, share_var = seasonal_shares(y, v, pd.DatetimeIndex(frame.index), future)
    point = share.T * total[None, :]
    # a category errs by its share of the total's error plus the share's own error
    half = np.vstack(
        [
            *(
                _half_width(fit, level, interval, share[:, j], total**2 * share_var[:, j])
                for j in range(y.shape[1])
            ),
            _half_width(fit, level, interval),
        ]
    )
    point = np.vstack([point, point.sum(axis=0)])
    names = [f"{fit.model} of the total x shares"] * y.shape[1] + [fit.model]
    return point, half, names


def forecast_archive(
    archive: pd.DataFrame,
    horizon: int,
    model: str = "ets",
    level: float = 0.9,
    *,
    through: str | pd.Timestamp | None = None,
    clip_corrected: bool = True,
    interval: str = "plug-in",
    clip_pooling: str = "inverse-variance",
) -> pd.DataFrame:
    """Forecast units and SEK per category from the DP release archive.

    Parameters
    ----------
    archive : pandas.DataFrame
        The release archive (from :func:`load_archive`); validated again here.
    horizon : int
        Months ahead, 1..12.
    model : {"auto", "ets", "ets-topdown", "sarima", "seasonal-naive", "ses"}
        The model of every series. ``auto``: :func:`choose_model` (the note says which and why).
    level : float
        Coverage of the prediction intervals.
    through : str or Timestamp, optional
        Use only months up to and including this one (to backtest on a held-out tail).
    clip_corrected : bool
        Correct the clip's bias from the archive's charged clip excess
        (:func:`clip_correction`; module docstring). False: uncorrected (the backtest's
        comparison on the same archive).
    interval : {"posterior", "plug-in"}
        As :func:`forecast_panel`.
    clip_pooling : {"inverse-variance", "equal"}
        How the months' clip excess is pooled (:func:`clip_correction`; ``"equal"``, the
        earlier estimator, only for the backtest's comparison on the same archive).

    Returns
    -------
    pandas.DataFrame
        As :func:`forecast_panel`, plus ``source`` (``"dp-archive"``), the first and last
        ``release_id`` used, and ``evaluation`` when the archive carries that flag.

    Raises
    ------
    SchemaError, WorkspaceError, ValueError
        From :func:`validate_archive` and :func:`forecast_panel`.

    Examples
    --------
    >>> import pandas as pd
    >>> months = pd.date_range("2024-01-01", periods=24, freq="MS")
    >>> archive = pd.DataFrame({
    ...     "month": list(months) * 2, "category": ["paper"] * 24 + ["writing"] * 24,
    ...     "units": [100.0 + m % 12 for m in range(48)], "sek": 50.0, "units_scale": 2.0,
    ...     "sek_scale": 40.0, "mechanism": "laplace", "epsilon": 1.0, "release_id": "r1"})
    >>> fc = forecast_archive(archive, horizon=3, model="seasonal-naive")
    >>> fc.loc[fc.category == "total", "units"].round(1).tolist()
    [200.0, 202.0, 204.0]
    """
    valid = validate_archive(archive)
    if through is not None:
        valid = valid[valid["month"] <= pd.Timestamp(through)]
        if valid.empty:
            raise ValueError(f"through={through}: the archive has no month up to it")
    note = ""
    if model == AUTO_MODEL:
        model, note = choose_model(int(valid["month"].nunique()))
    values, noise = {}, {}
    # Laplace noise has excess kurtosis 3, Gaussian 0 (the spread of the noise's squares)
    kurtosis = valid.assign(
        _kappa=np.where(valid["mechanism"].to_numpy() == "laplace", 3.0, 0.0)
    ).pivot(index="month", columns="category", values="_kappa")
    for measure in _MEASURES:
        values[measure] = valid.pivot(index="month", columns="category", values=measure)
        var = noise_variance(valid[f"{measure}_scale"].to_numpy(), valid["mechanism"].to_numpy())
        noise[measure] = valid.assign(_var=var).pivot(
            index="month", columns="category", values="_var"
        )
    clip = clip_correction(valid, clip_pooling) if clip_corrected else {}
    out = forecast_panel(
        values,
        noise,
        horizon,
        model,
        level,
        clip=clip,
        interval=interval,
        noise_kurtosis=kurtosis.reindex(columns=values[_MEASURES[0]].columns),
    )
    out["source"] = "dp-archive"
    out["model_chosen"] = model
    out["model_note"] = note or f"model {model!r} chosen by the caller"
    ids = valid.sort_values("month")["release_id"].astype(str)
    out["first_release_id"], out["last_release_id"] = ids.iloc[0], ids.iloc[-1]
    if "evaluation" in valid.columns:
        out["evaluation"] = bool(valid["evaluation"].astype(bool).any())
    return out


def mape(actual: np.ndarray | pd.Series, predicted: np.ndarray | pd.Series) -> float:
    """Mean absolute percentage error, in percent.

    Raises
    ------
    ValueError
        If any actual value is zero or the lengths differ.

    Examples
    --------
    >>> mape([100.0, 200.0], [110.0, 180.0])
    10.0
    """
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if a.shape != p.shape:
        raise ValueError(f"actual and predicted differ in shape: {a.shape} vs {p.shape}")
    if (a == 0).any():
        raise ValueError("MAPE is undefined when an actual value is 0")
    return float(np.mean(np.abs(p - a) / np.abs(a)) * 100.0)


def backtest_table(results: dict[str, Any]) -> pd.DataFrame:
    """The backtest's summary: one row per method, MAPE median and 10-90 % spread.

    Parameters
    ----------
    results : dict
        The JSON written by ``benchmarks/backtest_forecast.py``.

    Returns
    -------
    pandas.DataFrame
        ``method``, ``epsilon`` (NaN for forecasts from true totals), ``mape_median``,
        ``mape_q10``, ``mape_q90`` (of the mean MAPE over categories, across repetitions),
        ``coverage_90`` (share of true held-out values inside the 90 % intervals) and
        ``reps``.
    """
    rows = [
        {
            "method": method,
            "epsilon": entry["epsilon"],
            "mape_median": entry["mean_mape"]["median"],
            "mape_q10": entry["mean_mape"]["q10"],
            "mape_q90": entry["mean_mape"]["q90"],
            "coverage_90": entry.get("coverage_90", {}).get("median", np.nan),
            "reps": entry["mean_mape"]["n"],
        }
        for method, entry in results["methods"].items()
    ]
    return pd.DataFrame(rows).astype({"epsilon": float})
