"""Benchmark "bring your own data": the time of every step, CDNOW and a 1,000,000-line export.

Runs, with the CLI's own entry point (in-process, as a user's shell would run the commands),
ingest → prepare (segmentation, statistics, microdata) → segment → release (spend by segment,
category mix, one monthly release) → kanon → forecast → audit, once on CDNOW_master.txt
(69,659 lines) and once on an export of about a million lines built from CDNOW with the
second shape of ``tests/realexports.py`` (semicolon CSV in Latin-1, gzipped, EUR with a
decimal comma, returns, cancellations, rows without a customer, postage codes, countries, one
channel). As a baseline measured in the same run, each export is also read once with
``pandas.read_csv`` (the floor of any ingest: parsing the text).

    .venv/bin/python benchmarks/bench_ingest.py --lines 1000000 \
        --output benchmarks/results/bench_ingest.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from realexports import CDNOW, build_eu_export  # noqa: E402

from segments.cli.main import main  # noqa: E402

POLICY = str(ROOT / "examples" / "cdnow" / "policy.toml")


def _step(timings: dict[str, float], name: str, *argv: str) -> None:
    started = time.perf_counter()
    code = main(list(argv))
    timings[name] = round(time.perf_counter() - started, 2)
    if code not in (0,):
        raise SystemExit(f"step {name} failed with exit {code}: segments {' '.join(argv)}")


def run_story(export: Path, mapping: Path, folder: Path) -> dict[str, float]:
    """Every step of the story once; returns seconds per step."""
    ws, key, ledger = folder / "ws", folder / "steward.key", folder / "ledger.sqlite"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)  # the steward's alone (a readable key file is refused)
    w = ("-w", str(ws))
    pol = ("--policy", POLICY)
    t: dict[str, float] = {}
    _step(t, "ingest", "ingest", *w, str(export), "--mapping", str(mapping))
    for purpose in ("segmentation", "statistics", "microdata"):
        _step(
            t, f"prepare {purpose}", "prepare", *w, *pol, "--purpose", purpose,
            "--as-of", "1998-06-30", "--key-file", str(key),
        )  # fmt: skip
    _step(t, "segment", "segment", *w, *pol, "--k-range", "3-6")
    release: tuple[str, ...] = (
        "release",
        *w,
        *pol,
        "--ledger",
        str(ledger),
        "--as-of",
        "1998-07-01",
    )
    release += ("--purpose", "statistics", "--recipient", "purchasing")
    _step(t, "release spend_by_segment", *release, "--spec", "spend_by_segment",
          "--segments", "fitted", "--epsilon", "0.2")  # fmt: skip
    _step(t, "release category_mix", *release, "--spec", "category_mix",
          "--segments", "category_rule", "--epsilon", "0.2")  # fmt: skip
    months = []
    m = dt.date(1997, 1, 1)
    while m < dt.date(1998, 7, 1):
        months.append(m)
        m = (m + dt.timedelta(days=32)).replace(day=1)
    started = time.perf_counter()
    for month in months:
        assert main([*release, "--spec", "monthly_category", "--month", str(month),
                     "--epsilon", "0.1"]) == 0  # fmt: skip
    t["release monthly_category x18"] = round(time.perf_counter() - started, 2)
    _step(t, "kanon", "kanon", *w, *pol, "--ledger", str(ledger), "--as-of", "1998-07-01",
          "--purpose", "microdata", "--recipient", "purchasing", "--k", "10",
          "--segments", "category_rule", "--columns", "signup_date,segment,spend_band",
          "--seed", "7")  # fmt: skip
    _step(t, "forecast", "forecast", *w, "--horizon", "3")
    _step(t, "audit", "audit", *w, *pol, "--ledger", str(ledger), "--key-file", str(key),
          "--dp-trials", "100")  # fmt: skip
    return t


def _pandas_floor(export: Path, text_format: bool) -> float:
    started = time.perf_counter()
    raw = export.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if text_format:
        pd.read_csv(io.BytesIO(raw), sep=r"\s+", dtype=str)
    else:
        pd.read_csv(io.BytesIO(raw), sep=";", dtype=str, encoding="latin-1")
    return round(time.perf_counter() - started, 2)


def main_bench(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the big export")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        mapping = ROOT / "examples" / "cdnow" / "mapping.toml"
        (folder / "cdnow").mkdir()
        out["cdnow"] = {
            "lines": 69_659,
            "baseline pandas read_csv": _pandas_floor(CDNOW, True),
            "steps": run_story(CDNOW, mapping, folder / "cdnow"),
        }
        # purchase rows such that purchases + returns + cancellations + fees ≈ --lines
        purchases = int(args.lines / 1.32)
        export, eu_mapping, frame = build_eu_export(folder / "big-export", n_rows=purchases)
        (folder / "big").mkdir()
        out["big"] = {
            "lines": frame.height,
            "bytes_gzip": export.stat().st_size,
            "baseline pandas read_csv": _pandas_floor(export, False),
            "steps": run_story(export, eu_mapping, folder / "big"),
        }
    for name in ("cdnow", "big"):
        steps = out[name]["steps"]
        out[name]["total"] = round(sum(steps.values()), 2)
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main_bench()
