"""Tests of segments.prepare: retention, exclusions, eligibility, minimisation, person
linkage, pseudonyms, evidence and bad input."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawframes import (
    AS_OF,
    business,
    customer,
    raw_tables,
    read_json,
    rewrite_raw,
    sole_trader_pair,
    write_raw,
)

from segments.exceptions import PolicyError, ReleaseRefusedError, SchemaError, WorkspaceError
from segments.policy import POLICY_NAMES, Policy, Purpose, RetentionRule
from segments.prepare import PolicyReport, prepare
from segments.prepare.frames import _read_prepared_pl, link_persons
from segments.prepare.pseudonym import KEY_ENV_VAR, PseudonymKey, pseudonymise
from segments.schema import PREPARED_CUSTOMERS, PREPARED_LINES, RAW_TABLES, validate
from segments.workspace import Workspace

# hand-built raw tables are not the generator's output, so the public demo key of their
# manifest's seed is refused even when passed in: the tests pass a steward's key
KEY = PseudonymKey(b"the tests' own steward key, 32+ bytes", "steward key (test)")
DAY = dt.timedelta(days=1)
IDENTIFIERS = {c for t in RAW_TABLES.values() for c in t.direct_identifiers}


@pytest.fixture(autouse=True)
def _no_steward_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)


def pid(root: int) -> str:
    return pseudonymise(KEY, "person", [root])[0]


def run(
    tmp_path: Path,
    customers: list[dict[str, Any]],
    orders: list[Any],
    policy: str,
    purpose: str,
    **kw: Any,
) -> tuple[PolicyReport, pl.DataFrame, pl.DataFrame]:
    ws = write_raw(Workspace(tmp_path / "ws"), raw_tables(customers, orders))
    report = prepare(ws, policy, purpose, AS_OF, **{"key": KEY, **kw})
    out = _read_prepared_pl(ws, purpose)
    return report, out["customers"], out["lines"]


def _check_contract(customers: pl.DataFrame, lines: pl.DataFrame) -> None:
    validate(customers, PREPARED_CUSTOMERS.subset(customers.columns))
    validate(lines, PREPARED_LINES.subset(lines.columns))
    assert not IDENTIFIERS & (set(customers.columns) | set(lines.columns))
    assert customers.columns[0] == "person_id" and "profiling_eligible" in customers.columns


# --- basic contract -------------------------------------------------------------------------
def test_prepare_writes_the_contract_frames_and_report(tmp_path: Path) -> None:
    cs = [customer(1), business(2), *sole_trader_pair(3, 4, "198501011234")]
    orders = [(1, 1, AS_OF), (2, 2, AS_OF - 30 * DAY), (3, 3, AS_OF), (4, 4, AS_OF - DAY)]
    report, customers, lines = run(tmp_path, cs, orders, "alloffice", "segmentation")
    _check_contract(customers, lines)
    assert customers.height == 3 and lines.height == 4
    assert set(customers["person_id"]) == {pid(1), pid(2), pid(3)}
    assert lines["amount_sek"].to_list() == [25.0] * 4  # quantity 1 x 25 SEK
    assert report.key_provenance == "steward key (test)"
    on_disk = read_json(tmp_path / "ws" / "prepared" / "segmentation" / "policy_report.json")
    assert PolicyReport.from_dict(on_disk) == report
    assert KEY.secret.hex() not in str(on_disk)
    cited = set(report.by_clause()["clause_id"])
    assert {"AO-4", "AO-6", "AO-3"} <= cited
    assert {c.split("-")[0] for c in cited} == {"AO"}  # AllOffice's report cited AL-5
    cols = set(customers.columns)
    assert cols == {
        "person_id",
        *Policy.load("alloffice").purpose("segmentation").columns["customers"],
        "profiling_eligible",
    }


def test_sole_trader_accounts_are_one_person(tmp_path: Path) -> None:
    cs = sole_trader_pair(10, 20, "197002021234")
    orders = [(1, 10, AS_OF), (2, 20, AS_OF - DAY)]
    report, customers, lines = run(tmp_path, cs, orders, "alloffice", "segmentation")
    assert customers["person_id"].to_list() == [pid(10)]
    assert customers["customer_type"].to_list() == ["sole_trader"]
    assert customers["industry"].to_list() == ["G"]  # from the business account
    assert set(lines["person_id"]) == {pid(10)} and lines.height == 2
    assert report.rules[0].kind == "linkage" and report.rules[0].persons_flagged == 1


def test_an_erasure_on_one_account_removes_the_whole_person(tmp_path: Path) -> None:
    cs = sole_trader_pair(10, 20, "197002021234")
    cs[1]["erasure_requested"] = True
    _, customers, lines = run(
        tmp_path, [*cs, customer(30)], [(1, 10, AS_OF), (2, 30, AS_OF)], "alloffice", "statistics"
    )
    assert customers["person_id"].to_list() == [pid(30)]
    assert set(lines["person_id"]) == {pid(30)}


def test_link_persons_ignores_company_org_numbers() -> None:
    frame = pl.DataFrame(
        [customer(1, personnummer="195501011234"), business(2, org_number="5501011234")],
        schema=RAW_TABLES["customers"].polars_schema(),
    )
    assert link_persons(frame)["person_root"].to_list() == [1, 2]


# --- exclusions and eligibility ----------------------------------------------------------------
def test_erased_restricted_and_objectors(tmp_path: Path) -> None:
    cs = [
        customer(1),
        customer(2, erasure_requested=True),
        customer(3, restriction_requested=True),
        customer(4, profiling_objection=True),
    ]
    orders = [(i, i, AS_OF) for i in range(1, 5)]
    report, customers, _ = run(tmp_path, cs, orders, "alloffice", "segmentation")
    assert customers["person_id"].to_list() == [pid(1)]
    removed = {r.rule: r.persons_removed for r in report.rules}
    assert removed["erasure requested"] == 1 and removed["restriction of processing"] == 1
    assert removed["objection"] == 1
    # AL-4 statistics do not rest on profiling: objectors stay, erased/restricted never do.
    _, customers, _ = run(tmp_path / "b", cs, orders, "alocenter", "statistics")
    assert set(customers["person_id"]) == {pid(1), pid(4)}


def test_alocenter_profiles_only_newsletter_subscribers_never_objectors(tmp_path: Path) -> None:
    cs = [
        customer(1, newsletter_subscriber=True),
        customer(2, newsletter_subscriber=False),
        customer(3, newsletter_subscriber=True, profiling_objection=True),
    ]
    orders = [(i, i, AS_OF) for i in range(1, 4)]
    report, customers, _ = run(tmp_path, cs, orders, "alocenter", "offers")
    assert customers["person_id"].to_list() == [pid(1)]
    rule = next(r for r in report.rules if r.kind == "eligibility")
    assert "AL-3" in rule.clause_ids
    # In a non-profiling purpose the flag records eligibility on each side of the rule.
    _, customers, _ = run(tmp_path / "b", cs, orders, "alocenter", "statistics")
    flags = dict(zip(customers["person_id"], customers["profiling_eligible"], strict=True))
    assert flags == {pid(1): True, pid(2): False, pid(3): False}


def test_marketing_opt_out_is_a_flag_in_analytics_and_never_targeted(tmp_path: Path) -> None:
    cs = [customer(1), customer(2, marketing_opt_out=True)]
    orders = [(1, 1, AS_OF), (2, 2, AS_OF)]
    _, customers, _ = run(tmp_path, cs, orders, "alloffice", "segmentation")
    flags = dict(zip(customers["person_id"], customers["marketing_opt_out"], strict=True))
    assert flags == {pid(1): False, pid(2): True}
    _, customers, _ = run(tmp_path / "b", cs, orders, "alloffice", "offers")
    assert customers["person_id"].to_list() == [pid(1)]


def test_consent_withdrawal_stops_use_after_its_date(tmp_path: Path) -> None:
    withdrawn = AS_OF - 60 * DAY
    cs = [customer(1, consent_withdrawn_date=withdrawn)]
    orders = [(1, 1, withdrawn), (2, 1, withdrawn + DAY), (3, 1, AS_OF)]
    report, _, lines = run(tmp_path, cs, orders, "allkontor", "segmentation")
    assert lines["order_date"].to_list() == [withdrawn]  # AK-1: earlier data may still be used
    rule = next(r for r in report.rules if r.rule.startswith("consent withdrawn"))
    assert rule.clause_ids == ("AK-1",) and rule.rows_removed == 2
    _, _, lines = run(tmp_path / "b", cs, orders, "allkontor", "statistics")
    assert lines.height == 3  # AK-2 statistics rest on legitimate interest, not consent


def test_survey_opt_outs_leave_the_survey_frame(tmp_path: Path) -> None:
    cs = [customer(1), customer(2, survey_opt_out=True)]
    orders = [(1, 1, AS_OF), (2, 2, AS_OF)]
    _, customers, lines = run(tmp_path, cs, orders, "allcall", "surveys")
    assert customers["person_id"].to_list() == [pid(1)]
    assert lines.columns == ["person_id", "order_date"]


# --- retention at each cutoff, for every rule of every policy --------------------------------
def _rule_cases() -> list[Any]:
    cases = []
    for name in POLICY_NAMES:
        for purpose in Policy.load(name).purposes.values():
            for i, rule in enumerate(purpose.retention):
                if rule.months is not None and _binds(purpose, rule):
                    cases.append(
                        pytest.param(name, purpose.name, i, id=f"{name}-{purpose.name}-{i}")
                    )
    return cases


def _binds(purpose: Purpose, rule: RetentionRule) -> bool:
    """False for a transaction rule that a stricter collection rule of the purpose makes
    redundant (e.g. AO-6's 24 months under AO-4's 14): no row can sit on its cutoff."""
    strictest = _binding_collection_cutoff(purpose)
    cutoff = rule.cutoff(AS_OF)
    if rule.data == "customer" or strictest is None or cutoff is None:
        return True
    return cutoff == strictest if rule.anchor == "collection" else cutoff >= strictest


def _anchor_customer(cid: int, rule: RetentionRule, anchor: dt.date) -> dict[str, Any]:
    """A subscriber, never objecting, whose anchor date for ``rule`` is ``anchor``."""
    base = {
        "newsletter_subscriber": True,
        "signup_date": anchor - 400 * DAY,
        "last_contact_date": anchor,
    }
    if rule.anchor == "end_of_relationship":
        base["end_date"] = anchor
    if rule.anchor == "last_order":  # no orders: the record's last collection is the signup
        base["signup_date"] = anchor
    return customer(cid, **base)


def _binding_collection_cutoff(purpose: Purpose) -> dt.date | None:
    cutoffs = [
        r.cutoff(AS_OF)
        for r in purpose.rules_for("transactions")
        if r.anchor == "collection" and r.cutoff(AS_OF) is not None
    ]
    return max(cutoffs) if cutoffs else None  # type: ignore[type-var]


@pytest.mark.parametrize(("policy", "purpose_name", "index"), _rule_cases())
def test_one_day_inside_survives_one_day_outside_does_not(
    tmp_path: Path, policy: str, purpose_name: str, index: int
) -> None:
    purpose = Policy.load(policy).purpose(purpose_name)
    rule = purpose.retention[index]
    cutoff = rule.cutoff(AS_OF)
    assert cutoff is not None
    if rule.data == "transactions" and rule.anchor == "collection":
        cs = [customer(1, newsletter_subscriber=True, last_contact_date=AS_OF)]
        orders = [(1, 1, cutoff), (2, 1, cutoff - DAY), (3, 1, AS_OF)]
        _, _, lines = run(tmp_path, cs, orders, policy, purpose_name)
        assert cutoff in lines["order_date"].to_list()
        assert cutoff - DAY not in lines["order_date"].to_list()
        return
    # A person-anchored rule: one person on the cutoff, one the day before.
    inside, outside = _anchor_customer(1, rule, cutoff), _anchor_customer(2, rule, cutoff - DAY)
    if rule.data == "customer":
        _, customers, _ = run(tmp_path, [inside, outside], [], policy, purpose_name)
        assert customers["person_id"].to_list() == [pid(1)]
        return
    orders = [(1, 1, cutoff), (2, 2, cutoff - DAY)]
    _, _, lines = run(tmp_path, [inside, outside], orders, policy, purpose_name)
    assert set(lines["person_id"]) == {pid(1)}


# --- property-based: random customers, dates and flags ---------------------------------------
PURPOSES = [(n, p) for n in POLICY_NAMES for p in Policy.load(n).purposes]
_dates = st.dates(min_value=AS_OF - dt.timedelta(days=365 * 11), max_value=AS_OF)


@st.composite
def datasets(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[tuple[int, int, dt.date]]]:
    n = draw(st.integers(min_value=1, max_value=8))
    rows: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        signup = draw(_dates)
        flags = {
            k: draw(st.booleans())
            for k in (
                "newsletter_subscriber",
                "marketing_opt_out",
                "survey_opt_out",
                "profiling_objection",
                "erasure_requested",
                "restriction_requested",
            )
        }
        flags["erasure_requested"] &= draw(st.booleans())  # keep most customers
        end = draw(st.one_of(st.none(), st.dates(min_value=signup, max_value=AS_OF)))
        withdrawn = draw(st.one_of(st.none(), st.dates(min_value=signup, max_value=AS_OF)))
        common = {
            "signup_date": signup,
            "last_contact_date": draw(st.dates(signup, AS_OF)),
            "end_date": end,
            "consent_withdrawn_date": withdrawn,
            **flags,
        }
        if draw(st.integers(0, 3)) == 0:  # a sole trader: private account + business account
            rows += sole_trader_pair(2 * i, 2 * i + 1, f"19{60 + i:02d}0101{i:04d}", **common)
        else:
            rows.append(customer(2 * i, **common))
    ids = [r["customer_id"] for r in rows]
    orders = []
    for k in range(draw(st.integers(0, 20))):
        cid = draw(st.sampled_from(ids))
        signup = next(r["signup_date"] for r in rows if r["customer_id"] == cid)
        orders.append((k + 1, cid, draw(st.dates(signup, AS_OF))))
    return rows, orders


def _oracle(
    policy: Policy,
    purpose: Purpose,
    rows: list[dict[str, Any]],
    orders: list[tuple[int, int, dt.date]],
) -> tuple[set[int], set[int]]:
    """Plain-Python statement of the rules: the surviving person roots and order ids."""
    link = {}
    for r in rows:
        key = (
            r["personnummer"][2:]
            if r["customer_type"] == "private" or r["is_sole_trader"]
            else None
        )
        link[r["customer_id"]] = key or f"id{r['customer_id']}"
    root = {c: min(d for d, k in link.items() if k == link[c]) for c in link}
    people: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        people.setdefault(root[r["customer_id"]], []).append(r)
    elig = policy.profiling_eligibility
    kept, anchors = set(), {}
    for p, accts in people.items():

        def anyf(flag: str, accts: list[dict[str, Any]] = accts) -> bool:
            return any(a[flag] for a in accts)

        last_order = max([o[2] for o in orders if root[o[1]] == p], default=None)
        signup = min(a["signup_date"] for a in accts)
        ends = [a["end_date"] for a in accts]
        withdrawals = [a["consent_withdrawn_date"] for a in accts if a["consent_withdrawn_date"]]
        a = {
            "last_order": max(d for d in (last_order, signup) if d),
            "last_contact": max(
                d for d in (last_order, signup, *(x["last_contact_date"] for x in accts)) if d
            ),
            "end_of_relationship": dt.date.max if None in ends else max(ends),
            "withdrawn": min(withdrawals) if withdrawals else None,
        }
        eligible = (
            not anyf("profiling_objection")
            and (anyf("newsletter_subscriber") or not elig.newsletter_subscribers_only)
            and not (elig.exclude_consent_withdrawn and a["withdrawn"])
            and not (elig.exclude_marketing_opt_out and anyf("marketing_opt_out"))
        )
        out = (
            anyf("erasure_requested")
            or anyf("restriction_requested")
            or (purpose.exclude_objectors and anyf("profiling_objection"))
            or (purpose.exclude_survey_opt_outs and anyf("survey_opt_out"))
            or (purpose.profiling and not eligible)
            or any(
                r.cutoff(AS_OF) and a[r.anchor] < r.cutoff(AS_OF)  # type: ignore[operator]
                for r in purpose.rules_for("customer")
            )
        )
        if not out:
            kept.add(p)
            anchors[p] = a
    kept_orders = set()
    for oid, cid, day in orders:
        p = root[cid]
        if p not in kept:
            continue
        a = {**anchors[p], "collection": day}
        if any(
            r.cutoff(AS_OF) and a[r.anchor] < r.cutoff(AS_OF)  # type: ignore[operator]
            for r in purpose.rules_for("transactions")
        ):
            continue
        w = anchors[p]["withdrawn"]
        if purpose.stop_at_consent_withdrawal and w is not None and day > w:
            continue
        kept_orders.add(oid)
    return kept, kept_orders


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=datasets(), which=st.sampled_from(PURPOSES))
def test_property_prepare_matches_the_rules(
    tmp_path: Path, data: tuple[list[dict[str, Any]], list[Any]], which: tuple[str, str]
) -> None:
    rows, orders = data
    policy = Policy.load(which[0])
    purpose = policy.purpose(which[1])
    ws = write_raw(
        Workspace(tmp_path / f"ws-{which[0]}-{which[1]}-{len(rows)}-{len(orders)}"),
        raw_tables(rows, orders),
    )
    shutil.rmtree(ws.prepared, ignore_errors=True)
    prepare(ws, policy, purpose.name, AS_OF, key=KEY)
    out = _read_prepared_pl(ws, purpose.name)
    customers, lines = out["customers"], out["lines"]
    kept, kept_orders = _oracle(policy, purpose, rows, orders)
    # no excluded customer and no row outside its window survives; nothing allowed is lost
    assert set(customers["person_id"]) == {pid(p) for p in kept}
    if "order_id" in lines.columns:
        assert set(lines["order_id"]) == set(pseudonymise(KEY, "order", kept_orders))
    assert lines.height == len(kept_orders)  # one line per order in these datasets
    assert customers["person_id"].is_unique().all()
    # sole-trader pairs share one pseudonym: no person_id for the business account's own id
    business_ids = {r["customer_id"] for r in rows if r["is_sole_trader"]}
    assert not {pid(b) for b in business_ids} & set(customers["person_id"])
    # no direct identifier (column or value) survives
    _check_contract(customers, lines)
    cells = {str(v) for frame in (customers, lines) for col in frame.columns for v in frame[col]}
    secrets = {str(r[c]) for r in rows for c in IDENTIFIERS if r[c] is not None}
    assert not cells & secrets


# --- bad input writes nothing -----------------------------------------------------------------
def _good(tmp_path: Path) -> Workspace:
    return write_raw(
        Workspace(tmp_path / "ws"),
        raw_tables([customer(1), customer(2)], [(1, 1, AS_OF), (2, 2, AS_OF)]),
    )


def _break(ws: Workspace, table: str, change: Any) -> None:
    rewrite_raw(ws, table, change(pl.read_parquet(ws.raw_table(table))))


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        ("customers", lambda f: f.drop("postcode"), r"table 'customers', column 'postcode'"),
        ("orders", lambda f: f.with_columns(pl.col("order_id").cast(pl.Float64)), r"order_id"),
        (
            "orders",
            lambda f: f.with_columns(order_date=pl.lit(AS_OF + DAY)),
            r"column 'order_date'.*after as_of",
        ),
        (
            "customers",
            lambda f: f.with_columns(customer_id=pl.lit(1, pl.Int64)),
            r"column 'customer_id'.*unique key",
        ),
    ],
    ids=["missing-column", "wrong-dtype", "date-after-as-of", "duplicate-id"],
)
def test_bad_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, table: str, change: Any, message: str
) -> None:
    ws = _good(tmp_path)
    _break(ws, table, change)
    with pytest.raises((SchemaError, WorkspaceError), match=message):
        prepare(ws, "alloffice", "segmentation", AS_OF, key=KEY)
    assert not ws.prepared.exists() or not any(ws.prepared.iterdir())


def test_failure_keeps_the_previous_output_intact(tmp_path: Path) -> None:
    ws = _good(tmp_path)
    prepare(ws, "alloffice", "segmentation", AS_OF, key=KEY)
    before = sorted(p.name for p in ws.prepared_dir("segmentation").iterdir())
    _break(ws, "customers", lambda f: f.drop("email"))
    with pytest.raises((SchemaError, WorkspaceError), match=r"email"):
        prepare(ws, "alloffice", "segmentation", AS_OF, key=KEY)
    assert sorted(p.name for p in ws.prepared_dir("segmentation").iterdir()) == before
    assert [p.name for p in ws.prepared.iterdir()] == ["segmentation"]  # no temp folder left


def test_unknown_purpose_policy_and_short_key(tmp_path: Path) -> None:
    ws = _good(tmp_path)
    with pytest.raises(PolicyError, match=r"purpose 'advertising' is not declared by policy"):
        prepare(ws, "alloffice", "advertising", AS_OF)
    with pytest.raises(PolicyError, match=r"unknown policy 'nope'"):
        prepare(ws, "nope", "segmentation", AS_OF)
    with pytest.raises(PolicyError, match=r"too short"):
        prepare(ws, "alloffice", "segmentation", AS_OF, key=b"short")
    with pytest.raises(SchemaError, match=r"parameter 'as_of'"):
        prepare(ws, "alloffice", "segmentation", "30 June")
    assert not ws.prepared.exists()


def test_real_data_without_key_is_refused_and_steward_key_works(tmp_path: Path) -> None:
    ws = write_raw(
        Workspace(tmp_path / "ws"), raw_tables([customer(1)], [(1, 1, AS_OF)]), synthetic=False
    )
    with pytest.raises(PolicyError, match=r"not marked synthetic"):
        prepare(ws, "alloffice", "segmentation", AS_OF)
    report = prepare(ws, "alloffice", "segmentation", AS_OF, key=b"z" * 32)
    assert report.key_provenance == "steward key (passed by caller)"
    again = prepare(ws, "alloffice", "segmentation", AS_OF, key=b"z" * 32)
    assert again.key_id == report.key_id


# --- end to end on a generated dataset ----------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_on_generated_data(small_raw: Workspace, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(small_raw.raw, ws.raw)
    as_of = dt.date.fromisoformat(read_json(ws.manifest)["parameters"]["as_of"])
    report = prepare(ws, "alloffice", "segmentation", as_of)
    out = _read_prepared_pl(ws, "segmentation")
    _check_contract(out["customers"], out["lines"])
    cutoff = next(
        r.cutoff
        for r in report.rules
        if "AO-4" in r.clause_ids and r.cutoff and r.anchor == "collection"
    )
    assert out["lines"]["order_date"].min() >= cutoff
    raw = pl.read_parquet(ws.raw_table("customers"))
    assert out["customers"].height < raw.height
    assert report.output_counts["persons"] == out["customers"].height
    assert not set(raw["email"]) & set(out["customers"]["person_id"])


def test_prepared_lines_are_signed_month_partitions(small_raw: Workspace, tmp_path: Path) -> None:
    """Prepare writes the lines as ``lines.parquet/month=YYYY-MM/`` partitions, each holding
    only its month's lines; the signed record lists every partition file, so a partition
    slipped in (or one removed) is refused before a release reads it."""
    from segments.provenance import signed_record, verified_frames, verify_prepared

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(small_raw.raw, ws.raw)
    prepare(ws, "alloffice", "statistics", SMALL["as_of"])
    folder = ws.prepared_frame("statistics", "lines.parquet")
    parts = sorted(folder.glob("month=*/*.parquet"))
    assert len(parts) >= 12
    for part in parts:
        months = pl.read_parquet(part)["order_date"].dt.strftime("month=%Y-%m").unique()
        assert months.to_list() == [part.parent.name]
    outputs = signed_record(ws, "statistics")["outputs"]
    assert {p.relative_to(folder.parent).as_posix() for p in parts} <= set(outputs)
    assert verify_prepared(ws, "statistics") is None
    extra = parts[-1].with_name("part-00001.parquet")
    pl.read_parquet(parts[-1]).write_parquet(extra)  # an extra month's worth of lines
    assert "part-00001.parquet" in (verify_prepared(ws, "statistics") or "")
    with (
        pytest.raises(ReleaseRefusedError, match="partition is missing, added"),
        verified_frames(ws, "statistics", ["lines.parquet"]),
    ):
        pass
    extra.unlink()
    parts[0].unlink()
    assert verify_prepared(ws, "statistics") is not None
