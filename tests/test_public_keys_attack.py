"""r13 #3: a release's key lists are public sets, checked where every release is planned
(plan_release), not only in the analyst's Session: a hand-built QueryDef listing every
person's pseudonym as its "public" keys used to go through plan_spec -> execute as ε-DP."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil

import polars as pl
import pytest

from segments.exceptions import ReleaseRefusedError
from segments.policy import Policy
from segments.privacy.jobs import plan_spec
from segments.privacy.releases import plan_release
from segments.privacy.specs import SPECS, PrivacyParams, QueryDef, ReleaseSpec
from segments.session import open_release_ledger
from segments.workspace import Workspace


@pytest.fixture
def prepared(small_raw: Workspace, tmp_path) -> Workspace:
    from segments.prepare import prepare

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(small_raw.raw, ws.raw)
    prepare(ws, "allkontor", "statistics", "2026-10-31")
    return ws


def _spec(query: QueryDef) -> ReleaseSpec:
    return ReleaseSpec(query.name, (query.name,), 0.05, definitions=(query,))


def test_attack_every_pseudonym_as_a_declared_key_list_is_refused_before_any_charge(
    prepared: Workspace,
) -> None:
    policy = Policy.load("allkontor")
    ids = pl.read_parquet(prepared.prepared_dir("statistics") / "customers.parquet")["person_id"]
    by_person = QueryDef(
        "by_person", "person", ("person_id",), ("count",), key_values=(("person_id", tuple(ids)),)
    )
    ledger = open_release_ledger(prepared, policy, purpose="statistics")
    before = ledger.entries()
    with (
        pytest.raises(ReleaseRefusedError) as refused,
        plan_spec(prepared, policy, _spec(by_person), purpose="statistics", as_of=dt.date.today()),
    ):
        pass  # pragma: no cover - the plan is refused before it exists
    message = str(refused.value)
    assert "group by 'person_id' refused: not a public key set" in message
    assert f"({policy.cite('anonymous_release')})" in message
    assert ids[0] not in message  # the refusal names no person
    # the key list alone (grouped by a public column) is refused too
    listed = dataclasses.replace(
        by_person, by=("county_code",), key_values=(("county_code", ("01",)),)
    )
    with (
        pytest.raises(ReleaseRefusedError, match="key_values for 'county_code' refused"),
        plan_spec(prepared, policy, _spec(listed), purpose="statistics", as_of=dt.date.today()),
    ):
        pass  # pragma: no cover
    assert ledger.entries() == before
    assert not prepared.releases.exists() or not any(prepared.releases.iterdir())


def test_plan_release_itself_refuses_person_level_keys_filters_and_foreign_month_lists(
    prepared: Workspace,
) -> None:
    """The check is plan_release's (every path: session, jobs, archive, audit): called directly
    with the frames' paths, nothing is read when a key set is not public."""
    params = PrivacyParams.from_policy(Policy.load("allkontor"), "statistics")
    frames = prepared.prepared_dir("statistics")
    paths = {"customers": frames / "customers.parquet", "lines": frames / "lines.parquet"}
    as_of = dt.date(2026, 11, 1)
    window = (dt.date(2026, 7, 1), dt.date(2026, 10, 1))
    count = QueryDef("q", "person", ("county_code",), ("count",))
    cases = {
        "group by 'person_id' refused": dataclasses.replace(count, by=("person_id",)),
        "filter on 'person_id' refused": dataclasses.replace(count, where=(("person_id", ("x",)),)),
        "filter county_code='99' is not in the public list": dataclasses.replace(
            count, where=(("county_code", ("99",)),)
        ),
        # months someone bought in, say: a list of the caller's, not the window's
        "key_values for 'month' must be the months of the release's window": QueryDef(
            "m", "cells", ("category", "month"), ("units",), key_values=(("month", ("2026-08",)),)
        ),
    }
    for expected, query in cases.items():
        with pytest.raises(ReleaseRefusedError, match=expected):
            plan_release(_spec(query), params, **paths, as_of=as_of, window=window)
    # the window's own months are the public list: planned (nothing is spent by a plan)
    months = QueryDef(
        "m",
        "cells",
        ("category", "month"),
        ("units",),
        key_values=(("month", ("2026-07", "2026-08", "2026-09")),),
    )
    with plan_release(_spec(months), params, **paths, as_of=as_of, window=window) as plan:
        assert plan.queries
    with plan_release(SPECS["scale_probe"], params, **paths, as_of=as_of) as plan:
        assert plan.queries
