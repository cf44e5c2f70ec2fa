"""What every audit check reads: the :class:`AuditContext` and a check's :class:`Finding`.

The context holds the workspace, the policy audited, the report's as-of date, the ledger and
(in the data steward's role only) the pseudonymisation key, and caches what several checks
read (release cards, ledger entries, the steward's person table).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from segments._tables import read_table, table_schema
from segments.audit.render import NEEDS_KEY
from segments.policy import Policy
from segments.prepare.pseudonym import PseudonymKey, pseudonymise_series
from segments.workspace import CARD, CERTIFICATE, LABELS, PREPARED_CUSTOMERS, Workspace

if TYPE_CHECKING:
    from segments.privacy.ledger import Ledger

__all__ = [
    "NEEDS_KEY",
    "REVIEWER",
    "STEWARD",
    "AuditContext",
    "Finding",
    "Status",
    "hidden",
    "release_type",
]

Status = Literal["pass", "fail", "not applicable"]
STEWARD = "data steward (holds the pseudonymisation key)"
REVIEWER = "reviewer"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check, before it is attached to clause ids."""

    name: str
    method: str
    evidence: Mapping[str, Any]
    status: Status
    role: str = REVIEWER


@dataclass
class AuditContext:
    """What every check reads; lazily loaded pieces are cached for the other checks.

    Parameters
    ----------
    workspace : Workspace
    policy : Policy
        The policy audited.
    as_of : date
        The report's reference date: retention cutoffs are recomputed for it.
    ledger : Ledger, optional
        The ledger the releases were charged to.
    key : PseudonymKey, optional
        The steward's key; without it, the steward's checks are not applicable.
    notebooks : tuple of Path
        Notebooks whose outputs the PII scan reads.
    """

    workspace: Workspace
    policy: Policy
    as_of: dt.date
    ledger: Ledger | None = None
    key: PseudonymKey | None = None
    notebooks: tuple[Path, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- workspace contents ----------------------------------------------------------
    def prepared_purposes(self) -> list[str]:
        """Purpose folders under ``W/prepared/`` that hold frames."""
        root = self.workspace.prepared
        if not root.is_dir():
            return []
        return sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / PREPARED_CUSTOMERS).exists()
        )

    def prepared(self, purpose: str, table: str, columns: list[str] | None = None) -> pl.DataFrame:
        """A prepared frame (``customers`` or ``lines``): the asked columns it has."""
        path = self.workspace.prepared_dir(purpose) / f"{table}.parquet"
        names = table_schema(path)
        cols = [c for c in columns if c in names] if columns else None
        return read_table(path, columns=cols)

    def frames(self) -> list[Path]:
        """Every Parquet file an analyst or recipient could read (not raw, not hidden)."""
        ws = self.workspace
        out: list[Path] = []
        for root in (ws.prepared, ws.segments, ws.releases, ws.forecasts):
            if root.is_dir():
                out += sorted(
                    p  # each month partition is a file of its own (its folder is no frame)
                    for p in root.rglob("*.parquet")
                    if p.is_file() and not hidden(p, ws.root)
                )
        return out

    def cards(self) -> list[tuple[Path, dict[str, Any]]]:
        """Release cards and k-anonymity certificates in the workspace, with their folder."""
        if "cards" not in self._cache:
            ws = self.workspace
            found: list[tuple[Path, dict[str, Any]]] = []
            paths: list[Path] = []
            if ws.releases.is_dir():
                for folder in sorted(ws.releases.iterdir()):
                    for name in (CARD, CERTIFICATE):
                        if (folder / name).is_file() and not folder.name.startswith("."):
                            paths.append(folder / name)
            private = ws.private_segments / CARD
            if private.is_file():
                paths.append(private)
            for path in paths:
                found.append((path, json.loads(path.read_text(encoding="utf-8"))))
            self._cache["cards"] = found
        cards: list[tuple[Path, dict[str, Any]]] = self._cache["cards"]
        return cards

    def entries(self) -> list[Any]:
        """Ledger entries of the audited policy (all of them if the ledger is shared)."""
        if self.ledger is None:
            return []
        if "entries" not in self._cache:
            self._cache["entries"] = [
                e for e in self.ledger.entries() if e.request.policy == self.policy.name
            ]
        entries: list[Any] = self._cache["entries"]
        return entries

    # --- the steward's view ----------------------------------------------------------
    def raw_customers(self) -> pl.DataFrame | None:
        """The raw customers table (None without raw data)."""
        path = self.workspace.raw_table("customers")
        if not path.is_file():
            return None
        from segments.ingest import read_real_manifest, widen_customers

        frame = pl.read_parquet(path)
        # an ingested export has no identity columns: seen in the raw customer columns
        return widen_customers(frame) if read_real_manifest(self.workspace) else frame

    def persons(self) -> pl.DataFrame | None:
        """One row per person from the raw tables, with flags, anchors and pseudonym.

        Steward only: needs the raw tables and the key. Person linkage (a sole trader's two
        accounts are one person, AO-3) uses :func:`segments.prepare.frames.person_table`, the
        definition of a person; everything checked against it is recomputed here.
        """
        if self.key is None:
            return None
        if "persons" not in self._cache:
            from segments.prepare.frames import person_table

            customers = self.raw_customers()
            orders_path = self.workspace.raw_table("orders")
            if customers is None or not orders_path.is_file():
                self._cache["persons"] = None
            else:
                orders = pl.read_parquet(orders_path, columns=["customer_id", "order_date"])
                table = person_table(customers, orders)
                self._cache["persons"] = table.with_columns(
                    pseudonymise_series(self.key, "person", table["person_root"], "person_id")
                )
        persons: pl.DataFrame | None = self._cache["persons"]
        return persons

    def person_sets(self) -> dict[str, tuple[str, list[str]]]:
        """Where person ids occur: name → (kind, person ids): prepared frames and labels."""
        out: dict[str, tuple[str, list[str]]] = {}
        for purpose in self.prepared_purposes():
            for table in ("customers", "lines"):
                ids = self.prepared(purpose, table, ["person_id"])["person_id"].unique()
                out[f"prepared/{purpose}/{table}"] = (purpose, ids.to_list())
        for path in self.label_files():
            ids = pl.read_parquet(path, columns=["person_id"])["person_id"].unique()
            out[str(path.relative_to(self.workspace.root))] = ("labels", ids.to_list())
        return out

    def label_files(self) -> list[Path]:
        """Per-person outputs of segmentation: labels, private labels, target lists."""
        ws = self.workspace
        files = [ws.labels, ws.private_segments / LABELS]
        files += sorted(ws.targets.glob("*.parquet")) if ws.targets.is_dir() else []
        return [f for f in files if f.is_file()]

    def segment_purpose(self) -> str | None:
        """The purpose the exploratory segmentation was fitted for (None without one)."""
        meta = self.workspace.segment_metadata
        if not meta.is_file():
            return None
        purpose = json.loads(meta.read_text(encoding="utf-8")).get("purpose")
        return str(purpose) if purpose else None


def hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in a hidden (dot) folder or is a hidden file under ``root``."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def release_type(entry: Any) -> str:
    """What kind of release an entry is: its spec's name (``segment_overview``,
    ``monthly_category`` …), else its release id without the date and suffix."""
    name = entry.request.spec.get("name") if isinstance(entry.request.spec, dict) else None
    return str(name or entry.release_id.split("-")[0])
