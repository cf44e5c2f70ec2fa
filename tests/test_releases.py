"""Tests of segments.privacy.specs and segments.privacy.releases (DP releases with OpenDP)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from prepared_frames import install_prepared, synthetic_proof
from privacy_params import privacy_params
from release_helpers import proven_ledger, release_context, run_unaccounted

from segments.engine.base import person_key_of
from segments.exceptions import BudgetExceededError, PolicyError, ReleaseRefusedError
from segments.policy import Policy
from segments.privacy._frames import write_prepared_frames, write_survey_frame
from segments.privacy.ledger import Ledger, default_ledger_path
from segments.privacy.releases import (
    build_shared_frames,
    cells_per_person,
    epsilon_to_rho,
    plan_release,
)
from segments.privacy.specs import (
    SPECS,
    Guarantee,
    PrivacyParams,
    QueryDef,
    ReleaseSpec,
    SegmentSource,
    get_spec,
)
from segments.schema import PRODUCT_CATEGORIES
from segments.workspace import Workspace, sha256_file

AS_OF = dt.date(2026, 3, 1)
PURPOSE = "statistics"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load("alloffice")


@pytest.fixture(scope="module")
def params(policy: Policy) -> PrivacyParams:
    return PrivacyParams.from_policy(policy, PURPOSE)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("prepared")
    paths = write_prepared_frames(folder, 800, 12_000, seed=np.random.default_rng(7))
    paths["surveys"] = write_survey_frame(
        folder / "surveys.parquet", 500, seed=np.random.default_rng(8)
    )
    return paths


@pytest.fixture()
def workspace(tmp_path, frames) -> Workspace:
    ws = Workspace(tmp_path / "ws").create()
    install_prepared(ws, frames, PURPOSE, dt.date(2026, 10, 31))
    return ws


def _verified(workspace, spec, params, **kw):
    """A plan of the workspace's verified prepared frames (the same data as ``frames``):
    what ``execute`` charges for."""
    from prepared_frames import verified_plan

    kw.setdefault("segments", SegmentSource.category_rule())
    return verified_plan(workspace, spec, params, PURPOSE, as_of=AS_OF, **kw)


def _context(ledger, workspace, policy, recipient: str, **kw):
    """The release context of these tests' purpose for ``recipient``."""
    return release_context(ledger, workspace, policy, purpose=PURPOSE, recipient=recipient, **kw)


def _plan(spec, params, frames, **kw):
    kw.setdefault("segments", SegmentSource.category_rule())
    return plan_release(
        spec,
        params,
        customers=frames["customers"],
        lines=frames["lines"],
        surveys=frames["surveys"],
        as_of=AS_OF,
        **kw,
    )


# --- guards ---------------------------------------------------------------------------------
def test_spec_rejects_unknown_query():
    with pytest.raises(PolicyError, match="unknown queries"):
        ReleaseSpec("x", ("no_such_query",), epsilon=1.0)


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("inf")])
def test_spec_rejects_bad_epsilon(epsilon):
    with pytest.raises(PolicyError, match="must be a positive finite number"):
        ReleaseSpec("x", ("spend_by_segment",), epsilon=epsilon)


def test_spec_rejects_empty_and_bad_weights():
    with pytest.raises(PolicyError, match="has no queries"):
        ReleaseSpec("x", (), epsilon=1.0)
    with pytest.raises(PolicyError, match="one positive weight per query"):
        ReleaseSpec("x", ("spend_by_segment",), epsilon=1.0, weights=(1.0, 2.0))


def test_get_spec_names_the_known_specs():
    with pytest.raises(PolicyError, match="segment_overview"):
        get_spec("nope")


def test_privacy_params_guards():
    with pytest.raises(PolicyError, match="dp_family"):
        privacy_params(dp_family="approx")
    # one check for a policy file and a hand-built object: the parser's stricter range
    with pytest.raises(PolicyError, match=r"delta 0.0 is not in \(0, 1e-3\)"):
        privacy_params(dp_family="zcdp", delta=0.0)
    with pytest.raises(PolicyError, match="'privacy.spend_bound_sek': 0 is not a positive integer"):
        privacy_params(spend_bound_sek=0)
    with pytest.raises(PolicyError, match="survey_score_bounds"):
        privacy_params(survey_score_bounds=(10, 0))


def test_privacy_params_from_policy(policy):
    params = PrivacyParams.from_policy(policy, "segmentation")
    assert params.spend_bound_sek == int(policy.privacy.spend_bound_sek)
    assert params.dp_family == policy.privacy.dp_family
    assert params.retention_months == policy.purposes["segmentation"].longest_window_months


def test_segment_source_guards_and_guarantee(tmp_path):
    with pytest.raises(PolicyError, match="provenance='magic' is unknown"):
        SegmentSource("magic", ("a",))
    with pytest.raises(PolicyError, match="needs labels_path"):
        SegmentSource("fitted_model", ("a",))
    assert SegmentSource.category_rule().guarantee == Guarantee.END_TO_END
    fitted = SegmentSource.from_labels(tmp_path / "l.parquet", "fitted_model", ["0", "1"])
    assert fitted.guarantee == Guarantee.GIVEN_SEGMENTATION
    # a caller cannot declare the end-to-end claim for labels it passes in (issue 13 item 3)
    with pytest.raises(PolicyError, match="cannot be declared"):
        SegmentSource.from_labels(tmp_path / "l.parquet", "private_model", ["0"])


