"""Tests of segments.segmentation: selection, stability, profiles, labels, targeting, CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from prepared_frames import AS_OF, make_prepared, segmentation_workspace, sign_prepared
from sklearn.metrics import adjusted_rand_score

from segments._tables import scan_table
from segments.cli import segment as segment_cli
from segments.cli import target as target_cli
from segments.exceptions import SchemaError, WorkspaceError
from segments.features import (
    DEFAULT_FEATURE_BOUNDS,
    LINE_SHARE_FEATURES,
    RFM_FEATURES,
    customer_features,
    rfm_features,
)
from segments.ingest import load_transactions
from segments.policy import Policy
from segments.prepare import prepare
from segments.segmentation import (
    FeatureSpec,
    fit_segments,
    planted_archetypes,
    segment,
    segment_profiles,
    target,
)
from segments.segmentation.selection import _select_k
from segments.synth import DEFAULT_DATASET, copy_default_dataset
from segments.workspace import Workspace

SPEC = FeatureSpec(DEFAULT_FEATURE_BOUNDS)
# The small planted frames draw business size bands and channels at random (pure noise), so
# their tests model only what they plant; the default-dataset test uses the default SPEC.
SMALL = FeatureSpec(
    DEFAULT_FEATURE_BOUNDS,
    numeric=(*RFM_FEATURES, *LINE_SHARE_FEATURES),
    categorical=("customer_type",),
)
FAST = {"k_range": range(3, 6), "n_splits": 2}


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, np.ndarray]:
    customers, lines, truth = make_prepared(600, seed=11)
    features = customer_features(lines, customers, as_of=AS_OF)
    arche = truth.sort("person_id")["archetype"].to_numpy()
    return features, arche


@pytest.fixture(scope="module")
def fitted(planted):
    return fit_segments(planted[0], SMALL, seed=7, **FAST)


def test_recovers_planted_archetypes(planted, fitted) -> None:
    assert fitted.k == 4
    assert adjusted_rand_score(planted[1], fitted.labels_) > 0.9


def test_scores_are_reported_for_every_k(fitted) -> None:
    scores = fitted.scores
    assert scores["k"].tolist() == [3, 4, 5]
    assert (
        scores[["silhouette", "bic", "stability_ari_mean", "stability_ari_min"]].notna().all().all()
    )
    assert (scores["stability_ari_min"] <= scores["stability_ari_mean"]).all()
    meta = fitted.metadata()
    assert meta["fitted_on_private_data"] is True and meta["provenance"] == "fitted_model"
    assert meta["bounds"]["monetary_sek"] == [0.0, 250000.0]
    assert json.loads(json.dumps(meta)) == meta


def test_segment_ids_ordered_by_size(fitted) -> None:
    sizes = np.bincount(fitted.labels_)
    assert (np.diff(sizes) <= 0).all()


def test_determinism_by_seed(planted, fitted) -> None:
    again = fit_segments(planted[0], SMALL, seed=7, **FAST)
    assert np.array_equal(again.labels_, fitted.labels_)
    pd.testing.assert_frame_equal(again.scores, fitted.scores)
    assert again.selection == fitted.selection
    other = fit_segments(planted[0], SMALL, seed=8, **FAST)
    assert not other.scores.equals(fitted.scores)


def test_selection_on_subsample_labels_everyone(planted) -> None:
    model = fit_segments(planted[0], SMALL, seed=1, selection_sample=200, **FAST)
    assert model.sizes["selection_sample_size"] == 200
    assert model.sizes["n_customers"] == len(planted[0]) == model.labels_.size
    assert np.array_equal(model.predict(planted[0]), model.labels_)


def test_gmm_option(planted) -> None:
    model = fit_segments(planted[0], SMALL, model="gmm", seed=3, **FAST)
    assert np.isnan(model.scores["inertia"]).all()
    assert adjusted_rand_score(planted[1], model.labels_) > 0.8


def test_geography_can_enter_the_model(planted) -> None:
    spec = FeatureSpec(DEFAULT_FEATURE_BOUNDS, categorical=("county_code", "urban_class"))
    model = fit_segments(planted[0], spec, seed=3, **FAST)
    assert model.transformer.get_feature_names_out().tolist()[-3:] == [
        "urban_class_urban",
        "urban_class_intermediate",
        "urban_class_rural",
    ]


def _evidence(
    held_out: dict[int, list[float]],
    stability: dict[int, list[float]] | None = None,
    smallest: dict[int, float] | None = None,
) -> tuple[pd.DataFrame, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """A score table, held-out Davies-Bouldin indices (two per split) and split-half ARIs
    (one per split), aligned over the same splits for every k."""
    ks = sorted(held_out)
    n_splits = len(held_out[ks[0]]) // 2
    stability = stability or {k: [0.95 + 0.001 * i for i in range(n_splits)] for k in ks}
    scores = pd.DataFrame(
        {
            "k": ks,
            "stability_ari_mean": [float(np.mean(stability[k])) for k in ks],
            "smallest_segment_share": [(smallest or {}).get(k, 0.1) for k in ks],
        }
    )
    return (
        scores,
        {k: np.asarray(v, dtype=float) for k, v in held_out.items()},
        {k: np.asarray(v, dtype=float) for k, v in stability.items()},
    )


def test_selection_picks_the_lowest_held_out_index_and_reports_the_margin() -> None:
    evidence = _evidence(
        {3: [2.0, 2.1, 2.05, 2.0], 4: [1.5, 1.52, 1.49, 1.51], 5: [1.8, 1.83, 1.79, 1.81]}
    )
    selection = _select_k(*evidence)
    assert (selection.k, selection.best_k, selection.too_close_to_call) == (4, 4, ())
    assert selection.runner_up == 5
    assert selection.margin == pytest.approx(np.mean([0.3, 0.31, 0.30, 0.30]))
    assert 0 < selection.margin_se < 0.01
    assert "separated from the runner-up k = 5" in selection.summary()


def test_selection_prefers_the_smaller_k_when_too_close_to_call() -> None:
    # k = 5 is lower on average, but the paired differences straddle zero: a tie.
    evidence = _evidence(
        {3: [2.0, 2.0, 2.0, 2.0], 4: [1.50, 1.40, 1.55, 1.45], 5: [1.40, 1.45, 1.50, 1.42]}
    )
    selection = _select_k(*evidence)
    assert selection.best_k == 5 and selection.k == 4
    assert selection.too_close_to_call == (5,)
    assert selection.runner_up == 5 and selection.margin < 0  # k won the tie by parsimony
    assert "too close to call" in selection.summary()
    # The same mean difference, consistent over every split, separates them.
    evidence = _evidence({4: [1.5, 1.5, 1.5, 1.5], 5: [1.45, 1.44, 1.46, 1.45]})
    assert _select_k(*evidence).k == 5


def test_a_larger_k_must_also_be_as_reproducible() -> None:
    held_out = {4: [1.5] * 8, 5: [1.45, 1.44, 1.46, 1.45] * 2}
    stability = {4: [0.98, 0.97, 0.98, 0.99], 5: [0.85, 0.86, 0.84, 0.88]}
    evidence = _evidence(held_out, stability=stability)
    selection = _select_k(*evidence)
    assert selection.k == 4 and selection.less_reproducible == (5,)
    assert "agree clearly less" in selection.summary()
    # A consistent but immaterial loss of stability does not count against the larger k.
    stability = {4: [1.0] * 4, 5: [0.996] * 4}
    assert _select_k(*_evidence(held_out, stability=stability)).k == 5


def test_unstable_or_tiny_segments_are_not_candidates() -> None:
    held_out = {3: [2.0, 2.0, 2.1, 2.0], 4: [1.0, 1.0, 1.1, 1.0], 5: [1.5, 1.5, 1.6, 1.5]}
    unstable = {3: [0.9, 0.9], 4: [0.5, 0.5], 5: [0.9, 0.9]}
    selection = _select_k(*_evidence(held_out, stability=unstable))
    assert selection.k == 5 and selection.candidates == (3, 5)
    selection = _select_k(*_evidence(held_out, smallest={4: 0.01}))
    assert selection.k == 5 and selection.candidates == (3, 5)


def test_selection_is_recorded_in_the_metadata(fitted) -> None:
    meta = fitted.metadata()["selection"]
    assert meta["k"] == fitted.k and meta["runner_up"] in (3, 5)
    assert meta["margin"] is not None and meta["margin_se"] is not None
    scores = fitted.scores
    assert (scores["davies_bouldin_low"] <= scores["davies_bouldin"]).all()
    assert (scores["davies_bouldin"] <= scores["davies_bouldin_high"]).all()
    assert (scores["stability_ari_low"] <= scores["stability_ari_high"]).all()


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (lambda f: f.iloc[:0], {}, ValueError, r"table 'features' has 0 customers"),
        (lambda f: f.iloc[:1], {}, ValueError, r"1 customer\(s\) but k_range goes up to 5"),
        (
            lambda f: f.assign(line_share_furniture=0.0),
            {},
            ValueError,
            r"feature\(s\) \['line_share_furniture'\] have no variance \(value 0.0",
        ),
        (lambda f: f.drop(columns="share_web"), {}, SchemaError, r"column 'share_web'"),
        (lambda f: f, {"k_range": [1, 2]}, ValueError, r"'k_range' is \[1, 2\].*k >= 2"),
        (lambda f: f, {"k_range": []}, ValueError, r"'k_range' is \[\]"),
        (lambda f: f, {"model": "dbscan"}, ValueError, r"'model' is 'dbscan'"),
    ],
)
def test_fit_errors(planted, change, kwargs, error, match) -> None:
    args = {**FAST, **kwargs}
    with pytest.raises(error, match=match):
        fit_segments(change(planted[0]), SPEC, seed=0, **args)


def test_profiles_and_names(planted, fitted) -> None:
    profiles = segment_profiles(planted[0], fitted.labels_)
    assert profiles["size"].sum() == len(planted[0])
    assert profiles["name"].is_unique
    names = " | ".join(profiles["name"])
    for words in ("pantry", "paper & toner", "furniture", "private"):
        assert words in names
    assert profiles.loc[0, "frequency_orders_median"] > 0
    assert "%" in profiles.loc[0, "top_counties"]


def test_names_follow_what_a_segment_buys_not_what_costs_most() -> None:
    """Pens on nine lines in ten and one chair: by spend the chair wins, by order lines the
    pens; the name and top categories follow the lines."""
    n = 40
    frame = pd.DataFrame(
        {
            "recency_days": 30.0,
            "frequency_orders": 6.0,
            "monetary_sek": 5000.0,
            "avg_basket_sek": 800.0,
            "share_writing": 0.2,
            "share_furniture": 0.8,
            "line_share_writing": 0.9,
            "line_share_furniture": 0.1,
        },
        index=range(n),
    )
    profiles = segment_profiles(frame, np.zeros(n, dtype=int))
    assert profiles.loc[0, "name"].endswith("writing buyers")
    assert profiles.loc[0, "top_categories"].startswith("writing 90%")
    spend_only = segment_profiles(
        frame.drop(columns=["line_share_writing", "line_share_furniture"]), np.zeros(n, dtype=int)
    )
    assert spend_only.loc[0, "top_categories"].startswith("furniture 80%")


# --- the workspace stage and targeting ---------------------------------------------------------
@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return segmentation_workspace(tmp_path / "ws", 300, signed=False)


def test_segment_writes_labels_for_eligible_only(workspace: Workspace) -> None:
    result = segment(workspace, "alloffice", k_range=range(3, 5), n_splits=1, seed=2)
    labels = pl.read_parquet(workspace.segments / "labels.parquet")
    customers = pl.read_parquet(workspace.prepared_dir("segmentation") / "customers.parquet")
    eligible = set(customers.filter("profiling_eligible")["person_id"])
    assert labels.columns == ["person_id", "segment"]
    assert set(labels["person_id"]) == eligible and labels.height < customers.height
    meta = json.loads((workspace.segments / "metadata.json").read_text())
    assert meta["fitted_on_private_data"] is True and meta["provenance"] == "fitted_model"
    assert meta["as_of"] == "2026-06-30" and meta["policy"] == "alloffice"
    assert meta["n_labelled"] == labels.height
    assert meta["n_not_profiling_eligible"] == customers.height - labels.height
    assert set(meta) >= {"features", "bounds", "k", "scores", "seed", "selection_sample_size"}
    profiles = pd.read_parquet(workspace.segments / "profiles.parquet")
    assert profiles["labelled"].sum() == labels.height
    assert result.metadata == meta


def test_segment_reads_the_lines_on_the_selected_engine_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r21 MEDIUM 4: `--engine duckdb segment` ran the features in polars (the lines were
    read whole and passed as a frame). The lines now go to the engine by path, read while
    the shared workspace lock holds (an erasure cannot replace them meanwhile), and the
    labels and scores are the polars engine's."""
    from segments.engine.embedded import DuckDBEngine

    fitted_by = {}
    real = DuckDBEngine.person_feature_sums
    for engine in ("polars", "duckdb"):
        ws = segmentation_workspace(tmp_path / engine, 300, signed=False)
        calls: list[Path] = []

        def spy(self, lines, *args, _ws=ws, _calls=calls, **kwargs):  # type: ignore[no-untyped-def]
            refused = pytest.raises(WorkspaceError, match="another segments command")
            with refused, _ws.lock(exclusive=True, wait=False):  # an erasure would wait
                pass
            _calls.append(Path(lines))
            return real(self, lines, *args, **kwargs)

        monkeypatch.setattr(DuckDBEngine, "person_feature_sums", spy)
        monkeypatch.setenv("SEGMENTS_ENGINE", engine)
        segment(ws, "alloffice", k_range=range(3, 5), n_splits=1, seed=2)
        assert calls == ([ws.prepared_dir("segmentation") / "lines.parquet"] * (engine != "polars"))
        meta = json.loads((ws.segments / "metadata.json").read_text())
        fitted_by[engine] = (pl.read_parquet(ws.segments / "labels.parquet"), meta["scores"])
    (labels, scores), (labels_duckdb, scores_duckdb) = fitted_by["polars"], fitted_by["duckdb"]
    assert labels.height > 100 and labels.equals(labels_duckdb)
    assert scores == scores_duckdb


