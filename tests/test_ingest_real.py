"""segments ingest: real exports + a mapping file into W/raw (issue 16)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from realexports import CDNOW, COUNTRIES, SEK_PER_EUR, build_eu_export
from small_exports import MAPPING, write_export

from segments.cli.main import main
from segments.exceptions import SchemaError, WorkspaceError
from segments.ingest import IngestMapping, ingest, net_returns
from segments.workspace import sha256_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
needs_cdnow = pytest.mark.skipif(not CDNOW.exists(), reason=f"{CDNOW} not found")


@pytest.fixture(scope="module")
def eu(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pl.DataFrame]:
    if not CDNOW.exists():
        pytest.skip(f"{CDNOW} not found")
    return build_eu_export(tmp_path_factory.mktemp("eu"))


@pytest.fixture(scope="module")
def eu_ws(eu: tuple[Path, Path, pl.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("eu_ws")
    ingest(eu[0], eu[1], ws)
    return ws


def _manifest(ws: Path) -> dict:
    return json.loads((ws / "raw" / "manifest.json").read_text())


@needs_cdnow
def test_cdnow_raw_text_file_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "ingest",
            "-w",
            str(tmp_path),
            str(CDNOW),
            "--mapping",
            str(EXAMPLES / "cdnow" / "mapping.toml"),
        ]
    )
    assert code == 0
    m = _manifest(tmp_path)
    assert m["synthetic"] is False
    assert m["source"]["sha256"] == sha256_file(CDNOW)
    assert m["rows"] == {
        "read": 69_659,
        "order_lines": 69_659,
        "orders": m["rows"]["orders"],
        "customers": 23_570,
        "products": 1,
    }
    # dollar_value sums to 2,500,315.63 USD (shared data README); converted at the stated rate
    assert m["value_sek"] == pytest.approx(2_500_315.63 * 7.63, rel=1e-4)
    assert m["domains"]["categories"] == ["music"]
    for name, digest in m["files"].items():
        assert sha256_file(tmp_path / "raw" / name) == digest
    assert "synthetic: false" in capsys.readouterr().out


def test_semicolon_latin1_gzip_eur_decimal_comma(eu: tuple, eu_ws: Path) -> None:
    _, _, export = eu
    m = _manifest(eu_ws)
    assert m["rows"]["read"] == export.height
    assert m["currency"] == {
        "source": "EUR",
        "sek_per_unit": SEK_PER_EUR,
        "rate_source": "public rate stated by the controller (example)",
    }
    lines = pl.read_parquet(eu_ws / "raw" / "order_lines.parquet")
    kept_value = float((lines["quantity"] * lines["unit_price_sek"]).sum())
    assert kept_value == pytest.approx(m["value_sek"], rel=1e-6)
    # everything read is accounted for: kept + dropped + netted + clipped (value in EUR)
    signed = export.filter(pl.col("Kundennr") != "").filter(~pl.col("Artikel").is_in(["PORTO"]))
    buys = signed.filter(pl.col("Menge") > 0)
    gross = float((buys["Menge"] * buys["Einzelpreis"]).sum()) * SEK_PER_EUR
    netted = m["returns"]["value_netted_sek"]
    assert kept_value == pytest.approx(gross - netted, rel=1e-4)


def test_rows_without_customer_counted_per_row_in_rows_and_value(eu: tuple, eu_ws: Path) -> None:
    export = eu[2]
    missing = export.filter(pl.col("Kundennr") == "")
    d = _manifest(eu_ws)["dropped"]["no_customer"]
    assert d["rows"] == missing.height  # per row, not per order
    value = float((missing["Menge"].abs() * missing["Einzelpreis"]).sum())
    assert d["value_source"] == pytest.approx(value, rel=1e-6)
    assert d["value_sek"] == pytest.approx(value * SEK_PER_EUR, rel=1e-6)


def test_fee_codes_dropped_and_counted(eu: tuple, eu_ws: Path) -> None:
    export = eu[2].filter(pl.col("Kundennr") != "")
    fees = export.filter(pl.col("Artikel") == "PORTO")
    d = _manifest(eu_ws)["dropped"]["non_product_codes"]
    assert d["rows"] == fees.height > 0
    products = pl.read_parquet(eu_ws / "raw" / "products.parquet")
    assert "PORTO" not in products["sku"].to_list()
    assert set(products["category"]) == {"cd", "vinyl"}


def test_returns_and_cancellations_netted_not_refused(eu: tuple, eu_ws: Path) -> None:
    r = _manifest(eu_ws)["returns"]
    export = eu[2].filter(pl.col("Kundennr") != "")
    assert r["return_rows"] == export.filter(pl.col("Menge") < 0).height > 0
    assert r["value_netted_sek"] > 0
    # dropping returns instead of netting them would overstate spend
    lines = pl.read_parquet(eu_ws / "raw" / "order_lines.parquet")
    assert (lines["quantity"] > 0).all()


def test_net_returns_clips_at_zero_and_counts() -> None:
    d = dt.date(2020, 3, 3)
    lines = pl.DataFrame(
        {
            "customer": ["a", "a", "a", "b", "b"],
            "order_date": [d, d + dt.timedelta(days=1), d, d, dt.date(2020, 4, 1)],
            "product_code": ["x", "x", "x", "x", "x"],
            "quantity": [2, 3, 10, 1, 1],
            "value": [20.0, 30.0, 100.0, 5.0, 5.0],
            "is_return": [False, False, True, False, True],
        }
    )
    kept, s = net_returns(lines)
    # a's return (10) exceeds purchases (5): nothing left, 5 units clipped at zero
    assert kept["customer"].to_list() == ["b"]
    assert s["units_netted"] == 5 and s["value_netted"] == 50.0
    # b's April return has no April purchase: clipped, March purchase kept
    assert s["units_clipped"] == 5 + 1
    assert s["value_clipped"] == pytest.approx(50.0 + 5.0)


def test_net_returns_cancels_latest_purchase_first() -> None:
    d = dt.date(2020, 3, 3)
    lines = pl.DataFrame(
        {
            "customer": ["a", "a", "a"],
            "order_date": [d, d + dt.timedelta(days=5), d + dt.timedelta(days=6)],
            "product_code": ["x", "x", "x"],
            "quantity": [2, 2, 1],
            "value": [20.0, 40.0, 10.0],
            "is_return": [False, False, True],
        }
    )
    kept, s = net_returns(lines)
    assert kept["quantity"].to_list() == [2, 1]
    assert kept["value"].to_list() == [20.0, 20.0]  # at the later purchase's price
    assert s["value_netted"] == 20.0


def test_non_swedish_geography_declared_hierarchy(eu_ws: Path) -> None:
    customers = pl.read_parquet(eu_ws / "raw" / "customers.parquet")
    assert set(customers["country"].drop_nulls()) <= set(COUNTRIES.values())
    assert customers["county_code"].null_count() == customers.height
    geo = _manifest(eu_ws)["domains"]["geography"]
    assert geo["hierarchy"] == "country"
    # the public domain is the whole declared table, not the countries the data contains
    assert len(geo["values"]) > len(COUNTRIES) and "SE" in geo["values"]
    # no identity or contact column reaches W/raw
    assert not {"first_name", "email", "phone", "street", "postcode"} & set(customers.columns)


def test_single_channel(eu_ws: Path) -> None:
    orders = pl.read_parquet(eu_ws / "raw" / "orders.parquet")
    assert set(orders["channel"]) == {"store"}


def test_parquet_export(eu: tuple, tmp_path: Path) -> None:
    export = eu[2].with_columns(pl.col("Datum").str.to_date("%d.%m.%Y"))
    path = tmp_path / "export.parquet"
    export.write_parquet(path)
    mapping = tmp_path / "mapping.toml"
    text = eu[1].read_text(encoding="utf-8").replace('format = "csv"', 'format = "parquet"')
    mapping.write_text(text.replace('decimal = ","', 'decimal = "."'), encoding="utf-8")
    shutil.copy(eu[1].parent / "categories.csv", tmp_path / "categories.csv")
    result = ingest(path, mapping, tmp_path / "ws")
    assert result.manifest["rows"]["read"] == export.height
    assert result.dropped["no_customer"]["rows"] == export.filter(pl.col("Kundennr") == "").height


# --- refusals: one line naming the column, the rule, the count in rows and the fix ---------
def _one_line(exc: pytest.ExceptionInfo[Exception], *parts: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for part in parts:
        assert part in text, text


def _refused(
    tmp_path: Path, body: str, *parts: str, mapping: str = MAPPING, encoding: str = "utf-8"
) -> None:
    """Ingest of the small export ``body`` refuses with one line holding every part."""
    src, m = write_export(tmp_path, body, mapping, encoding=encoding)
    with pytest.raises(SchemaError) as exc:
        ingest(src, m, tmp_path / "ws")
    _one_line(exc, *parts)


def test_comma_file_read_with_semicolon_names_separator(tmp_path: Path) -> None:
    _refused(
        tmp_path, "kund,datum,antal,pris,art\n1,2020-01-01,1,5,x\n", "separator", "1 row(s)", "fix:"
    )
    assert not (tmp_path / "ws" / "raw").exists()  # nothing written


def test_wrong_encoding_names_encoding(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "kund;datum;antal;pris;art\n1;2020-01-01;1;5;Å\n",
        "encoding",
        "utf-8",
        "fix:",
        encoding="latin-1",
    )


def test_bad_date_names_column_rule_count_fix(tmp_path: Path) -> None:
    body = "kund;datum;antal;pris;art\n1;2020-01-01;1;5;x\n2;01/02/2020;1;5;x\n3;x;1;5;x\n"
    _refused(tmp_path, body, "'datum'", "date in format %Y-%m-%d", "2 row(s)", "date_format")


def test_missing_mapped_column(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "kund;date;antal;pris;art\n1;2020-01-01;1;5;x\n",
        "'datum'",
        "mapped column present",
        "fix:",
    )


def test_negative_price_names_adjustment_codes(tmp_path: Path) -> None:
    body = "kund;datum;antal;pris;art\n1;2020-01-01;1;-5;B\n1;2020-01-01;1;5;x\n"
    _refused(tmp_path, body, "'pris'", "unit price >= 0", "1 row(s)", "non_product_codes")


def test_unknown_country_names_the_fix(tmp_path: Path) -> None:
    body = "kund;datum;antal;pris;art;land\n1;2020-01-01;1;5;x;Atlantis\n2;2020-01-01;1;5;x;SE\n"
    mapping = MAPPING + '[geography]\ncolumn = "land"\nhierarchy = "country"\n'
    _refused(
        tmp_path,
        body,
        "'land'",
        "country hierarchy",
        "1 row(s)",
        "'Atlantis'",
        "[geography] values",
        mapping=mapping,
    )


def test_unknown_channel_value(tmp_path: Path) -> None:
    body = "kund;datum;antal;pris;art;k\n1;2020-01-01;1;5;x;fax\n"
    mapping = MAPPING + '[channels]\ncolumn = "k"\nvalues = {web = "web"}\n'
    _refused(tmp_path, body, "'k'", "1 row(s)", "web, store or phone", mapping=mapping)


def test_mapping_errors_name_the_key() -> None:
    with pytest.raises(SchemaError, match="products.categories"):
        IngestMapping(customer_id="c", order_date="d", quantity="q", amount="a", category="x")
    with pytest.raises(SchemaError, match="rate_source"):
        IngestMapping(
            customer_id="c",
            order_date="d",
            quantity="q",
            amount="a",
            categories=("x",),
            category="x",
            currency="EUR",
            sek_per_unit=11.0,
        )
    with pytest.raises(SchemaError, match="unknown key"):
        IngestMapping.from_dict({"columns": {"customer": "c"}})


def test_refuses_to_overwrite_raw_without_force(eu: tuple, eu_ws: Path) -> None:
    with pytest.raises(WorkspaceError, match="--force"):
        ingest(eu[0], eu[1], eu_ws)


def test_cli_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, m = write_export(tmp_path, "kund,datum,antal,pris,art\n1,2020-01-01,1,5,x\n")
    assert main(["ingest", "-w", str(tmp_path / "ws"), str(src), "--mapping", str(m)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err


def test_a_category_listed_twice_is_refused_in_one_line_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A public taxonomy listing a category twice would loosen every release's per-person
    bound (it counts the categories; r12a F2 made it one cell, not one bound): ingest refuses
    it in one line naming the mapping key, the rule, the value and the fix, and writes
    nothing (ingest spends no budget; no clause id: ingest reads no policy, and the code
    names none, tests/test_architecture.py)."""
    twice = MAPPING.replace('categories = ["all"]', 'categories = ["all", "x", "all"]')
    body = "kund;datum;antal;pris;art\n1;2020-01-01;1;5;x\n"
    _refused(
        tmp_path,
        body,
        "mapping, key 'products.categories'",
        "rule 'each public category listed once' (a release's per-person bound",
        "(first: 'all')",
        "fix: list each category once",
        mapping=twice,
    )
    assert not (tmp_path / "ws").exists()  # nothing written
    src, m = tmp_path / "e.csv", tmp_path / "m.toml"
    assert main(["ingest", "-w", str(tmp_path / "ws"), str(src), "--mapping", str(m)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and "listed once" in err, err
    assert not (tmp_path / "ws").exists()


def test_gzip_detected_by_content(eu: tuple) -> None:
    assert gzip.decompress(eu[0].read_bytes())[:8] == b"Rechnung"


def test_single_channel_segmentation_drops_constant_features_and_cli_chooses_groups(
    eu_ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    ws = tmp_path / "ws"
    shutil.copytree(eu_ws, ws)
    key = tmp_path / "k.hex"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)  # the steward's alone (a readable key file is refused)
    pol = ["--policy", str(EXAMPLES / "cdnow" / "policy.toml")]
    assert (
        main(
            [
                "prepare",
                "-w",
                str(ws),
                *pol,
                "--purpose",
                "segmentation",
                "--as-of",
                "1998-06-30",
                "--key-file",
                str(key),
            ]
        )  # fmt: skip
        == 0
    )
    capsys.readouterr()
    seg = ["segment", "-w", str(ws), *pol, "--k-range", "3-4", "--selection-sample", "3000"]
    assert main([*seg, "--features", "rfm,channel"]) == 0
    out = capsys.readouterr().out
    assert "note: feature 'share_store' dropped" in out  # one channel: a note, not a crash
    meta = json.loads((ws / "segments" / "metadata.json").read_text())
    assert "share_store" not in json.dumps(meta.get("features", meta))
    # only constant features chosen: one line naming the fix
    assert main([*seg, "--features", "channel"]) == 2
    err = capsys.readouterr().err
    assert "constant" in err and "--features" in err and err.count("\n") == 1


def test_optional_customer_attributes(tmp_path: Path) -> None:
    body = (
        "kund;datum;antal;pris;art;född;kön\n"
        "1;2020-01-01;1;5;x;1984;kvinna\n"
        "1;2020-02-01;1;5;x;;\n"
        "2;2020-01-01;2;5;x;1950;man\n"
    )
    mapping = MAPPING + (
        '[customers]\nbirth_year = "född"\ngender = "kön"\n'
        'gender_values = {kvinna = "F", man = "M"}\n'
    )
    src, m = write_export(tmp_path, body, mapping)
    ingest(src, m, tmp_path / "ws")
    customers = pl.read_parquet(tmp_path / "ws" / "raw" / "customers.parquet")
    assert customers.select("birth_year", "gender").rows() == [(1984, "F"), (1950, "M")]
    bad = body.replace("man\n", "annan\n")
    src, m = write_export(tmp_path, bad, mapping)
    with pytest.raises(SchemaError) as exc:
        ingest(src, m, tmp_path / "ws2")
    _one_line(exc, "'kön'", "1 row(s)", "gender_values")