def test_plan_guards(params, frames):
    with pytest.raises(PolicyError, match="groups by segment; pass a segment source"):
        _plan(SPECS["segment_overview"], params, frames, segments=None)
    with pytest.raises(PolicyError, match="confidence"):
        _plan(SPECS["segment_overview"], params, frames, confidence=1.0)
    with pytest.raises(PolicyError, match="after as_of"):
        _plan(
            SPECS["category_mix"], params, frames, window=(dt.date(2026, 1, 1), dt.date(2026, 4, 1))
        )


# --- loss, sensitivity, accuracy ---------------------------------------------------------------
def test_opendp_loss_equals_the_planned_loss_pure(params, frames):
    spec = SPECS["segment_overview"]
    with _plan(spec, params, frames) as plan:
        assert plan.loss.epsilon == pytest.approx(spec.epsilon, rel=1e-9)
        assert plan.loss.rho is None
        acc = plan._accuracy_pl()
        # Laplace: scale × per-aggregate ε = L1 sensitivity, as OpenDP resolved it.
        for query, eps in zip(plan.queries, spec.query_epsilons(), strict=True):
            rows = acc.filter(pl.col("query") == query.query.name)
            per_agg = eps / rows.height
            for row in rows.iter_rows(named=True):
                assert row["scale"] * per_agg == pytest.approx(row["sensitivity_l1"], rel=1e-9)
        spend = acc.filter(pl.col("aggregate") == "spend_sek")
        assert set(spend["sensitivity_l1"]) == {float(params.spend_bound_sek)}
        counts = acc.filter(pl.col("aggregate") == "count")
        assert set(counts["sensitivity_l1"]) == {1.0}
        assert (acc["accuracy"] > acc["scale"]).all()


def test_opendp_loss_zcdp_and_histogram_sensitivity(params, frames):
    zcdp = privacy_params(**{**params.to_dict(), "dp_family": "zcdp", "delta": 1e-7})
    spec = SPECS["category_mix"]
    with _plan(spec, zcdp, frames) as plan:
        rho = epsilon_to_rho(spec.epsilon, 1e-7)
        assert plan.loss.rho == pytest.approx(rho, rel=1e-9)
        assert plan.loss.epsilon <= spec.epsilon * (1 + 1e-9)
        # Gaussian wins under zCDP: a person's L2 norm is at most sqrt(k) x the cell bound
        assert plan.mechanism == "gaussian"
        # the whole history (no window): a person's cells in each month the purpose keeps
        k = cells_per_person(zcdp) * zcdp.retention_months
        row = plan._accuracy_pl().filter(pl.col("aggregate") == "sek").row(0, named=True)
        # before the private bound is chosen, the public largest L2 norm is shown
        assert row["sensitivity_l2"] == pytest.approx(np.sqrt(k) * zcdp.cell_spend_bound_sek)
        assert row["sensitivity_l1"] is None
        # σ = ceil(L2) / sqrt(2 ρ_sum): ρ split over two aggregates, 20 % of each on its bound
        rho_sum = rho / 2 * (1 - zcdp.contribution_bound_share)
        expected = np.ceil(row["sensitivity_l2"]) / np.sqrt(2 * rho_sum)
        assert row["scale"] == pytest.approx(expected, rel=1e-9)
        assert "Gaussian" in row["distribution"]
        run_unaccounted(plan)
        chosen = plan.bounds()["category_by_segment"]["norm_bounds"]["sek"]
        assert chosen["source"] == "chosen privately"
        assert chosen["private_choice"]["factor"] == zcdp.contribution_bound_factor


def test_tables_carry_intervals_scale_and_means(params, frames):
    with _plan(SPECS["segment_overview"], params, frames) as plan:
        tables = plan._tables_pl(run_unaccounted(plan))
    table = tables["spend_by_county_segment"]
    assert table.height == 21 * len(PRODUCT_CATEGORIES)
    for col in ("count", "spend_sek", "mean_spend_sek"):
        assert {f"{col}_lower", f"{col}_upper"} <= set(table.columns)
        assert (table[f"{col}_lower"] <= table[f"{col}_upper"]).all()
    assert {"count_scale", "spend_sek_scale"} <= set(table.columns)
    published = table.filter(pl.col("mean_spend_sek_status") == "published")
    assert published["mean_spend_sek"].null_count() == 0
    assert published["mean_spend_sek_lower"].is_between(0, params.spend_bound_sek).all()
    withheld = table.filter(pl.col("mean_spend_sek_status") != "published")
    assert withheld["mean_spend_sek"].null_count() == withheld.height
    # non-negative published values; the unbiased noisy value is kept beside them
    assert (table["count"] >= 0).all() and (table["spend_sek"] >= 0).all()
    assert "count_noisy" in table.columns


