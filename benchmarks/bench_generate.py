"""Benchmark `segments generate`: order lines per second end to end, and peak memory.

Runs the generator in a child process that reports its own wall time, CPU time (user + system
of all its threads: the generator parallelises with threads, not processes, so the process's
CPU time is the whole cost; child processes, if any, are added) and peak resident memory,
then, as a baseline measured in the same run, times reading and rewriting the generated
``order_lines.parquet`` alone (the I/O floor). With ``--baseline-src DIR`` (the ``src``
folder of another checkout), that version runs first with the same parameters, so
before/after figures come from one command on the same machine load.

    .venv/bin/python benchmarks/bench_generate.py --customers 1000000 --months 12
    .venv/bin/python benchmarks/bench_generate.py --baseline-src /tmp/old/src --check-workers \
        --output benchmarks/results/bench_generate.json

``--check-workers`` generates a second time with one worker thread and reports whether the
files are byte-identical to the two-worker run (they must be: lines are drawn in fixed blocks
with their own seeds).

Goal (issue 2): at least 20 million order lines, at least 2 million lines per second end to
end (Parquet written, validation included), peak memory at most 6 GB. The machine is shared:
CPU-seconds and the ratio to a baseline measured in the same run are the comparable figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from segments._tables import read_table

CHILD = """
import datetime as dt, json, resource, sys, time
from segments.synth.generate import generate
def cpu():
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
extra = {} if sys.argv[6] == "default" else {"workers": int(sys.argv[6])}
t, c = time.perf_counter(), cpu()
r = generate(sys.argv[1], customers=int(sys.argv[2]), months=int(sys.argv[3]),
             as_of=dt.date.fromisoformat(sys.argv[4]), seed=int(sys.argv[5]), progress=False,
             **extra)
peak = [resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({"seconds": time.perf_counter() - t, "cpu_seconds": cpu() - c,
                  "peak_rss_gb": sum(peak) / 1024**2,
                  "steps": r.seconds, "rows": r.manifest["row_counts"],
                  "files": r.manifest["files"]}))
"""
GOAL_LINES_PER_SECOND = 2_000_000
GOAL_PEAK_GB = 6.0


def run_generate(
    args: argparse.Namespace, src: str | None, workers: str = "default"
) -> dict[str, Any]:
    """Generate into a temporary workspace in a child process; its figures plus the I/O floor.

    ``workers`` is passed to ``generate`` unless it is ``"default"`` (older versions have no
    such parameter)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory(prefix="bench-generate-", dir=args.tmp) as tmp:
        load_before = os.getloadavg()[0]
        command = [sys.executable, "-c", CHILD, tmp, str(args.customers), str(args.months)]
        out = subprocess.run(
            [*command, args.as_of, str(args.seed), workers],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode:
            sys.exit(f"generate failed:\n{out.stderr}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
        lines_path = Path(tmp) / "raw" / "order_lines.parquet"
        floor = None
        if not args.no_io_floor:
            t = time.perf_counter()
            # one file (older versions) or month partitions (since issue 21): the same rows
            read_table(lines_path).write_parquet(Path(tmp) / "copy.parquet", compression="zstd")
            floor = round(time.perf_counter() - t, 2)
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "raw").rglob("*.parquet")) / 1e6
    lines = child["rows"]["order_lines"]
    return {
        "src": src or "current",
        "workers": workers,
        "rows": child["rows"],
        "generate_wall_seconds": round(child["seconds"], 2),
        "generate_cpu_seconds": round(child["cpu_seconds"], 2),
        "order_lines_per_wall_second": round(lines / child["seconds"]),
        "order_lines_per_cpu_second": round(lines / child["cpu_seconds"]),
        "steps_wall_seconds": child["steps"],
        "peak_rss_gb": round(child["peak_rss_gb"], 2),
        "parquet_mb": round(size_mb, 1),
        "io_floor_rewrite_order_lines_seconds": floor,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "files_sha256": child["files"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--as-of", default="2026-10-31")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--baseline-src", help="src folder of another version to run first, as the baseline"
    )
    parser.add_argument("--output", type=Path, help="also write the report (JSON) here")
    parser.add_argument(
        "--check-workers",
        action="store_true",
        help="also generate with 1 worker and check the files equal the 2-worker run",
    )
    parser.add_argument(
        "--no-io-floor",
        action="store_true",
        help="skip the I/O floor (it reads all order lines into this process: too big for "
        "hundreds of millions of lines)",
    )
    parser.add_argument(
        "--tmp", type=Path, help="folder for the temporary workspaces (default: the system's)"
    )
    args = parser.parse_args()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "customers": args.customers,
        "months": args.months,
        "cpus": os.cpu_count(),
    }
    runs = [run_generate(args, args.baseline_src)] if args.baseline_src else []
    runs.append(run_generate(args, None, "2"))
    current = runs[-1]
    if args.baseline_src:
        base = runs[0]
        report["baseline"] = base
        report["speedup_cpu"] = round(
            base["generate_cpu_seconds"] / current["generate_cpu_seconds"], 2
        )
        report["speedup_wall"] = round(
            base["generate_wall_seconds"] / current["generate_wall_seconds"], 2
        )
        report["same_files_as_baseline"] = base["files_sha256"] == current["files_sha256"]
    report["current"] = current
    report["goal"] = {
        "order_lines_per_wall_second": GOAL_LINES_PER_SECOND,
        "peak_rss_gb": GOAL_PEAK_GB,
        "met": current["order_lines_per_wall_second"] >= GOAL_LINES_PER_SECOND
        and current["peak_rss_gb"] <= GOAL_PEAK_GB,
    }
    if args.check_workers:
        one = run_generate(args, None, "1")
        report["one_worker"] = {k: v for k, v in one.items() if k != "files_sha256"}
        report["same_files_1_and_2_workers"] = one["files_sha256"] == current["files_sha256"]
    report["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
