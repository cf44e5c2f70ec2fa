"""Retention purge: delete raw rows whose retention has ended for every purpose.

``prepare`` filters what one purpose may use; ``purge`` removes from ``W/raw`` what no
declared purpose may use any more (AK-3 "then deleted or de-identified", OF-2 "weeded
continuously", AO-6 "order lines older than 24 months are not available at all"). An order
(with its lines) goes when, for every purpose, either its person is outside the purpose's
customer rules or the order is outside its transaction rules; an account goes when its person
is outside every purpose's customer rules (and so has no order left). Active customers are
never purged by an end-of-relationship rule.

The customers and orders are held whole (one row per account or order); the order lines,
the table that grows with the history, are checked, counted and rewritten one partition file
at a time (:mod:`segments.prepare.raw_rewrite`). All rewritten tables are written to
temporary files first and renamed into place together;
the manifest's hashes are updated and ``W/raw/purge_log.json`` records what went (counts,
cutoffs and clause ids — never the ids of what was deleted, which would keep personal data
past its retention).

Persons flagged ``erasure_requested`` are erased first, everywhere in the workspace
(:func:`segments.prepare.subjects.erase_flagged`: raw rows, prepared frames, labels, target lists),
and recorded in ``W/subjects/requests.json`` as keyed hashes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from segments._tables import (
    bound_file_bytes,
    bound_table_digests,
    check_bound_files,
    read_table,
    reads_bound_to,
    table_file_bytes,
)
from segments.policy import Policy, RetentionRule
from segments.prepare.frames import (
    as_of_date,
    link_persons,
    load_raw_tables,
    person_anchor,
    person_table,
    row_anchor,
)
from segments.prepare.pseudonym import PseudonymKey, load_key
from segments.prepare.raw_rewrite import FILE, KeptLines, checked_line_counts, stage_kept_lines
from segments.prepare.subject_log import check_log_key, logged_hashes
from segments.prepare.subjects import (
    erase_flagged_holding_lock,
    flagged_persons,
    pending_requests,
    returned_persons,
)
from segments.privacy.synthetic import prove_synthetic
from segments.workspace import (
    Workspace,
    dump_json,
    make_private,
    parquet_files,
    partition_meets,
    raw_hashed_once,
    raw_hashes,
    remember_raw_writes,
    replace_raw_files,
    sha256_file,
)

__all__ = ["PurgeResult", "purge"]

_PURGED_TABLES = ("customers", "orders", "order_lines")
#: The raw tables a purge holds whole (one row per account, product or order); the order
#: lines are checked, counted and rewritten one file at a time (:mod:`.raw_rewrite`).
_HELD_TABLES = ("customers", "products", "orders")


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed (or would remove, with ``dry_run``)."""

    policy: str
    as_of: dt.date
    removed: Mapping[str, int]
    remaining: Mapping[str, int]
    dry_run: bool
    log_path: Path | None
    #: Accounts erased because their person has an ``erasure_requested`` account (would be,
    #: dry run): every linked account of the person, not only the flagged one.
    erased_accounts: int = 0
    #: Persons those accounts belong to.
    erased_persons: int = 0
    #: Raw rows the erasure removed, by table (customers, orders, order_lines).
    erased_rows: Mapping[str, int] = field(default_factory=dict)

    @property
    def total_removed(self) -> int:
        """Every raw row that went: by retention and by erasure request."""
        return sum(self.removed.values()) + sum(self.erased_rows.values())


#: The person columns :func:`person_anchor` reads.
_PERSON_ANCHORS = ("last_order_or_signup", "last_contact", "end_date")


def _keep(rules: tuple[RetentionRule, ...], as_of: dt.date, anchor_of: Any) -> pl.Expr:
    keep = pl.lit(True)
    for rule in rules:
        cutoff = rule.cutoff(as_of)
        if cutoff is not None:
            keep = keep & (anchor_of(rule.anchor) >= cutoff)
    return keep


