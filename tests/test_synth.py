"""Tests of the synthetic data generator (segments.synth)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from conftest import SMALL

from segments import geography
from segments.cli.main import main
from segments.exceptions import SchemaError, WorkspaceError
from segments.schema import ORDER_LINES, RAW_TABLES, SURVEYS
from segments.synth import (
    DEFAULT_DATASET,
    category_mix_overlap,
    copy_default_dataset,
    generate,
    window_start,
)
from segments.synth import customers as customers_module
from segments.synth.customers import build_customers, draw_accounts
from segments.synth.generate import load_raw_pl
from segments.synth.identifiers import (
    is_valid_org_number,
    is_valid_personnummer,
    luhn_check_digit,
    org_numbers,
    skatteverket_test_numbers,
)
from segments.workspace import Workspace


def draw_customers(
    n: int, *, window_start: dt.date, as_of: dt.date, rng: np.random.Generator
) -> SimpleNamespace:
    """Accounts drawn and built as ``generate`` does (its two steps), for the tests that look
    at the customers table and the draw's statistics alone."""
    draw = draw_accounts(n, window_start=window_start, as_of=as_of, rng=rng)
    return SimpleNamespace(customers=build_customers(draw), hidden=draw.hidden, stats=draw.stats)


AS_OF = SMALL["as_of"]


@pytest.fixture(scope="module")
def raw(small_raw: Workspace) -> dict[str, pl.DataFrame]:
    tables = {t: load_raw_pl(small_raw, t) for t in RAW_TABLES}
    tables["archetypes"] = load_raw_pl(small_raw, "archetypes")
    tables["persons"] = load_raw_pl(small_raw, "persons")
    return tables


# --- identifiers ----------------------------------------------------------------------------
def test_luhn_check_digit_known_value_and_mutation() -> None:
    assert luhn_check_digit("811218987") == 6  # Skatteverket's example 811218-9876
    numbers = pl.Series(["5560360793", "5560360794"])
    assert is_valid_org_number(numbers).to_list() == [True, False]


def test_org_numbers_are_distinct_valid_and_avoid_taken() -> None:
    rng = np.random.default_rng(0)
    first = org_numbers(np.full(5000, 5), rng)
    again = org_numbers(np.full(5000, 5), rng, taken=first)
    text = pl.Series(np.concatenate([first, again]).astype(str))
    assert is_valid_org_number(text).all()
    assert text.n_unique() == 10000
    assert (text.str.slice(2, 1).cast(pl.Int8) >= 2).all()


def test_every_personnummer_is_a_valid_test_number_consistent_with_birth_and_gender(
    raw: dict[str, pl.DataFrame],
) -> None:
    c = raw["customers"].filter(pl.col("personnummer").is_not_null())
    assert c.height > 100
    assert is_valid_personnummer(c["personnummer"]).all()
    pool = set(skatteverket_test_numbers()["personnummer"].to_list())
    assert set(c["personnummer"].to_list()) <= pool
    assert (c["personnummer"].str.slice(0, 4).cast(pl.Int16) == c["birth_year"]).all()
    male = c["personnummer"].str.slice(10, 1).cast(pl.Int8) % 2 == 1
    assert ((c["gender"] == "M") == male).all()


def test_every_org_number_is_valid(raw: dict[str, pl.DataFrame]) -> None:
    c = raw["customers"]
    business = c.filter(pl.col("customer_type") == "business")
    assert business["org_number"].null_count() == 0
    assert is_valid_org_number(business["org_number"]).all()
    legal = business.filter(~pl.col("is_sole_trader"))
    assert (legal["org_number"].str.slice(2, 1).cast(pl.Int8) >= 2).all()
    assert set(legal["org_number"].str.slice(0, 1).unique()) <= {"2", "5", "7", "9"}
    assert c.filter(pl.col("customer_type") == "private")["org_number"].null_count() == (
        c.filter(pl.col("customer_type") == "private").height
    )


def test_personnummer_kept_only_where_ao3_allows(raw: dict[str, pl.DataFrame]) -> None:
    c = raw["customers"]
    legal = c.filter((pl.col("customer_type") == "business") & ~pl.col("is_sole_trader"))
    assert legal["personnummer"].null_count() == legal.height
    private = c.filter(pl.col("customer_type") == "private")
    share = private["personnummer"].is_not_null().mean()
    assert 0.15 < share < 0.7  # invoice payers and sole traders' private accounts only


