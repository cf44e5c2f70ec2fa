"""Hand-built raw tables matching segments.schema exactly, for the policy/prepare tests."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import polars as pl

from segments.schema import PRODUCT_CATEGORIES, RAW_TABLES
from segments.workspace import Workspace, sha256_file, write_json

AS_OF = dt.date(2026, 6, 30)


def customer(customer_id: int, **overrides: Any) -> dict[str, Any]:
    """A private customer with every raw column; override any field."""
    row: dict[str, Any] = {
        "customer_id": customer_id,
        "customer_type": "private",
        "is_sole_trader": False,
        "personnummer": f"1980010{customer_id % 100000:05d}",
        "org_number": None,
        "company_name": None,
        "industry": None,
        "size_band": None,
        "first_name": "Anna",
        "last_name": f"Testsson{customer_id}",
        "email": f"kund{customer_id}@example.se",
        "phone": "0701234567",
        "street": "Storgatan 1",
        "postcode": "11122",
        "locality": "Stockholm",
        "municipality_code": "0180",
        "county_code": "01",
        "birth_year": 1980,
        "gender": "F",
        "signup_date": dt.date(2020, 1, 1),
        "last_contact_date": dt.date(2020, 1, 1),
        "end_date": None,
        "newsletter_subscriber": False,
        "newsletter_interactions_per_month": 0.0,
        "marketing_opt_out": False,
        "survey_opt_out": False,
        "profiling_objection": False,
        "consent_withdrawn_date": None,
        "erasure_requested": False,
        "restriction_requested": False,
    }
    row.update(overrides)
    return row


def business(customer_id: int, **overrides: Any) -> dict[str, Any]:
    """A company account (not a sole trader)."""
    base = customer(
        customer_id,
        customer_type="business",
        personnummer=None,
        org_number=f"55{customer_id % 100000000:08d}",
        company_name=f"Företag {customer_id} AB",
        industry="G",
        size_band="10-49",
        birth_year=None,
        gender=None,
    )
    base.update(overrides)
    return base


def sole_trader_pair(
    private_id: int, business_id: int, personnummer: str, **overrides: Any
) -> list[dict[str, Any]]:
    """A sole trader's private account and business account (org number = personnummer[2:])."""
    private = customer(private_id, personnummer=personnummer, **overrides)
    firm = business(
        business_id,
        is_sole_trader=True,
        personnummer=personnummer,
        org_number=personnummer[2:],
        size_band="0",
        **overrides,
    )
    return [private, firm]


def products() -> pl.DataFrame:
    n = len(PRODUCT_CATEGORIES)
    return pl.DataFrame(
        {
            "product_id": list(range(1, n + 1)),
            "sku": [f"SKU{i:04d}" for i in range(1, n + 1)],
            "name": [f"Artikel {i}" for i in range(1, n + 1)],
            "category": list(PRODUCT_CATEGORIES),
            "unit_price_sek": [10.0 * i for i in range(1, n + 1)],
        },
        schema=RAW_TABLES["products"].polars_schema(),
    )


def raw_tables(
    customers: list[dict[str, Any]],
    orders: list[tuple[int, int, dt.date]] | list[dict[str, Any]],
    lines_per_order: int = 1,
) -> dict[str, pl.DataFrame]:
    """Raw tables from customer dicts and ``(order_id, customer_id, order_date)`` tuples."""
    order_rows: list[dict[str, Any]] = [
        o
        if isinstance(o, dict)
        else {"order_id": o[0], "customer_id": o[1], "order_date": o[2], "channel": "web"}
        for o in orders
    ]
    line_rows = [
        {
            "order_id": o["order_id"],
            "line_no": k + 1,
            "product_id": (int(o["order_id"]) + k) % 10 + 1,
            "quantity": k + 1,
            "unit_price_sek": 25.0,
        }
        for o in order_rows
        for k in range(lines_per_order)
    ]
    return {
        "customers": pl.DataFrame(customers, schema=RAW_TABLES["customers"].polars_schema()),
        "products": products(),
        "orders": pl.DataFrame(order_rows, schema=RAW_TABLES["orders"].polars_schema()),
        "order_lines": pl.DataFrame(line_rows, schema=RAW_TABLES["order_lines"].polars_schema()),
        "surveys": pl.DataFrame(schema=RAW_TABLES["surveys"].polars_schema()),
    }


def write_raw(
    ws: Workspace, tables: dict[str, pl.DataFrame], *, synthetic: bool = True, seed: int = 7
) -> Workspace:
    """Write the tables and a manifest into ``ws/raw``."""
    ws.raw.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(ws.raw_table(name))
    manifest: dict[str, Any] = {
        "synthetic": synthetic,
        "tables": {n: {"rows": f.height} for n, f in tables.items()},
        # as every writer of W/raw/ records them: a table without its digest is refused
        "files": {f"{n}.parquet": sha256_file(ws.raw_table(n)) for n in tables},
    }
    if synthetic:
        manifest["seed"] = seed
    write_json(ws.manifest, manifest)
    return ws


def read_json(path: Any) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def cli_args(
    *command: str, workspace: Workspace, policy: str = "alloffice", as_of: dt.date = AS_OF
) -> list[str]:
    """The ``segments`` arguments of ``command`` on ``workspace``, under ``policy``, as of
    ``as_of`` (in this order: a test may swap one value by its index)."""
    return [*command, "--workspace", str(workspace.root), "--policy", policy,
            "--as-of", as_of.isoformat()]  # fmt: skip


def rewrite_raw(ws: Workspace, table: str, frame: pl.DataFrame) -> None:
    """Write ``frame`` as the raw ``table`` and record its digest, as a writer of W/raw/
    would (bad data a writer let through, rather than a hand edit, which is refused first)."""
    path = ws.raw_table(table)
    frame.write_parquet(path)
    manifest = json.loads(ws.manifest.read_text(encoding="utf-8"))
    manifest["files"][f"{table}.parquet"] = sha256_file(path)
    write_json(ws.manifest, manifest)
