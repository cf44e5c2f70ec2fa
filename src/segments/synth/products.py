"""The product catalogue: several hundred SKUs in the ten office-supply categories, SEK prices."""

from __future__ import annotations

import numpy as np
import polars as pl

from segments.schema import PRODUCT_CATEGORIES, PRODUCTS

__all__ = ["CATALOGUE", "QUANTITY_MEAN", "generate_products"]

#: Per category: (item names, variants, number of SKUs, list price range in SEK).
CATALOGUE: dict[str, tuple[tuple[str, ...], tuple[str, ...], int, tuple[float, float]]] = {
    "paper": (
        (
            "Kopieringspapper A4 80 g",
            "Kopieringspapper A3 80 g",
            "Färgat papper A4",
            "Fotopapper A4",
            "Kuvert C5",
            "Kuvert C4",
            "Etiketter A4",
            "Anteckningsblock A4",
            "Spiralblock A5",
            "Blädderblock",
            "Häftesblock linjerat",
            "Kartong A4 160 g",
        ),
        ("500 ark", "5 x 500 ark", "miljömärkt", "premium", "återvunnet", "storpack"),
        50,
        (50.0, 400.0),
    ),
    "toner_ink": (
        (
            "Toner svart",
            "Toner cyan",
            "Toner magenta",
            "Toner gul",
            "Bläckpatron svart",
            "Bläckpatron färg",
            "Trumenhet",
            "Tonerkit 4-färg",
        ),
        (
            "HP",
            "Canon",
            "Brother",
            "Kyocera",
            "Lexmark",
            "Ricoh",
            "Xerox",
            "Epson",
            "högkapacitet",
            "kompatibel",
        ),
        80,
        (400.0, 2500.0),
    ),
    "writing": (
        (
            "Kulspetspenna",
            "Gelpenna",
            "Blyerts HB",
            "Överstrykningspenna",
            "Whiteboardpenna",
            "Märkpenna",
            "Reservoarpenna",
            "Stiftpenna",
            "Radergummi",
            "Korrigeringsroller",
        ),
        ("blå", "svart", "röd", "10-pack", "50-pack", "sorterade färger"),
        60,
        (10.0, 250.0),
    ),
    "filing_archiving": (
        (
            "Gaffelpärm A4",
            "Arkivlåda",
            "Plastficka A4",
            "Hängmapp",
            "Register 1-31",
            "Brevordnare",
            "Samlingspärm",
            "Arkivkartong",
            "Snabbhäftare",
            "Dokumentportfölj",
        ),
        ("svart", "blå", "50 mm", "80 mm", "10-pack", "100-pack"),
        50,
        (20.0, 400.0),
    ),
    "desk_accessories": (
        (
            "Häftapparat",
            "Hålslag",
            "Tejphållare",
            "Brevkorg",
            "Pennställ",
            "Skrivbordsunderlägg",
            "Sax",
            "Linjal",
            "Laminator",
            "Etikettskrivare",
        ),
        ("standard", "kraftig", "ergonomisk", "metall", "återvunnen plast"),
        40,
        (50.0, 900.0),
    ),
    "coffee_pantry": (
        (
            "Kaffe bryggmalet",
            "Kaffebönor",
            "Te sorterat",
            "Mjölk portionsförpackning",
            "Socker bitar",
            "Pappersmuggar",
            "Servetter",
            "Kaffefilter",
            "Kapslar",
            "Kakor",
        ),
        ("500 g", "1 kg", "ekologiskt", "storpack", "100 st", "Fairtrade"),
        40,
        (40.0, 600.0),
    ),
    "cleaning_hygiene": (
        (
            "Toalettpapper",
            "Pappershandduk",
            "Handtvål",
            "Handsprit",
            "Allrengöring",
            "Diskmedel",
            "Sopsäckar",
            "Städdukar",
            "Engångshandskar",
        ),
        ("storpack", "miljömärkt", "refill", "parfymfri", "5 l"),
        35,
        (30.0, 500.0),
    ),
    "furniture": (
        (
            "Kontorsstol",
            "Skrivbord",
            "Höj- och sänkbart skrivbord",
            "Förvaringsskåp",
            "Bokhylla",
            "Konferensbord",
            "Besöksstol",
            "Skärmvägg",
            "Hurts",
        ),
        ("svart", "vit", "björk", "ek", "ergonomisk", "premium"),
        30,
        (1500.0, 12000.0),
    ),
    "it_accessories": (
        (
            "Trådlös mus",
            "Tangentbord",
            "USB-C-hubb",
            "Headset",
            "Webbkamera",
            "Skärmkabel HDMI",
            "Dockningsstation",
            "Laptopstativ",
            "USB-minne",
            "Extern hårddisk",
        ),
        ("standard", "trådlös", "ergonomisk", "32 GB", "1 TB", "2-pack"),
        50,
        (100.0, 2500.0),
    ),
    "packaging_shipping": (
        (
            "Wellpappkartong",
            "Bubbelkuvert",
            "Packtejp",
            "Sträckfilm",
            "Fyllnadsmaterial",
            "Adressetiketter",
            "Poströr",
            "Tejpdispenser",
        ),
        ("liten", "medium", "stor", "10-pack", "50-pack", "brun"),
        35,
        (20.0, 600.0),
    ),
}

#: Mean number of extra units per order line, by category (a line holds 1 + Poisson units).
QUANTITY_MEAN = {
    "paper": 2.0,
    "toner_ink": 0.5,
    "writing": 2.0,
    "filing_archiving": 1.5,
    "desk_accessories": 0.3,
    "coffee_pantry": 2.0,
    "cleaning_hygiene": 2.0,
    "furniture": 0.1,
    "it_accessories": 0.3,
    "packaging_shipping": 2.5,
}

assert tuple(CATALOGUE) == PRODUCT_CATEGORIES and tuple(QUANTITY_MEAN) == PRODUCT_CATEGORIES


def generate_products(rng: np.random.Generator) -> pl.DataFrame:
    """Draw the catalogue: distinct (item, variant) names per category and list prices.

    Prices are log-uniform in the category's range, ending in .90 like shelf prices. Rows are
    grouped by category in ``PRODUCT_CATEGORIES`` order; ``product_id`` runs from 1.

    Returns
    -------
    polars.DataFrame
        The ``products`` table (schema :data:`segments.schema.PRODUCTS`).
    """
    frames = []
    for code, (category, (items, variants, n, (low, high))) in enumerate(CATALOGUE.items()):
        pairs = [(i, v) for i in items for v in variants]
        chosen = np.sort(rng.choice(len(pairs), size=min(n, len(pairs)), replace=False))
        names = [f"{pairs[k][0]}, {pairs[k][1]}" for k in chosen]
        price = np.exp(rng.uniform(np.log(low), np.log(high), len(names)))
        frames.append(
            pl.DataFrame(
                {
                    "sku": [f"AO-{code:02d}-{k + 1:04d}" for k in range(len(names))],
                    "name": names,
                    "category": [category] * len(names),
                    "unit_price_sek": np.maximum(np.round(price) - 0.10, 0.90),
                }
            )
        )
    df = pl.concat(frames).with_row_index("product_id", offset=1)
    return df.select(pl.col(c.name).cast(c.dtype) for c in PRODUCTS.columns)