def test_sole_trader_pairs_share_the_number(raw: dict[str, pl.DataFrame]) -> None:
    c = raw["customers"].join(raw["persons"], on="customer_id")
    sole = c.filter(pl.col("is_sole_trader"))
    assert sole.height > 50
    assert (sole["org_number"] == sole["personnummer"].str.slice(2, 10)).all()
    pairs = c.filter(pl.col("person_id").is_duplicated()).sort("person_id", "customer_type")
    assert pairs.height >= 20 and pairs.height % 2 == 0
    by_person = pairs.group_by("person_id").agg(
        pl.col("customer_type").sort().alias("types"),
        pl.col("personnummer").n_unique().alias("numbers"),
        pl.col("personnummer").null_count().alias("missing"),
        pl.col("org_number").drop_nulls().first().alias("org"),
        pl.col("personnummer").first().alias("pnr"),
        pl.col("last_name").n_unique().alias("names"),
        pl.col("postcode").n_unique().alias("postcodes"),
    )
    assert by_person["types"].to_list() == [["business", "private"]] * by_person.height
    assert (by_person["numbers"] == 1).all() and (by_person["missing"] == 0).all()
    assert (by_person["org"] == by_person["pnr"].str.slice(2, 10)).all()
    assert (by_person["names"] == 1).all() and (by_person["postcodes"] == 1).all()
    # some sole traders have only the business account
    assert sole.filter(~pl.col("person_id").is_duplicated()).height > 0


def test_personnummer_pool_exhaustion_invents_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    small_pool = skatteverket_test_numbers().filter(pl.col("birth_year") >= 1980).head(40)
    monkeypatch.setattr(customers_module, "skatteverket_test_numbers", lambda: small_pool)
    draw = draw_customers(
        2000, window_start=dt.date(2026, 1, 1), as_of=AS_OF, rng=np.random.default_rng(3)
    )
    numbers = draw.customers["personnummer"].drop_nulls()
    assert set(numbers.to_list()) <= set(small_pool["personnummer"].to_list())
    assert draw.stats["sole_traders_without_test_number_made_partnerships"] > 0
    assert draw.stats["invoice_customers_without_test_number"] > 0
    assert draw.stats["sole_traders"] == 40


# --- composition and realism ---------------------------------------------------------------
def test_mostly_business_customers(raw: dict[str, pl.DataFrame]) -> None:
    share = (raw["customers"]["customer_type"] == "business").mean()
    assert 0.70 <= share <= 0.80


def test_county_shares_follow_population() -> None:
    draw = draw_customers(
        40_000, window_start=dt.date(2026, 1, 1), as_of=AS_OF, rng=np.random.default_rng(5)
    )
    counties = geography.counties_pl().sort("population", descending=True).head(5)
    counts = draw.customers.group_by("county_code").len()
    joined = counties.join(counts, on="county_code")
    expected = joined["population"] / geography.counties_pl()["population"].sum()
    observed = joined["len"] / draw.customers.height
    assert ((observed / expected - 1).abs() < 0.15).all()


def test_postcode_consistent_with_municipality_and_county(raw: dict[str, pl.DataFrame]) -> None:
    known = geography.postcodes_pl()
    joined = raw["customers"].join(known, on="postcode", how="left", suffix="_ref")
    assert joined["municipality_code_ref"].null_count() == 0
    assert (joined["municipality_code"] == joined["municipality_code_ref"]).all()
    assert (joined["county_code"] == joined["municipality_code"].str.slice(0, 2)).all()
    assert (joined["locality"] == joined["locality_ref"]).all()


def test_august_clearly_above_july(raw: dict[str, pl.DataFrame]) -> None:
    month = raw["orders"]["order_date"].dt.month()
    assert (month == 8).sum() > 1.5 * (month == 7).sum()


def test_few_weekend_orders_for_businesses(raw: dict[str, pl.DataFrame]) -> None:
    o = raw["orders"].join(
        raw["customers"].select("customer_id", "customer_type"), on="customer_id"
    )
    weekend = o["order_date"].dt.weekday() >= 6
    business = o["customer_type"] == "business"
    assert weekend.filter(business).mean() < 0.06
    assert weekend.filter(~business).mean() > 2 * weekend.filter(business).mean()


def test_business_baskets_larger_than_private(raw: dict[str, pl.DataFrame]) -> None:
    per_order = (
        raw["order_lines"]
        .group_by("order_id")
        .agg((pl.col("quantity") * pl.col("unit_price_sek")).sum().alias("sek"))
        .join(raw["orders"], on="order_id")
        .join(raw["customers"].select("customer_id", "customer_type"), on="customer_id")
        .group_by("customer_type")
        .agg(pl.col("sek").mean())
    )
    mean = dict(per_order.iter_rows())
    assert mean["business"] > 2 * mean["private"]


