"""The purchasing forecast job: from the DP release archive only (AO-4) to ``W/forecasts/``.

Reads ``W/releases/archive/monthly_category.parquet`` and nothing else, and writes
``W/forecasts/forecast.parquet`` (category, month, units and SEK: point, lower, upper),
``W/forecasts/purchasing_export.csv`` for the purchasing system, ``W/forecasts/forecast.png``
and ``W/forecasts/forecast_card.json`` (what was read and how the forecast was made). All
outputs are computed before the first file is written, and each is written atomically, so a
failure leaves no forecast behind. Forecasting is post-processing of DP releases: no privacy
budget is spent.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segments.exceptions import PolicyError, WorkspaceError
from segments.forecast import clip_correction, forecast_archive, load_archive
from segments.policy import PrivacyParameters
from segments.privacy.planner import REFUSAL_CONFIDENCE
from segments.privacy.postprocess import is_reliable, reliability_footnote
from segments.workspace import CARD, Workspace, atomic_write, sha256_file, write_json

if TYPE_CHECKING:
    from segments.privacy.ledger import Ledger

FORECAST_FILE = "forecast.parquet"
EXPORT_FILE = "purchasing_export.csv"
CHART_FILE = "forecast.png"
CARD_FILE = "forecast_card.json"


@dataclass(frozen=True)
class PurchasingForecast:
    """What :func:`forecast_purchasing` wrote: the forecast table, its card and the files."""

    forecast: pd.DataFrame
    card: dict[str, Any]
    paths: dict[str, Path]


#: The policy default of ``max_relative_error``: the default of the marking functions below
#: (:func:`forecast_purchasing` reads the limit the ledger recorded, never this).
DEFAULT_MAX_RELATIVE_ERROR = float(PrivacyParameters.max_relative_error)


@dataclass(frozen=True)
class RecordedPolicy:
    """The policy a ledger recorded as in force when the archive's releases were charged."""

    name: str
    digest: str
    ledger: Path
    release_id: str  # the latest of the archive's releases, whose policy this is
    max_relative_error: float
    ledger_id: str = ""

    def card(self) -> dict[str, Any]:
        """What the forecast card states of it."""
        return {
            "name": self.name,
            "digest": self.digest,
            "ledger": str(self.ledger),
            "ledger_id": self.ledger_id,
            "as_recorded_for": self.release_id,
            "max_relative_error": self.max_relative_error,
        }


