"""Each audit check passes on a correct workspace and fails on one broken on purpose."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from audit_workspace import AS_OF, audit_workspace, copy_workspace
from prepared_frames import synthetic_proof

from segments import Ledger, Policy, ReleaseRequest, Workspace, prepare
from segments._tables import read_table
from segments.audit import checks
from segments.audit.checks import CHECKS, clause_checks
from segments.audit.context import NEEDS_KEY, AuditContext, Finding
from segments.exceptions import PolicyError
from segments.policy import POLICY_NAMES, months_before
from segments.prepare.frames import person_table
from segments.prepare.pseudonym import load_key, pseudonymise
from segments.privacy.synthetic import prove_synthetic

POLICY = Policy.load("alloffice")


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return audit_workspace("alloffice", tmp_path_factory.getbasetemp() / "audit")


@pytest.fixture
def broken(good: Workspace, tmp_path: Path) -> Workspace:
    return copy_workspace(good, tmp_path / "ws")


def context(ws: Workspace, *, key: bool = True, ledger: Ledger | None = None) -> AuditContext:
    return AuditContext(
        workspace=ws,
        policy=POLICY,
        as_of=AS_OF,
        ledger=ledger or Ledger.for_workspace(ws, POLICY.controller, create=False),
        key=load_key(workspace=ws, synthetic_proof=prove_synthetic) if key else None,
    )


def run(name: str, ws: Workspace, **kw: object) -> Finding:
    return CHECKS[name](context(ws, **kw))  # type: ignore[arg-type]


def rewrite(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    """Edit a frame in place; month partitions are replaced by one file of the edited table
    (the audit reads either layout)."""
    frame = change(read_table(path))
    if path.is_dir():
        shutil.rmtree(path)
    frame.write_parquet(path)


def raw_persons(ws: Workspace) -> pl.DataFrame:
    """The steward's view: raw persons with flags and their pseudonyms."""
    customers = pl.read_parquet(ws.raw_table("customers"))
    orders = pl.read_parquet(ws.raw_table("orders"), columns=["customer_id", "order_date"])
    persons = person_table(customers, orders)
    key = load_key(workspace=ws, synthetic_proof=prove_synthetic)
    return persons.with_columns(
        pl.Series("person_id", pseudonymise(key, "person", persons["person_root"].to_list()))
    )


def add_person(path: Path, person_id: str) -> None:
    """Append a copy of the first row with another person's pseudonym."""
    rewrite(
        path, lambda f: pl.concat([f, f.head(1).with_columns(pl.lit(person_id).alias("person_id"))])
    )


# --- the correct workspace ---------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in CHECKS if n != "access_organisational"])
def test_every_check_passes_on_the_correct_workspace(good: Workspace, name: str) -> None:
    finding = run(name, good)
    assert finding.status == "pass", finding.evidence


def test_steward_checks_say_they_need_the_key(good: Workspace) -> None:
    for name in (
        "retention_persons",
        "erased_restricted_absent",
        "objectors_absent",
        "consent_withdrawal",
        "key_not_stored",
    ):
        finding = run(name, good, key=False)
        assert finding.status == "not applicable"
        assert finding.role.startswith("data steward")
    assert run("key_not_stored", good, key=False).evidence["reason"] == NEEDS_KEY


def test_every_clause_of_every_policy_has_a_check() -> None:
    for name in POLICY_NAMES:
        policy = Policy.load(name)
        cited = {c for p in policy.purposes.values() for r in p.retention for c in r.clause_ids}
        ours = clause_checks(policy)
        assert cited <= set(ours), f"{name}: clause ids without a check: {cited - set(ours)}"
        assert all(set(names) <= set(CHECKS) for names in ours.values())
        listed = {n for names in ours.values() for n in names}
        assert set(checks.CORE_CHECKS) <= listed, f"{name}: {set(checks.CORE_CHECKS) - listed}"


def test_a_promise_naming_a_check_the_audit_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[1] / "src" / "segments" / "policies" / "offix.toml"
    text = shipped.read_text(encoding="utf-8")
    assert text.count('"destinations"]') == 1  # OF-3's list, the only one that ends with it
    forged = tmp_path / "offix.toml"
    forged.write_text(text.replace('"destinations"]', '"destinations", "trust_me"]'), "utf-8")
    with pytest.raises(PolicyError, match=r"promises\.OF-3\.checks: unknown check 'trust_me'"):
        clause_checks(Policy.load(forged))


