"""The CLI's progress bars: drawn on a terminal, silent when standard error is a pipe.

``prepare`` and ``segment`` run in a child process whose standard error is a pseudo-terminal
(as in an analyst's shell) or a pipe (as in a log or CI); the result lines on standard output
are the same either way.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from segments import Workspace
from segments.synth import generate

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("progress") / "ws")
    generate(ws, customers=1_500, months=14, seed=3, workers=1)
    return ws


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SEGMENTS_PROGRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _segments(argv: list[str], *, terminal: bool) -> tuple[str, str]:
    """Run ``segments argv``; stderr to a pseudo-terminal or a pipe. Returns (out, err)."""
    command = [sys.executable, "-m", "segments.cli.main", *argv]
    if not terminal:
        done = subprocess.run(
            command, capture_output=True, text=True, env=_environment(), timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    # a terminal 120 columns wide (a fresh pseudo-terminal reports 0 x 0)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL,
        env=_environment(),
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the child exits (EIO on Linux)
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert child.stdout is not None
    with child.stdout:
        out = child.stdout.read().decode()
    assert child.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return out, b"".join(chunks).decode(errors="replace")


PREPARE = ["prepare", "--policy", "alloffice", "--purpose", "segmentation", "--as-of"]


def test_prepare_and_segment_draw_bars_on_a_terminal_only(small: Workspace) -> None:
    as_of = "2026-10-31"
    workspace = ["--workspace", str(small.root)]
    out_tty, err_tty = _segments([*PREPARE, as_of, *workspace], terminal=True)
    out_pipe, err_pipe = _segments([*PREPARE, as_of, *workspace], terminal=False)
    assert "prepare:" in err_tty and "stage" in err_tty and "pseudonymising" in err_tty
    assert err_pipe == ""  # nothing but results when stderr is not a terminal
    assert out_tty == out_pipe and "prepared" in out_pipe

    segment = ["segment", "--k-range", "3-4", "--selection-sample", "600", *workspace]
    out_tty, err_tty = _segments(segment, terminal=True)
    out_pipe, err_pipe = _segments(segment, terminal=False)
    assert "segment:" in err_tty and "choosing k" in err_tty and "features" in err_tty
    assert err_pipe == ""
    assert out_tty == out_pipe and "fitted on" in out_pipe