# --- one person's influence is bounded ---------------------------------------------------------
def _heavy_person(frames, tmp_path, n_lines: int = 5000):
    """Add one person with thousands of large order lines in every category and month."""
    customers = pl.read_parquet(frames["customers"])
    lines = pl.read_parquet(frames["lines"])
    pid = "f" * 64
    heavy_customer = customers.head(1).with_columns(pl.lit(pid).alias("person_id"))
    rng = np.random.default_rng(3)
    days = rng.integers(0, 420, n_lines)
    heavy_lines = pl.DataFrame(
        {
            "person_id": [pid] * n_lines,
            "order_id": [pid] * n_lines,
            "order_date": [dt.date(2025, 1, 1) + dt.timedelta(days=int(d)) for d in days],
            "channel": ["web"] * n_lines,
            "product_id": np.full(n_lines, 1, dtype=np.int32),
            "category": np.asarray(PRODUCT_CATEGORIES)[np.arange(n_lines) % 10],
            "quantity": np.full(n_lines, 500, dtype=np.int32),
            "amount_sek": np.full(n_lines, 90_000.0),
        }
    ).cast(lines.schema)  # type: ignore[arg-type]
    out = {
        "customers": tmp_path / "c.parquet",
        "lines": tmp_path / "l.parquet",
        "surveys": frames["surveys"],
    }
    pl.concat([customers, heavy_customer]).write_parquet(out["customers"])
    pl.concat([lines, heavy_lines]).write_parquet(out["lines"])
    return pid, out


def _heavy_shared_frames(heavy, params, tmp_path):
    """The shared frames of :func:`_heavy_person`'s frames, segments by the category rule."""
    return build_shared_frames(
        pl.scan_parquet(heavy["customers"]),
        pl.scan_parquet(heavy["lines"]),
        SegmentSource.category_rule(),
        params,
        tmp_path,
    )


def test_shared_frames_bound_a_heavy_person(params, frames, tmp_path):
    pid, heavy = _heavy_person(frames, tmp_path)
    paths = _heavy_shared_frames(heavy, params, tmp_path)
    key = person_key_of(pid)
    person = pl.read_parquet(paths["person"]).filter(pl.col("pid") == key)
    cells = pl.read_parquet(paths["cells"]).filter(pl.col("pid") == key)
    assert "person_id" not in person.columns
    assert person.height == 1
    assert cells.height == cells_per_person(params)
    assert cells["category"].n_unique() == cells.height


@pytest.mark.parametrize("spec_name", ["segment_overview", "category_mix"])
def test_released_difference_of_a_heavy_person_is_within_sensitivity(
    spec_name, params, frames, tmp_path
):
    """Neighbouring data sets (with and without one extreme person), released through
    OpenDP at a huge ε (noise ≪ bounds): each aggregate moves by at most its L1 sensitivity."""
    _, heavy = _heavy_person(frames, tmp_path)
    spec = SPECS[spec_name].with_epsilon(1e7)
    # public norm bounds: the same clip on both sides (a private bound is tested elsewhere)
    params = privacy_params(
        **{**params.to_dict(), "units_norm_bound": 300, "sek_norm_bound": 80_000}
    )
    with _plan(spec, params, frames) as without, _plan(spec, params, heavy) as with_:
        a, b = run_unaccounted(without), run_unaccounted(with_)
        for query in with_.queries:
            name, by = query.query.name, list(query.query.by)
            joined = a[name].join(b[name], on=by, suffix="_heavy", nulls_equal=True)
            for row in query._summary.iter_rows(named=True):
                agg = row["column"]
                moved = (joined[f"{agg}_heavy"] - joined[agg]).abs().sum()
                noise_allowance = 2 * joined.height * 20 * row["scale"]
                assert moved <= row["sensitivity_l1"] + noise_allowance, (name, agg, moved)
                # The person is present: the difference is not zero for a sum.
                if agg != "count":
                    assert moved >= 0.5 * row["sensitivity_l1"] - noise_allowance


# --- execution, ledger, card -------------------------------------------------------------------
def test_execute_writes_tables_and_card_and_charges_the_ledger(params, workspace, policy, frames):
    ledger = proven_ledger(workspace, policy, evaluation=True)
    with _verified(workspace, SPECS["segment_overview"], params) as plan:
        result = plan.execute(_context(ledger, workspace, policy, "purchasing", synthetic=True))
        folder = plan.folder
    assert not folder.exists()  # the private per-person frames are gone
    card = json.loads((result.path / "card.json").read_text())
    assert card["release_id"] == result.release_id
    entry = ledger.entry(result.release_id)
    assert card["ledger_head_hash"] == entry.reserve_hash  # the card is bound to its charge
    assert card["ledger_anchor"]["ledger_id"] == ledger.ledger_id
    assert "over the 24-month window" in card["population_total_loss"]["text"]
    assert card["population_total_loss"]["window_epsilon"] == pytest.approx(1.0)
    assert card["evaluation"] is True and "EVALUATION" in card["ledger_label"]
    assert card["guarantee"] == Guarantee.END_TO_END
    for name, digest in card["files"].items():
        assert sha256_file(result.path / name) == digest
    assert entry.request.epsilon == pytest.approx(1.0)
    # the ledger holds the SHA-256 of every published file and of the card
    assert entry.card == "card.json"
    assert dict(entry.files) == {
        **card["files"],
        "card.json": sha256_file(result.path / "card.json"),
    }
    assert ledger.verify_cards([result.path / "card.json"])
    assert not list(workspace.releases.glob(".*.tmp"))
    assert "person_id" not in pl.read_parquet(result.path / "spend_by_segment.parquet").columns


def test_a_release_is_owner_only_whatever_the_umask(params, workspace, policy, frames):
    import os
    import stat

    ledger = proven_ledger(workspace, policy, evaluation=True)
    old = os.umask(0o022)  # would make new files world-readable (issue 18 review, item 5)
    try:
        with _verified(workspace, SPECS["segment_overview"], params) as plan:
            result = plan.execute(_context(ledger, workspace, policy, "purchasing", synthetic=True))
    finally:
        os.umask(old)
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in result.path.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes


