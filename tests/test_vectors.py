"""Norm-bounded per-cell releases: the clip, the mechanism choice, the private bound, the
compositor's loss, and an empirical audit with neighbours that differ by one heavy buyer."""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segments.audit.dp_audit import audit_mechanism
from segments.exceptions import PolicyError
from segments.privacy.bounds import bound_candidates, make_private_bound, private_bound
from segments.privacy.composition import expected_half_width
from segments.privacy.vectors import (
    PersonVectors,
    VectorRelease,
    choose_mechanism,
    clip_to_norm,
    person_matrix,
    repeated_invocations,
)
from segments.schema import PRODUCT_CATEGORIES

KEYS = pl.DataFrame({"category": list(PRODUCT_CATEGORIES)})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 10_000), min_size=4, max_size=4), min_size=1, max_size=20),
    st.integers(1, 5_000),
    st.sampled_from(["l1", "l2"]),
)
def test_clip_never_exceeds_the_norm_and_keeps_small_vectors(rows, bound, norm):
    matrix = np.array(rows, dtype=np.int64)
    clipped = clip_to_norm(matrix, bound, norm)
    size = clipped.sum(axis=1) if norm == "l1" else np.sqrt((clipped**2).sum(axis=1))
    assert (size <= bound + 1e-9).all()
    assert (clipped >= 0).all() and (clipped <= matrix).all()
    original = matrix.sum(axis=1) if norm == "l1" else np.sqrt((matrix**2).sum(axis=1))
    small = original <= bound
    assert (clipped[small] == matrix[small]).all()


def test_person_matrix_sums_a_persons_rows_per_key_and_drops_unknown_keys():
    frame = pl.DataFrame(
        {
            "pid": [7, 7, 9, 9],
            "category": ["paper", "paper", "furniture", "not-a-category"],
            "units": [3, 4, -2, 5],
        }
    )
    matrix = person_matrix(frame, KEYS, ["category"], "units")
    assert matrix.shape == (2, len(PRODUCT_CATEGORIES))
    paper = list(PRODUCT_CATEGORIES).index("paper")
    assert matrix[0, paper] == 7 and matrix[1].sum() == 0  # negative clipped to 0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 30),  # pid
            st.sampled_from([*PRODUCT_CATEGORIES[:4], "not-a-category"]),
            st.sampled_from(["2026-01", "2026-02"]),
            st.integers(-50, 200_000),
        ),
        min_size=0,
        max_size=120,
    ),
    st.integers(1, 300_000),
    st.sampled_from(["l1", "l2"]),
    st.booleans(),
)
def test_sparse_person_vectors_release_exactly_what_the_dense_matrix_does(rows, bound, norm, month):
    """Issue 21: the release clips and sums the persons' vectors sparsely (the dense matrix
    was persons × keys, most of a month-closing's memory at 30 M lines); the norms the
    private bound reads and the clipped sums it releases are the dense ones, exactly."""
    frame = pl.DataFrame(
        rows,
        schema={"pid": pl.UInt64, "category": pl.Utf8, "month": pl.Utf8, "units": pl.Int64},
        orient="row",
    )
    by = ["month", "category"] if month else ["category"]
    keys = (
        pl.DataFrame({"month": ["2026-01", "2026-02"]}).join(KEYS, how="cross") if month else KEYS
    )
    matrix = person_matrix(frame, keys, by, "units")
    sparse = PersonVectors.of(frame, keys, by, "units")
    assert (sparse.n_people, sparse.n_cells) == matrix.shape
    dense = matrix.astype(np.float64)
    norms = dense.sum(axis=1) if norm == "l1" else np.sqrt((dense**2).sum(axis=1))
    assert sparse.norms(norm).tolist() == norms.tolist()
    expected = clip_to_norm(matrix, bound, norm).sum(axis=0)
    assert sparse.clipped_sum(bound, norm).tolist() == expected.tolist()