def test_segment_without_as_of_or_frames(workspace: Workspace, tmp_path: Path) -> None:
    (workspace.prepared_dir("segmentation") / "policy_report.json").unlink()
    with pytest.raises(WorkspaceError, match=r"no 'as_of' recorded.*--as-of"):
        segment(workspace, "alloffice")
    with pytest.raises(WorkspaceError, match=r"lines.parquet does not exist.*segments prepare"):
        segment(tmp_path / "empty", "alloffice", as_of=AS_OF)
    assert not workspace.segments.exists()


def test_failed_segmentation_writes_nothing(workspace: Workspace) -> None:
    with pytest.raises(ValueError, match=r"k_range goes up to 400"):
        segment(workspace, "alloffice", k_range=[3, 400])
    assert not workspace.segments.exists()


def test_policy_without_feature_bounds(workspace: Workspace) -> None:
    class Bare:
        name = "bare"
        privacy = None

    with pytest.raises(SchemaError, match=r"policy 'bare': key 'privacy.feature_bounds'"):
        segment(workspace, Bare())


def test_target_excludes_opt_outs_and_withdrawals(workspace: Workspace) -> None:
    sign_prepared(workspace, "segmentation", AS_OF)  # target writes from signed frames only
    segment(workspace, Policy.load("alloffice"), k_range=[3], n_splits=1, seed=0)
    labels = pl.read_parquet(workspace.segments / "labels.parquet")
    members = labels.filter(pl.col("segment") == 0)["person_id"]
    # One member withdraws (no longer eligible) after the segmentation ran (AO-8).
    path = workspace.prepared_dir("segmentation") / "customers.parquet"
    customers = pl.read_parquet(path)
    customers = customers.with_columns(
        pl.when(pl.col("person_id") == members[0])
        .then(False)
        .otherwise(pl.col("profiling_eligible"))
        .alias("profiling_eligible")
    )
    customers.write_parquet(path)
    result = target(workspace, 0)
    written = pl.read_parquet(result.path)["person_id"]
    opted_out = set(customers.filter("marketing_opt_out")["person_id"])
    assert members[0] not in set(written)
    assert not set(written) & opted_out
    assert result.excluded["not_profiling_eligible"] == 1
    assert result.n_targeted + sum(result.excluded.values()) == members.len()
    by_name = target(workspace, result.name)
    assert by_name.n_targeted == result.n_targeted - 0 and by_name.segment == 0