def _retained(
    policy: Policy, frames: Mapping[str, pl.DataFrame], as_of: dt.date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Account ids and order ids still inside the retention of at least one purpose."""
    roots = link_persons(frames["customers"])
    persons = person_table(frames["customers"], frames["orders"], roots)
    # each order with only what a rule reads (its date, its person's anchors): the join is
    # one row per order, the largest frame a purge builds (issue 21)
    anchors = persons.select("person_root", *_PERSON_ANCHORS)
    orders = (
        frames["orders"]
        .select("order_id", "customer_id", "order_date")
        .join(roots, on="customer_id")
        .drop("customer_id")
        .join(anchors, on="person_root")
    )
    del anchors
    person_keep = pl.lit(False)
    order_keep = pl.lit(False)
    for purpose in policy.purposes.values():
        in_customer = _keep(purpose.rules_for("customer"), as_of, person_anchor)
        person_keep = person_keep | in_customer
        order_keep = order_keep | (
            in_customer & _keep(purpose.rules_for("transactions"), as_of, row_anchor)
        )
    kept_roots = persons.filter(person_keep).select("person_root")
    kept_accounts = roots.join(kept_roots, on="person_root", how="semi").select("customer_id")
    kept_orders = orders.filter(order_keep).select("order_id")
    return kept_accounts, kept_orders


def purge(
    workspace: Workspace | str | os.PathLike[str],
    policy: Policy | str,
    as_of: dt.date | str,
    *,
    dry_run: bool = False,
    key: PseudonymKey | bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> PurgeResult:
    """Delete raw customers, orders and order lines whose retention ended for every purpose.

    Parameters
    ----------
    workspace : Workspace or path
    policy : Policy or str
    as_of : date or 'YYYY-MM-DD'
    dry_run : bool
        Count what would go without touching any file.
    key, key_file : optional
        The steward's pseudonymisation key, to erase flagged persons from prepared frames,
        labels and target lists (:func:`segments.prepare.pseudonym.load_key`).

    Returns
    -------
    PurgeResult

    Raises
    ------
    SchemaError
        If a raw table breaks its schema (nothing is changed).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    pol = policy if isinstance(policy, Policy) else Policy.load(policy)
    day = as_of_date(as_of)
    # The erasure and the deletions under one exclusive lock: a prepare or segment running
    # meanwhile could otherwise publish rows read before they went.
    # One hashing of W/raw/ for the whole run: the key's check, the erasure step and the
    # purge read its bytes, and each rewrite hands its own digests on (remember_raw_writes).
    with ws.lock(exclusive=not dry_run, wait=dry_run), raw_hashed_once():
        return _purge_holding_lock(ws, pol, day, dry_run, key, key_file)


def _erased_rows(
    frames: Mapping[str, pl.DataFrame], lines: pl.DataFrame, accounts: list[int]
) -> dict[str, int]:
    """Raw rows of ``accounts`` by table (what their erasure removes); ``lines``: the lines
    per order and file (:func:`checked_line_counts`)."""
    orders = frames["orders"].filter(pl.col("customer_id").is_in(accounts))
    theirs = lines.filter(pl.col("order_id").is_in(orders["order_id"].implode()))
    return {
        "customers": frames["customers"].filter(pl.col("customer_id").is_in(accounts)).height,
        "orders": orders.height,
        "order_lines": _line_count(theirs),
    }


def _line_count(lines: pl.DataFrame) -> int:
    """The number of lines ``lines`` (per order and file) counts."""
    return int(lines.get_column("n_lines").sum())


def _load_held(
    ws: Workspace, day: dt.date
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, tuple[str, ...]]:
    """The raw tables a purge holds whole, and the order lines checked and counted per order
    and file, one file at a time, with the files' names (inside the caller's binding to
    W/raw/: its bytes)."""
    frames = load_raw_tables(ws, day, _HELD_TABLES)
    return frames, *checked_line_counts(ws, day, frames["orders"], frames["products"])


def _purge_holding_lock(
    ws: Workspace,
    pol: Policy,
    day: dt.date,
    dry_run: bool,
    key: PseudonymKey | bytes | str | None,
    key_file: str | os.PathLike[str] | None,
) -> PurgeResult:
    # the rows purged, the bytes copied unchanged and the digests logged as "before" are
    # those of one hashing of W/raw/ (reads_bound_to): a table swapped meanwhile is refused
    with raw_hashed_once():  # the run's one hashing (purge), shared with the key's checks
        digests = raw_hashes(ws)
        with reads_bound_to(ws.raw, digests):
            frames, lines, line_files = _load_held(ws, day)
            by_person = flagged_persons(frames["customers"])
            if logged_hashes(ws, "erasure"):  # erased persons a restored backup brought back
                pkey = load_key(
                    key, key_file=key_file, workspace=ws, synthetic_proof=prove_synthetic
                )
                check_log_key(ws, pkey, "retention purge")
                by_person |= returned_persons(ws, pkey, frames["customers"])
    accounts = [a for group in by_person.values() for a in group]
    erased_rows = _erased_rows(frames, lines, accounts) if accounts else {}
    if dry_run and accounts:  # retention is counted on what the erasure would leave
        gone = pl.col("customer_id").is_in(accounts)
        orders = frames["orders"].filter(gone)["order_id"].implode()
        frames = {
            **frames,
            "customers": frames["customers"].filter(~gone),
            "orders": frames["orders"].filter(~gone),
        }
        lines = lines.filter(~pl.col("order_id").is_in(orders))
    elif not dry_run and (accounts or pending_requests(ws)):
        # the erasure reads what it needs, and the purge reads W/raw/ again after it: the
        # tables and counts read so far are let go first (else held twice meanwhile)
        del frames, lines, line_files
        erase_flagged_holding_lock(
            ws, pol, load_key(key, key_file=key_file, workspace=ws, synthetic_proof=prove_synthetic)
        )
        digests = raw_hashes(ws)  # the erasure rewrote W/raw/: the digests of what it wrote
        with reads_bound_to(ws.raw, digests):
            frames, lines, line_files = _load_held(ws, day)
    erased = {"accounts": len(accounts), "persons": len(by_person)}
    kept_accounts, kept_orders = _retained(pol, frames, day)
    # the lines are decided per order: those of an order not kept go, from the one file
    # (or the files) holding them; their counts come from the per-order counts
    kept_lines = _line_count(lines.join(kept_orders, on="order_id", how="semi"))
    gone_lines = lines.join(kept_orders, on="order_id", how="anti")
    new: dict[str, pl.DataFrame | KeptLines] = {
        "customers": frames["customers"].join(kept_accounts, on="customer_id", how="semi"),
        "orders": frames["orders"].join(kept_orders, on="order_id", how="semi"),
        "order_lines": KeptLines(
            {
                line_files[number]: part.get_column("order_id")
                for (number,), part in gone_lines.partition_by(
                    FILE, as_dict=True, include_key=False
                ).items()
            },
            expected=kept_lines,
        ),
    }
    del gone_lines
    removed = {
        "customers": frames["customers"].height - new["customers"].height,
        "orders": frames["orders"].height - new["orders"].height,
        "order_lines": _line_count(lines) - kept_lines,
    }
    remaining = {
        "customers": new["customers"].height,
        "orders": new["orders"].height,
        "order_lines": kept_lines,
    }
    del lines
    result = PurgeResult(
        pol.name,
        day,
        removed,
        remaining,
        dry_run,
        None,
        erased_accounts=erased["accounts"],
        erased_persons=erased["persons"],
        erased_rows=erased_rows,
    )
    if dry_run or not any(removed.values()):
        return result

    with reads_bound_to(ws.raw, digests):  # a partition kept whole is copied as hashed
        # Keep the planted truth (evaluations only) consistent with the accounts that remain.
        for path in sorted(ws.truth.glob("*.parquet")) if ws.truth.is_dir() else []:
            truth = read_table(path)
            if "customer_id" in truth.columns:
                new[f"truth/{path.stem}"] = truth.join(kept_accounts, on="customer_id", how="semi")
        before = {t: _recorded_sha256(digests, f"{t}.parquet") for t in new}
        log_path = ws.raw / "purge_log.json"

        def logged(written: Mapping[str, str]) -> tuple[Path, Any]:
            after = {t: _recorded_sha256(written, f"{t}.parquet") for t in new}
            entry = _log_entry(pol, day, removed, remaining, before, after)
            return log_path, [*_log_entries(log_path), entry]

        # the tables, the manifest and the log replaced as one transaction
        replace_raw_tables(ws, new, logged)
    return dataclasses.replace(result, log_path=log_path)


def _recorded_sha256(digests: Mapping[str, str], name: str) -> str:
    """:func:`segments.workspace.parquet_sha256` of the table ``name`` (``customers.parquet``,
    ``order_lines.parquet``) as ``digests`` (:func:`segments.workspace.raw_hashes`) recorded
    it: the digest of the bytes the run read, not of the files there now."""
    if name in digests:
        return digests[name]
    parts = {
        k: v
        for k, v in digests.items()
        if k.startswith(name + "/")
        and len(k.split("/")) == 3
        and k.endswith(".parquet")
        and partition_meets(k.split("/")[1], None)
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


#: Column tagging each row with its partition while partitions are staged together.
_PART = "__partition"


def stage_partitions(target: Path, frame: pl.DataFrame, staging: Path) -> dict[str, str]:
    """Write ``frame`` (a subset of the partitioned table ``target``'s rows, such as what an
    erasure or a purge keeps) into ``staging`` as the same month partitions: a partition
    whose rows all stay is copied byte for byte (its SHA-256 unchanged: history is not
    rewritten), the others keep only their remaining rows.

    Returns the SHA-256 of each partition copied whose bytes were read bound to a hashing
    of W/raw/ (:func:`segments._tables.reads_bound_to`: checked against that digest), keyed
    by its path inside the table: what was copied needs no second hashing."""
    key = ["order_id", "line_no"] if {"order_id", "line_no"} <= set(frame.columns) else None
    kept = frame.select(key) if key else frame
    parts = parquet_files(target)
    check_bound_files(target, parts)  # inside reads_bound_to: the partitions hashed, all of them
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not parts:
        return {}
    bound = bound_table_digests(target, target.name) or {}
    copied: dict[str, str] = {}
    on = key or list(frame.columns)
    # one semi join over every partition (tagged with its index), not one per partition: a
    # join per month rebuilt the kept rows' hash table each time (backfill rewinds the raw
    # data once per month: 47 of its 110 s at 50,000 customers)
    # each partition's bytes read once: parsed, and copied unchanged below (inside a
    # reads_bound_to block, the bytes its caller hashed)
    data = [table_file_bytes(part) for part in parts]
    everything = pl.concat(
        [
            pl.read_parquet(io.BytesIO(d)).with_columns(pl.lit(i, pl.UInt32).alias(_PART))
            for i, d in enumerate(data)
        ]
    )
    heights = everything.group_by(_PART).len()
    remaining_all = everything.join(kept, on=on, how="semi", maintain_order="left")
    by_part = remaining_all.partition_by(_PART, as_dict=True, include_key=False)
    height = dict(heights.iter_rows())
    empty = everything.clear().drop(_PART)
    for i, part in enumerate(parts):
        out = staging / part.relative_to(target)
        remaining = by_part.get((i,), empty)
        if remaining.is_empty() and not (part == parts[-1] and not any(staging.iterdir())):
            continue  # an emptied month goes (the last one stays, for the table's schema)
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if remaining.height == height.get(i, 0):
            out.write_bytes(data[i])
            rel = part.relative_to(target).as_posix()
            if f"{target.name}/{rel}" in bound:
                copied[rel] = bound[f"{target.name}/{rel}"]
        else:
            remaining.write_parquet(out)
    return copied


def replace_raw_tables(
    ws: Workspace,
    frames: Mapping[str, pl.DataFrame | KeptLines],
    log: Callable[[Mapping[str, str]], tuple[Path, Any]] | None = None,
) -> dict[str, str]:
    """Replace the raw tables ``frames`` and record them in the manifest, as one transaction.

    Every table is written to a temporary file (or, for a table stored as month partitions,
    a temporary folder of partitions; the order lines as a :class:`.raw_rewrite.KeptLines`,
    one partition at a time), the manifest with their new SHA-256s and row counts
    (:func:`manifest_with`) and, with ``log``, a log file (``log(written)`` gives its path
    and content) are staged beside them, then all are renamed into place by
    :func:`segments.workspace.replace_raw_files`: a ``kill -9`` at any step leaves ``W/raw/``
    as it was (nothing renamed yet: the staging is swept) or, on the next start, as this
    call meant to leave it (the journal's moves completed), never a mix.

    Returns
    -------
    dict
        The SHA-256 of every file written, keyed as the manifest lists them (a partitioned
        table: one entry per partition file).
    """
    staged: list[tuple[Path, Path]] = []
    written: dict[str, str] = {}
    also: dict[str, str] = {}  # the manifest's and the log's digests, as staged
    try:
        for name, frame in frames.items():
            target = ws.raw_table(name)
            prefix = f".{target.name}.p{os.getpid()}-"
            if target.is_dir():
                tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=".tmp"))
                staged.append((tmp, target))
                copied = (
                    stage_kept_lines(target, frame, tmp)
                    if isinstance(frame, KeptLines)
                    else stage_partitions(target, frame, tmp)
                )
                for file in parquet_files(tmp):  # the bytes renamed into place
                    rel = file.relative_to(tmp).as_posix()
                    written[f"{name}.parquet/{rel}"] = copied.get(rel) or sha256_file(file)
            else:
                fd, name_tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
                os.close(fd)
                tmp = Path(name_tmp)
                staged.append((tmp, target))
                whole = frame.whole(target) if isinstance(frame, KeptLines) else frame
                whole.write_parquet(tmp)
                del whole
                written[f"{name}.parquet"] = sha256_file(tmp)
        files = {ws.manifest: manifest_with(ws, written, {t: f.height for t, f in frames.items()})}
        if log is not None:
            path, content = log(written)
            files[path] = content
        for path, content in files.items():
            fd, name_tmp = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.p{os.getpid()}-", suffix=".tmp"
            )
            os.close(fd)
            staged.append((Path(name_tmp), path))
            with open(name_tmp, "w", encoding="utf-8") as fh:
                dump_json(content, fh)
            also[path.relative_to(ws.raw).as_posix()] = sha256_file(name_tmp)
        for tmp, _ in staged:
            make_private(tmp)
    except BaseException:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(tmp)
        raise
    replace_raw_files(ws, staged)  # the commit, and the moves (rolled forward if killed)
    # the run's one hashing of W/raw/ now holds what it wrote (no second hashing)
    remember_raw_writes(ws, [*(f"{n}.parquet" for n in frames), *also], written | also)
    return written


