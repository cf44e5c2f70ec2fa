"""Attacks on k-anonymous releases find real risk in weak tables and little in proper ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from kanon_files import write_release

from segments.anonymity import PrivacyModel, anonymise
from segments.anonymity.hierarchies import birth_year_hierarchy, postcode_hierarchy
from segments.audit.attacks import (
    attack_dp_differencing,
    attack_kanon_releases,
    attacker_knowledge,
    differencing_attack,
    homogeneity_attack,
    load_kanon_releases,
)
from segments.exceptions import WorkspaceError
from segments.geography import postcodes_pl
from segments.workspace import Workspace, sha256_file, write_json


def _raw_private(n: int, seed: int = 0) -> pl.DataFrame:
    """Raw-shaped private customers with real postcodes (only the columns attacks read)."""
    rng = np.random.default_rng(seed)
    pc = postcodes_pl().head(4)
    pick = rng.integers(0, pc.height, n)
    return pl.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "customer_type": ["private"] * n,
            "is_sole_trader": [False] * n,
            "personnummer": [f"19{800101 + i:06d}{i % 10000:04d}" for i in range(n)],
            "org_number": [None] * n,
            "industry": [None] * n,
            "size_band": [None] * n,
            "postcode": pc["postcode"].gather(pick),
            "municipality_code": pc["municipality_code"].gather(pick),
            "county_code": pc["county_code"].gather(pick),
            "birth_year": pl.Series(rng.integers(1970, 1975, n), dtype=pl.Int16),
            "gender": rng.choice(["F", "M"], n),
            "spend_band": rng.choice(["0-999", "1000-4999"], n),
        },
        schema_overrides={"org_number": pl.Utf8, "industry": pl.Utf8, "size_band": pl.Utf8},
    )


def _write(ws: Workspace, release_id: str, table: pl.DataFrame, cert: dict) -> None:
    folder = ws.release_dir(release_id)
    folder.mkdir(parents=True)
    table.write_parquet(folder / "table.parquet")
    cert = {**cert, "release_id": release_id, "population": "customers"}
    cert["files"] = {"table.parquet": sha256_file(folder / "table.parquet")}
    write_json(folder / "certificate.json", cert)


def _certificate(k: int, levels: dict, sensitive: str | None, rows: int) -> dict:
    model = PrivacyModel(k=k, l=2 if sensitive else None, sensitive=sensitive)
    return {
        "privacy_model": model.to_dict(),
        "quasi_identifiers": list(levels),
        "sensitive": sensitive,
        "levels": levels,
        "released_rows": rows,
    }


QIS = ("customer_type", "birth_year", "gender", "postcode")
TOP_LEVELS = {"customer_type": 2, "birth_year": 4, "gender": 1, "postcode": 5}


def _released_view(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(pl.col(*QIS, "spend_band").cast(pl.Utf8))


def test_weak_table_is_exposed(tmp_path: Path) -> None:
    ws = Workspace(tmp_path).create()
    raw = _raw_private(60)
    table = _released_view(raw)
    # certified as 5-anonymous and 2-diverse, but published at level 0: many rows are unique
    _write(ws, "weak", table, _certificate(5, dict.fromkeys(QIS, 0), "spend_band", table.height))
    (result,) = attack_kanon_releases(ws, raw)
    assert not result["recheck"]["ok"]
    assert result["recheck"]["k_measured"] == 1
    assert result["linkage"]["highest"] == 1.0
    assert result["linkage"]["records_at_risk"] > 10
    assert result["linkage"]["records_above_threshold"] >= result["linkage"]["unique_matches"]
    assert result["homogeneity"]["homogeneous_records"] > 0
    assert result["verdict"].startswith("AT RISK")
    assert result["differencing"] == []
    assert result["differencing_note"].startswith("no other")
    # a unique match gives away the spend band too
    disclosed = result["linkage"]["attribute_disclosure"]["spend_band"]["targets"]
    assert disclosed >= result["linkage"]["unique_matches"] > 0
    json.dumps(result)  # JSON-able


def test_proper_release_has_low_risk(tmp_path: Path) -> None:
    ws = Workspace(tmp_path).create()
    raw = _raw_private(400, seed=1)
    view = _released_view(raw)
    from segments.anonymity import customer_hierarchies

    model = PrivacyModel(k=5, suppression_limit=0.05, l=2, sensitive="spend_band")
    anon = anonymise(
        view, customer_hierarchies(view, "spend_band"), model, seed=np.random.default_rng(0)
    )
    write_release(
        ws.release_dir("proper"), anon, extra={"release_id": "proper", "population": "customers"}
    )
    (result,) = attack_kanon_releases(ws, raw)
    assert result["recheck"]["ok"], result["recheck"]
    assert result["recheck"]["k_measured"] >= 5
    assert 0 < result["linkage"]["highest"] <= 1 / 5
    assert result["linkage"]["records_at_risk"] == 0
    assert result["linkage"]["matched"] >= 0.9 * 400
    assert result["verdict"].startswith("low risk")


def test_tampered_file_fails_the_checksum(tmp_path: Path) -> None:
    ws = Workspace(tmp_path).create()
    raw = _raw_private(30)
    table = _released_view(raw).with_columns(pl.lit("*").alias(c) for c in QIS)
    _write(ws, "t", table, _certificate(5, TOP_LEVELS, None, table.height))
    table.head(5).write_parquet(ws.release_dir("t") / "table.parquet")
    assert load_kanon_releases(ws)[0].release_id == "t"
    (result,) = attack_kanon_releases(ws, raw)
    assert not result["recheck"]["sha256_matches"]


def test_businesses_are_linked_through_the_register(tmp_path: Path) -> None:
    raw = _raw_private(4).with_columns(
        pl.lit("business").alias("customer_type"),
        pl.lit("G").alias("industry"),
        pl.Series("size_band", ["1-9", "1-9", "10-49", "250+"]),
        pl.lit(None, pl.Int16).alias("birth_year"),
        pl.lit(None, pl.Utf8).alias("gender"),
        pl.lit(None, pl.Utf8).alias("personnummer"),
    )
    knowledge = attacker_knowledge(raw)
    assert "personnummer" not in knowledge.columns
    assert set(knowledge["birth_year"]) == {"n/a"}
    ws = Workspace(tmp_path).create()
    table = raw.select(pl.col("customer_type", "industry", "size_band").cast(pl.Utf8))
    counties = postcode_hierarchy().generalise(raw["postcode"], 3)
    table = table.with_columns(pl.Series("postcode", counties))
    levels = {"customer_type": 0, "industry": 0, "size_band": 0, "postcode": 3}
    _write(ws, "b", table, _certificate(2, levels, None, table.height))
    (result,) = attack_kanon_releases(ws, raw)
    # the two big companies are alone in their size band: the register singles them out
    assert result["linkage"]["unique_matches"] >= 2
    assert result["linkage"]["highest"] == 1.0


def test_homogeneity_without_sensitive_column_is_not_assessed() -> None:
    out = homogeneity_attack(pl.DataFrame({"a": ["x"]}), ["a"], None)
    assert out["assessed"] is False


def _two_releases(ws: Workspace) -> pl.DataFrame:
    years = [1980] * 10 + [1981] * 10
    codes = ["11120"] * 9 + ["11121"] + ["11121"] * 10
    people = pl.DataFrame({"birth_year": years, "postcode": codes}).cast(pl.Utf8)
    h = {"birth_year": birth_year_hierarchy(), "postcode": postcode_hierarchy(set(codes))}
    model = PrivacyModel(k=5)
    for name, levels in (
        ("a", {"birth_year": 0, "postcode": 5}),
        ("b", {"birth_year": 4, "postcode": 0}),
    ):
        anon = anonymise(people, h, model, seed=np.random.default_rng(0), levels=levels)
        write_release(
            ws.release_dir(name), anon, extra={"release_id": name, "population": "customers"}
        )
    return people


def test_differencing_two_releases_singles_out(tmp_path: Path) -> None:
    ws = Workspace(tmp_path).create()
    people = _two_releases(ws)
    a, b = load_kanon_releases(ws)
    h = {"birth_year": birth_year_hierarchy(), "postcode": postcode_hierarchy(["11120", "11121"])}
    out = differencing_attack(people, a, b, h)
    assert out["people_in_both"] == 20
    assert out["records_below_k"] == 1
    assert out["records_singled_out"] == 1
    assert out["smallest_class"] == 1
    same = differencing_attack(people, a, a, h)
    assert same["records_below_k"] == 0


def test_differencing_needs_every_released_column(tmp_path: Path) -> None:
    ws = Workspace(tmp_path).create()
    people = _two_releases(ws)
    a, b = load_kanon_releases(ws)
    with pytest.raises(WorkspaceError, match=r"lacks column\(s\) \['postcode'\]"):
        differencing_attack(people.drop("postcode"), a, b)


def test_incomplete_release_is_refused(tmp_path: Path) -> None:
    ws = Workspace(tmp_path).create()
    folder = ws.release_dir("x")
    folder.mkdir(parents=True)
    write_json(folder / "certificate.json", {"levels": {}})
    with pytest.raises(WorkspaceError, match="has no table.parquet beside it"):
        load_kanon_releases(ws)
    pl.DataFrame({"a": ["*"]}).write_parquet(folder / "table.parquet")
    with pytest.raises(WorkspaceError, match="lacks 'quasi_identifiers' or 'levels'"):
        load_kanon_releases(ws)


def test_dp_differencing_reports_noise_not_a_break(tmp_path: Path) -> None:
    ws = Workspace(tmp_path).create()
    row = {
        "query": "q",
        "aggregate": "count",
        "distribution": "Integer Laplace",
        "scale": 2.0,
        "sensitivity_l1": 1.0,
    }
    for rid in ("r1", "r2"):
        folder = ws.release_dir(rid)
        folder.mkdir(parents=True)
        write_json(
            folder / "card.json",
            {"release_id": rid, "population": "customers", "aggregates": [row]},
        )
    (out,) = attack_dp_differencing(ws)
    assert out["difference_std"] == pytest.approx(4.0)  # sqrt(2·2² + 2·2²)
    assert out["effect_in_std"] == pytest.approx(0.25)


def test_workspace_differencing_from_prepared_frames(tmp_path: Path) -> None:
    import datetime as dt

    from segments.anonymity import customer_release_table
    from segments.features import category_rule_labels

    ws = Workspace(tmp_path).create()
    years = [1980] * 10 + [1981] * 10
    codes = ["11120"] * 9 + ["11121"] * 11
    n = len(years)
    ids = [f"{i:064x}" for i in range(n)]
    customers = pl.DataFrame(
        {
            "person_id": ids,
            "customer_type": ["private"] * n,
            "industry": [None] * n,
            "size_band": [None] * n,
            "postcode": codes,
            "birth_year": pl.Series(years, dtype=pl.Int16),
            "gender": ["F"] * n,
        },
        schema_overrides={"industry": pl.Utf8, "size_band": pl.Utf8},
    )
    lines = pl.DataFrame(
        {
            "person_id": ids,
            "order_id": ids,
            "order_date": [dt.date(2026, 1, 5)] * n,
            "category": ["paper"] * n,
            "quantity": [1] * n,
            "amount_sek": [100.0] * n,
        }
    )
    prepared = ws.prepared_dir("microdata")
    prepared.mkdir(parents=True)
    customers.write_parquet(prepared / "customers.parquet")
    lines.write_parquet(prepared / "lines.parquet")
    table = customer_release_table(
        customers, lines, category_rule_labels(lines), ["birth_year", "postcode"]
    )
    h = {"birth_year": birth_year_hierarchy(), "postcode": postcode_hierarchy()}
    extra = {"population": "customers", "purpose": "microdata", "segments": "category_rule"}
    for name, levels in (
        ("a", {"birth_year": 0, "postcode": 5}),
        ("b", {"birth_year": 4, "postcode": 0}),
    ):
        anon = anonymise(table, h, PrivacyModel(k=5), seed=np.random.default_rng(0), levels=levels)
        write_release(ws.release_dir(name), anon, extra={**extra, "release_id": name})
    raw = customers.drop("person_id").with_columns(
        pl.Series("customer_id", range(1, n + 1)),
        pl.lit(False).alias("is_sole_trader"),
        pl.lit(None, pl.Utf8).alias("personnummer"),
        pl.lit(None, pl.Utf8).alias("org_number"),
        pl.lit("0180").alias("municipality_code"),
        pl.lit("01").alias("county_code"),
    )
    results = attack_kanon_releases(ws, raw)
    assert [r["release_id"] for r in results] == ["a", "b"]
    for r in results:
        assert r["recheck"]["ok"]
        assert r["linkage"]["records_at_risk"] == 0  # each release alone is 5-anonymous
        (diff,) = r["differencing"]
        assert diff["people_in_both"] == n
        # joint classes: (1980, 11120) 9 people, (1980, 11121) 1, (1981, 11121) 10
        assert diff["records_below_k"] == diff["records_singled_out"] == 1
        assert r["verdict"].startswith("AT RISK: differencing")
        assert r["differencing_note"] == "joined with 1 other release(s)"
