"""Tests of segments.session: an analyst's own queries, planned, charged once, refused early."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from prepared_frames import verified_plan
from release_helpers import person_cell_query, release_context, run_unaccounted

import segments
from segments._tables import read_table
from segments.exceptions import PolicyError, ReleaseRefusedError
from segments.policy import Policy
from segments.prepare import prepare
from segments.privacy.ledger import Ledger
from segments.privacy.specs import SPECS, PrivacyParams, SegmentSource, is_series_query
from segments.session import Session, count, mean
from segments.session import sum as total
from segments.workspace import Workspace

AS_OF = dt.date(2026, 10, 31)
PURPOSE = "statistics"


@pytest.fixture(scope="module")
def prepared_ws(small_raw: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The small generated dataset, prepared for statistics (read-only: copy to write)."""
    ws = Workspace(tmp_path_factory.mktemp("session") / "ws")
    shutil.copytree(small_raw.raw, ws.raw)
    prepare(ws, "alloffice", PURPOSE, AS_OF)
    return ws


@pytest.fixture()
def ws(prepared_ws: Workspace, tmp_path: Path) -> Workspace:
    copy = Workspace(tmp_path / "ws")
    shutil.copytree(prepared_ws.root, copy.root)
    return copy


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    return Ledger.for_policy(Policy.load("alloffice"), path=tmp_path / "ledger.sqlite", init=True)


def _session(ws: Workspace, ledger: Ledger | None = None, **kw) -> Session:
    kw.setdefault("recipient", "purchasing")
    return segments.Session(ws, "alloffice", PURPOSE, ledger=ledger, as_of=AS_OF, **kw)


# --- refusals before anything runs ------------------------------------------------------------
def test_undeclared_purpose_recipient_and_destination_are_refused(ws):
    with pytest.raises(PolicyError, match=r"purpose 'marketing' is not declared.*AO-10"):
        Session(ws, "alloffice", "marketing", "purchasing")
    with pytest.raises(ReleaseRefusedError, match=r"recipient 'nobody' is not declared.*AO-10"):
        Session(ws, "alloffice", PURPOSE, "nobody")
    with pytest.raises(ReleaseRefusedError, match="third party"):
        Session(ws, "alloffice", PURPOSE, "adtech-partner")
    with pytest.raises(ReleaseRefusedError, match="destination 'US'"):
        Session(ws, "alloffice", PURPOSE, "purchasing", destination="US")


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda s: s.table("orders"), PolicyError, "table 'orders' is unknown"),
        (
            lambda s: s.table("customers").group_by("postcode"),
            ReleaseRefusedError,
            r"group by 'postcode' refused: not a public key set.*AO-1",
        ),
        (
            lambda s: s.table("customers").group_by("person_id"),
            ReleaseRefusedError,
            "not a public key set",
        ),
        (
            lambda s: s.table("customers").group_by("category"),
            ReleaseRefusedError,
            "not a public key set of table 'customers'",
        ),
        (
            lambda s: s.table("customers").filter(birth_year="1970"),
            ReleaseRefusedError,
            r"filter on 'birth_year' refused: not a public attribute of the person.*AO-1",
        ),
        (
            lambda s: s.table("purchases").filter(category="paper"),
            ReleaseRefusedError,
            r"filter on 'category' refused: not an attribute of the person.*group by 'category'",
        ),
        (
            lambda s: s.table("customers").filter(industry="Z"),
            PolicyError,
            r"filter industry='Z' is not in the public list",
        ),
        (
            lambda s: s.table("customers").group_by("county").agg(total("units")),
            PolicyError,
            r"sum\('units'\) needs a public bound.*bounds=\(0, N\)",
        ),
        (
            lambda s: s.table("customers").group_by("county").agg(mean("orders")),
            PolicyError,
            "needs a public bound",
        ),
        (
            lambda s: s.table("purchases").group_by("category").agg(count()),
            PolicyError,
            "count people",
        ),
        (
            lambda s: s.table("purchases").group_by("category").agg(total("spend", bounds=(0, 10))),
            PolicyError,
            "come from the policy",
        ),
        (
            lambda s: s.table("customers").group_by("county").agg(total("spend", bounds=(5, 1))),
            PolicyError,
            "0 <= lower < upper",
        ),
        (
            lambda s: s.table("customers").group_by("county").agg(total("spend:chairs")),
            PolicyError,
            "'chairs' is not a product category",
        ),
    ],
)
def test_refusals_name_the_rule_and_the_fix(ws, build, error, match):
    s = _session(ws)
    with pytest.raises(error, match=match):
        build(s)


def test_refusals_at_release_spend_nothing(ws, ledger):
    s = _session(ws, ledger)
    no_keys = s.table("customers").agg(count())
    with pytest.raises(PolicyError, match="needs group_by"):
        no_keys.release(epsilon=0.5)
    monthly = s.table("purchases").group_by("category", "month").agg(total("units"))
    with pytest.raises(PolicyError, match="needs a window"):
        monthly.plan(epsilon=0.5)
    no_category = s.table("purchases").group_by("segment").agg(total("units"))
    with pytest.raises(PolicyError, match="add 'category'"):
        no_category.release(epsilon=0.5)
    with pytest.raises(PolicyError, match="positive finite"):
        s.table("customers").group_by("county").agg(count()).release(epsilon=float("nan"))
    assert ledger.entries() == []
    assert not ws.releases.exists() or not any(ws.releases.iterdir())


def test_segment_source_that_does_not_allow_the_recipient_is_refused(ws, tmp_path):
    # labels of a model fitted on the private data: "DP given a non-private segmentation"
    customers = pl.read_parquet(ws.prepared_dir(PURPOSE) / "customers.parquet")
    labels = tmp_path / "labels.parquet"
    customers.select("person_id", pl.lit("0").alias("segment")).write_parquet(labels)
    fitted = SegmentSource.from_labels(labels, "fitted_model", ["0", "1"])
    s = _session(ws, recipient="eu-logistics-processor", destination="FI", segments=fitted)
    with pytest.raises(ReleaseRefusedError, match=r"\(AO-1\) and goes to internal recipients only"):
        s.table("customers").group_by("segment").agg(count())
    with pytest.raises(ReleaseRefusedError, match="internal recipients only"):
        s.table("customers").filter(segment="0").group_by("county").agg(count())
    # the same query is fine for an internal recipient (stated as such)
    internal = _session(ws, segments=fitted)
    planned = internal.table("customers").group_by("segment").agg(count()).plan(epsilon=0.5)
    assert planned.guarantee == "DP given a non-private segmentation"


# --- plan, release, one charge ---------------------------------------------------------------
def test_plan_spends_nothing_and_release_charges_once(ws, ledger):
    s = _session(ws, ledger)
    q = (
        s.table("customers")
        .filter(industry="P")
        .group_by("county")
        .agg(count(), total("spend", bounds=(0, 50_000)), mean("spend", bounds=(0, 50_000)))
    )
    planned = q.plan(epsilon=0.5)
    assert ledger.entries() == []
    assert planned.privacy_loss.epsilon == pytest.approx(0.5)
    assert set(planned.accuracy["aggregate"]) == {"count", "sum_spend"}
    # Laplace at ε/2 per aggregate: count sensitivity 1, sum 50,000 (the caller's bound)
    scales = dict(zip(planned.accuracy["aggregate"], planned.accuracy["scale"], strict=True))
    assert scales == pytest.approx({"count": 4.0, "sum_spend": 200_000.0})
    relative = planned.relative({"count": 40})
    assert relative.loc[relative["aggregate"] == "count", "relative"].item() > 0
    table = q.release(epsilon=0.5)
    assert isinstance(table, pd.DataFrame)
    assert len(ledger.entries()) == 1
    assert ledger.entries()[0].request.epsilon == pytest.approx(0.5)
    assert len(table) == 21 and table["county_name"].iloc[0] == "Stockholm"
    for column in ("count", "count_lower", "count_upper", "count_scale", "sum_spend", "mean_spend"):
        assert column in table.columns
    card_path = Path(table.attrs["path"]) / "card.json"
    card = card_path.read_text(encoding="utf-8")
    assert "filter(industry=['P'])" in card and '"spend_sek": [\n' in card  # caller's bound