def test_gaussian_wins_under_zcdp_when_people_touch_many_cells_and_pure_is_laplace():
    assert choose_mechanism("pure", 10.0, 1.0, 1.0) == "laplace"
    k = 10
    assert choose_mechanism("zcdp", k * 100.0, math.sqrt(k) * 100.0, 0.01) == "gaussian"
    # one cell per person (L1 = L2): still Gaussian, z = 1.96 against ln 20 = 3.0
    assert choose_mechanism("zcdp", 100.0, 100.0, 0.01) == "gaussian"
    # Laplace only if its L1 bound were well below the L2 bound (never for one vector)
    assert choose_mechanism("zcdp", 50.0, 100.0, 0.01) == "laplace"
    assert expected_half_width("laplace", 100, 1.0, 0.05) == pytest.approx(100 * math.log(20))


def test_private_bound_finds_the_quantile_and_costs_what_opendp_says():
    rng = np.random.default_rng(3)
    totals = rng.exponential(50.0, 20_000)
    choice = private_bound(totals, alpha=0.9, loss=1.0, upper=10_000)
    truth = np.quantile(totals, 0.9)
    assert truth / 1.25 <= choice.bound <= truth * 1.25
    assert choice.loss == pytest.approx(1.0, rel=1e-6)
    measurement = make_private_bound(bound_candidates(10_000), 0.9, 0.02, "zcdp")
    assert measurement.map(1) <= 0.02 * (1 + 1e-9)
    with pytest.raises(PolicyError, match="alpha"):
        make_private_bound([1.0, 2.0], 1.5, 1.0)
    with pytest.raises(PolicyError, match="increasing"):
        make_private_bound([2.0, 1.0], 0.5, 1.0)


def _release(family="pure", public=100.0, loss=1.0, bound_loss=0.0):
    mechanism = "laplace" if family == "pure" else "gaussian"
    return VectorRelease(
        by=("category",),
        keys=KEYS,
        aggregates=("units",),
        family=family,
        mechanism=mechanism,
        sum_losses={"units": loss},
        bound_losses={"units": bound_loss},
        public_bounds={"units": public},
        upper_bounds={"units": 4_000.0},
        quantile=0.9,
        factor=2.0,
    )


def _cells(n_people: int, heavy: bool, rng: np.random.Generator) -> pl.LazyFrame:
    pid = np.repeat(np.arange(n_people), 3)
    frame = pl.DataFrame(
        {
            "pid": pid,
            "category": rng.choice(PRODUCT_CATEGORIES, pid.size),
            "units": rng.integers(0, 20, pid.size),
        }
    )
    if heavy:  # one buyer of 100 000 reams
        frame = pl.concat(
            [frame, pl.DataFrame({"pid": [10**9], "category": ["paper"], "units": [100_000]})]
        )
    return frame.lazy()


def _paper(answer: pl.LazyFrame) -> float:
    return float(answer.collect().filter(pl.col("category") == "paper")["units"][0])


def test_sums_beyond_32_bits_are_released():
    """A month's SEK over tens of millions of lines passes 2^31 (OpenDP refused it as i32)."""
    big = 1_000_000_000
    release = VectorRelease(
        by=("category",),
        keys=KEYS,
        aggregates=("units",),
        family="pure",
        mechanism="laplace",
        sum_losses={"units": 1_000.0},
        bound_losses={"units": 0.0},
        public_bounds={"units": float(big)},
        upper_bounds={"units": float(big)},
        quantile=0.9,
        factor=2.0,
    )
    cells = pl.DataFrame({"pid": list(range(5)), "category": ["paper"] * 5, "units": [big] * 5})
    paper = _paper(release.run(cells.lazy()).lazy())
    assert paper > 2**31 and abs(paper - 5 * big) < 100 * release.scale("units")