def _candidate_ledgers(ws: Workspace, release_ids: list[str]) -> list[Path]:
    """The controller's (real and evaluation) ledgers of the shipped policies the releases'
    cards name, every controller ledger the per-user registry knows, then the workspace's
    throw-away ledgers (``W/ledger/``): only where to look; which one is read is decided by
    :func:`recorded_policy` (one ledger claims the releases, its chain and the release cards
    verify)."""
    from segments.policy import Policy
    from segments.privacy.ledger import default_ledger_path, registered_ledgers

    found: list[Path] = []
    names = set()
    for rid in release_ids:
        card = ws.release_dir(rid) / CARD
        try:
            names.add(str(json.loads(card.read_text(encoding="utf-8"))["policy"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for name in sorted(names):
        try:
            controller = Policy.load(name).controller
        except Exception:  # noqa: BLE001 - a card naming no loadable policy points nowhere
            continue
        for evaluation in (False, True):
            path = default_ledger_path(controller, evaluation=evaluation)
            if path.exists():
                found.append(path)
    # a policy file of one's own (not shipped): the controllers' ledgers this user keeps
    with contextlib.suppress(PermissionError):  # an unreadable registry: those found so far
        found += registered_ledgers()
    if ws.ledger_folder.is_dir():
        found += sorted(ws.ledger_folder.glob("*.sqlite"))
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _check_archive_rows(ws: Workspace, ledger_path: Path) -> None:
    """The archive's rows must be those rebuilt from the tables the ledger published
    (:func:`segments.privacy.archive.archive_problems`): an edited archive is refused."""
    from segments.privacy.archive import archive_problems
    from segments.privacy.ledger import Ledger

    problems = archive_problems(ws.releases, Ledger.open(ledger_path, create=False))
    if problems:
        raise WorkspaceError(
            f"forecast: {problems[0]} ({len(problems)} problem(s)); rule: a forecast reads only "
            "the DP releases the ledger published; nothing was written. Fix: run `segments "
            f"ledger --cards {ws.releases}`, which rebuilds the archive from them"
        )


def recorded_policy(
    workspace: Workspace | str | Path,
    release_ids: list[str],
    ledger: Ledger | str | os.PathLike[str] | None = None,
) -> RecordedPolicy:
    """The policy in force, as the ledger recorded it, when the latest of ``release_ids``
    was charged: the ledger decides, never a flag, a folder or an editable file.

    The ledger is the one that claims the releases (reserved them); its hash chain must
    verify, it must have published every release, and the release cards and files in
    ``W/releases/<id>/`` must be the ones it recorded (:meth:`Ledger.verify_cards`). Two
    ledgers claiming the archive's releases are refused (a copy is no second record).

    Parameters
    ----------
    workspace : Workspace or path
    release_ids : list of str
        The archive's releases; every one must be in the ledger.
    ledger : Ledger or path, optional
        The ledger they were charged to; default: the controller's ledgers of the policies
        their cards name, the registered controller ledgers, then the workspace's own.

    Raises
    ------
    WorkspaceError
        No ledger holds the releases, two do, one holds only some of them, its chain or the
        release cards do not verify against it, or it recorded no policy facts for them (one
        line naming the release, the ledger, the rule and the fix).
    """
    from segments.privacy.ledger import Ledger

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    wanted = sorted(set(release_ids))
    rule = (
        "rule: the forecast's policy facts (its reliability limit max_relative_error) are "
        "those the ledger recorded for the releases it reads, published by it and verified "
        "against its hash chain; nothing was written"
    )
    # the ledger given is read first, but every other ledger is still searched: a second
    # ledger claiming the releases (the controller's registered one above all) is refused,
    # never out-voted by a flag (review r10a, F3 residual)
    candidates: list[Any] = [] if ledger is None else [ledger]
    given: Path | None = None
    if ledger is not None:
        given = Path(ledger.path if isinstance(ledger, Ledger) else ledger).resolve()
    candidates += [p for p in _candidate_ledgers(ws, wanted) if p.resolve() != given]
    claimants: list[Ledger] = []
    given_book: Ledger | None = None
    for candidate in candidates:
        try:
            book = (
                candidate
                if isinstance(candidate, Ledger)
                else Ledger.open(Path(candidate), create=False)
            )
        except (WorkspaceError, PermissionError):
            if candidate is ledger:
                raise
            continue
        if candidate is ledger:
            given_book = book
        if any(
            e.get("event") == "reserve" and e.get("release_id") in wanted for e in book.events()
        ):
            chain = book.verify_chain()
            if not chain:
                fix = (
                    "Fix: remove that file, or pass --ledger PATH, the controller's ledger the "
                    "releases were charged to"
                    if ledger is None or candidate is ledger
                    else "Fix: remove that file (it is not the ledger given)"
                )
                raise WorkspaceError(
                    f"forecast: ledger {book.path} (id {book.ledger_id}) claims the archive's "
                    f"releases but its hash chain does not verify ({chain.problems[0]}); {rule}. "
                    + fix
                )
            claimants.append(book)
    if given_book is not None and any(b is not given_book for b in claimants):
        other = next(b for b in claimants if b is not given_book)
        mine = "also claims them" if given_book in claimants else "does not"
        raise WorkspaceError(
            f"forecast: ledger {other.path} (id {other.ledger_id}) claims the archive's "
            f"releases and is not the ledger given ({given_book.path}, id "
            f"{given_book.ledger_id}, which {mine}); {rule}, and one ledger records a release. "
            "Fix: pass --ledger PATH, the ledger the releases were charged to (a copy or a "
            "self-made ledger claiming them is no second record: remove it)"
        )
    if len(claimants) > 1:
        names = ", ".join(f"{b.path} (id {b.ledger_id})" for b in claimants[:3])
        raise WorkspaceError(
            f"forecast: {len(claimants)} ledgers claim the archive's releases ({names}); "
            f"{rule}, and one ledger records a release. Fix: pass --ledger PATH, the ledger "
            "the releases were charged to (and remove the copy)"
        )
    if not claimants:
        where = (
            "the ledger given" if ledger is not None else f"the controller's or {ws.ledger_folder}"
        )
        raise WorkspaceError(
            f"forecast: the archive's releases ({len(wanted)}, e.g. {wanted[0]!r}) are in no "
            f"ledger ({where}); {rule}. Fix: pass --ledger PATH, the ledger they were charged to"
        )
    book = claimants[0]
    in_force: dict[str, Any] = {}
    policy: dict[str, Any] | None = None
    latest = ""
    for event in book.events():
        if event.get("event") == "policy":
            policy = event.get("data") or {}
        elif event.get("event") == "reserve" and event.get("release_id") in wanted:
            in_force[str(event["release_id"])] = policy
            latest = str(event["release_id"])
    missing = [r for r in wanted if r not in in_force]
    if missing:
        raise WorkspaceError(
            f"forecast: release {missing[0]!r} of the archive ({len(missing)} of "
            f"{len(wanted)}) is not in ledger {book.path}, which holds the others; {rule}. "
            "Fix: rebuild the archive from releases of one ledger (segments release "
            "backfill for synthetic data)"
        )
    cards = [ws.release_dir(rid) / CARD for rid in wanted]
    absent = [card for card in cards if not card.is_file()]
    if absent:
        raise WorkspaceError(
            f"forecast: release card {absent[0]} ({len(absent)} of {len(wanted)} of the "
            f"archive's releases) is missing, so the archive cannot be checked against ledger "
            f"{book.path}; {rule}. Fix: forecast from a workspace holding the releases "
            "(segments release backfill for synthetic data)"
        )
    try:
        verified = book.verify_cards(cards)
    except (OSError, ValueError) as exc:
        raise WorkspaceError(
            f"forecast: a release card of the archive is unreadable ({exc}); {rule}. Fix: "
            "re-publish the release, never edit a card"
        ) from None
    if not verified:
        raise WorkspaceError(
            f"forecast: the archive's releases do not verify against ledger {book.path} "
            f"(id {book.ledger_id}): {verified.problems[0]}; {rule}. Fix: pass --ledger PATH, "
            "the ledger that published them, or re-publish the releases"
        )
    bound = in_force[latest] or {}
    facts = bound.get("policy_facts") or {}
    limit = (facts.get("privacy") or {}).get("max_relative_error")
    if limit is None:
        raise WorkspaceError(
            f"forecast: ledger {book.path} recorded no policy facts (max_relative_error) "
            f"for release {latest!r}; {rule}. Fix: record the policy with `segments "
            "ledger --policy NAME --adopt-policy`, then forecast again"
        )
    return RecordedPolicy(
        str(bound.get("policy")),
        str(bound.get("policy_digest")),
        book.path,
        latest,
        float(limit),
        book.ledger_id,
    )


def mark_unreliable_forecast(
    forecast: pd.DataFrame, max_relative_error: float = DEFAULT_MAX_RELATIVE_ERROR
) -> pd.DataFrame:
    """The forecast with ``units_reliable`` and ``sek_reliable``: false where the prediction
    interval reaches further than ``max_relative_error`` of the point on either side, or the
    point is 0 (:func:`segments.privacy.postprocess.is_reliable`, the rule every released
    table's marks follow). Such a month is still forecast, never clamped: a purchaser reads
    it through its interval.

    Examples
    --------
    >>> f = pd.DataFrame({"units": [100.0, 10.0], "units_lower": [80.0, 0.0],
    ...                   "units_upper": [125.0, 30.0], "sek": [1e4, 0.0],
    ...                   "sek_lower": [9e3, 0.0], "sek_upper": [1.1e4, 5.0]})
    >>> mark_unreliable_forecast(f, 0.5)[["units_reliable", "sek_reliable"]].values.tolist()
    [[True, True], [False, False]]
    """
    out = forecast.copy()
    for measure in ("units", "sek"):
        point = out[measure].to_numpy(dtype=float)
        reach = np.maximum(
            out[f"{measure}_upper"].to_numpy(dtype=float) - point,
            point - out[f"{measure}_lower"].to_numpy(dtype=float),
        )
        out[f"{measure}_reliable"] = is_reliable(point, reach, max_relative_error)
    return out


def purchasing_export(
    forecast: pd.DataFrame, max_relative_error: float = DEFAULT_MAX_RELATIVE_ERROR
) -> pd.DataFrame:
    """The forecast as the purchasing system reads it: whole units and whole SEK per month,
    each month marked where its interval is too wide to act on as a figure.

    Parameters
    ----------
    forecast : pandas.DataFrame
        From :func:`segments.forecast.forecast_archive`.
    max_relative_error : float
        The policy's limit for the reliability marks (:func:`mark_unreliable_forecast`).

    Returns
    -------
    pandas.DataFrame
        ``category``, ``month`` (YYYY-MM), ``units_point``, ``units_lower``, ``units_upper``,
        ``sek_point``, ``sek_lower``, ``sek_upper``, ``interval_level``, ``model``,
        ``units_reliable``, ``sek_reliable`` (the card's ``reliability`` is their legend).
    """
    if "units_reliable" not in forecast.columns:
        forecast = mark_unreliable_forecast(forecast, max_relative_error)
    out = pd.DataFrame(
        {
            "category": forecast["category"],
            "month": pd.to_datetime(forecast["month"]).dt.strftime("%Y-%m"),
        }
    )
    for measure in ("units", "sek"):
        for suffix, column in (
            ("point", measure),
            ("lower", f"{measure}_lower"),
            ("upper", f"{measure}_upper"),
        ):
            out[f"{measure}_{suffix}"] = forecast[column].round().astype("int64")
    out["interval_level"] = forecast["level"]
    out["model"] = forecast["units_model"]
    # last, so a reader of the earlier columns by position is not moved
    for measure in ("units", "sek"):
        out[f"{measure}_reliable"] = forecast[f"{measure}_reliable"].astype(bool).to_numpy()
    return out


def _chart_png(archive: pd.DataFrame, forecast: pd.DataFrame) -> bytes:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from segments.plots import plot_forecast_fans

    axes = plot_forecast_fans(archive, forecast, measure="units")
    fig = axes.ravel()[0].figure
    FigureCanvasAgg(fig)  # render off-screen whatever backend the caller uses
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def forecast_purchasing(
    workspace: Workspace | str | Path,
    horizon: int = 6,
    model: str = "auto",
    level: float = 0.9,
    max_relative_error: float | None = None,
    ledger: Ledger | str | os.PathLike[str] | None = None,
) -> PurchasingForecast:
    """Forecast units and SEK per category from the DP archive and write ``W/forecasts/``.

    Parameters
    ----------
    workspace : Workspace or path
        Whose ``W/releases/archive/`` is read (nothing else is).
    horizon : int
        Months ahead, 1-12 (purchasing plans 3-6).
    model : str
        One of :data:`segments.forecast.FORECAST_MODELS`, or ``auto`` (default): the richest
        model the released history supports, non-seasonal under 13 months (the card says so).
    level : float
        Prediction interval coverage, in (0, 1). The reliability marks are judged at
        :data:`segments.privacy.planner.REFUSAL_CONFIDENCE` (90 %) whatever ``level`` is.
    max_relative_error : float, optional
        The policy's limit: a month whose interval reaches further than this share of its
        point is marked unreliable in the export, the chart and the card. Default: the
        policy the ledger recorded for the archive's latest release (:func:`recorded_policy`,
        which the main job uses too).
    ledger : Ledger or path, optional
        Where the archive's releases were charged (default: looked up, see
        :func:`recorded_policy`). The archive's rows must be the monthly tables it published,
        also when ``max_relative_error`` is given.

    Returns
    -------
    PurchasingForecast

    Raises
    ------
    PolicyError
        A bad level, horizon or model, or a history too short for the model (the message
        names the parameter and the fix); nothing is written.
    WorkspaceError
        No ledger says which policy the archive's releases were made under.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not 0.0 < level < 1.0:
        raise PolicyError(f"--level={level!r} must lie in (0, 1), e.g. 0.9")
    archive = load_archive(ws)
    try:
        forecast = forecast_archive(archive, horizon, model, level)
    except ValueError as exc:  # horizon or history too short: a user error, not a crash
        raise PolicyError(f"--horizon/--model: {exc}") from None
    recorded = None
    if max_relative_error is None:
        ids = sorted(archive["release_id"].astype(str).unique())
        recorded = recorded_policy(ws, ids, ledger)
        max_relative_error = recorded.max_relative_error
        _check_archive_rows(ws, recorded.ledger)
    elif ledger is not None:  # the caller's limit; the archive still bound to its ledger
        given = ledger if isinstance(ledger, (str, os.PathLike)) else ledger.path
        _check_archive_rows(ws, Path(given))
    # everything is computed before the first write: a failure leaves no forecast behind.
    # The marks are judged at one public level, the planner's REFUSAL_CONFIDENCE, whatever
    # --level shows (a narrow --level must not make a month "reliable"; review r11a F2)
    judged = (
        forecast
        if level == REFUSAL_CONFIDENCE
        else forecast_archive(archive, horizon, model, REFUSAL_CONFIDENCE)
    )
    marks = mark_unreliable_forecast(judged, max_relative_error)
    forecast = forecast.assign(
        units_reliable=marks["units_reliable"].to_numpy(),
        sek_reliable=marks["sek_reliable"].to_numpy(),
    )
    export = purchasing_export(forecast)
    chart = _chart_png(archive, forecast)
    table = forecast.assign(month=pd.to_datetime(forecast["month"]).dt.date)
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    card = {
        "source": str(ws.archive.relative_to(ws.root)),
        "source_sha256": sha256_file(ws.archive),
        "months_used": [
            archive["month"].min().date().isoformat(),
            archive["month"].max().date().isoformat(),
        ],
        "release_ids": sorted(archive["release_id"].astype(str).unique()),
        "model": str(forecast["model_chosen"].iloc[0]),
        "model_requested": model,
        "model_note": str(forecast["model_note"].iloc[0]),
        "horizon": horizon,
        "interval_level": level,
        "guarantee": "post-processing of DP releases: no further privacy loss; reads only the "
        "release archive",
        "intervals": "model error of the true series plus release noise propagated exactly "
        "through the fitted filter (see segments.forecast)",
        "reconciliation": "WLS by forecast variance (MinT, diagonal), non-negative; "
        "categories sum to the total",
        "reliability": reliability_footnote(
            export.rename(columns={"units_point": "units", "sek_point": "sek"}),
            max_relative_error,
            what="forecast month",
            level=REFUSAL_CONFIDENCE,
        ),
        "clip_correction": _clip_statement(archive),
        "policy": recorded.card()
        if recorded is not None
        else {"max_relative_error": max_relative_error, "from": "the caller"},
    }
    folder = ws.forecasts
    paths = {
        "forecast": folder / FORECAST_FILE,
        "export": folder / EXPORT_FILE,
        "chart": folder / CHART_FILE,
        "card": folder / CARD_FILE,
    }
    with atomic_write(paths["forecast"], "wb") as fh:
        fh.write(parquet.getvalue())
    with atomic_write(paths["export"], "w") as fh:
        export.to_csv(fh, index=False)
    with atomic_write(paths["chart"], "wb") as fh:
        fh.write(chart)
    write_json(paths["card"], card)
    return PurchasingForecast(forecast=forecast, card=card, paths=paths)


def _clip_statement(archive: pd.DataFrame) -> dict[str, Any]:
    """What the card says of the clip's bias: per measure, the pooled clipped share the
    forecast added (:func:`segments.forecast.clip_correction`), its standard error and the
    months whose charged clip excess it pools; or that none was measured."""
    shares = clip_correction(archive)
    out: dict[str, Any] = {
        "method": "each monthly release measures the mass its contribution clip removed "
        "(an OpenDP sum charged with the release); the forecast scales its points by 1 + the "
        "share pooled over the months, each weighed by its excess's published noise (a month "
        "released at a high private bound counts less), and widens its intervals by that "
        "estimate's noise; mass above twice the clip bound is not estimated",
    }
    for measure in ("units", "sek"):
        column = f"{measure}_clip_excess"
        if measure not in shares:
            out[measure] = (
                "not corrected: no released month carries a clip excess (released before it "
                "was measured); the forecast is biased low by the clip (3-4 % on synthetic data)"
            )
            continue
        share, variance = shares[measure]
        out[measure] = {
            "clipped_share": round(share, 5),
            "standard_error": round(variance**0.5, 5),
            "months": int(archive.loc[archive[column].notna(), "month"].nunique()),
        }
    return out
