"""Data-subject rights: register extract, erasure and restriction (AK-5).

:func:`erase` removes a person (every linked account) from the raw customers, orders and
order lines, the planted truth, every prepared frame, the segment labels and every target
list; :func:`restrict` flags their raw accounts ``restriction_requested`` (stored, not
processed) and removes them from every derived frame. Both are recorded in
``W/subjects/requests.json`` with the date, the deadline and the policy's clause ids — the
person appears there only as a keyed hash (HMAC with the steward's key), which later runs of
``prepare`` use to keep them out even if the raw data is loaded again. Survey answers are
anonymous (AC-2) and cannot be linked to anyone, so they have nothing to erase. Released
aggregates (DP or k-anonymous) are not recalled: they protect everyone by construction.

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
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from segments._tables import read_table, reads_bound_to
from segments.exceptions import PolicyError, WorkspaceError
from segments.policy import Policy
from segments.prepare.frames import link_persons
from segments.prepare.pseudonym import PseudonymKey, load_key, pseudonymise
from segments.prepare.subject_log import (
    account_hashes,
    canonical_source_ids,
    check_log_key,
    is_ingested,
    log_entries,
    log_key_problem,
    logged_hashes,
    source_hashes,
    subject_hash,
)
from segments.privacy.synthetic import prove_synthetic
from segments.schema import RAW_TABLES, REAL_CUSTOMERS, REAL_PRODUCTS, validate
from segments.workspace import (
    PREPARED_CUSTOMERS,
    Workspace,
    atomic_write,
    atomic_write_with,
    make_private,
    raw_hashed_once,
    raw_hashes,
    require_raw_as_recorded,
    write_json,
)

__all__ = [
    "SubjectRequest",
    "account_hashes",
    "check_log_key",
    "erase",
    "erase_flagged",
    "erase_flagged_holding_lock",
    "flagged_persons",
    "pending_requests",
    "erased_accounts",
    "returned_persons",
    "explain_segment",
    "log_key_problem",
    "logged_hashes",
    "restrict",
    "source_hashes",
    "subject_export",
    "subject_hash",
    "write_subject_export",
]

_RIGHTS = (
    "You may ask for rectification, erasure or restriction of processing, object to "
    "processing based on legitimate interest or to direct marketing, and receive your data "
    "in this structured form. Survey answers are anonymous and cannot be "
    "linked to you, so they are not part of this extract."
)


def _read(ws: Workspace, table: str) -> pl.DataFrame:
    from segments.ingest import read_real_manifest

    frame = read_table(ws.require(ws.raw_table(table), "segments generate"))
    real = {"customers": REAL_CUSTOMERS, "products": REAL_PRODUCTS}
    ingested = table in real and read_real_manifest(ws) is not None
    validate(frame, real[table] if ingested else RAW_TABLES[table])
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
            "period the policy allows; it depends on your own purchases only."
        )
    else:
        model = metadata.get("model") or metadata.get("method") or "a clustering model"
        parts.append(
            f"Segments were learned by {model} from purchase history (how recently, how often and "
            "how much you bought, which product categories, which channels, which seasons) and "
            "geography (county, urban or rural municipality), on pseudonymised data with no "
            "name, e-mail, phone, address or personnummer; you were placed in the "
            "segment whose typical customer is closest to your purchase pattern."
        )
        if metadata.get("fitted_on_private_data"):
            parts.append("The model was fitted inside the analytics sandbox and is never released.")
    names = metadata.get("names") or metadata.get("segment_names")
    if isinstance(names, dict) and str(segment) in names:
        parts.append(f"The segment is described as: {names[str(segment)]}.")
    if metadata.get("as_of"):
        parts.append(f"The segmentation was computed on data up to {metadata['as_of']}.")
    parts.append("Segments steer purchasing and assortment; you may object to this at any time.")
    return " ".join(parts)


def _segment_of(ws: Workspace, person_ids: list[str]) -> dict[str, Any] | None:
    labels_path = ws.labels
    if not labels_path.is_file():
        return None
    metadata: dict[str, Any] = {}
    meta_path = ws.segment_metadata
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
            path = folder / PREPARED_CUSTOMERS
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


def _erasure_of(
    ws: Workspace, customers: pl.DataFrame, customer_id: int | str, key: Any, key_file: Any
) -> dict[str, Any] | None:
    """The logged erasure of ``customer_id``, if the log and a key can tell."""
    entries = [e for e in log_entries(ws) if e.get("action") == "erasure"]
    if not entries:
        return None
    try:
        pkey = load_key(key, key_file=key_file, workspace=ws, synthetic_proof=prove_synthetic)
    except ValueError:
        return None
    check_log_key(ws, pkey, "subject export")
    mine = _request_hash(pkey, customers, customer_id, _source_id_type(ws))
    for entry in entries:
        if mine in entry["subject_hashes"] and not entry.get("completed", True):
            return {
                "erased_on": None,
                "pending": True,
                "requested_on": entry["requested_on"],
                "clause_ids": entry["clause_ids"],
                "note": "Your erasure was started but not finished; it is pending and will be "
                "completed by the next `segments subject erase` or `segments retention purge`. "
                "No data is exported meanwhile.",
            }
        if mine in entry["subject_hashes"]:
            return {
                "erased_on": entry["done_on"],
                "requested_on": entry["requested_on"],
                "clause_ids": entry["clause_ids"],
                "note": "All your data was erased from the raw tables, prepared frames, "
                "segments and target lists. Released statistics are aggregates (differentially "
                "private or k-anonymous) and are not recalled.",
            }
    return None


def subject_export(
    workspace: Workspace | str | os.PathLike[str],
    customer_id: int | str,
    *,
    policy: Policy | str | None = None,
    key: PseudonymKey | bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """One person's register extract as a JSON-able dict.

    Parameters
    ----------
    workspace : Workspace or path
    customer_id : int or str
        Any account id of the person; all their linked accounts are included. For an
        ingested export, the export's own customer id.
    policy : Policy or str, optional
        Names the controller in the extract.
    key, key_file : optional
        The pseudonymisation key, needed only to find the person's segment (see
        :func:`segments.prepare.pseudonym.load_key`).

    Raises
    ------
    WorkspaceError
        If no raw customer has ``customer_id``.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    # an unknown policy is refused before anything is looked up (also for an erased person)
    pol = policy if isinstance(policy, Policy) or policy is None else Policy.load(policy)
    # every table of the extract is parsed from one hashing of W/raw/ (and the demo key's
    # proof, if the key is needed, is about those bytes): a table swapped while the extract
    # is read is refused, never mixed into it
    with raw_hashed_once(), reads_bound_to(ws.raw, raw_hashes(ws)):
        return _subject_export(ws, customer_id, pol, key, key_file)