# --- broken on purpose ---------------------------------------------------------------------------
def test_an_old_row_fails_retention(broken: Workspace) -> None:
    cutoff = months_before(AS_OF, 24)
    path = broken.prepared_dir("segmentation") / "lines.parquet"
    rewrite(
        path,
        lambda f: pl.concat(
            [f, f.head(1).with_columns(pl.lit(cutoff - dt.timedelta(days=1)).alias("order_date"))]
        ),
    )
    finding = run("retention_rows", broken)
    assert finding.status == "fail"
    assert "1 lines before" in str(finding.evidence["violations"])


def test_a_person_past_the_customer_rule_fails(broken: Workspace) -> None:
    persons = raw_persons(broken)
    cutoff = months_before(AS_OF, 14)
    stale = persons.filter(pl.col("last_contact") < cutoff)["person_id"][0]
    add_person(broken.prepared_dir("segmentation") / "customers.parquet", stale)
    assert run("retention_persons", broken).status == "fail"


def test_a_skipped_retention_rule_fails(broken: Workspace) -> None:
    path = broken.prepared_dir("statistics") / "policy_report.json"
    report = json.loads(path.read_text())
    report["rules"] = [r for r in report["rules"] if "24" not in str(r.get("months"))]
    path.write_text(json.dumps(report))
    assert run("retention_applied", broken).status == "fail"


def test_a_category_without_retention_rule_fails(broken: Workspace) -> None:
    # statistics' rules cover categories A and B; newsletter interactions are category D
    path = broken.prepared_dir("statistics") / "customers.parquet"
    rewrite(
        path,
        lambda f: f.with_columns(
            pl.lit(1.0, pl.Float32).alias("newsletter_interactions_per_month")
        ),
    )
    assert run("retention_categories", broken).status == "fail"
    assert run("minimised", broken).status == "fail"


@pytest.mark.parametrize(
    ("flag", "check", "where"),
    [
        ("erasure_requested", "erased_restricted_absent", "segments/labels.parquet"),
        ("restriction_requested", "erased_restricted_absent", "prepared/statistics/lines.parquet"),
        ("profiling_objection", "objectors_absent", "prepared/statistics/customers.parquet"),
        ("marketing_opt_out", "profiling_labels", "segments/labels.parquet"),
        ("marketing_opt_out", "targets_opt_out", "segments/targets/segment-0.parquet"),
    ],
)
def test_an_excluded_person_is_found(broken: Workspace, flag: str, check: str, where: str) -> None:
    person = raw_persons(broken).filter(pl.col(flag))["person_id"][0]
    add_person(broken.root / where, person)
    finding = run(check, broken)
    assert finding.status == "fail", finding.evidence
    assert finding.role.startswith("data steward")


def test_a_line_after_consent_withdrawal_fails(broken: Workspace) -> None:
    persons = raw_persons(broken).filter(pl.col("consent_withdrawn_date").is_not_null())
    row = persons.row(0, named=True)
    path = broken.prepared_dir("statistics") / "lines.parquet"
    rewrite(
        path,
        lambda f: pl.concat(
            [
                f,
                f.head(1).with_columns(
                    pl.lit(row["person_id"]).alias("person_id"),
                    pl.lit(row["consent_withdrawn_date"] + dt.timedelta(days=1)).alias(
                        "order_date"
                    ),
                ),
            ]
        ),
    )
    assert run("consent_withdrawal", broken).status == "fail"


def test_an_identifier_column_in_a_release_fails(broken: Workspace) -> None:
    (release,) = broken.releases.glob("kanon-*/table.parquet")
    rewrite(release, lambda f: f.with_columns(pl.lit("x").alias("email")))
    finding = run("no_direct_identifiers", broken)
    assert finding.status == "fail"
    assert "email" in str(finding.evidence["found"])


def test_a_personnummer_value_fails(broken: Workspace) -> None:
    (release,) = broken.releases.glob("kanon-*/table.parquet")
    rewrite(release, lambda f: f.with_columns(pl.lit("19811218-9876").alias("note")))
    assert run("no_personnummer", broken).status == "fail"