def test_orders_within_each_customers_relationship(raw: dict[str, pl.DataFrame]) -> None:
    o = raw["orders"].join(raw["customers"], on="customer_id")
    start = window_start(AS_OF, SMALL["months"])
    assert o["order_date"].min() >= start and o["order_date"].max() <= AS_OF
    assert (o["order_date"] >= o["signup_date"]).all()
    assert o.filter(pl.col("order_date") > pl.col("end_date")).height == 0
    c = raw["customers"]
    assert (c["last_contact_date"] >= c["signup_date"]).all()
    assert c.filter(pl.col("last_contact_date") > pl.col("end_date")).height == 0


def test_heavy_tailed_activity_and_churn(raw: dict[str, pl.DataFrame]) -> None:
    per_customer = raw["orders"].group_by("customer_id").len()["len"].to_numpy()
    top = np.sort(per_customer)[::-1][: len(per_customer) // 10].sum()
    assert top / per_customer.sum() > 0.3  # the top tenth place a large share of orders
    churned = raw["customers"]["end_date"].is_not_null().mean()
    assert 0.05 < churned < 0.3


def test_relationship_facts_at_low_rates(raw: dict[str, pl.DataFrame]) -> None:
    c = raw["customers"]
    for column, high in [
        ("marketing_opt_out", 0.2),
        ("survey_opt_out", 0.2),
        ("profiling_objection", 0.08),
        ("erasure_requested", 0.03),
        ("restriction_requested", 0.03),
    ]:
        assert c[column].mean() < high, column
    withdrawn = c.filter(pl.col("consent_withdrawn_date").is_not_null())
    assert 0 < withdrawn.height < 0.1 * c.height
    assert not withdrawn["newsletter_subscriber"].any()
    assert (
        c.filter(~pl.col("newsletter_subscriber"))["newsletter_interactions_per_month"] == 0
    ).all()


def test_products_catalogue(raw: dict[str, pl.DataFrame]) -> None:
    p = raw["products"]
    assert 300 <= p.height <= 1000 and p["category"].n_unique() == 10
    prices = dict(p.group_by("category").agg(pl.col("unit_price_sek").median()).iter_rows())
    assert 50 <= prices["paper"] <= 400 and 1500 <= prices["furniture"] <= 12000


def test_lines_follow_each_archetypes_category_mix(raw: dict[str, pl.DataFrame]) -> None:
    shares = (
        raw["order_lines"]
        .join(raw["orders"], on="order_id")
        .join(raw["products"].select("product_id", "category"), on="product_id")
        .join(raw["archetypes"], on="customer_id")
        .group_by("archetype", "category")
        .len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("archetype")).alias("share"))
    )
    from segments.schema import PRODUCT_CATEGORIES
    from segments.synth import ARCHETYPES

    for a in ARCHETYPES:
        got = dict(
            shares.filter(pl.col("archetype") == a.name).select("category", "share").iter_rows()
        )
        for category, expected in zip(PRODUCT_CATEGORIES, a.category_mean, strict=True):
            assert abs(got.get(category, 0.0) - expected) < 0.06, (a.name, category)


def test_archetype_overlap_at_least_ten_percent(raw: dict[str, pl.DataFrame]) -> None:
    overlap = category_mix_overlap(
        raw["order_lines"], raw["orders"], raw["products"], raw["archetypes"]
    )
    assert overlap >= 0.10
    assert raw["archetypes"]["archetype"].n_unique() == 6


def test_surveys_carry_no_identifier(raw: dict[str, pl.DataFrame]) -> None:
    s = raw["surveys"]
    assert s.columns == SURVEYS.names
    assert not any("id" in column or "name" in column for column in s.columns)
    assert s.height > 0 and s["score"].is_between(0, 10).all()
    assert s["survey_month"].max() < AS_OF.replace(day=1)  # surveyed the month after
    # rows are sorted by their values: the order cannot point back to an account
    assert s.equals(s.sort(s.columns))


# --- writing, determinism, workspace --------------------------------------------------------
def test_manifest(small_raw: Workspace) -> None:
    manifest = json.loads(small_raw.manifest.read_text())
    assert manifest["synthetic"] is True and manifest["seed"] == SMALL["seed"]
    assert manifest["parameters"]["customers"] == SMALL["customers"]
    partitions = {f for f in manifest["files"] if f.startswith("order_lines.parquet/")}
    assert set(manifest["files"]) - partitions == {
        f"{t}.parquet" for t in RAW_TABLES if t != "order_lines"
    } | {"truth/archetypes.parquet", "truth/persons.parquet"}
    # the order lines are month partitions, every file listed with its digest
    on_disk = {
        p.relative_to(small_raw.raw).as_posix()
        for p in small_raw.raw_table("order_lines").rglob("*.parquet")
    }
    assert partitions == on_disk and len(on_disk) >= manifest["parameters"]["months"]
    assert manifest["row_counts"]["customers"] == SMALL["customers"]