def test_queries_released_together_share_one_charge(ws, ledger):
    s = _session(ws, ledger)
    by_type = s.table("customers").group_by("customer_type").agg(count())
    by_industry = s.table("customers").group_by("industry", "size_band").agg(count())
    result = s.release([by_type, by_industry], epsilon=0.6, weights=(1, 2))
    assert len(ledger.entries()) == 1
    assert result.privacy_loss.epsilon == pytest.approx(0.6)
    assert set(result) == {"customers_by_customer_type", "customers_by_industry_size_band"}
    industry = result["customers_by_industry_size_band"]
    assert len(industry) == 21 * 5
    assert "Education" in set(industry["industry_name"])


def test_category_by_month_for_one_county(ws, ledger):
    s = _session(ws, ledger)
    q = (
        s.table("purchases")
        .filter(county="01")
        .during("2026-04", "2026-06")
        .group_by("category", "month")
        .agg(total("spend"), total("units"))
    )
    table = q.release(epsilon=0.5)
    assert len(table) == 10 * 3
    assert list(table["month"].unique()) == ["2026-04", "2026-05", "2026-06"]
    assert "category_name" in table.columns and (table["sum_units"] >= 0).all()


# --- the named release specifications as session queries -------------------------------------
def _as_session_queries(s: Session, name: str) -> list:
    customers, purchases = s.table("customers"), s.table("purchases")
    spend = (count(), total("spend"), mean("spend"))
    queries = {
        "customers_by_county": customers.group_by("county").agg(count()),
        "customers_by_county_segment": customers.group_by("county", "segment").agg(count()),
        "spend_by_segment": customers.group_by("segment").agg(*spend),
        "spend_by_county_segment": customers.group_by("county", "segment").agg(*spend),
        "category_by_segment": purchases.group_by("segment", "category").agg(
            total("spend"), total("units")
        ),
        "monthly_category": purchases.during("2026-09")
        .group_by("category")
        .agg(total("units"), total("spend")),
        "survey_by_county_type": s.table("surveys")
        .group_by("county", "customer_type")
        .agg(count(), total("score"), mean("score")),
        "survey_national": s.table("surveys")
        .group_by("scope")
        .agg(count(), total("score"), mean("score")),
        "customers_by_type": customers.group_by("customer_type").agg(*spend),
        "buyers_by_type": s.table("buyers").group_by("customer_type").agg(count()),
    }
    return [queries[q].named(q) for q in SPECS[name].queries]


SEVEN = (
    "segment_overview",
    "month_closing",
    "spend_by_segment",
    "customers_by_county_segment",
    "category_mix",
    "monthly_category",
    "survey_experience",
    "survey_national",
)


def _spec_plan(ws: Workspace, name: str):
    policy = Policy.load("alloffice")
    spec = SPECS[name]
    window = (dt.date(2026, 9, 1), dt.date(2026, 10, 1)) if name == "monthly_category" else None
    # the prepared frames through verified_frames, as every release job reads them
    return verified_plan(
        ws,
        spec,
        PrivacyParams.from_policy(policy, PURPOSE),
        PURPOSE,
        surveys=ws.raw_table("surveys"),
        segments=SegmentSource.category_rule(),
        as_of=AS_OF,
        window=window,
        workspace=ws,
    )


@pytest.mark.parametrize("name", [*SEVEN, "scale_probe", "scale_probe_month"])
def test_named_specs_as_session_queries_plan_the_same_charge_and_noise(ws, name):
    spec = SPECS[name]
    s = _session(ws)
    planned = s.plan(_as_session_queries(s, name), epsilon=spec.epsilon, weights=spec.weights)
    with _spec_plan(ws, name) as plan:
        assert planned.privacy_loss == plan.loss  # identical charge
        expected = plan.accuracy
    assert list(planned.accuracy["query"]) == list(expected["query"])
    assert list(planned.accuracy["scale"]) == list(expected["scale"])  # identical noise
    assert list(planned.accuracy["cells"]) == list(expected["cells"])


#: The sign test's level for each specification: a correct session path fails it with
#: probability at most this (the exact binomial test is conservative), so the eight
#: specifications of the test below fail together with probability at most 8e-7 < 1e-6.
#: (At 1e-3 the eight tests failed together about once in 125 runs: survey_national did,
#: at p = 0.00085, with nothing wrong.)
SIGN_TEST_LEVEL = 1e-7
#: Sign votes each specification collects: enough that a bias of a fifth of the noise's
#: standard deviation is found at SIGN_TEST_LEVEL (per-segment cells vote once per segment),
#: in at most 100 runs, or 1,000 for a specification whose run gives at most 4 votes (one
#: cell: survey_national, whose runs are cheap; it stopped at 200 votes before).
SIGN_VOTES, SIGN_VOTES_PER_SEGMENT = 2000, 400


def _sign_votes(
    ws: Workspace, s: Session, name: str, queries: list, shift: dict[str, float] | None = None
) -> tuple[int, int]:
    """How often the specification's noisy value exceeds the session's, and falls below it,
    over uncharged runs of both (until :data:`SIGN_VOTES` non-zero differences, at most 100
    runs, or 1,000 when a run gives at most 4 votes). ``shift`` (aggregate → amount) adds a
    bias to every session value: a deliberately broken mechanism, which the test must
    catch."""
    spec = SPECS[name]
    above = below = 0
    session_spec, window = s._spec(queries, spec.epsilon, spec.weights)
    # a per-cell query keyed by segment draws one private bound per segment: its cells move
    # together within a run, so they vote once per segment (one vote per cell would count
    # one draw of a segment's bound many times, and the sign test's signs are not independent)
    per_segment = any(d.frame == "cells" and "segment" in d.by for d in spec.query_defs)
    votes = SIGN_VOTES_PER_SEGMENT if per_segment else SIGN_VOTES
    with _spec_plan(ws, name) as plan, s._plan(session_spec, window, queries) as ours:
        runs = 100
        for run in range(1000):
            if above + below >= votes or run >= runs:
                break
            theirs_raw, ours_raw = run_unaccounted(plan), run_unaccounted(ours)
            for definition in spec.query_defs:
                keys = list(definition.by)
                mine = ours_raw[definition.name].with_columns(
                    pl.col(agg) + amount
                    for agg, amount in (shift or {}).items()
                    if agg in definition.aggregates
                )
                joined = theirs_raw[definition.name].join(
                    mine, on=keys, suffix="_session", nulls_equal=True
                )
                assert joined.height == theirs_raw[definition.name].height  # the same cells
                by_segment = per_segment and definition.frame == "cells"
                for agg in definition.aggregates:
                    differences = joined.select(
                        *(["segment"] if by_segment else []),
                        (pl.col(agg) - pl.col(f"{agg}_session")).alias("diff"),
                    ).drop_nulls()
                    if by_segment:
                        differences = differences.group_by("segment").agg(pl.col("diff").sum())
                    diff = differences["diff"].to_numpy()
                    above += int(np.count_nonzero(diff > 0))
                    below += int(np.count_nonzero(diff < 0))
            if run == 0 and above + below <= 4:
                runs = 1000  # one cell: cheap runs, and 100 would give only 200 votes
    return above, below