def _subject_export(
    ws: Workspace,
    customer_id: int | str,
    pol: Policy | None,
    key: PseudonymKey | bytes | str | None,
    key_file: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """:func:`subject_export`'s body, inside its binding to the raw files' digests."""
    customers = _read(ws, "customers")
    roots = _link(customers)
    id_type = _source_id_type(ws)
    named = customers.filter(_account_of(customers, customer_id, id_type))["customer_id"]
    root = roots.filter(pl.col("customer_id").is_in(named.implode()))
    # An erasure logged but interrupted (raw rows may remain) exports nothing either.
    erased = _erasure_of(ws, customers, customer_id, key, key_file)
    returned = erased is not None and not erased.get("pending") and root.height > 0
    if returned:  # a backup restored after the erasure: say what the raw data hold now
        assert erased is not None
        erased = {
            **erased,
            "returned": True,
            "note": f"Your data were erased on {erased['erased_on']}, but a backup restored "
            "afterwards brought them back into the raw tables: what they hold now is listed "
            "here. They are kept out of every new prepared frame, and the erasure must be "
            "carried out again (`segments subject erase` or `segments retention purge`).",
        }
    elif root.height == 0 or erased is not None:
        if erased is not None:
            return {
                "kind": "register extract (access and data portability)",
                "generated_on": dt.date.today().isoformat(),
                "requested_customer_id": customer_id,
                "accounts": [],
                "orders": [],
                "erasure": erased,
                "rights": _RIGHTS,
            }
        column = "source_customer_id" if is_ingested(customers) else "customer_id"
        raise WorkspaceError(
            f"table 'customers', column '{column}': no customer {customer_id} in {ws.raw}; "
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
        "kind": "register extract (access and data portability)",
        "generated_on": dt.date.today().isoformat(),
        "requested_customer_id": customer_id,
        "accounts": _json_rows(accounts),
        "orders": order_rows,
        "rights": _RIGHTS,
    }
    if returned:
        extract["erasure"] = erased
    if pol is not None:
        extract["controller"] = {"name": pol.controller, "org_number": pol.org_number}
    if len(account_ids) > 1:
        extract["linked_accounts_note"] = (
            "Your private and business accounts share your personnummer (sole trader) "
            "and are treated as one person."
        )
    needs_key = (ws.labels).is_file() or ws.prepared.is_dir()
    if needs_key:
        pkey = load_key(key, key_file=key_file, workspace=ws, synthetic_proof=prove_synthetic)
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


# --- erasure and restriction ------------------------------------------------------------------
@dataclass(frozen=True)
class SubjectRequest:
    """An erasure or restriction carried out, as recorded in ``W/subjects/requests.json``."""

    action: str
    subject_hashes: tuple[str, ...]
    requested_on: dt.date
    done_on: dt.date
    deadline: dt.date
    clause_ids: tuple[str, ...]
    rows: Mapping[str, int] = field(default_factory=dict)
    log_path: Path | None = None
    #: :attr:`PseudonymKey.key_id` of the key the hashes were made with (not the key).
    key_id: str | None = None

    @property
    def on_time(self) -> bool:
        """Whether the request was carried out by its deadline."""
        return self.done_on <= self.deadline

    def to_dict(self) -> dict[str, Any]:
        """The request as recorded in the subject request log (keyed hash, no ids)."""
        return {
            "action": self.action,
            "subject_hashes": list(self.subject_hashes),
            "requested_on": self.requested_on.isoformat(),
            "done_on": self.done_on.isoformat(),
            "deadline": self.deadline.isoformat(),
            "on_time": self.on_time,
            "clause_ids": list(self.clause_ids),
            "rows": dict(self.rows),
            "key_id": self.key_id,
        }


def _link(customers: pl.DataFrame) -> pl.DataFrame:
    """``customer_id`` → ``person_root``; an ingested export's account is its own person."""
    if "personnummer" not in customers.columns:
        return customers.select("customer_id", pl.col("customer_id").alias("person_root"))
    return link_persons(customers)


def erased_accounts(ws: Workspace, key: PseudonymKey, customer_ids: pl.Series) -> pl.Series:
    """Of ``customer_ids``, those the request log says were erased (for prepare, ingest and
    audit).

    Raises
    ------
    PolicyError
        The log was written with another key (:func:`check_log_key`).
    """
    check_log_key(ws, key, "subject request log")
    erased = logged_hashes(ws, "erasure")
    if not erased or customer_ids.len() == 0:
        return customer_ids.head(0)
    raw = read_table(ws.raw_table("customers"))  # in prepare: the bytes its record names
    if is_ingested(raw):  # hashed by the export's id: look it up for these accounts
        accounts = raw.select("customer_id", "source_customer_id")
        order = pl.DataFrame({"customer_id": customer_ids}).with_row_index("_at")
        found = order.join(accounts, on="customer_id", how="left").sort("_at")
        hashes = account_hashes(key, found.fill_null(""))
    else:
        hashes = pl.Series(subject_hash(key, customer_ids.to_list()))
    return customer_ids.filter(hashes.is_in(list(erased)))


def _source_id_type(ws: Workspace) -> str:
    """How the ingested export's customer ids compare (its mapping's ``id_type``)."""
    from segments.ingest import read_real_manifest

    manifest = read_real_manifest(ws) or {}
    return str((manifest.get("mapping") or {}).get("customer_id_type", "text"))


def _account_of(customers: pl.DataFrame, customer_id: int | str, id_type: str = "text") -> pl.Expr:
    """The raw account a request names: by the export's customer id on ingested data (what
    the data subject knows, in its canonical form), by ``customer_id`` otherwise."""
    if is_ingested(customers):
        canonical = canonical_source_ids(pl.Series([str(customer_id)]), id_type)[0]
        if canonical is None:
            raise WorkspaceError(
                f"parameter 'customer': {customer_id!r} is not a customer id of this export "
                f"(its mapping declares id_type {id_type}); check the id"
            )
        return pl.col("source_customer_id") == canonical
    try:
        return pl.col("customer_id") == int(customer_id)
    except ValueError:
        raise WorkspaceError(
            f"parameter 'customer': {customer_id!r} is not a customer id (a whole number); "
            "check the id"
        ) from None


def _request_hash(
    pkey: PseudonymKey, customers: pl.DataFrame, customer_id: int | str, id_type: str = "text"
) -> str:
    """The keyed hash of the account a request names (whether or not it is still there)."""
    _account_of(customers, customer_id, id_type)  # refuses an id of the wrong kind
    if is_ingested(customers):
        return str(source_hashes(pkey, pl.Series([str(customer_id)]), id_type)[0])
    return subject_hash(pkey, [int(customer_id)])[0]


def _person_of(
    customers: pl.DataFrame, customer_id: int | str, id_type: str = "text"
) -> tuple[int, list[int]]:
    roots = _link(customers)
    named = customers.filter(_account_of(customers, customer_id, id_type))["customer_id"]
    root = roots.filter(pl.col("customer_id").is_in(named.implode()))
    if root.height == 0:
        column = "source_customer_id" if is_ingested(customers) else "customer_id"
        raise WorkspaceError(
            f"table 'customers', column '{column}': no customer {customer_id}; check the "
            "id (an erased or purged customer has no data left)"
        )
    person_root = int(root["person_root"][0])
    accounts = roots.filter(pl.col("person_root") == person_root)["customer_id"].to_list()
    return person_root, [int(a) for a in accounts]


def _derived_files(ws: Workspace) -> list[Path]:
    """Every Parquet file derived from persons: prepared frames, labels, target lists."""
    files: list[Path] = []
    for base in (ws.prepared, ws.segments):
        if base.is_dir():
            files += sorted(
                p
                for p in base.rglob("*.parquet")  # month partitions: each file on its own
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(base).parts)
            )
    return [p for p in files if "person_id" in pl.read_parquet_schema(p)]


