"""Shared fixtures: a small generated workspace, made once per test session."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from segments.synth import generate
from segments.workspace import Workspace

SMALL = {"customers": 1500, "months": 24, "as_of": dt.date(2026, 10, 31), "seed": 11}


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace whose ``raw/`` holds a small generated dataset (1,500 customers, 24 months).

    Read-only: tests that modify raw files must copy it first.
    """
    root: Path = tmp_path_factory.mktemp("small_raw")
    ws = Workspace(root)
    generate(ws, **SMALL)
    return ws
