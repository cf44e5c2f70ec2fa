"""Later stages on real data: each problem of issue 16 that is not ingest's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from privacy_params import privacy_params

from segments.anonymity.hierarchies import country_hierarchy, date_hierarchy, number_hierarchy
from segments.exceptions import PolicyError
from segments.forecast import choose_model, forecast_archive, forecast_series
from segments.privacy.releases import public_keys


def _archive(n_months: int) -> pd.DataFrame:
    months = pd.date_range("1997-01-01", periods=n_months, freq="MS")
    return pd.DataFrame(
        {
            "month": months,
            "category": "music",
            "units": 1000.0 + 50 * np.sin(np.arange(n_months)),
            "sek": 90_000.0,
            "units_scale": 20.0,
            "sek_scale": 2000.0,
            "mechanism": "laplace",
            "epsilon": 0.1,
            "release_id": [f"r{i}" for i in range(n_months)],
        }
    )


@pytest.mark.parametrize(
    ("months", "model", "words"),
    [
        (30, "ets-topdown", "two seasons"),
        (18, "seasonal-naive", "seasonal-naive"),
        (8, "ses", "NON-SEASONAL"),
    ],
)
def test_auto_forecast_uses_the_model_the_history_supports(months, model, words) -> None:
    fc = forecast_archive(_archive(months), horizon=3, model="auto")
    assert set(fc["model_chosen"]) == {model}
    assert words in fc["model_note"].iloc[0]


def test_too_short_for_a_model_names_one_that_fits_and_never_backfill() -> None:
    with pytest.raises(ValueError) as exc:
        forecast_archive(_archive(8), horizon=3, model="seasonal-naive")
    text = str(exc.value)
    assert "model='ses'" in text and "backfill" not in text
    with pytest.raises(ValueError, match="as it closes"):
        choose_model(2)


def test_ses_is_non_seasonal_and_its_intervals_carry_the_noise() -> None:
    y = np.array([100.0, 104.0, 98.0, 102.0, 101.0, 99.0])
    fc = forecast_series(y, np.full(6, 4.0), horizon=3, model="ses")
    assert fc.model == "ses"
    assert np.allclose(fc.point, fc.point[0])  # a level, no season
    assert (fc.noise_variance > 0).all() and (np.diff(fc.variance) >= 0).all()


def test_release_keys_follow_the_declared_taxonomy_not_the_data() -> None:
    params = privacy_params(categories=("cd", "vinyl"), geography_column=None)
    keys = public_keys(("category",), None, params=params)
    assert keys["category"].to_list() == ["cd", "vinyl"]
    with pytest.raises(PolicyError, match="declares no geography"):
        public_keys(("county_code", "segment"), None, params=params)


def test_per_category_bounds_checked_against_the_declared_taxonomy() -> None:
    privacy_params(categories=("cd",), cell_units_by_category=(("cd", 10),))
    with pytest.raises(PolicyError, match="'paper' is not a product category"):
        privacy_params(categories=("cd",), cell_units_by_category=(("paper", 10),))


def test_built_in_hierarchies_for_dates_numbers_and_countries() -> None:
    dates = date_hierarchy("signup_date")
    assert dates.generalise(["1997-02-28"], 1) == ["1997-02"]
    assert dates.generalise(["1997-02-28"], 3) == ["1997"]
    assert number_hierarchy("orders", 0, 500).generalise(["137"], 3) == ["0-999"]
    countries = country_hierarchy()
    assert countries.generalise(["DE", "SE"], 1) == ["Western Europe", "Northern Europe"]
    # the public table, not the countries some data contains
    assert len(countries.values) > 60
