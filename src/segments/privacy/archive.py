"""The monthly purchasing series: each closed month released once, appended to an archive.

``W/releases/archive/monthly_category.parquet`` holds one row per month and product
category (``docs/architecture.md``, "Release archive"). A month is released by
:func:`release_month` only when it has closed (its last day is before ``as_of``) and while
its data is inside retention; it is appended once and never re-released — the archive is
checked, and the ledger holds a unique key on (population, series, month) checked inside the
reserving transaction, so two processes or workspaces sharing a ledger cannot both release a
month. A month whose publication was *aborted* (reconciliation after a crash) may be released
again, charged again; a month is never published twice. Forecasts read the archive
(post-processing: no new loss).
:func:`backfill` builds the archive for the synthetic history by stepping ``as_of`` through
past months; it needs an evaluation or throw-away demo ledger.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import polars as pl

from segments._tables import reads_bound_to, scan_table, to_pandas
from segments.exceptions import ReleaseRefusedError, WorkspaceError
from segments.months import add_months, month_start, next_month
from segments.privacy.ledger import cite_rule
from segments.privacy.releases import ReleaseResult, plan_release
from segments.privacy.specs import SPECS, PrivacyParams, ReleaseSpec
from segments.progress import progress
from segments.provenance import hashing_raw_once
from segments.workspace import (
    CARD,
    PREPARED_CUSTOMERS,
    PREPARED_LINES,
    Workspace,
    atomic_write_with,
)

if TYPE_CHECKING:
    from segments.policy import Policy
    from segments.prepare.pseudonym import PseudonymKey
    from segments.privacy.ledger import Ledger, LedgerEntry
    from segments.privacy.publishing import ReleaseContext


__all__ = [
    "ARCHIVE_SCHEMA",
    "BackfillReport",
    "archive_problems",
    "check_month_in_data",
    "rebuild_archive",
    "rebuild_archive_from_ledgers",
    "backfill",
    "month_start",
    "next_month",
    "read_archive",
    "release_month",
    "releasable_months",
]

ARCHIVE_SCHEMA: dict[str, Any] = {
    "month": pl.Date,
    "category": pl.Utf8,
    "units": pl.Int64,
    "sek": pl.Int64,
    "units_scale": pl.Float64,
    "sek_scale": pl.Float64,
    "mechanism": pl.Utf8,
    "epsilon": pl.Float64,
    "rho": pl.Float64,
    "release_id": pl.Utf8,
    # the charged estimate of the mass the clip removed (segments.privacy.vectors, "The
    # clip's own bias"), the month's total in the categories' scale, on every row of the
    # month, and its noise scale; null for months released before it was measured
    "units_clip_excess": pl.Int64,
    "units_clip_excess_scale": pl.Float64,
    "sek_clip_excess": pl.Int64,
    "sek_clip_excess_scale": pl.Float64,
}
#: The columns of :data:`ARCHIVE_SCHEMA` a month released before they existed lacks (null).
CLIP_EXCESS_COLUMNS = (
    "units_clip_excess",
    "units_clip_excess_scale",
    "sek_clip_excess",
    "sek_clip_excess_scale",
)


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` in :data:`ARCHIVE_SCHEMA`: an archive or table written before the clip's
    excess was measured gets those columns as null."""
    missing = [c for c in CLIP_EXCESS_COLUMNS if c not in frame.columns]
    frame = frame.with_columns(pl.lit(None, dtype=ARCHIVE_SCHEMA[c]).alias(c) for c in missing)
    return frame.select(list(ARCHIVE_SCHEMA)).cast(ARCHIVE_SCHEMA)  # type: ignore[arg-type]


def read_archive(workspace: Workspace) -> pd.DataFrame:
    """The archive (empty, with its columns, before the first month is released)."""
    return to_pandas(_read_archive_pl(workspace))


def _read_archive_pl(workspace: Workspace) -> pl.DataFrame:
    """:func:`read_archive` as polars (for internal callers)."""
    path = workspace.archive
    if not path.exists():
        return pl.DataFrame(schema=ARCHIVE_SCHEMA)
    return _conform(pl.read_parquet(path))