def _remove_from_derived(ws: Workspace, person_ids: list[str]) -> dict[str, int]:
    """Drop the persons' rows from every derived frame, each file replaced atomically."""
    removed: dict[str, int] = {}
    for path in _derived_files(ws):
        frame = pl.read_parquet(path)
        kept = frame.filter(~pl.col("person_id").is_in(person_ids))
        if kept.height == frame.height:
            continue
        atomic_write_with(path, kept.write_parquet)
        make_private(path)
        removed[str(path.relative_to(ws.root))] = frame.height - kept.height
    return removed


def _append_request(ws: Workspace, entry: dict[str, Any]) -> None:
    folder = ws.subject_log.parent
    made = not folder.exists()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        write_json(ws.subject_log, [*log_entries(ws), entry])
    except BaseException:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    make_private(ws.subject_log)


def _replace_entry(ws: Workspace, index: int, entry: dict[str, Any]) -> None:
    entries = log_entries(ws)
    entries[index] = entry
    write_json(ws.subject_log, entries)
    make_private(ws.subject_log)


def _keys(ws: Workspace, key: PseudonymKey | bytes | str | None, key_file: Any) -> PseudonymKey:
    return load_key(key, key_file=key_file, workspace=ws, synthetic_proof=prove_synthetic)


def _request(
    ws: Workspace,
    pol: Policy,
    action: str,
    hashes: list[str],
    pkey: PseudonymKey,
    requested_on: dt.date | None,
    today: dt.date | None,
) -> SubjectRequest:
    rule = pol.exclusions["erasure" if action == "erasure" else "restriction"]
    done = today or dt.date.today()
    asked = requested_on or done
    if asked > done:
        raise WorkspaceError(
            f"parameter 'requested_on': {asked} is after today ({done}); give the date the "
            "request was received"
        )
    return SubjectRequest(
        action=action,
        subject_hashes=tuple(hashes),
        requested_on=asked,
        done_on=done,
        deadline=asked + dt.timedelta(days=rule.deadline_days),
        clause_ids=rule.clause_ids,
        log_path=ws.subject_log,
        key_id=pkey.key_id,
    )


