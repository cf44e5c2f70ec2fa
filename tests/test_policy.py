"""Tests of segments.policy: the five shipped policies and the validation guards."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest

from segments.exceptions import PolicyError, ReleaseRefusedError
from segments.policy import (
    EU_EEA,
    FEATURE_NAMES,
    POLICY_NAMES,
    Policy,
    PrivacyParameters,
    months_before,
)
from segments.privacy.guards import Guarantee, check_release

CLAUSES_MD = Path("/work/shared/POLICY_CLAUSES.md")
PRIVACY_FIELDS = {
    "min_k",
    "suppression_limit",
    "min_l",
    "dp_family",
    "delta",
    "budget_epsilon",
    "budget_period_months",
    "budget_window_months",
    "max_cells_per_person",
    "spend_bound_sek",
    "cell_spend_bound_sek",
    "cell_units_bound",
    "cell_spend_sek_by_category",
    "cell_units_by_category",
    "contribution_quantile",
    "contribution_bound_factor",
    "contribution_bound_share",
    "units_norm_bound",
    "sek_norm_bound",
    "max_relative_error",
    "survey_score_bounds",
    "feature_bounds",
    "private_segments_k",
    "private_segments_iterations",
    "private_segments_epsilon",
    "max_fully_generalised_columns",
}


def _all_clause_ids(policy: Policy) -> set[str]:
    ids = set(policy.destination_clause_ids) | set(policy.profiling_eligibility.clause_ids)
    for purpose in policy.purposes.values():
        ids |= set(purpose.clause_ids)
        for rule in purpose.retention:
            ids |= set(rule.clause_ids)
    for rule in policy.exclusions.values():
        ids |= set(rule.clause_ids)
    for rec in policy.recipients.values():
        ids |= set(rec.clause_ids)
    return ids


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_shipped_policy_loads_and_cites_only_its_own_clauses(name: str) -> None:
    policy = Policy.load(name)
    prefix = {
        "alloffice": "AO",
        "allkontor": "AK",
        "offix": "OF",
        "alocenter": "AL",
        "allcall": "AC",
    }
    ids = _all_clause_ids(policy)
    # AO-3 (person linkage) and AL-5 (minimisation) are cited by prepare itself, not the files.
    assert {i.split("-")[0] for i in ids} == {prefix[name]}
    if CLAUSES_MD.is_file():
        known = set(re.findall(r"\| ([A-Z]{2}-\d+) \|", CLAUSES_MD.read_text(encoding="utf-8")))
        assert ids <= known, ids - known


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_privacy_section_has_exactly_the_contract_fields(name: str) -> None:
    privacy = Policy.load(name).privacy
    # the file's keys, and the release's scope (filled from the purpose and the workspace)
    scope = {"retention_months", "categories", "geography_column", "geography_values"}
    assert scope == PrivacyParameters.SCOPE_FIELDS
    assert {f.name for f in dataclasses.fields(privacy)} == PRIVACY_FIELDS | scope
    assert set(privacy.feature_bounds) == set(FEATURE_NAMES)
    assert privacy.feature_bounds["recency_days"] == (0.0, 730.0)
    assert privacy.feature_bounds["monetary_sek"] == (0.0, 250000.0)
    assert privacy.feature_bounds["share_q4"] == (0.0, 1.0)
    assert privacy.survey_score_bounds == (0.0, 10.0)
    assert 5 <= privacy.min_k <= 10 and privacy.min_l >= 2
    assert privacy.budget_window_months >= Policy.load(name).longest_window_months


def test_families_include_pure_and_zcdp() -> None:
    families = {Policy.load(n).privacy.dp_family for n in POLICY_NAMES}
    assert families == {"pure", "zcdp"}
    assert Policy.load("allkontor").privacy.delta > 0
    assert Policy.load("alloffice").privacy.delta == 0


def test_controllers_and_org_numbers_as_stated_in_the_texts() -> None:
    assert Policy.load("alloffice").controller == "AllOffice Nordic AB"
    assert Policy.load("alloffice").org_number is None  # the text states none
    assert Policy.load("alocenter").org_number == "556610-7099"
    kontor = Policy.load("allkontor")
    assert kontor.org_number == "556268-6823"
    assert kontor.joint_controllers["Mora Kontorsteam AB"] == "556408-7558"


def test_retention_windows_match_the_clauses() -> None:
    ao = Policy.load("alloffice").purpose("segmentation")
    assert {(r.anchor, r.months, r.clause_ids) for r in ao.rules_for("transactions")} == {
        ("collection", 14, ("AO-4",)),
        ("collection", 24, ("AO-6",)),
    }
    ak = Policy.load("allkontor").purpose("statistics").rules_for("customer")
    assert [(r.anchor, r.months) for r in ak] == [("end_of_relationship", 24)]
    al = Policy.load("alocenter").purpose("statistics").rules_for("transactions")
    assert [(r.anchor, r.months) for r in al] == [("last_contact", 84)]


def test_profiling_eligibility_alocenter_is_newsletter_only() -> None:
    rule = Policy.load("alocenter").profiling_eligibility
    assert rule.newsletter_subscribers_only and "AL-3" in rule.clause_ids
    assert not Policy.load("alloffice").profiling_eligibility.newsletter_subscribers_only


def test_undeclared_purpose_is_refused_citing_the_policy() -> None:
    with pytest.raises(
        PolicyError, match=r"purpose 'surveys' is not declared by policy 'alloffice'"
    ):
        Policy.load("alloffice").purpose("surveys")
    with pytest.raises(PolicyError, match=r"'segmentation' is not declared by policy 'allcall'"):
        Policy.load("allcall").purpose("segmentation")


@pytest.mark.parametrize("name", ["alloffice", "allcall"])
def test_undeclared_purpose_or_recipient_cites_the_policys_own_refusal_clauses(name: str) -> None:
    """One refusal for both lookups: each cites its ``<kind>_refusal`` clauses of THIS policy
    (never another controller's), lists what is declared, and says the fix."""
    policy = Policy.load(name)
    for lookup, error, kind, declared in (
        (policy.purpose, PolicyError, "purpose_refusal", policy.purposes),
        (policy.recipient, ReleaseRefusedError, "recipient_refusal", policy.recipients),
    ):
        with pytest.raises(error) as refused:
            lookup("nobody")
        message = str(refused.value)
        assert f"({policy.cite(kind)})" in message  # its clause ids, or "a project rule"
        assert str(sorted(declared)) in message and "declare it in the policy file" in message
        one = sorted(declared)[0]
        assert lookup(one).name == one


def test_unknown_policy_name_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"unknown policy 'staples'.*alloffice"):
        Policy.load("staples")


