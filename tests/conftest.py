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


# --- Spark: one local[2] session per test run ----------------------------------------------
def _java_major() -> int | None:
    """The major version of the ``java`` on PATH, or None."""
    import re
    import shutil
    import subprocess

    java = shutil.which("java")
    if java is None:
        return None
    shown = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', shown.stderr + shown.stdout)
    if not found:
        return None
    major = int(found[1])
    return int(found[2] or 0) if major == 1 else major  # "1.8" is Java 8


def _must_run_spark() -> bool:
    """CI (and anyone running as root, who `make java` could install Java for) may not skip."""
    return bool(os.environ.get("CI")) or os.geteuid() == 0


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A local[2] Spark session shared by every Spark test (the JVM starts once per run):
    small driver memory, no UI, few shuffle partitions, ``spark.local.dir`` in a private
    temporary folder, Spark's log at errors only (``segments.engine.spark.start_session``)."""
    major = _java_major()
    if major is None or major < 17:
        reason = (
            f"SPARK TESTS SKIPPED: no Java 17+ runtime (found: {major or 'none'}); "
            "`make java` installs Debian's default-jre-headless as root"
        )
        if _must_run_spark():
            pytest.fail(reason.replace("SKIPPED", "CANNOT RUN") + " — CI must run them")
        pytest.skip(reason)
    from segments.engine.spark import start_session

    local = tmp_path_factory.mktemp("spark-local")
    local.chmod(0o700)
    session = start_session("local[2]", local, driver_memory="1g")
    yield session
    session.stop()


_SKIPPED_SPARK: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "spark" in report.keywords:
        _SKIPPED_SPARK.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A Spark test skipped under CI or as root fails the run: they must not vanish silently."""
    if _SKIPPED_SPARK and _must_run_spark():
        print(
            f"\nERROR: {len(_SKIPPED_SPARK)} Spark test(s) were skipped under CI or as root "
            f"(first: {_SKIPPED_SPARK[0]}); install Java with `make java`"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