def _carry_out(
    ws: Workspace,
    pol: Policy,
    action: str,
    accounts_by_person: Mapping[int, list[int]],
    pkey: PseudonymKey,
    requested_on: dt.date | None,
    today: dt.date | None,
    resume: tuple[int, SubjectRequest] | None = None,
) -> SubjectRequest:
    accounts = [a for group in accounts_by_person.values() for a in group]
    customers = read_table(ws.raw_table("customers"))  # bound: the bytes hashed first
    mine = pl.col("customer_id").is_in(accounts)
    if resume is None:
        logged = account_hashes(pkey, customers.filter(mine)).to_list()
        request = _request(ws, pol, action, logged, pkey, requested_on, today)
        # Logged first: if the run dies half-way, prepare already keeps the person out.
        _append_request(ws, {**request.to_dict(), "completed": False})
        index = len(log_entries(ws)) - 1
    else:  # an interrupted request: completed under its own entry, never a second one
        index, request = resume
        request = SubjectRequest(**{**request.__dict__, "done_on": today or dt.date.today()})
    try:
        return _finish_logged(ws, action, accounts_by_person, pkey, customers, mine, request, index)
    except (OSError, pl.exceptions.PolarsError) as exc:  # e.g. the disk filled half-way
        raise WorkspaceError(
            f"subject {action} stopped half-way ({' '.join(str(exc).split())[:200]}); the "
            f"request is logged as pending in {ws.subject_log} and every new prepared frame "
            "already keeps the person out. Fix the cause (e.g. free space on the disk of "
            f"{ws.root}) and run the same `segments subject {_COMMANDS[action]}` (or `segments "
            "retention purge`) again: it finishes this request"
        ) from exc


