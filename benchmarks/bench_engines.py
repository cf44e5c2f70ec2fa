"""Benchmark: the line-level stages on each engine (issue 21), the in-memory path as baseline.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_engines.py --lines 10000000 \\
        [--folder DIR] [--reuse DIR] [--engines polars,duckdb,spark] [--steps cells,release]

Each (step, engine) runs in its own process, so time and peak RSS are measured per step:

``cells``
    one scan of every prepared line into spend and units per person and category
    (:meth:`segments.engine.Engine.person_cells`, the aggregate every release shares):
    ``polars`` (polars' streaming engine on the driver, today's path) against ``duckdb``
    (embedded, out of core), the measurement that chose the embedded engine, and ``spark``
    (PySpark in local mode, ``SEGMENTS_SPARK_MASTER``, default ``local[2]``; its peak adds
    the JVM's to the driver's);
``orders``
    distinct orders per person (:meth:`~segments.engine.Engine.person_orders`);
``release``
    the month-closing of ``benchmarks/bench_releases.py`` (month_closing spec, the monthly
    purchasing series, the survey scores) on an evaluation ledger, end to end from the
    Parquet files to the published tables and cards, with ``SEGMENTS_ENGINE`` set.

Every engine must give the same result: ``cells`` and ``orders`` record a SHA-256 of the
per-person frame (rows in key order), ``release`` one of every card's privacy loss and every
published table's keys (its text and date columns, not the noisy values); the results say per
step whether they are ``identical`` on all engines that ran.

Prepared-shaped frames come from ``segments.privacy._frames`` (not timed), written into
``--folder`` (default: a fresh folder beside this script, removed afterwards) and written as
prepare writes them, in month partitions (``lines.parquet/month=YYYY-MM/part-*.parquet``, so
a month-closing reads only its months); ``--frames DIR/run`` hard-links an earlier
``--keep`` run's frames as they are; ``--reuse DIR --copies K`` reads an earlier run's
frames and repeats their lines K times, copy k as ``part-k`` of every month (distinct order
ids, the same persons: K times the line-level work, the same per-person frames). Results go to
``benchmarks/results/bench_engines_<lines>.json``.

Goals (issue 21): at 10 and 60 million lines the embedded engine is no slower than the
in-memory path and uses at most half its memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
#: The allocator setting the caller gave, if any. polars, once loaded in this process (the
#: frames are written here), puts its own default into the environment (``muzzy_decay_ms:-1``:
#: freed memory stays resident), which a child would inherit instead of the one its own
#: ``segments`` sets before polars loads (``segments.POLARS_ALLOCATOR``): every step measured
#: with the allocator the product does not run with (a month-closing at 10 M lines on DuckDB:
#: 1248 MB here against 759 MB run alone).
MALLOC_ENV = "_RJEM_MALLOC_CONF"
CALLER_MALLOC_CONF = os.environ.get(MALLOC_ENV)
PURPOSE = "statistics"
STEPS = ("cells", "orders", "release")


def _peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM of its memory map. (``ru_maxrss`` survives
    ``execve`` on Linux, so a child started by a parent that held the frames would report
    the parent's peak; VmHWM starts afresh with the new image.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # pragma: no cover


def _jvm_peak_rss_mb() -> float:
    """Peak RSS of Spark's JVM, a child process that RUSAGE_SELF does not count (0 without)."""
    context = sys.modules.get("pyspark.context")
    gateway = getattr(context.SparkContext, "_gateway", None) if context else None
    proc = getattr(gateway, "proc", None)
    if proc is None:
        return 0.0
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _jvm_cpu_seconds() -> float:
    """CPU seconds (user + system) Spark's JVM has used so far (0 without a JVM)."""
    context = sys.modules.get("pyspark.context")
    gateway = getattr(context.SparkContext, "_gateway", None) if context else None
    proc = getattr(gateway, "proc", None)
    if proc is None:
        return 0.0
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_step(step: str, engine_name: str, folder: Path) -> dict:
    """One step on one engine; with Spark the JVM's peak and CPU are added to the driver's.
    CPU seconds (every thread) are recorded beside the wall time: on the shared machine the
    wall time is mostly waiting for a core."""
    cpu = time.process_time()
    out = _child_step(step, engine_name, folder)
    out["cpu_seconds"] = time.process_time() - cpu + _jvm_cpu_seconds()
    jvm = _jvm_peak_rss_mb()
    if jvm:
        out["jvm_peak_rss_mb"] = jvm
        out["peak_rss_mb"] += jvm
    return out


