"""Backtest: how much forecast accuracy does releasing the monthly series under DP cost?

On a synthetic dataset (synthetic data only; the evaluation ledger refuses anything else),
hold out the last ``--holdout`` months and compare the MAPE per product category of

(a) the ETS and ETS top-down forecasts (``segments.forecast``: the total by ETS, each
    category by its noise-shrunk share of it) from the true monthly totals,
(b) the same forecasts from archives released by the project's release engine
    (``segments.privacy.archive.release_month``, charged to the EVALUATION ledger) at each
    ε per month, ``--reps`` fresh archives each,
(c) seasonal-naive, from the true totals and from each DP archive.

Each forecast from a DP archive is made twice on the same archive: as published
(``forecast_archive``: the level corrected by the archive's charged clip excess, when its
months carry one) and without that correction ("no clip correction"), so the correction's
effect on MAPE and coverage is measured on the same noise. ETS top-down is also forecast with the
months' clip excess pooled equally (``clip_pooling="equal"``, the estimator before the
inverse-variance pooling), so the two poolings are compared on the same archives. Per
archive, the pooled clipped share the forecast used (``clip_correction``, both poolings) is
recorded next to the realised one (true minus released over released, training months:
evaluation only).

Only the training months are released (the held-out months are never needed from an
archive). The ALO Center policy's ``statistics`` purpose keeps order data 84 months (AL-1),
so one preparation covers the whole history; each month is released at ``as_of`` = the first
day of the next month, as the monthly close would.

Run (full size; slow on a shared 2-core machine)::

    .venv/bin/python benchmarks/backtest_forecast.py --customers 100000 --reps 10

Writes ``benchmarks/results/backtest_forecast.json`` (a small table the notebook reads).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from segments.forecast import (
    backtest_table,
    clip_correction,
    forecast_archive,
    forecast_panel,
    load_archive,
    mape,
)
from segments.workspace import Workspace, write_json

POLICY = "alocenter"
PURPOSE = "statistics"
RECIPIENT = "purchasing"
RESULTS = Path(__file__).parent / "results" / "backtest_forecast.json"
#: the models compared, each on the true totals and on every DP archive (label per model);
#: ets-topdown is the purchasing job's default for two seasons or more (segments.forecast)
MODELS = {"ets": "ETS", "ets-topdown": "ETS top-down", "seasonal-naive": "seasonal-naive"}


def _dataset(root: Path, customers: int, months: int, as_of: dt.date, seed: int) -> Workspace:
    """Generate and prepare once; reuse a dataset made with the same parameters."""
    from segments.prepare import prepare
    from segments.synth.generate import generate

    ws = Workspace(root / f"data-{customers}-{months}-{seed}")
    if not (ws.prepared_dir(PURPOSE) / "lines.parquet").exists():
        generate(ws, customers=customers, months=months, as_of=as_of, seed=seed, force=True)
        prepare(ws, POLICY, PURPOSE, as_of)
    return ws


def _true_totals(ws: Workspace) -> pd.DataFrame:
    """True monthly units and SEK per category (evaluation only: never reach a forecast of (b))."""
    lines = pl.scan_parquet(ws.prepared_dir(PURPOSE) / "lines.parquet")
    table = (
        lines.group_by(pl.col("order_date").dt.truncate("1mo").alias("month"), "category")
        .agg(pl.col("quantity").sum().alias("units"), pl.col("amount_sek").sum().alias("sek"))
        .collect()
        .to_pandas()
    )
    table["month"] = pd.to_datetime(table["month"])
    return table


def _per_category_mape(forecast: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    joined = forecast[forecast["category"] != "total"].merge(
        truth, on=["category", "month"], suffixes=("", "_true")
    )
    return {
        str(c): mape(g["units_true"], g["units"]) for c, g in joined.groupby("category", sort=True)
    }


def _coverage(forecast: pd.DataFrame, truth: pd.DataFrame) -> float:
    joined = forecast[forecast["category"] != "total"].merge(
        truth, on=["category", "month"], suffixes=("", "_true")
    )
    inside = (joined["units_true"] >= joined["units_lower"]) & (
        joined["units_true"] <= joined["units_upper"]
    )
    return float(inside.mean())


def _dp_archive(
    data: Workspace,
    root: Path,
    epsilon: float,
    rep: int,
    train_months: list[dt.date],
    params_policy: str | None = None,
    archive_tag: str = "",
) -> tuple[Workspace, int]:
    """A workspace whose archive the release engine fills, month by month; months already
    archived by an earlier run (same ``--workdir``) are reused. Returns it and the number of
    months released now."""
    from segments.policy import Policy
    from segments.privacy.archive import next_month, release_month
    from segments.privacy.ledger import Ledger
    from segments.privacy.publishing import ReleaseContext
    from segments.privacy.specs import SPECS, PrivacyParams

    tag = f"{archive_tag}{params_policy}-" if params_policy else archive_tag
    # named by the dataset too: two datasets planned at the same ε must not share archives
    ws = Workspace(root / f"{data.root.name}-{tag}eps{epsilon:g}-rep{rep:02d}").create()
    # the raw data and prepare's signed record come along (hard links): a release checks its
    # frames against the record, and the record against the raw files
    for source_dir, target_dir in (
        (data.prepared_dir(PURPOSE), ws.prepared_dir(PURPOSE)),
        (data.root / "raw", ws.root / "raw"),
    ):
        for source in source_dir.rglob("*"):
            target = target_dir / source.relative_to(source_dir)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
    policy = Policy.load(POLICY)
    params = PrivacyParams.from_policy(policy, PURPOSE)
    if params_policy:  # the mechanism (family, δ, bounds) of the policy whose budget is tested
        import dataclasses

        other = PrivacyParams.from_policy(Policy.load(params_policy), PURPOSE)
        budget = ("budget_epsilon", "budget_period_months", "budget_window_months")
        params = dataclasses.replace(
            other, **{name: getattr(params, name) for name in (*budget, "retention_months")}
        )
    ledger = Ledger.for_workspace(
        ws, str(policy.controller), evaluation=True, synthetic=True, policy=policy
    )
    spec = SPECS["monthly_category"].with_epsilon(epsilon)
    archived: set[dt.date] = set()
    if (ws.releases / "archive" / "monthly_category.parquet").exists():
        archived = set(load_archive(ws)["month"].dt.date)
    context = ReleaseContext.open(
        ledger, ws, policy, purpose=PURPOSE, recipient=RECIPIENT, synthetic=True
    )
    for month in train_months:
        if month in archived:
            continue
        release_month(context, month, as_of=next_month(month), params=params, spec=spec)
    return ws, len(set(train_months) - archived)


def _planned_epsilons(data: Workspace, policies: list[str], as_of: dt.date) -> dict[str, float]:
    """ε per month the main job's accuracy planner gives each policy on this dataset (its
    scale probe run outside any ledger, as in bench_utility.py)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_utility import _probe

    from segments.pipeline import PROBE_EPSILON, plan_budget
    from segments.policy import Policy
    from segments.privacy.planner import plan_by_accuracy, survey_scale
    from segments.privacy.specs import PrivacyParams

    out = {}
    for name in policies:
        policy = Policy.load(name)
        params = PrivacyParams.from_policy(policy, PURPOSE)
        k = int(policy.privacy.private_segments_k) if "segmentation" in policy.purposes else 10
        scale = _probe(data.prepared_dir(PURPOSE), params, as_of, k)
        first = plan_budget(policy)
        # as the main job: the survey planned too (refused ones leave their ε to the rest)
        fixed = {"private_segments": first.segmentation, "scale_probe": 2 * PROBE_EPSILON}
        plan = plan_by_accuracy(policy, survey_scale(scale, policy), fixed_epsilon=fixed)
        out[name] = plan.epsilon("monthly_category")
    return out