def test_attack_a_replaced_table_or_an_edited_card_fails_ledger_cards(
    params, workspace, policy, frames
):
    """Issue 13.7: `ledger --cards` verified ids, not contents."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    with _verified(workspace, SPECS["segment_overview"], params) as plan:
        result = plan.execute(_context(ledger, workspace, policy, "purchasing"))
    table = result.path / "spend_by_segment.parquet"
    original = table.read_bytes()
    frame = pl.read_parquet(table)
    frame.with_columns(pl.lit(1000).alias(frame.columns[-1])).write_parquet(table)
    problems = " | ".join(ledger.verify_cards([result.path / "card.json"]).problems)
    assert "spend_by_segment.parquet differs from what was published" in problems
    table.write_bytes(original)
    card_path = result.path / "card.json"
    card = json.loads(card_path.read_text())
    card["privacy_loss"]["epsilon"] = 0.01
    card_path.write_text(json.dumps(card))
    problems = " | ".join(ledger.verify_cards([card_path]).problems)
    assert "card.json differs from what was published" in problems


def test_execute_refuses_over_budget_before_running(params, workspace, policy, frames):
    ledger = proven_ledger(workspace, policy)
    too_much = SPECS["customers_by_county_segment"].with_epsilon(policy.privacy.budget_epsilon + 1)
    with (
        _verified(workspace, too_much, params) as plan,
        pytest.raises(BudgetExceededError, match="remaining"),
    ):
        plan.execute(_context(ledger, workspace, policy, "purchasing"))
    assert not [p for p in workspace.releases.iterdir() if p.name != "archive"]


def test_fitted_segments_are_refused_for_external_recipients(
    params, workspace, policy, frames, tmp_path
):
    customers = pl.read_parquet(frames["customers"])
    labels = customers.select(
        "person_id", (pl.int_range(pl.len()) % 3).cast(pl.Utf8).alias("segment")
    )
    labels.write_parquet(tmp_path / "labels.parquet")
    source = SegmentSource.from_labels(tmp_path / "labels.parquet", "fitted_model", ["0", "1", "2"])
    ledger = proven_ledger(workspace, policy)
    with _verified(
        workspace, SPECS["customers_by_county_segment"], params, segments=source
    ) as plan:
        assert plan.guarantee == Guarantee.GIVEN_SEGMENTATION
        with pytest.raises(ReleaseRefusedError, match="internal"):
            plan.execute(
                _context(ledger, workspace, policy, "eu-logistics-processor", destination="FI")
            )
        result = plan.execute(_context(ledger, workspace, policy, "analytics"))
    assert result.card["guarantee"] == Guarantee.GIVEN_SEGMENTATION
    assert set(result.tables["customers_by_county_segment"]["segment"]) == {"0", "1", "2"}


def test_survey_month_must_have_closed(params, frames):
    with pytest.raises(PolicyError, match="has not closed"):
        plan_release(
            SPECS["survey_experience"],
            params,
            surveys=frames["surveys"],
            as_of=dt.date(2026, 1, 31),
            survey_month=dt.date(2026, 1, 1),
        )


def test_survey_release_uses_public_keys_and_no_customer_id(params, frames):
    with plan_release(
        SPECS["survey_experience"], params, surveys=frames["surveys"], as_of=AS_OF
    ) as plan:
        table = plan._tables_pl(run_unaccounted(plan))["survey_by_county_type"]
    assert table.height == 21 * 2
    assert set(table["customer_type"]) == {"business", "private"}
    assert table["mean_score"].is_between(0, 10).all()


def test_the_national_survey_is_one_cell_with_the_same_person_bound(params, frames):
    """The coarser survey table the planner falls back to: one public cell ('all'), every
    response of the window in it, the sensitivity still all responses one person can give
    (months x accounts); OpenDP's loss is the spec's."""
    with plan_release(
        SPECS["survey_national"], params, surveys=frames["surveys"], as_of=AS_OF
    ) as plan:
        table = plan._tables_pl(run_unaccounted(plan))["survey_national"]
        bounds = plan.bounds()["survey_national"]
        assert plan.loss.epsilon == pytest.approx(SPECS["survey_national"].epsilon)
    months = params.retention_months
    assert bounds["rows_per_unit"] == months * 2
    assert table["scope"].to_list() == ["all"] and table.height == 1
    mean = table["mean_score"][0]
    assert mean is None or 0 <= mean <= 10  # withheld where the noisy count does not support it


def test_the_national_scope_is_refused_outside_surveys(params, frames):
    """'scope' (one national cell) exists only in the survey frame: a person query keyed by
    it is refused before anything is read, naming the query and the fix."""
    spec = ReleaseSpec(
        "x",
        ("people",),
        epsilon=0.5,
        definitions=(QueryDef("people", "person", ("scope",), ("count",)),),
    )
    with pytest.raises(ReleaseRefusedError, match="'scope'.*survey tables only"):
        plan_release(
            spec, params, customers=frames["customers"], lines=frames["lines"], as_of=AS_OF
        )


def test_mean_only_where_the_noisy_count_supports_it_and_never_clamped():
    from segments.privacy.postprocess import mean_where_supported

    mean, low, high, status = mean_where_supported(
        np.array([5000.0, 1000.0, 900_000.0, 50.0, 5000.0]),
        np.array([-3.0, 10.0, 3.0, 10.0, 10.0]),
        100.0,
        2.0,
        0,
        1000,
        "m",
        max_relative_error=0.5,
    )
    # a non-positive count; a count of 3 ± 2; a sum of 50 ± 100: no mean, marked
    assert [mean.to_list()[i] for i in (0, 2, 3)] == [None, None, None]
    assert low.to_list()[0] is None and "not published" in status.to_list()[2]
    # (1000 ± 100) / (10 ± 2): the box's extremes
    assert mean.to_list()[1] == 100.0 and status.to_list()[1] == "published"
    assert low.to_list()[1] == pytest.approx(900 / 12)
    assert high.to_list()[1] == pytest.approx(1100 / 8)
    # a supported mean is sum / count, never clamped to the public bound (its interval is)
    (clamped,) = mean_where_supported(
        np.array([5000.0]), np.array([10.0]), 100.0, 2.0, 0, 300, "m", 0.5
    )[:1]
    assert clamped.to_list() == [500.0]


def test_a_mean_of_spend_clipped_near_its_bound_is_withheld_not_published_low():
    """Issue 14: AloCenter's 100,000 SEK bound clipped 30 % of the toner segment, whose mean
    spend (139,000 SEK) came out 64 % low with a tight noise interval. A clipped mean at a
    large share of the bound is withheld and says why; below it, it is published."""
    from segments.privacy.postprocess import CLIPPED_SUMS, MAX_CLIPPED_SHARE, mean_where_supported

    bound = 100_000.0
    people = np.array([5000.0, 5000.0, 5000.0])
    # everyone at the bound (the worst case); half the bound; a tenth of it
    sums = people * np.array([bound, bound / 2, bound / 10])
    mean, low, high, status = mean_where_supported(
        sums, people, 1e5, 5.0, 0, bound, "m", 0.5, MAX_CLIPPED_SHARE
    )
    assert mean.to_list()[:2] == [None, None] and low.to_list()[:2] == [None, None]
    assert all("biased low" in s and "100000" in s for s in status.to_list()[:2])
    assert mean.to_list()[2] == pytest.approx(bound / 10) and status.to_list()[2] == "published"
    # the same noisy values without the rule (survey scores: bounded, not clipped) publish
    assert mean_where_supported(sums, people, 1e5, 5.0, 0, bound, "m", 0.5)[0].null_count() == 0
    assert "spend_sek" in CLIPPED_SUMS and "score" not in CLIPPED_SUMS


# --- command line ------------------------------------------------------------------------------
def test_attack_frames_signed_before_the_key_kind_are_refused_nothing_charged(workspace, capsys):
    """r13b #2: frames prepared before prepare refused the public demo key on data not proven
    synthetic carry a valid signature but may hold pseudonyms anyone can reverse. A record
    without the key kind is refused by the release before anything is charged or written."""
    from prepared_frames import sign_prepared_before_key_kind

    from segments.cli.main import main
    from segments.provenance import verify_prepared

    sign_prepared_before_key_kind(workspace, PURPOSE, dt.date(2026, 10, 31))
    args = ["release", "-w", str(workspace.root), "--policy", "alloffice", "--spec",
            "segment_overview", "--purpose", PURPOSE, "--recipient", "purchasing",
            "--as-of", "2026-03-01"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "records no pseudonymisation key kind" in err and "demo key" in err
    assert f"run `segments prepare --purpose {PURPOSE}` again" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not default_ledger_path("AllOffice Nordic AB").exists()
    assert not workspace.releases.exists() or not list(workspace.releases.iterdir())
    assert "no pseudonymisation key kind" in (verify_prepared(workspace, PURPOSE) or "")
    # the same frames re-signed as prepare signs now (steward key) are released
    from prepared_frames import sign_prepared

    sign_prepared(workspace, PURPOSE, dt.date(2026, 10, 31))
    assert verify_prepared(workspace, PURPOSE) is None
    assert main(args) == 0


def test_attack_a_duplicated_label_row_names_the_labels_file_nothing_charged(
    workspace, frames, capsys
):
    """r10a F10: a person listed twice in W/segments/labels.parquet was reported as duplicate
    rows of the prepared customers.parquet with the fix "re-run prepare". The labels file, its
    column, the person and "re-run segments segment" are named; nothing is charged."""
    from segments.cli.main import main

    customers = pl.read_parquet(frames["customers"])
    labels = customers.select(
        "person_id", (pl.int_range(pl.len()) % 3).cast(pl.Utf8).alias("segment")
    )
    twice = labels.row(5)[0]
    workspace.segments.mkdir(parents=True, exist_ok=True)
    pl.concat([labels, labels.slice(5, 1)]).write_parquet(workspace.labels)
    args = ["release", "-w", str(workspace.root), "--policy", "alloffice", "--spec",
            "customers_by_county_segment", "--purpose", PURPOSE, "--recipient", "analytics",
            "--segments", "fitted", "--as-of", "2026-03-01"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "labels.parquet" in err and "column person_id" in err and repr(twice) in err
    assert "re-run `segments segment`" in err and "customers.parquet" not in err
    assert not default_ledger_path("AllOffice Nordic AB").exists()
    assert not workspace.releases.exists() or not list(workspace.releases.iterdir())
    labels.write_parquet(workspace.labels)  # one row per person: released
    assert main(args) == 0


def test_cli_dry_run_shows_accuracy_and_spends_nothing(workspace, capsys):
    from segments.cli.main import main

    args = ["release", "-w", str(workspace.root), "--policy", "alloffice", "--spec",
            "segment_overview", "--purpose", PURPOSE, "--recipient", "purchasing",
            "--as-of", "2026-03-01"]  # fmt: skip
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "expected accuracy" in out and "customers_by_county_segment" in out
    assert "nothing was charged" in out
    assert not default_ledger_path("AllOffice Nordic AB").exists()
    # the frames here were not made by the generator: the demo ledger refuses them
    assert main([*args, "--demo-ledger"]) == 2
    assert "not proven synthetic" in capsys.readouterr().err
    assert not (workspace.root / "ledger").exists() and not list(workspace.releases.iterdir())
    assert main(args) == 0  # the controller's ledger
    out = capsys.readouterr().out
    assert "released segment_overview-" in out and "THROW-AWAY" not in out
    assert len(list(workspace.releases.glob("segment_overview-*/card.json"))) == 1
    assert default_ledger_path("AllOffice Nordic AB").exists()
    # a dry run now shows what is left and the refusals the real run would meet
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "remains" in out and "ε 4 in the 12-month period" in out
    assert "would be REFUSED" not in out
    assert main([*args, "--dry-run", "--epsilon", "3.5"]) == 0
    assert "would be REFUSED: this release asks ε 3.5" in capsys.readouterr().out
    marketing = [a if a != "purchasing" else "adtech-partner" for a in args]
    assert main([*marketing, "--dry-run"]) == 2  # refused up front, as the real run is
    assert "third party for sales or marketing" in capsys.readouterr().err
    assert len(list(workspace.releases.glob("segment_overview-*/card.json"))) == 1


def test_cli_refuses_a_marketing_recipient(workspace, capsys):
    from segments.cli.main import main

    code = main(["release", "-w", str(workspace.root), "--policy", "alloffice", "--spec",
                 "category_mix", "--purpose", PURPOSE, "--recipient", "adtech-partner",
                 "--as-of", "2026-03-01"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    # AllOffice's refusal cites AllOffice's clause, not AllCall's AC-4 (issue 13 item 9)
    assert "(AO-10)" in err and "AC-4" not in err
    assert not list(workspace.releases.iterdir())


def test_segment_source_from_workspace(workspace):
    assert SegmentSource.from_workspace(workspace, "category_rule").provenance == "category_rule"
    with pytest.raises(PolicyError, match="do not exist"):
        SegmentSource.from_workspace(workspace, "fitted")
    with pytest.raises(PolicyError, match="unknown"):
        SegmentSource.from_workspace(workspace, "kmeans")
    (workspace.segments / "private").mkdir(parents=True)
    labels = pl.DataFrame({"person_id": ["a" * 64, "b" * 64], "segment": ["1", "0"]})
    labels.write_parquet(workspace.segments / "labels.parquet")
    labels.write_parquet(workspace.segments / "private" / "labels.parquet")
    fitted = SegmentSource.from_workspace(workspace, "fitted")
    assert fitted.provenance == "fitted_model" and fitted.keys == ("0", "1")
    # labels in W/segments/private/ without a DP k-means entry in the ledger are refused
    with pytest.raises(PolicyError, match="needs the ledger"):
        SegmentSource.from_workspace(workspace, "private")
    ledger = Ledger.for_workspace(
        workspace, "AllOffice Nordic AB", synthetic=synthetic_proof(workspace)
    )
    with pytest.raises(ReleaseRefusedError, match="private segments refused"):
        SegmentSource.from_workspace(workspace, "private", ledger=ledger)


# --- survey releases protect a person (issue 13 item 2) ------------------------------------------
def test_survey_release_bounds_all_responses_of_one_person(params, frames, tmp_path):
    """Attack: one person answering in six months (or a sole trader's two accounts in one
    month) was charged as one response. Now the unit is every response a person can give in
    the release's public window: months x accounts per person, possibly all in one cell."""
    from segments.privacy.releases import survey_months, survey_responses_per_person
    from segments.privacy.specs import SURVEY_ACCOUNTS_PER_PERSON

    assert SURVEY_ACCOUNTS_PER_PERSON == 2  # a sole trader's private and business accounts
    spec = SPECS["survey_experience"]
    one_month = dt.date(2026, 1, 1)
    with plan_release(
        spec, params, surveys=frames["surveys"], as_of=AS_OF, survey_month=one_month
    ) as plan:
        assert plan.survey_rows == 2
        assert plan.bounds()["survey_by_county_type"]["rows_per_unit"] == 2
        q = plan.queries[0]
        # OpenDP's own map: two responses of a person (both in one cell) cost at most ε
        assert q.measurement.map(q.d_in) <= spec.epsilon * (1 + 1e-9)
        assert float(q._summary.filter(pl.col("column") == "count")["sensitivity_l1"][0]) == 2
    window = survey_months(AS_OF, None, params)
    months = params.retention_months  # the purpose's retention window (24 for statistics)
    assert window[1] == dt.date(2026, 3, 1) and window[0].day == 1
    rows = survey_responses_per_person(window)
    assert rows == months * 2 >= 6
    # responses outside the public window are not read at all
    old = pl.read_parquet(frames["surveys"]).with_columns(
        pl.lit(dt.date(2020, 1, 1)).alias("survey_month")
    )
    both = tmp_path / "surveys.parquet"
    pl.concat([pl.read_parquet(frames["surveys"]), old]).write_parquet(both)
    with plan_release(spec, params, surveys=both, as_of=AS_OF) as plan:
        assert plan.survey_rows == rows
        n_read = pl.read_parquet(plan.queries[0].data_path).height
        assert n_read == pl.read_parquet(frames["surveys"]).height
        q = plan.queries[0]
        count_scale = float(q._summary.filter(pl.col("column") == "count")["scale"][0])
        # Laplace scale of the count: rows / (ε / 2 aggregates)
        assert count_scale == pytest.approx(rows / (spec.epsilon / 2), rel=1e-6)