@pytest.mark.parametrize(
    ("where", "mode"),
    [
        ("raw/customers.parquet", 0o644),
        ("prepared/segmentation", 0o755),
        ("segments/labels.parquet", 0o640),
        ("ledger", 0o604),
    ],
)
def test_personal_data_open_to_others_fails_the_access_check(
    broken: Workspace, where: str, mode: int
) -> None:
    """AO-9 is verified on the files: one world- or group-readable file or folder of raw
    data, frames, labels or the ledger fails it."""
    ctx = context(broken)
    path = ctx.ledger.path if where == "ledger" else broken.root / where
    path.chmod(mode)
    finding = CHECKS["access_owner_only"](ctx)
    assert finding.status == "fail"
    assert any(path.name in item for item in finding.evidence["open to group or others"])


def test_access_beyond_the_files_is_stated_not_passed(good: Workspace) -> None:
    finding = run("access_organisational", good)
    assert finding.status == "not applicable"
    assert finding.method.startswith("not verifiable by this tool — organisational measure")
    assert "dpo-review" in finding.evidence["recipients the policy declares"]
    # AO-9 rests on checks of access, not on pseudonymisation checks that test none
    assert clause_checks(Policy.load("alloffice"))["AO-9"] == (
        "access_owner_only",
        "key_not_stored",
        "guarantee_recipient",
        "access_organisational",
    )


def test_a_raw_id_instead_of_a_pseudonym_fails(broken: Workspace) -> None:
    add_person(broken.segments / "labels.parquet", "12345")
    assert run("pseudonymised", broken).status == "fail"


@pytest.mark.parametrize("form", ["hex", "base64", "raw"])
def test_the_key_written_into_the_workspace_fails(broken: Workspace, form: str) -> None:
    secret = load_key(workspace=broken, synthetic_proof=prove_synthetic).secret
    data = {"hex": secret.hex().encode(), "base64": base64.b64encode(secret), "raw": secret}
    (broken.raw / "steward.key").write_bytes(b"key=" + data[form] + b"\n")
    finding = run("key_not_stored", broken)
    assert finding.status == "fail"
    assert f"raw/steward.key ({form})" in str(finding.evidence["found"])


def test_an_unknown_column_fails_the_schema_check(broken: Workspace) -> None:
    path = broken.prepared_dir("offers") / "lines.parquet"
    rewrite(path, lambda f: f.with_columns(pl.lit("x").alias("ip_address")))
    assert run("schema_categories", broken).status == "fail"


def test_a_survey_with_an_identifier_fails(broken: Workspace) -> None:
    rewrite(broken.raw_table("surveys"), lambda f: f.with_columns(pl.lit(1).alias("customer_id")))
    # edited raw is no longer the generator's: the public demo key is refused (the audit then
    # runs without a key); this check reads no pseudonyms, so it needs none
    with pytest.raises(PolicyError, match="not proven synthetic"):
        load_key(workspace=broken, synthetic_proof=prove_synthetic)
    assert run("survey_anonymous", broken, key=False).status == "fail"


def test_a_tampered_release_file_fails(broken: Workspace) -> None:
    (release,) = broken.releases.glob("segment_overview-*/spend_by_segment.parquet")
    rewrite(release, lambda f: f.with_columns(pl.col(f.columns[1]).reverse()))
    finding = run("release_checksums", broken)
    assert finding.status == "fail"
    assert "spend_by_segment.parquet: ledger" in str(finding.evidence["mismatches"])


def test_a_card_with_a_wrong_head_hash_fails(broken: Workspace) -> None:
    (card,) = broken.releases.glob("kanon-*/certificate.json")
    data = json.loads(card.read_text())
    data["ledger_head_hash"] = "0" * 64
    card.write_text(json.dumps(data))
    finding = run("ledger_chain", broken)
    assert finding.status == "fail"
    assert "not in the chain" in str(finding.evidence["problems"])


def test_overspending_on_any_rolling_period_fails(broken: Workspace) -> None:
    ledger = Ledger.for_workspace(
        broken, POLICY.controller, evaluation=True, synthetic=synthetic_proof(broken), policy=POLICY
    )
    for day in ("2026-01-31", "2026-06-30"):
        request = ReleaseRequest.for_policy(
            POLICY,
            population="customers",
            purpose="statistics",
            recipient="purchasing",
            destination="SE",
            guarantee="end-to-end ε-DP",
            as_of=day,
            epsilon=2.5,
            mechanism="laplace",
            synthetic=True,
        )
        ledger.reserve(request)  # a reserved charge is spent
    finding = run("budget", broken, ledger=ledger)
    assert finding.status == "fail"
    assert finding.evidence["periods over budget"] == 1


