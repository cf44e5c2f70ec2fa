"""Benchmark: does the segmentation find the planted archetypes on data nobody tuned it to?

Goals (issue 20): on datasets generated with seeds the selection rule was never tuned on, at
each size from 8,000 accounts up, ARI >= 0.8 against the planted archetypes on at least 9 of
10 seeds and >= 0.75 at worst, and k equal to the planted number (6) on at least 9 of 10.
With ``--private`` it also fits the policy's DP k-means (``privacy.private_segments_*``, the
policy's ε) on the same datasets and reports its ARI against the exploratory partition (goal
>= 0.7, issue 14) and whether any noisy count it would publish is negative.

The dataset seeds are drawn at run time from a master seed the benchmark prints (default:
fresh entropy), never from the seeds the rule and the features were tuned on (listed in
``TUNING_SEEDS``; they are skipped if drawn). Each dataset goes through the real path:
``segments.synth.generate`` (36 months, as of 2026-10-31) → ``segments.prepare.prepare``
(AllOffice, purpose ``segmentation``) → ``customer_features`` → ``fit_segments`` with its
defaults and ``seed=0`` (as ``segments segment`` runs it). Each dataset is generated once,
scored, and deleted; the truth tables are read only to score.

Usage::

    .venv/bin/python benchmarks/bench_segments_heldout.py [--seed S] [--n-seeds 10]
        [--sizes 5000 8000 20000 50000] [--private] [--output results/x.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from _common import print_summary, segmentation_features, write_seeded_runs
from sklearn.metrics import adjusted_rand_score

from segments.policy import Policy
from segments.segmentation import FeatureSpec, fit_segments, planted_archetypes
from segments.synth import ARCHETYPES
from segments.synth.generate import generate
from segments.workspace import Workspace

AS_OF = dt.date(2026, 10, 31)
MONTHS = 36
POLICY = "alloffice"
#: Seeds of the datasets the features and the selection rule were tuned on (8,000 accounts:
#: 101-106; 5,000 and 20,000: 101-102; 50,000: 101), and the default dataset's seed 7.
TUNING_SEEDS = frozenset({7, 101, 102, 103, 104, 105, 106})
PLANTED_K = len(ARCHETYPES)


def draw_seeds(master: int, n: int) -> list[int]:
    """``n`` distinct dataset seeds from the master seed, none of them a tuning seed."""
    rng = np.random.default_rng(master)
    seeds: list[int] = []
    while len(seeds) < n:
        s = int(rng.integers(1_000, 2**31 - 1))
        if s not in TUNING_SEEDS and s not in seeds:
            seeds.append(s)
    return seeds


def make_dataset(root: Path, accounts: int, seed: int, policy: Any) -> tuple[pd.DataFrame, Any]:
    """Generate, prepare and featurise one dataset; return features and planted truth."""
    ws = Workspace(root)
    generate(
        ws, customers=accounts, months=MONTHS, as_of=AS_OF, seed=seed, progress=False, workers=1
    )
    features = segmentation_features(ws, policy, AS_OF)
    return features, planted_archetypes(ws, pl.Series(features["person_id"]))


def private_fit(features: pd.DataFrame, policy: Any, exploratory: np.ndarray) -> dict[str, Any]:
    """The policy's DP k-means, as ``segments segment --private`` configures it, on the same
    people: ARI against the exploratory labels and the counts it would publish (noise from
    OpenDP: not seeded)."""
    from segments.privacy.kmeans import private_features, private_model

    privacy = policy.privacy
    X, _ = private_features(features, privacy.feature_bounds)
    model = private_model(privacy, seed=0)
    t0 = time.perf_counter()
    labels = model.fit_predict(X)
    published = np.asarray(model.published_counts_)
    return {
        "private_ari": float(adjusted_rand_score(exploratory, labels)),
        "private_k": int(model.n_clusters),
        "private_loss": float(model.privacy_loss_),
        "private_min_noisy_count": float(np.min(model.noisy_counts_)),
        "private_negative_counts": int((published < 0).sum()),
        "private_s": round(time.perf_counter() - t0, 2),
    }


def run_one(accounts: int, seed: int, policy: Any, with_private: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"heldout-{accounts}-{seed}-"))
    try:
        t0 = time.perf_counter()
        features, truth = make_dataset(root / "w", accounts, seed, policy)
        t_data = time.perf_counter() - t0
        if pd.isna(truth).any():
            raise SystemExit(f"seed {seed}: a person without a planted archetype")
        t1 = time.perf_counter()
        model = fit_segments(features, FeatureSpec(dict(policy.privacy.feature_bounds)), seed=0)
        t_fit = time.perf_counter() - t1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sel = model.selection
    row = {
        "accounts": accounts,
        "seed": seed,
        "people": len(features),
        "k": model.k,
        "ari": float(adjusted_rand_score(truth, model.labels_)),
        "runner_up": sel.runner_up if sel else None,
        "margin": sel.margin if sel else None,
        "too_close_to_call": list(sel.too_close_to_call) if sel else [],
        "data_s": round(t_data, 2),
        "segment_s": round(t_fit, 2),
    }
    if with_private:
        row.update(private_fit(features, policy, model.labels_))
    return row


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for accounts, g in rows.groupby("accounts"):
        n = len(g)
        line = {
            "accounts": accounts,
            "n_seeds": n,
            "ari_median": g["ari"].median(),
            "ari_worst": g["ari"].min(),
            "ari_ge_0.8": f"{int((g['ari'] >= 0.8).sum())}/{n}",
            "k_eq_planted": f"{int((g['k'] == PLANTED_K).sum())}/{n}",
            "k_chosen": " ".join(str(k) for k in g["k"]),
        }
        line["goal_met"] = bool(
            int(str(accounts)) < 8000
            or (
                (g["ari"] >= 0.8).sum() >= 0.9 * n
                and g["ari"].min() >= 0.75
                and (g["k"] == PLANTED_K).sum() >= 0.9 * n
            )
        )
        if "private_ari" in g:
            line["private_ari_median"] = g["private_ari"].median()
            line["private_ari_worst"] = g["private_ari"].min()
            line["private_ari_ge_0.7"] = f"{int((g['private_ari'] >= 0.7).sum())}/{n}"
            line["private_negative_counts"] = int(g["private_negative_counts"].sum())
        out.append(line)
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="master seed (default: fresh, printed)")
    parser.add_argument("--n-seeds", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 8_000, 20_000, 50_000])
    parser.add_argument("--private", action="store_true", help="also fit the policy's DP k-means")
    parser.add_argument("--output", type=Path, help="write rows and summary as JSON")
    args = parser.parse_args()
    master = args.seed if args.seed is not None else secrets.randbelow(2**31)
    seeds = draw_seeds(master, args.n_seeds)
    print(f"master seed {master} -> dataset seeds {seeds}", flush=True)
    policy = Policy.load(POLICY)
    rows = []
    for accounts in args.sizes:
        for seed in seeds:
            row = run_one(accounts, seed, policy, args.private)
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    summary = summarise(table)
    print_summary(summary)
    if args.output:
        write_seeded_runs(args.output, master, seeds, rows, summary)
    big = summary[summary["accounts"] >= 8000]
    print("PASS" if bool(big["goal_met"].all()) else "FAIL", "(goals from 8,000 accounts up)")


if __name__ == "__main__":
    main()