def test_margins_are_consistent_and_non_negative(params, frames):
    """Post-processing: customers per county × segment sum to the county counts, spend per
    county × segment to the segment totals; nothing negative; intervals contain the value."""
    with _plan(SPECS["segment_overview"].with_epsilon(0.05), params, frames) as plan:
        tables = plan._tables_pl(run_unaccounted(plan))
    cells, counties = tables["customers_by_county_segment"], tables["customers_by_county"]
    sums = cells.group_by("county_code").agg(pl.col("count").sum().alias("cells"))
    joined = counties.join(sums, on="county_code")
    assert (joined["count"] == joined["cells"]).all()
    by_segment = (
        tables["spend_by_county_segment"].group_by("segment").agg(pl.col("spend_sek").sum())
    )
    joined = tables["spend_by_segment"].join(by_segment, on="segment", suffix="_cells")
    assert (joined["spend_sek"] == joined["spend_sek_cells"]).all()
    for table in tables.values():
        for agg in ("count", "spend_sek"):
            if agg in table.columns:
                assert (table[agg] >= 0).all()
                assert (table[f"{agg}_lower"] <= table[agg]).all()
                assert (table[agg] <= table[f"{agg}_upper"]).all()


def test_every_table_marks_each_cell_on_its_published_value(params, frames):
    """Issue 14: every table a reader gets says per cell whether its noise is within the
    policy's max_relative_error, judged on the value as finally published (after the
    consistency fit changed it), not only the category mix's; the half-width is the one at
    the planner's REFUSAL_CONFIDENCE, whatever level the intervals are shown at."""
    from segments.privacy.planner import REFUSAL_CONFIDENCE
    from segments.privacy.postprocess import is_reliable
    from segments.privacy.releases import _at_alpha, _fitted_tables

    with _plan(SPECS["segment_overview"].with_epsilon(0.05), params, frames) as plan:
        answers = run_unaccounted(plan)
        tables = plan._tables_pl(answers)
        aggregates = {q.query.name: q.query.aggregates for q in plan.queries}
        judging = [_at_alpha(q, 1.0 - REFUSAL_CONFIDENCE) for q in plan.queries]
        # the interval as computed at the refusal level, before the shown count interval is
        # rounded inward to whole numbers (that narrows it by < 1: judged on the rounded one,
        # a cell on the boundary flipped, depending on the noise drawn)
        at_refusal_level = _fitted_tables(answers, judging, plan.params)
    marked = 0
    for name, table in tables.items():
        judged = at_refusal_level[name]
        for agg in aggregates[name]:
            expected = is_reliable(
                table[agg].to_numpy(),
                (judged[f"{agg}_upper"] - judged[f"{agg}_noisy"]).to_numpy(),
                params.max_relative_error,
            )
            assert table[f"{agg}_reliable"].to_list() == expected.tolist(), (name, agg)
            marked += int((~expected).sum())
    # at ε 0.05 on a small frame some county × segment cells are noise: they must be marked
    assert marked > 0
    assert not tables["customers_by_county_segment"]["count_reliable"].all()