def test_target_errors(workspace: Workspace) -> None:
    with pytest.raises(WorkspaceError, match=r"metadata.json does not exist.*segments segment"):
        target(workspace, 0)
    sign_prepared(workspace, "segmentation", AS_OF)
    segment(workspace, "alloffice", k_range=[3], n_splits=1)
    with pytest.raises(ValueError, match=r"'segment' is '7'.*0: "):
        target(workspace, "7")
    path = workspace.prepared_dir("segmentation") / "customers.parquet"
    pl.read_parquet(path).drop("marketing_opt_out").write_parquet(path)
    with pytest.raises(SchemaError, match=r"column 'marketing_opt_out'.*AO-7"):
        target(workspace, 0)


def test_attack_target_refuses_frames_signed_before_the_key_kind(workspace: Workspace) -> None:
    """r13b #2: a segmentation over frames whose record predates the key kind (pseudonyms
    perhaps made with the public demo key) writes no list of pseudonyms."""
    from prepared_frames import sign_prepared, sign_prepared_before_key_kind

    from segments.exceptions import ReleaseRefusedError

    sign_prepared(workspace, "segmentation", AS_OF)
    segment(workspace, "alloffice", k_range=[3], n_splits=1, seed=0)
    sign_prepared_before_key_kind(workspace, "segmentation", AS_OF)
    with pytest.raises(ReleaseRefusedError, match=r"no pseudonymisation key kind.*prepare"):
        target(workspace, 0)
    assert not workspace.targets.exists() or not list(workspace.targets.iterdir())
    with pytest.raises(ReleaseRefusedError, match=r"no pseudonymisation key kind"):
        segment(workspace, "alloffice", k_range=[3], n_splits=1, seed=0)
    sign_prepared(workspace, "segmentation", AS_OF)
    assert target(workspace, 0).n_targeted > 0


