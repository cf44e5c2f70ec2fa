"""Swedish counties, municipalities and postcodes from the reference data shipped in the package.

Codes are strings so leading zeros survive (``"01"``, ``"0114"``). Population is SCB's for
2024. Regions follow the traditional lands: Götaland, Svealand, Norrland.

The public functions return pandas (the API boundary's one table type); the package's own
code reads the cached polars tables of ``counties_pl``, ``municipalities_pl``, ``postcodes_pl``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd
import polars as pl

from segments._tables import to_pandas

__all__ = [
    "REGION_OF_COUNTY",
    "counties",
    "county_geojson_path",
    "municipalities",
    "postcodes",
    "reference_path",
]

#: County code -> land (Götaland, Svealand, Norrland).
REGION_OF_COUNTY = {
    **dict.fromkeys(["01", "03", "04", "17", "18", "19", "20"], "Svealand"),
    **dict.fromkeys(["05", "06", "07", "08", "09", "10", "12", "13", "14"], "Götaland"),
    **dict.fromkeys(["21", "22", "23", "24", "25"], "Norrland"),
}


def reference_path(name: str) -> Path:
    """Path of a reference file shipped with the package (see reference/PROVENANCE.md)."""
    return Path(str(resources.files("segments") / "reference" / name))


def _read(name: str) -> pl.DataFrame:
    return pl.read_csv(reference_path(name), infer_schema=False)


def counties() -> pd.DataFrame:
    """The 21 counties: ``county_code``, ``county_name``, ``county_name_short``,
    ``population``, ``region``.

    Examples
    --------
    >>> c = counties()
    >>> len(c), c.set_index("county_code").loc["01", "county_name_short"]
    (21, 'Stockholm')
    """
    return to_pandas(counties_pl())


def municipalities() -> pd.DataFrame:
    """The 290 municipalities: code, name, county, 2024 population, centroid, main locality.

    Examples
    --------
    >>> m = municipalities()
    >>> len(m), m.set_index("municipality_code").loc["0180", "municipality_name"]
    (290, 'Stockholm')
    """
    return to_pandas(municipalities_pl())


def postcodes() -> pd.DataFrame:
    """Five-digit postcodes (about 82 % of Sweden's) with locality, municipality and county."""
    return to_pandas(postcodes_pl())


@cache
def counties_pl() -> pl.DataFrame:
    """:func:`counties` as the cached polars table the package's own code reads."""
    df = _read("sweden_counties.csv")
    return df.select(
        "county_code",
        "county_name",
        "county_name_short",
        pl.col("population_2024").cast(pl.Int64).alias("population"),
        pl.col("county_code").replace_strict(REGION_OF_COUNTY).alias("region"),
    )


@cache
def municipalities_pl() -> pl.DataFrame:
    """:func:`municipalities` as the cached polars table the package's own code reads."""
    df = _read("sweden_municipalities.csv")
    return df.select(
        "municipality_code",
        pl.col("municipality_name_short").alias("municipality_name"),
        "county_code",
        pl.col("population_2024").cast(pl.Int64).alias("population"),
        pl.col("centroid_lat").cast(pl.Float64),
        pl.col("centroid_lon").cast(pl.Float64),
        "main_locality",
    )


@cache
def postcodes_pl() -> pl.DataFrame:
    """:func:`postcodes` as the cached polars table the package's own code reads."""
    df = _read("sweden_postcodes_5digit.csv")
    return df.select("postal_code", "locality", "municipality_code", "county_code").rename(
        {"postal_code": "postcode"}
    )


def county_geojson_path() -> Path:
    """GeoJSON of the county polygons (WGS84), for maps."""
    return reference_path("sweden_counties.geojson")
