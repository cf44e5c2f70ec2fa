"""The subject request log ``W/subjects/requests.json`` as later stages read it.

Erasures and restrictions (:mod:`segments.prepare.subjects`) are recorded there with the people only
as keyed hashes (HMAC with the steward's key) and the id of that key. Ingest, prepare, the
subject commands and the audit read the log through this module: which hashes an action
recorded, how a raw account is hashed (an ingested export's account by the export's own
customer id, which a re-ingest keeps; a generated account by its customer id), and whether
the key at hand is the log's — another key would recognise nobody, so it is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import polars as pl

from segments.exceptions import PolicyError, WorkspaceError
from segments.prepare.pseudonym import KEY_ENV_VAR, PseudonymKey, pseudonymise
from segments.workspace import Workspace

__all__ = [
    "SOURCE_ID_TYPES",
    "account_hashes",
    "canonical_source_ids",
    "is_ingested",
    "check_log_key",
    "log_entries",
    "log_key_problem",
    "logged_hashes",
    "source_hashes",
    "subject_hash",
]

#: Namespace of the keyed hash that stands for an erased or restricted account in the log.
_HASH_NAMESPACE = "subject-request"
#: The same for an ingested export's account, hashed by the export's own customer id: the
#: internal ids are renumbered by every ingest, the export's id is what comes back.
_SOURCE_NAMESPACE = "subject-request:source"


#: How an export's customer ids compare (the mapping's ``[customers] id_type``): ``integer``
#: by value ("00007" is 7), ``text`` trimmed, ``text-casefold`` trimmed and lower-cased.
SOURCE_ID_TYPES = ("text", "integer", "text-casefold")


def canonical_source_ids(ids: pl.Series, id_type: str = "text") -> pl.Series:
    """An export's customer ids in the one form that is stored and hashed, so a later export
    that writes the same id differently ("00007" vs "7") names the same person; null where
    an id is not of ``id_type`` (not a whole number)."""
    text = ids.cast(pl.String).str.strip_chars()
    if id_type == "integer":
        return text.cast(pl.Int64, strict=False).cast(pl.String)
    if id_type == "text-casefold":
        return text.str.to_lowercase()
    return text


def log_entries(ws: Workspace) -> list[dict[str, Any]]:
    """The log's entries, oldest first ([] when there is none)."""
    if not ws.subject_log.is_file():
        return []
    try:
        with open(ws.subject_log, encoding="utf-8") as fh:
            entries = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkspaceError(
            f"the subject request log {ws.subject_log} is damaged ({exc}); nothing was changed. "
            "Fix: restore it from backup — it records erasures that every later run must keep "
            "honouring, so it is never regenerated"
        ) from None
    if not isinstance(entries, list):
        raise WorkspaceError(
            f"{ws.subject_log} is not a list of requests; restore it from backup (it records "
            "erasures that prepare must keep honouring)"
        )
    return entries


def subject_hash(key: PseudonymKey, customer_ids: Iterable[int]) -> list[str]:
    """The keyed hashes that stand for accounts in the request log (no id in clear)."""
    return pseudonymise(key, _HASH_NAMESPACE, [int(c) for c in customer_ids])


def is_ingested(customers: pl.DataFrame) -> bool:
    """True for raw customers of an ingested export (they carry the export's own id)."""
    return "source_customer_id" in customers.columns


def account_hashes(key: PseudonymKey, customers: pl.DataFrame) -> pl.Series:
    """The keyed hash each raw account (row of ``customers``) stands for in the request log:
    of the export's own customer id for ingested data, which a later ingest keeps (the
    internal ``customer_id`` is renumbered), of ``customer_id`` otherwise."""
    if is_ingested(customers):
        ids = customers["source_customer_id"].cast(pl.String).to_list()
        return pl.Series("hash", pseudonymise(key, _SOURCE_NAMESPACE, ids), dtype=pl.String)
    return pl.Series("hash", subject_hash(key, customers["customer_id"].to_list()), pl.String)


def source_hashes(key: PseudonymKey, source_ids: pl.Series, id_type: str = "text") -> pl.Series:
    """:func:`account_hashes` of an export's customer ids, before ingest numbers them, each
    in its canonical form (:func:`canonical_source_ids`)."""
    canonical = canonical_source_ids(source_ids, id_type).fill_null("")
    hashes = pseudonymise(key, _SOURCE_NAMESPACE, canonical.to_list())
    return pl.Series("hash", hashes, dtype=pl.String)


def logged_hashes(ws: Workspace, action: str) -> set[str]:
    """Every keyed hash the request log records for ``action`` ('erasure', 'restriction')."""
    return {h for e in log_entries(ws) if e.get("action") == action for h in e["subject_hashes"]}


def log_key_problem(ws: Workspace, key: PseudonymKey) -> str | None:
    """Why ``key`` cannot read the request log (its hashes were made with another key), or
    None. Entries written before key ids were recorded carry none and cannot be checked."""
    written = sorted({str(e["key_id"]) for e in log_entries(ws) if e.get("key_id")})
    other = [k for k in written if k != key.key_id]
    if not other:
        return None
    return (
        f"the subject request log {ws.subject_log} was written with the pseudonymisation key "
        f"whose id is {', '.join(other)}, but this run's key ({key.provenance}) has id "
        f"{key.key_id}: its keyed hashes cannot recognise the erased people, who could come "
        "back"
    )


def check_log_key(ws: Workspace, key: PseudonymKey, command: str) -> None:
    """Refuse to go on when the request log was written with another key (see
    :func:`log_key_problem`); nothing has been changed when this raises.

    Raises
    ------
    PolicyError
        The log's hashes were made with a different key.
    """
    problem = log_key_problem(ws, key)
    if problem is not None:
        raise PolicyError(
            f"{command}: {problem}; nothing was changed. Fix: use the key the log was written "
            f"with (set {KEY_ENV_VAR} or --key-file to it); an erased person is gone from the "
            "raw data, so the log cannot be re-keyed: a new key needs a new workspace fed from "
            "an export the controller has already applied every erasure to"
        )