def test_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"does not exist"):
        Policy.load(tmp_path / "nope.toml")


def test_policy_is_frozen() -> None:
    policy = Policy.load("offix")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.purposes["x"] = policy.purposes["statistics"]  # type: ignore[index]


def test_recipients_and_destinations() -> None:
    policy = Policy.load("allcall")
    kinds = {r.kind for r in policy.recipients.values()}
    assert kinds == {"internal", "external", "third_party_marketing"}
    assert {"purchasing", "analytics", "dpo-review"} <= set(policy.recipients)
    assert policy.allowed_destinations <= EU_EEA and "SE" in policy.allowed_destinations

    def check(recipient: str, destination: str | None = None):
        """The ledger's guards on a release of this policy (one owner: privacy.guards)."""
        return check_release(
            purpose="statistics",
            recipient=recipient,
            destination=destination or policy.recipient(recipient).country,
            guarantee=Guarantee.END_TO_END,
            kind="dp",
            policy=policy,
        )

    assert check("purchasing").country == "SE"
    with pytest.raises(ReleaseRefusedError, match=r"third party for sales or marketing.*AC-4"):
        check("google-ads")
    with pytest.raises(ReleaseRefusedError, match=r"destination 'US' is outside"):
        check("analytics", "US")
    with pytest.raises(ReleaseRefusedError, match=r"recipient 'nobody' is not declared"):
        check("nobody", "SE")


