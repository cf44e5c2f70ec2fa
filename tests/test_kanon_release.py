"""`segments kanon` and the release builder, checked from the released files alone (issue 7)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from kanon_files import write_release
from release_helpers import release_context

from segments.anonymity import (
    EarlierRelease,
    PrivacyModel,
    anonymise,
    check_linkage,
    customer_hierarchies,
    customer_release_table,
)
from segments.cli.main import main
from segments.exceptions import KAnonymityError, PolicyError, ReleaseRefusedError, WorkspaceError
from segments.geography import postcodes_pl
from segments.policy import Policy
from segments.schema import INDUSTRIES, PREPARED_CUSTOMERS, PREPARED_LINES, PRODUCT_CATEGORIES
from segments.workspace import Workspace, sha256_file

N = 800
COLUMNS = "county_code,customer_type,segment"


def _prepared(rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    ids = [secrets.token_hex(16) for _ in range(N)]
    pcs = postcodes_pl().filter(pl.col("county_code").is_in(["01", "12", "14"]))
    pick = rng.integers(0, pcs.height, N)
    kind = rng.choice(["private", "business", "sole_trader"], N, p=[0.7, 0.2, 0.1])
    person = kind != "business"
    company = kind != "private"
    customers = pl.DataFrame(
        {
            "person_id": ids,
            "customer_type": kind,
            "industry": rng.choice(list(INDUSTRIES), N),
            "size_band": rng.choice(["0", "1-9", "10-49"], N),
            "postcode": pcs["postcode"].gather(pick),
            "municipality_code": pcs["municipality_code"].gather(pick),
            "county_code": pcs["county_code"].gather(pick),
            "birth_year": rng.integers(1945, 2004, N),
            "gender": rng.choice(["F", "M"], N),
            "_person": person,
            "_company": company,
        }
    )
    customers = customers.with_columns(
        pl.when("_company").then(pl.col("industry")).alias("industry"),
        pl.when("_company").then(pl.col("size_band")).alias("size_band"),
        pl.when("_person").then(pl.col("birth_year")).cast(pl.Int16).alias("birth_year"),
        pl.when("_person").then(pl.col("gender")).alias("gender"),
    ).drop("_person", "_company")
    per = rng.integers(1, 4, N)
    lines = pl.DataFrame(
        {
            "person_id": np.repeat(ids, per),
            "category": rng.choice(list(PRODUCT_CATEGORIES[:3]), per.sum()),
            "amount_sek": rng.gamma(2.0, 900.0, per.sum()),
        }
    )
    return customers, lines


@pytest.fixture()
def workspace(tmp_path):
    rng = np.random.default_rng(5)
    customers, lines = _prepared(rng)
    ws = Workspace(tmp_path / "ws").create()
    folder = ws.prepared_dir("microdata")
    folder.mkdir(parents=True)
    customers.write_parquet(folder / "customers.parquet")
    n = lines.height
    full_lines = lines.with_columns(
        pl.Series("order_id", [secrets.token_hex(16) for _ in range(n)]),
        pl.lit(None, dtype=pl.Date).alias("order_date"),
        pl.lit("web").alias("channel"),
        pl.lit(1, dtype=pl.Int32).alias("product_id"),
        pl.lit(1, dtype=pl.Int32).alias("quantity"),
    )
    full_lines.write_parquet(folder / "lines.parquet")
    (ws.raw / "manifest.json").write_text(json.dumps({"synthetic": True}), encoding="utf-8")
    from prepared_frames import sign_prepared

    sign_prepared(ws, "microdata", dt.date(2026, 10, 31))
    assert set(PREPARED_LINES.names) >= set(full_lines.columns)
    assert set(PREPARED_CUSTOMERS.names) >= set(customers.columns)
    return ws


def _kanon(ws, *extra):
    return main(
        [
            "kanon",
            "--workspace",
            str(ws.root),
            "--policy",
            "alloffice",
            "--purpose",
            "microdata",
            "--recipient",
            "purchasing",
            "--seed",
            "3",
            "--as-of",
            "2026-10-31",
            *extra,
        ]
    )


def _release(ws, **options):
    """The k-anonymous release through the library, charged to the controller's ledger."""
    from segments.anonymity.job import release_kanon
    from segments.privacy.jobs import open_ledger

    policy = Policy.load("alloffice")
    options = {"seed": 3, "as_of": dt.date(2026, 10, 31), **options}
    if isinstance(options.get("columns"), str):
        options["columns"] = options["columns"].split(",")
    context = release_context(
        lambda: open_ledger(ws, policy),
        ws,
        policy,
        purpose=options.pop("purpose", "microdata"),
        recipient=options.pop("recipient", "purchasing"),
        **{k: options.pop(k) for k in ("destination", "synthetic") if k in options},
    )
    return release_kanon(context, **options)