def _finish_logged(
    ws: Workspace,
    action: str,
    accounts_by_person: Mapping[int, list[int]],
    pkey: PseudonymKey,
    customers: pl.DataFrame,
    mine: pl.Expr,
    request: SubjectRequest,
    index: int,
) -> SubjectRequest:
    """The work of a request already logged as pending (entry ``index``): derived files,
    then raw rows, then the entry marked completed."""
    from segments.prepare.raw_rewrite import KeptLines
    from segments.prepare.retention import replace_raw_tables

    accounts = [a for group in accounts_by_person.values() for a in group]
    person_ids = pseudonymise(pkey, "person", list(accounts_by_person))
    rows = _remove_from_derived(ws, person_ids)
    new: dict[str, pl.DataFrame | KeptLines] = {}
    if action == "erasure":
        orders = read_table(ws.raw_table("orders"))
        # the lines of the person's orders go; the lines are rewritten one partition file at
        # a time (never held whole), and counted as they are staged
        lines = KeptLines(orders.filter(mine)["order_id"])
        new = {"customers": customers.filter(~mine), "orders": orders.filter(~mine)}
        new["order_lines"] = lines
        heights = {"customers": customers.height, "orders": orders.height}
        for path in sorted(ws.truth.glob("*.parquet")) if ws.truth.is_dir() else []:
            truth = read_table(path)
            if "customer_id" in truth.columns:
                new[f"truth/{path.stem}"] = truth.filter(~mine)
                heights[f"truth/{path.stem}"] = truth.height
        del orders
        replace_raw_tables(ws, new)
        heights["order_lines"] = lines.height + lines.removed  # as staged: every line read
        for name, frame in new.items():
            if heights[name] != frame.height:
                rows[f"raw/{name}.parquet"] = heights[name] - frame.height
    else:
        flagged = customers.with_columns(
            pl.when(mine)
            .then(pl.lit(True))
            .otherwise(pl.col("restriction_requested"))
            .alias("restriction_requested")
        )
        new = {"customers": flagged}
        rows["raw/customers.parquet (flagged restriction_requested)"] = len(accounts)
        # the tables and the manifest, as one transaction; the run's hashing then holds the
        # digests of what it wrote (nothing else vouches for the bytes just replaced)
        replace_raw_tables(ws, new)
    make_private(ws.raw)
    done = SubjectRequest(**{**request.__dict__, "rows": rows})
    _replace_entry(ws, index, {**done.to_dict(), "completed": True})
    return done


#: The ``segments subject`` command of each logged action.
_COMMANDS = {"erasure": "erase", "restriction": "restrict"}