def releasable_months(
    as_of: dt.date, params: PrivacyParams, first_data_day: dt.date | None = None
) -> list[dt.date]:
    """Months that have closed before ``as_of`` and whose data is inside retention.

    A month's data is inside retention when its first day is no older than
    ``retention_months`` before ``as_of``'s month; with ``first_data_day``, only months fully
    covered by the data (starting on or after it) are listed.

    Examples
    --------
    >>> from dataclasses import replace
    >>> from segments.policy import Policy
    >>> p = replace(Policy.load("alloffice").privacy, retention_months=3)
    >>> [m.isoformat() for m in releasable_months(dt.date(2026, 3, 15), p)]
    ['2025-12-01', '2026-01-01', '2026-02-01']
    """
    current = month_start(as_of)
    first = add_months(current, -params.retention_months)
    if first_data_day is not None:
        covered = month_start(first_data_day)
        if covered < first_data_day:
            covered = next_month(covered)
        first = max(first, covered)
    months = []
    month = first
    while next_month(month) <= as_of:
        months.append(month)
        month = next_month(month)
    return months


@contextlib.contextmanager
def _archive_lock(workspace: Workspace) -> Iterator[None]:
    """One writer at a time: two processes cannot release the same month together."""
    folder = workspace.archive.parent
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@hashing_raw_once
def release_month(
    context: ReleaseContext,
    month: dt.date,
    *,
    as_of: dt.date,
    params: PrivacyParams,
    confidence: float = 0.95,
    spec: ReleaseSpec | None = None,
    prepared: Path | None = None,
) -> ReleaseResult:
    """Release one closed month of the purchasing series and append it to the archive.

    Parameters
    ----------
    context : segments.privacy.publishing.ReleaseContext
        The ledger charged, the workspace (reads
        ``W/prepared/<purpose>/{customers,lines}.parquet``), policy, purpose, recipient and
        destination.
    month : date
        First day of the month.
    as_of : date
        The release date; the month must have closed before it and lie inside retention.
    params : PrivacyParams
    confidence : float
    spec : ReleaseSpec, optional
        Default ``SPECS["monthly_category"]``.
    prepared : Path, optional
        Folder of the prepared frames (default ``W/prepared/<purpose>``); backfill points it
        at frames prepared as of the month's close.

    Returns
    -------
    ReleaseResult

    Raises
    ------
    ReleaseRefusedError
        The month is open, outside retention, or already released (archive or ledger).
    """
    if month != month_start(month):
        raise ReleaseRefusedError(
            f"month={month} must be the first day of a month, e.g. {month_start(month)}"
        )
    if month not in releasable_months(as_of, params):
        if next_month(month) > as_of:
            rule = f"it has not closed before as_of={as_of}"
        else:
            rule = (
                f"its data is outside the {params.retention_months}-month retention window "
                f"at as_of={as_of}"
            )
        raise ReleaseRefusedError(
            f"monthly series: month {month:%Y-%m} cannot be released: {rule}; release only "
            "closed months inside retention"
        )
    workspace, policy, purpose = context.workspace, context.policy, context.purpose
    prepared = prepared or workspace.prepared_dir(purpose)
    check_month_in_data(workspace, prepared, month, purpose, policy)
    for name in (PREPARED_CUSTOMERS, PREPARED_LINES):
        workspace.require(prepared / name, f"segments prepare --purpose {purpose}")
    from segments.provenance import verified_frames

    # the frames' owner: the workspace, or the backfill's replay of it (W/.history)
    source = Workspace(prepared.parent.parent)
    with (
        # the bytes read are hashed against prepare's signed record (no check-then-read gap),
        # before the archive's lock file is created: a refusal writes nothing
        # (only the month's partitions are copied, hashed and read)
        verified_frames(
            source,
            purpose,
            (PREPARED_CUSTOMERS, PREPARED_LINES),
            policy,
            window=(month, next_month(month)),
        ) as copies,
        _archive_lock(workspace),
    ):
        # a month a killed run published but never appended comes back before the check
        rebuild_archive(workspace.releases, context.ledger)
        archive = _read_archive_pl(workspace)
        if archive.filter(pl.col("month") == month).height:
            previous = archive.filter(pl.col("month") == month)["release_id"][0]
            raise ReleaseRefusedError(
                f"monthly series: month {month:%Y-%m} was already released ({previous})"
                f"{cite_rule(policy)} and is in the archive; a month is released once — read "
                f"it from {workspace.archive}"
            )
        with plan_release(
            spec or SPECS["monthly_category"],
            params,
            customers=copies[PREPARED_CUSTOMERS],
            lines=copies[PREPARED_LINES],
            as_of=as_of,
            window=(month, next_month(month)),
            confidence=confidence,
            workspace=workspace,
            origins=copies.origins,
        ) as plan:
            result = plan.execute(
                context,
                # "once" (a unique key in the ledger, checked in the reserving transaction, so
                # two workspaces sharing the ledger cannot both release the month) and the
                # card's month are derived by execute from the series query and the window
            )
        _append(workspace, archive, _archive_rows(result, month))
    return result