@pytest.mark.parametrize(
    ("field", "value", "check"),
    [
        ("destination", "US", "destinations"),
        ("guarantee", "DP given a non-private segmentation", "guarantee_recipient"),
        ("purpose", "resale", "purposes_declared"),
    ],
)
def test_a_card_that_breaks_a_rule_fails(
    broken: Workspace, field: str, value: str, check: str
) -> None:
    (card,) = broken.releases.glob("segment_overview-*/card.json")
    data = json.loads(card.read_text())
    data[field] = value
    card.write_text(json.dumps(data))
    assert run(check, broken).status == "fail"


def test_a_forecast_from_prepared_data_fails(broken: Workspace) -> None:
    path = broken.forecasts / "forecast_card.json"
    card = json.loads(path.read_text())
    card["source"] = "prepared/statistics/lines.parquet"
    path.write_text(json.dumps(card))
    assert run("forecasts_from_archive", broken).status == "fail"


def test_a_class_below_k_fails_the_recount(broken: Workspace) -> None:
    (cert,) = broken.releases.glob("kanon-*/certificate.json")
    qis = json.loads(cert.read_text())["quasi_identifiers"]
    table = cert.parent / "table.parquet"

    def shrink(f: pl.DataFrame) -> pl.DataFrame:
        first = f.head(1).select(qis)
        return pl.concat([f.join(first, on=qis, how="anti"), f.join(first, on=qis).head(2)])

    rewrite(table, shrink)
    finding = run("kanon_recount", broken)
    assert finding.status == "fail"
    assert "k = 2" in str(finding.evidence["below claim"])


def test_an_email_in_a_release_fails_the_pii_scan(broken: Workspace) -> None:
    email = pl.read_parquet(broken.raw_table("customers"))["email"][0]
    (folder,) = broken.releases.glob("kanon-*")
    (folder / "notes.txt").write_text(f"contact {email}\n")
    finding = run("pii_scan", broken)
    assert finding.status == "fail"
    assert email not in json.dumps(finding.evidence, ensure_ascii=False)  # redacted


def test_a_notebook_output_with_a_name_fails_the_pii_scan(good: Workspace, tmp_path: Path) -> None:
    first, last = (
        pl.read_parquet(good.raw_table("customers")).select("first_name", "last_name").row(0)
    )
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": "x",
                "outputs": [
                    {
                        "output_type": "stream",
                        "name": "stdout",
                        "text": f"top buyer: {first} {last}\n",
                    }
                ],
            }
        ]
    }
    path = tmp_path / "leak.ipynb"
    path.write_text(json.dumps(nb))
    ctx = context(good)
    ctx.notebooks = (path,)
    assert checks.check_pii_scan(ctx).status == "fail"


def test_release_ids_and_numeric_cells_are_not_phone_numbers() -> None:
    from segments.audit.pii import scan_text

    # a release id ending in digits, and two numeric cells of a table dump side by side
    assert scan_text('"release_id": "segment_overview-20261031-07734230"', "card.json") == []
    assert scan_text("0\t1234567.5\n", "table.parquet") == []
    assert [h.kind for h in scan_text("ring 070-123 45 67", "x")] == ["phone number"]


def test_attack_a_card_edited_to_a_smaller_epsilon_fails(broken: Workspace) -> None:
    """Issue 13 item 8: a card edited to a smaller ε (and its spec with it) passed the audit,
    which re-planned from the card; the card now must state what the ledger recorded, and the
    person audit re-plans the ledger's specification."""
    from segments.audit.run import _as_recorded

    (card_path,) = broken.releases.glob("segment_overview-*/card.json")
    card = json.loads(card_path.read_text())
    recorded_epsilon = card["spec"]["epsilon"]
    card["privacy_loss"]["epsilon"] /= 10
    card["spec"]["epsilon"] /= 10
    card_path.write_text(json.dumps(card))
    finding = run("release_checksums", broken)
    assert finding.status == "fail"
    assert "the card states epsilon" in str(finding.evidence["mismatches"])
    cards = dict((str(p), c) for p, c in _as_recorded(context(broken)))
    assert cards[str(card_path)]["spec"]["epsilon"] == recorded_epsilon


