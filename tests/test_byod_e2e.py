"""Bring your own data, end to end with the CLI alone (issue 16).

CDNOW from its raw text file, and a second export built from it with another shape
(semicolon CSV in Latin-1, gzipped, EUR with a decimal comma, returns and cancellations, rows
without a customer, fee codes, a country geography, a single channel), each go through
ingest → prepare → segment → release → kanon → forecast → audit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import polars as pl
import pytest
from realexports import CDNOW, build_eu_export
from release_helpers import release_context

from segments.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "cdnow"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CDNOW.exists(), reason=f"{CDNOW} not found"),
]


def _months(first: dt.date, last: dt.date) -> list[dt.date]:
    out, m = [], first
    while m <= last:
        out.append(m)
        m = (m + dt.timedelta(days=32)).replace(day=1)
    return out


def _run(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


def _story(
    tmp: Path,
    export: Path,
    mapping: Path,
    *,
    as_of: str,
    release_day: str,
    months: list[dt.date],
    kanon_columns: str,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, str]:
    """The commands of the README's "Bring your own data", in order; returns their output."""
    ws, key, ledger = tmp / "ws", tmp / "steward.key", tmp / "ledger.sqlite"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)  # the steward's alone (a readable key file is refused)
    w = ("-w", str(ws))
    pol = ("--policy", str(EXAMPLES / "policy.toml"))
    out: dict[str, str] = {}
    _run("ingest", *w, str(export), "--mapping", str(mapping))
    out["ingest"] = capsys.readouterr().out
    for purpose in ("segmentation", "statistics", "microdata"):
        _run("prepare", *w, *pol, "--purpose", purpose, "--as-of", as_of, "--key-file", str(key))
    _run("segment", *w, *pol, "--k-range", "3-5", "--selection-sample", "5000")
    out["segment"] = capsys.readouterr().out
    release = ("release", *w, *pol, "--ledger", str(ledger), "--as-of", release_day)
    release += ("--purpose", "statistics", "--recipient", "purchasing")
    # the example controller's first release creates its ledger at this path, explicitly
    _run(*release, "--init-ledger", "--spec", "spend_by_segment", "--segments", "fitted",
         "--epsilon", "0.2")  # fmt: skip
    _run(*release, "--spec", "category_mix", "--segments", "category_rule", "--epsilon", "0.2")
    for month in months:  # each closed month once, as the controller would as months close
        _run(*release, "--spec", "monthly_category", "--month", str(month), "--epsilon", "0.1")
    capsys.readouterr()
    _run(
        "kanon", *w, *pol, "--ledger", str(ledger), "--as-of", release_day,
        "--purpose", "microdata", "--recipient", "purchasing", "--k", "10",
        "--segments", "category_rule", "--columns", kanon_columns, "--seed", "7",
    )  # fmt: skip
    out["kanon"] = capsys.readouterr().out
    _run("forecast", *w, "--horizon", "3")
    out["forecast"] = capsys.readouterr().out
    code = main(
        ["audit", *w, *pol, "--ledger", str(ledger), "--key-file", str(key), "--dp-trials", "100"]
    )
    out["audit"] = capsys.readouterr().out
    # 0 clean, 3 when no check fails but not everything is verified (100 trials), never 1
    assert code in (0, 3) and (code == 3) == ("exit status 3" in out["audit"]), out["audit"]
    return out


def test_cdnow_raw_text_file_through_every_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _story(
        tmp_path,
        CDNOW,
        EXAMPLES / "mapping.toml",
        as_of="1998-06-30",
        release_day="1998-07-01",
        months=_months(dt.date(1997, 1, 1), dt.date(1998, 6, 1)),
        kanon_columns="signup_date,segment,spend_band",
        capsys=capsys,
    )
    # one channel and one category: constant features dropped with a note, not a crash
    assert "note: feature 'share_web' dropped" in out["segment"]
    assert "line_share_music" in out["segment"]
    # 18 released months: fewer than ETS needs, the seasonal model the history supports
    assert "forecast seasonal-naive" in out["forecast"]
    assert "fewer than the 24 seasonal ETS needs" in out["forecast"]
    assert ", 0 fail," in out["audit"]
    ws = tmp_path / "ws"
    archive = pl.read_parquet(ws / "releases" / "archive" / "monthly_category.parquet")
    assert set(archive["category"]) == {"music"}  # the declared taxonomy
    assert archive["month"].n_unique() == 18


