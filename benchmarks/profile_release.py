"""Where a month-closing's memory goes: resident memory by phase (issue 21).

Usage::

    nice -n 10 .venv/bin/python benchmarks/profile_release.py --folder DIR [--engine duckdb]

``DIR`` is a folder ``bench_engines.py --keep --folder DIR`` left (``DIR/run``: prepared
frames signed as prepare signs them). The month-closing of ``bench_releases.child_release``
runs once in a hard-linked copy while a thread samples this process's resident memory
(``VmRSS``) every 20 ms; the release's stages are wrapped so that each sample is charged to
the innermost stage running. Printed: each stage's peak and its rise over the memory at its
start, and the process's own peak (``VmHWM``). Nothing here changes what the release does.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: The stages charged, innermost first wins: (module, attribute) of what is wrapped.
STAGES = (
    ("segments.provenance", "verified_frames"),
    ("segments.privacy.releases", "build_shared_frames"),
    ("segments.privacy.releases", "_cells"),
    ("segments.engine.embedded", "DuckDBEngine._cells"),
    ("segments.engine.embedded", "DuckDBEngine._orders"),
    ("segments.engine.inmemory", "PolarsEngine._cells"),
    ("segments.privacy.releases", "plan_release"),
    ("segments.privacy.releases", "build_query"),
    ("segments.privacy.releases", "ReleasePlan.execute"),
    ("segments.privacy.releases", "ReleasePlan._run"),
    ("segments.privacy.releases", "_run_query"),
    ("segments.privacy.vectors", "VectorRelease.run"),
    ("segments.privacy.vectors", "VectorRelease.group_norms"),
    ("segments.privacy.vectors", "PersonVectors.of"),
    ("segments.privacy.releases", "_checked"),
    ("segments.engine.base", "Engine.person_key_cell_batches"),
    ("segments.engine.embedded", "DuckDBEngine.person_key_cell_batches"),
    ("segments.privacy.releases", "ReleasePlan._tables_pl"),
    ("segments.privacy.releases", "_publish"),
    ("segments.privacy.releases", "_survey_frame"),
)


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class Profile:
    """Samples VmRSS on a thread; ``stack`` names the stages running (innermost last)."""

    def __init__(self) -> None:
        self.stack: list[str] = ["(outside any stage)"]
        self.peaks: dict[str, float] = {}
        self.start: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            rss = _rss_mb()
            stage = self.stack[-1]
            self.peaks[stage] = max(self.peaks.get(stage, 0.0), rss)

    def rows(self) -> dict[str, dict[str, float]]:
        """Each stage's calls, time, resident memory at its start and peak, highest peak first."""
        return {
            stage: {
                "calls": self.calls.get(stage, 0),
                "seconds": round(self.seconds.get(stage, 0.0), 2),
                "rss_at_start_mb": round(self.start.get(stage, 0.0)),
                "peak_rss_mb": round(peak),
            }
            for stage, peak in sorted(self.peaks.items(), key=lambda item: -item[1])
        }

    def print_rows(self, width: int) -> None:
        """Print :meth:`rows` as a table, stage names padded to ``width``."""
        print(f"{'stage':<{width}} {'calls':>5} {'s':>7} {'start MB':>9} {'peak MB':>8}")
        for stage, row in self.rows().items():
            print(
                f"{stage:<{width}} {row['calls']:>5} {row['seconds']:>7.2f} "
                f"{row['rss_at_start_mb']:>9} {row['peak_rss_mb']:>8}"
            )

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.stack.append(name)
        self.start.setdefault(name, _rss_mb())
        self.calls[name] = self.calls.get(name, 0) + 1
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
            rss = _rss_mb()
            self.peaks[name] = max(self.peaks.get(name, 0.0), rss)
            self.stack.pop()

    def wrap_present(self, steps: Iterable[tuple[str, str]]) -> None:
        """:meth:`wrap` each ``(module, attribute)`` the code being measured has (a baseline
        tree from before a step existed lacks it)."""
        for module, attribute in steps:
            try:
                owner: Any = importlib.import_module(module)
            except ModuleNotFoundError:  # a module the baseline tree does not have yet
                continue
            for part in attribute.split("."):
                owner = getattr(owner, part, None)
            if owner is not None:
                self.wrap(module, attribute)

    def wrap(self, module: str, attribute: str) -> None:
        owner: Any = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)
        label = attribute
        if isinstance(original, functools.partial) or not callable(original):
            return
        if getattr(original, "__wrapped__", None) and name == "verified_frames":
            inner = original.__wrapped__  # a @contextmanager: wrap the generator's life

            @contextlib.contextmanager
            def managed(*args: Any, **kwargs: Any) -> Iterator[Any]:
                with self.stage(label + " (copy+hash)"):
                    gen = contextlib.contextmanager(inner)(*args, **kwargs)
                    value = gen.__enter__()
                try:
                    yield value
                finally:
                    gen.__exit__(None, None, None)

            setattr(owner, name, managed)
            return

        @functools.wraps(original)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.stage(label):
                return original(*args, **kwargs)

        setattr(owner, name, wrapped)

    def __enter__(self) -> Profile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--engine", default="duckdb")
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["SEGMENTS_ENGINE"] = args.engine
    os.environ["SEGMENTS_MEMORY_LIMIT"] = args.memory_limit
    source = args.folder / "run"
    workspace = args.folder / f"profile-{args.engine}"
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.copytree(source, workspace, symlinks=True, copy_function=os.link)
    profile = Profile()
    # modules that took the function by name before it was wrapped read the wrapped one:
    # every wrapped name is looked up at call time in the release code
    import segments.privacy.archive
    import segments.privacy.releases  # noqa: F401

    for module, attribute in STAGES:
        profile.wrap(module, attribute)
    from bench_releases import child_release

    try:
        with profile:
            out: dict[str, Callable[..., Any] | Any] = child_release(workspace)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    rows = profile.rows()
    result = {
        "engine": args.engine,
        "memory_limit": args.memory_limit,
        "load_average": os.getloadavg()[0],
        "seconds": out["seconds"],
        "process_peak_mb": round(_rss_mb("VmHWM")),
        "stages": rows,
    }
    profile.print_rows(48)
    print(f"process peak (VmHWM) {result['process_peak_mb']} MB")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
