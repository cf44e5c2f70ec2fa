"""Benchmark `segments generate`: order lines per second end to end, and peak memory.

Runs the generator in a child process (so its peak resident memory can be read with
``resource.getrusage(RUSAGE_CHILDREN)``), then, as a baseline measured in the same run,
times reading and rewriting the generated ``order_lines.parquet`` alone (the I/O floor).

    .venv/bin/python benchmarks/bench_generate.py --customers 1000000 --months 12

Goal (issue 2): at least 20 million order lines, at least 2 million lines per second end to
end (Parquet written), peak memory at most 6 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

CHILD = """
import datetime as dt, json, sys, time
from segments.synth import generate
t = time.perf_counter()
r = generate(sys.argv[1], customers=int(sys.argv[2]), months=int(sys.argv[3]),
             as_of=dt.date.fromisoformat(sys.argv[4]), seed=int(sys.argv[5]), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "steps": r.seconds,
                  "rows": r.manifest["row_counts"], "personnummer": r.manifest["personnummer"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--as-of", default="2026-10-31")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        start = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                tmp,
                str(args.customers),
                str(args.months),
                args.as_of,
                str(args.seed),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            sys.exit(f"generate failed:\n{out.stderr}")
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_gb = usage.ru_maxrss / 1024**2
        cpu_seconds = usage.ru_utime + usage.ru_stime
        child = json.loads(out.stdout.strip().splitlines()[-1])
        lines_path = Path(tmp) / "raw" / "order_lines.parquet"
        t = time.perf_counter()
        pl.read_parquet(lines_path).write_parquet(Path(tmp) / "copy.parquet", compression="zstd")
        baseline = time.perf_counter() - t
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "raw").rglob("*.parquet")) / 1e6
    lines = child["rows"]["order_lines"]
    steps = child["steps"]
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "customers": args.customers,
        "months": args.months,
        "rows": child["rows"],
        "generate_seconds": round(child["seconds"], 2),
        "process_wall_seconds (incl. imports)": round(wall, 2),
        "process_cpu_seconds (user+sys, all threads)": round(cpu_seconds, 2),
        "order_lines_per_second": round(lines / child["seconds"]),
        "steps_seconds": steps,
        "validation_share": round(steps["validate"] / child["seconds"], 3),
        "peak_rss_gb": round(peak_gb, 2),
        "parquet_mb": round(size_mb, 1),
        "baseline_rewrite_order_lines_seconds": round(baseline, 2),
        "ratio_generate_to_baseline": round(child["seconds"] / baseline, 2),
        "load_average_1min": round(__import__("os").getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