def _child_step(step: str, engine_name: str, folder: Path) -> dict:
    os.environ["SEGMENTS_ENGINE"] = engine_name
    start = time.perf_counter()
    lines = folder / "prepared" / PURPOSE / "lines.parquet"
    scratch = folder / ".private" / f"bench-{step}-{engine_name}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        if step == "release":
            from bench_releases import child_release

            out = child_release(folder)
            return {
                "seconds": out["seconds"]["total"],
                "peak_rss_mb": _peak_rss_mb(),
                "released_keys_sha256": _released_keys_digest(folder / "releases"),
            }
        from segments.engine import get_engine
        from segments.schema import PRODUCT_CATEGORIES

        engine = get_engine(engine_name)
        if step == "cells":
            frame = engine.person_cells(lines, None, PRODUCT_CATEGORIES, scratch=scratch)
        else:
            frame = engine.person_orders(lines, None, scratch=scratch)
        return {
            "seconds": time.perf_counter() - start,
            "peak_rss_mb": _peak_rss_mb(),
            "rows": frame.height,
            "frame_sha256": _frame_digest(frame),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _frame_digest(frame) -> str:
    """SHA-256 of a per-person frame, rows in key order: equal on every engine or not."""
    import hashlib

    import polars as pl

    keys = [c for c in frame.columns if frame.schema[c] not in (pl.Int64, pl.Float64)]
    ordered = frame.sort(keys or frame.columns)
    return hashlib.sha256(ordered.write_csv().encode()).hexdigest()


def _released_keys_digest(releases: Path) -> str:
    """SHA-256 of what a release must publish identically on every engine: each card's
    privacy loss and each table's keys (its text and date columns; the values and the
    statuses derived from them are noisy),
    releases named without their random id suffix."""
    import hashlib

    import polars as pl

    parts = []
    for card in releases.rglob("card.json"):
        name = card.parent.relative_to(releases).as_posix().rsplit("-", 1)[0]
        loss = json.loads(card.read_text()).get("privacy_loss")
        part = [f"{name}:{json.dumps(loss, sort_keys=True)}"]
        for table in sorted(card.parent.glob("*.parquet")):
            frame = pl.read_parquet(table)
            keys = [
                c
                for c in frame.columns
                if frame.schema[c] in (pl.String, pl.Date) and not c.endswith("_status")
            ]
            part.append(f"{table.name}:{frame.height}:{_frame_digest(frame.select(keys))}")
        parts.append("\n".join(part))
    if not parts:
        raise RuntimeError(f"no release card under {releases}")
    return hashlib.sha256("\n\n".join(sorted(parts)).encode()).hexdigest()


def _run_child(step: str, engine: str, folder: Path, sources: dict[str, Path]) -> dict:
    """``engine`` is ``NAME`` (this tree's code) or ``NAME@LABEL``: the code of ``--src
    LABEL=DIR``, a ``git archive`` of another commit (its ``src`` first on the path and its own
    copy of this script and bench_releases as the child), on the same frames."""
    name, _, label = engine.partition("@")
    script, env = Path(__file__), dict(os.environ)
    if CALLER_MALLOC_CONF is None:  # the child's own code sets it, as the product does
        env.pop(MALLOC_ENV, None)
    if label:
        script = sources[label] / "benchmarks" / Path(__file__).name
        env["PYTHONPATH"] = str(sources[label] / "src")
    out = subprocess.run(
        [sys.executable, str(script), "--child", step, "--engine", name, "--folder", str(folder)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode:  # recorded, and the other steps still run
        last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no output"
        print(f"step {step} on {engine} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
        return {"failed": last}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_partitions(lines, target: Path, copies: int) -> int:
    """Write ``lines`` ``copies`` times (order ids made distinct) as month partitions, as
    prepare writes them: ``target/month=YYYY-MM/part-<copy>.parquet``. Returns the rows."""
    import polars as pl

    from segments.workspace import month_partition

    rows = 0
    by_month = lines.with_columns(pl.col("order_date").dt.truncate("1mo").alias("_month"))
    months = by_month.partition_by("_month", as_dict=True, include_key=False)
    for (month,), part in sorted(months.items(), key=lambda item: item[0]):
        folder = target / month_partition(month)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            copy = part.with_columns(pl.col("order_id") + f":{k}") if k else part
            copy.write_parquet(folder / f"part-{k:05d}.parquet")
            rows += copy.height
    return rows


def _prepare_folder(folder: Path, args: argparse.Namespace) -> None:
    import polars as pl
    from bench_releases import child_generate

    from segments._tables import read_table
    from segments.provenance import PROVENANCE_FILE

    prepared = folder / "prepared" / PURPOSE
    if args.frames:  # an earlier run's frames as they are: hard links, nothing rewritten
        shutil.copytree(
            args.frames.resolve(), folder, symlinks=True, copy_function=os.link, dirs_exist_ok=True
        )
        # signed again below, by this code (a run stopped before signing left none)
        (prepared / PROVENANCE_FILE).unlink(missing_ok=True)
    elif args.reuse:
        prepared.mkdir(parents=True, exist_ok=True)
        source = args.reuse.resolve() / "prepared" / PURPOSE
        # a hard link: a workspace table never links to files elsewhere (folder_files)
        os.link(source / "customers.parquet", prepared / "customers.parquet")
        # the same people buying K times as much: K × the lines, the same persons
        t = time.perf_counter()
        rows = _write_partitions(
            read_table(source / "lines.parquet"), prepared / "lines.parquet", args.copies
        )
        print(f"wrote {rows:,} lines as month partitions in {time.perf_counter() - t:.0f} s")
        import numpy as np

        from segments.privacy._frames import write_survey_frame

        write_survey_frame(
            folder / "raw" / "surveys.parquet",
            args.lines // args.copies // 33 // 20,
            seed=np.random.default_rng(7),
            month=dt.date(2026, 2, 1),
        )
        (folder / "raw" / "manifest.json").write_text(json.dumps({"synthetic": True}))
    else:
        t = time.perf_counter()
        child_generate(folder, args.lines // 33, args.lines)
        single = prepared / "lines.parquet"  # as prepare writes them: month partitions
        lines = pl.read_parquet(single)
        single.unlink()
        _write_partitions(lines, single, 1)
        del lines
        print(f"generated {args.lines:,} prepared lines in {time.perf_counter() - t:.0f} s")
    # the monthly series reads the data's as-of from prepare's signed record
    from bench_releases import AS_OF

    # (the benchmark stands in for prepare's writer: it signs the frames it made itself)
    from segments.provenance import _files_under, _sign_prepared, raw_hashes
    from segments.workspace import sha256_file, write_json

    outputs = {name: sha256_file(path) for name, path in _files_under(prepared).items()}
    # bound to the raw files beside them (the surveys, the manifest), as prepare binds its own
    record = _sign_prepared(
        raw_hashes(folder), outputs, purpose=PURPOSE, as_of=AS_OF, demo_key=False
    )
    write_json(prepared / PROVENANCE_FILE, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--engines", default="polars,duckdb")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--folder", type=Path, help="where the frames go (default: a temp folder)")
    parser.add_argument("--reuse", type=Path, help="a folder from an earlier --folder run")
    parser.add_argument(
        "--frames",
        type=Path,
        help="the frames of an earlier --keep run (DIR/run), hard-linked as they are",
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=1,
        help="with --reuse: its lines K times (order ids made distinct), the same persons",
    )
    parser.add_argument(
        "--memory-limit",
        default="1GB",
        help="SEGMENTS_MEMORY_LIMIT of every step (DuckDB spills beyond it; polars ignores it)",
    )
    parser.add_argument("--out", type=Path, help="results file (default: results/…_<lines>.json)")
    parser.add_argument(
        "--keep", action="store_true", help="keep --folder/run (the frames) for a later --reuse"
    )
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another commit's code (DIR holds a `git archive` of its src and benchmarks): "
        "engines named ENGINE@LABEL run on it, on the same frames (e.g. the in-memory path "
        "when the issue was filed as the baseline: --src 3fa20ec=DIR --engines "
        "polars@3fa20ec,polars,duckdb); ratios are then against the first engine listed",
    )
    parser.add_argument("--child", choices=STEPS)
    parser.add_argument("--engine")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_step(args.child, args.engine, args.folder), default=str))
        return
    engines = args.engines.split(",")
    sources = {
        label: Path(folder).resolve()
        for label, _, folder in (item.partition("=") for item in args.src)
    }
    for engine in engines:
        label = engine.partition("@")[2]
        if label and label not in sources:
            parser.error(f"engine {engine}: no --src {label}=DIR")
    os.environ["SEGMENTS_MEMORY_LIMIT"] = args.memory_limit
    base = args.folder or Path(tempfile.mkdtemp(prefix=".bench-engines-", dir=HERE))
    folder = base / "run"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    results: dict = {
        "lines": args.lines,
        "memory_limit": args.memory_limit,
        "copies": args.copies,
        "machine": f"{os.cpu_count()} cores",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "steps": {},
        "identical": {},
    }
    if sources:
        results["sources"] = {
            label: (folder / "SNAPSHOT").read_text().strip()
            if (folder / "SNAPSHOT").is_file()
            else str(folder)
            for label, folder in sources.items()
        }
    try:
        _prepare_folder(folder, args)
        results["load_average"] = {"before": round(os.getloadavg()[0], 1)}
        print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores; >2 means shared CPU)")
        for step in args.steps.split(","):
            results["steps"][step] = {}
            for engine in engines:
                # a fresh workspace per engine (a month is released once per workspace),
                # its files hard-linked to the frames
                workspace = base / f"{step}-{engine}"
                shutil.rmtree(workspace, ignore_errors=True)
                shutil.copytree(folder, workspace, symlinks=True, copy_function=os.link)
                try:
                    out = _run_child(step, engine, workspace, sources)
                finally:
                    shutil.rmtree(workspace, ignore_errors=True)
                results["steps"][step][engine] = out
                if "failed" in out:
                    print(f"{step:<8} {engine:<7} FAILED: {out['failed']}")
                    continue
                print(
                    f"{step:<8} {engine:<7} {out['seconds']:7.2f} s "
                    f"({out['cpu_seconds']:.1f} s CPU)  peak {out['peak_rss_mb']:7.0f} MB"
                )
            digests = {
                engine: out.get("frame_sha256") or out.get("released_keys_sha256")
                for engine, out in results["steps"][step].items()
                if "failed" not in out and "@" not in engine  # this tree's code only
            }
            if len(digests) > 1:  # the same per-person frames / released keys and charges
                results["identical"][step] = len(set(digests.values())) == 1
                print(f"         identical on {', '.join(digests)}: {results['identical'][step]}")
            other = {  # and the other commits' code: the same keys and charges as that code's?
                engine: out.get("frame_sha256") or out.get("released_keys_sha256")
                for engine, out in results["steps"][step].items()
                if "failed" not in out and "@" in engine
            }
            if other and digests:
                same = len(set(other.values()) | set(digests.values())) == 1
                results.setdefault("identical_with_src", {})[step] = same
                print(f"         identical on {', '.join(other)} too: {same}")
            # the baseline: the in-memory path (polars), or with --src the first engine listed
            baseline = engines[0] if sources else "polars"
            if baseline in engines and not any(
                "failed" in o for o in results["steps"][step].values()
            ):
                ref = results["steps"][step][baseline]
                for engine in engines:
                    if engine != baseline:
                        got = results["steps"][step][engine]
                        ratio = {
                            key: round(got[key] / ref[key], 3)
                            for key in ("seconds", "cpu_seconds", "peak_rss_mb")
                        }
                        results.setdefault("ratios", {}).setdefault(step, {})[engine] = {
                            "over": baseline,
                            **ratio,
                        }
                        print(
                            f"         {engine} / {baseline}: time ×{ratio['seconds']:.2f} "
                            f"(CPU ×{ratio['cpu_seconds']:.2f}), "
                            f"memory ×{ratio['peak_rss_mb']:.2f} "
                            "(goal: time ≤ ×1.00, memory ≤ ×0.50)"
                        )
        results["load_average"]["after"] = round(os.getloadavg()[0], 1)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        if not (args.keep and args.folder):
            shutil.rmtree(folder, ignore_errors=True)
        if args.folder is None:
            shutil.rmtree(base, ignore_errors=True)
    out_path = args.out or HERE / "results" / f"bench_engines_{args.lines}.json"
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