def test_charged_loss_is_opendp_compositor_loss_for_a_norm_bounded_release(
    params, workspace, policy, frames
):
    ledger = proven_ledger(workspace, policy, evaluation=True)
    with _verified(workspace, SPECS["category_mix"], params) as plan:
        opendp_loss = sum(q.vector.compositor().map(1) for q in plan.queries if q.vector)
        result = plan.execute(_context(ledger, workspace, policy, "purchasing", synthetic=True))
    entry = ledger.entry(result.release_id)
    assert entry.request.epsilon == pytest.approx(opendp_loss, rel=1e-9)
    assert opendp_loss == pytest.approx(SPECS["category_mix"].epsilon, rel=1e-6)
    bounds = result.card["contribution_bounds"]["category_by_segment"]["norm_bounds"]
    assert bounds["units"]["source"] == "chosen privately"
    assert bounds["units"]["private_choice"]["loss"] == pytest.approx(
        bounds["units"]["loss_of_bound"]
    )


def test_a_window_release_bound_ceiling_spans_the_windows_months(params, frames):
    """A category mix over several months may see a person's whole window: the private
    bound's top candidate is a month's worst case times the window's months, capped by what
    the purpose keeps (a year clipped at one month's ceiling lost 46 % of the units under
    zCDP). A monthly release keeps one month's ceiling."""
    from segments.privacy.releases import _norm_bounds

    zcdp = privacy_params(**{**params.to_dict(), "dp_family": "zcdp", "delta": 1e-7})
    for family in (params, zcdp):
        upper = {}
        for months, start in ((1, dt.date(2026, 2, 1)), (3, dt.date(2025, 12, 1))):
            window = (start, AS_OF)
            with _plan(SPECS["category_mix"], family, frames, window=window) as plan:
                upper[months] = plan.queries[0].vector.upper_bounds
        norm = 0 if family.dp_family == "pure" else 1
        for aggregate, top in upper[3].items():
            assert top == pytest.approx(_norm_bounds(family, 3)[norm][aggregate])
            assert top > upper[1][aggregate]
        # the whole history (no window) is capped at the purpose's retention
        with _plan(SPECS["category_mix"], family, frames) as plan:
            whole = plan.queries[0].vector.upper_bounds
        kept = _norm_bounds(family, family.retention_months)[norm]
        assert whole == pytest.approx(kept)