@pytest.mark.parametrize("shift_days", [-100, 400])
def test_attack_an_edited_report_as_of_fails_retention_and_does_not_date_the_audit(
    broken: Workspace, shift_days: int
) -> None:
    """Issue 13 (time from the record): the audit took its dates from policy_report.json, an
    editable file. Moved back 100 days, retention_applied still passed (a date before the
    audit's is fine); moved ahead, the audit's default as-of (the retention cutoffs) moved
    with it. Now both read prepare's signed record, and a report that disagrees fails."""
    from segments.audit.run import _default_as_of

    assert run("retention_applied", broken).status == "pass"
    genuine = _default_as_of(broken)
    path = broken.prepared_dir("statistics") / "policy_report.json"
    report = json.loads(path.read_text())
    signed = report["as_of"][:10]
    edited = (dt.date.fromisoformat(signed) + dt.timedelta(days=shift_days)).isoformat()
    path.write_text(json.dumps({**report, "as_of": edited}))
    finding = run("retention_applied", broken)
    assert finding.status == "fail"
    assert (
        f"statistics: policy_report.json states as_of {edited}, prepare's signed record {signed}"
        in finding.evidence["problems"]
    )
    assert _default_as_of(broken) == genuine


def test_key_matches_fails_under_another_key_and_names_the_frames(good: Workspace) -> None:
    """A steward's key other than the one the frames were pseudonymised with would make every
    re-pseudonymised look-up find nobody (a vacuous pass): the key check fails and names the
    purposes, and is not applicable without a key (never a pass)."""
    from segments.prepare.pseudonym import PseudonymKey

    ctx = context(good)
    assert checks.check_key_matches(ctx).status == "pass"
    other = AuditContext(
        workspace=good, policy=POLICY, as_of=AS_OF, key=PseudonymKey(b"x" * 32, "another key")
    )
    finding = checks.check_key_matches(other)
    assert finding.name == "key_matches"
    assert finding.status == "fail"
    assert finding.evidence["other key"] == sorted(ctx.prepared_purposes())
    assert checks.check_key_matches(context(good, key=False)).status == "not applicable"
    assert "key_matches" not in CHECKS  # reported apart from the clauses' checklist


def test_key_matches_reads_the_signed_record_not_the_editable_report(broken: Workspace) -> None:
    """r15 MEDIUM 3: writing the wrong key's id into ``policy_report.json`` does not make the
    wrong key pass (the steward's look-ups would then pass vacuously): the key id comes from
    prepare's signed record, and a report that disagrees with it, or a folder with no signed
    record, fails the check."""
    from segments.prepare.pseudonym import PseudonymKey

    wrong = PseudonymKey(b"w" * 32, "another key")
    ctx = AuditContext(workspace=broken, policy=POLICY, as_of=AS_OF, key=wrong)
    purposes = ctx.prepared_purposes()
    for purpose in purposes:
        report = broken.policy_report(purpose)
        data = json.loads(report.read_text(encoding="utf-8"))
        report.write_text(json.dumps({**data, "key_id": wrong.key_id}), encoding="utf-8")
    finding = checks.check_key_matches(ctx)
    assert finding.status == "fail"
    # the report is among the files the record hashes: an edited one unbinds the record, so
    # no key id is read from it at all (neither the report's nor the record's)
    assert finding.evidence["frames"] == 0
    assert len(finding.evidence["problems"]) == len(purposes)
    assert all(
        "policy_report.json is not the file `segments prepare` wrote" in p
        for p in finding.evidence["problems"]
    )
    # the right key with the edited reports still fails: the reports disagree with the records
    assert checks.check_key_matches(context(broken)).status == "fail"
    # a folder whose signed record is gone cannot show which key made it
    for purpose in purposes:
        (broken.prepared_dir(purpose) / "provenance.json").unlink()
    unsigned = checks.check_key_matches(context(broken))
    assert unsigned.status == "fail"
    assert unsigned.evidence["frames"] == 0
    assert all("provenance.json" in p for p in unsigned.evidence["problems"])


