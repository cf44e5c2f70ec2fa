"""The Spark engine (segments.engine.spark) gives the polars engine's frames, on local[2].

One Spark session serves every test here (the ``spark`` fixture in conftest.py); under CI or as
root a missing Java fails the run instead of skipping these tests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from segments.engine.base import month_partition
from segments.engine.inmemory import PolarsEngine
from segments.engine.spark import SparkEngine, check_master, spark_conf
from segments.exceptions import PolicyError, SchemaError
from segments.prepare import prepare
from segments.schema import CHANNELS, PRODUCT_CATEGORIES
from segments.synth import DEFAULT_DATASET, copy_default_dataset
from segments.workspace import Workspace

pytestmark = pytest.mark.spark

PURPOSE = "statistics"
YEAR = (dt.date(2025, 11, 1), dt.date(2026, 11, 1))
QUARTER = (dt.date(2026, 7, 1), dt.date(2026, 10, 1))


@pytest.fixture(scope="module")
def default_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The committed default dataset (5,000 customers, 36 months), prepared for statistics."""
    ws = Workspace(tmp_path_factory.mktemp("spark-default"))
    copy_default_dataset(ws)
    prepare(ws, "alloffice", PURPOSE, DEFAULT_DATASET.as_of)
    return ws


@pytest.fixture(scope="module")
def lines(default_ws: Workspace) -> Path:
    return default_ws.prepared_dir(PURPOSE) / "lines.parquet"


