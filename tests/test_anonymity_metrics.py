"""Risk and utility metrics, by their definitions (issue 7)."""

from __future__ import annotations

import polars as pl
import pytest

from segments.anonymity import (
    journalist_risk,
    marketer_risk,
    prosecutor_risk,
    risk_metrics,
    utility_metrics,
)
from segments.exceptions import KAnonymityError

TABLE = pl.DataFrame({"a": ["x", "x", "y", "y", "y", "z"]})


def test_prosecutor_risk():
    risk = prosecutor_risk(TABLE, ["a"])
    assert risk["highest"] == 1.0
    assert risk["average"] == pytest.approx(3 / 6)
    assert risk["records_at_highest"] == pytest.approx(1 / 6)


def test_journalist_and_marketer_risk_against_a_population():
    population = pl.DataFrame({"a": ["x"] * 4 + ["y"] * 3 + ["z"] * 5})
    risk = journalist_risk(TABLE, ["a"], population)
    assert risk["highest"] == pytest.approx(1 / 3)
    assert risk["average"] == pytest.approx((2 / 4 + 3 / 3 + 1 / 5) / 6)
    assert marketer_risk(TABLE, ["a"], population) == pytest.approx((2 / 4 + 3 / 3 + 1 / 5) / 6)
    assert marketer_risk(TABLE, ["a"]) == pytest.approx(3 / 6)
    assert set(risk_metrics(TABLE, ["a"], population)) == {"prosecutor", "marketer", "journalist"}


def test_population_must_contain_the_release():
    with pytest.raises(KAnonymityError, match="population table has fewer people"):
        journalist_risk(TABLE, ["a"], pl.DataFrame({"a": ["x", "y"]}))


def test_utility_metrics():
    util = utility_metrics(TABLE, ["a"], suppressed=2, k=2)
    # classes 2, 3, 1 -> 4 + 9 + 1, plus 2 suppressed rows charged the table size (8)
    assert util["discernibility"] == 14 + 2 * 8
    assert util["average_class_size"] == pytest.approx(2.0)
    assert util["normalised_average_class_size"] == pytest.approx(1.0)
    assert util["suppressed_rows"] == 2 and util["classes"] == 3


def test_empty_table():
    empty = TABLE.head(0)
    assert prosecutor_risk(empty, ["a"])["highest"] == 0.0
    assert marketer_risk(empty, ["a"]) == 0.0
    assert utility_metrics(empty, ["a"], suppressed=3)["discernibility"] == 9
