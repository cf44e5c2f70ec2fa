"""The category mix marks the cells whose noise is wider than the policy accepts (issue 14).

The accuracy plan's ±10 % is a typical cell's. A small segment's cells are small and its own
private bound is unreliable, so the table must not imply the plan's figure for them: each
cell carries ``<agg>_reliable``, false where its interval's half-width exceeds the policy's
``max_relative_error`` times the published value.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from release_helpers import run_unaccounted

from segments.policy import Policy
from segments.privacy._frames import write_prepared_frames
from segments.privacy.planner import REFUSAL_CONFIDENCE
from segments.privacy.releases import plan_release
from segments.privacy.specs import SPECS, PrivacyParams, SegmentSource

AS_OF = dt.date(2026, 3, 1)


@pytest.fixture(scope="module")
def mix_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, PrivacyParams]:
    folder = tmp_path_factory.mktemp("prepared")
    frames = write_prepared_frames(folder, 800, 12_000, seed=np.random.default_rng(7))
    params = PrivacyParams.from_policy(Policy.load("alloffice"), "statistics")
    with plan_release(
        SPECS["category_mix"].with_epsilon(8.0),
        params,
        customers=frames["customers"],
        lines=frames["lines"],
        as_of=AS_OF,
        segments=SegmentSource.category_rule(),
        # the intervals shown at the level every mark is judged at, so a test can read the
        # mark off the table's own interval
        confidence=REFUSAL_CONFIDENCE,
    ) as plan:
        table = plan._tables_pl(run_unaccounted(plan))["category_by_segment"]
    return table, params


def test_each_cell_says_whether_its_noise_is_within_the_policys_limit(mix_table):
    table, params = mix_table
    for agg in ("sek", "units"):
        half = (table[f"{agg}_upper"] - table[f"{agg}_noisy"]).to_numpy()
        value = table[agg].to_numpy().astype(float)
        within = (value > 0) & (half <= params.max_relative_error * value)
        assert table[f"{agg}_reliable"].to_list() == within.tolist()


def test_the_noisy_cells_of_a_small_release_are_marked_not_passed_off_as_typical(mix_table):
    """800 customers over ten segments: cells of a few hundred SEK under noise for a
    segment's own bound; the table marks them (the plan's ±10 % would be a false promise)."""
    table, params = mix_table
    limit = params.max_relative_error
    for agg in ("sek", "units"):
        marked = table.filter(~pl.col(f"{agg}_reliable"))
        assert marked.height > 0
        # a marked cell with a value: its interval is wider than the limit on either side
        shown = marked.filter(pl.col(agg) > 0)
        assert (shown[f"{agg}_upper"] - shown[f"{agg}_noisy"] > limit * shown[agg]).all()