def test_count_intervals_are_whole_numbers_with_the_same_coverage():
    """A count's interval is rounded inward to whole numbers (170.55-195.45 -> 171-195): a
    whole-number truth lies in the rounded interval exactly when it lies in the raw one; an
    interval holding no whole number is rounded outward, never emptied or crossed."""
    from segments.privacy.releases import _whole_count_interval

    raw = pl.DataFrame(
        {
            "count": [183, 12, 0, 171],
            "count_lower": [170.55, 0.0, 0.2, 171.0000000001],
            "count_upper": [195.45, 24.9, 0.6, 180.0],
            "sum_spend_lower": [1.5, 2.5, 3.5, 4.5],  # not a count: untouched
        }
    )
    out = _whole_count_interval(raw)
    assert out["count_lower"].to_list() == [171.0, 0.0, 0.0, 171.0]
    assert out["count_upper"].to_list() == [195.0, 24.0, 1.0, 180.0]
    assert out["sum_spend_lower"].to_list() == raw["sum_spend_lower"].to_list()
    assert [np.copysign(1.0, v) for v in out["count_lower"]] == [1.0] * 4  # no "-0"
    rng = np.random.default_rng(17)
    lows = rng.uniform(0, 50, 2_000)
    frame = pl.DataFrame({"count_lower": lows, "count_upper": lows + rng.uniform(0, 9, 2_000)})
    rounded = _whole_count_interval(frame)
    for truth in range(0, 61):
        inside = (frame["count_lower"] <= truth) & (truth <= frame["count_upper"])
        still = (rounded["count_lower"] <= truth) & (truth <= rounded["count_upper"])
        assert (still | ~inside).all()  # never loses a truth the raw interval held
        holds_whole = (rounded["count_lower"] <= rounded["count_upper"]).all()
        assert holds_whole
        tight = (frame["count_lower"].ceil() <= frame["count_upper"].floor()).to_numpy()
        assert (still.to_numpy() == inside.to_numpy())[tight].all()  # and adds none


