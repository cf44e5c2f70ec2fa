"""Data-subject rights: one person's register extract (access and portability, AK-5).

:func:`subject_export` gathers everything the raw tables hold about the person behind one
customer id — every account of that person (a sole trader's private and business accounts
are one person, AO-3), every order with its lines — plus, when segments exist, the segment
they are in and a plain-language account of how it was derived. This is the one place where
identifiers legitimately leave the sandbox: to the data subject themself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl

from segments.exceptions import WorkspaceError
from segments.policy import Policy
from segments.prepare import link_persons
from segments.pseudonym import PseudonymKey, load_key, pseudonymise
from segments.schema import RAW_TABLES, validate
from segments.workspace import Workspace, atomic_write

__all__ = ["explain_segment", "subject_export", "write_subject_export"]

_RIGHTS = (
    "You may ask for rectification, erasure or restriction of processing, object to "
    "processing based on legitimate interest or to direct marketing, and receive your data "
    "in this structured form (AK-5, AK-4). Survey answers are anonymous (AC-2) and cannot be "
    "linked to you, so they are not part of this extract."
)


def _read(ws: Workspace, table: str) -> pl.DataFrame:
    frame = pl.read_parquet(ws.require(ws.raw_table(table), "segments generate"))
    validate(frame, RAW_TABLES[table])
    return frame


def _json_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}
        for row in frame.iter_rows(named=True)
    ]


def explain_segment(segment: Any, metadata: dict[str, Any]) -> str:
    """A plain-language account of how a person's segment was derived, from
    ``W/segments/metadata.json``.

    Examples
    --------
    >>> explain_segment("paper", {"source": "category_rule", "as_of": "2026-06-30"})[:40]
    'You are in segment paper. Your segment i'
    """
    source = str(
        metadata.get("source") or metadata.get("provenance") or metadata.get("method") or ""
    )
    parts = [f"You are in segment {segment}."]
    if source == "category_rule":
        parts.append(
            "Your segment is the product category with the largest share of your spending in the "
            "period the policy allows (AL-2); it depends on your own purchases only."
        )
    else:
        model = metadata.get("model") or metadata.get("method") or "a clustering model"
        parts.append(
            f"Segments were learned by {model} from purchase history (how recently, how often and "
            "how much you bought, which product categories, which channels, which seasons) and "
            "geography (county, urban or rural municipality), on pseudonymised data with no "
            "name, e-mail, phone, address or personnummer (AO-4, AL-5); you were placed in the "
            "segment whose typical customer is closest to your purchase pattern."
        )
        if metadata.get("fitted_on_private_data"):
            parts.append("The model was fitted inside the analytics sandbox and is never released.")
    names = metadata.get("names") or metadata.get("segment_names")
    if isinstance(names, dict) and str(segment) in names:
        parts.append(f"The segment is described as: {names[str(segment)]}.")
    if metadata.get("as_of"):
        parts.append(f"The segmentation was computed on data up to {metadata['as_of']}.")
    parts.append(
        "Segments steer purchasing and assortment; you may object to this at any time (AK-4)."
    )
    return " ".join(parts)


def _segment_of(ws: Workspace, person_ids: list[str]) -> dict[str, Any] | None:
    labels_path = ws.segments / "labels.parquet"
    if not labels_path.is_file():
        return None
    metadata: dict[str, Any] = {}
    meta_path = ws.segments / "metadata.json"
    if meta_path.is_file():
        with open(meta_path, encoding="utf-8") as fh:
            metadata = json.load(fh)
    labels = pl.read_parquet(labels_path).filter(pl.col("person_id").is_in(person_ids))
    if labels.height == 0:
        return {
            "segment": None,
            "explanation": (
                "You are not in the current segmentation: your data was excluded by a policy rule "
                "(retention, objection, erasure or restriction) or is outside its period."
            ),
        }
    segment = labels["segment"][0]
    return {"segment": segment, "explanation": explain_segment(segment, metadata)}


def _prepared_purposes(ws: Workspace, person_ids: list[str]) -> list[str]:
    found = []
    if ws.prepared.is_dir():
        for folder in sorted(
            p for p in ws.prepared.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            path = folder / "customers.parquet"
            if (
                path.is_file()
                and pl.scan_parquet(path)
                .filter(pl.col("person_id").is_in(person_ids))
                .select(pl.len())
                .collect()
                .item()
            ):
                found.append(folder.name)
    return found


def subject_export(
    workspace: Workspace | str | os.PathLike[str],
    customer_id: int,
    *,
    policy: Policy | str | None = None,
    key: PseudonymKey | bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """One person's register extract as a JSON-able dict.

    Parameters
    ----------
    workspace : Workspace or path
    customer_id : int
        Any account id of the person; all their linked accounts are included.
    policy : Policy or str, optional
        Names the controller in the extract.
    key, key_file : optional
        The pseudonymisation key, needed only to find the person's segment (see
        :func:`segments.pseudonym.load_key`).

    Raises
    ------
    WorkspaceError
        If no raw customer has ``customer_id``.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    customers = _read(ws, "customers")
    roots = link_persons(customers)
    root = roots.filter(pl.col("customer_id") == customer_id)
    if root.height == 0:
        raise WorkspaceError(
            f"table 'customers', column 'customer_id': no customer {customer_id} in {ws.raw}; "
            "check the id (an erased or purged customer has no data left to export)"
        )
    person_root = root["person_root"][0]
    account_ids = roots.filter(pl.col("person_root") == person_root)["customer_id"].to_list()
    accounts = customers.filter(pl.col("customer_id").is_in(account_ids)).sort("customer_id")
    orders = (
        _read(ws, "orders")
        .filter(pl.col("customer_id").is_in(account_ids))
        .sort("order_date", "order_id")
    )
    products = _read(ws, "products").select(
        "product_id", pl.col("name").alias("product_name"), "category"
    )
    lines = (
        _read(ws, "order_lines")
        .filter(pl.col("order_id").is_in(orders["order_id"].implode()))
        .join(products, on="product_id", how="left")
        .with_columns((pl.col("quantity") * pl.col("unit_price_sek")).alias("amount_sek"))
        .sort("order_id", "line_no")
    )
    by_order: dict[int, list[dict[str, Any]]] = {}
    for row in _json_rows(lines):
        by_order.setdefault(row.pop("order_id"), []).append(row)
    order_rows = [{**o, "lines": by_order.get(o["order_id"], [])} for o in _json_rows(orders)]

    extract: dict[str, Any] = {
        "kind": "register extract (access and data portability, AK-5)",
        "generated_on": dt.date.today().isoformat(),
        "requested_customer_id": customer_id,
        "accounts": _json_rows(accounts),
        "orders": order_rows,
        "rights": _RIGHTS,
    }
    if policy is not None:
        pol = policy if isinstance(policy, Policy) else Policy.load(policy)
        extract["controller"] = {"name": pol.controller, "org_number": pol.org_number}
    if len(account_ids) > 1:
        extract["linked_accounts_note"] = (
            "Your private and business accounts share your personnummer (sole trader, AO-3) "
            "and are treated as one person."
        )
    needs_key = (ws.segments / "labels.parquet").is_file() or ws.prepared.is_dir()
    if needs_key:
        pkey = load_key(key, key_file=key_file, workspace=ws)
        person_ids = pseudonymise(pkey, "person", [person_root])
        extract["prepared_purposes"] = _prepared_purposes(ws, person_ids)
        segment = _segment_of(ws, person_ids)
        if segment is not None:
            extract["segment"] = segment
    return extract


def write_subject_export(
    extract: dict[str, Any], path: str | os.PathLike[str] | None = None
) -> None:
    """Write an extract as JSON to ``path`` (atomically) or to standard output."""
    text = json.dumps(extract, indent=2, ensure_ascii=False, default=str) + "\n"
    if path is None:
        sys.stdout.write(text)
        return
    with atomic_write(Path(path), "w") as fh:
        fh.write(text)