def test_the_vector_release_is_calibrated_against_a_heavy_buyer():
    """Neighbours differing by one person who buys 1000x the bound: the empirical lower bound
    on ε stays below the loss OpenDP computes."""
    rng = np.random.default_rng(5)
    with_heavy, without = _cells(40, True, rng), None
    without = with_heavy.filter(pl.col("pid") != 10**9)
    release = _release(loss=1.0)
    measurement = release.measurement()
    claimed = float(measurement.map(1))
    assert claimed == pytest.approx(1.0, rel=1e-6)
    result = audit_mechanism(
        "norm-bounded units",
        measurement,
        with_heavy,
        without,
        claimed_epsilon=claimed,
        trials=1500,
        statistic=_paper,
    )
    assert result.passed, result.as_dict()
    # the audit's power is shown by the next test (a clip that does not clip is refuted); a
    # lower bound on this calibrated release fell below 0.3 in 2 of 6 runs, so none is asserted


def test_the_audit_catches_a_clip_that_does_not_clip():
    """The same noise, but the clip-and-sum lets the heavy buyer through (a bound of 10⁹
    behind noise calibrated for 100): the audit refutes ε = 1."""
    rng = np.random.default_rng(6)
    with_heavy = _cells(40, True, rng)
    without = with_heavy.filter(pl.col("pid") != 10**9)
    release = _release(loss=1.0)
    broken = release._sum_transformation("units", 1e9) >> dp.m.then_laplace(release.scale("units"))
    paper = list(PRODUCT_CATEGORIES).index("paper")
    result = audit_mechanism(
        "no clip",
        broken,
        with_heavy,
        without,
        claimed_epsilon=1.0,
        trials=300,
        statistic=lambda v: float(v[paper]),
    )
    assert not result.passed


def test_repeated_invocations_reuse_the_clipped_sum_and_draw_fresh_noise(monkeypatch):
    """Inside repeated_invocations (the DP audit's runs) the deterministic clip-and-sum runs
    once per input object, never for another frame; the noise is fresh at every run, with the
    release's scale around the true clipped sum; outside the block nothing is reused."""
    rng = np.random.default_rng(7)
    frame, other = _cells(40, True, rng), _cells(40, False, rng)
    release = _release(loss=1.0)
    measurement = release.measurement()
    true_paper = float(
        release._sum_transformation("units", release.bound("units"))(frame)[
            list(PRODUCT_CATEGORIES).index("paper")
        ]
    )
    calls = []
    of = PersonVectors.of.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        PersonVectors, "of", classmethod(lambda cls, *a: calls.append(1) or of(cls, *a))
    )
    with repeated_invocations():
        runs = np.array([_paper(measurement(frame)) for _ in range(400)])
        assert len(calls) == 1  # the clip-and-sum ran once for 400 runs
        elsewhere = _paper(measurement(other))
        assert len(calls) == 2  # another frame: its own clip-and-sum
    scale = release.scale("units")
    assert len(set(runs)) > 100  # fresh noise every run (integers: some repeat)
    # Laplace(scale) noise: mean within 5 standard errors, mean absolute deviation ~ scale
    assert abs(runs.mean() - true_paper) < 5 * math.sqrt(2) * scale / math.sqrt(runs.size)
    assert 0.8 * scale < np.abs(runs - true_paper).mean() < 1.2 * scale
    other_paper = float(
        release._sum_transformation("units", release.bound("units"))(other)[
            list(PRODUCT_CATEGORIES).index("paper")
        ]
    )
    assert abs(elsewhere - other_paper) < 20 * scale and abs(true_paper - other_paper) > 0
    calls.clear()
    for _ in range(3):
        measurement(frame)
    assert len(calls) == 3  # outside the block: computed at every invocation


