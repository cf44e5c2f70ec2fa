"""The committed default dataset's location and parameters (light: no heavy imports, so the
command line can show them as defaults)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DefaultDataset:
    """The committed default dataset and the parameters it was generated with."""

    path: Path
    customers: int = 5_000
    months: int = 36
    as_of: dt.date = dt.date(2026, 10, 31)
    seed: int = 7


#: ``data/synthetic/default/`` in the repository (same layout as ``W/raw``).
DEFAULT_DATASET = DefaultDataset(Path(__file__).resolve().parents[3] / "data/synthetic/default")