def test_reliability_marks_do_not_move_with_the_intervals_level(params, frames):
    """The same noisy answers shown at 95 % and at 5 % intervals carry the same reliable
    marks, judged at the planner's REFUSAL_CONFIDENCE (review r11a F2, release side): a
    caller's --confidence widens or narrows the intervals, never the policy's mark."""
    from segments.privacy.releases import _at_alpha

    with _plan(SPECS["segment_overview"], params, frames) as plan:
        answers = run_unaccounted(plan)
        shown_95 = plan._tables_pl(answers)
        plan.queries = [_at_alpha(q, 0.95) for q in plan.queries]
        shown_05 = plan._tables_pl(answers)
    for name, table in shown_95.items():
        narrow = shown_05[name]
        for col in [c for c in table.columns if c.endswith("_reliable")]:
            agg = col.removesuffix("_reliable")
            # the intervals shown did change (else the test could not fail) ...
            assert (narrow[f"{agg}_upper"] < table[f"{agg}_upper"]).any()
            # ... the marks did not
            assert narrow[col].to_list() == table[col].to_list(), (name, col)
        # nor did which means are published (the same rule, judged at the same level)
        for col in [c for c in table.columns if c.endswith("_status")]:
            assert narrow[col].to_list() == table[col].to_list(), (name, col)


def test_the_cell_bound_is_enforced_on_the_cells_not_inferred_from_the_categories(
    params, frames, tmp_path, monkeypatch
):
    """The truncation to ``cells_per_person`` is skipped only when no person has more cells:
    counted on the cells themselves, not inferred from one row per category. A backend
    that gave a person two rows of one category (r12a F2's bug) still leaves them at most
    the bound, here where the bound is every category (r13a F2)."""
    import segments.privacy.releases as releases

    pid, heavy = _heavy_person(frames, tmp_path)
    key = person_key_of(pid)
    original = releases._cells

    def doubled(*args, **kwargs):
        cells = original(*args, **kwargs)
        return pl.concat([cells, cells.filter(pl.col("pid") == key).head(1)])

    monkeypatch.setattr(releases, "_cells", doubled)
    assert cells_per_person(params) == len(set(params.categories))
    paths = _heavy_shared_frames(heavy, params, tmp_path)
    cells = pl.read_parquet(paths["cells"])
    assert cells.filter(pl.col("pid") == key).height == cells_per_person(params)
    assert cells.group_by("pid").len()["len"].max() <= cells_per_person(params)
