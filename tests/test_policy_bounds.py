"""Bounds for another business chosen privately (DP quantiles), charged to the ledger."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from prepared_frames import sign_prepared

from segments.exceptions import BudgetExceededError, PolicyError
from segments.policy import Policy
from segments.privacy.ledger import Ledger
from segments.privacy.policy_bounds import BOUNDED_QUANTITIES, choose_policy_bounds
from segments.workspace import Workspace, sha256_file

POLICY = Path(__file__).resolve().parents[1] / "examples" / "cdnow" / "policy.toml"
CEILINGS = {
    "spend_bound_sek": 1e6,
    "cell_spend_bound_sek": 1e5,
    "cell_units_bound": 1e4,
    "feature_bounds.frequency_orders": 1e4,
    "feature_bounds.avg_basket_sek": 1e5,
}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    rng = np.random.default_rng(3)
    n = 4000
    persons = [f"{i:016x}" for i in range(n)]
    orders = rng.integers(1, 6, n)
    rows = []
    for p, k in zip(persons, orders, strict=True):
        for o in range(int(k)):
            units = int(rng.integers(1, 30))
            amount = float(units * rng.lognormal(4.5, 0.5))  # spread values, no point masses
            rows.append((p, f"{p}{o:04d}", dt.date(2024, 1 + o, 3), "music", units, amount))
    lines = pl.DataFrame(
        rows,
        schema=["person_id", "order_id", "order_date", "category", "quantity", "amount_sek"],
        orient="row",
    )
    ws = Workspace(tmp_path / "ws")
    ws.prepared_dir("statistics").mkdir(parents=True)
    lines.write_parquet(ws.prepared_dir("statistics") / "lines.parquet")
    sign_prepared(ws, "statistics", dt.date(2024, 7, 1))  # as `segments prepare` signs
    return ws


def _choose(ws: Workspace, ledger: Ledger, **kw: object) -> object:
    args = {
        "purpose": "statistics",
        "recipient": "analytics",
        "as_of": dt.date(2024, 7, 1),
        "epsilon": 2.5,
        "ceilings": CEILINGS,
        "quantile": 0.9,
        **kw,
    }
    return choose_policy_bounds(ws, Policy.load(POLICY), ledger, **args)  # type: ignore[arg-type]


def test_bounds_near_the_true_quantile_and_charged(workspace: Workspace, tmp_path: Path) -> None:
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    result = _choose(workspace, ledger)
    lines = pl.read_parquet(workspace.prepared_dir("statistics") / "lines.parquet")
    people = lines.group_by("person_id").agg(
        pl.col("amount_sek").sum(), pl.col("amount_sek").max().alias("cell")
    )
    # OpenDP's noise cannot be seeded: a generous band around the true 90th percentiles
    for key, column in (("spend_bound_sek", "amount_sek"), ("cell_spend_bound_sek", "cell")):
        truth = float(people[column].quantile(0.9))
        assert 0.7 * truth <= result.bounds[key] <= 1.5 * truth, (key, truth)
    assert set(result.bounds) == set(BOUNDED_QUANTITIES)
    entries = ledger.entries()
    assert [e.release_id for e in entries] == [result.release_id]
    assert entries[0].request.epsilon == pytest.approx(2.5)
    assert "[privacy.feature_bounds]" in result.toml()


def test_missing_public_ceiling_refused_before_charging(
    workspace: Workspace, tmp_path: Path
) -> None:
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    ceilings = {k: v for k, v in CEILINGS.items() if k != "cell_units_bound"}
    with pytest.raises(PolicyError, match="cell_units_bound"):
        _choose(workspace, ledger, ceilings=ceilings)
    assert ledger.entries() == []


def test_over_budget_refused_by_the_ledger(workspace: Workspace, tmp_path: Path) -> None:
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    with pytest.raises(BudgetExceededError):
        _choose(workspace, ledger, epsilon=policy.privacy.budget_epsilon * 2)
    assert not list((workspace.root / "releases").glob("policy-bounds-*/bounds.json"))


def _declare(ws: Workspace, categories: list[str]) -> None:
    """A raw manifest of an ingested export declaring ``categories`` (its public taxonomy)."""
    import json

    ws.raw.mkdir(parents=True, exist_ok=True)
    domains = {"categories": categories, "channels": ["web"], "geography": None}
    manifest = {"synthetic": False, "schema": "real", "domains": domains}
    ws.manifest.write_text(json.dumps(manifest), encoding="utf-8")


def test_per_category_bounds_of_a_new_taxonomy_chosen_privately(
    workspace: Workspace, tmp_path: Path
) -> None:
    """Issue 16 gap (b): per-category cell bounds for a taxonomy the ingest declared, chosen
    with a DP quantile each (charged in the same ledger entry), on the scale of the largest
    cell bound, printed as a policy table that loads and keys releases by that taxonomy."""
    from segments.privacy.specs import PrivacyParams

    _declare(workspace, ["music", "vinyl"])
    # the export's raw files come first, then prepare signs its frames from them
    sign_prepared(workspace, "statistics", dt.date(2024, 7, 1))
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    ceilings = {**CEILINGS, "cell_units_by_category.music": 1e4}
    result = _choose(workspace, ledger, ceilings=ceilings)  # type: ignore[attr-defined]
    lines = pl.read_parquet(workspace.prepared_dir("statistics") / "lines.parquet")
    truth = float(
        lines.group_by("person_id").agg(pl.col("quantity").max())["quantity"].quantile(0.9)
    )
    chosen = result.bounds["cell_units_by_category.music"]  # type: ignore[attr-defined]
    top = result.bounds["cell_units_bound"]  # type: ignore[attr-defined]
    assert top % chosen == 0 and 0.7 * truth <= chosen <= top
    [entry] = ledger.entries()
    assert "cell_units_by_category.music" in entry.request.spec["quantities"]
    assert entry.request.epsilon == pytest.approx(2.5)  # one charge for every bound

    snippet = result.toml()  # type: ignore[attr-defined]
    assert f"[privacy.cell_units_by_category]\nmusic = {chosen:g}" in snippet
    edited = tmp_path / "policy.toml"
    base = POLICY.read_text(encoding="utf-8")
    edited.write_text(
        base.replace("cell_units_bound = 40", f"cell_units_bound = {top:g}")
        + f"\n[privacy.cell_units_by_category]\nmusic = {chosen:g}\n",
        encoding="utf-8",
    )
    params = PrivacyParams.from_policy(Policy.load(edited))
    from segments.ingest import public_domains

    keyed = params.with_domains(public_domains(workspace))
    assert keyed.cell_bounds("units") == {"music": int(chosen), "vinyl": int(top)}


def test_per_category_bounds_of_a_new_taxonomy_from_public_facts(
    workspace: Workspace, tmp_path: Path
) -> None:
    """The public-facts way: a policy table naming the new taxonomy's categories loads, and a
    category outside the workspace's taxonomy is refused (here: the built-in 'paper'), as is
    a private choice for it — before anything is charged."""
    from segments.ingest import public_domains
    from segments.privacy.specs import PrivacyParams

    _declare(workspace, ["music", "vinyl"])
    edited = tmp_path / "policy.toml"
    base = POLICY.read_text(encoding="utf-8")
    edited.write_text(base + "\n[privacy.cell_units_by_category]\nvinyl = 10\n", encoding="utf-8")
    params = PrivacyParams.from_policy(Policy.load(edited)).with_domains(public_domains(workspace))
    assert params.cell_bounds("units")["vinyl"] == 10
    edited.write_text(base + "\n[privacy.cell_units_by_category]\npaper = 10\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="'paper' is not a product category"):
        PrivacyParams.from_policy(Policy.load(edited)).with_domains(public_domains(workspace))
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    with pytest.raises(PolicyError, match="declared taxonomy.*nothing was charged"):
        _choose(workspace, ledger, ceilings={**CEILINGS, "cell_units_by_category.paper": 40})
    assert ledger.entries() == []


def _edited(ws: Workspace) -> bytes:
    """The prepared lines with one person's spend multiplied (an attacker's edit)."""
    import io

    path = ws.prepared_dir("statistics") / "lines.parquet"
    lines = pl.read_parquet(path)
    edited = lines.with_columns(
        pl.when(pl.col("person_id") == lines["person_id"][0])
        .then(pl.col("amount_sek") * 1000)
        .otherwise(pl.col("amount_sek"))
    )
    buffer = io.BytesIO()
    edited.write_parquet(buffer)
    return buffer.getvalue()


def test_edited_prepared_lines_refused_before_charging(
    workspace: Workspace, tmp_path: Path
) -> None:
    """rev13 finding 2: from Python, lines edited after prepare were read and released with
    the edited file's fingerprint. Now the bytes are checked against prepare's signed record
    first: refused, nothing charged, nothing written."""
    from segments.exceptions import ReleaseRefusedError

    (workspace.prepared_dir("statistics") / "lines.parquet").write_bytes(_edited(workspace))
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    with pytest.raises(ReleaseRefusedError, match=r"lines\.parquet is not the file.*prepare"):
        _choose(workspace, ledger)
    assert ledger.entries() == []
    assert not list((workspace.root / "releases").glob("policy-bounds-*"))


def test_frames_without_signed_record_refused_before_charging(
    workspace: Workspace, tmp_path: Path
) -> None:
    from segments.exceptions import ReleaseRefusedError
    from segments.provenance import PROVENANCE_FILE

    (workspace.prepared_dir("statistics") / PROVENANCE_FILE).unlink()
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    with pytest.raises(ReleaseRefusedError, match="no provenance.json"):
        _choose(workspace, ledger)
    assert ledger.entries() == []


def test_lines_swapped_after_the_check_are_not_read(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rev13 finding 2, the race: the old code hashed W/prepared/<p>/lines.parquet, then read
    it again, so a file swapped in between (/tmp/rev13/swap.py) was released under the good
    file's fingerprint. Here the attacker wins every race: the workspace's file is replaced
    by the edited one the moment anything parses Parquet. What the quantiles see must still
    be the bytes prepare signed, and the ledger's fingerprint their SHA-256."""
    path = workspace.prepared_dir("statistics") / "lines.parquet"
    good, signed = pl.read_parquet(path), sha256_file(path)
    bad = _edited(workspace)
    real_read = pl.read_parquet
    seen: list[pl.DataFrame] = []

    def racing_read(source: object, *args: object, **kwargs: object) -> pl.DataFrame:
        path.write_bytes(bad)  # the swap lands between the hash and the read
        frame = real_read(source, *args, **kwargs)  # type: ignore[arg-type]
        seen.append(frame)
        return frame

    monkeypatch.setattr(pl, "read_parquet", racing_read)
    policy = Policy.load(POLICY)
    ledger = Ledger.open(tmp_path / "l.sqlite", policy.controller, policy=policy, init=True)
    result = _choose(workspace, ledger)
    assert seen and all(frame.equals(good) for frame in seen)
    [entry] = ledger.entries()
    assert entry.release_id == result.release_id  # type: ignore[attr-defined]
    assert entry.request.population_fingerprint == signed
    assert entry.request.spec["source"]["sha256"]["lines"] == signed
