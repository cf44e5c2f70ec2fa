"""Benchmark: generate → prepare → one month-closing, end to end on one engine (issue 21).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_pipeline.py --customers 1000000 \\
        --folder DIR [--engine duckdb] [--memory-limit 1GB] [--baseline polars:330000] \\
        [--stages generate,prepare,release]

Each stage runs in its own process (wall time and that process's own peak, ``VmHWM``):
``generate`` (the synthetic raw tables, order lines written in month partitions),
``prepare`` (purpose ``statistics``, policy ``alloffice`` or ``--policy``'s; with
``SEGMENTS_ENGINE`` set, so its line-level join runs on that engine month by month) and ``release``
(``bench_releases.child_release``: month_closing, the monthly series of 2026-02 and the
survey, on an evaluation ledger). Figures are also given per 10 million raw lines;
``--baseline ENGINE:CUSTOMERS`` first runs the same stages on another engine and size (the
in-memory path at 10 million lines, say) in the same command and divides.
``--compare-release ENGINE`` then runs the release stage twice more on the data just
prepared (or kept by an earlier ``--keep`` run, with ``--stages`` left empty), each in a
hard-linked copy of the workspace: first on ENGINE (the baseline), then on ``--engine``, and
gives the ratios of peak memory and time of the two on the same prepared data. The
workspace is ``DIR/ws``, removed afterwards unless ``--keep``. Results go to
``benchmarks/results/bench_pipeline_<lines>.json`` with the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
#: The data's as-of: the month-closing of bench_releases releases 2026-02, closed by then.
DATA_AS_OF = dt.date(2026, 2, 28)
STAGES = ("generate", "prepare", "release")


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def child(stage: str, folder: Path, customers: int, months: int, ws: str = "ws") -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    workspace = folder / ws
    if stage == "generate":
        from segments.synth.generate import generate

        result = generate(
            workspace, customers=customers, months=months, as_of=DATA_AS_OF, progress=False
        )
        extra = {"lines": int(result.manifest["row_counts"]["order_lines"])}
    elif stage == "prepare":
        from bench_releases import POLICY

        from segments.prepare import prepare

        report = prepare(workspace, POLICY, "statistics", DATA_AS_OF)
        extra = {"prepared_lines": int(report.output_counts["lines"])}
    else:
        from bench_releases import child_release

        extra = {"release_seconds": child_release(workspace)["seconds"]}
    # CPU seconds of every thread: on a shared machine the wall time is mostly waiting
    seconds = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}
    return {**seconds, "peak_rss_mb": _peak_mb(), **extra}


def _run_pipeline(
    folder: Path, engine: str, customers: int, months: int, memory_limit: str, stages: list[str]
) -> dict:
    """The stages on one engine, each in its own process, into ``folder/ws``."""
    env = {**os.environ, "SEGMENTS_ENGINE": engine, "SEGMENTS_MEMORY_LIMIT": memory_limit}
    run: dict = {"engine": engine, "customers": customers, "months": months, "stages": {}}
    print(f"{engine}, {customers:,} customers × {months} months:")
    if "generate" in stages:
        shutil.rmtree(folder / "ws", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        command = [sys.executable, __file__, "--child", stage, "--folder", str(folder)]
        command += ["--customers", str(customers), "--months", str(months)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            print(f"{stage} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            run["stages"][stage] = {"failed": done.stderr.strip().splitlines()[-1]}
            break
        out = json.loads(done.stdout.strip().splitlines()[-1])
        run["stages"][stage] = out
        print(
            f"  {stage:<9} {out['seconds']:8.1f} s ({out['cpu_seconds']:.1f} s CPU)  "
            f"peak {out['peak_rss_mb']:7.0f} MB"
        )
    lines = run["stages"].get("generate", {}).get("lines", 0)
    manifest = folder / "ws" / "raw" / "manifest.json"
    if not lines and manifest.is_file():  # data an earlier --keep run generated
        lines = int(json.loads(manifest.read_text())["row_counts"]["order_lines"])
    run["lines"] = lines
    if lines:
        per = 1e7 / lines
        run["seconds_per_10m_lines"] = {
            s: round(o["seconds"] * per, 1) for s, o in run["stages"].items() if "seconds" in o
        }
        run["cpu_seconds_per_10m_lines"] = {
            s: round(o["cpu_seconds"] * per, 1)
            for s, o in run["stages"].items()
            if "cpu_seconds" in o
        }
        print(f"  {lines:,} lines; seconds per 10 M lines: {run['seconds_per_10m_lines']}")
    return run


def _stage_process(
    stage: str, folder: Path, engine: str, memory_limit: str, customers: int, months: int, ws: str
) -> dict:
    env = {**os.environ, "SEGMENTS_ENGINE": engine, "SEGMENTS_MEMORY_LIMIT": memory_limit}
    command = [sys.executable, __file__, "--child", stage, "--folder", str(folder), "--ws", ws]
    command += ["--customers", str(customers), "--months", str(months)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        print(f"{stage} on {engine} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
        return {"failed": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare_release(
    folder: Path, baseline: str, engine: str, memory_limit: str, customers: int, months: int
) -> dict:
    """The release stage on ``baseline`` then on ``engine``, each in its own process and in
    its own hard-linked copy of the prepared ``folder/ws`` (a release writes its ledger and
    archive there): the same prepared data, so the ratios are the engines' alone."""
    runs: dict = {}
    for name in (baseline, engine):
        copy = f"ws-release-{name}"
        shutil.rmtree(folder / copy, ignore_errors=True)
        shutil.copytree(folder / "ws", folder / copy, symlinks=True, copy_function=os.link)
        try:
            out = _stage_process("release", folder, name, memory_limit, customers, months, copy)
        finally:
            shutil.rmtree(folder / copy, ignore_errors=True)
        runs[name] = out
        if "failed" not in out:
            print(
                f"  release on {name:<7} {out['seconds']:8.1f} s ({out['cpu_seconds']:.1f} s "
                f"CPU)  peak {out['peak_rss_mb']:7.0f} MB"
            )
    a, b = runs[baseline], runs[engine]
    if "failed" not in a and "failed" not in b:
        runs["ratio"] = {
            key: round(b[key] / a[key], 3) for key in ("peak_rss_mb", "seconds", "cpu_seconds")
        }
        print(f"  {engine} / {baseline}: {runs['ratio']}")
    return {"baseline": baseline, "engine": engine, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=14)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--engine", default="duckdb")
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument(
        "--baseline",
        metavar="ENGINE:CUSTOMERS",
        help="first run the same stages on this engine and size (e.g. polars:330000), in "
        "the same command, and compare the time per 10 M lines",
    )
    parser.add_argument(
        "--compare-release",
        metavar="ENGINE",
        help="then run the release on ENGINE and on --engine, on the same prepared data",
    )
    parser.add_argument(
        "--policy",
        help="the policy prepare and the releases run under (default alloffice; allcall keeps "
        "every month of a long history for statistics, alloffice about 15)",
    )
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=STAGES)
    parser.add_argument("--ws", default="ws", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.policy:  # a stage process inherits the parent's choice through the environment
        os.environ["SEGMENTS_BENCH_POLICY"] = args.policy
    if args.child:
        out = child(args.child, args.folder, args.customers, args.months, args.ws)
        print(json.dumps(out, default=str))
        return
    stages = [stage for stage in args.stages.split(",") if stage]
    results: dict = {
        "engine": args.engine,
        "memory_limit": args.memory_limit,
        "customers": args.customers,
        "months": args.months,
        "policy": os.environ.get("SEGMENTS_BENCH_POLICY", "alloffice"),
        "machine": f"{os.cpu_count()} cores",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": {"before": round(os.getloadavg()[0], 1)},
    }
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores)")
    try:
        if args.baseline:
            engine, customers = args.baseline.split(":")
            results["baseline"] = _run_pipeline(
                args.folder, engine, int(customers), args.months, args.memory_limit, stages
            )
            shutil.rmtree(args.folder / "ws", ignore_errors=True)
        run = _run_pipeline(
            args.folder, args.engine, args.customers, args.months, args.memory_limit, stages
        )
        results |= {"stages": run["stages"], "lines": run["lines"]}
        if args.compare_release:
            results["compare_release"] = _compare_release(
                args.folder,
                args.compare_release,
                args.engine,
                args.memory_limit,
                args.customers,
                args.months,
            )
        for key in ("seconds_per_10m_lines", "cpu_seconds_per_10m_lines"):
            if key in run:
                results[key] = run[key]
        base = results.get("baseline", {}).get("seconds_per_10m_lines", {})
        if base and "seconds_per_10m_lines" in run:
            results["per_10m_lines_over_baseline"] = {
                s: round(t / base[s], 2)
                for s, t in run["seconds_per_10m_lines"].items()
                if base.get(s)
            }
            print(
                f"time per 10 M lines over the baseline's: {results['per_10m_lines_over_baseline']}"
                " (goal ≤ 1.5)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(args.folder / "ws", ignore_errors=True)
    results["load_average"]["after"] = round(os.getloadavg()[0], 1)
    print(f"load average after: {results['load_average']['after']}")
    out_path = args.out or HERE / "results" / f"bench_pipeline_{results['lines']}.json"
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