def test_repeated_invocations_reuse_the_clipped_excess_and_draw_fresh_noise(monkeypatch):
    """The clip excess of the purchasing series (its second OpenDP step) is computed once per
    input object inside repeated_invocations, as the sums are; its noise is still fresh at
    every run; outside the block it is recomputed every time."""
    rng = np.random.default_rng(8)
    frame = _cells(40, True, rng)
    release = _release(public=100.0, loss=1.0)
    release.excess_losses = {"units": 1.0}
    measurement = release.excess_measurement()
    truth = 100  # the heavy buyer's norm is far above 2 x 100: their excess is the span
    calls = []
    of = PersonVectors.of.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        PersonVectors, "of", classmethod(lambda cls, *a: calls.append(1) or of(cls, *a))
    )
    with repeated_invocations():
        runs = np.array([measurement(frame) for _ in range(400)], dtype=float)
        assert len(calls) == 1  # the excess's per-person step ran once for 400 runs
    scale = release.excess_scale("units")
    assert len(set(runs)) > 100  # fresh noise every run
    assert abs(runs.mean() - truth) < 5 * math.sqrt(2) * scale / math.sqrt(runs.size)
    calls.clear()
    for _ in range(3):
        measurement(frame)
    assert len(calls) == 3  # outside the block: computed at every invocation


@pytest.mark.parametrize("family", ["pure", "zcdp"])
def test_compositor_loss_is_bound_plus_sums_and_the_bound_is_recorded(family):
    rng = np.random.default_rng(7)
    data = _cells(3_000, False, rng)
    release = _release(family, public=None, loss=0.8, bound_loss=0.2)
    assert release.loss == pytest.approx(1.0, rel=1e-6)
    answer = release.run(data)
    choice = release.chosen["units"]
    assert choice.factor == 2.0 and choice.bound <= 4_000.0
    assert choice.bound in {2.0 * c for c in bound_candidates(4_000.0)} | {4_000.0}
    assert answer.columns == ["category", "units"] and answer.height == len(PRODUCT_CATEGORIES)
    # the sums' scale follows the chosen bound
    assert release.scale("units") >= math.ceil(choice.bound) / (
        0.8 if family == "pure" else math.sqrt(2 * 0.8)
    )


def test_a_run_builds_each_aggregates_person_vectors_once_for_all_its_steps(monkeypatch):
    """Issue 21: the private bound (norms), the clipped sums and the clipped excess of one
    aggregate read one build of the persons' vectors inside a run (it was built once per step,
    most of the OpenDP step's time at 10 M lines); the bound and the excess are what each
    step computes alone; a second run builds them afresh."""
    rng = np.random.default_rng(11)
    data = _cells(2_000, True, rng)
    alone = _release(public=None, loss=1e4, bound_loss=1.0)
    alone.excess_losses = {"units": 1e4}  # noise scale 1e-4: the excess is exact
    vectors = PersonVectors.of(data.collect(), KEYS, ["category"], "units")
    norms = vectors.norms("l1")
    release = _release(public=None, loss=1e4, bound_loss=1.0)
    release.excess_losses = {"units": 1e4}
    calls = []
    of = PersonVectors.of.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        PersonVectors, "of", classmethod(lambda cls, *a: calls.append(1) or of(cls, *a))
    )
    answer = release.run(data)
    assert len(calls) == 1  # norms, sums and excess: one build
    c = int(math.ceil(release.bound("units")))
    expected = clip_to_norm(person_matrix(data.collect(), KEYS, ["category"], "units"), c, "l1")
    assert np.abs(answer["units"].to_numpy() - expected.sum(axis=0)).max() <= 1
    span = release.excess_span("units")
    excess = np.clip(np.minimum(norms, c + span) - np.minimum(norms, c), 0, span)
    assert abs(release.excess["units"] - int(np.rint(excess.sum()))) <= 1
    release.run(data)
    assert len(calls) == 2  # another run: its own build
    alone.excess_measurement()(data)
    assert len(calls) == 3  # a step outside a run builds its own


