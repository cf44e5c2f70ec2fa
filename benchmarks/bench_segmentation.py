"""Benchmark: features, model selection and labelling of 1M customers from >= 20M lines.

Target (issue 4): at most 90 s end to end on the 2-core machine, peak memory at most 6 GB.

Usage::

    .venv/bin/python benchmarks/bench_segmentation.py [--persons 1000000] [--dir DIR]
    .venv/bin/python benchmarks/bench_segmentation.py --workspace W   # prepared frames of W
    .venv/bin/python benchmarks/bench_segmentation.py --baseline-src /tmp/old/src  # before/after

Without ``--workspace`` it first synthesises prepared-shaped frames (32-hex pseudonyms as
``segments prepare`` writes them, six archetypes with distinct category mixes, frequencies and
basket sizes) into ``--dir`` (untimed). The timed run happens in a fresh subprocess, so its
peak RSS counts only the segmentation stage: scan the Parquet files lazily, compute every
feature (polars), choose k on a 20 000-person subsample (silhouette, BIC, bootstrap ARI),
fit on everyone and label everyone. A baseline in the same run — one lazy group-by sum of
spend per person over the same lines — puts the time in proportion to the machine's speed;
wall and CPU seconds are both reported (CPU seconds are steadier on a shared machine).
``--baseline-src`` first runs the same timed stage with another checkout's ``src`` on the same
frames (e.g. the previous selection rule), so the two are compared in one command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from segments.features import DEFAULT_FEATURE_BOUNDS, customer_features
from segments.geography import municipalities_pl
from segments.schema import CHANNELS, PRODUCT_CATEGORIES
from segments.segmentation import FeatureSpec, fit_segments

AS_OF = dt.date(2026, 6, 30)
# mean orders, mean basket SEK, category weights (PRODUCT_CATEGORIES order), channel weights
_ARCHETYPES = (
    (9.0, 3000, (6, 5, 2, 3, 1, 1, 1, 1, 1, 1), (0.55, 0.05, 0.40)),
    (4.0, 900, (3, 2, 2, 1, 1, 1, 1, 1, 2, 4), (0.55, 0.32, 0.13)),
    (2.0, 700, (2, 2, 1, 1, 3, 1, 1, 3, 5, 1), (0.86, 0.11, 0.03)),
    (5.0, 2500, (4, 1, 5, 2, 1, 1, 2, 1, 1, 1), (0.40, 0.03, 0.57)),
    (6.0, 1500, (1, 1, 1, 1, 1, 8, 6, 1, 1, 1), (0.80, 0.05, 0.15)),
    (1.5, 400, (3, 3, 4, 1, 2, 1, 1, 1, 2, 2), (0.33, 0.64, 0.03)),
)


def _hex32(values: np.ndarray) -> pl.Series:
    return pl.Series([f"{v:032x}" for v in values.tolist()], dtype=pl.Utf8)


def synthesise(folder: Path, n_persons: int, seed: int = 0) -> dict[str, int]:
    """Write prepared-shaped customers.parquet and lines.parquet; return row counts."""
    rng = np.random.default_rng(seed)
    arch = rng.integers(0, len(_ARCHETYPES), n_persons)
    mean_orders = np.array([a[0] for a in _ARCHETYPES])[arch]
    n_orders = rng.poisson(mean_orders) + 1
    order_person = np.repeat(np.arange(n_persons), n_orders)
    n_lines = rng.integers(1, 8, order_person.size) + (rng.random(order_person.size) < 0.9)
    line_order = np.repeat(np.arange(order_person.size, dtype=np.int64), n_lines)
    line_arch = arch[order_person][line_order]
    mixes = np.array([a[2] for a in _ARCHETYPES], dtype=float)
    mixes = (mixes / mixes.sum(axis=1, keepdims=True)).cumsum(axis=1)
    category = np.zeros(line_order.size, dtype=np.int8)
    u = rng.random(line_order.size)
    for c in range(len(PRODUCT_CATEGORIES) - 1):
        category += u > mixes[line_arch, c]
    basket = np.array([a[1] for a in _ARCHETYPES], dtype=float)[line_arch]
    amount = np.round(basket / n_lines[line_order] * rng.lognormal(0, 0.5, line_order.size), 2)
    channel_cum = np.array([a[3] for a in _ARCHETYPES]).cumsum(axis=1)[arch[order_person]]
    channel = (rng.random(order_person.size)[:, None] > channel_cum[:, :2]).sum(axis=1)
    day = rng.integers(0, 425, order_person.size)  # 14 months back from as_of
    persons = _hex32(rng.choice(2**62, n_persons, replace=False))
    orders = _hex32(rng.choice(2**62, order_person.size, replace=False))
    line_idx = pl.Series(line_order)
    lines = pl.DataFrame(
        {
            "person_id": persons.gather(pl.Series(order_person).gather(line_idx)),
            "order_id": orders.gather(line_idx),
            "order_date": pl.Series(np.datetime64(AS_OF, "D") - day).gather(line_idx),
            "channel": pl.Series(np.array(CHANNELS)[channel]).gather(line_idx),
            "product_id": pl.Series(category.astype(np.int32) * 40 + 1),
            "category": pl.Series(np.array(PRODUCT_CATEGORIES)[category]),
            "quantity": pl.Series(np.ones(line_order.size, dtype=np.int32)),
            "amount_sek": pl.Series(amount),
        }
    ).with_columns(pl.col("order_date").cast(pl.Date))
    munis = municipalities_pl()
    muni = rng.integers(0, munis.height, n_persons)
    private = np.isin(arch, (2, 5)) & (rng.random(n_persons) < 0.8)
    customers = pl.DataFrame(
        {
            "person_id": persons,
            "customer_type": np.where(private, "private", "business"),
            "size_band": pl.Series(
                [None if p else "10-49" for p in private.tolist()], dtype=pl.Utf8
            ),
            "municipality_code": munis["municipality_code"].gather(muni),
            "county_code": munis["county_code"].gather(muni),
            "marketing_opt_out": rng.random(n_persons) < 0.05,
            "profiling_eligible": rng.random(n_persons) < 0.9,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    lines.write_parquet(folder / "lines.parquet", row_group_size=1_000_000)
    customers.write_parquet(folder / "customers.parquet")
    return {"persons": n_persons, "orders": int(order_person.size), "lines": lines.height}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads): steadier than wall time on a
    shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_run(folder: Path, as_of: dt.date, selection_sample: int) -> dict[str, float]:
    """The measured stage; run in a fresh process so peak RSS is the stage's own."""
    lines = pl.scan_parquet(folder / "lines.parquet")
    customers = pl.scan_parquet(folder / "customers.parquet")
    t0, c0 = time.perf_counter(), _cpu_seconds()
    lines.group_by("person_id").agg(pl.col("amount_sek").sum()).collect()
    baseline, baseline_cpu = time.perf_counter() - t0, _cpu_seconds() - c0

    t0, c0 = time.perf_counter(), _cpu_seconds()
    features = customer_features(lines, customers, as_of=as_of)
    t_features, cpu_features = time.perf_counter() - t0, _cpu_seconds() - c0
    t1 = time.perf_counter()
    model = fit_segments(
        features,
        FeatureSpec(DEFAULT_FEATURE_BOUNDS),
        k_range=range(3, 11),
        seed=0,
        selection_sample=selection_sample,
    )  # the defaults (5 resamples per k), as `segments segment` runs it
    t_model = time.perf_counter() - t1
    total, cpu_total = time.perf_counter() - t0, _cpu_seconds() - c0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {
        "persons": len(features),
        "labelled": int(model.labels_.size),
        "k": model.k,
        "selection_sample_size": model.sizes["selection_sample_size"],
        "baseline_groupby_s": round(baseline, 2),
        "baseline_groupby_cpu_s": round(baseline_cpu, 2),
        "features_s": round(t_features, 2),
        "features_cpu_s": round(cpu_features, 2),
        "selection_fit_label_s": round(t_model, 2),
        "total_s": round(total, 2),
        "total_cpu_s": round(cpu_total, 2),
        "total_over_baseline": round(total / baseline, 1),
        "total_cpu_over_baseline_cpu": round(cpu_total / baseline_cpu, 1),
        "peak_rss_gb": round(peak_gb, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="where to synthesise (default: a temp dir)")
    parser.add_argument("--workspace", type=Path, help="use W/prepared/segmentation instead")
    parser.add_argument("--selection-sample", type=int, default=20_000)
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src, timed first")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # the timed subprocess
    parser.add_argument("--as-of", default=AS_OF.isoformat(), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        result = timed_run(args.run, dt.date.fromisoformat(args.as_of), args.selection_sample)
        print(json.dumps(result))
        return
    as_of = AS_OF
    if args.workspace:
        folder = args.workspace / "prepared" / "segmentation"
        report = json.loads((folder / "policy_report.json").read_text())
        as_of, counts = dt.date.fromisoformat(report["as_of"]), report["output_counts"]
    else:
        folder = args.dir or Path(tempfile.mkdtemp(prefix="bench-seg-"))
        if (folder / "lines.parquet").exists():  # reuse frames synthesised by an earlier run
            counts = {
                "lines": pl.scan_parquet(folder / "lines.parquet").select(pl.len()).collect().item()
            }
        else:
            t0 = time.perf_counter()
            counts = synthesise(folder, args.persons)
            print(f"synthesised {counts} in {time.perf_counter() - t0:.1f} s (untimed)", flush=True)
    cmd = [sys.executable, __file__, "--run", str(folder), "--as-of", as_of.isoformat()]
    cmd += ["--selection-sample", str(args.selection_sample)]
    if args.baseline_src:
        env = {**os.environ, "PYTHONPATH": str(args.baseline_src.resolve())}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        baseline = json.loads(out.strip().splitlines()[-1])
        print(json.dumps({"baseline": str(args.baseline_src), **baseline}, indent=2), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({"input": counts, **result}, indent=2))
    if args.baseline_src:
        for key in ("selection_fit_label_s", "total_s", "total_cpu_s"):
            print(f"{key}: baseline {baseline[key]} -> {result[key]} "
                  f"({100 * (result[key] / baseline[key] - 1):+.0f} %)")  # fmt: skip
    ok = result["total_s"] <= 90 and result["peak_rss_gb"] <= 6
    print("PASS" if ok else "FAIL", "(targets: <= 90 s, <= 6 GB)")


if __name__ == "__main__":
    main()