@pytest.mark.parametrize("name", SEVEN)
def test_named_specs_as_session_queries_release_the_same_figures_and_charges(ws, name):
    """Each release specification and its session queries: the same charge in the ledger,
    and the same figures up to noise — over further uncharged runs of each (until 2,000
    cell values, at most 100 runs, 1,000 for one cell), the spec's noisy value minus the
    session's is as often above zero as below (two independent draws of one mechanism
    differ symmetrically, and every vote is an independent cell or aggregate).

    Level :data:`SIGN_TEST_LEVEL` per spec: false failures at most 8e-7 for the eight. A
    bias of one path against the other of a fifth of the noise's standard deviation fails
    this sign test for every spec with 2,000 values (measured by shifting the differences:
    p from 5e-9 to 6e-178); survey_national, one cell of two aggregates, now reaches 2,000
    values too (it stopped at 200), and the test below shows a biased path fails it."""
    from scipy.stats import binomtest

    policy = Policy.load("alloffice")
    spec = SPECS[name]
    spec_ledger = Ledger.for_policy(policy, path=ws.root / "spec.sqlite", init=True)
    with _spec_plan(ws, name) as plan:
        by_spec = plan.execute(
            release_context(spec_ledger, ws, policy, purpose=PURPOSE, recipient="purchasing")
        )
    s = _session(ws, spec_ledger)  # a controller has one ledger: both charges go there
    queries = _as_session_queries(s, name)
    if any(is_series_query(q) for q in spec.query_defs):
        # the series is released once a month whichever path asks: the session's copy of it
        # (worded its own way) is refused on the same ledger before any charge; its charge
        # is the plan's (until 2026-12-06 the copy was not recognised as the series and a
        # second release of the month went through the session)
        with pytest.raises(ReleaseRefusedError, match="it is released once"):
            s.release(queries, epsilon=spec.epsilon, weights=spec.weights)
        (spec_charge,) = spec_ledger.entries()
        planned = s.plan(queries, epsilon=spec.epsilon, weights=spec.weights)
        assert planned.privacy_loss == spec_charge.loss
        assert by_spec.card["privacy_loss"]["epsilon"] == pytest.approx(spec.epsilon)
    else:
        by_session = s.release(queries, epsilon=spec.epsilon, weights=spec.weights)
        spec_charge, session_charge = spec_ledger.entries()
        assert session_charge.loss == spec_charge.loss
        assert session_charge.request.epsilon == spec_charge.request.epsilon
        assert by_session.card["privacy_loss_per_query"] == by_spec.card["privacy_loss_per_query"]

    above, below = _sign_votes(ws, s, name, queries)
    assert above + below >= 20, (above, below)
    assert binomtest(above, above + below).pvalue > SIGN_TEST_LEVEL, (above, below)


@pytest.mark.parametrize("name", ["survey_national", "survey_experience"])
def test_the_sign_test_fails_a_session_path_biased_by_its_noise_scale(ws, name):
    """The sign test above can fail: a session path whose every value is shifted by one
    noise scale (the plan's Laplace scale b of each aggregate: 0.7 of a standard deviation)
    gives p far below :data:`SIGN_TEST_LEVEL`. With 2,000 votes a shift of b moves the
    chance of a positive difference from 1/2 to about 0.72 (difference of two Laplace draws),
    some 20 standard deviations of the vote count away, so this test does not flake either."""
    from scipy.stats import binomtest

    s = _session(ws)
    spec = SPECS[name]
    queries = _as_session_queries(s, name)
    accuracy = s.plan(queries, epsilon=spec.epsilon, weights=spec.weights).accuracy
    scales = {
        str(row.aggregate).removeprefix("sum_"): float(row.scale) for row in accuracy.itertuples()
    }
    shift = {agg: -scale for agg, scale in scales.items()}  # spec minus session: positive
    above, below = _sign_votes(ws, s, name, queries, shift=shift)
    assert above + below >= 1000, (above, below)
    assert binomtest(above, above + below).pvalue < SIGN_TEST_LEVEL, (above, below, scales)
    assert above > below


def test_a_customers_query_counts_every_person_spenders_or_not(ws):
    """`table('customers')` is everyone in the prepared frame, zero spend included (only
    `table('buyers')` keeps spenders): at a large ε the released counts per customer type add
    up to the frame's people, and dropping the non-spenders would miss by more than the noise
    could. The sign test above pools every query, where a few missing people per county hide."""
    s = _session(ws)
    query = s.table("customers").group_by("customer_type").agg(count()).named("everyone")
    epsilon = 50.0  # uncharged (run_unaccounted): the noise only has to be small beside the gap
    (scale,) = s.plan([query], epsilon=epsilon).accuracy["scale"]
    spec, window = s._spec([query], epsilon, None)
    with s._plan(spec, window, [query]) as plan:
        frame = pl.read_parquet(plan.queries[0].data_path)
        released = run_unaccounted(plan)["everyone"]
    non_spenders = frame.filter(pl.col("spend_sek") <= 0).height
    tolerance = 8 * float(scale) * released.height**0.5  # ~4 standard deviations of the sum
    assert non_spenders > 2 * tolerance, (non_spenders, tolerance)  # so the test can fail
    assert abs(int(released["count"].sum()) - frame.height) <= tolerance, (
        released["count"].sum(),
        frame.height,
        tolerance,
    )


