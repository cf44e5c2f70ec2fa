"""The package surface: every public name resolves, and starting up loads nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import segments

HEAVY = ("pandas", "polars", "numpy", "sklearn", "opendp", "statsmodels", "matplotlib")


def _modules_loaded_by(code: str) -> set[str]:
    """Top-level module names imported by ``code`` in a fresh interpreter."""
    report = "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", segments.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(segments, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        segments.not_a_name  # noqa: B018


def test_dir_lists_the_public_names() -> None:
    assert set(segments.__all__) <= set(dir(segments))


@pytest.mark.parametrize(
    "code",
    [
        "import segments",
        "import segments.synth, segments.privacy",
        "from segments.cli.main import build_parser; build_parser()",
    ],
)
def test_start_up_loads_nothing_heavy(code: str) -> None:
    # `segments --help` builds every command's parser: it must not pay for the data stack
    assert not _modules_loaded_by(code) & set(HEAVY)


def test_help_prints_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "segments.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("generate", "prepare", "segment", "release", "kanon", "forecast", "audit"):
        assert command in out