@pytest.fixture(scope="module")
def partitioned(lines: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same lines as a folder of month partitions (``month=YYYY-MM/part-0.parquet``)."""
    root = tmp_path_factory.mktemp("partitioned")
    frame = pl.read_parquet(lines).with_columns(pl.col("order_date").dt.truncate("1mo").alias("_m"))
    for (month,), part in frame.group_by("_m"):
        folder = root / month_partition(month)  # type: ignore[arg-type]
        folder.mkdir()
        part.drop("_m").write_parquet(folder / "part-0.parquet")
    return root


@pytest.fixture(scope="module")
def engine(spark: object) -> SparkEngine:
    return SparkEngine("local[2]", session=spark)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("window", "by_month"),
    [(None, False), (YEAR, True), (QUARTER, False)],
    ids=["all", "year-monthly", "quarter"],
)
def test_person_cells_equal_polars_on_the_default_data(
    engine: SparkEngine, lines: Path, window, by_month: bool, tmp_path: Path
) -> None:
    expected = PolarsEngine().person_cells(
        lines, window, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
    )
    got = engine.person_cells(
        lines, window, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
    )
    assert expected.height > 1000
    assert got.schema == expected.schema
    assert got.equals(expected)  # same rows, same order, exact integers


def test_person_orders_equal_polars(engine: SparkEngine, lines: Path, tmp_path: Path) -> None:
    for window in (None, YEAR):
        expected = PolarsEngine().person_orders(lines, window, scratch=tmp_path)
        got = engine.person_orders(lines, window, scratch=tmp_path)
        assert got.equals(expected) and got["orders"].sum() > 0


@pytest.mark.parametrize("window", [None, YEAR], ids=["all", "year"])
def test_person_feature_sums_equal_polars(
    engine: SparkEngine, lines: Path, window, tmp_path: Path
) -> None:
    expected = PolarsEngine().person_feature_sums(
        lines, window, PRODUCT_CATEGORIES, CHANNELS, scratch=tmp_path
    )
    got = engine.person_feature_sums(lines, window, PRODUCT_CATEGORIES, CHANNELS, scratch=tmp_path)
    assert expected.height > 1000 and expected["ore_q4"].sum() > 0
    assert got.schema == expected.schema
    assert got.equals(expected)


def test_feature_sums_refuse_a_channel_outside_the_public_list(
    engine: SparkEngine, lines: Path, tmp_path: Path
) -> None:
    path = tmp_path / "lines.parquet"
    frame = pl.read_parquet(lines).head(500)
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 7)
        .then(pl.lit("fax"))
        .otherwise("channel")
        .alias("channel")
    ).write_parquet(path)
    with pytest.raises(SchemaError, match=r"column 'channel'.*'fax'"):
        engine.person_feature_sums(path, None, PRODUCT_CATEGORIES, CHANNELS, scratch=tmp_path)
    frame.with_columns(pl.lit(None, pl.Utf8).alias("category")).write_parquet(path)
    with pytest.raises(SchemaError, match=r"column 'category'.*'None'"):
        engine.person_feature_sums(path, None, PRODUCT_CATEGORIES, CHANNELS, scratch=tmp_path)


def test_partitioned_lines_read_only_the_window(
    engine: SparkEngine, lines: Path, partitioned: Path, tmp_path: Path
) -> None:
    whole = engine.person_cells(lines, QUARTER, PRODUCT_CATEGORIES, by_month=True, scratch=tmp_path)
    parts = engine.person_cells(
        partitioned, QUARTER, PRODUCT_CATEGORIES, by_month=True, scratch=tmp_path
    )
    assert parts.equals(whole)
    assert sorted(parts["month"].unique()) == ["2026-07", "2026-08", "2026-09"]
    # a damaged partition outside the window is never opened
    oldest = sorted(partitioned.iterdir())[0]
    assert oldest.name < "month=2026-07"
    (oldest / "part-0.parquet").write_bytes(b"not parquet")
    again = engine.person_orders(partitioned, QUARTER, scratch=tmp_path)
    assert again.equals(PolarsEngine().person_orders(lines, QUARTER, scratch=tmp_path))


def test_a_window_without_partitions_is_empty(
    engine: SparkEngine, partitioned: Path, tmp_path: Path
) -> None:
    window = (dt.date(2030, 1, 1), dt.date(2030, 2, 1))
    cells = engine.person_cells(partitioned, window, PRODUCT_CATEGORIES, scratch=tmp_path)
    assert cells.height == 0 and "sek" in cells.columns
    assert engine.person_orders(partitioned, window, scratch=tmp_path).height == 0


def test_rounding_half_away_from_zero_and_an_unknown_category(
    engine: SparkEngine, tmp_path: Path
) -> None:
    """Amounts whose öre sums sit on .5 SEK round like the polars engine's; a category outside
    the public list is refused (no engine invents a key)."""
    day = dt.date(2026, 5, 4)
    rows = {
        "person_id": ["a" * 64, "a" * 64, "b" * 64, "c" * 64],
        "order_id": ["1" * 64, "2" * 64, "3" * 64, "4" * 64],
        "order_date": [day] * 4,
        "channel": ["web"] * 4,
        "product_id": [1, 2, 3, 4],
        "category": ["paper", "paper", "paper", "writing"],
        "quantity": [1, 2, 3, 1],
        "amount_sek": [0.25, 0.25, 2.5, 10.49],
    }
    path = tmp_path / "lines.parquet"
    pl.DataFrame(rows).write_parquet(path)
    got = engine.person_cells(path, None, PRODUCT_CATEGORIES, scratch=tmp_path)
    assert got.equals(PolarsEngine().person_cells(path, None, PRODUCT_CATEGORIES, scratch=tmp_path))
    assert got["sek"].to_list() == [1, 3, 10]
    pl.DataFrame({**rows, "category": ["paper", "paper", "paper", "Crypto"]}).write_parquet(path)
    with pytest.raises(SchemaError, match=r"column 'category'.*'Crypto'"):
        engine.person_cells(path, None, PRODUCT_CATEGORIES, scratch=tmp_path)


def test_master_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENTS_SPARK_MASTER", raising=False)
    assert check_master() == "local[2]"
    monkeypatch.setenv("SEGMENTS_SPARK_MASTER", "spark://head:7077")
    assert check_master() == "spark://head:7077"
    assert check_master("local[*]") == "local[*]"
    with pytest.raises(PolicyError, match=r"Spark master 'http://head' \(--master"):
        check_master("http://head")
    cluster = spark_conf("spark://head:7077", Path("/w/.private/s"))
    assert "spark.sql.shuffle.partitions" not in cluster  # the cluster's own default
    assert cluster["spark.local.dir"] == "/w/.private/s"


@pytest.mark.slow
def test_an_engine_started_session_spills_only_inside_scratch(tmp_path: Path) -> None:
    """In a fresh process (no session yet) the engine starts Spark itself: its shuffle files
    land in the job's scratch folder and nowhere else, and Spark's log stays quiet."""
    lines = tmp_path / "lines.parquet"
    pl.DataFrame(
        {
            "person_id": [f"{i % 50:064x}" for i in range(2000)],
            "order_id": [f"{i:064x}" for i in range(2000)],
            "order_date": [dt.date(2026, 1 + i % 12, 1) for i in range(2000)],
            "category": [PRODUCT_CATEGORIES[i % 10] for i in range(2000)],
            "quantity": [1 + i % 3 for i in range(2000)],
            "amount_sek": [1.5 * (i % 7) for i in range(2000)],
        }
    ).write_parquet(lines)
    scratch = tmp_path / "ws" / ".private" / "job"
    scratch.mkdir(parents=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    script = textwrap.dedent(
        f"""
        import json, pathlib, shutil
        from segments.engine.spark import SparkEngine
        from segments.schema import PRODUCT_CATEGORIES
        first, second = pathlib.Path({str(scratch)!r}, "a"), pathlib.Path({str(scratch)!r}, "b")
        first.mkdir(); second.mkdir()
        rows = SparkEngine("local[2]", driver_memory="512m").person_cells(
            {str(lines)!r}, None, PRODUCT_CATEGORIES, by_month=True, scratch=first)
        spilled = sorted(p.name for p in (first / "spark-local").iterdir())
        shutil.rmtree(first)  # the caller removes a job's scratch; the next job has its own
        engine = SparkEngine("local[2]", driver_memory="512m")
        again = engine.person_cells({str(lines)!r}, None, PRODUCT_CATEGORIES, by_month=True,
                                    scratch=second)
        local = engine.session(second).conf.get("spark.local.dir")
        print(json.dumps({{"rows": rows.height, "again": again.equals(rows), "local": local,
                          "spilled": spilled}}))
        engine.stop()
        """
    )
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = PolarsEngine().person_cells(
        lines, None, PRODUCT_CATEGORIES, by_month=True, scratch=cwd
    )
    assert result["rows"] == expected.height == 50 * 6  # one category, six months a person
    assert result["again"] and result["local"] == str(scratch / "b" / "spark-local")
    assert any(name.startswith("blockmgr-") for name in result["spilled"])
    assert not list(cwd.iterdir())  # no spark-warehouse, no metastore, no derby.log
    for noise in (" WARN ", " INFO ", "FutureWarning", "log4j profile"):
        assert noise not in done.stderr


@pytest.mark.slow
def test_feature_sums_as_the_first_spark_job_of_a_fresh_process(tmp_path: Path) -> None:
    """r21 LOW 5: person_feature_sums built Spark columns before starting the session, so as
    the first Spark job of a process it died on an assertion; in a fresh process it now
    starts Spark itself and returns the polars engine's sums."""
    lines = tmp_path / "lines.parquet"
    pl.DataFrame(
        {
            "person_id": [f"{i % 20:064x}" for i in range(400)],
            "order_id": [f"{i // 2:064x}" for i in range(400)],
            "order_date": [dt.date(2026, 1 + (i // 2) % 12, 1) for i in range(400)],
            "channel": [CHANNELS[(i // 2) % len(CHANNELS)] for i in range(400)],
            "category": [PRODUCT_CATEGORIES[i % 10] for i in range(400)],
            "quantity": [1 + i % 3 for i in range(400)],
            "amount_sek": [1.25 * (i % 7) for i in range(400)],
        }
    ).write_parquet(lines)
    scratch = tmp_path / "job"
    scratch.mkdir()
    got = tmp_path / "sums.parquet"
    script = textwrap.dedent(
        f"""
        from segments.engine.spark import SparkEngine
        from segments.schema import CHANNELS, PRODUCT_CATEGORIES
        engine = SparkEngine("local[2]", driver_memory="512m")
        sums = engine.person_feature_sums({str(lines)!r}, None, PRODUCT_CATEGORIES, CHANNELS,
                                          scratch=__import__("pathlib").Path({str(scratch)!r}))
        sums.write_parquet({str(got)!r})
        engine.stop()
        """
    )
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = PolarsEngine().person_feature_sums(
        lines, None, PRODUCT_CATEGORIES, CHANNELS, scratch=scratch
    )
    assert expected.height == 20
    assert pl.read_parquet(got).equals(expected)


# --- releases: the same per-person frames, keys and charges ---------------------------------
@pytest.mark.parametrize("cell_months", [False, True], ids=["cells", "monthly"])
def test_release_frames_equal_polars(
    engine: SparkEngine, default_ws: Workspace, lines: Path, cell_months: bool, tmp_path: Path
) -> None:
    """The per-person and per-cell frames a release measures (after the policy's truncation
    on the driver) are identical whichever engine aggregated the lines."""
    from segments.policy import Policy
    from segments.privacy.releases import build_shared_frames
    from segments.privacy.specs import PrivacyParams, SegmentSource

    params = PrivacyParams.from_policy(Policy.load("alloffice"), PURPOSE)
    customers = default_ws.prepared_dir(PURPOSE) / "customers.parquet"
    written = {}
    for backend in (PolarsEngine(), engine):
        folder = tmp_path / backend.name
        folder.mkdir()
        paths = build_shared_frames(
            pl.scan_parquet(customers),
            lines,
            SegmentSource.category_rule(),
            params,
            folder,
            YEAR,
            person_values=("orders",),
            cell_months=cell_months,
            engine=backend,
        )
        written[backend.name] = {k: pl.read_parquet(v) for k, v in paths.items()}
    assert set(written["spark"]) == set(written["polars"]) == {"person", "cells"}
    for name, frame in written["polars"].items():
        assert frame.height > 1000
        assert written["spark"][name].equals(frame), name


def _release(ws: Workspace, engine_args: list[str], capsys) -> dict:
    from segments.cli.main import main

    args = ["release", "-w", str(ws.root), "--policy", "alloffice", "--spec",
            "segment_overview", "--purpose", PURPOSE, "--recipient", "purchasing",
            "--as-of", "2026-10-31", "--demo-ledger"]  # fmt: skip
    assert main([*engine_args, *args]) == 0, capsys.readouterr().err
    capsys.readouterr()
    (card,) = ws.releases.glob("segment_overview-*/card.json")
    return {
        "card": json.loads(card.read_text()),
        "tables": {p.name: pl.read_parquet(p) for p in card.parent.glob("*.parquet")},
    }


@pytest.mark.slow
def test_cli_release_with_spark_matches_polars(
    spark: object, default_ws: Workspace, tmp_path: Path, capsys, monkeypatch
) -> None:
    """`segments --engine spark --master local[2] release …` publishes the same tables (keys
    equal, values equal up to noise) with the same charge and card as the polars engine."""
    import shutil

    monkeypatch.delenv("SEGMENTS_ENGINE", raising=False)
    calls: list[str] = []
    # the cells' Spark job itself (a release takes them keyed, through
    # person_key_cell_batches; person_cells and it both reach _collect_cells on this engine)
    spark_cells = SparkEngine._collect_cells

    def spy(self, *args, **kwargs):
        calls.append(self.master)
        return spark_cells(self, *args, **kwargs)

    monkeypatch.setattr(SparkEngine, "_collect_cells", spy)
    results = {}
    for name, engine_args in {
        "polars": ["--engine", "polars"],
        "spark": ["--engine", "spark", "--master", "local[2]"],
    }.items():
        ws = Workspace(tmp_path / name)
        shutil.copytree(default_ws.root, ws.root)
        results[name] = _release(ws, engine_args, capsys)
        assert len(calls) == (name == "spark")  # the spark run's cells came from Spark
        assert not list(ws.root.rglob("spark-local"))  # the job's scratch is gone
    polars, spark = results["polars"], results["spark"]
    assert sorted(spark["tables"]) == sorted(polars["tables"])
    for name, table in polars["tables"].items():
        other = spark["tables"][name]
        assert other.columns == table.columns and other.height == table.height
        keys = [c for c in ("county_code", "segment") if c in table.columns]
        assert keys and other.select(keys).equals(table.select(keys)), name
        for scale in (c for c in table.columns if c.endswith("_scale")):
            value = scale.removesuffix("_scale")
            # two Laplace draws differ by more than 20 scales with probability ~1e-8
            gap = (other[value] - table[value]).abs() - 20 * table[scale] - 1
            assert (gap <= 0).all() and other[scale].equals(table[scale]), (name, value)
    # the card differs only in what identifies this release and its workspace
    ignore = {"release_id", "ledger_head_hash", "ledger_anchor", "files", "reserved_at"}
    cards = [{k: v for k, v in r["card"].items() if k not in ignore} for r in (polars, spark)]
    for card in cards:
        assert card["spec"].pop("source")["lines"].endswith("lines.parquet")
    assert cards[0] == cards[1]
    assert "--engine spark" not in json.dumps(spark["card"])  # no setting decides a fact


def test_cli_master_needs_the_spark_engine_and_a_master_url(tmp_path: Path, capsys) -> None:
    from segments.cli.main import main

    args = ["release", "-w", str(tmp_path), "--policy", "alloffice", "--spec",
            "segment_overview", "--purpose", PURPOSE, "--recipient", "purchasing"]  # fmt: skip
    assert main(["--engine", "polars", "--master", "local[2]", *args]) == 2
    err = capsys.readouterr().err
    assert "--master local[2] applies to the Spark engine only; add --engine spark" in err
    assert len(err.strip().splitlines()) == 1
    assert "SEGMENTS_SPARK_MASTER" not in os.environ
    with pytest.raises(PolicyError, match="is not a master URL"):
        SparkEngine("http://head:7077")


def test_segmentation_features_from_spark_equal_the_in_memory_path(
    spark: object, lines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """customer_features on the lines' path with ``SEGMENTS_ENGINE=spark``: Spark returns the
    exact per-person sums, the driver makes the same features (floats summed in memory on the
    other path, so equal to ~1e-12); no spill is left beside the frames."""
    from polars.testing import assert_frame_equal

    # the polars engine of the public (pandas) customer_features, compared exactly
    from segments.features import _customer_features_pl as customer_features

    customers = pl.read_parquet(lines.parent / "customers.parquet")
    expected = customer_features(pl.scan_parquet(lines), customers, as_of=DEFAULT_DATASET.as_of)
    monkeypatch.setenv("SEGMENTS_ENGINE", "spark")
    got = customer_features(lines, customers, as_of=DEFAULT_DATASET.as_of)
    assert expected.height > 1000
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    assert not [p for p in lines.parent.iterdir() if p.name.startswith(".scratch")]


def test_a_skipped_spark_test_fails_the_run_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conftest hooks: a Spark test skipped under CI (or as root) turns the run's status
    into a failure; elsewhere a skip stays a skip."""
    import types

    import conftest

    report = types.SimpleNamespace(skipped=True, keywords={"spark": 1}, nodeid="t::spark_one")
    other = types.SimpleNamespace(skipped=True, keywords={}, nodeid="t::other")
    monkeypatch.setattr(conftest, "_SKIPPED_SPARK", [])
    conftest.pytest_runtest_logreport(other)  # type: ignore[arg-type]
    assert conftest._SKIPPED_SPARK == []
    conftest.pytest_runtest_logreport(report)  # type: ignore[arg-type]
    for ci, root, failed in [("true", 1000, True), ("", 0, True), ("", 1000, False)]:
        monkeypatch.setenv("CI", ci)
        monkeypatch.setattr(os, "geteuid", lambda root=root: root)
        session = types.SimpleNamespace(exitstatus=pytest.ExitCode.OK)
        conftest.pytest_sessionfinish(session, 0)  # type: ignore[arg-type]
        assert (session.exitstatus == pytest.ExitCode.TESTS_FAILED) is failed


@pytest.mark.parametrize(("window", "by_month"), [(None, False), (YEAR, True)], ids=["all", "year"])
def test_key_cells_are_grouped_on_the_key_by_spark(
    engine: SparkEngine, lines: Path, window, by_month: bool, tmp_path: Path
) -> None:
    """A release's cells keyed on the pseudonym's digits by Spark itself: the polars
    engine's keyed cells, row for row (issue 21)."""
    order = ["pid", *(["month"] if by_month else []), "category"]
    polars_engine = PolarsEngine()
    expected = pl.concat(
        polars_engine.person_key_cell_batches(
            lines, window, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
        )
    ).sort(order)
    got = pl.concat(
        engine.person_key_cell_batches(
            lines, window, PRODUCT_CATEGORIES, by_month=by_month, scratch=tmp_path
        )
    ).sort(order)
    assert expected.height > 1000
    assert got.equals(expected)


def test_two_pseudonyms_of_one_key_in_one_cell_are_refused_with_spark(
    engine: SparkEngine, tmp_path: Path
) -> None:
    """Attack: two people whose pseudonyms share the key's digits, in one cell. Spark keeps
    a row per pseudonym; the release refuses the key (never one row for two people)."""
    from segments.policy import Policy
    from segments.privacy.releases import build_shared_frames
    from segments.privacy.specs import PrivacyParams, SegmentSource

    tail = "abcdef01234567899"
    people = ["1" * 15 + tail, "2" * 15 + tail]
    path = tmp_path / "lines.parquet"
    pl.DataFrame(
        {
            "person_id": people,
            "order_id": ["o1", "o2"],
            "order_date": [dt.date(2026, 1, 5)] * 2,
            "category": ["paper"] * 2,
            "amount_sek": [10.0, 20.0],
            "quantity": pl.Series([1, 1], dtype=pl.Int32),
        }
    ).write_parquet(path)
    rows = pl.concat(
        engine.person_key_cell_batches(path, None, PRODUCT_CATEGORIES, scratch=tmp_path)
    )
    assert rows.height == 2 and rows["pid"].n_unique() == 1 and rows["pid_check"].n_unique() == 2
    customers = pl.LazyFrame(
        {"person_id": people, "county_code": ["01", "01"], "customer_type": ["private"] * 2}
    )
    params = PrivacyParams.from_policy(Policy.load("alloffice"), PURPOSE)
    with pytest.raises(SchemaError, match="one person per release key"):
        build_shared_frames(
            customers, path, SegmentSource.category_rule(), params, tmp_path, engine=engine
        )