def _releases(ws):
    return sorted(p for p in ws.releases.iterdir() if not p.name.startswith("."))


def test_release_end_to_end_verified_from_the_file(workspace):
    _release(workspace, k=10, columns=COLUMNS)
    (folder,) = _releases(workspace)
    table = pl.read_parquet(folder / "table.parquet")
    cert = json.loads((folder / "certificate.json").read_text(encoding="utf-8"))
    # the file alone: no identifiers, every class of the quasi-identifiers has >= k rows
    assert "person_id" not in table.columns and "order_id" not in table.columns
    qis = cert["quasi_identifiers"]
    assert sorted(qis) == sorted(COLUMNS.split(","))
    assert table.group_by(qis).len()["len"].min() >= 10
    digest = hashlib.sha256((folder / "table.parquet").read_bytes()).hexdigest()
    assert cert["files"]["table.parquet"] == digest
    assert cert["released_rows"] == table.height
    assert cert["released_rows"] + cert["suppressed_rows"] == N
    assert cert["suppressed_rows"] <= 0.05 * N
    assert cert["privacy_model"]["k"] == 10 and cert["guarantee"] == "k-anonymous microdata"
    assert cert["metrics"]["risk"]["prosecutor"]["highest"] <= 0.1
    # every released value is a value of its hierarchy at the recorded level
    for q in qis:
        assert set(table[q]) <= set(cert["released_values"][q])


def test_release_is_recorded_in_the_ledger(workspace):
    from segments.privacy.ledger import Ledger

    _release(workspace, k=10, l=2, sensitive="spend_band", columns=COLUMNS)
    (folder,) = _releases(workspace)
    cert = json.loads((folder / "certificate.json").read_text(encoding="utf-8"))
    table = pl.read_parquet(folder / "table.parquet")
    assert (
        table.group_by(cert["quasi_identifiers"])
        .agg(pl.col("spend_band").n_unique())["spend_band"]
        .min()
        >= 2
    )
    ledger = Ledger.for_policy(Policy.load("alloffice"), create=False)  # the controller's
    (entry,) = ledger.entries()
    assert entry.release_id == folder.name == cert["release_id"]
    assert entry.request.kind == "kanon" and entry.status == "published"
    assert entry.files["table.parquet"] == cert["files"]["table.parquet"]
    assert entry.request.spec["levels"] == cert["levels"]
    assert cert["ledger_head_hash"] == entry.reserve_hash
    assert entry.files["certificate.json"] == sha256_file(folder / "certificate.json")
    assert ledger.verify_cards([folder / "certificate.json"])


