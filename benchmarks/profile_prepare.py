"""Where `segments prepare`'s memory goes: resident memory by stage (issue 21, step 3's map).

Usage::

    nice -n 10 .venv/bin/python benchmarks/profile_prepare.py --folder DIR \\
        [--customers 115000] [--months 12] [--purpose statistics]

Generates synthetic raw data into ``DIR/ws`` (kept for a rerun: an existing ``DIR/ws/raw`` is
reused), then runs ``prepare`` (policy ``alloffice``) once while
:class:`profile_release.Profile` samples this process's resident memory and charges each
sample to the innermost prepare stage running. Printed: each stage's peak and the memory at
its start, the process's own peak (``VmHWM``), its CPU seconds and the lines prepared.

With ``--baseline-src OLD/src`` the same prepare runs twice in the same command, each in its
own process on the same raw data: first with ``OLD/src`` first on the path (the baseline),
then with ``--src`` (default: this tree's ``src``). Printed and written: both runs, the
ratios (peak, memory before the write, CPU seconds) and whether the prepared files are the
same bytes (SHA-256 of every file but ``provenance.json``, whose signature differs per run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: The stages of segments.prepare.frames charged (what _prepare calls, in order).
STAGES = (
    ("segments.prepare.frames", "_read_by_month"),  # the chunked pass (issue 21), or:
    ("segments.prepare.frames", "load_raw_tables"),
    ("segments.prepare.frames", "read_raw_lines"),
    ("segments.prepare.frames", "link_persons"),
    ("segments.prepare.frames", "_orders_with_persons"),
    ("segments.prepare.frames", "_persons"),  # the persons as one query (person_table before)
    ("segments.prepare.frames", "person_table"),
    ("segments.prepare.frames", "_drop_logged_erasures"),
    ("segments.prepare.frames", "_apply_exclusions"),
    ("segments.prepare.frames", "_apply_retention"),
    ("segments.prepare.chunked", "_lines_by_month"),  # inside _read_by_month
    ("segments.prepare.chunked", "_months_with_counts"),
    ("segments.prepare.frames", "_MonthlyRun.apply_order_rules"),  # inside _apply_retention
    ("segments.prepare.frames", "_pseudonymise"),
    ("segments.prepare.frames", "_write_atomically"),
    ("segments.prepare.frames", "_LinePlan.build"),  # one month's lines, inside the write
    ("segments.engine.base", "Engine.join_order_lines"),  # the join, inside the build
    ("segments.provenance", "raw_hashes"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=115_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--purpose", default="statistics")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--baseline-src", type=Path, help="src folder of the version to compare")
    parser.add_argument(
        "--src", type=Path, default=HERE.parent / "src", help="with --baseline-src: the other"
    )
    args = parser.parse_args()
    if args.baseline_src:
        compare(args)
        return
    from profile_release import Profile, _rss_mb

    from segments.workspace import Workspace

    as_of = dt.date(2026, 10, 31)
    ws = Workspace(args.folder / "ws")
    if not (ws.raw / "manifest.json").exists():
        from segments.synth.generate import generate

        generate(ws, customers=args.customers, months=args.months, as_of=as_of, progress=False)
    lines = json.loads((ws.raw / "manifest.json").read_text())["row_counts"]["order_lines"]
    profile = Profile()
    import segments.prepare.frames  # noqa: F401

    profile.wrap_present(STAGES)
    from segments.prepare import prepare

    with profile:
        report = prepare(ws, "alloffice", args.purpose, as_of)
    rows = profile.rows()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "raw_lines": lines,
        "prepared_lines": report.output_counts["lines"],
        "load_average": os.getloadavg()[0],
        "process_peak_mb": round(_rss_mb("VmHWM")),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "files_sha256": _prepared_digests(ws.prepared_dir(args.purpose)),
        # the orders read in chunks and ruled by month (segments.prepare.chunked), not whole
        "orders_by_month": "_months_with_counts" in rows,
        "stages": rows,
    }
    print(f"raw lines {lines:,}, prepared lines {report.output_counts['lines']:,}")
    profile.print_rows(28)
    print(f"process peak (VmHWM) {result['process_peak_mb']} MB")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def _prepared_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every prepared file but the signed record (its signature differs per run)."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "provenance.json"
    }


def _commit(src: Path) -> str | None:
    """The git commit (with ``+dirty`` for uncommitted changes) of the tree holding ``src``;
    None outside a git work tree (a ``git archive`` snapshot: name it in the README)."""
    run = subprocess.run(
        ["git", "-C", str(src), "describe", "--always", "--dirty=+dirty", "--abbrev=12"],
        capture_output=True,
        text=True,
        check=False,
    )
    return run.stdout.strip() or None if run.returncode == 0 else None


def compare(args: argparse.Namespace) -> None:
    """The baseline's run, then this tree's, each in a fresh process (module docstring)."""
    runs = {}
    for label, src in (("baseline", args.baseline_src), ("current", args.src)):
        out = args.folder / f"profile-{label}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--folder", str(args.folder)]
        command += ["--customers", str(args.customers), "--months", str(args.months)]
        command += ["--purpose", args.purpose, "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
        print(f"--- {label}: {src}", flush=True)
        subprocess.run(command, env=env, check=True)
        runs[label] = json.loads(out.read_text())
        out.unlink()
    base, current = runs["baseline"], runs["current"]

    def before_write(run: dict) -> float:
        return run["stages"].get("_write_atomically", {}).get("rss_at_start_mb", 0.0)

    ratios = {
        "process_peak": round(current["process_peak_mb"] / base["process_peak_mb"], 2),
        "rss_before_write": round(before_write(current) / max(before_write(base), 1), 2),
        "cpu_seconds": round(current["cpu_seconds"] / base["cpu_seconds"], 2),
    }
    same = base["files_sha256"] == current["files_sha256"]
    print(f"current / baseline: {ratios}; same prepared bytes: {same}")
    result = {"baseline_src": str(args.baseline_src), "runs": runs, "ratios": ratios}
    result["commits"] = {"baseline": _commit(args.baseline_src), "current": _commit(args.src)}
    result["same_prepared_bytes"] = same
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