def check_month_in_data(
    workspace: Workspace, prepared: Path, month: dt.date, purpose: str, policy: Policy
) -> None:
    """Refuse a month that ends after the prepared data's as-of (an incomplete month, or one
    the data does not cover): the release's own as-of is not the data's."""
    from segments.provenance import PROVENANCE_FILE, signed_record

    # the data's as-of is prepare's SIGNED record's, never the editable policy_report.json's
    path = workspace.require(prepared / PROVENANCE_FILE, f"segments prepare --purpose {purpose}")
    owner = Workspace(prepared.parent.parent)  # the workspace, or the backfill's replay
    record = signed_record(owner, purpose)
    data_as_of = dt.date.fromisoformat(str(record["as_of"]))
    month_end = next_month(month) - dt.timedelta(days=1)
    if month_end > data_as_of:
        raise ReleaseRefusedError(
            f"monthly series: month {month:%Y-%m} refused before anything was charged"
            f"{cite_rule(policy)}: it ends {month_end}, after the prepared data's as-of "
            f"{data_as_of} ({path}), so the data do not cover it; prepare the data as of "
            f"{month_end} or later (`segments prepare --as-of`), then release the month"
        )
    # A backfill's replay holds the order lines of one month only (its manifest's
    # lines_window, read from the bytes prepare's signed record hashed): any other month
    # released from it would be noise around zero, charged and its once-only release spent.
    with reads_bound_to(owner.raw, record["raw"]):
        window = owner.read_manifest().get("lines_window")
    if window and not (
        window[0] <= month.isoformat() and next_month(month).isoformat() <= window[1]
    ):
        raise ReleaseRefusedError(
            f"monthly series: month {month:%Y-%m} refused before anything was charged"
            f"{cite_rule(policy)}: the frames in {prepared} were prepared from a replay holding "
            f"the order lines of [{window[0]}, {window[1]}) only, so they do not cover it; "
            f"release it with `segments release backfill`, which replays that month"
        )


def _archive_rows(result: ReleaseResult, month: dt.date) -> pl.DataFrame:
    table = result._tables["monthly_category"]
    loss = result.card["privacy_loss"]
    return table.select(
        pl.lit(month).alias("month"),
        "category",
        "units",
        "sek",
        "units_scale",
        "sek_scale",
        pl.lit(result.card["mechanism"]).alias("mechanism"),
        pl.lit(loss["epsilon"], dtype=pl.Float64).alias("epsilon"),
        pl.lit(loss["rho"], dtype=pl.Float64).alias("rho"),
        pl.lit(result.release_id).alias("release_id"),
        # a table published before the clip's excess was measured has none: null
        *(
            pl.col(c) if c in table.columns else pl.lit(None, dtype=ARCHIVE_SCHEMA[c]).alias(c)
            for c in CLIP_EXCESS_COLUMNS
        ),
    ).cast(ARCHIVE_SCHEMA)  # type: ignore[arg-type]