def _from_entry(ws: Workspace, entry: Mapping[str, Any]) -> SubjectRequest:
    return SubjectRequest(
        action=entry["action"],
        subject_hashes=tuple(entry["subject_hashes"]),
        requested_on=dt.date.fromisoformat(entry["requested_on"]),
        done_on=dt.date.fromisoformat(entry["done_on"]),
        deadline=dt.date.fromisoformat(entry["deadline"]),
        clause_ids=tuple(entry["clause_ids"]),
        rows=dict(entry.get("rows", {})),
        log_path=ws.subject_log,
        key_id=entry.get("key_id"),
    )


def _complete_interrupted(
    ws: Workspace, pol: Policy, pkey: PseudonymKey, today: dt.date | None
) -> list[SubjectRequest]:
    """Finish every logged request whose run died half-way (``completed: false``), each under
    its own entry. Derived frames go before raw rows, so accounts already gone from the raw
    data have nothing left elsewhere."""
    finished: list[SubjectRequest] = []
    for index, entry in enumerate(log_entries(ws)):
        if entry.get("completed", True):
            continue
        request = _from_entry(ws, entry)
        # looked up in, and carried out on, the bytes of one hashing of W/raw/ (as a first
        # run is): a table edited meanwhile is refused, never copied into the rewritten raw
        # data. A request resumed after another is bound to the bytes that one wrote.
        with raw_hashed_once(), reads_bound_to(ws.raw, digests := raw_hashes(ws)):
            require_raw_as_recorded(ws, digests, f"subject {request.action} (resumed)")
            customers = read_table(ws.raw_table("customers"))
            roots = _link(customers)
            hashes = account_hashes(pkey, customers)
            mine = roots.filter(hashes.is_in(list(request.subject_hashes)))
            by_person: dict[int, list[int]] = {}
            for root_id, account in zip(mine["person_root"], mine["customer_id"], strict=True):
                by_person.setdefault(int(root_id), []).append(int(account))
            finished.append(
                _carry_out(
                    ws, pol, request.action, by_person, pkey, None, today, resume=(index, request)
                )
            )
    return finished


def _locked_carry_out(
    ws: Workspace,
    pol: Policy,
    action: str,
    customer_id: int | str | None,
    key: PseudonymKey | bytes | str | None,
    key_file: str | os.PathLike[str] | None,
    requested_on: dt.date | None,
    today: dt.date | None,
) -> SubjectRequest | None:
    """Under the exclusive workspace lock: sweep leftovers, resolve the key, finish
    interrupted requests, then carry out this one (``customer_id``; None for every
    ``erasure_requested`` account).

    The key is checked against the manifest of the same hashing of W/raw/ the request is
    looked up in and carried out on (:func:`segments.workspace.raw_hashed_once`): hashed once,
    after the sweep (which may complete a killed rewrite of W/raw/)."""
    with ws.lock(exclusive=True, wait=False):
        ws.sweep(exclusive=True)
        with raw_hashed_once():
            pkey = _keys(ws, key, key_file)
            return _carry_out_holding_lock(ws, pol, action, customer_id, pkey, requested_on, today)


def _carry_out_holding_lock(
    ws: Workspace,
    pol: Policy,
    action: str,
    customer_id: int | str | None,
    pkey: PseudonymKey,
    requested_on: dt.date | None,
    today: dt.date | None,
) -> SubjectRequest | None:
    """:func:`_locked_carry_out` for a caller that holds the exclusive lock already."""
    # one key per log: hashes under two keys would leave each run blind to half of them
    check_log_key(ws, pkey, f"subject {action}")
    ws.sweep(exclusive=True)  # staging copies of a killed writer may hold the person
    finished = _complete_interrupted(ws, pol, pkey, today)
    # the request is looked up in, and carried out on, the bytes of one hashing of W/raw/
    # (shared with the demo key's proof): a table edited meanwhile is refused, never copied
    # into the rewritten raw data (the request then stays logged as pending)
    with raw_hashed_once(), reads_bound_to(ws.raw, digests := raw_hashes(ws)):
        require_raw_as_recorded(ws, digests, f"subject {action}")
        return _carry_out_bound(ws, pol, action, customer_id, pkey, requested_on, today, finished)