def test_months_before_clips_to_month_end() -> None:
    assert months_before(dt.date(2026, 6, 30), 14) == dt.date(2025, 4, 30)
    assert months_before(dt.date(2024, 3, 31), 1) == dt.date(2024, 2, 29)
    assert months_before(dt.date(2026, 6, 30), 0) == dt.date(2026, 6, 30)


# --- validation guards --------------------------------------------------------------------
def _shipped_text(name: str = "alloffice") -> str:
    return Policy.load(name).path.read_text(encoding="utf-8")


def _load_text(tmp_path: Path, text: str) -> Policy:
    path = tmp_path / "custom.toml"
    path.write_text(text, encoding="utf-8")
    return Policy.load(path)


def test_a_copy_of_a_shipped_policy_loads_from_a_path(tmp_path: Path) -> None:
    assert _load_text(tmp_path, _shipped_text()).name == "alloffice"


def test_unknown_key_names_file_key_and_fix(tmp_path: Path) -> None:
    text = _shipped_text().replace("min_k = 10", "min_k = 10\nmin_kk = 3")
    with pytest.raises(PolicyError, match=r"custom\.toml, key 'privacy\.min_kk': unknown key; fix"):
        _load_text(tmp_path, text)


def test_negative_period_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace("months = 14", "months = -14", 1)
    with pytest.raises(PolicyError, match=r"retention\[0\]\.months': negative value -14"):
        _load_text(tmp_path, text)


def test_purpose_without_retention_rule_is_refused(tmp_path: Path) -> None:
    text = _shipped_text("allcall")
    start = text.index("[[purposes.surveys.retention]]")
    end = text.index("[purposes.microdata]")
    with pytest.raises(
        PolicyError, match=r"key 'purposes\.surveys\.retention'.*missing key|without"
    ):
        _load_text(tmp_path, text[:start] + text[end:])


def test_rule_without_clause_id_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace('clause_ids = ["AO-6"]', "clause_ids = []", 1)
    with pytest.raises(PolicyError, match=r"a rule without a clause id; fix: cite the clause"):
        _load_text(tmp_path, text)


def test_missing_retention_for_one_data_kind_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace('data = "customer"', 'data = "transactions"', 1)
    with pytest.raises(PolicyError, match=r"no retention rule for data 'customer'"):
        _load_text(tmp_path, text)


def test_budget_window_shorter_than_retention_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace("budget_window_months = 24", "budget_window_months = 12")
    with pytest.raises(PolicyError, match=r"budget_window_months'.*shorter than the longest"):
        _load_text(tmp_path, text)


def test_destination_outside_eea_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace('allowed = ["AT",', 'allowed = ["US", "AT",')
    with pytest.raises(PolicyError, match=r"'US' is not an EU/EEA country code"):
        _load_text(tmp_path, text)


def test_pure_dp_with_delta_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace("delta = 0.0", "delta = 1e-6")
    with pytest.raises(PolicyError, match=r"pure DP has delta 0"):
        _load_text(tmp_path, text)


def test_missing_feature_bound_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace("monetary_sek = [0, 250000]\n", "")
    with pytest.raises(PolicyError, match=r"feature_bounds\.monetary_sek': missing key"):
        _load_text(tmp_path, text)


def test_share_bounds_default_to_the_unit_interval(tmp_path: Path) -> None:
    # a share lies in [0, 1] by definition (a public fact): another business's categories
    # (segments ingest) need not be listed, and may be
    text = _shipped_text().replace("share_q4 = [0, 1]\n", "share_music = [0, 1]\n")
    bounds = _load_text(tmp_path, text).privacy.feature_bounds
    assert bounds["share_q4"] == (0.0, 1.0) and bounds["share_music"] == (0.0, 1.0)