# --- segments query FILE -------------------------------------------------------------------------
def test_cli_query_file_plans_then_charges_once(ws, tmp_path, capsys):
    from segments.cli.main import main
    from segments.privacy.ledger import default_ledger_path

    example = Path(__file__).resolve().parents[1] / "examples" / "query.toml"
    text = example.read_text(encoding="utf-8").replace(
        'destination = "SE"', 'destination = "SE"\nas_of = "2026-10-31"'
    )
    query_file = tmp_path / "query.toml"
    query_file.write_text(text, encoding="utf-8")
    args = ["query", str(query_file), "-w", str(ws.root)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "schools_by_county" in out and "nothing was charged" in out
    assert not default_ledger_path("AllOffice Nordic AB").exists()
    assert main(args) == 0  # the controller's ledger, as for segments release
    out = capsys.readouterr().out
    assert "released schools_by_county-" in out and "Stockholm" in out
    # withheld cells stay visible: the status column, each reason printed once below
    assert "mean_spend_status" in out
    for number in set(re.findall(r"not published \[(\d+)\]", out)):
        assert f"\n[{number}] " in out
    ledger = Ledger.for_policy(Policy.load("alloffice"))
    assert [e.request.epsilon for e in ledger.entries()] == [pytest.approx(0.5)]
    card = next(ws.releases.glob("schools_by_county-*/card.json")).read_text(encoding="utf-8")
    assert "session_queries" in card and "bounds=(0, 50000)" in card


def test_cli_query_prints_why_a_cell_is_withheld():
    """`segments query` shows each *_status column; a withheld cell is numbered and its
    reason printed once below the table."""
    from segments.cli.query import _printable

    table = pd.DataFrame(
        {
            "county": ["01", "03", "04"],
            "mean_spend": [1200.0, np.nan, np.nan],
            "mean_spend_noisy": [1201.0, 5.0, 7.0],
            "mean_spend_status": [
                "published",
                "not published: the noisy sum and count do not support a mean",
                "not published: the noisy sum and count do not support a mean",
            ],
        }
    )
    text, reasons = _printable(table, rows=10)
    assert "mean_spend_status" in text and "mean_spend_noisy" not in text
    assert text.count("not published [1]") == 2 and "published" in text.splitlines()[1]
    assert reasons == ["[1] the noisy sum and count do not support a mean"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("epsilon = 0.5", "epsilon = 'half'"), "epsilon: 'half' is not"),
        (lambda t: t.replace('recipient = "purchasing"', ""), "recipient: is missing"),
        (lambda t: "colour = 'red'\n" + t, "colour: is not a known key"),
        (
            lambda t: t.replace('{ industry = "P" }', '{ birth_year = "1970" }'),
            r"\[\[query\]\] #1: filter on 'birth_year' refused",
        ),
        (lambda t: t.replace('"sum:spend"', '"total:spend"'), "'total:spend' is not count"),
        (lambda t: t.replace("table = ", "tabel = "), r"query #1.tabel: is unknown"),
        (lambda t: t.replace("[[query]]", "[query]"), "query: needs at least one"),
    ],
)
def test_cli_query_file_errors_are_one_line_and_spend_nothing(ws, tmp_path, capsys, edit, match):
    from segments.cli.main import main

    example = Path(__file__).resolve().parents[1] / "examples" / "query.toml"
    query_file = tmp_path / "query.toml"
    query_file.write_text(edit(example.read_text(encoding="utf-8")), encoding="utf-8")
    assert main(["query", str(query_file), "-w", str(ws.root)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no privacy budget was spent" in err
    import re

    assert re.search(match, err), err
    assert not ws.releases.exists() or not any(ws.releases.iterdir())


# --- the schools task against the synthetic truth ------------------------------------------------
def _true_schools_by_county(ws: Workspace, bound: int) -> pd.DataFrame:
    """Customers of SNI section P per county and their spend clipped at ``bound``, computed
    from the prepared frames the way the release's per-person frame is (whole SEK per cell)."""
    prepared = ws.prepared_dir(PURPOSE)
    customers = pl.read_parquet(prepared / "customers.parquet").filter(pl.col("industry") == "P")
    lines = read_table(prepared / "lines.parquet").filter(pl.col("order_date") < AS_OF)
    spend = (
        lines.group_by("person_id", "category")
        .agg(pl.col("amount_sek").sum().round(0).cast(pl.Int64).alias("sek"))
        .group_by("person_id")
        .agg(pl.col("sek").sum().alias("spend"))
    )
    people = customers.join(spend, on="person_id", how="left").with_columns(
        pl.col("spend").fill_null(0).clip(0, bound)
    )
    truth = people.group_by("county_code").agg(
        pl.len().cast(pl.Int64).alias("true_count"), pl.col("spend").sum().alias("true_spend")
    )
    return truth.to_pandas()


def test_schools_task_is_within_the_planned_accuracy_of_the_truth(ws, ledger):
    """Statistical: each cell's interval holds at 95 % — over 3 releases (126 cells), at
    least 88 % of the noisy values lie within the planned half-width of the truth."""
    bound = 50_000
    s = _session(ws, ledger)
    schools = (
        s.table("customers")
        .filter(industry="P")
        .group_by("county")
        .agg(count(), total("spend", bounds=(0, bound)), mean("spend", bounds=(0, bound)))
    )
    planned = schools.plan(epsilon=0.5)
    half = dict(zip(planned.accuracy["aggregate"], planned.accuracy["accuracy"], strict=True))
    truth = _true_schools_by_county(ws, bound)
    within, cells = 0, 0
    for _ in range(3):
        table = schools.release(epsilon=0.5).merge(truth, on="county_code", how="left")
        table = table.fillna({"true_count": 0, "true_spend": 0})
        for noisy, true, aggregate in (
            ("count_noisy", "true_count", "count"),
            ("sum_spend_noisy", "true_spend", "sum_spend"),
        ):
            errors = (table[noisy] - table[true]).abs()
            within += int((errors <= half[aggregate]).sum())
            cells += len(errors)
    assert cells == 126 and truth["true_count"].sum() > 20
    assert within >= 0.88 * cells, (within, cells)
    assert len(ledger.entries()) == 3


# --- empirical DP audit of a filtered, grouped session query ---------------------------------
@pytest.mark.slow
def test_dp_audit_of_a_filtered_grouped_query_and_a_mis_bounded_one(tmp_path):
    """Neighbours differ by one PERSON through the real prepare (a sole trader with two
    accounts, the heaviest buyer): the filtered, grouped query's empirical ε stays at or
    below the charged ε; a query whose mechanism clips at a larger bound than the one its
    claim was computed for is refuted."""
    from segments.audit.mechanisms import audit_cases, person_release_cases, raw_person_neighbours
    from segments.privacy.specs import ReleaseSpec

    policy = Policy.load("alloffice")
    neighbours = raw_person_neighbours(policy, tmp_path / "raw")
    s = Session(tmp_path / "none", policy, PURPOSE, "purchasing")
    cases = []
    for i, person in enumerate(neighbours):
        epsilon = 1.0
        honest = ReleaseSpec("audit", ("q",), epsilon, definitions=(person_cell_query(s, person),))
        cases += person_release_cases(
            policy, [person], tmp_path / f"h{i}", [("session", honest, None)]
        )
        if person.label == "the heaviest buyer":
            # the claim is computed for a 1,000 SEK bound; the mechanism clips at 100 times
            # that with the same noise scale (its true loss is 100 times the claim)
            wide = ReleaseSpec(
                "audit",
                ("q",),
                epsilon * 100,
                definitions=(person_cell_query(s, person, 100_000),),
            )
            (broken,) = person_release_cases(
                policy, [person], tmp_path / f"b{i}", [("mis-bounded", wide, None)]
            )
            broken.claimed_epsilon = epsilon
            broken.name = "MIS-BOUNDED: " + broken.name
            cases.append(broken)
    results = audit_cases(cases, trials=300)
    sound = [r for r in results if not r.name.startswith("MIS-BOUNDED")]
    assert {r.name.split(" without ")[1] for r in sound} == {
        "a sole trader with two accounts",
        "the heaviest buyer",
    }
    for result in sound:
        assert result.passed, result.as_dict()
    (refuted,) = [r for r in results if r.name.startswith("MIS-BOUNDED")]
    assert not refuted.passed, refuted.as_dict()


def _filtered_grouped_cases(tmp_path, policy, neighbours, true_epsilon: float, label: str):
    """One audit case per removed person: spend and count per county of the person's own
    customer type and industry (a filtered, grouped session query) at ``true_epsilon``."""
    from segments.audit.mechanisms import person_release_cases
    from segments.privacy.specs import ReleaseSpec

    s = Session(tmp_path / "none", policy, PURPOSE, "purchasing")
    cases = []
    for i, person in enumerate(neighbours):
        query = person_cell_query(s, person)
        spec = ReleaseSpec("audit", ("q",), true_epsilon, definitions=(query,))
        cases += person_release_cases(
            policy, [person], tmp_path / f"{label}{i}", [(label, spec, None)]
        )
    return cases


@pytest.mark.slow
def test_dp_audit_refutes_a_release_that_spends_twice_its_claim(tmp_path):
    """r17 #3: the same filtered, grouped query, audited through the likelihood ratio of
    the removed person's whole cell (count and spend together: each alone carries half the
    ε, so the one-number test can never refute a 2x under-claim). A release at ε 2 whose
    card claims 1 is refuted at 2,000 trials; the honest releases at ε 1 (a sole trader's two
    accounts, the heaviest buyer) are not. benchmarks/bench_dp_audit_2x.py at 20,000 trials:
    lower bounds 1.82 (2x), 1.38 (1.5x), 0.95 and 0.94 (honest); one number: 0.66 at 2x."""
    from segments.audit.mechanisms import audit_cases, raw_person_neighbours, with_likelihood_ratio

    policy = Policy.load("alloffice")
    neighbours = raw_person_neighbours(policy, tmp_path / "raw")
    honest = _filtered_grouped_cases(tmp_path, policy, neighbours, 1.0, "honest")
    heaviest = [p for p in neighbours if p.label == "the heaviest buyer"]
    (twice,) = _filtered_grouped_cases(tmp_path, policy, heaviest, 2.0, "twice")
    twice.claimed_epsilon, twice.name = 1.0, "TWICE ITS CLAIM: " + twice.name
    assert all(c.claimed_epsilon == pytest.approx(1.0) for c in honest)
    cases = [with_likelihood_ratio(c, pilot_trials=300) for c in [*honest, twice]]
    results = audit_cases(cases, trials=2000)
    *sound, refuted = results
    for result in sound:
        assert result.passed, result.as_dict()
    assert not refuted.passed, refuted.as_dict()


# --- issue 16: a DP release keyed by a declared non-county geography --------------------------
@pytest.mark.slow
def test_release_keyed_by_a_declared_country_geography(tmp_path, capsys):
    """An ingested export declaring a country geography: a session groups by country (every
    country of the public table, never the data's), and county is refused with the fix."""
    import os

    from realexports import CDNOW, build_eu_export

    from segments.cli.main import main

    if not CDNOW.exists():
        pytest.skip(f"{CDNOW} not found")
    examples = Path(__file__).resolve().parents[1] / "examples" / "cdnow"
    export, mapping, _ = build_eu_export(tmp_path / "export", n_rows=4000)
    ws, key = tmp_path / "ws", tmp_path / "steward.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)  # the steward's alone (a readable key file is refused)
    policy_file = str(examples / "policy.toml")
    assert main(["ingest", "-w", str(ws), str(export), "--mapping", str(mapping)]) == 0
    assert main(["prepare", "-w", str(ws), "--policy", policy_file, "--purpose", "statistics",
                 "--as-of", "1998-06-30", "--key-file", str(key)]) == 0  # fmt: skip
    capsys.readouterr()
    policy = Policy.load(policy_file)
    ledger = Ledger.for_policy(policy, path=tmp_path / "ledger.sqlite", init=True)
    s = Session(ws, policy, PURPOSE, "purchasing", ledger=ledger, as_of="1998-07-01")
    with pytest.raises(ReleaseRefusedError, match="declares country, not Swedish counties"):
        s.table("customers").group_by("county")
    table = s.table("customers").group_by("country").agg(count(), total("spend")).release(0.5)
    countries = pl.read_csv(
        Path(segments.__file__).parent / "reference" / "countries.csv", infer_schema=False
    )
    assert list(table["country"]) == countries["country_code"].to_list()  # the public table
    assert table.set_index("country").loc["DE", "country_name"] == "Germany"
    assert table.attrs["guarantee"] == "end-to-end ε-DP" and len(ledger.entries()) == 1


# --- quantiles ------------------------------------------------------------------------------------
def test_median_is_charged_as_planned_and_lands_near_the_true_median(ws, ledger):
    """OpenDP's exponential mechanism over public candidates: the loss OpenDP maps is the
    share asked for, and the released median of per-person spend (bounded at 50,000 SEK) lies
    between the true 25th and 75th percentiles of the clipped values in each customer type."""
    s = _session(ws, ledger)
    q = (
        s.table("customers")
        .group_by("customer_type")
        .agg(count(), segments.agg.median("spend", bounds=(0, 50_000)))
    )
    planned = q.plan(epsilon=1.0)
    assert planned.privacy_loss.epsilon == pytest.approx(1.0)
    row = planned.accuracy.set_index("aggregate").loc["quantile_50_spend"]
    assert "rank is within" in row["note"] and "rank ±" in repr(planned)
    # data-free rank half-width: 2 max(q, 1-q) / ε_share × ln((101 - 1) / 0.05), ε_share = 1/2
    assert row["rank_accuracy"] == pytest.approx(2 * 0.5 / 0.5 * np.log(100 / 0.05), rel=1e-6)
    table = q.release(epsilon=1.0).set_index("customer_type")
    assert ledger.entries()[0].request.epsilon == pytest.approx(1.0)
    prepared = ws.prepared_dir(PURPOSE)
    spend = (
        read_table(prepared / "lines.parquet")
        .filter(pl.col("order_date") < AS_OF)
        .group_by("person_id", "category")
        .agg(pl.col("amount_sek").sum().round(0).alias("sek"))
        .group_by("person_id")
        .agg(pl.col("sek").sum().clip(0, 50_000).alias("spend"))
    )
    people = pl.read_parquet(prepared / "customers.parquet").join(spend, on="person_id", how="left")
    people = people.with_columns(pl.col("spend").fill_null(0))
    for kind, rows in people.group_by("customer_type"):
        low, high = rows["spend"].quantile(0.25), rows["spend"].quantile(0.75)
        released = table.loc[kind[0], "quantile_50_spend"]
        assert low - 500 <= released <= high + 500, (kind, low, released, high)
        # the planned rank interval: the released candidate's rank is within ± R people of
        # the exact median's, plus the people between two neighbouring candidates. Each cell
        # holds with probability >= 95 % by a union bound over the 100 other candidates (a
        # simulation at ε 0.5, 2,000 values: largest deviation 4 people against R + gap 19)
        values = np.sort(rows["spend"].to_numpy())
        below = int(np.searchsorted(values, released, side="left"))
        gap = 500 + 1  # candidates are 500 SEK apart between 0 and 50,000
        grid = int(
            np.searchsorted(values, released + gap) - np.searchsorted(values, released - gap)
        )
        assert abs(below - len(values) / 2) <= row["rank_accuracy"] + grid, (kind, below)


def test_quantile_under_zcdp_charges_the_asked_epsilon(ws):
    s = Session(ws, "allkontor", PURPOSE, "purchasing", as_of=AS_OF)
    q = (
        s.table("customers")
        .group_by("customer_type")
        .agg(count(), segments.agg.quantile("spend", 0.9, bounds=(0, 50_000)))
    )
    loss = q.plan(epsilon=0.5).privacy_loss
    assert loss.rho is not None and loss.epsilon == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(PolicyError, match="whole percent"):
        segments.agg.quantile("spend", 0.333)
    with pytest.raises(PolicyError, match="quantiles of purchases are refused"):
        s.table("purchases").group_by("category").agg(segments.agg.median("spend"))


def test_query_file_reads_median_and_quantile_aggregates(ws, tmp_path):
    from segments.session import load_query_file

    path = tmp_path / "q.json"
    path.write_text(
        '{"policy": "alloffice", "purpose": "statistics", "recipient": "purchasing", '
        '"epsilon": 0.5, "as_of": "2026-10-31", "query": [{"table": "customers", '
        '"group_by": "size_band", "aggregates": ["median:spend", "quantile80:spend"], '
        '"bounds": {"spend": [0, 20000]}, "interval": {"spend": 0.1}}]}',
        encoding="utf-8",
    )
    query_file = load_query_file(path)
    session = query_file.open(ws)
    (query,) = query_file.build(session)
    planned = session.plan([query], query_file.epsilon)
    assert list(planned.accuracy["aggregate"]) == [
        "count",  # the value intervals' support
        "quantile_50_spend",
        "quantile_40_spend",
        "quantile_60_spend",
        "quantile_16_spend",  # the median interval's guards
        "quantile_84_spend",
        "quantile_80_spend",
        "quantile_70_spend",
        "quantile_90_spend",
        "quantile_48_spend",  # the 80th's guards
        "quantile_99_spend",
    ]
    assert "interval=0.1, bounds=(0, 20000)" in query.describe()["text"]


def test_an_evaluation_ledger_passed_in_takes_data_proven_synthetic(ws):
    """A simulated ledger object is charged only for data proven synthetic (regenerated and
    compared), as `segments release --evaluation-ledger` is."""
    policy = Policy.load("alloffice")
    from segments.privacy.synthetic import prove_synthetic

    proof = prove_synthetic(ws)  # regenerated from the manifest and compared
    ledger = Ledger.for_workspace(
        ws, policy.controller, evaluation=True, synthetic=proof, policy=policy
    )
    s = _session(ws, ledger)
    s.table("customers").group_by("customer_type").agg(count()).release(epsilon=0.1)
    (entry,) = ledger.entries()
    assert entry.evaluation and entry.request.synthetic is True


@pytest.mark.slow
def test_the_workspace_audit_replans_session_releases_from_their_cards(ws, ledger, tmp_path):
    """`segments audit` re-plans every DP release of a workspace from its card: a session's
    ad-hoc queries (filters, caller bounds, month keys, surveys, quantiles) are rebuilt from
    the definitions recorded there and audited on person-level neighbours."""
    import json

    from segments.audit.mechanisms import audit_cases, workspace_release_cases

    s = _session(ws, ledger)
    s.table("customers").filter(customer_type="sole_trader").group_by("county").agg(
        count(), total("spend", bounds=(0, 20_000)), segments.agg.median("spend")
    ).release(epsilon=0.5)
    s.table("purchases").during("2026-07", "2026-09").group_by("category", "month").agg(
        total("units")
    ).release(epsilon=0.5)
    s.table("surveys").group_by("county", "customer_type").agg(count(), mean("score")).release(
        epsilon=0.5
    )
    cards = [
        (path, json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(ws.releases.glob("*/card.json"))
    ]
    cases = workspace_release_cases(
        Policy.load("alloffice"), cards, tmp_path / "audit", seed=np.random.default_rng(3)
    )
    released = [c for c in cases if c.kind == "release"]
    names = " | ".join(c.case.name for c in released)
    assert "customers_by_county_customer_type_sole_trader" in names
    assert "purchases_by_category_month" in names
    assert len(released) >= 5, names  # 2 people x 2 queries, and the survey
    results = audit_cases([c.case for c in released], trials=150)
    assert all(r.passed for r in results), [r.as_dict() for r in results if not r.passed]


# --- fix13.5: one "today" (the ledger's clock, UTC), whatever the local time zone -------------
def test_default_as_of_is_the_ledgers_today_not_the_local_date(ws, monkeypatch):
    """East of UTC the local date runs ahead of the ledger's (TZ=Pacific/Kiritimati: +14 h,
    Sweden 00:00-01:00): a default as-of from the local date was refused as in the future for
    part of every day. The default is the ledger's clock's date."""
    import time

    from segments.privacy import ledger as ledger_module

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    try:
        ledger_at = dt.datetime(2026, 6, 30, 23, 30, tzinfo=dt.UTC)  # local: 1 July, 13:30
        monkeypatch.setattr(ledger_module, "_clock", lambda: ledger_at)
        session = segments.Session(ws, "alloffice", PURPOSE, recipient="purchasing")
        assert session._as_of() == dt.date(2026, 6, 30) == ledger_module.ledger_today()
    finally:
        monkeypatch.undo()
        time.tzset()


# --- fix13.3: frames edited after the ledger verified them --------------------------------------
def test_attack_frames_edited_after_the_session_verified_them_are_refused(ws):
    """The demo ledger's provenance check ran once (when the ledger was opened, cached); a
    release then read frames edited afterwards. Each release now hashes the bytes it reads
    against prepare's signed record, before anything is charged."""
    s = segments.Session(ws, "alloffice", PURPOSE, recipient="purchasing", demo_ledger=True)
    s.table("customers").group_by("county").agg(count()).release(epsilon=0.5)
    ledger = s.ledger()
    charged = len(ledger.entries())
    # the last month's partition of the prepared lines
    lines = sorted((ws.prepared_dir(PURPOSE) / "lines.parquet").glob("month=*/*.parquet"))[-1]
    edited = pl.read_parquet(lines)
    pl.concat([edited, edited.head(500)]).write_parquet(lines)  # a heavy buyer made heavier
    with pytest.raises(
        ReleaseRefusedError, match=r"lines.parquet/month=.* is not the file .*prepare"
    ):
        s.table("customers").group_by("segment").agg(count()).release(epsilon=0.5)
    assert len(ledger.entries()) == charged


def test_the_verified_copies_of_the_frames_stay_in_the_workspace_private_area(ws):
    """The copies a release reads are person-level data: inside W/.private (owner-only, swept
    after a crash), never in the system's temporary folder, and gone after the release."""
    from segments.provenance import verified_frames

    names = ("customers.parquet", "lines.parquet")
    with verified_frames(ws, PURPOSE, names, Policy.load("alloffice")) as copies:
        for copy in copies.values():
            assert copy.is_relative_to(ws.private.resolve()) or copy.is_relative_to(ws.private)
            assert copy.stat().st_mode & 0o077 == 0 or copy.parent.stat().st_mode & 0o077 == 0
    assert not any(p.exists() for p in copies.values())


def test_relative_accuracy_from_a_charged_private_estimate_of_the_typical_cell(ws, ledger):
    s = _session(ws, ledger)
    q = (
        s.table("customers")
        .group_by("customer_type")
        .agg(count(), mean("spend", bounds=(0, 50_000)))
    )
    typical = q.estimate_typical(epsilon=0.05)
    # charged like any release, at the probe's ε only, and planning spends nothing more
    assert [e.request.epsilon for e in ledger.entries()] == [pytest.approx(0.05)]
    assert set(typical) == {"count", "sum_spend"}
    truth = pl.read_parquet(ws.prepared_dir(PURPOSE) / "customers.parquet")
    true_median = float(np.median(truth.group_by("customer_type").len()["len"]))
    # the estimate is noisy (scale 2 / 0.05 = 40 people) but of the right size
    assert abs(typical["count"] - true_median) < 40 * 8
    planned = q.plan(epsilon=0.5)
    assert len(ledger.entries()) == 1
    relative = planned.relative(typical).set_index("aggregate")["relative"]
    half = planned.accuracy.set_index("aggregate")["accuracy"]
    assert relative["count"] == pytest.approx(half["count"] / typical["count"])
    # a noisy typical sum can be released as 0 at this ε (clipped at zero): no relative error
    if typical["sum_spend"] > 0:
        assert relative["sum_spend"] == pytest.approx(half["sum_spend"] / typical["sum_spend"])
    else:
        assert np.isnan(relative["sum_spend"])
    with pytest.raises(PolicyError, match="quantiles have no typical cell"):
        s.table("customers").group_by("county").agg(segments.agg.median("spend")).estimate_typical()


# --- segment keys carry their names, and the release holds them ---------------------------
def _fitted_labels(ws: Workspace, folder: Path, names: dict[str, str] | None) -> SegmentSource:
    """Two labels per person's hash, with profiles and (when ``names``) the names record a
    segmentation signs beside them."""
    import json

    from segments.provenance import _sign_segment_names, sha256_file

    customers = pl.read_parquet(ws.prepared_dir(PURPOSE) / "customers.parquet")
    folder.mkdir(parents=True)
    labels = folder / "labels.parquet"
    customers.select(
        "person_id", (pl.col("person_id").hash() % 2).cast(pl.Utf8).alias("segment")
    ).write_parquet(labels)
    profile_names = list((names or {"0": "", "1": ""}).values())
    pd.DataFrame({"segment": ["0", "1"], "name": profile_names}).to_parquet(
        folder / "profiles.parquet"
    )
    meta: dict = {"segments": names or {}}
    if names is not None:
        meta["names_signed"] = _sign_segment_names(
            names,
            names_from="a test's fitted model",
            bound_to={"profiles.parquet": sha256_file(folder / "profiles.parquet")},
        )
    (folder / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    return SegmentSource.from_labels(labels, "fitted_model", ["0", "1"])


def test_a_release_grouped_by_segment_names_each_segment_in_its_folder_and_card(
    ws, ledger, tmp_path
):
    """Like county_name and industry_name: ``segment_name`` beside ``segment`` — the
    category rule's taxonomy labels, a fitted model's signed names — and the folder's parquet,
    its card and the ledger entry hold what the analyst was shown."""
    import json

    s = _session(ws, ledger)
    table = s.table("customers").group_by("segment").agg(count()).release(epsilon=0.5)
    assert list(table.columns[:2]) == ["segment", "segment_name"]
    assert dict(zip(table["segment"], table["segment_name"], strict=True))["toner_ink"] == (
        "Toner ink"
    )
    written = pd.read_parquet(next(Path(table.attrs["path"]).glob("*.parquet")))
    assert written[["segment", "segment_name"]].equals(table[["segment", "segment_name"]])
    # a fitted model (internal recipients): the names its segmentation signed
    names = {"0": "paper buyers", "1": "coffee & pantry"}
    fitted = _fitted_labels(ws, tmp_path / "segments", names)
    by = _session(ws, ledger, segments=fitted).table("customers").group_by("county", "segment")
    named = by.agg(count()).release(epsilon=0.5)
    assert set(zip(named["segment"], named["segment_name"], strict=True)) == set(names.items())
    assert named.columns.get_loc("segment_name") == named.columns.get_loc("segment") + 1
    folder = Path(named.attrs["path"])
    written = pd.read_parquet(next(folder.glob("*.parquet")))
    assert written[["segment", "segment_name"]].equals(named[["segment", "segment_name"]])
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    stated = card["segment_names"]
    assert stated["names"] == names and stated["signed"] is True
    assert stated["names_from"] == "a test's fitted model"
    assert stated["segmentation"] == "fitted_model"
    assert stated["guarantee"] == "DP given a non-private segmentation"
    # the ledger entry (not only the editable card) records the names' hash
    entry = ledger.entry(card["release_id"])
    assert entry.request.spec["segments"]["names"]["names_sha256"] == stated["names_sha256"]


def test_attack_a_name_edited_after_fitting_never_reaches_a_release(ws, ledger, tmp_path):
    """An analyst renames a segment in metadata.json (or forges the names record, or copies
    another segmentation's): the release is refused before anything is charged; without any
    record the keys are shown, never unsigned names."""
    import json

    fitted = _fitted_labels(ws, tmp_path / "segments", {"0": "paper buyers", "1": "pantry"})
    meta_path = tmp_path / "segments" / "metadata.json"
    signed = json.loads(meta_path.read_text(encoding="utf-8"))

    def release(meta: dict) -> pd.DataFrame:
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
        q = _session(ws, ledger, segments=fitted).table("customers").group_by("segment")
        return q.agg(count()).release(epsilon=0.5)

    edited = {**signed, "segments": {"0": "paper buyers", "1": "Anna Svensson's firm"}}
    with pytest.raises(ReleaseRefusedError, match=r"key 'segments': segment '1' is named "):
        release(edited)
    forged = {**edited, "names_signed": {**signed["names_signed"], "segments": edited["segments"]}}
    with pytest.raises(ReleaseRefusedError, match="not signed by a segmentation"):
        release(forged)
    # a validly signed record of another fit, copied in (its names and record agree)
    _fitted_labels(ws, tmp_path / "other", {"0": "x", "1": "Anna Svensson's firm"})
    foreign = json.loads((tmp_path / "other" / "metadata.json").read_text(encoding="utf-8"))
    with pytest.raises(ReleaseRefusedError, match="describe another model"):
        release(foreign)
    assert ledger.entries() == []
    assert not ws.releases.exists() or not any(ws.releases.iterdir())
    # no record at all: keys only, never the unsigned names
    table = release({"segments": edited["segments"]})
    assert list(table["segment_name"]) == ["segment 0", "segment 1"]


def test_private_segment_names_are_the_signed_ones_of_the_verified_centroids(ws, tmp_path):
    """A private model's names come from the record signed with the centroids whose hash
    the ledger entry published; a record for other centroids is refused."""
    import json

    from segments.privacy.kmeans import PrivateModelRef
    from segments.provenance import _sign_segment_names, sha256_file

    folder = tmp_path / "private"
    folder.mkdir()
    centroids = folder / "centroids.parquet"
    pd.DataFrame(
        {
            "segment": ["0", "1"],
            "share_paper": [0.7, 0.1],
            "share_toner_ink": [0.2, 0.1],
            "share_coffee_pantry": [0.1, 0.8],
            "monetary_sek": [12_000.0, 3_000.0],
        }
    ).to_parquet(centroids)
    digest = sha256_file(centroids)
    ref = PrivateModelRef("r", "l", centroids, digest, ("share_paper",), (), {}, {}, ("0", "1"))
    source = SegmentSource("private_model", ("0", "1"), model=ref)
    names = {"0": "office paper", "1": "pantry"}

    def session_with(bound: str) -> Session:
        record = _sign_segment_names(
            names, names_from="the released centroids", bound_to={"centroids.parquet": bound}
        )
        meta = {"segments": names, "names_signed": record}
        (folder / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
        return _session(ws, segments=source)

    assert session_with(digest).segment_names() == names
    assert session_with(digest).segment_source().names.names_from == "the released centroids"
    with pytest.raises(ReleaseRefusedError, match="describe another model"):
        session_with("0" * 64).segment_names()  # names signed for other centroids


def test_a_real_segmentation_signs_its_names_and_an_edit_is_refused(ws, ledger):
    """End to end: `segments segment` signs the names it writes; the session shows them; a
    rename in W/segments/metadata.json afterwards is refused, nothing charged."""
    import json

    from segments.segmentation.job import segment

    segment(ws, "alloffice", purpose=PURPOSE, as_of=AS_OF, k_range=[3], n_splits=1, seed=0)
    meta = json.loads(ws.segment_metadata.read_text(encoding="utf-8"))
    s = _session(ws, ledger, segments="fitted")
    assert s.segment_names() == meta["segments"]
    meta["segments"]["0"] = "renamed by hand"
    ws.segment_metadata.write_text(json.dumps(meta), encoding="utf-8")
    fresh = _session(ws, ledger, segments="fitted")
    with pytest.raises(ReleaseRefusedError, match="segment '0' is named 'renamed by hand'"):
        fresh.table("customers").group_by("segment").agg(count()).release(epsilon=0.5)
    assert ledger.entries() == []


# --- quantile intervals: rank (data-free) and value (released ends) ---------------------------
def _true_spend(ws: Workspace, bound: int) -> pd.DataFrame:
    prepared = ws.prepared_dir(PURPOSE)
    spend = (
        pl.read_parquet(prepared / "lines.parquet")
        .filter(pl.col("order_date") < AS_OF)
        .group_by("person_id", "category")
        .agg(pl.col("amount_sek").sum().round(0).alias("sek"))
        .group_by("person_id")
        .agg(pl.col("sek").sum().clip(0, bound).alias("spend"))
    )
    people = pl.read_parquet(prepared / "customers.parquet").join(spend, on="person_id", how="left")
    return people.with_columns(pl.col("spend").fill_null(0)).to_pandas()


def test_quantile_value_interval_covers_the_true_quantile_as_stated(ws):
    """Statistical (seeded data, OpenDP's noise): the median's value interval — the released
    40th and 60th percentiles, published where 0.1 x the count's lower bound covers each
    end's rank error (and the guards' margins; an end whose guard is at its bound widened to
    the bound) — holds the exact median in at least 95 % of 150 cell-releases (stated:
    >= 95 % each); its rank interval holds too; both are recorded per cell."""
    from segments.session import _QuantileRanks, _to_pandas

    bound = 50_000
    s = _session(ws)
    q = (
        s.table("customers")
        .group_by("customer_type")
        .agg(segments.agg.median("spend", bounds=(0, bound), interval=0.1))
    )
    planned = q.plan(epsilon=4.0)  # the interval needs 174 people: businesses, sole traders
    notes = planned.accuracy.set_index("aggregate")["note"]
    assert (
        "value interval [quantile_40_spend, quantile_60_spend] published where"
        in notes.loc["quantile_50_spend"]
    )
    assert list(planned.accuracy["aggregate"]) == [
        "count",
        "quantile_50_spend",
        "quantile_40_spend",
        "quantile_60_spend",
        "quantile_16_spend",  # the guards
        "quantile_84_spend",
    ]
    # each end's rank error at an eighth of 5 %: 2 x 0.6 / (ε 4 shared by 6 aggregates) x
    # ln(100 / 0.00625) people; the interval needs at least 0.1 x count_lower to cover it
    end_error = 2 * 0.6 / (4.0 / 6) * np.log(100 / (0.05 / 8))
    truth = _true_spend(ws, bound).groupby("customer_type")["spend"]
    medians = truth.median()
    sorted_values = {k: np.sort(v.to_numpy()) for k, v in truth}
    spec, window = s._spec([q], 4.0, None)
    covered = published = rank_held = cells = 0
    with s._plan(spec, window, [q]) as plan:
        ranks = _QuantileRanks.of(plan)
        for _ in range(50):
            raw = plan.tables(run_unaccounted(plan))[q.definition().name]
            table = _to_pandas(pl.from_pandas(raw), q, ranks).set_index("customer_type")
            for kind, row in table.iterrows():
                cells += 1
                if row["quantile_50_spend_status"].startswith("published"):
                    assert 0.1 * row["count_lower"] >= end_error, row
                values = sorted_values[kind]
                below = int(np.searchsorted(values, row["quantile_50_spend"], side="left"))
                gap = int(
                    np.searchsorted(values, row["quantile_50_spend"] + 501)
                    - np.searchsorted(values, row["quantile_50_spend"] - 501)
                )
                rank_held += abs(below - len(values) / 2) <= row["quantile_50_spend_rank"] + gap
                if row["quantile_50_spend_status"].startswith("published"):
                    published += 1
                    lower, upper = row["quantile_50_spend_lower"], row["quantile_50_spend_upper"]
                    covered += lower <= medians[kind] <= upper
                else:
                    assert np.isnan(row["quantile_50_spend_lower"])
    assert cells == 150 and published >= 100, (published, cells)
    assert covered >= 0.95 * published, (covered, published)
    assert rank_held >= 0.95 * cells, (rank_held, cells)


def test_quantile_intervals_follow_the_mechanism_under_zcdp(ws):
    """Under a zCDP policy OpenDP runs the Gumbel (exponential-mechanism) quantile: its rank
    half-width is the ε-DP one at ε = sqrt(8 ρ) of the quantile's share."""
    s = Session(ws, "allkontor", PURPOSE, "purchasing", as_of=AS_OF)
    q = (
        s.table("customers")
        .group_by("customer_type")
        .agg(count(), segments.agg.quantile("spend", 0.9, bounds=(0, 50_000)))
    )
    planned = q.plan(epsilon=0.5)
    row = planned.accuracy.set_index("aggregate").loc["quantile_90_spend"]
    assert row["distribution"].startswith("Gumbel") and "Gumbel noise" in row["note"]
    rho_share = planned.privacy_loss.rho / 2
    expected = 2 * 0.9 / np.sqrt(8 * rho_share) * np.log(100 / 0.05)
    assert row["rank_accuracy"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(PolicyError, match="interval=0.6 must be a whole percent"):
        segments.agg.quantile("spend", 0.5, interval=0.6)


def _exact_clipped_quantiles(query_plan, by: str, bounds: tuple[int, int], q: float) -> dict:
    """The exact ``q``-quantile of the clipped spend per key (the smallest ``v`` with
    ``#{clip(x) <= v} >= q n``), from the frame the mechanism reads."""
    people = pl.read_parquet(query_plan.data_path)
    if query_plan.query.active_only:
        people = people.filter(pl.col("spend_sek") > 0)
    where = query_plan.query.filter_expression()
    if where is not None:  # the query's filter on public person attributes
        people = people.filter(where)
    return {
        key: float(
            np.sort(rows["spend_sek"].clip(*bounds).to_numpy())[int(np.ceil(q * rows.height)) - 1]
        )
        for (key,), rows in people.group_by(by)
    }


def test_value_intervals_hold_where_a_mass_sits_at_the_bound(ws):
    """Statistical (seeded data, OpenDP's noise), r17 #1: the businesses' median spend
    (29,201 SEK) with bounds swept across it, so 45-70 % of them are at or above the upper
    bound (for bounds below 29,201 their clipped median IS the bound). OpenDP's scores near
    a bound go flat there and an end drifts inside it, missing the quantile; 20 releases per
    bound. The published intervals hold the exact clipped median at the stated >= 95 %, and
    withholding is not how: at least 90 % of the cells are published. (Before the guards
    and the clipped frame: 14 of 140 published, 5 held.)"""
    from segments.session import _QuantileRanks, _to_pandas

    s = _session(ws)
    published, covered, cells = 0, 0, 0
    for bound in (15_000, 20_000, 25_000, 28_000, 30_000, 35_000, 40_000):
        q = (
            s.table("buyers")
            .filter(customer_type="business")
            .group_by("customer_type")
            .agg(segments.agg.median("spend", bounds=(0, bound), interval=0.1))
        )
        spec, window = s._spec([q], 2.0, None)
        with s._plan(spec, window, [q]) as plan:
            ranks = _QuantileRanks.of(plan)
            (exact,) = _exact_clipped_quantiles(
                plan.queries[0], "customer_type", (0, bound), 0.5
            ).values()
            for _ in range(20):
                raw = plan.tables(run_unaccounted(plan))[q.definition().name]
                table = _to_pandas(pl.from_pandas(raw), q, ranks)
                row = table.set_index("customer_type").loc["business"]  # the others are empty
                cells += 1
                if not row["quantile_50_spend_status"].startswith("published"):
                    assert np.isnan(row["quantile_50_spend_lower"]), row
                    continue
                published += 1
                covered += row["quantile_50_spend_lower"] <= exact <= row["quantile_50_spend_upper"]
    assert covered >= 0.95 * published, (covered, published)
    assert published >= 0.9 * cells, (published, cells)


@pytest.mark.parametrize("table", ["customers", "buyers"])
def test_quantiles_of_every_per_person_value_plan_and_release(ws, ledger, table):
    """Each per-person value of a person table (spend, units, orders, each category's spend)
    has a median: its column is put in the quantile's frame as a sum's is (the review found
    a raw OpenDP error for all but spend); one charge, a candidate between the bounds."""
    s = _session(ws, ledger)
    values = ["spend", "units", "orders"] + [f"spend:{c}" for c in s.params.categories]
    bounds = {"units": (0, 500), "orders": (0, 100)}
    aggregates = [segments.agg.median(v, bounds=bounds.get(v, (0, 5_000))) for v in values]
    q = s.table(table).group_by("customer_type").agg(count(), *aggregates)
    before = len(ledger.entries())
    q.plan(epsilon=1.0)
    assert len(ledger.entries()) == before
    released = q.release(epsilon=1.0)
    assert len(ledger.entries()) == before + 1
    for v in values:
        column = "quantile_50_" + v.replace(":", "_")
        low, high = bounds.get(v, (0, 5_000))
        assert released[column].between(low, high).all(), (v, released[column])