def test_attack_an_edited_manifest_does_not_open_the_demo_ledger(workspace, capsys):
    """Issue 13.4: the manifest of this hand-made data says "synthetic": true. It is not
    what the generator makes, so the demo (and evaluation) ledger refuses it before any
    charge."""
    assert json.loads(workspace.manifest.read_text())["synthetic"] is True
    assert _kanon(workspace, "--k", "10", "--columns", COLUMNS, "--demo-ledger") == 2
    assert "not proven synthetic" in capsys.readouterr().err
    assert _releases(workspace) == [] and not (workspace.root / "ledger").exists()


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        ({"k": 5}, PolicyError, r"below policy 'alloffice' privacy.min_k=10 \(AO-1"),
        ({"k": 10, "l": 1, "sensitive": "spend_band"}, PolicyError, "min_l=2"),
        ({"k": 10, "segments": "fitted"}, PolicyError, r"sandbox \(AO-1\)"),
        ({"k": 5000}, KAnonymityError, "larger than the table"),
        (
            {"k": 10, "l": 9, "sensitive": "spend_band"},
            KAnonymityError,
            "no generalisation satisfies",
        ),
        (
            {"k": 10, "columns": "birth_year,shoe_size"},
            KAnonymityError,
            "unknown release column",
        ),
    ],
)
def test_refusals_write_nothing(workspace, extra, error, match):
    with pytest.raises(error, match=match):
        _release(workspace, **extra)
    assert _releases(workspace) == []


def test_recipient_and_purpose_guards(workspace):
    with pytest.raises(ReleaseRefusedError):
        _release(workspace, recipient="adtech-partner", k=10, columns=COLUMNS, seed=None)
    with pytest.raises(PolicyError):
        _release(workspace, purpose="no-such-purpose", k=10, seed=None)
    assert _releases(workspace) == []


def test_linkage_with_an_earlier_release_is_refused(workspace):
    _release(workspace, k=10, columns=COLUMNS)
    # the same columns again: same levels, the join adds nothing
    _release(workspace, k=10, columns=COLUMNS)
    # an attacker overriding the usefulness threshold still meets the linkage check
    with pytest.raises(KAnonymityError, match="joining this release .* refused"):
        _release(workspace, k=10, columns="postcode,customer_type", max_fully_generalised=2)
    assert len(_releases(workspace)) == 2


def _birth_years_and_genders(rng: np.random.Generator, n: int) -> pl.DataFrame:
    """``n`` people with a birth year (1950-1999, as text) and a gender drawn from ``rng``."""
    return pl.DataFrame(
        {
            "birth_year": rng.integers(1950, 2000, n).astype(str),
            "gender": rng.choice(["F", "M"], n),
        }
    )


def test_check_linkage_unit():
    rng = np.random.default_rng(1)
    df = _birth_years_and_genders(rng, 400)
    hs = customer_hierarchies(df)
    model = PrivacyModel(k=5)
    a = anonymise(df, hs, model, seed=rng, levels={"birth_year": 1, "gender": 1})
    b = anonymise(df, hs, model, seed=rng, levels={"birth_year": 4, "gender": 0})
    same = EarlierRelease("a", a.levels, 5)
    check_linkage(df, hs, a, [same])
    with pytest.raises(KAnonymityError, match="earlier release 'a'"):
        check_linkage(df, hs, b, [EarlierRelease("a", {"birth_year": 0, "gender": 1}, 5)])


def test_anonymise_and_write(tmp_path):
    rng = np.random.default_rng(2)
    customers, lines = _prepared(rng)
    labels = pl.DataFrame({"person_id": customers["person_id"], "segment": "paper"})
    table = customer_release_table(customers, lines, labels, ["birth_year", "gender", "spend_band"])
    assert isinstance(table, pd.DataFrame) and table["birth_year"].notna().all()
    assert "n/a" in table["birth_year"].to_list()
    hs = customer_hierarchies(table)
    anon = anonymise(table, hs, PrivacyModel(k=5, suppression_limit=0.05), seed=rng)
    again = anonymise(
        table, hs, PrivacyModel(k=5, suppression_limit=0.05), seed=np.random.default_rng(2 + 1)
    )

    def in_order(t: pd.DataFrame) -> pd.DataFrame:
        return t.sort_values(list(t.columns), ignore_index=True)

    assert isinstance(anon.table, pd.DataFrame) and len(anon.table) == anon.rows
    assert in_order(anon.table).equals(in_order(again.table))
    assert not anon.table.equals(again.table)  # different permutations
    cert = write_release(tmp_path / "r", anon)
    assert cert["levels"] == anon.levels
    with pytest.raises(WorkspaceError, match="never overwritten"):
        write_release(tmp_path / "r", anon)
    with pytest.raises(KAnonymityError, match="more than the suppression limit"):
        anonymise(
            table,
            hs,
            PrivacyModel(k=5),
            seed=rng,
            levels={"birth_year": 0, "gender": 0, "spend_band": 0},
        )


