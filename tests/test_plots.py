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

from segments import plot_county_map, plot_privacy_cost, plot_privacy_utility
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
    c = counties()  # pandas, as the public API hands it out
    c["count"] = c["population"] / 1000
    c["lo"], c["hi"] = c["count"] - 15, c["count"] + 15
    ax = plot_county_map(c, "count", interval=("lo", "hi"), label="customers")
    texts = {t.get_text().split("\n")[0]: t for t in ax.texts}
    assert set(texts) == set(counties()["county_name_short"])
    stockholm = texts["Stockholm"]
    row = c.set_index("county_code").loc["01"]
    assert stockholm.get_text().split("\n")[1] == f"{row['lo']:,.0f}–{row['hi']:,.0f}"
    # light text on the darkest fill, dark text on the lightest one
    smallest = c.sort_values("count")["county_name_short"].iloc[0]
    largest = c.sort_values("count")["county_name_short"].iloc[-1]
    assert sum(to_rgb(texts[smallest].get_color())) == 3.0  # white on dark viridis
    assert sum(to_rgb(texts[largest].get_color())) == 0.0  # black on yellow
    assert all(t.get_fontsize() >= 6.5 for t in ax.texts)


def _sweep() -> pl.DataFrame:
    eps = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    return pl.DataFrame(
        {
            "epsilon": eps * 2,
            "design": ["before"] * 6 + ["now"] * 6,
            "error": [0.3 / e for e in eps] + [0.1 / e for e in eps],
        }
    ).sample(fraction=1.0, shuffle=True, seed=1)  # unordered rows must still draw ordered lines


def test_privacy_utility_draws_one_ordered_line_per_group_and_marks_the_real_epsilon() -> None:
    ax = plot_privacy_utility(
        _sweep(),
        "error",
        by="design",
        labels={"before": "per-cell bounds", "now": "norm bound"},
        used_epsilon=0.4,
        used_label="planned ε per month",
        budget_epsilon=4.0,
        target=0.5,
        target_label="policy max_relative_error",
        percent=True,
    )
    curves = [line for line in ax.lines if line.get_label() in ("per-cell bounds", "norm bound")]
    assert [c.get_label() for c in curves] == ["per-cell bounds", "norm bound"]
    for line in curves:  # no zig-zag: each group is its own line, sorted by ε
        x = np.asarray(line.get_xdata(), dtype=float)
        assert len(x) == 6 and np.all(np.diff(x) > 0)
    assert np.allclose(curves[1].get_ydata(), [100 * 0.1 / e for e in curves[1].get_xdata()])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "planned ε per month: ε = 0.4" in legend
    assert "the policy's whole budget per period: ε = 4 (beyond it, shaded)" in legend
    assert "policy max_relative_error: 50 %" in legend
    # the value each curve has at the ε really used is written beside it (log-log interpolation)
    notes = sorted(float(t.get_text().split()[0]) for t in ax.texts)
    assert notes == pytest.approx([100 * 0.1 / 0.4, 100 * 0.3 / 0.4], rel=1e-6)
    # the region beyond the whole budget is shaded
    (shade,) = ax.patches
    left = shade.get_bbox().x0  # in data coordinates
    assert left == pytest.approx(4.0) and shade.get_bbox().x1 > 4.0
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_privacy_utility_names_a_missing_column() -> None:
    with pytest.raises(ValueError, match="curve has no column 'mape'"):
        plot_privacy_utility(_sweep(), "mape")


def test_intervals_by_key_draw_each_line_with_its_interval_and_hollow_zero_cells() -> None:
    import pandas as pd

    from segments import plot_intervals_by_key

    table = pd.DataFrame(
        {
            "category": ["paper"] * 3 + ["toner_ink"] * 3,
            "category_name": ["Paper"] * 3 + ["Toner ink"] * 3,
            "month": ["2026-01", "2026-02", "2026-03"] * 2,
            "units": [100, 0, 50, 10, 20, 30],
        }
    )
    table["units_lower"] = table["units"] - 40
    table["units_upper"] = table["units"] + 40
    ax = plot_intervals_by_key(table, "month", "units", by="category")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Paper", "Toner ink"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2026-01", "2026-02", "2026-03"]
    # paper's bars reach from lower to upper; hollow markers where the interval reaches 0
    paper = ax.containers[0]
    segments = paper.lines[2][0].get_segments()
    assert [(s[0][1], s[1][1]) for s in segments] == [(60, 140), (-40, 40), (10, 90)]
    hollow = [c for c in ax.collections if c.get_facecolor().size and c.get_offsets().size]
    assert sum(len(c.get_offsets()) for c in hollow) == 4  # paper 0; toner 10, 20, 30
    with pytest.raises(ValueError, match="has no column 'units_scale'"):
        plot_intervals_by_key(table, "month", "units_scale")