def test_order_lines_are_month_partitions_of_the_same_rows(small_raw: Workspace) -> None:
    """Each partition holds exactly the lines of orders dated in its month, and the
    partitions read in order are the table the in-memory draw gives (same rows for a seed)."""
    from segments._tables import read_table

    orders = pl.read_parquet(small_raw.raw_table("orders"))
    folder = small_raw.raw_table("order_lines")
    for part in sorted(folder.glob("month=*/*.parquet")):
        months = (
            pl.read_parquet(part)
            .join(orders, on="order_id")
            .select(pl.col("order_date").dt.strftime("month=%Y-%m").unique())
        )
        assert months.to_series().to_list() == [part.parent.name]
    lines = read_table(folder)
    assert lines.columns == ORDER_LINES.names
    assert lines.equals(lines.sort("order_id", "line_no"))  # written order kept
    assert lines.height == json.loads(small_raw.manifest.read_text())["row_counts"]["order_lines"]


@pytest.mark.parametrize("tamper", ["added", "removed", "edited"])
def test_a_tampered_partition_is_refused(small_raw: Workspace, tmp_path, tamper) -> None:
    """Attack: a partition file slipped in, deleted or edited behind the manifest's back."""
    ws = Workspace(tmp_path)
    shutil.copytree(small_raw.raw, ws.raw)
    parts = sorted(ws.raw_table("order_lines").glob("month=*/*.parquet"))
    if tamper == "added":
        pl.read_parquet(parts[-1]).write_parquet(parts[-1].with_name("part-99999.parquet"))
    elif tamper == "removed":
        parts[0].unlink()
    else:
        frame = pl.read_parquet(parts[0])
        frame.with_columns(pl.col("quantity") * 2).write_parquet(parts[0])
    with pytest.raises(WorkspaceError, match="does not match its SHA-256"):
        load_raw_pl(ws, "order_lines")


def test_same_seed_gives_byte_identical_files(tmp_path) -> None:
    params = {"customers": 300, "months": 6, "as_of": dt.date(2026, 3, 31)}
    a = generate(tmp_path / "a", seed=1, **params).manifest["files"]
    b = generate(tmp_path / "b", seed=1, **params).manifest["files"]
    c = generate(tmp_path / "c", seed=2, **params).manifest["files"]
    assert a == b
    assert a["orders.parquet"] != c["orders.parquet"]