def test_private_segments_are_read_and_missing_ones_explained(workspace):
    from segments.exceptions import ReleaseRefusedError
    from segments.policy import Policy
    from segments.privacy.kmeans import fit_private_segments
    from segments.privacy.ledger import Ledger

    with pytest.raises(WorkspaceError, match="segments segment --private"):
        _release(workspace, k=10, segments="private", columns=COLUMNS)
    # hand-written labels without a DP k-means entry in the ledger are refused (item 3)
    customers = pl.read_parquet(workspace.prepared_dir("microdata") / "customers.parquet")
    labels = customers.select("person_id", pl.lit("1").alias("segment"))
    (workspace.segments / "private").mkdir(parents=True)
    labels.write_parquet(workspace.segments / "private" / "labels.parquet")
    (workspace.segments / "private" / "metadata.json").write_text('{"release_id": "x"}')
    with pytest.raises(ReleaseRefusedError, match="private segments refused"):
        _release(workspace, k=10, segments="private", columns=COLUMNS)
    assert not _releases(workspace) if workspace.releases.exists() else True
    policy = Policy.load("alloffice")
    ledger = Ledger.for_policy(policy)  # the ledger kanon charges: the controller's
    path = workspace.prepared_dir("microdata") / "lines.parquet"
    dated = pl.read_parquet(path).with_columns(pl.lit(dt.date(2026, 10, 1)).alias("order_date"))
    dated.write_parquet(path)  # the private model's features need order dates
    people = workspace.prepared_dir("microdata") / "customers.parquet"
    eligible = pl.read_parquet(people).with_columns(pl.lit(True).alias("profiling_eligible"))
    eligible.write_parquet(people)
    from prepared_frames import sign_prepared

    sign_prepared(workspace, "microdata", dt.date(2026, 10, 31))  # as prepare would write them
    fit_private_segments(
        release_context(ledger, workspace, policy, purpose="microdata", recipient="analytics"),
        as_of=dt.date(2026, 10, 31),
        seed=0,
    )
    _release(workspace, k=10, segments="private", columns=COLUMNS)
    (folder,) = _releases(workspace)
    cert = json.loads((folder / "certificate.json").read_text(encoding="utf-8"))
    assert cert["segments"] == "private_model"


def test_a_column_generalised_to_one_value_is_shown_warned_and_can_be_refused():
    """Low risk is not the whole story: the per-column loss (as ARX shows it) names a column
    that ends up '*' in every row, the table warns about it, and a threshold refuses it."""
    rng = np.random.default_rng(4)
    df = _birth_years_and_genders(rng, 300)
    hs = customer_hierarchies(df)
    model = PrivacyModel(k=5)
    anon = anonymise(df, hs, model, seed=rng, levels={"birth_year": 2, "gender": 1})
    loss = {c["column"]: c for c in anon.column_loss}
    assert loss["gender"]["fully generalised"] and loss["gender"]["released values"] == 1
    assert not loss["birth_year"]["fully generalised"]
    assert loss["birth_year"]["level"] == 2 and 0 < loss["birth_year"]["precision loss"] < 1
    assert anon.fully_generalised == ("gender",)
    (warning,) = anon.warnings()
    assert "gender" in warning and "no information" in warning
    assert anon.certificate()["column_loss"][1]["column"] == "gender"
    assert "gender 1" in repr(anon)
    with pytest.raises(KAnonymityError, match="gender to one value in every row"):
        anonymise(
            df, hs, model, seed=rng, levels={"birth_year": 2, "gender": 1}, max_fully_generalised=0
        )
    kept = anonymise(df, hs, model, seed=rng, levels={"birth_year": 2, "gender": 0})
    assert not kept.warnings() and kept.fully_generalised == ()


