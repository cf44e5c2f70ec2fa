"""Shared fixtures: a small generated workspace, made once per test session."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from segments.synth import generate
from segments.workspace import Workspace


def pytest_configure(config: pytest.Config) -> None:
    """Before any fixture or forked helper process: a per-user data folder of the test run's
    own, so nothing a test does (even from a session-scoped process that starts before the
    per-test folder below) reaches the real registry of controller ledgers, where a test's
    ledger path would make the user's real releases refuse as "missing"."""
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="segments-test-user-data-")
    os.environ.pop("SEGMENTS_LEDGER_DIR", None)


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


@pytest.fixture(autouse=True)
def _private_user_data(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Each test gets its own per-user data folder: the registry of controller ledgers (and
    the default ledgers) never touch the real one, and tests cannot see each other's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("user-data")))
    monkeypatch.delenv("SEGMENTS_LEDGER_DIR", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _one_signing_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One provenance-signing secret for the session (as for one user), set before any other
    session fixture: frames prepared by a session fixture stay bound to their raw data in every
    test, whatever per-user data folder the test has."""
    from segments import provenance

    secret = tmp_path_factory.getbasetemp() / "proof-secret.key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(provenance, "_secret_path", lambda: secret)
        yield
