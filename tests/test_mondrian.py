"""Mondrian local recoding (issue 7): every released class satisfies the model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from segments.anonymity import (
    PrivacyModel,
    birth_year_hierarchy,
    distinct_l_of,
    entropy_l_of,
    k_of,
    mondrian,
    postcode_hierarchy,
)
from segments.anonymity.metrics import utility_metrics
from segments.exceptions import KAnonymityError
from segments.geography import postcodes_pl


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(11)
    codes = postcodes_pl()["postcode"].to_numpy()[:400]
    return pl.DataFrame(
        {
            "birth_year": rng.integers(1940, 2005, 600).astype(str),
            "postcode": rng.choice(codes, 600),
            "s": rng.choice(["a", "b", "c"], 600),
        }
    )


def hierarchies(table):
    return {
        "birth_year": birth_year_hierarchy(),
        "postcode": postcode_hierarchy(table["postcode"].unique().to_list()),
    }


@pytest.mark.parametrize("k", [2, 5, 20])
def test_mondrian_is_k_anonymous_and_keeps_detail(table, k):
    out = mondrian(table, hierarchies(table), PrivacyModel(k=k))
    assert len(out) == table.height
    assert k_of(out, ["birth_year", "postcode"]) >= k
    # it splits: far more classes than the fully generalised table's one
    assert utility_metrics(out, ["birth_year", "postcode"])["classes"] >= table.height // (8 * k)
    # every released value is a value of the hierarchy
    assert set(out["birth_year"]) <= {
        v for lv in range(5) for v in birth_year_hierarchy().labels(lv)
    }


def test_mondrian_l_diversity(table):
    model = PrivacyModel(k=3, l=2, sensitive="s")
    out = mondrian(table, hierarchies(table), model)
    assert distinct_l_of(out, ["birth_year", "postcode"], "s") >= 2
    entropy = PrivacyModel(k=3, l=2, sensitive="s", diversity="entropy")
    out = mondrian(table, hierarchies(table), entropy)
    assert entropy_l_of(out, ["birth_year", "postcode"], "s") >= 2 - 1e-9


def test_mondrian_guard(table):
    with pytest.raises(KAnonymityError, match="whole table .* does not satisfy"):
        mondrian(table.head(3), hierarchies(table), PrivacyModel(k=5))