def test_the_cli_prints_the_information_kept_per_column(workspace, capsys):
    assert _kanon(workspace, "--k", "10", "--columns", COLUMNS) == 0
    out = capsys.readouterr().out
    assert "information kept per column" in out
    for column in COLUMNS.split(","):
        assert f"  {column} " in out


USELESS = "birth_year,gender,postcode,customer_type,segment"  # three end up '*' at N = 800


def test_the_policy_refuses_a_table_with_a_fully_generalised_column(workspace, capsys):
    """Issue 19: the threshold is the policy's (privacy.max_fully_generalised_columns, cited
    with its own clause); above it nothing is written and nothing is recorded."""
    from segments.privacy.ledger import Ledger

    policy = Policy.load("alloffice")
    assert policy.privacy.max_fully_generalised_columns == 0
    assert _kanon(workspace, "--k", "10", "--columns", USELESS) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "privacy.max_fully_generalised_columns" in err
    assert f"({policy.cite('useful_release')};" in err and "AO-4" in err
    assert "--columns county_code,segment,spend_band" in err
    assert "--max-fully-generalised" in err
    assert _releases(workspace) == []
    # a useful table passes; a threshold stricter than the policy's is no override
    assert _kanon(workspace, "--k", "10", "--columns", COLUMNS, "--max-fully-generalised", "0") == 0
    (entry,) = Ledger.for_policy(policy, create=False).entries()  # the refusal left none
    assert entry.request.spec["fully_generalised"]["override"] is False


def test_an_explicit_override_is_released_and_recorded(workspace, capsys):
    from segments.privacy.ledger import Ledger

    assert _kanon(workspace, "--k", "10", "--columns", USELESS, "--max-fully-generalised", "3") == 0
    out = capsys.readouterr().out
    assert "override: 3 column(s) fully generalised where policy 'alloffice' allows 0 (AO-4)" in out
    (folder,) = _releases(workspace)
    cert = json.loads((folder / "certificate.json").read_text(encoding="utf-8"))
    recorded = cert["fully_generalised"]
    assert recorded["override"] is True and recorded["policy_max"] == 0
    assert recorded["max_used"] == 3 and recorded["clause_ids"] == ["AO-4"]
    assert sorted(recorded["columns"]) == ["customer_type", "gender", "postcode"]
    (entry,) = Ledger.for_policy(Policy.load("alloffice"), create=False).entries()
    assert entry.request.spec["fully_generalised"] == recorded


def test_the_default_columns_keep_the_segment_and_the_main_job_uses_them():
    from segments.anonymity import RELEASE_COLUMNS
    from segments.pipeline import demo_steps, plan_budget

    assert "segment" in RELEASE_COLUMNS
    policy = Policy.load("alloffice")
    steps = demo_steps(Path("/tmp/ws"), policy, "2026-10-31", plan_budget(policy), 5_000)
    (kanon,) = [s for s in steps if s.argv[0] == "kanon"]
    assert kanon.argv[kanon.argv.index("--columns") + 1] == ",".join(RELEASE_COLUMNS)
    assert "--max-fully-generalised" not in kanon.argv  # the policy's threshold applies


@pytest.mark.parametrize(("value", "problem"), [(-1, "negative value"), (1.5, "integer")])
def test_a_bad_threshold_in_a_policy_file_is_refused(tmp_path, value, problem):
    text = (Path(Policy.load("alloffice").path).read_text(encoding="utf-8")).replace(
        "max_fully_generalised_columns = 0", f"max_fully_generalised_columns = {value}"
    )
    path = tmp_path / "mine.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError, match=f"privacy.max_fully_generalised_columns.*{problem}"):
        Policy.load(path)
