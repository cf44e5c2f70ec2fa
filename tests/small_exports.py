"""A small semicolon-separated export and its ingest mapping, shared by the ingest tests
(each refusal names table, column, rule, count and fix) and the erasure of an ingested
customer (by the export's own id)."""

from __future__ import annotations

from pathlib import Path

#: The mapping of a shop's export with Swedish column names (one product category).
MAPPING = """
[source]
separator = ";"
[columns]
customer_id = "kund"
order_date = "datum"
quantity = "antal"
unit_price = "pris"
product_id = "art"
[products]
categories = ["all"]
category = "all"
"""


def write_export(
    folder: Path,
    body: str,
    mapping: str = MAPPING,
    *,
    encoding: str = "utf-8",
    names: tuple[str, str] = ("e.csv", "m.toml"),
) -> tuple[Path, Path]:
    """Write the export ``body`` (in ``encoding``) and its ``mapping`` into ``folder`` under
    ``names``; return their paths."""
    src, mapping_path = folder / names[0], folder / names[1]
    src.write_bytes(body.encode(encoding))
    mapping_path.write_text(mapping, encoding="utf-8")
    return src, mapping_path
