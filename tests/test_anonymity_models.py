"""Privacy models and the independent measures of a finished table (issue 7)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from segments.anonymity import (
    Hierarchy,
    PrivacyModel,
    class_sizes,
    distinct_l_of,
    entropy_l_of,
    k_of,
    optimal_generalisation,
)
from segments.exceptions import KAnonymityError


def test_measures_of_a_small_table():
    df = pl.DataFrame({"a": ["x", "x", "x", "y", "y"], "s": ["p", "q", "p", "p", "p"]})
    assert k_of(df, ["a"]) == 2
    assert distinct_l_of(df, ["a"], "s") == 1
    p = [2 / 3, 1 / 3]
    assert entropy_l_of(pl.DataFrame({"a": ["x"] * 3, "s": ["p", "q", "p"]}), ["a"], "s") == (
        pytest.approx(math.exp(-sum(v * math.log(v) for v in p)))
    )
    assert class_sizes(df, ["a"]).sort_values("a")["n"].to_list() == [3, 2]
    assert k_of(df.head(0), ["a"]) == 0


def test_model_names_and_limits():
    model = PrivacyModel(k=5, suppression_limit=0.05, l=3, sensitive="s", diversity="entropy")
    assert model.name == "5-anonymity + entropy-3-diversity on s"
    assert model.max_suppressed(100) == 5
    assert model.max_suppressed(99) == 4
    assert model.to_dict()["l"] == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "parameter 'k' must be an integer >= 1"),
        ({"k": 2.5}, "parameter 'k' must be an integer"),
        ({"k": 2, "suppression_limit": 1.0}, "parameter 'suppression_limit'"),
        ({"k": 2, "l": 2}, "needs both 'l' and 'sensitive'"),
        ({"k": 2, "l": 1, "sensitive": "s"}, "parameter 'l' must be an integer >= 2"),
        ({"k": 2, "l": 2, "sensitive": "s", "diversity": "x"}, "parameter 'diversity'"),
    ],
)
def test_model_guards(kwargs, match):
    with pytest.raises(KAnonymityError, match=match):
        PrivacyModel(**kwargs)


def test_l_diversity_changes_the_choice():
    """With l-diversity the search must generalise further than k alone asks."""
    h = Hierarchy(
        "age",
        [["31", "30-39", "*"], ["35", "30-39", "*"], ["42", "40-49", "*"], ["44", "40-49", "*"]],
    )
    df = pl.DataFrame(
        {
            "age": ["31", "31", "35", "35", "42", "42", "44", "44"],
            "s": ["a", "b", "a", "b", "a", "a", "a", "a"],
        }
    )
    assert optimal_generalisation(df, {"age": h}, PrivacyModel(k=2)).levels == {"age": 0}
    distinct = optimal_generalisation(df, {"age": h}, PrivacyModel(k=2, l=2, sensitive="s"))
    assert distinct.levels == {"age": 2}
    with_suppression = optimal_generalisation(
        df, {"age": h}, PrivacyModel(k=2, l=2, sensitive="s", suppression_limit=0.5)
    )
    assert with_suppression.levels == {"age": 0} and with_suppression.suppressed == 4


# --- hierarchies ------------------------------------------------------------------------------
def test_customer_hierarchies():
    from segments.anonymity import (
        birth_year_hierarchy,
        municipality_hierarchy,
        postcode_hierarchy,
        size_band_hierarchy,
    )

    assert postcode_hierarchy(["41301"]).rows() == [
        ["41301", "413**", "41***", "Västra Götaland", "Götaland", "*"]
    ]
    assert birth_year_hierarchy().generalise(["1984", "n/a"], 1) == ["1980-1984", "n/a"]
    assert birth_year_hierarchy().generalise([1999], 3) == ["1980-1999"]
    muni = municipality_hierarchy()
    assert muni.generalise(["0180", "2480"], 2) == ["Svealand", "Norrland"]
    assert size_band_hierarchy().generalise(["1-9", "50-249"], 1) == ["0-9", "10-249"]


def test_arx_csv_and_guards(tmp_path):
    from segments.anonymity import read_hierarchies

    (tmp_path / "d_hierarchy_sex.csv").write_text("Male;*\nFemale;*\n", encoding="utf-8")
    hs = read_hierarchies(tmp_path)
    assert list(hs) == ["sex"] and hs["sex"].height == 1
    with pytest.raises(KAnonymityError, match="has two parents"):
        Hierarchy("a", [["x", "g1", "*"], ["y", "g1", "*"], ["z", "g2", "*"], ["w", "g2", "T"]])
    with pytest.raises(KAnonymityError, match="appears twice"):
        Hierarchy("a", [["x", "*"], ["x", "*"]])
    with pytest.raises(KAnonymityError, match="every row must have"):
        Hierarchy("a", [["x", "*"], ["y"]])
    with pytest.raises(KAnonymityError, match="missing from its hierarchy .first: None"):
        hs["sex"].encode(pl.Series("sex", ["Male", None]))
    with pytest.raises(KAnonymityError, match="level 3 does not exist"):
        hs["sex"].labels(3)
    with pytest.raises(KAnonymityError, match="no '.*hierarchy_<column>.csv' files"):
        read_hierarchies(tmp_path / "nothing")
