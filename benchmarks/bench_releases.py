"""Benchmark: the DP releases of one month-closing on 10 million order lines.

Usage::

    .venv/bin/python benchmarks/bench_releases.py [--lines 10000000] [--customers 300000]

Steps, each in its own process so peak memory is measured per step:

1. generate prepared-shaped frames (``segments.privacy._frames``) into a temporary folder
   (not timed);
2. the month-closing releases on an evaluation ledger, timed end to end from the Parquet
   files to the published tables and cards: ``month_closing`` (customers per county × segment,
   total and mean spend per segment and county × segment, spend and units per category per
   segment — one shared per-person aggregate), the monthly purchasing series for the month
   that just closed, and the survey scores; peak RSS of that process;
3. on the first ``--pipelinedp-lines`` lines (default 1 million: PipelineDP's local backend is
   pure Python, so 10 million lines would take many minutes), the spend query alone
   (``spend_by_segment``) with segments/OpenDP, and the same query with
   PipelineDP's local backend (in ``benchmarks/.venv-pipelinedp``, created on first use because
   pipeline-dp pins its own dependencies): sum and count of spend per segment, one partition
   per person, the person's total clipped to the same bound, Laplace noise, public partitions.
   The ratio of the two wall times is printed.

Targets (issue 5): ≤ 20 s and ≤ 3 GB peak for step 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PDP_VENV = HERE / ".venv-pipelinedp"
AS_OF = dt.date(2026, 3, 1)
PURPOSE = "statistics"
#: The policy the benchmarks' prepare and releases run under. ``bench_scale.py --policy`` and
#: ``bench_pipeline.py --policy`` hand it to their stage processes: alloffice's statistics
#: retention keeps about 15 months of a long history, allcall's 120 (every line of 70 months).
POLICY = os.environ.get("SEGMENTS_BENCH_POLICY", "alloffice")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_generate(folder: Path, customers: int, lines: int) -> dict:
    import numpy as np

    from segments.privacy._frames import write_prepared_frames, write_survey_frame

    start = time.perf_counter()
    paths = write_prepared_frames(
        folder / "prepared" / PURPOSE,
        customers,
        lines,
        seed=np.random.default_rng(2026),
        start=dt.date(2025, 1, 1),
        months=14,
    )
    write_survey_frame(
        folder / "raw" / "surveys.parquet",
        customers // 20,
        seed=np.random.default_rng(7),
        month=dt.date(2026, 2, 1),
    )
    (folder / "raw" / "manifest.json").write_text(json.dumps({"synthetic": True}))
    # releases read prepared frames only as prepare's signed record states them; these frames
    # are made here, so the benchmark signs them itself (the in-process trust limit, README)
    from segments.provenance import PROVENANCE_FILE, _files_under, _sign_prepared
    from segments.workspace import sha256_file, write_json

    prepared = folder / "prepared" / PURPOSE
    written = {name: sha256_file(path) for name, path in _files_under(prepared).items()}
    write_json(
        prepared / PROVENANCE_FILE,
        _sign_prepared({}, written, purpose=PURPOSE, as_of=AS_OF, demo_key=False),
    )
    return {"seconds": time.perf_counter() - start, "paths": {k: str(v) for k, v in paths.items()}}


def _ledger(folder: Path):
    from segments.policy import Policy
    from segments.privacy.ledger import Ledger
    from segments.workspace import Workspace

    policy = Policy.load(POLICY)
    workspace = Workspace(folder)
    from segments.privacy.synthetic import _verdict, raw_digest

    # prepared-shaped frames made here, not generated raw data: nothing to prove them from, so
    # the benchmark signs the verdict itself (an in-process caller with the per-user secret,
    # the trust limit README states); the product's paths only take prove_synthetic's
    proof = _verdict(
        True,
        "bench_releases: prepared-shaped frames made by the benchmark",
        raw=raw_digest(workspace),  # a verdict is about one workspace's raw files
    )
    ledger = Ledger.for_workspace(
        workspace, policy.controller, evaluation=True, synthetic=proof, policy=policy
    )
    return policy, workspace, ledger


def child_release(folder: Path) -> dict:
    start = time.perf_counter()
    cpu = time.process_time()
    from segments.privacy.archive import release_month
    from segments.privacy.publishing import ReleaseContext
    from segments.privacy.releases import plan_release
    from segments.privacy.specs import SPECS, PrivacyParams, SegmentSource

    policy, workspace, ledger = _ledger(folder)
    params = PrivacyParams.from_policy(policy, PURPOSE)
    timings = {"import_and_open": time.perf_counter() - start}
    context = ReleaseContext.open(
        ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing", synthetic=True
    )
    t = time.perf_counter()
    with plan_release(
        SPECS["month_closing"],
        params,
        workspace=workspace,
        purpose=PURPOSE,  # read through verified_frames, as every charged release
        segments=SegmentSource.category_rule(),
        as_of=AS_OF,
    ) as plan:
        timings["month_closing_plan"] = time.perf_counter() - t
        plan.execute(context)
    timings["month_closing"] = time.perf_counter() - t
    t = time.perf_counter()
    release_month(context, dt.date(2026, 2, 1), as_of=AS_OF, params=params)
    timings["monthly_series"] = time.perf_counter() - t
    t = time.perf_counter()
    with plan_release(
        SPECS["survey_experience"],
        params,
        workspace=workspace,  # its scratch in W/.private, never beside the raw file it reads
        surveys=workspace.raw_table("surveys"),
        as_of=AS_OF,
        survey_month=dt.date(2026, 2, 1),
    ) as plan:
        plan.execute(context)
    timings["survey"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    timings["total_cpu"] = time.process_time() - cpu
    return {"seconds": timings, "peak_rss_mb": _peak_rss_mb()}


def child_spend_opendp(folder: Path) -> dict:
    start = time.perf_counter()
    cpu = time.process_time()
    from segments.privacy.publishing import ReleaseContext
    from segments.privacy.releases import plan_release
    from segments.privacy.specs import SPECS, PrivacyParams, SegmentSource

    policy, workspace, ledger = _ledger(folder)
    params = PrivacyParams.from_policy(policy, PURPOSE)
    with plan_release(
        SPECS["spend_by_segment"],
        params,
        workspace=workspace,
        purpose=PURPOSE,
        segments=SegmentSource.category_rule(),
        as_of=AS_OF,
    ) as plan:
        plan.execute(
            ReleaseContext.open(
                ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing", synthetic=True
            )
        )
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": _peak_rss_mb(),
    }


def subset_workspace(folder: Path, n_lines: int) -> Path:
    """A copy of the prepared frames with only the first ``n_lines`` order lines."""
    import polars as pl

    target = folder / "subset"
    prepared = target / "prepared" / PURPOSE
    prepared.mkdir(parents=True)
    source = folder / "prepared" / PURPOSE
    (prepared / "customers.parquet").write_bytes((source / "customers.parquet").read_bytes())
    pl.scan_parquet(source / "lines.parquet").head(n_lines).sink_parquet(prepared / "lines.parquet")
    return target


def export_for_pipelinedp(folder: Path) -> Path:
    """Order lines with the person's segment (category rule) for PipelineDP (not timed)."""
    import polars as pl

    from segments.engine.base import person_key
    from segments.privacy.releases import _category_rule, _cells, _largest_first

    lines = pl.scan_parquet(folder / "prepared" / PURPOSE / "lines.parquet")
    segments = _category_rule(_largest_first(_cells(lines, None).lazy()))
    out = folder / "pipelinedp_lines.parquet"
    lines.select("person_id", person_key(), "amount_sek").join(segments, on="pid").drop(
        "pid"
    ).sink_parquet(out)
    return out