def _clip_shares(archive: pd.DataFrame, train_truth: pd.DataFrame) -> dict[str, Any]:
    """Per measure: the pooled clipped share the forecast used (charged estimate, its
    standard error) and the realised one, (true - released) / released over the training
    months (evaluation only: the truth never reaches a forecast)."""
    estimated = clip_correction(archive)
    equal = clip_correction(archive, "equal")
    out: dict[str, Any] = {}
    for measure in ("units", "sek"):
        released = float(archive[measure].sum())
        true = float(train_truth[measure].sum())
        share, variance = estimated.get(measure, (float("nan"), float("nan")))
        share_eq, variance_eq = equal.get(measure, (float("nan"), float("nan")))
        out[measure] = {
            "estimated": round(share, 5),
            "standard_error": round(float(np.sqrt(variance)), 5),
            "estimated_equal_pooling": round(share_eq, 5),
            "standard_error_equal_pooling": round(float(np.sqrt(variance_eq)), 5),
            "realised": round((true - released) / released, 5),
        }
    return out


def _origin_coverage(
    archive: pd.DataFrame, truth: pd.DataFrame, train: list[Any], origins: int, horizon: int
) -> dict[str, list[float]]:
    """Per interval (segments.forecast: ``posterior``, and ``plug-in``, the default), the
    90 % coverage of the ETS top-down forecast from each of the last ``origins``
    training months as forecast origin (``through``), ``horizon`` months ahead, on the same
    archive: one dataset's coverage from several forecasts, not one."""
    out: dict[str, list[float]] = {"posterior": [], "plug-in": []}
    for through in train[len(train) - origins :]:
        for interval in out:
            fc = forecast_archive(
                archive, horizon, "ets-topdown", level=0.9, through=through, interval=interval
            )
            out[interval].append(_coverage(fc, truth))
    return out