def test_key_matches_refuses_a_signed_record_copied_from_another_workspace(
    broken: Workspace, tmp_path: Path
) -> None:
    """r15 MEDIUM 3, second part: the same user's signed record of ANOTHER workspace (same raw
    data, same purpose, prepared under the auditor's key), copied beside frames made under
    another key, with the report edited to match, is validly signed for the purpose, but
    names files that are not these frames: key_matches fails and says why, so the steward's
    look-ups under that key cannot pass vacuously."""
    from segments.prepare.pseudonym import PseudonymKey

    auditor = PseudonymKey(b"y" * 32, "steward key (auditor)")
    purpose = "statistics"
    for other in set(context(broken).prepared_purposes()) - {purpose}:
        shutil.rmtree(broken.prepared_dir(other))  # one folder, as in the reproduction
    elsewhere = Workspace(tmp_path / "elsewhere")
    shutil.copytree(broken.raw, elsewhere.raw)
    prepare(elsewhere, POLICY, purpose, AS_OF, key=auditor)
    shutil.copy(
        elsewhere.prepared_dir(purpose) / "provenance.json",
        broken.prepared_dir(purpose) / "provenance.json",
    )
    report = broken.policy_report(purpose)
    data = json.loads(report.read_text(encoding="utf-8"))
    report.write_text(json.dumps({**data, "key_id": auditor.key_id}), encoding="utf-8")

    ctx = AuditContext(workspace=broken, policy=POLICY, as_of=AS_OF, key=auditor)
    finding = checks.check_key_matches(ctx)
    assert finding.status == "fail", finding.evidence
    assert finding.evidence["frames"] == 0
    (problem,) = finding.evidence["problems"]
    assert problem.startswith(f"{purpose}: ")
    assert "is not the file `segments prepare` wrote (SHA-256 differs)" in problem
    assert "not bound to these frames" in problem
    # the genuine record, put back, binds the frames again: the frames' own key passes
    shutil.rmtree(broken.prepared_dir(purpose))
    shutil.copytree(elsewhere.prepared_dir(purpose), broken.prepared_dir(purpose))
    own = checks.check_key_matches(context(broken))
    assert own.status == "fail"  # the frames on disk are now elsewhere's, under the auditor's key
    assert checks.check_key_matches(ctx).status == "pass"


def test_attack_a_missing_ledger_fails_the_release_checks_when_cards_remain(
    broken: Workspace,
) -> None:
    """r11a F5: with the ledger deleted or moved, every ledger-backed check was "not
    applicable" and AO-1 read "verified" while release cards sat in W/releases. Cards without
    their ledger fail those checks, naming the missing ledger and the fix; a workspace with no
    release at all stays not applicable."""
    from segments.audit.checks import CHECKS

    ctx = context(broken)
    ctx.ledger = None
    assert ctx.cards()
    for name in ("release_checksums", "ledger_chain", "budget", "guarantee_recipient"):
        outcome = CHECKS[name](ctx)
        assert outcome.status == "fail", name
        assert "deleted or moved ledger" in str(outcome.evidence) and "--ledger" in str(
            outcome.evidence
        )
    shutil.rmtree(broken.releases)
    empty = context(broken)
    empty.ledger = None
    assert CHECKS["ledger_chain"](empty).status == "not applicable"


def test_attack_a_deleted_ledger_with_its_releases_still_fails_on_its_anchor(
    broken: Workspace,
) -> None:
    """r11a F5 residual: the ledger deleted AND W/releases removed left nothing the checks
    read, so AO-1 read "verified". The ledger's anchor (and the registry of controller
    ledgers) still record it: the ledger checks fail, naming the file and what recorded it."""
    from segments.audit.checks import CHECKS
    from segments.privacy.ledger import missing_ledgers

    ledger = Ledger.for_workspace(broken, POLICY.controller, create=False)
    assert missing_ledgers(POLICY.controller, broken) == []  # all there: nothing missing
    path = ledger.path
    shutil.rmtree(broken.releases)
    path.unlink()
    (missing,) = missing_ledgers(POLICY.controller, broken)
    assert str(path) in missing and "anchor" in missing
    ctx = context(broken, ledger=ledger)
    ctx.ledger = None
    # release_checksums has no release file left to check; the ledger's own checks fail
    for name in ("ledger_chain", "budget", "destinations", "guarantee_recipient"):
        outcome = CHECKS[name](ctx)
        assert outcome.status == "fail", name
        assert "deleted or moved ledger" in str(outcome.evidence), name