def _carry_out_bound(
    ws: Workspace,
    pol: Policy,
    action: str,
    customer_id: int | str | None,
    pkey: PseudonymKey,
    requested_on: dt.date | None,
    today: dt.date | None,
    finished: list[SubjectRequest],
) -> SubjectRequest | None:
    """The rest of :func:`_carry_out_holding_lock`, inside its binding to W/raw/'s digests."""
    customers = _customers_under(ws, pkey)
    if action == "restriction" and "restriction_requested" not in customers.columns:
        raise WorkspaceError(
            f"subject restrict: the raw customers of {ws.raw} (an ingested export) have no "
            "restriction flag to keep the account stored but out of processing; nothing "
            "was changed. Fix: have the controller mark the restriction at source and leave "
            "the customer out of its exports, or erase the customer here"
        )
    if customer_id is None:  # flagged persons, and erased ones a restored backup brought back
        by_person = {**_flagged_persons(customers), **returned_persons(ws, pkey, customers)}
        if not by_person:
            return finished[-1] if finished else None
    else:
        id_type = _source_id_type(ws)
        mine = _request_hash(pkey, customers, customer_id, id_type)
        for request in finished:
            if request.action == action and mine in request.subject_hashes:
                return request
        person_root, accounts = _person_of(customers, customer_id, id_type)
        by_person = {person_root: accounts}
    return _carry_out(ws, pol, action, by_person, pkey, requested_on, today)


def _customers_under(ws: Workspace, pkey: PseudonymKey) -> pl.DataFrame:
    """The raw customers a request is looked up in. Under the public demo key they are read
    in one binding with a synthetic proof of the same bytes: customers swapped in after the
    key was granted (real people) would otherwise have a request hash logged, and the data
    rewritten, under a key anyone can recompute."""
    if not pkey.is_demo:
        return read_table(ws.raw_table("customers"))
    with raw_hashed_once(), reads_bound_to(ws.raw, raw_hashes(ws)):
        customers = read_table(ws.raw_table("customers"))
        proof = prove_synthetic(ws)
    if not (proof.proven and proof.signed):
        raise PolicyError(
            f"subject request: the raw data of {ws.raw} is no longer proven synthetic "
            f"({proof.reason}), so the public demo key is refused (key custody); nothing was "
            "changed; fix: run again with the steward's key (--key-file)"
        )
    return customers


def _resolve(
    workspace: Workspace | str | os.PathLike[str], policy: Policy | str
) -> tuple[Workspace, Policy]:
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    pol = policy if isinstance(policy, Policy) else Policy.load(policy)
    ws.require(ws.raw_table("customers"), "segments generate")
    return ws, pol


def _one_person(
    action: str,
    workspace: Workspace | str | os.PathLike[str],
    policy: Policy | str,
    customer_id: int | str,
    requested_on: dt.date | None,
    key: PseudonymKey | bytes | str | None,
    key_file: str | os.PathLike[str] | None,
    today: dt.date | None,
) -> SubjectRequest:
    """Carry out one person's ``action`` request (:func:`erase`, :func:`restrict`)."""
    ws, pol = _resolve(workspace, policy)
    done = _locked_carry_out(ws, pol, action, customer_id, key, key_file, requested_on, today)
    assert done is not None  # a customer id always gives a request
    return done


def erase(
    workspace: Workspace | str | os.PathLike[str],
    policy: Policy | str,
    customer_id: int | str,
    *,
    requested_on: dt.date | None = None,
    key: PseudonymKey | bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    today: dt.date | None = None,
) -> SubjectRequest:
    """Erase the person behind ``customer_id`` (every linked account) from the workspace.

    Removes their raw customers, orders and order lines, their planted-truth rows, and
    their rows in every prepared frame, the segment labels and every target list; records
    the request (keyed hash, dates, deadline and the policy's erasure clause ids) in
    ``W/subjects/requests.json``. Released aggregates are not recalled.

    Parameters
    ----------
    workspace : Workspace or path
    policy : Policy or str
        Gives the clause ids and the deadline (``exclusions.erasure``).
    customer_id : int or str
        Any account of the person; for an ingested export, the export's own customer id.
    requested_on : date, optional
        When the request was received (default: today); the deadline runs from it.
    key, key_file : optional
        The steward's pseudonymisation key (see :func:`segments.prepare.pseudonym.load_key`).
    today : date, optional
        The day it is carried out (default: today).

    Returns
    -------
    SubjectRequest

    Raises
    ------
    WorkspaceError
        No such customer (nothing is changed), or no raw data.
    PolicyError
        No steward key for data not proven synthetic (nothing is changed).
    """
    return _one_person(
        "erasure", workspace, policy, customer_id, requested_on, key, key_file, today
    )