def test_fast_discrete_gaussian_accuracy_is_an_upper_bound_within_one_unit():
    """The fast accuracy (continuous, rounded up, plus one) never understates OpenDP's exact
    discrete-Gaussian half-width and overstates it by at most one unit."""
    from segments.privacy.composition import EXACT_GAUSSIAN_SCALE, discrete_gaussian_accuracy

    for scale in np.geomspace(EXACT_GAUSSIAN_SCALE, 30_000, 12):
        for alpha in (0.5, 0.1, 0.05, 0.025, 0.01):
            exact = dp.discrete_gaussian_scale_to_accuracy(float(scale), alpha)
            fast = discrete_gaussian_accuracy(float(scale), alpha)
            assert exact <= fast <= exact + 1, (scale, alpha, exact, fast)
    # below the threshold it is OpenDP's exact value
    assert discrete_gaussian_accuracy(10.0, 0.05) == dp.discrete_gaussian_scale_to_accuracy(
        10.0, 0.05
    )


# --- per-segment private bounds (issue 14: the mix's clip bias on heavy buyers' segments) --
SEGMENT_KEYS = pl.DataFrame({"segment": ["heavy", "light"]}).join(KEYS, how="cross")


def _segmented(family="pure", loss=0.8, bound_loss=0.2):
    return VectorRelease(
        by=("segment", "category"),
        keys=SEGMENT_KEYS,
        aggregates=("units",),
        family=family,
        mechanism="laplace" if family == "pure" else "gaussian",
        sum_losses={"units": loss},
        bound_losses={"units": bound_loss},
        public_bounds={"units": None},
        upper_bounds={"units": 40_000.0},
        quantile=0.9,
        factor=2.0,
        partition="segment",
    )


def _two_segments(rng: np.random.Generator, people: int = 3_000) -> pl.DataFrame:
    """Light buyers (~10 units a person) and heavy buyers (~1,000): one segment each, each
    heavy-tailed as retail buying is (a tight distribution on the quantile's geometric grid
    ties every candidate above its largest value, and the exponential mechanism then picks
    among them at random)."""
    frames = []
    for segment, scale, offset in (("light", 5, 0), ("heavy", 500, people)):
        pid = np.repeat(np.arange(offset, offset + people), 2)
        frames.append(
            pl.DataFrame(
                {
                    "pid": pid,
                    "segment": segment,
                    "category": rng.choice(PRODUCT_CATEGORIES, pid.size),
                    "units": np.rint(rng.exponential(scale, pid.size)).astype(np.int64),
                }
            )
        )
    return pl.concat(frames)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 12),
            st.sampled_from(["heavy", "light", "other"]),
            st.sampled_from(PRODUCT_CATEGORIES[:3]),
            st.integers(-5, 400),
        ),
        max_size=60,
    ),
    st.sampled_from(["pure", "zcdp"]),
)
def test_group_norms_are_each_groups_own_build(rows, family):
    """Issue 21: the per-segment private bounds read every segment's norms from one build of
    the vectors; each segment's norms are exactly those of a build from its own rows (a
    person in the segment of their first row, other rows dropped; cells outside the keys
    ignored), in the same order."""
    frame = pl.DataFrame(
        rows,
        schema={"pid": pl.UInt64, "segment": pl.Utf8, "category": pl.Utf8, "units": pl.Int64},
        orient="row",
    )
    release = _segmented(family)  # l1 norms under pure DP (Laplace), l2 under zCDP
    first = frame.group_by("pid").agg(pl.col("segment").first().alias("_group"))
    kept = frame.join(first, on="pid").filter(pl.col("segment") == pl.col("_group"))
    got = release.group_norms(frame, "units")
    assert list(got) == ["heavy", "light"]
    for group in ("heavy", "light"):
        rows_of = kept.filter(pl.col("segment") == group).drop("_group")
        alone = PersonVectors.of(rows_of, SEGMENT_KEYS, ["segment", "category"], "units")
        assert got[group].tolist() == alone.norms(release.norm).tolist()