def archive_problems(releases: str | Path, ledger: Ledger) -> list[str]:
    """What binds the archive to the ledger, broken: ``releases/archive/monthly_category.parquet``
    must hold exactly the rows of the monthly releases the ledger published into ``releases``,
    each rebuilt from its published table (whose SHA-256 the ledger recorded).

    Returns
    -------
    list of str
        One line per problem: rows of a release the ledger did not publish, rows that differ
        from the release's table, or a published month missing from the archive.
    """
    from segments.workspace import sha256_file

    folder = Path(releases)
    path = Workspace.archive_in(folder)
    name = f"{SPECS['monthly_category'].name}.parquet"
    entries = {entry.release_id: entry for entry in ledger.entries()}
    monthly = {
        release_id
        for release_id, entry in entries.items()
        if entry.status == "published"
        and name in entry.files
        and (folder / release_id).resolve() == Path(entry.output or "").resolve()
    }
    if not path.exists():
        return (
            [f"{path} is missing, but the ledger published {len(monthly)} months into {folder}"]
            if monthly
            else []
        )
    archive = _conform(pl.read_parquet(path))
    problems = []
    for release_id in sorted(set(archive["release_id"].to_list())):
        entry = entries.get(release_id)
        rows = archive.filter(pl.col("release_id") == release_id).sort("category")
        table = folder / release_id / name
        card = folder / release_id / CARD
        if entry is None or entry.status != "published" or name not in entry.files:
            problems.append(
                f"{path}: rows of {release_id!r} are not a monthly release the ledger published"
            )
        elif not table.is_file() or not card.is_file() or sha256_file(table) != entry.files[name]:
            problems.append(
                f"{path}: the published table or card of {release_id!r} is missing or changed"
            )
        else:
            published = ReleaseResult(
                release_id,
                folder / release_id,
                {"monthly_category": pl.read_parquet(table)},
                json.loads(card.read_text(encoding="utf-8")),
            )
            month = rows["month"][0]
            expected = _archive_rows(published, month).sort("category")
            if not rows.equals(expected) or str(month) != published.card.get("month"):
                problems.append(
                    f"{path}: the rows of {release_id!r} differ from its published table "
                    "(recorded in the ledger): the archive was edited"
                )
    for release_id in sorted(monthly - set(archive["release_id"].to_list())):
        problems.append(f"{path}: the published month {release_id!r} is missing from it")
    return problems


def _published_rows(folder: Path, ledger: Ledger) -> tuple[pl.DataFrame, list[str]]:
    """The archive as the ledger's published monthly releases into ``folder`` make it: rows
    rebuilt from each published table whose SHA-256 matches the ledger's; and the release
    ids whose table or card is missing or changed (they cannot be rebuilt)."""
    from segments.workspace import sha256_file

    name = f"{SPECS['monthly_category'].name}.parquet"
    frames, unreadable = [], []
    for entry in ledger.entries():
        if entry.status != "published" or name not in entry.files:
            continue
        if (folder / entry.release_id).resolve() != Path(entry.output or "").resolve():
            continue  # published into another workspace sharing the ledger
        table = folder / entry.release_id / name
        card = folder / entry.release_id / CARD
        if not table.is_file() or not card.is_file() or sha256_file(table) != entry.files[name]:
            unreadable.append(entry.release_id)
            continue
        published = ReleaseResult(
            entry.release_id,
            folder / entry.release_id,
            {"monthly_category": pl.read_parquet(table)},
            json.loads(card.read_text(encoding="utf-8")),
        )
        month = _entry_month(entry, card)
        frames.append(_archive_rows(published, month))
    rows = pl.concat(frames) if frames else pl.DataFrame(schema=ARCHIVE_SCHEMA)
    return rows.sort("month", "category"), unreadable


def _entry_month(entry: LedgerEntry, card: Path) -> dt.date:
    """The month of a published monthly release, from its ledger entry's hashed spec (the
    window's first day), never from the editable card; a release without one is named."""
    window = entry.request.spec.get("window")
    try:
        return dt.date.fromisoformat(str(window[0]))  # type: ignore[index]
    except (TypeError, IndexError, KeyError, ValueError):
        table = f"{SPECS['monthly_category'].name}.parquet"
        raise ReleaseRefusedError(
            f"release archive: {entry.release_id!r} ({card}) publishes {table} but its "
            f"ledger entry has no month window ({window!r}), so it is not a month of the "
            "series and cannot be archived; move its folder out of the releases folder "
            "(the ledger keeps its charge)"
        ) from None


