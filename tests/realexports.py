"""A second real export built from CDNOW with another shape (for ingest tests and benchmarks).

CDNOW_master.txt is a whitespace text file in USD with one row per customer and day. The
export built here keeps its customers, days, units and values but has the shape of a European
shop's invoice-line export: semicolon CSV in Latin-1, gzipped, EUR with a decimal comma, dates
as ``dd.mm.yyyy``, invoice numbers with ``C``-prefixed cancellations, negative-quantity
returns, rows without a customer (card payments in a store), postage and fee codes, a country
column (German names), a single channel and a public product catalogue file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl


def _shared_real() -> Path:
    """``shared/data/real`` beside the repository or beside one of its parent folders."""
    for parent in Path(__file__).resolve().parents[1:]:
        if (parent / "shared" / "data" / "real").is_dir():
            return parent / "shared" / "data" / "real"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


CDNOW = _shared_real() / "CDNOW_master.txt"
#: EUR per USD stated in the mapping; SEK per EUR likewise (public rates, rounded).
USD_PER_EUR = 1.1
SEK_PER_EUR = 8.4
COUNTRIES = {"Deutschland": "DE", "Österreich": "AT", "Schweiz": "CH", "Dänemark": "DK"}
FEE_CODES = ("PORTO", "GEBÜHR")

MAPPING = """
[source]
format = "csv"
separator = ";"
encoding = "latin-1"
decimal = ","
date_format = "%d.%m.%Y"

[columns]
customer_id = "Kundennr"
order_id = "Rechnung"
order_date = "Datum"
product_id = "Artikel"
description = "Bezeichnung"
quantity = "Menge"
unit_price = "Einzelpreis"

[currency]
code = "EUR"
sek_per_unit = 8.4
rate_source = "public rate stated by the controller (example)"

[returns]
negative_quantity = true
cancellation_prefix = "C"

[products]
non_product_codes = ["PORTO", "GEBÜHR"]
categories = ["cd", "vinyl"]
category_file = "categories.csv"

[channels]
default = "store"

[geography]
column = "Land"
hierarchy = "country"

[geography.values]
"Deutschland" = "DE"
"Österreich" = "AT"
"Schweiz" = "CH"
"Dänemark" = "DK"
"""


def build_eu_export(
    folder: Path, *, n_rows: int | None = None, seed: int = 0, name: str = "export.csv.gz"
) -> tuple[Path, Path, pl.DataFrame]:
    """Write ``export.csv.gz``, ``mapping.toml`` and ``categories.csv`` into ``folder``.

    Returns the export, the mapping and the export as a frame (strings; for expected values).
    ``n_rows`` repeats CDNOW's rows (with new customer ids) up to that many purchase rows.
    """
    rng = np.random.default_rng(seed)
    lines = CDNOW.read_text(encoding="ascii").splitlines()[1:]
    base = pl.DataFrame(
        [line.split() for line in lines if line.strip()],
        schema=["customer", "date", "units", "usd"],
        orient="row",
    )
    base = base.filter(pl.col("units").cast(pl.Int64) > 0)
    if n_rows is not None:
        copies = -(-n_rows // base.height)
        base = pl.concat(
            base.with_columns((pl.lit(f"{k}") + pl.col("customer")).alias("customer"))
            for k in range(copies)
        ).head(n_rows)
    n = base.height
    units = base["units"].cast(pl.Int64).to_numpy()
    eur = base["usd"].cast(pl.Float64).to_numpy() / USD_PER_EUR
    unit_price = np.round(eur / units, 2)
    codes = np.array([f"A{i:03d}" for i in range(50)])
    product = codes[rng.integers(0, 50, n)]
    invoice = np.array([f"{100000 + i}" for i in range(n)])
    country = np.array(list(COUNTRIES))[rng.integers(0, len(COUNTRIES), n)]
    customer = base["customer"].to_numpy().astype(object)
    no_customer = rng.random(n) < 0.05
    customer[no_customer] = ""
    rows = pl.DataFrame(
        {
            "Rechnung": invoice,
            "Kundennr": customer.astype(str),
            "Datum": base["date"].str.to_date("%Y%m%d").dt.strftime("%d.%m.%Y"),
            "Artikel": product,
            "Bezeichnung": np.where(product < "A040", "Schallplatte – CD", "Vinyl-Schallplatte"),
            "Menge": units,
            "Einzelpreis": unit_price,
            "Land": country,
        }
    )
    # returns: a tenth of purchases are partly sent back in the same month (a negative line
    # on a new invoice); cancellations: 2 % of invoices are cancelled whole (C-prefixed)
    returned = rows.filter(pl.Series(rng.random(n) < 0.10) & (pl.col("Kundennr") != ""))
    returned = returned.with_columns(
        ("R" + pl.col("Rechnung")).alias("Rechnung"), pl.lit(-1, pl.Int64).alias("Menge")
    )
    cancelled = rows.filter(pl.Series(rng.random(n) < 0.02) & (pl.col("Kundennr") != ""))
    cancelled = cancelled.with_columns(
        ("C" + pl.col("Rechnung")).alias("Rechnung"), (-pl.col("Menge")).alias("Menge")
    )
    fees = rows.filter(pl.Series(rng.random(n) < 0.2)).with_columns(
        pl.lit(FEE_CODES[0]).alias("Artikel"),
        pl.lit("Porto und Verpackung").alias("Bezeichnung"),
        pl.lit(1, pl.Int64).alias("Menge"),
        pl.lit(4.9).alias("Einzelpreis"),
    )
    export = pl.concat([rows, returned, cancelled, fees], how="vertical_relaxed").sort(
        "Datum", "Rechnung"
    )
    text = export.with_columns(
        pl.col("Einzelpreis").map_elements(lambda v: f"{v:.2f}".replace(".", ","), pl.Utf8),
        pl.col("Menge").cast(pl.Utf8),
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    csv = text.write_csv(separator=";")
    data = csv.encode("latin-1", errors="replace")
    path.write_bytes(gzip.compress(data, compresslevel=1) if name.endswith(".gz") else data)
    mapping = folder / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    (folder / "categories.csv").write_text(
        "product_code,category\n"
        + "".join(f"{c},{'cd' if c < 'A040' else 'vinyl'}\n" for c in codes),
        encoding="utf-8",
    )
    return path, mapping, export