@pytest.mark.parametrize("family", ["pure", "zcdp"])
def test_each_segment_gets_its_own_bound_for_one_quantiles_loss(family):
    """Disjoint segments: each segment's bound is its own private quantile (parallel
    composition), so the compositor's loss is one quantile's plus the sums', as without
    segments; the heavy segment is no longer clipped at the light one's bound, and the
    light segment's cells carry noise for its own, smaller bound."""
    rng = np.random.default_rng(11)
    data = _two_segments(rng)
    release = _segmented(family)
    assert release.loss == pytest.approx(1.0, rel=1e-6)
    assert float(release.bound_measurement("units").map(1)) == pytest.approx(0.2, rel=1e-6)
    answer = release.run(data.lazy())
    bounds = release.group_bounds["units"]
    assert bounds["heavy"] > 20 * bounds["light"]
    assert release.chosen["units"].bound == pytest.approx(max(bounds.values()))
    weights = dict(zip(SEGMENT_KEYS["segment"], release.group_weights("units"), strict=True))
    assert weights["heavy"] == pytest.approx(1.0)
    assert weights["light"] == pytest.approx(bounds["heavy"] / bounds["light"])
    # the released sums, on each segment's own scale, are close to the truth (no clip bias
    # on the heavy segment; the light one's noise follows its own bound)
    truth = data.group_by("segment").agg(pl.col("units").sum())
    released = (
        answer.join(
            pl.DataFrame({"segment": list(weights), "w": list(weights.values())}), on="segment"
        )
        .group_by("segment")
        .agg((pl.col("units") / pl.col("w")).sum())
    )
    joined = truth.join(released, on="segment", suffix="_released")
    for row in joined.iter_rows(named=True):
        assert row["units_released"] == pytest.approx(row["units"], rel=0.05), row


def test_a_noisy_high_pick_of_a_small_segment_is_capped_at_the_spread():
    """A small segment's quantile is noisy and mostly errs high: no segment's bound exceeds
    GROUP_BOUND_SPREAD x the median segment's (post-processing of the quantiles)."""
    from segments.privacy.vectors import GROUP_BOUND_SPREAD

    keys = pl.DataFrame({"segment": ["a", "b", "c"]}).join(KEYS, how="cross")
    release = _segmented()
    release.keys = keys
    rng = np.random.default_rng(12)
    frames = [
        pl.DataFrame(
            {
                "pid": np.arange(o, o + n),
                "segment": s,
                "category": "paper",
                "units": rng.poisson(5, n),
            }
        )
        for s, o, n in (("a", 0, 4_000), ("b", 10_000, 4_000), ("c", 20_000, 3))
    ]
    release.run(pl.concat(frames).lazy())
    bounds = release.group_bounds["units"]
    assert (
        max(bounds.values()) <= GROUP_BOUND_SPREAD * float(np.median(list(bounds.values()))) + 1e-9
    )


def test_a_person_in_two_segments_still_moves_the_sum_by_at_most_the_bound():
    """The stability map says one person moves the weighted sum by at most C (the largest
    segment bound) whatever the data: a crafted person with heavy rows in both segments
    (the light segment's rows weighted up) is clipped to C in L1 all the same."""
    rng = np.random.default_rng(13)
    data = _two_segments(rng, people=500)
    release = _segmented()
    release.group_bounds["units"] = {"heavy": 2_000.0, "light": 20.0}  # weights 1 and 100
    c = int(math.ceil(max(release.group_bounds["units"].values())))
    attacker = pl.DataFrame(
        {
            "pid": [10**9] * 4,
            "segment": ["light", "light", "heavy", "heavy"],
            "category": ["paper", "writing", "paper", "furniture"],
            "units": [10_000, 10_000, 10_000, 10_000],
        }
    )
    transformation = release._sum_transformation("units", float(c))
    with_attacker = np.array(transformation(pl.concat([data, attacker]).lazy()))
    without = np.array(transformation(data.lazy()))
    assert np.abs(with_attacker - without).sum() <= c
    assert transformation.map(1) == c