def rebuild_archive(releases: str | Path, ledger: Ledger) -> list[str]:
    """Restore to ``releases/archive/monthly_category.parquet`` every month the ledger
    published into ``releases`` but the archive lacks, rebuilt from its published table
    (whose SHA-256 the ledger recorded). The archive is derived: a process killed between
    the ledger's "published" and the archive's update lost the month from it, and a retry
    is rightly refused as already charged.

    Rows the archive holds are kept (another ledger may have released them;
    :func:`archive_problems` checks them); a published table that is missing or changed
    cannot be rebuilt and is left to :func:`archive_problems` to name.

    Returns
    -------
    list of str
        One line per month restored; [] when nothing was missing.
    """
    folder = Path(releases)
    path = Workspace.archive_in(folder)
    published, _ = _published_rows(folder, ledger)
    current = (
        _conform(pl.read_parquet(path)) if path.exists() else pl.DataFrame(schema=ARCHIVE_SCHEMA)
    )
    missing = published.filter(
        ~pl.col("release_id").is_in(current["release_id"].implode())
        & ~pl.col("month").is_in(current["month"].implode())
    )
    if missing.height == 0:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    combined = pl.concat([current, missing]).sort("month", "category")
    atomic_write_with(path, combined.write_parquet)
    return [
        f"{path}: restored month {month:%Y-%m} ({release_id}) from its published table"
        for month, release_id in missing.select("month", "release_id")
        .unique()
        .sort("month")
        .iter_rows()
    ]


def rebuild_archive_from_ledgers(workspace: Workspace) -> list[str]:
    """:func:`rebuild_archive` with every ledger that may have published into the workspace
    (its own demo and evaluation ledgers, and the controllers' ledgers in the default
    folder), for a reader without a policy (a forecast). A ledger that cannot be opened is
    skipped: whatever stays missing is refused by the reader.

    Returns
    -------
    list of str
        One line per month restored.
    """
    from segments.privacy.ledger import Ledger, default_ledger_dir

    folders = [workspace.ledger_folder, default_ledger_dir()]
    paths = [p for f in folders for p in (*f.glob("*.sqlite"), *f.glob("evaluation/*.sqlite"))]
    restored: list[str] = []
    for path in sorted(set(paths)):
        try:
            ledger = Ledger.open(path, create=False)
        except Exception:  # noqa: BLE001 - not a readable ledger: the reader refuses later
            continue
        with _archive_lock(workspace):
            restored += rebuild_archive(workspace.releases, ledger)
    return restored


def _append(workspace: Workspace, archive: pl.DataFrame, rows: pl.DataFrame) -> None:
    combined = pl.concat([_conform(archive), rows]).sort("month", "category")
    atomic_write_with(workspace.archive, combined.write_parquet)


@dataclass(frozen=True)
class BackfillReport:
    """What :func:`backfill` did: months released (with release ids) and months skipped."""

    released: dict[str, str]
    skipped: dict[str, str]


def backfill(
    context: ReleaseContext,
    *,
    until: dt.date,
    params: PrivacyParams,
    confidence: float = 0.95,
    spec: ReleaseSpec | None = None,
) -> BackfillReport:
    """Build the archive for the synthetic history, stepping ``as_of`` through past months.

    Every month closed before ``until`` that is not yet archived is released with ``as_of``
    = the first day of the following month (when it closed), each charged to ``ledger``.
    Months covered by the current prepared lines are released from them; earlier months of
    a synthetic history are replayed: the raw data is rewound to the month's close
    (:func:`segments.prepare.history.rewind_raw`) and prepared as of that day, so each month is
    released from what the policy allowed when it closed — never from data that had left
    retention.

    Raises
    ------
    ReleaseRefusedError
        The ledger is the controller's real ledger: backfilling the history is for the
        evaluation ledger or the demo's throw-away ledger only.
    """
    workspace, policy, purpose = context.workspace, context.policy, context.purpose
    ledger, synthetic = context.ledger, context.states_synthetic()
    if not (ledger.evaluation or ledger.throwaway):
        raise ReleaseRefusedError(
            f"backfill refused on {ledger!r}: it releases the whole synthetic history at once and "
            "is allowed only with the evaluation ledger or the demo's throw-away ledger; pass "
            "--evaluation-ledger or --demo-ledger"
        )
    lines = workspace.require(
        workspace.prepared_frame(purpose, PREPARED_LINES), f"segments prepare --purpose {purpose}"
    )
    released: dict[str, str] = {}
    first, covered, skipped = backfill_schedule(workspace, lines, until, params, synthetic)
    archived = set(_read_archive_pl(workspace)["month"].to_list())
    replay = workspace.history
    month = first
    months = 0
    while next_month(month) <= until:
        months, month = months + 1, next_month(month)
    bar = progress(total=months, desc="backfill", unit="month")
    month = first
    from segments.prepare.pseudonym import remembered_pseudonyms

    # every replayed month pseudonymises the same raw ids: hash each once (in memory only)
    memo = contextlib.ExitStack()
    memo.enter_context(remembered_pseudonyms())
    key: PseudonymKey | None = None  # the workspace's, resolved at the first replayed month
    try:
        while next_month(month) <= until:
            bar.set_postfix_str(month.isoformat()[:7])
            if month in archived:
                skipped[month.isoformat()] = "already in the archive"
            else:
                closed = next_month(month)
                source = None
                if month < covered:
                    key = key or _replay_key(workspace)
                    source = _prepared_as_of(workspace, replay, policy, purpose, closed, key)
                result = release_month(
                    context,
                    month,
                    as_of=closed,
                    params=params,
                    confidence=confidence,
                    spec=spec,
                    prepared=source,
                )
                released[month.isoformat()] = result.release_id
            month = next_month(month)
            bar.update()
    finally:
        bar.close()
        memo.close()
        shutil.rmtree(replay.root, ignore_errors=True)
    return BackfillReport(released, skipped)


