"""Evaluation only: how much of the DP forecast's MAPE gap is the clip correction's noise?

On the archives a ``backtest_forecast.py`` run left in its ``--workdir``, forecast the held-out
months with ETS top-down three ways: with the charged clip-excess estimate (as published),
with the *realised* clipped share in its place (true minus released over released, training
months: an oracle no forecast has), and with no correction. The oracle bounds what any better
estimate of the clip's share (e.g. one pooled over a year) could gain.

    PYTHONPATH=src python benchmarks/forecast_clip_oracle.py WORKDIR data-50000-36-SEED offix
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from segments.forecast import (
    clip_correction,
    forecast_panel,
    mape,
    noise_variance,
    validate_archive,
)

MEASURES = ("units", "sek")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("dataset", help="the dataset's folder in WORKDIR, data-N-36-SEED")
    parser.add_argument("tag", help="the archives' policy tag, e.g. offix")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    root = Path(args.workdir)
    lines = pl.scan_parquet(root / args.dataset / "prepared" / "statistics" / "lines.parquet")
    truth = (
        lines.group_by(pl.col("order_date").dt.truncate("1mo").alias("month"), "category")
        .agg(pl.col("quantity").sum().alias("units"), pl.col("amount_sek").sum().alias("sek"))
        .collect()
        .to_pandas()
    )
    truth["month"] = pd.to_datetime(truth["month"])
    pattern = f"{args.dataset}-{args.tag}*/releases/archive/monthly_category.parquet"
    means: dict[str, list[float]] = {"estimated": [], "realised": [], "none": []}
    for path in sorted(root.glob(pattern)):
        archive = validate_archive(pd.read_parquet(path))
        months = sorted(archive["month"].unique())
        held = truth[truth["month"] > months[-1]]
        train = truth[truth["month"].isin(months)]
        realised = {
            m: (float((train[m].sum() - archive[m].sum()) / archive[m].sum()), 0.0)
            for m in MEASURES
        }
        values = {m: archive.pivot(index="month", columns="category", values=m) for m in MEASURES}
        noise = {
            m: archive.assign(
                _v=noise_variance(archive[f"{m}_scale"].to_numpy(), archive["mechanism"].to_numpy())
            ).pivot(index="month", columns="category", values="_v")
            for m in MEASURES
        }
        estimated = clip_correction(archive)
        row = {}
        for name, clip in (("estimated", estimated), ("realised", realised), ("none", {})):
            fc = forecast_panel(values, noise, 6, "ets-topdown", 0.9, clip=clip)
            joined = fc[fc["category"] != "total"].merge(
                held, on=["category", "month"], suffixes=("", "_true")
            )
            per_cat = [mape(g["units_true"], g["units"]) for _, g in joined.groupby("category")]
            row[name] = round(float(np.mean(per_cat)), 2)
            means[name].append(row[name])
        print(
            f"{path.parents[2].name}: units r estimated {estimated['units'][0]:.4f}, realised "
            f"{realised['units'][0]:.4f}; mean MAPE {row}",
            flush=True,
        )
    print("mean over archives:", {k: round(float(np.mean(v)), 2) for k, v in means.items()})


if __name__ == "__main__":
    main()