def restrict(
    workspace: Workspace | str | os.PathLike[str],
    policy: Policy | str,
    customer_id: int | str,
    *,
    requested_on: dt.date | None = None,
    key: PseudonymKey | bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    today: dt.date | None = None,
) -> SubjectRequest:
    """Restrict processing of the person behind ``customer_id`` (GDPR art. 18).

    Their raw accounts stay stored, flagged ``restriction_requested`` (so every later
    ``prepare`` leaves them out), and their rows leave every prepared frame, the segment
    labels and every target list. Recorded like :func:`erase`.
    """
    return _one_person(
        "restriction", workspace, policy, customer_id, requested_on, key, key_file, today
    )


def erase_flagged(
    workspace: Workspace | str | os.PathLike[str],
    policy: Policy | str,
    *,
    key: PseudonymKey | bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    today: dt.date | None = None,
) -> SubjectRequest | None:
    """Erase every person with an ``erasure_requested`` account (``retention purge``).

    Returns the recorded request, or None when nobody is flagged.
    """
    ws, pol = _resolve(workspace, policy)
    pending = pending_requests(ws)
    flagged = _flagged_persons(pl.read_parquet(ws.raw_table("customers")))
    if not pending and not flagged and not logged_hashes(ws, "erasure"):
        return None  # (with erasures logged, a restored backup may have brought one back)
    return _locked_carry_out(ws, pol, "erasure", None, key, key_file, None, today)


def erase_flagged_holding_lock(
    ws: Workspace, pol: Policy, pkey: PseudonymKey, today: dt.date | None = None
) -> SubjectRequest | None:
    """:func:`erase_flagged` for a caller that already holds the exclusive workspace lock
    (``retention purge`` holds it across the erasure and its own deletions)."""
    return _carry_out_holding_lock(ws, pol, "erasure", None, pkey, None, today)


def pending_requests(ws: Workspace) -> bool:
    """True when a logged request's run died before it finished."""
    return any(not e.get("completed", True) for e in log_entries(ws))


def flagged_persons(customers: pl.DataFrame) -> dict[int, list[int]]:
    """Every linked account of every person with an ``erasure_requested`` account, by
    person root (a sole trader's private and business accounts go together)."""
    return _flagged_persons(customers)


def returned_persons(
    ws: Workspace, key: PseudonymKey, customers: pl.DataFrame
) -> dict[int, list[int]]:
    """Every linked account of every person the request log says was erased but whom the
    raw data hold again (a backup restored after the erasure), by person root."""
    erased = erased_accounts(ws, key, customers["customer_id"])
    if erased.len() == 0:
        return {}
    roots = _link(customers)
    back = roots.filter(pl.col("customer_id").is_in(erased.implode()))["person_root"]
    return _accounts_by_person(roots, back)


def _accounts_by_person(roots: pl.DataFrame, persons: pl.Series) -> dict[int, list[int]]:
    """Every account of each of ``persons`` (person roots), by person root."""
    groups = (
        roots.filter(pl.col("person_root").is_in(persons.implode()))
        .group_by("person_root")
        .agg("customer_id")
        .sort("person_root")
    )
    return {
        int(r): [int(c) for c in ids]
        for r, ids in zip(groups["person_root"], groups["customer_id"], strict=True)
    }


def _flagged_persons(customers: pl.DataFrame) -> dict[int, list[int]]:
    """The accounts of every person with an ``erasure_requested`` account, by person (an
    ingested export carries no such flag)."""
    if "erasure_requested" not in customers.columns:
        return {}
    roots = link_persons(customers)
    flagged_roots = (
        roots.join(customers.select("customer_id", "erasure_requested"), on="customer_id")
        .filter(pl.col("erasure_requested"))["person_root"]
        .unique()
    )
    if flagged_roots.len() == 0:
        return {}
    return _accounts_by_person(roots, flagged_roots)