def test_interval_panels_draw_the_largest_keys_with_intervals_and_withheld_cells() -> None:
    import numpy as np
    import pandas as pd

    from segments import plot_interval_panels

    months = ["2026-01", "2026-02", "2026-03"]
    table = pd.DataFrame(
        {
            "category": ["paper"] * 3 + ["toner_ink"] * 3 + ["furniture"] * 3,
            "category_name": ["Paper"] * 3 + ["Toner ink"] * 3 + ["Furniture"] * 3,
            "month": months * 3,
            "units": [100.0, 0.0, 50.0, 300.0, np.nan, 200.0, 1.0, 2.0, 3.0],
        }
    )
    table["units_lower"] = table["units"] - 40
    table["units_upper"] = table["units"] + 40
    table["units_status"] = ["published"] * 4 + ["not published: too few"] + ["published"] * 4
    axes = plot_interval_panels(table, "month", "units", panel="category", top=2, ncols=2)
    flat = axes.ravel()
    # largest released total first; the rest named, not drawn
    assert [ax.get_title() for ax in flat] == ["Toner ink", "Paper"]
    assert "1 more with smaller released totals, not drawn: Furniture" in (
        flat[0].figure.get_suptitle()
    )
    toner, paper = flat
    bars = toner.containers[0].lines[2][0].get_segments()
    assert [(b[0][1], b[1][1]) for b in bars] == [(260, 340), (160, 240)]  # withheld: no bar
    crosses = [c for c in toner.collections if c.get_offsets().size and c.get_paths()]
    assert any(list(map(tuple, c.get_offsets())) == [(1.0, 0.0)] for c in crosses)
    assert [t.get_text() for t in toner.texts] == ["withheld"]
    assert len(paper.texts) == 0 and paper.get_ylim()[0] == 0 == toner.get_ylim()[0]
    hollow = [c for c in paper.collections if c.get_facecolor().size and c.get_offsets().size]
    assert [tuple(p) for c in hollow for p in c.get_offsets()] == [(1.0, 0.0)]  # reaches 0
    with pytest.raises(ValueError, match="has no column 'segment'"):
        plot_interval_panels(table, "month", "units", panel="segment")


def test_rows_removed_and_class_sizes_draw_what_they_are_given() -> None:
    import pandas as pd

    from segments import plot_class_sizes, plot_rows_removed

    rules = pd.DataFrame(
        {
            "rule": ["retention: segmentation: orders older than 24 months", "opt-outs", "x"],
            "clause_ids": ["AO-3", "AO-6", "AO-7"],
            "rows_removed": [120, 7, 0],
        }
    )
    ax = plot_rows_removed(rules, title="t")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["AO-6: opt-outs", "AO-3: orders older than 24 months"]  # none for "x"
    assert sorted(p.get_width() for p in ax.patches) == [7, 120]
    ax = plot_class_sizes([5, 5, 6, 40], k=5)
    assert sum(p.get_height() for p in ax.patches) == 4
    assert ax.lines[0].get_xdata()[0] == 5 and ax.get_legend().get_texts()[0].get_text() == "k = 5"


def test_county_map_hatches_and_marks_the_counties_a_release_marks_unreliable() -> None:
    """Issue 14: a release's ``<column>_reliable`` mark is shown on the map, not dropped."""
    import matplotlib.pyplot as plt

    c = counties()
    c["count"] = c["population"] / 1000
    c["count_reliable"] = c["county_code"] != "09"  # Gotland: too few people for its noise
    ax = plot_county_map(c, "count")
    assert [col for col in ax.collections if col.get_hatch()]
    names = [t.get_text().split("\n")[0] for t in ax.texts]
    assert [n for n in names if n.endswith("†")] == ["Gotland †"]
    assert any(t.get_text().startswith("† hatched: 1 count unreliable") for t in ax.texts)
    plt.close("all")
    plain = plot_county_map(c.drop(columns="count_reliable"), "count")
    assert not [col for col in plain.collections if col.get_hatch()]
    plt.close("all")