PIPELINEDP_SCRIPT = r"""
import json, sys, time, resource
start = time.perf_counter()
cpu = time.process_time()
import pyarrow.parquet as pq
import pipeline_dp
path, bound, epsilon = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
table = pq.read_table(path)
rows = zip(table.column("person_id").to_pylist(), table.column("segment").to_pylist(),
           table.column("amount_sek").to_pylist())
segments = sorted(set(json.loads(sys.argv[4])))
accountant = pipeline_dp.NaiveBudgetAccountant(total_epsilon=epsilon, total_delta=0)
engine = pipeline_dp.DPEngine(accountant, pipeline_dp.LocalBackend())
params = pipeline_dp.AggregateParams(
    metrics=[pipeline_dp.Metrics.SUM, pipeline_dp.Metrics.COUNT],
    noise_kind=pipeline_dp.NoiseKind.LAPLACE,
    max_partitions_contributed=1,
    max_contributions_per_partition=1_000_000,
    min_sum_per_partition=0.0,
    max_sum_per_partition=bound,
)
extractors = pipeline_dp.DataExtractors(
    privacy_id_extractor=lambda r: r[0], partition_extractor=lambda r: r[1],
    value_extractor=lambda r: r[2])
result = engine.aggregate(rows, params, extractors, public_partitions=segments)
accountant.compute_budgets()
out = list(result)
print(json.dumps({"seconds": time.perf_counter() - start, "partitions": len(out),
                  "cpu_seconds": time.process_time() - cpu,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ensure_pipelinedp() -> Path:
    python = PDP_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PDP_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "pipeline-dp", "pyarrow"], check=True
        )
    return python


def _run_child(mode: str, folder: Path, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--folder", str(folder), *extra],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=300_000)
    parser.add_argument("--child", choices=["generate", "release", "spend"])
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--pipelinedp-lines", type=int, default=1_000_000)
    parser.add_argument(
        "--reuse",
        type=Path,
        help="a folder with prepared customers.parquet and lines.parquet from an earlier run "
        "(skips generation; --lines is then the number of lines in it)",
    )
    parser.add_argument("--skip-pipelinedp", action="store_true")
    args = parser.parse_args()
    if args.child:
        modes = {
            "generate": lambda: child_generate(args.folder, args.customers, args.lines),
            "release": lambda: child_release(args.folder),
            "spend": lambda: child_spend_opendp(args.folder),
        }
        print(json.dumps(modes[args.child](), default=str))
        return

    with tempfile.TemporaryDirectory(prefix="bench-releases-") as tmp:
        folder = Path(tmp)
        if args.reuse:
            prepared = folder / "prepared" / PURPOSE
            prepared.mkdir(parents=True)
            for name in ("customers.parquet", "lines.parquet"):
                os.symlink(args.reuse.resolve() / name, prepared / name)
            import numpy as np

            from segments.privacy._frames import write_survey_frame

            write_survey_frame(
                folder / "raw" / "surveys.parquet",
                args.customers // 20,
                seed=np.random.default_rng(7),
                month=dt.date(2026, 2, 1),
            )
            print(f"reusing prepared frames from {args.reuse}")
        else:
            gen = _run_child(
                "generate", folder, "--lines", str(args.lines), "--customers", str(args.customers)
            )
            print(
                f"generated {args.lines:,} lines, {args.customers:,} customers "
                f"in {gen['seconds']:.1f} s (not timed)"
            )
        print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores; >2 means shared CPU)")
        rel = _run_child("release", folder)
        s = rel["seconds"]
        print(f"month-closing releases on {args.lines:,} lines (evaluation ledger; wall seconds):")
        for key, value in s.items():
            print(f"  {key:<22} {value:7.2f} s")
        print(
            f"  peak RSS              {rel['peak_rss_mb']:7.0f} MB   "
            f"(targets: total ≤ 20 s, peak ≤ 3072 MB)"
        )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        if args.skip_pipelinedp:
            return
        subset = subset_workspace(folder, min(args.pipelinedp_lines, args.lines))
        n_subset = min(args.pipelinedp_lines, args.lines)
        spend = _run_child("spend", subset)
        print(
            f"spend query on {n_subset:,} lines, segments/OpenDP: {spend['seconds']:7.2f} s "
            f"wall, {spend['cpu_seconds']:.2f} s CPU (peak {spend['peak_rss_mb']:.0f} MB)"
        )
        python = ensure_pipelinedp()
        from segments.policy import Policy
        from segments.schema import PRODUCT_CATEGORIES

        export = export_for_pipelinedp(subset)
        bound = Policy.load(POLICY).privacy.spend_bound_sek
        out = subprocess.run(
            [
                str(python),
                "-c",
                PIPELINEDP_SCRIPT,
                str(export),
                str(bound),
                "1.0",
                json.dumps(list(PRODUCT_CATEGORIES)),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        pdp = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"spend query on {n_subset:,} lines, PipelineDP local: {pdp['seconds']:7.2f} s "
            f"wall, {pdp['cpu_seconds']:.2f} s CPU (peak {pdp['peak_rss_mb']:.0f} MB, "
            f"{pdp['partitions']} partitions; its input already carries the segment)"
        )
        print(
            f"ratio PipelineDP / segments: {pdp['seconds'] / spend['seconds']:.1f}x wall, "
            f"{pdp['cpu_seconds'] / spend['cpu_seconds']:.1f}x CPU"
        )


if __name__ == "__main__":
    main()
