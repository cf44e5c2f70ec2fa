"""Where `segments prepare`'s memory goes: resident memory by stage (issue 21, step 3's map).

Usage::

    nice -n 10 .venv/bin/python benchmarks/profile_prepare.py --folder DIR \\
        [--customers 115000] [--months 12] [--purpose statistics]

Generates synthetic raw data into ``DIR/ws`` (kept for a rerun: an existing ``DIR/ws/raw`` is
reused), then runs ``prepare`` (policy ``alloffice``) once while
:class:`profile_release.Profile` samples this process's resident memory and charges each
sample to the innermost prepare stage running. Printed: each stage's peak and the memory at
its start, the process's own peak (``VmHWM``) and the lines prepared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: The stages of segments.prepare.frames charged (what _prepare calls, in order).
STAGES = (
    ("segments.prepare.frames", "load_raw_tables"),
    ("segments.prepare.frames", "read_raw_lines"),
    ("segments.prepare.frames", "link_persons"),
    ("segments.prepare.frames", "_orders_with_persons"),
    ("segments.prepare.frames", "person_table"),
    ("segments.prepare.frames", "_drop_logged_erasures"),
    ("segments.prepare.frames", "_apply_exclusions"),
    ("segments.prepare.frames", "_apply_retention"),
    ("segments.prepare.frames", "_pseudonymise"),
    ("segments.prepare.frames", "_write_atomically"),
    ("segments.provenance", "raw_hashes"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=115_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--purpose", default="statistics")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
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

    for module, attribute in STAGES:
        profile.wrap(module, attribute)
    from segments.prepare import prepare

    with profile:
        report = prepare(ws, "alloffice", args.purpose, as_of)
    rows = profile.rows()
    result = {
        "raw_lines": lines,
        "prepared_lines": report.output_counts["lines"],
        "load_average": os.getloadavg()[0],
        "process_peak_mb": round(_rss_mb("VmHWM")),
        "stages": rows,
    }
    print(f"raw lines {lines:,}, prepared lines {report.output_counts['lines']:,}")
    profile.print_rows(28)
    print(f"process peak (VmHWM) {result['process_peak_mb']} MB")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