def _summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        "median": float(np.median(arr)),
        "q10": float(np.quantile(arr, 0.1)),
        "q90": float(np.quantile(arr, 0.9)),
        "n": len(arr),
    }


def _config(args: argparse.Namespace, train: list[Any], manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "customers": args.customers,
        "months": args.months,
        "as_of": args.as_of.isoformat(),
        "seed": args.seed,
        "holdout_months": args.holdout,
        "train_months": [train[0].date().isoformat(), train[-1].date().isoformat()],
        "reps": args.reps,
        "origins": args.origins,
        "epsilons": args.epsilons,
        "policy": POLICY,
        "purpose": PURPOSE,
        "ledger": "EVALUATION LEDGER — synthetic data only",
        "order_lines": int(manifest["row_counts"]["order_lines"]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    root = Path(args.workdir)
    data = _dataset(root, args.customers, args.months, args.as_of, args.seed)
    truth = _true_totals(data)
    months = sorted(truth["month"].unique())
    manifest = json.loads(data.manifest.read_text(encoding="utf-8"))
    # only whole months: the first month of the generated window may be partial
    first_whole = pd.Timestamp(manifest["parameters"]["window_start"])
    months = [
        m
        for m in months
        if m >= first_whole and m + pd.offsets.MonthEnd(0) <= pd.Timestamp(args.as_of)
    ]
    train, test = months[: -args.holdout], months[-args.holdout :]
    truth = truth[truth["month"].isin(months)]
    held = truth[truth["month"].isin(test)]
    train_truth = truth[truth["month"].isin(train)]
    timings = {"prepare_s": time.perf_counter() - started}

    results: dict[str, Any] = {"methods": {}, "complete": False}
    panel = {
        m: train_truth.pivot(index="month", columns="category", values=m) for m in ("units", "sek")
    }
    zeros = {m: panel[m] * 0.0 for m in panel}
    for model in MODELS:
        fc = forecast_panel(panel, zeros, args.holdout, model, level=0.9)
        per_cat = _per_category_mape(fc, held)
        results["methods"][f"true totals, {MODELS[model]}"] = {
            "epsilon": None,
            "model": model,
            "per_category": per_cat,
            "mean_mape": _summary([float(np.mean(list(per_cat.values())))]),
            **(
                {"coverage_90": _summary([_coverage(fc, held)])}
                if model != "seasonal-naive"
                else {}
            ),
        }

    train_dates = [m.date() for m in train]
    runs: list[tuple[float, str | None]] = [(e, None) for e in args.epsilons]
    if args.planned_from:  # the same ε as an earlier run: its archives (same noise) are reused
        earlier = json.loads(Path(args.planned_from).read_text(encoding="utf-8"))
        same = {k: earlier["config"][k] for k in ("customers", "months", "seed", "as_of")}
        if same != {k: _config(args, train, manifest)[k] for k in same}:
            raise SystemExit(f"--planned-from {args.planned_from}: another dataset ({same})")
        planned = {
            name: eps
            for name, eps in earlier["planned_epsilon_per_month"].items()
            if not args.planned or name in args.planned
        }
        results["planned_epsilon_per_month"] = planned
        results["planned_from"] = str(args.planned_from)
        runs = [(eps, name) for name, eps in planned.items()]
    elif args.planned:
        planned = _planned_epsilons(data, args.planned, args.as_of)
        results["planned_epsilon_per_month"] = planned
        runs = [(eps, name) for name, eps in planned.items()]
    # archives released in this run vs reused from an earlier run (timings cover only the first)
    counts = {"released": 0, "reused": 0}
    for epsilon, params_policy in runs:
        label_of = f"{params_policy} planned " if params_policy else ""
        variants = [(m, True) for m in MODELS] + [(m, False) for m in MODELS]
        per_rep: dict[tuple[str, bool], list[dict[str, float]]] = {v: [] for v in variants}
        coverage: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
        shares: list[dict[str, Any]] = []
        posterior: list[float] = []  # ETS top-down, clip corrected, the posterior interval
        # ETS top-down with the months' clip excess pooled equally (the earlier estimator)
        equal_mape: list[dict[str, float]] = []
        equal_cov: list[float] = []
        origin_cov: list[dict[str, list[float]]] = []
        t0 = time.perf_counter()
        for rep in range(args.reps):
            ws, released = _dp_archive(
                data, root, epsilon, rep, train_dates, params_policy, args.archive_tag
            )
            counts["released"] += released
            counts["reused"] += len(train_dates) - released
            archive = load_archive(ws)
            for model, corrected in per_rep:
                fc = forecast_archive(
                    archive, args.holdout, model, level=0.9, clip_corrected=corrected
                )
                per_rep[(model, corrected)].append(_per_category_mape(fc, held))
                coverage[(model, corrected)].append(_coverage(fc, held))
            shares.append(_clip_shares(archive, train_truth))
            fc = forecast_archive(archive, args.holdout, "ets-topdown", 0.9, clip_pooling="equal")
            equal_mape.append(_per_category_mape(fc, held))
            equal_cov.append(_coverage(fc, held))
            print(
                f"  ETS top-down, clip excess pooled equally (earlier): mean MAPE "
                f"{np.mean(list(equal_mape[-1].values())):.2f} % cov {equal_cov[-1]:.2f}",
                flush=True,
            )
            fc = forecast_archive(archive, args.holdout, "ets-topdown", 0.9, interval="posterior")
            posterior.append(_coverage(fc, held))
            if args.origins:
                origin_cov.append(
                    _origin_coverage(archive, truth, train, args.origins, args.holdout)
                )
                means = {k: float(np.mean(v)) for k, v in origin_cov[-1].items()}
                print(
                    f"  ETS top-down coverage over {args.origins} origins: posterior "
                    f"{means['posterior']:.3f}, plug-in {means['plug-in']:.3f}; holdout "
                    f"posterior {posterior[-1]:.2f}",
                    flush=True,
                )
            print(
                f"{label_of}eps={epsilon:g} rep {rep}: mean MAPE "
                + ", ".join(
                    f"{MODELS[m]}{'' if c else ' (no clip correction)'} "
                    f"{np.mean(list(per_rep[(m, c)][-1].values())):.2f} %"
                    + (f" cov {coverage[(m, c)][-1]:.2f}" if m != "seasonal-naive" else "")
                    for m, c in variants
                )
                + f"; clipped share {shares[-1]}",
                flush=True,
            )
        timings[f"{label_of}eps{epsilon:g}_s"] = time.perf_counter() - t0
        for (model, corrected), reps in per_rep.items():
            cats = sorted(reps[0])
            label = MODELS[model] + ("" if corrected else " (no clip correction)")
            results["methods"][f"DP archive {label_of}eps={epsilon:g}, {label}"] = {
                "epsilon": epsilon,
                "policy": params_policy,
                "model": model,
                "clip_corrected": corrected,
                "per_category": {c: _summary([r[c] for r in reps]) for c in cats},
                "mean_mape": _summary([float(np.mean(list(r.values()))) for r in reps]),
                **(
                    {
                        "coverage_90": _summary(coverage[(model, corrected)]),
                        "coverage_90_per_archive": coverage[(model, corrected)],
                    }
                    if model != "seasonal-naive"
                    else {}
                ),
            }
        results.setdefault("clipped_share", {})[f"{label_of}eps={epsilon:g}"] = shares
        # the posterior interval on the same archives (the default one, plug-in, is above)
        results["methods"][
            f"DP archive {label_of}eps={epsilon:g}, ETS top-down (posterior interval)"
        ] = {
            "epsilon": epsilon,
            "policy": params_policy,
            "model": "ets-topdown",
            "clip_corrected": True,
            "interval": "posterior",
            "per_category": results["methods"][
                f"DP archive {label_of}eps={epsilon:g}, {MODELS['ets-topdown']}"
            ]["per_category"],
            "mean_mape": results["methods"][
                f"DP archive {label_of}eps={epsilon:g}, {MODELS['ets-topdown']}"
            ]["mean_mape"],
            "coverage_90": _summary(posterior),
            "coverage_90_per_archive": posterior,
        }
        results["methods"][
            f"DP archive {label_of}eps={epsilon:g}, ETS top-down (clip excess pooled equally)"
        ] = {
            "epsilon": epsilon,
            "policy": params_policy,
            "model": "ets-topdown",
            "clip_corrected": True,
            "clip_pooling": "equal",
            "per_category": {
                c: _summary([r[c] for r in equal_mape]) for c in sorted(equal_mape[0])
            },
            "mean_mape": _summary([float(np.mean(list(r.values()))) for r in equal_mape]),
            "coverage_90": _summary(equal_cov),
            "coverage_90_per_archive": equal_cov,
        }
        if origin_cov:
            results.setdefault("coverage_over_origins", {})[f"{label_of}eps={epsilon:g}"] = {
                interval: {
                    "per_archive_mean": [float(np.mean(c[interval])) for c in origin_cov],
                    "per_archive_per_origin": [c[interval] for c in origin_cov],
                }
                for interval in ("posterior", "plug-in")
            }
        # a partial result after each ε, so a long run can be read before it ends
        results["config"] = _config(args, train, manifest)
        results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
        results["archive_months"] = dict(counts)
        write_json(args.out, results)
    results["config"] = _config(args, train, manifest)
    results["complete"] = True
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    results["archive_months"] = dict(counts)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 10, 31))
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="dataset seed (default: a fresh one drawn at run time and printed; the noise "
        "weighting of segments.forecast was developed on seed 877169054's archives)",
    )
    parser.add_argument("--holdout", type=int, default=6)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument(
        "--origins",
        type=int,
        default=0,
        help="also measure each archive's ETS top-down coverage from each of the last N "
        "training months as forecast origin, with both intervals (0: not measured)",
    )
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument(
        "--planned",
        nargs="*",
        default=[],
        metavar="POLICY",
        help="run at the ε per month the accuracy planner gives each named policy (and its "
        "mechanism parameters) instead of --epsilons",
    )
    parser.add_argument(
        "--planned-from",
        default=None,
        metavar="RESULTS_JSON",
        help="the planned ε per month of an earlier run on the same dataset (and --workdir): "
        "its archives are reused, so another forecast version is measured on the same noise "
        "(the planner's scale probe is noisy, a new plan would give new archives)",
    )
    parser.add_argument("--workdir", default="data/workspace/backtest_forecast")
    parser.add_argument(
        "--archive-tag",
        default="",
        help="prefix of the DP archives' folders in --workdir (archives of another code "
        "version are then not reused)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.seed is None:
        args.seed = secrets.randbelow(2**31 - 1_000) + 1_000
    print(f"dataset seed {args.seed}", flush=True)
    results = run(args)
    write_json(args.out, results)
    with pd.option_context("display.width", 120):
        print(backtest_table(results).round(2).to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