def test_category_cell_bound_must_divide_the_largest(tmp_path: Path) -> None:
    text = _shipped_text().replace("furniture = 20\n", "furniture = 30\n", 1)
    with pytest.raises(
        PolicyError, match=r"cell_units_by_category\.furniture': 30 does not divide .* 200"
    ):
        _load_text(tmp_path, text)


def test_category_cell_bound_names_a_known_category(tmp_path: Path) -> None:
    from segments.privacy.specs import PrivacyParams

    # a policy may name the categories of a new business's taxonomy (issue 16), so a typo
    # beside the built-in names is refused when the bounds are read for a release
    text = _shipped_text().replace("furniture = 20\n", "chairs = 20\n", 1)
    policy = _load_text(tmp_path, text)
    with pytest.raises(PolicyError, match=r"'chairs' is not a product category"):
        PrivacyParams.from_policy(policy)
    with pytest.raises(PolicyError, match=r"cell_units_by_category\.Chairs"):
        _load_text(tmp_path, text.replace("chairs = 20", "Chairs = 20"))


def test_category_cell_bounds_are_loaded(tmp_path: Path) -> None:
    privacy = Policy.load("alloffice").privacy
    assert privacy.cell_units_by_category["furniture"] == 20
    assert privacy.cell_spend_sek_by_category["paper"] == 50000
    assert "toner_ink" not in privacy.cell_spend_sek_by_category  # takes the largest bound


def test_unknown_column_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace('"customer_type", "industry"', '"email", "industry"', 1)
    with pytest.raises(PolicyError, match=r"unknown column 'email'"):
        _load_text(tmp_path, text)


def test_profiling_purpose_must_exclude_objectors(tmp_path: Path) -> None:
    text = _shipped_text()
    head, offers = text.split("[purposes.offers]", 1)
    offers = offers.replace("exclude_objectors = true", "exclude_objectors = false", 1)
    with pytest.raises(PolicyError, match=r"profiling purpose must exclude objectors"):
        _load_text(tmp_path, head + "[purposes.offers]" + offers)


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"not valid TOML"):
        _load_text(tmp_path, "name = ")


def test_wrong_type_is_refused(tmp_path: Path) -> None:
    text = _shipped_text().replace("min_k = 10", "min_k = true")
    with pytest.raises(PolicyError, match=r"'privacy\.min_k': expected a positive integer"):
        _load_text(tmp_path, text)


def test_every_shipped_policy_quotes_each_of_its_clauses() -> None:
    """The reviewer's report quotes each clause's promise: the Swedish original, verbatim from
    the policy text (each part between "[…]"), and an English gloss."""
    if not CLAUSES_MD.is_file():
        pytest.skip("the shared clause list is not on this machine")
    known = set(re.findall(r"\| ([A-Z]{2}-\d+) \|", CLAUSES_MD.read_text(encoding="utf-8")))
    for name in POLICY_NAMES:
        policy = Policy.load(name)
        prefix = next(iter(policy.promises)).split("-")[0]
        assert set(policy.promises) == {c for c in known if c.startswith(prefix + "-")}, name
        source = " ".join((CLAUSES_MD.parent / "seeds" / policy.source).read_text("utf-8").split())
        for promise in policy.promises.values():
            assert len(promise.en) > 20 and promise.en != promise.sv
            for part in promise.sv.split("[…]"):
                assert " ".join(part.split()) in source, (promise.clause_id, part)


def test_a_promise_without_its_english_gloss_is_refused(tmp_path: Path) -> None:
    text = Policy.load("offix").path.read_text(encoding="utf-8")
    bad = tmp_path / "offix.toml"
    bad.write_text(text.replace('en = "No personal data is transferred', 'english = "No'), "utf-8")
    with pytest.raises(PolicyError, match=r"promises\.OF-3"):
        Policy.load(bad)
