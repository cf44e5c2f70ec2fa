"""Tests of segments.features: per-person aggregation, the AL-2 category rule, transformers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from prepared_frames import AS_OF, make_prepared
from sklearn.utils.estimator_checks import parametrize_with_checks

from segments.exceptions import SchemaError
from segments.features import (
    CATEGORICAL_FEATURES,
    DEFAULT_FEATURE_BOUNDS,
    LINE_SHARE_FEATURES,
    NUMERIC_FEATURES,
    RFM_FEATURES,
    BoundedScaler,
    FeatureClipper,
    _customer_features_pl,
    _rfm_features_pl,
    category_rule_labels,
    category_rule_labels_pl,
    customer_features,
    make_feature_transformer,
    rfm_features,
)
from segments.schema import PRODUCT_CATEGORIES

P1, P2 = "a" * 16, "b" * 16
D = dt.date


def _lines(rows: list[tuple]) -> pl.DataFrame:
    cols = ("person_id", "order_id", "order_date", "channel", "category", "amount_sek")
    return pl.DataFrame(rows, schema=dict.fromkeys(cols), orient="row").with_columns(
        pl.col("order_date").cast(pl.Date), pl.col("amount_sek").cast(pl.Float64)
    )


@pytest.fixture
def hand_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    lines = _lines(
        [
            (P1, "01", D(2026, 1, 10), "web", "paper", 100.0),
            (P1, "01", D(2026, 1, 10), "web", "toner_ink", 300.0),
            (P1, "02", D(2026, 8, 1), "store", "paper", 600.0),
            (P2, "03", D(2025, 11, 30), "phone", "furniture", 50.0),
        ]
    )
    customers = pl.DataFrame(
        {
            "person_id": [P1, P2],
            "customer_type": ["business", "private"],
            "size_band": ["10-49", None],
            "municipality_code": ["0180", "2584"],  # Stockholm (urban), Kiruna (rural)
            "county_code": ["01", "25"],
        }
    )
    return lines, customers


def test_customer_features_by_hand(hand_frames: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    lines, customers = hand_frames
    f = _customer_features_pl(lines, customers, as_of=D(2026, 8, 31))
    assert f.columns == ["person_id", *NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
    one = f.row(0, named=True)
    assert one["recency_days"] == 30.0
    assert one["frequency_orders"] == 2.0  # orders, not lines
    assert one["monetary_sek"] == 1000.0
    assert one["avg_basket_sek"] == 500.0
    assert one["share_paper"] == pytest.approx(0.7)
    assert one["share_toner_ink"] == pytest.approx(0.3)
    assert one["share_web"] == 0.5 and one["share_store"] == 0.5 and one["share_phone"] == 0.0
    assert one["share_q1"] == pytest.approx(0.4) and one["share_q3"] == pytest.approx(0.6)
    # line shares count lines, not kronor: two of three lines are paper
    assert one["line_share_paper"] == pytest.approx(2 / 3)
    assert one["line_share_toner_ink"] == pytest.approx(1 / 3)
    assert (one["county_code"], one["urban_class"], one["size_band"]) == ("01", "urban", "10-49")
    two = f.row(1, named=True)
    assert (two["urban_class"], two["size_band"], two["customer_type"]) == (
        "rural",
        "n/a",
        "private",
    )
    assert two["share_q4"] == 1.0 and two["share_phone"] == 1.0


def test_features_lazy_equals_eager(hand_frames: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    lines, customers = hand_frames
    eager = _customer_features_pl(lines, customers, as_of=D(2026, 8, 31))
    lazy = _customer_features_pl(lines.lazy(), customers.lazy(), as_of=D(2026, 8, 31))
    assert eager.equals(lazy)


def test_zero_spend_person_has_zero_shares() -> None:
    lines = _lines([(P1, "01", D(2026, 1, 1), "web", "paper", 0.0)])
    f = _rfm_features_pl(lines, as_of=D(2026, 1, 1))
    assert f.row(0)[1:] == (0.0, 1.0, 0.0, 0.0)
    customers = pl.DataFrame(
        {
            "person_id": [P1],
            "customer_type": ["business"],
            "size_band": ["0"],
            "municipality_code": ["0180"],
            "county_code": ["01"],
        }
    )
    full = _customer_features_pl(lines, customers, as_of=D(2026, 1, 1))
    assert full["share_paper"].item() == 0.0


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda ln, c: (ln.drop("channel"), c),
            r"table 'lines', column 'channel'.*required column",
        ),
        (lambda ln, c: (ln.clear(), c), r"table 'lines'.*not empty.*0 order lines"),
        (lambda ln, c: (ln, c.drop("customer_type")), r"table 'customers', column 'customer_type'"),
        (lambda ln, c: (ln, c.filter(pl.col("person_id") == P1)), r"references customers.*'b{16}'"),
    ],
)
def test_customer_features_errors(hand_frames, mutate, match) -> None:
    lines, customers = mutate(*hand_frames)
    with pytest.raises(SchemaError, match=match):
        customer_features(lines, customers, as_of=D(2026, 8, 31))


def test_order_after_as_of_is_refused(hand_frames) -> None:
    lines, customers = hand_frames
    with pytest.raises(SchemaError, match=r"'not after as_of'.*as_of=2026-07-01.*2026-08-01"):
        customer_features(lines, customers, as_of=D(2026, 7, 1))


def test_rfm_features_need_only_rfm_columns() -> None:
    lines = _lines([(P1, "01", D(2026, 1, 1), "web", "paper", 10.0)]).drop("channel", "category")
    assert _rfm_features_pl(lines, as_of=D(2026, 1, 11))["recency_days"].item() == 10.0
    with pytest.raises(SchemaError, match=r"column 'amount_sek'"):
        rfm_features(lines.drop("amount_sek"), as_of=D(2026, 1, 11))


def test_features_on_seeded_prepared_frames() -> None:
    customers, lines, _ = make_prepared(120, seed=3)
    f = _customer_features_pl(lines, customers, as_of=AS_OF)
    assert f.height == 120 and f["person_id"].is_sorted()
    shares = f.select([f"share_{c}" for c in PRODUCT_CATEGORIES]).sum_horizontal()
    assert np.allclose(shares.to_numpy(), 1.0)
    assert np.allclose(f.select("share_web", "share_store", "share_phone").sum_horizontal(), 1.0)
    assert f["frequency_orders"].sum() == lines["order_id"].n_unique()


# --- the AL-2 category rule -----------------------------------------------------------------
def test_category_rule_picks_largest_spend_and_breaks_ties_by_order() -> None:
    lines = _lines(
        [
            (P1, "01", D(2026, 1, 1), "web", "furniture", 100.0),
            (P1, "01", D(2026, 1, 1), "web", "paper", 60.0),
            (P1, "02", D(2026, 1, 2), "web", "paper", 60.0),
            (P2, "03", D(2026, 1, 1), "web", "writing", 0.1),
            (P2, "03", D(2026, 1, 1), "web", "writing", 0.2),
            (P2, "03", D(2026, 1, 1), "web", "toner_ink", 0.3),
        ]
    )
    labels = category_rule_labels_pl(lines)
    # P1: paper 120 > furniture 100. P2: toner_ink 0.30 ties writing 0.1 + 0.2 (not exactly
    # 0.3 in floating point): rounding to öre makes it a tie, and toner_ink comes first.
    assert labels.rows() == [(P1, "paper"), (P2, "toner_ink")]


def test_category_rule_is_row_level() -> None:
    customers, lines, _ = make_prepared(200, seed=5)
    alone = category_rule_labels_pl(lines.filter(pl.col("person_id") == customers["person_id"][0]))
    together = category_rule_labels_pl(lines.sample(fraction=1.0, shuffle=True, seed=1))
    assert together.height == 200
    assert together.filter(pl.col("person_id") == alone["person_id"][0]).equals(alone)
    assert set(together["segment"]) <= set(PRODUCT_CATEGORIES)


def test_category_rule_needs_its_columns() -> None:
    with pytest.raises(SchemaError, match=r"column 'category'"):
        category_rule_labels(pl.DataFrame({"person_id": [P1], "amount_sek": [1.0]}))


# --- transformers ------------------------------------------------------------------------------
_CHECK_BOUNDS = {f"x{i}": (-5.0, 5.0) for i in range(60)}


@parametrize_with_checks(
    [
        FeatureClipper(_CHECK_BOUNDS),
        BoundedScaler({**_CHECK_BOUNDS, "x0": (0.0, 5.0)}, log_features=("x0",)),
    ]
)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_clipper_uses_only_public_bounds() -> None:
    bounds = {"a": (0, 10), "b": (0, 1)}
    X1 = pd.DataFrame({"a": [-1.0, 5.0, 20.0], "b": [0.5, 2.0, 0.1]})
    X2 = pd.DataFrame({"a": [1000.0, 1.0], "b": [0.0, 0.3]})
    clipped = FeatureClipper(bounds).fit(X2).transform(X1)
    assert clipped.tolist() == [[0.0, 0.5], [5.0, 1.0], [10.0, 0.1]]
    scaled = BoundedScaler(bounds).fit(X1).transform(X1)
    assert np.array_equal(scaled, BoundedScaler(bounds).fit(X2).transform(X1))


def test_clipper_pandas_output_keeps_names() -> None:
    X = pd.DataFrame({"recency_days": [1.0, 800.0], "share_web": [0.2, 0.4]})
    out = FeatureClipper(DEFAULT_FEATURE_BOUNDS).set_output(transform="pandas").fit_transform(X)
    assert list(out.columns) == ["recency_days", "share_web"]
    assert out["recency_days"].tolist() == [1.0, 730.0]


@pytest.mark.parametrize(
    ("bounds", "error", "match"),
    [
        ({"a": (0, 1)}, ValueError, r"feature 'b' has no public bound.*privacy.feature_bounds"),
        ({"a": (0, 1), "b": (2, 2)}, ValueError, r"bounds of feature 'b' are \(2, 2\).*lower"),
        ({"a": (0, 1), "b": (0, np.inf)}, ValueError, r"feature 'b'.*finite"),
        ([(0, 1), (0, 1)], TypeError, r"'bounds' must map feature name"),
    ],
)
def test_clipper_bound_errors(bounds, error, match) -> None:
    with pytest.raises(error, match=match):
        FeatureClipper(bounds).fit(pd.DataFrame({"a": [0.5], "b": [0.5]}))


def test_scaler_refuses_negative_lower_bound_on_log_scale() -> None:
    with pytest.raises(ValueError, match=r"log feature 'a' has lower bound -1.0"):
        BoundedScaler({"a": (-1, 1)}, log_features=("a",)).fit(pd.DataFrame({"a": [0.0]}))


def test_feature_transformer_output() -> None:
    customers, lines, _ = make_prepared(60, seed=2)
    f = customer_features(lines, customers, as_of=AS_OF)
    tr = make_feature_transformer(
        DEFAULT_FEATURE_BOUNDS, categorical=("county_code", "size_band"), categorical_weight=0.5
    ).set_output(transform="pandas")
    out = tr.fit_transform(f)
    assert list(out.columns[: len(NUMERIC_FEATURES)]) == list(NUMERIC_FEATURES)
    assert "county_code_01" in out.columns and "size_band_n/a" in out.columns
    assert out[list(NUMERIC_FEATURES)].to_numpy().min() >= 0
    assert out[list(NUMERIC_FEATURES)].to_numpy().max() <= 1
    county = out[[c for c in out.columns if c.startswith("county_code_")]]
    assert np.allclose(county.sum(axis=1), 0.5)  # one-hot times the weight
    with pytest.raises(ValueError, match="Found unknown categories"):
        tr.transform(f.assign(county_code="99"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"categorical": ("postcode",)}, r"'categorical' has unknown feature\(s\) \['postcode'\]"),
        ({"numeric": (), "categorical": ()}, r"no features selected"),
    ],
)
def test_feature_transformer_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_feature_transformer(DEFAULT_FEATURE_BOUNDS, **kwargs)


def test_line_shares_sum_to_one(hand_frames) -> None:
    f = _customer_features_pl(*hand_frames, as_of=D(2026, 8, 31))
    totals = f.select(pl.sum_horizontal(LINE_SHARE_FEATURES)).to_series()
    assert totals.to_list() == pytest.approx([1.0, 1.0])
    assert f.row(1, named=True)["line_share_furniture"] == 1.0


def test_customers_with_a_repeated_person_are_refused(hand_frames) -> None:
    lines, customers = hand_frames
    with pytest.raises(SchemaError, match=r"table 'customers'.*'one row per person'.*'a{16}'"):
        _customer_features_pl(
            lines, pl.concat([customers, customers.head(1)]), as_of=D(2026, 8, 31)
        )


def test_block_weighting_gives_each_group_the_variance_of_one_feature(hand_frames) -> None:
    lines, customers = hand_frames
    people = [lines.with_columns(pl.col("person_id").str.replace("^.", str(i))) for i in range(4)]
    more = pl.concat(people).with_columns(
        pl.col("amount_sek") * pl.int_range(pl.len()).cast(pl.Float64).add(1.0)
    )
    all_customers = pl.concat(
        [customers.with_columns(pl.col("person_id").str.replace("^.", str(i))) for i in range(4)]
    ).unique("person_id")
    f = customer_features(more, all_customers, as_of=D(2026, 8, 31))
    numeric = [*RFM_FEATURES, *LINE_SHARE_FEATURES]
    groups = {"rfm": RFM_FEATURES, "lines": LINE_SHARE_FEATURES}
    ct = make_feature_transformer(
        DEFAULT_FEATURE_BOUNDS, numeric=numeric, standardize=True, groups=groups
    ).set_output(transform="pandas")
    out = ct.fit_transform(f)
    assert list(out.columns) == numeric
    for members in groups.values():
        varying = [c for c in members if f[c].nunique() > 1]
        assert out[varying].var(ddof=0).sum() == pytest.approx(len(varying) / len(members))


@pytest.mark.parametrize(("column", "value"), [("category", "snacks"), ("channel", "fax")])
def test_unknown_codes_are_refused(hand_frames, column, value) -> None:
    lines, customers = hand_frames
    bad = lines.with_columns(pl.lit(value).alias(column))
    with pytest.raises(
        SchemaError, match=rf"column '{column}': rule 'value in the public code list'.*'{value}'"
    ):
        customer_features(bad, customers, as_of=D(2026, 8, 31))


def test_geography_and_size_band_are_optional(hand_frames) -> None:
    # a real export without geography (segments ingest): unknown, not invented, not a crash
    lines, customers = hand_frames
    bare = customers.drop("county_code", "municipality_code", "size_band")
    out = _customer_features_pl(lines, bare, as_of=D(2026, 9, 1))
    assert out["county_code"].null_count() == out.height
    assert set(out["size_band"]) == {"n/a"}


def test_declared_taxonomy_names_the_shares() -> None:
    lines = pl.DataFrame(
        {
            "person_id": ["a" * 16, "a" * 16, "b" * 16],
            "order_id": ["c" * 16, "d" * 16, "e" * 16],
            "order_date": [dt.date(2024, 1, 5)] * 3,
            "channel": ["web"] * 3,
            "category": ["cd", "vinyl", "cd"],
            "amount_sek": [10.0, 30.0, 5.0],
        }
    )
    people = pl.DataFrame({"person_id": ["a" * 16, "b" * 16], "customer_type": ["private"] * 2})
    out = _customer_features_pl(
        lines, people, as_of=dt.date(2024, 2, 1), categories=("cd", "vinyl")
    )
    assert out["share_vinyl"].to_list() == [0.75, 0.0]
    assert "share_paper" not in out.columns


def test_public_feature_functions_return_pandas_and_take_pandas(hand_frames) -> None:
    # the API boundary (issue 17): pandas out, pandas or polars in, the same figures
    lines, customers = hand_frames
    engine = _customer_features_pl(lines, customers, as_of=D(2026, 8, 31))
    for given in ((lines, customers), (lines.to_pandas(), customers.to_pandas())):
        public = customer_features(*given, as_of=D(2026, 8, 31))
        assert isinstance(public, pd.DataFrame)
        pd.testing.assert_frame_equal(public, engine.to_pandas())
    rfm = rfm_features(lines.to_pandas(), as_of=D(2026, 8, 31))
    assert isinstance(rfm, pd.DataFrame)
    assert rfm.equals(_rfm_features_pl(lines, as_of=D(2026, 8, 31)).to_pandas())
    labels = category_rule_labels(lines)
    assert isinstance(labels, pd.DataFrame) and list(labels.columns) == ["person_id", "segment"]
    assert labels.equals(category_rule_labels_pl(lines).to_pandas())