def test_refuses_non_empty_raw_unless_forced(tmp_path) -> None:
    params = {"customers": 100, "months": 2, "as_of": dt.date(2026, 3, 31), "seed": 1}
    generate(tmp_path, **params)
    with pytest.raises(WorkspaceError, match="not empty.*--force"):
        generate(tmp_path, **params)
    result = generate(tmp_path, force=True, **{**params, "seed": 2})
    assert result.manifest["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no staging left behind


def test_failed_generate_leaves_nothing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        generate(tmp_path, customers=100, months=2, as_of=dt.date(2026, 3, 31), seed=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 0}, "'customers' must be a positive integer"),
        ({"months": 0}, "'months' must be an integer in 1..240"),
        ({"as_of": "2026-01-01"}, "'as_of' must be a date"),
        ({"seed": -1}, "'seed' must be a non-negative integer"),
    ],
)
def test_bad_parameters(tmp_path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_load_raw_detects_edited_file(small_raw: Workspace, tmp_path) -> None:
    shutil.copytree(small_raw.raw, tmp_path / "raw")
    ws = Workspace(tmp_path)
    surveys = load_raw_pl(ws, "surveys")
    surveys.head(5).write_parquet(ws.raw_table("surveys"))
    with pytest.raises(WorkspaceError, match="does not match its SHA-256"):
        load_raw_pl(ws, "surveys")
    assert load_raw_pl(ws, "surveys", verify_hash=False).height == 5
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        load_raw_pl(ws, "nope")
    with pytest.raises(WorkspaceError, match="run `segments generate"):
        load_raw_pl(Workspace(tmp_path / "empty"), "orders")


def test_default_dataset_copies_after_hash_check(tmp_path) -> None:
    d = DEFAULT_DATASET
    manifest = json.loads((d.path / "manifest.json").read_text())
    assert manifest["parameters"] == {
        "customers": d.customers,
        "months": d.months,
        "as_of": d.as_of.isoformat(),
        "window_start": window_start(d.as_of, d.months).isoformat(),
    }
    assert manifest["seed"] == d.seed and manifest["synthetic"] is True
    raw = copy_default_dataset(tmp_path / "ws")
    assert load_raw_pl(tmp_path / "ws", "customers").height == d.customers
    assert (raw / "truth" / "archetypes.parquet").exists()
    # a tampered copy is refused
    shutil.copytree(d.path, tmp_path / "bad")
    (tmp_path / "bad" / "surveys.parquet").write_bytes(b"not parquet")
    with pytest.raises(WorkspaceError, match="does not match the manifest"):
        copy_default_dataset(tmp_path / "ws2", source=tmp_path / "bad")


@pytest.mark.slow
def test_default_dataset_is_reproducible(tmp_path) -> None:
    d = DEFAULT_DATASET
    result = generate(tmp_path, customers=d.customers, months=d.months, as_of=d.as_of, seed=d.seed)
    manifest = json.loads((d.path / "manifest.json").read_text())
    assert result.manifest["files"] == manifest["files"]


def test_cli_generate_and_default(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    assert (
        main(
            [
                "generate",
                "--customers",
                "120",
                "--months",
                "2",
                "--as-of",
                "2026-02-28",
                "--seed",
                "4",
                "--workspace",
                str(ws),
            ]
        )
        == 0
    )
    assert "customers 120" in capsys.readouterr().out
    assert main(["generate", "--default", "--workspace", str(ws)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["generate", "--default", "--force", "--workspace", str(ws)]) == 0
    assert load_raw_pl(ws, "customers").height == DEFAULT_DATASET.customers
    assert main(["generate", "--customers", "0", "--workspace", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err  # refused at the argparse edge, before anything runs
    assert "argument --customers: 0 is out of range; give a whole number 1 or more" in err


def test_schema_error_on_load_names_table(small_raw: Workspace, tmp_path) -> None:
    shutil.copytree(small_raw.raw, tmp_path / "raw")
    ws = Workspace(tmp_path)
    (ws.raw_table("orders")).write_bytes(b"garbage")
    with pytest.raises(SchemaError, match="table 'orders': cannot read"):
        load_raw_pl(ws, "orders", verify_hash=False)


def test_validation_of_large_tables_checks_every_row(
    raw: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from segments.schema import ORDER_LINES

    # the package's `generate` is the function; the module is reached by its full name
    generate_module = importlib.import_module("segments.synth.generate")

    monkeypatch.setattr(generate_module, "PANDERA_MAX_ROWS", 100)
    lines = raw["order_lines"]
    generate_module._validate_for_write(lines, ORDER_LINES, AS_OF)  # valid: passes
    bad = lines.with_columns(
        pl.when(pl.int_range(pl.len()) == lines.height - 1)
        .then(pl.lit(-3, pl.Int32))
        .otherwise("quantity")
        .alias("quantity")
    )
    with pytest.raises(SchemaError, match=r"column 'quantity'.*first: '-3'"):
        generate_module._validate_for_write(bad, ORDER_LINES, AS_OF)
    duplicated = pl.concat([lines, lines.tail(1)])
    with pytest.raises(SchemaError, match="rule 'unique key'"):
        generate_module._validate_for_write(duplicated, ORDER_LINES, AS_OF)


def test_unsorted_unique_keys_pass_and_fast_foreign_keys_find_orphans(
    raw: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from segments.schema import ORDER_LINES

    generate_module = importlib.import_module("segments.synth.generate")
    monkeypatch.setattr(generate_module, "PANDERA_MAX_ROWS", 100)
    lines, orders = raw["order_lines"], raw["orders"]
    # not in key order: uniqueness is then proven by the hash-based check
    generate_module._validate_for_write(lines.reverse(), ORDER_LINES, AS_OF)
    generate_module._check_foreign_key(lines, "order_lines", orders, "orders", "order_id")
    gap = int(orders["order_id"][orders.height // 2])
    holed = orders.filter(pl.col("order_id") != gap)  # an orphan inside the key range
    with pytest.raises(SchemaError, match=rf"'order_id': rule 'references orders'.*first: {gap}"):
        generate_module._check_foreign_key(lines, "order_lines", holed, "orders", "order_id")
    beyond = lines.with_columns(pl.col("order_id") + orders.height)  # orphans above the range
    with pytest.raises(SchemaError, match="rule 'references orders'"):
        generate_module._check_foreign_key(beyond, "order_lines", orders, "orders", "order_id")


def test_guide_table_search_equals_numpy_searchsorted() -> None:
    from segments.synth.orders import _search_sorted

    rng = np.random.default_rng(3)
    for n, scale in [(1, 0.5), (470, 10.0), (6_600, 6_000.0), (50, 1e-3), (50, 1e9)]:
        values = rng.random(n) * scale
        values[::7] = np.round(values[::7])  # exact ties with bucket edges
        values = np.sort(values)
        keys = np.concatenate([rng.random(100_000) * scale * 1.05, values, [0.0]])
        np.testing.assert_array_equal(_search_sorted(values, keys), np.searchsorted(values, keys))


# --- parallel order lines ------------------------------------------------------------------
LINES_AS_OF = dt.date(2026, 10, 31)


def _hidden_and_products(n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    from segments.synth.products import generate_products

    draw = draw_customers(
        n,
        window_start=window_start(LINES_AS_OF, 6),
        as_of=LINES_AS_OF,
        rng=np.random.default_rng(5),
    )
    return draw.hidden, generate_products(np.random.default_rng(6))


def test_order_lines_identical_for_any_number_of_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from segments.synth import orders as orders_module

    monkeypatch.setattr(orders_module, "ORDERS_PER_CHUNK", 97)  # many chunks, ragged last one
    hidden, products = _hidden_and_products(400)
    draws = [
        orders_module.generate_orders(
            hidden,
            products,
            window_start=window_start(LINES_AS_OF, 6),
            as_of=LINES_AS_OF,
            rng=np.random.default_rng(9),
            workers=workers,
        )
        for workers in (1, 2, 3)
    ]
    first = draws[0]
    assert first.orders.height > 5 * 97  # the lines really were drawn in several chunks
    for other in draws[1:]:
        assert other.orders.equals(first.orders)
        assert other.order_lines.equals(first.order_lines)
        np.testing.assert_array_equal(other.last_order_day, first.last_order_day)
    lines = first.order_lines
    # order-id order, line numbers restarting at 1, every order has a line
    assert lines["order_id"].is_sorted() and lines["order_id"].n_unique() == first.orders.height
    starts = lines.group_by("order_id").agg(pl.col("line_no").min())["line_no"]
    assert (starts == 1).all()
    last = first.orders.group_by("customer_id").agg(pl.col("order_date").max()).sort("customer_id")
    epoch = np.datetime64(window_start(LINES_AS_OF, 6), "D")
    expected = (last["order_date"].to_numpy() - epoch).astype(np.int64)
    rows = last["customer_id"].to_numpy() - 1  # hidden is in customer-id order from 1
    np.testing.assert_array_equal(first.last_order_day[rows], expected)


def test_generate_orders_refuses_bad_workers() -> None:
    from segments.synth.orders import generate_orders

    hidden, products = _hidden_and_products(20)
    with pytest.raises(ValueError, match="'workers' must be a positive integer, got 0"):
        generate_orders(
            hidden,
            products,
            window_start=window_start(LINES_AS_OF, 6),
            as_of=LINES_AS_OF,
            rng=np.random.default_rng(1),
            workers=0,
        )


def test_generate_refuses_bad_workers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'workers' must be a positive integer.*fix"):
        generate(tmp_path, customers=10, months=2, as_of=LINES_AS_OF, seed=1, workers=0)
    assert not (tmp_path / "raw").exists()


def test_urn_rounds_each_accounts_mix_and_stores_codes() -> None:
    from segments.synth.orders import _urn

    mix = np.array([[0.5, 0.0, 1 / 3], [0.25, 1.0, 1 / 3], [0.25, 0.0, 1 / 3]])  # (k, n)
    codes = np.array([[10, 20, 30], [11, 21, 31], [12, 22, 32]], dtype=np.int8)
    urns = _urn(mix, 8, codes)
    assert urns.shape == (3, 8)
    np.testing.assert_array_equal(urns[0], [10] * 4 + [11] * 2 + [12] * 2)
    np.testing.assert_array_equal(urns[1], [21] * 8)
    assert sorted(np.unique(urns[2], return_counts=True)[1]) == [2, 3, 3]
    np.testing.assert_array_equal(_urn(mix, 8)[1], [1] * 8)  # default codes: the index


def test_finish_customers_needs_one_last_order_day_per_customer() -> None:
    from segments.synth.customers import finish_customers

    draw = draw_customers(
        10,
        window_start=window_start(LINES_AS_OF, 3),
        as_of=LINES_AS_OF,
        rng=np.random.default_rng(2),
    )
    with pytest.raises(ValueError, match="'last_order_day': 9 values for 10 customers"):
        finish_customers(
            draw.customers,
            np.zeros(9, dtype=np.int64),
            window_start=window_start(LINES_AS_OF, 3),
            as_of=LINES_AS_OF,
            rng=np.random.default_rng(3),
        )


def test_failed_background_check_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    generate_module = importlib.import_module("segments.synth.generate")

    def orphan(child: pl.DataFrame, child_table: str, *args: object) -> None:
        if child_table == "order_lines":
            raise SchemaError("table 'order_lines', column 'order_id': rule 'references orders'")

    monkeypatch.setattr(generate_module, "_check_foreign_key", orphan)
    with pytest.raises(SchemaError, match="'order_lines'.*references orders"):
        generate(tmp_path, customers=100, months=2, as_of=dt.date(2026, 3, 31), seed=1)
    assert list(tmp_path.iterdir()) == []


def test_rewound_history_keeps_past_months_byte_identical(small_raw: Workspace, tmp_path) -> None:
    """A month's partition is never rewritten: the raw data as it stood on a past day holds
    the earlier months' files unchanged (same SHA-256), the day's month cut at the day, and
    no later month; its manifest lists every partition file it holds."""
    from segments.prepare.history import rewind_raw
    from segments.workspace import sha256_file

    day = dt.date(2026, 6, 15)
    target = rewind_raw(small_raw, day, Workspace(tmp_path / "past"))
    source_parts = small_raw.raw_table("order_lines")
    past = target.raw_table("order_lines")
    months = sorted(p.name for p in past.iterdir())
    assert months[-1] == "month=2026-06" and months[0] == sorted(source_parts.iterdir())[0].name
    for part in sorted(past.glob("month=*/*.parquet")):
        original = source_parts / part.relative_to(past)
        if part.parent.name < "month=2026-06":
            assert sha256_file(part) == sha256_file(original)
    manifest = json.loads(target.manifest.read_text())
    listed = {f for f in manifest["files"] if f.startswith("order_lines.parquet/")}
    assert listed == {p.relative_to(target.raw).as_posix() for p in past.glob("month=*/*")}
    lines = load_raw_pl(target, "order_lines")  # hashes, schema and foreign keys hold
    assert lines.height == manifest["row_counts"]["order_lines"]


# --- month by month in bounded memory (issue 21) --------------------------------------------
STREAM = {"customers": 1200, "months": 7, "as_of": dt.date(2026, 3, 31), "seed": 4}


def _generate_module():
    import sys

    import segments.synth.generate  # noqa: F401  (the package exports a function of that name)

    return sys.modules["segments.synth.generate"]


def test_streamed_orders_hold_the_same_rows_and_every_other_file_is_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ORDERS_IN_MEMORY the orders go to their file a month at a time (and the first
    pass draws the order days in small steps): every other file is byte-identical, the
    orders file holds the same rows, one row group a month, and loads with every check."""
    import pyarrow.parquet as pq

    from segments.synth import orders as orders_module

    held = generate(tmp_path / "held", **STREAM).manifest
    monkeypatch.setattr(_generate_module(), "ORDERS_IN_MEMORY", 50)
    monkeypatch.setattr(orders_module, "ORDERS_PER_STEP", 37)
    monkeypatch.setattr(orders_module, "ORDERS_PER_CHUNK", 101)  # blocks span months
    streamed = generate(tmp_path / "streamed", **STREAM).manifest
    monkeypatch.setattr(orders_module, "ORDERS_PER_CHUNK", 1 << 17)
    again = generate(tmp_path / "again", **STREAM).manifest
    assert held["row_counts"] == again["row_counts"]
    assert held["row_counts"] | {"order_lines": 0} == streamed["row_counts"] | {"order_lines": 0}
    differ = {f for f in held["files"] if held["files"][f] != again["files"][f]}
    assert differ == {"orders.parquet"}
    a, b = Workspace(tmp_path / "held"), Workspace(tmp_path / "again")
    assert load_raw_pl(a, "orders").equals(load_raw_pl(b, "orders"))
    assert pq.ParquetFile(b.raw_table("orders")).metadata.num_row_groups == STREAM["months"]
    # lines drawn in other blocks are other lines; their table is still whole and checked
    c = Workspace(tmp_path / "streamed")
    assert load_raw_pl(c, "orders").equals(load_raw_pl(a, "orders"))
    assert load_raw_pl(c, "order_lines").height == streamed["row_counts"]["order_lines"]
    assert not any(p.name.startswith(".") for p in b.raw.rglob("*"))  # no spill left behind


def test_streamed_orders_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_generate_module(), "ORDERS_IN_MEMORY", 50)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        generate(tmp_path, **STREAM)
    assert list(tmp_path.iterdir()) == []


def test_order_tables_do_not_depend_on_steps_or_spilling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pass's step size and where it files the months (memory or disk) change
    nothing: the random streams are those of one whole-window draw."""
    from segments.synth import orders as orders_module

    hidden, products = _hidden_and_products(500)

    def draw(**kwargs: object) -> orders_module.OrderDraw:
        return orders_module.generate_orders(
            hidden,
            products,
            window_start=window_start(LINES_AS_OF, 6),
            as_of=LINES_AS_OF,
            rng=np.random.default_rng(9),
            **kwargs,  # type: ignore[arg-type]
        )

    whole = draw()
    monkeypatch.setattr(orders_module, "ORDERS_PER_STEP", 29)
    stepped = draw(spill=tmp_path / "spill")
    assert whole.orders is not None and stepped.orders is not None
    assert whole.orders.height > 20 * 29  # many steps
    assert stepped.orders.equals(whole.orders)
    assert stepped.order_lines is not None and whole.order_lines is not None
    assert stepped.order_lines.equals(whole.order_lines)
    np.testing.assert_array_equal(stepped.last_order_day, whole.last_order_day)
    assert list((tmp_path / "spill").iterdir()) == []  # every month taken back
    # the sinks see the same tables, a month and a block at a time
    months: list[pl.DataFrame] = []
    blocks: list[pl.DataFrame] = []

    def take_block(block: int, lines: pl.DataFrame, first: int, month: np.ndarray) -> None:
        assert block == len(blocks) and len(month)
        assert lines["order_id"].min() >= first and lines["order_id"].max() < first + len(month)
        blocks.append(lines)

    monkeypatch.setattr(orders_module, "ORDERS_PER_CHUNK", 97)
    sunk = draw(order_sink=months.append, line_sink=take_block)
    assert sunk.orders is None and sunk.order_lines is None
    assert len(months) == 6 and pl.concat(months).equals(whole.orders)
    assert [m["order_date"].dt.month().n_unique() for m in months if m.height] == [1] * 6
    assert pl.concat(blocks).height > 0 and len(blocks) == -(-whole.orders.height // 97)


def test_skipping_doubles_continues_the_same_stream() -> None:
    from segments.synth.orders import _skip_doubles

    for bits in (np.random.PCG64(3), np.random.MT19937(3)):
        rng = np.random.Generator(bits)
        rng.integers(0, 64, 3)  # a half-used 32-bit buffer must survive the jump
        twin = _skip_doubles(rng, 1001)
        rng.random(1001)
        np.testing.assert_array_equal(twin.integers(0, 64, 50), rng.integers(0, 64, 50))
        np.testing.assert_array_equal(
            twin.gamma(np.arange(1.0, 9.0)), rng.gamma(np.arange(1.0, 9.0))
        )


def test_surveys_drawn_month_by_month_equal_the_whole_draw(raw: dict[str, pl.DataFrame]) -> None:
    from segments.synth.surveys import SurveyDraw, generate_surveys

    hidden = pl.DataFrame(
        {"customer_id": raw["customers"]["customer_id"], "arch": np.arange(1500) % 5}
    )
    orders = raw["orders"]
    whole = generate_surveys(
        orders, raw["customers"], hidden, as_of=AS_OF, rng=np.random.default_rng(2)
    )
    draw = SurveyDraw(raw["customers"], hidden, as_of=AS_OF, rng=np.random.default_rng(2))
    for _, month in orders.group_by(pl.col("order_date").dt.truncate("1mo"), maintain_order=True):
        draw.add(month)
    assert whole.height > 100 and draw.finish().equals(whole)
    with pytest.raises(ValueError, match="calendar order"):
        draw.add(orders)


def test_tables_do_not_depend_on_the_account_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Customers' strings and the category urns are built a run of accounts at a time
    (bounded intermediates): any step gives the same files."""
    from segments.synth import orders as orders_module

    whole = generate(tmp_path / "whole", **STREAM).manifest["files"]
    monkeypatch.setattr(customers_module, "CUSTOMERS_PER_STEP", 170)
    monkeypatch.setattr(orders_module, "_URN_ACCOUNTS_PER_STEP", 77)
    stepped = generate(tmp_path / "stepped", **STREAM).manifest["files"]
    assert stepped == whole
