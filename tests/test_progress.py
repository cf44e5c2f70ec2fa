"""Progress bars show on a terminal and stay silent in logs, pipes and notebooks."""

from __future__ import annotations

import io

import pytest

from segments.progress import progress, progress_enabled


def test_quiet_when_standard_error_is_not_a_terminal(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("SEGMENTS_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress_enabled()
    assert list(progress(range(3), desc="backfill", unit="month")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("forced", "shown"), [("1", True), ("0", False)])
def test_the_environment_decides_when_set(monkeypatch, forced: str, shown: bool) -> None:  # type: ignore[no-untyped-def]
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setenv("SEGMENTS_PROGRESS", forced)
    assert progress_enabled() is shown
    for _ in progress(range(4), desc="DP k-means", unit="iteration", file=err):
        pass
    assert ("DP k-means" in err.getvalue()) is shown