def test_attack_frames_signed_under_a_demo_key_called_steward_are_refused(
    workspace: Workspace,
) -> None:
    """r13d: frames prepared (by earlier code) under a public demo key that passed as the
    steward's (zero-padded: same key id) write no list and segment nothing."""
    from segments.exceptions import ReleaseRefusedError
    from segments.prepare.pseudonym import PseudonymKey, demo_key

    public = demo_key({"synthetic": True, "seed": 13}).secret + b"\0"
    sign_prepared(workspace, "segmentation", AS_OF)
    segment(workspace, "alloffice", k_range=[3], n_splits=1, seed=0)
    sign_prepared(workspace, "segmentation", AS_OF, key_id=PseudonymKey(public, "x").key_id)
    with pytest.raises(ReleaseRefusedError, match=r"'steward' key is a public demo key"):
        target(workspace, 0)
    assert not workspace.targets.exists() or not list(workspace.targets.iterdir())
    with pytest.raises(ReleaseRefusedError, match=r"public demo key"):
        segment(workspace, "alloffice", k_range=[3], n_splits=1, seed=0)


def test_attack_target_refuses_frames_whose_record_was_deleted(workspace: Workspace) -> None:
    """r13b #2 once more: deleting the record hides the key kind, so a list of pseudonyms
    is written only from frames prepare signed."""
    from segments.exceptions import ReleaseRefusedError
    from segments.provenance import PROVENANCE_FILE

    sign_prepared(workspace, "segmentation", AS_OF)
    segment(workspace, "alloffice", k_range=[3], n_splits=1, seed=0)
    (workspace.prepared_dir("segmentation") / PROVENANCE_FILE).unlink()
    with pytest.raises(ReleaseRefusedError, match=r"no provenance.json.*segments prepare"):
        target(workspace, 0)
    assert not workspace.targets.exists() or not list(workspace.targets.iterdir())


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="segments")
    sub = parser.add_subparsers(dest="command", required=True)
    segment_cli.register(sub)
    target_cli.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_segment_and_target(workspace: Workspace, capsys) -> None:
    sign_prepared(workspace, "segmentation", AS_OF)
    ws = str(workspace.root)
    assert _cli(["segment", "--workspace", ws, "--k-range", "3-4", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "k chosen on 300" in out and "segment 0:" in out
    assert _cli(["target", "--workspace", ws, "--segment", "0"]) == 0
    assert "people written to" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["3-", "x-4", "1-4", "6-3"])
def test_cli_k_range_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
        segment_cli.k_range(text)
    assert segment_cli.k_range("4") == range(4, 5)


# --- real data: CDNOW (RFM only, no geography) -------------------------------------------------
CDNOW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "CDNOW_master.txt"
CDNOW_BOUNDS = {  # public choices for this data set (USD), stated here, not read from it
    "recency_days": (0, 730),
    "frequency_orders": (0, 100),
    "monetary_sek": (0, 5000),
    "avg_basket_sek": (0, 1000),
}


def _cdnow_lines() -> pl.DataFrame:
    """CDNOW_master.txt through segments.load_transactions, as prepared-shaped lines."""
    mapping = {"customer_id": "customer_id", "order_date": "date", "quantity": "number_of_cds"}
    t = load_transactions(CDNOW, {**mapping, "amount": "dollar_value"})
    orders, order_lines = pl.from_pandas(t.orders), pl.from_pandas(t.order_lines)
    hex_id = pl.col("customer_id").map_elements(lambda i: f"{i:016x}", return_dtype=pl.Utf8)
    return order_lines.join(orders, on="order_id").select(
        hex_id.alias("person_id"),
        pl.col("order_id").map_elements(lambda i: f"{i:016x}", return_dtype=pl.Utf8),
        "order_date",
        (pl.col("quantity") * pl.col("unit_price_sek")).alias("amount_sek"),
    )


@pytest.mark.slow
@pytest.mark.skipif(not CDNOW.exists(), reason="CDNOW reference data not present")
def test_cdnow_holdout_profiles_are_stable() -> None:
    lines = _cdnow_lines()
    assert lines["person_id"].n_unique() == 23_570  # the documented customer count
    features = rfm_features(lines, as_of=dt.date(1998, 6, 30))
    rng = np.random.default_rng(0)
    half = rng.random(len(features)) < 0.5
    calibration, holdout = features[half], features[~half]
    spec = FeatureSpec(CDNOW_BOUNDS, numeric=RFM_FEATURES, categorical=())
    model = fit_segments(
        calibration, spec, k_range=range(3, 6), n_splits=1, selection_sample=4000, seed=1
    )
    assigned = model.predict(holdout)
    fit_profile = segment_profiles(calibration, model.labels_).set_index("segment")
    hold_profile = segment_profiles(holdout, assigned).set_index("segment")
    assert list(hold_profile.index) == list(range(model.k))
    assert np.abs(fit_profile["share"] - hold_profile["share"]).max() < 0.02
    for col in (f"{c}_median" for c in RFM_FEATURES):
        rel = np.abs(fit_profile[col] - hold_profile[col]) / fit_profile[col].clip(lower=1)
        assert rel.max() < 0.15, col
    assert (fit_profile["name"] == hold_profile["name"]).all()


@pytest.mark.slow
def test_default_dataset_recovers_planted_archetypes(tmp_path: Path) -> None:
    # Held-out figure of issue 4: the features and the selection rule were chosen on
    # datasets generated with other seeds; the truth is read only here, to score.
    ws = Workspace(tmp_path / "w")
    copy_default_dataset(ws, force=True)
    report = prepare(ws, Policy.load("alloffice"), "segmentation", DEFAULT_DATASET.as_of)
    folder = ws.prepared_dir("segmentation")
    features = customer_features(
        scan_table(folder / "lines.parquet"),
        pl.scan_parquet(folder / "customers.parquet"),
        as_of=report.as_of,
    )
    model = fit_segments(features, SPEC, k_range=range(3, 11), seed=0)
    truth = planted_archetypes(ws, pl.Series(features["person_id"]))
    assert pd.notna(truth).all()
    assert model.k == 6  # the number of planted archetypes
    # Issue goal 0.8; measured 0.854 with the split-half rule and line + spend shares (issue
    # 20; tuned on generator seeds 101-106, held-out figures in
    # benchmarks/bench_segments_heldout.py).
    assert adjusted_rand_score(truth, model.labels_) >= 0.8


def test_profile_heatmap_shows_the_mix_the_names_use(planted, fitted) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segments.plots import plot_profile_heatmap

    profiles = segment_profiles(planted[0], fitted.labels_)
    ax = plot_profile_heatmap(profiles)
    assert ax.get_title() == "mean share of order lines per category"
    # the registry's category names (segments.keys), as every output shows them
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["Paper", "Toner ink"]
    spend = profiles.drop(columns=[c for c in profiles if c.startswith("line_share_")])
    assert plot_profile_heatmap(spend).get_title() == "mean share of spend per category"
    plt.close("all")


def test_selection_evidence_plot_shows_intervals_and_ties(fitted) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segments.plots import plot_selection_evidence

    axes = plot_selection_evidence(fitted.scores, fitted.selection)
    assert len(axes) == 2 and "Davies-Bouldin" in axes[0].get_title()
    assert axes[0].get_legend() is not None
    plt.close("all")


def test_attack_an_edited_report_as_of_is_refused_when_prepare_signed_the_frames(
    workspace: Workspace,
) -> None:
    """The exploratory segmentation reads the frames' as-of through the same reader as the
    DP k-means: prepare's signed record, a report that disagrees refused; hand-made frames
    without a record keep the report's (the fixture above)."""
    from prepared_frames import sign_prepared

    from segments.exceptions import ReleaseRefusedError

    sign_prepared(workspace, "segmentation", AS_OF)
    report = workspace.policy_report("segmentation")
    report.write_text(json.dumps({"as_of": (AS_OF + dt.timedelta(days=90)).isoformat()}))
    with pytest.raises(ReleaseRefusedError, match=rf"as_of 2026-09-28.*signed.*{AS_OF}"):
        segment(workspace, "alloffice", k_range=[3], n_splits=1, n_bootstrap=1, seed=2)
    assert not (workspace.segments / "labels.parquet").exists()
    report.unlink()  # the signed record alone dates the frames
    result = segment(workspace, "alloffice", k_range=[3], n_splits=1, n_bootstrap=1, seed=2)
    assert result.metadata["as_of"] == AS_OF.isoformat()
