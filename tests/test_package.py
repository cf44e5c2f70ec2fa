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


def _memory_after_a_freed_frame(env: dict[str, str]) -> tuple[str, float, float]:
    """In a fresh process: the allocator setting polars sees, and the resident MB before a
    ~800 MB frame is built and after it is dropped (the least seen over ten seconds)."""
    code = """
import os, time, gc
import segments, polars as pl
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
before = rss()
frame = pl.DataFrame({'x': pl.int_range(0, 100_000_000, eager=True)})
assert frame.estimated_size() > 700 * 2**20
del frame; gc.collect()
after = rss()
for _ in range(50):
    if after < before + 200:
        break
    time.sleep(0.2)
    after = min(after, rss())
print(os.environ.get('_RJEM_MALLOC_CONF'), before, after)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0], float(out[1]), float(out[2])


def test_polars_gives_freed_memory_back_to_the_system() -> None:
    """Issue 21: a stage's passing peak is returned, not kept until the process ends (the
    allocator setting of segments/__init__.py, read when polars loads)."""
    import os

    from segments import POLARS_ALLOCATOR

    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    setting, before, after = _memory_after_a_freed_frame(env)
    # polars puts its own defaults first (muzzy_decay_ms:-1 among them: freed pages stay
    # counted as resident until the kernel runs short); the later setting wins
    assert setting.endswith(POLARS_ALLOCATOR)
    assert after < before + 200, (before, after)
    # a caller's own setting is kept
    setting, _, _ = _memory_after_a_freed_frame({**env, "_RJEM_MALLOC_CONF": "narenas:2"})
    assert setting.endswith("narenas:2") and POLARS_ALLOCATOR not in setting
