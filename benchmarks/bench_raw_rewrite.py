"""Benchmark: what an erasure and a retention purge cost on a large workspace, and how much of
it is hashing W/raw/ (this tree against a baseline).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_raw_rewrite.py --folder DIR \\
        --baseline-src /path/to/other/checkout/src [--customers 130000] [--months 36] \\
        [--rounds 1] [--out benchmarks/results/bench_raw_rewrite.json]

Generates one workspace (``segments generate``: 130,000 customers over 36 months are about
10 million order lines) in ``DIR/source``, then for each round and each tree (baseline and
current, alternating so both see the same load) copies it and runs, in a child process with
``PYTHONPATH`` set to that tree's ``src``: ``subject erase`` of one customer, then ``retention
purge`` (which erases the flagged persons first, then deletes what retention ended). Each
child reports wall and CPU seconds, and the bytes hashed by ``segments.workspace``'s
``sha256_file`` (``raw_hashes``, ``parquet_digests``) as a multiple of W/raw/'s size: the
number of full hashings of W/raw/, and its peak resident memory (``ru_maxrss`` of the child,
imports included). After each step the two trees' W/raw/ are compared file by file (the purge
log with its ``purged_at`` time left out): ``same_bytes`` says whether every table partition,
the manifest and the log are identical. Figures are current / baseline ratios; on the shared
2-core machine CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
KEY = "steward key of the benchmark, 32 bytes or more"
AS_OF = "2027-06-30"

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import segments.workspace as workspace

hashed = [0]
real = workspace.sha256_file

def counted(path):
    hashed[0] += os.path.getsize(path)
    return real(path)

workspace.sha256_file = counted
from segments.prepare.retention import purge
from segments.prepare.subjects import erase

op, root, arg, key = sys.argv[1:5]
raw = Path(root) / "raw"
size = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file())
wall, cpu = time.perf_counter(), time.process_time()
if op == "erase":
    erase(root, "alloffice", int(arg), key=key)
else:
    result = purge(root, "alloffice", arg, key=key)
print(json.dumps({
    "wall_seconds": round(time.perf_counter() - wall, 2),
    "cpu_seconds": round(time.process_time() - cpu, 2),
    "bytes_hashed": hashed[0],
    "raw_bytes": size,
    "raw_hashings": round(hashed[0] / size, 2),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def _run(src: Path, op: str, root: Path, arg: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, op, str(root), arg, KEY],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _raw_files(root: Path) -> dict[str, bytes]:
    """Every file of ``root``/raw by relative path (the purge log without its times)."""
    files = {}
    for path in sorted((root / "raw").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "purge_log.json":
                entries = json.loads(data)
                for entry in entries:
                    entry.pop("purged_at", None)
                data = json.dumps(entries, sort_keys=True).encode()
            files[path.relative_to(root).as_posix()] = data
    return files


def _differences(a: Path, b: Path) -> list[str]:
    """The W/raw/ files that differ between two workspaces (or exist in one only)."""
    left, right = _raw_files(a), _raw_files(b)
    return sorted(n for n in set(left) | set(right) if left.get(n) != right.get(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=130_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_raw_rewrite.json")
    args = parser.parse_args()

    source = args.folder / "source"
    if not (source / "raw" / "manifest.json").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "segments.cli.main",
                "generate",
                "-w",
                str(source),
                "--customers",
                str(args.customers),
                "--months",
                str(args.months),
            ],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            check=True,
        )
    import polars as pl

    customer = str(pl.read_parquet(source / "raw" / "orders.parquet")["customer_id"][0])
    lines = pl.scan_parquet(source / "raw" / "order_lines.parquet" / "**" / "*.parquet")
    n_lines = lines.select(pl.len()).collect().item()
    runs: list[dict] = []
    differ: dict[str, list[str]] = {}
    for round_ in range(args.rounds):
        roots = {}
        for label in ("baseline", "current"):
            roots[label] = args.folder / f"{label}-{round_}"
            shutil.rmtree(roots[label], ignore_errors=True)
            shutil.copytree(source, roots[label])
        for op, arg in (("erase", customer), ("purge", AS_OF)):
            for label, src in (("baseline", args.baseline_src), ("current", SRC)):
                result = _run(src, op, roots[label], arg)
                if op == "erase":
                    runs.append({"tree": label, "round": round_, "erase": result})
                else:
                    next(r for r in runs if r["tree"] == label and r["round"] == round_)[op] = (
                        result
                    )
                print(label, round_, op, result, flush=True)
            differ[f"{round_}/{op}"] = _differences(roots["baseline"], roots["current"])
            print(round_, op, "W/raw/ files that differ:", differ[f"{round_}/{op}"], flush=True)
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)

    def mean(tree: str, op: str, field: str) -> float:
        values = [r[op][field] for r in runs if r["tree"] == tree]
        return sum(values) / len(values)

    ratios = {
        op: {
            field: round(mean("current", op, field) / mean("baseline", op, field), 3)
            for field in ("wall_seconds", "cpu_seconds", "bytes_hashed", "peak_rss_mb")
        }
        for op in ("erase", "purge")
    }
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "order_lines": n_lines,
        "customers": args.customers,
        "months": args.months,
        "baseline_src": str(args.baseline_src),
        "load_average_1min": os.getloadavg()[0],
        "runs": runs,
        "current_over_baseline": ratios,
        # W/raw/ after each step, baseline against current: the files that differ (none:
        # the same bytes; the purge log compared without its purged_at times)
        "raw_files_that_differ": differ,
        "same_bytes": not any(differ.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
