"""The library's charts tell the truth: checked on the drawn artists, not by eye alone."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import polars as pl
import pytest
from matplotlib.colors import to_rgb

from segments import plot_county_map, plot_privacy_cost
from segments.geography import counties


@pytest.fixture(autouse=True)
def _close() -> None:
    yield
    plt.close("all")


def _backtest() -> pd.DataFrame:
    rows = []
    for eps in (0.25, 0.5, 1.0, 2.0):
        for model, base in (("ETS", 6.0), ("seasonal-naive", 8.5)):
            m = base + 1 / eps
            rows.append(
                {
                    "method": f"DP archive eps={eps:g}, {model}",
                    "epsilon": eps,
                    "mape_median": m,
                    "mape_q10": m - 0.5,
                    "mape_q90": m + 0.5,
                }
            )
    for model, base in (("ETS", 6.0), ("seasonal-naive", 8.5)):
        rows.append(
            {
                "method": f"true totals, {model}",
                "epsilon": np.nan,
                "mape_median": base,
                "mape_q10": base,
                "mape_q90": base,
            }
        )
    return pd.DataFrame(rows)


def test_privacy_cost_draws_one_line_per_method_with_its_own_baseline() -> None:
    ax = plot_privacy_cost(_backtest())
    handles, labels = ax.get_legend_handles_labels()
    assert sorted(labels) == [
        "ETS from the DP archive (median, 10–90 %)",
        "ETS from the true totals",
        "seasonal-naive from the DP archive (median, 10–90 %)",
        "seasonal-naive from the true totals",
    ]
    # each method's line runs over ε in order: no zig-zag between the methods
    lines = [c.lines[0] for c in ax.containers]
    assert len(lines) == 2
    for line in lines:
        x, y = line.get_data()
        assert np.all(np.diff(x) > 0) and np.all(np.diff(y) < 0)
    assert abs(lines[0].get_ydata()[-1] - 6.5) < 1e-9  # ETS at ε = 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.25", "0.5", "1", "2"]


def test_county_map_names_every_county_with_its_interval_readable_on_its_fill() -> None:
    c = (
        counties()
        .with_columns(
            (pl.col("population") / 1000).alias("count"),
        )
        .with_columns((pl.col("count") - 15).alias("lo"), (pl.col("count") + 15).alias("hi"))
    )
    ax = plot_county_map(c, "count", interval=("lo", "hi"), label="customers")
    texts = {t.get_text().split("\n")[0]: t for t in ax.texts}
    assert set(texts) == set(counties()["county_name_short"])
    stockholm = texts["Stockholm"]
    row = c.filter(pl.col("county_code") == "01").row(0, named=True)
    assert stockholm.get_text().split("\n")[1] == f"{row['lo']:,.0f}–{row['hi']:,.0f}"
    # light text on the darkest fill, dark text on the lightest one
    smallest = c.sort("count")["county_name_short"][0]
    largest = c.sort("count")["county_name_short"][-1]
    assert sum(to_rgb(texts[smallest].get_color())) == 3.0  # white on dark viridis
    assert sum(to_rgb(texts[largest].get_color())) == 0.0  # black on yellow
    assert all(t.get_fontsize() >= 6.5 for t in ax.texts)