def _log_entry(
    policy: Policy,
    as_of: dt.date,
    removed: Mapping[str, int],
    remaining: Mapping[str, int],
    before: Mapping[str, str],
    after: Mapping[str, str],
) -> dict[str, Any]:
    rules = []
    for purpose in policy.purposes.values():
        for rule in purpose.retention:
            cutoff = rule.cutoff(as_of)
            rules.append(
                {
                    "purpose": purpose.name,
                    "rule": rule.name,
                    "clause_ids": list(rule.clause_ids),
                    "cutoff": None if cutoff is None else cutoff.isoformat(),
                }
            )
    return {
        "purged_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "as_of": as_of.isoformat(),
        "policy": policy.name,
        "controller": policy.controller,
        "rule": "a row goes when its retention has ended for every declared purpose",
        "rules": rules,
        "rows_removed": dict(removed),
        "rows_remaining": dict(remaining),
        "sha256_before": dict(before),
        "sha256_after": dict(after),
    }


def _log_entries(path: Path) -> list[Any]:
    """The purge log's entries so far (none without a log); inside the purge's binding to
    W/raw/, the bytes it hashed."""
    data = bound_file_bytes(path)
    return [] if data is None else list(json.loads(data.decode("utf-8")))


def manifest_with(
    ws: Workspace, files: Mapping[str, str], rows: Mapping[str, int]
) -> dict[str, Any]:
    """The manifest with the new SHA-256s (``files``: as :func:`replace_raw_tables` returns
    them) and row counts of the rewritten tables, keeping its other fields; a rewritten
    table's old entries (every partition file of it) are replaced. Read inside the caller's
    binding to W/raw/, the manifest is the one it hashed (a swapped one is refused)."""
    manifest = ws.read_manifest()
    listed = manifest.setdefault("files", {})
    counts = manifest.setdefault("row_counts", {})
    for name in rows:
        table = f"{name}.parquet"
        for entry in [e for e in listed if e == table or e.startswith(table + "/")]:
            del listed[entry]
        counts[name] = rows[name]
    listed.update(files)
    manifest["files"] = dict(sorted(listed.items()))
    manifest["purged"] = True
    return manifest