def test_second_export_shape_through_every_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export, mapping, _ = build_eu_export(tmp_path / "export")
    out = _story(
        tmp_path,
        export,
        mapping,
        as_of="1998-06-30",
        release_day="1998-07-01",
        months=_months(dt.date(1997, 11, 1), dt.date(1998, 6, 1)),  # 8 months
        kanon_columns="country,signup_date,segment,spend_band",
        capsys=capsys,
    )
    assert "dropped" in out["ingest"] and "netted" in out["ingest"]
    # fewer than 13 months: non-seasonal, and the forecast says so
    assert "forecast ses" in out["forecast"] and "NON-SEASONAL" in out["forecast"]
    ws = tmp_path / "ws"
    archive = pl.read_parquet(ws / "releases" / "archive" / "monthly_category.parquet")
    assert set(archive["category"]) == {"cd", "vinyl"}
    kanon = next((ws / "releases").glob("kanon-*"))
    table = pl.read_parquet(kanon / "table.parquet")
    cert = json.loads((kanon / "certificate.json").read_text())
    # countries generalise through the public M49 hierarchy, not values of the data
    level = cert["levels"]["country"] if "levels" in cert else None
    assert level is None or level >= 0
    assert set(table["country"]) <= {"DE", "AT", "CH", "DK", "Western Europe",
                                     "Northern Europe", "*", "n/a"}  # fmt: skip
    assert ", 0 fail," in out["audit"]


def test_private_segments_on_a_declared_taxonomy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 gap (a): ``segment --private`` (DP k-means) keys its category features by the
    taxonomy the mapping declared (here cd, vinyl), not the built-in ten office categories
    (it was charged, then failed on the first order line), and a category outside the
    declared taxonomy is refused before anything is charged."""
    from segments.exceptions import PolicyError
    from segments.policy import Policy
    from segments.prepare.pseudonym import KEY_ENV_VAR
    from segments.privacy.kmeans import fit_private_segments
    from segments.privacy.ledger import Ledger

    export, mapping, _ = build_eu_export(tmp_path / "export")
    monkeypatch.setenv(KEY_ENV_VAR, os.urandom(32).hex())
    monkeypatch.setenv("SEGMENTS_LEDGER_DIR", str(tmp_path / "ledgers"))
    ws, pol = tmp_path / "ws", ("--policy", str(EXAMPLES / "policy.toml"))
    _run("ingest", "-w", str(ws), str(export), "--mapping", str(mapping))
    _run("prepare", "-w", str(ws), *pol, "--purpose", "segmentation", "--as-of", "1998-06-30")
    capsys.readouterr()
    _run("segment", "-w", str(ws), *pol, "--private", "--as-of", "1998-07-01", "--seed", "3")
    out = capsys.readouterr().out
    assert "charged to the ledger" in out and "buyers" in out
    centroids = pl.read_parquet(ws / "segments" / "private" / "centroids.parquet")
    shares = sorted(c for c in centroids.columns if c.startswith(("share_", "line_share_")))
    assert [c for c in shares if "cd" in c or "vinyl" in c] == [
        "line_share_cd", "line_share_vinyl", "share_cd", "share_vinyl"
    ]  # fmt: skip
    assert not any(c.endswith("_paper") for c in centroids.columns)
    card = json.loads((ws / "segments" / "private" / "card.json").read_text(encoding="utf-8"))
    assert card["contribution_bounds"]["feature_bounds"]["share_vinyl"] == [0.0, 1.0]
    assert "share_vinyl" in card["spec"]["features"]  # recorded in the ledger entry too

    from segments.workspace import parquet_files

    # the prepared lines are month partitions: every partition's category becomes "jazz"
    for part in parquet_files(ws / "prepared" / "segmentation" / "lines.parquet"):
        lines = pl.read_parquet(part)
        lines.with_columns(category=pl.lit("jazz")).write_parquet(part)
    # signed as if prepare wrote it (the in-process trust limit), so the taxonomy check is
    # what refuses it; unsigned, the verified read refuses it first (test_verified_reads)
    from prepared_frames import sign_prepared

    from segments.provenance import signed_record
    from segments.workspace import Workspace

    record = signed_record(ws, "segmentation")
    sign_prepared(
        Workspace(ws), "segmentation", dt.date.fromisoformat(record["as_of"]), record["key_id"]
    )
    policy = Policy.load(EXAMPLES / "policy.toml")
    ledger = Ledger.for_policy(policy)
    before = len(ledger.entries())
    with pytest.raises(PolicyError, match="outside the declared taxonomy.*nothing was charged"):
        fit_private_segments(
            release_context(ledger, ws, policy, purpose="segmentation", recipient="analytics")
        )
    assert len(ledger.entries()) == before