@pytest.mark.parametrize("family", ["pure", "zcdp"])
def test_the_clipped_excess_is_measured_in_the_compositor_and_charged(family):
    """The series' clipped excess (issue 14): the mass above the bound, up to EXCESS_SPAN x
    the bound, is a third OpenDP step whose loss the compositor adds, and its noisy value is
    an unbiased estimate of the true excess (the clip's bias) at the bound in force."""
    from segments.privacy.vectors import EXCESS_SPAN

    rng = np.random.default_rng(11)
    pid = np.arange(4_000)
    units = np.where(rng.random(pid.size) < 0.1, rng.integers(100, 400, pid.size), 20)
    data = pl.DataFrame({"pid": pid, "category": "paper", "units": units}).lazy()
    release = _release(family, public=100.0, loss=0.8)
    release.excess_losses = {"units": 0.2}
    assert release.loss == pytest.approx(1.0, rel=1e-6)
    assert release.excess_span("units") == math.ceil(EXCESS_SPAN * 100)
    truth = float(np.clip(units - 100, 0, release.excess_span("units")).sum())
    draws = []
    for _ in range(200):
        release.run(data)
        draws.append(release.excess["units"])
    scale = release.excess_scale("units")
    sd = scale * (math.sqrt(2) if family == "pure" else 1.0)
    assert truth > 20 * sd  # the bias measured is large against its noise here
    # unbiased: the mean of 200 draws within 4 standard errors of the true excess
    assert abs(np.mean(draws) - truth) < 4 * sd / math.sqrt(200)
    assert 0.7 * sd < np.std(draws) < 1.3 * sd


def test_the_clipped_excess_is_calibrated_against_a_heavy_buyer():
    """Neighbours differing by one buyer of 1000x the bound: the excess step alone passes the
    empirical audit at its loss (its sensitivity is EXCESS_SPAN x the bound, not the buyer's
    excess), and the same noise without the span's cap is refuted."""
    rng = np.random.default_rng(12)
    with_heavy = _cells(40, True, rng)
    without = with_heavy.filter(pl.col("pid") != 10**9)
    release = _release(loss=1.0)
    release.excess_losses = {"units": 1.0}
    measurement = release.excess_measurement()
    assert float(measurement.map(1)) == pytest.approx(1.0, rel=1e-6)
    passed = audit_mechanism(
        "clipped excess",
        measurement,
        with_heavy,
        without,
        claimed_epsilon=1.0,
        trials=1500,
        statistic=float,
    )
    assert passed.passed, passed.as_dict()
    uncapped = dp.t.make_user_transformation(
        dp.user_domain("PersonCellsLazyFrame", lambda x: isinstance(x, pl.LazyFrame)),
        dp.symmetric_distance(),
        dp.atom_domain(T="i64"),
        dp.absolute_distance(T="i64"),
        function=lambda data: int(
            np.clip(
                PersonVectors.of(data.collect(), KEYS, ["category"], "units").norms("l1") - 100,
                0,
                None,
            ).sum()
        ),
        stability_map=lambda d_in: int(d_in) * 100,
    ) >> dp.m.then_laplace(release.excess_scale("units"))
    refuted = audit_mechanism(
        "excess without the span",
        uncapped,
        with_heavy,
        without,
        claimed_epsilon=1.0,
        trials=300,
        statistic=float,
    )
    assert not refuted.passed


def test_the_clipped_excess_counts_a_weighted_chair_once():
    """Cells arrive multiplied by their category's weight (a chair counts as ten reams); the
    excess is measured in the categories' own units: one buyer of 100 chairs (1,000 on the
    weighted scale) clipped at 100 loses 100 weighted units up to the span, i.e. 10 chairs."""
    release = _release(public=100.0, loss=1.0)
    release.excess_losses = {"units": 1e4}  # noise scale 0.01: the value is exact
    weights = np.ones(len(PRODUCT_CATEGORIES))
    weights[list(PRODUCT_CATEGORIES).index("furniture")] = 10.0
    release.excess_weights = {"units": weights}
    cells = pl.DataFrame({"pid": [1, 2], "category": ["furniture", "paper"], "units": [1000, 150]})
    release.run(cells.lazy())
    assert release.excess["units"] == 10 + 50