def backfill_schedule(
    workspace: Workspace,
    lines: Path,
    until: dt.date,
    params: PrivacyParams,
    synthetic: bool | None,
) -> tuple[dt.date, dt.date, dict[str, str]]:
    """(first month, first month covered by the prepared lines, skipped months) of a backfill.

    For synthetic data the schedule follows the data's first day; for any other data it is
    the public rule (closed months inside retention at ``until``), so neither the schedule
    nor a "skipped" message depends on a private date.
    """
    skipped: dict[str, str] = {}
    if synthetic:
        # synthetic data: the schedule may follow the data's first day (nothing private)
        first_line = scan_table(lines).select(pl.col("order_date").min()).collect().item()
        if first_line is None:
            raise WorkspaceError(f"{lines} has no order lines; nothing to backfill")
        covered = _first_full_month(first_line)
        history_start = _history_start(workspace)
        first = min(covered, history_start) if history_start is not None else covered
        if month_start(first_line) < first:
            skipped[month_start(first_line).isoformat()] = (
                "only partly covered by the prepared data"
            )
        return first, covered, skipped
    months = releasable_months(until, params)
    if not months:
        raise WorkspaceError(f"no closed month inside retention before {until}")
    return months[0], months[0], skipped


def _first_full_month(day: dt.date) -> dt.date:
    month = month_start(day)
    return month if month == day else next_month(month)


def _history_start(workspace: Workspace) -> dt.date | None:
    """First full month of the synthetic raw history (from its manifest)."""
    start = workspace.read_manifest().get("parameters", {}).get("window_start")
    return _first_full_month(dt.date.fromisoformat(start)) if start else None


def _replay_key(workspace: Workspace) -> PseudonymKey:
    """The key every replayed month is prepared with: the rewound rows are the workspace's
    own (dated back), not the generator's output for the replay's manifest, so the key is the
    workspace's, the demo key only if its raw data is proven synthetic. The backfill reads
    the raw data and never writes it, so one proof holds for all its months (each proof
    hashes every raw file)."""
    from segments.prepare.pseudonym import load_key
    from segments.privacy.synthetic import prove_synthetic

    return load_key(workspace=workspace, synthetic_proof=prove_synthetic)


def _prepared_as_of(
    workspace: Workspace,
    replay: Workspace,
    policy: Policy,
    purpose: str,
    closed: dt.date,
    key: PseudonymKey,
) -> Path:
    """Prepare the rewound raw data as of the last day of the month that closed.

    Only the closed month's order lines are rewound (``lines_window``), so prepare writes
    that month's lines partition — the only one its release reads — beside the whole
    customers frame: the persons, and the retention and exclusions that choose them, come
    from the customers and orders, rewound whole. The month's frames are those of a full
    rewind (``tests/test_archive.py`` compares them byte for byte), at a twelfth of the
    work in a year's history."""
    from segments.prepare.frames import prepare
    from segments.prepare.history import rewind_raw

    day = closed - dt.timedelta(days=1)
    month = month_start(day)
    # signed: the replay is bound to this workspace's raw
    rewind_raw(workspace, day, replay, lines_window=(month, closed))
    prepare(replay, policy, purpose, day, key=key)
    return replay.prepared_dir(purpose)
