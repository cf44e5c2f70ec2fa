"""Benchmark: the main job's stages (`segments demo`), this tree against a baseline (issue 14).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_main_job.py --folder DIR \\
        [--baseline-src /path/to/other/checkout/src] [--customers 50000] [--policy alloffice] \\
        [--src SRC] [--rounds 1] [--out benchmarks/results/bench_main_job.json]

Runs the main job (:func:`segments.pipeline.run_demo`, without the notebooks, which run in
their own process beside it) in a child process per run, with ``PYTHONPATH`` set to this
tree's ``src`` or the baseline's, alternating baseline and current for ``--rounds`` rounds so
that both see the same machine load. Each child reports the wall and CPU seconds (its own
process: the job is mostly single-threaded) of every step, read from the job's own timings
(``W/report/main_job.json``) and from a wrapper around its step runner, plus the whole run.
The figures are given as current / baseline ratios per step; on the shared 2-core machine
the CPU seconds are the steadier figure. The workspaces are ``DIR/<label>-<round>``, removed
afterwards unless ``--keep``.
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
SRC = HERE.parent / "src"


def child(folder: Path, policy: str, customers: int) -> dict:
    """One run of the main job in this process (its ``PYTHONPATH`` picks the tree)."""
    import segments.pipeline as pipeline

    cpu: dict[str, float] = {}
    run_step = pipeline._run_step

    def timed(step, ws, pol, log):
        started = time.process_time()
        try:
            return run_step(step, ws, pol, log)
        finally:
            cpu[step.title] = time.process_time() - started

    pipeline._run_step = timed
    start, start_cpu = time.perf_counter(), time.process_time()
    summary = pipeline.run_demo(
        folder, policy, notebooks=False, customers=customers, echo=lambda *_: None
    )
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - start_cpu,
        "steps": {k: round(v, 2) for k, v in summary.timings.items()},
        "steps_cpu": {k: round(v, 2) for k, v in cpu.items()},
        "src": str(Path(pipeline.__file__).resolve().parents[1]),
    }


def _run(src: Path, folder: Path, policy: str, customers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, __file__, "--child", "--folder", str(folder)]
    command += ["--policy", policy, "--customers", str(customers)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{src}: the main job failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _short(title: str) -> str:
    return title.split(" (")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument(
        "--src", type=Path, default=SRC, help="the current tree's src (default: this checkout's)"
    )
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--policy", default="alloffice")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.folder, args.policy, args.customers)))
        return
    trees = [("current", args.src.resolve())]
    if args.baseline_src:
        trees.insert(0, ("baseline", args.baseline_src.resolve()))
    results: dict = {
        "customers": args.customers,
        "policy": args.policy,
        "machine": f"{os.cpu_count()} cores",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "trees": {label: str(src) for label, src in trees},
        "runs": {label: [] for label, _ in trees},
        "load_average": [],
    }
    args.folder.mkdir(parents=True, exist_ok=True)
    for round_ in range(args.rounds):
        for label, src in trees:
            folder = args.folder / f"{label}-{round_}"
            load = round(os.getloadavg()[0], 1)
            out = _run(src, folder, args.policy, args.customers)
            results["runs"][label].append(out)
            results["load_average"].append({"run": f"{label}-{round_}", "before": load})
            print(
                f"{label:<9} round {round_}: {out['seconds']:6.1f} s wall, "
                f"{out['cpu_seconds']:6.1f} s CPU (load average before: {load})"
            )
            for title, seconds in out["steps"].items():
                cpu = out["steps_cpu"].get(title)
                print(
                    f"    {_short(title):<32} {seconds:7.1f} s"
                    + (f"  ({cpu:.1f} s CPU)" if cpu is not None else "")
                )
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    if args.baseline_src:
        ratios: dict = {}
        for measure, key in (("wall", "steps"), ("cpu", "steps_cpu")):
            base = results["runs"]["baseline"]
            cur = results["runs"]["current"]
            titles = [t for t in cur[0][key] if t in base[0][key]]
            ratios[measure] = {
                t: round(sum(r[key][t] for r in cur) / max(sum(r[key][t] for r in base), 1e-9), 2)
                for t in titles
            }
        total = "seconds", "cpu_seconds"
        ratios["whole job"] = {
            m: round(
                sum(r[m] for r in results["runs"]["current"])
                / sum(r[m] for r in results["runs"]["baseline"]),
                2,
            )
            for m in total
        }
        results["current_over_baseline"] = ratios
        print("current / baseline:", json.dumps(ratios, indent=1))
    out_path = args.out or HERE / "results" / "bench_main_job.json"
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
