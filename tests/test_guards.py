"""Release guards: destination, recipient, guarantee and purpose, each refusal citing only the
clauses of its own policy (its ``[clauses]`` table)."""

from __future__ import annotations

import re

import pytest
from ledger_helpers import demo_policy, request_for

from segments.exceptions import PolicyError, ReleaseRefusedError
from segments.policy import POLICY_NAMES, Policy
from segments.privacy.guards import (
    EU_EEA,
    Guarantee,
    Recipient,
    check_destination,
    check_release,
)
from segments.privacy.ledger import Ledger, ReleaseRequest

FACTS = demo_policy(
    recipients={
        "purchasing": Recipient("purchasing", "internal", "SE"),
        "processor": Recipient("processor", "external", "FI"),
        "adtech": Recipient("adtech", "third_party_marketing", "SE"),
        "us-office": Recipient("us-office", "internal", "US"),
    },
    allowed_destinations=frozenset({"SE", "FI"}),
    destination_clause_ids=("DM-2",),
    clauses={
        "anonymous_release": ("DM-1",),
        "purpose_refusal": ("DM-10",),
        "recipient_refusal": ("DM-4",),
    },
)


def release(policy: Policy = FACTS, **changes):
    """Guard an end-to-end DP release for ``statistics`` to ``purchasing`` in SE under
    ``policy``; ``changes`` replace any of these."""
    fields = {
        "purpose": "statistics",
        "recipient": "purchasing",
        "destination": "SE",
        "guarantee": Guarantee.END_TO_END,
        "kind": "dp",
    }
    return check_release(**{**fields, **changes}, policy=policy)


def test_an_allowed_release_passes_and_returns_the_recipient():
    assert release().kind == "internal"
    assert release(recipient="processor", destination="FI").kind == "external"
    assert release(guarantee=Guarantee.K_ANONYMOUS, kind="kanon").name == "purchasing"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"destination": "US"}, r"destination 'US' is outside the EU/EEA.*\(DM-2\)"),
        ({"destination": "NO"}, r"'NO' is not among the policy's allowed destinations FI, SE"),
        ({"recipient": "adtech"}, r"third party for sales or marketing.*\(DM-4\)"),
        ({"recipient": "nobody"}, r"recipient 'nobody' is not declared by policy 'demo'.*\(DM-4\)"),
        ({"recipient": "us-office"}, r"destination 'US' of recipient 'us-office' is outside"),
        (
            {"recipient": "processor", "guarantee": Guarantee.GIVEN_SEGMENTATION},
            r"recipient 'processor' is external.*\(DM-1\).*internal recipients only",
        ),
        ({"purpose": "marketing"}, r"purpose 'marketing' is not declared.*\(DM-10\)"),
        ({"guarantee": "probably private"}, r"guarantee 'probably private' is unknown"),
        ({"guarantee": Guarantee.K_ANONYMOUS}, r"kind 'dp' does not fit guarantee"),
    ],
)
def test_each_guard_refuses_with_its_clause(changes, match):
    with pytest.raises(ReleaseRefusedError, match=match):
        release(**changes)


def test_non_private_segmentation_may_go_to_internal_recipients():
    assert release(guarantee=Guarantee.GIVEN_SEGMENTATION).kind == "internal"


def test_eu_eea_has_the_30_states_and_lower_case_codes_work():
    assert len(EU_EEA) == 30 and {"SE", "NO", "IS", "LI"} <= EU_EEA and "GB" not in EU_EEA
    check_destination("se")
    with pytest.raises(ReleaseRefusedError, match="'CH' is outside the EU/EEA"):
        check_destination("ch")


def test_facts_from_the_real_policy():
    policy = Policy.load("alloffice")  # the guards read the Policy itself (no copy of it)
    assert policy.controller == "AllOffice Nordic AB"
    assert policy.recipients["adtech-partner"].kind == "third_party_marketing"
    assert policy.recipients["eu-logistics-processor"].country == "FI"
    assert "statistics" in policy.purposes
    assert policy.allowed_destinations <= EU_EEA
    with pytest.raises(ReleaseRefusedError, match=r"\(AO-10\)") as refused:
        release(policy, recipient="adtech-partner")
    assert "AC-4" not in str(refused.value)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_refusal_cites_only_its_own_policys_clauses(name):
    """Issue 13 item 9: Allkontor's and AllCall's refusals cited AllOffice's promises."""
    policy = Policy.load(name)
    marketer = next(r for r, v in policy.recipients.items() if v.kind == "third_party_marketing")
    external = next((r for r, v in policy.recipients.items() if v.kind == "external"), None)
    attempts = [
        {"recipient": marketer},
        {"recipient": "nobody"},
        {"purpose": "marketing"},
        {"destination": "US"},
        {"destination": "NO"} if "NO" not in policy.allowed_destinations else {"destination": "US"},
    ]
    if external is not None:
        attempts.append({"recipient": external, "guarantee": Guarantee.GIVEN_SEGMENTATION})
    for changes in attempts:
        with pytest.raises(ReleaseRefusedError) as refused:
            release(policy, **changes)
        cited = set(re.findall(r"\b([A-Z]{2})-\d+\b", str(refused.value)))
        assert cited <= {policy.clause_prefix}, (changes, str(refused.value))


def test_a_recipient_of_an_unknown_kind_is_refused():
    with pytest.raises(PolicyError, match="kind 'partner'; the kinds are"):
        Recipient("x", "partner", "SE")


def test_the_ledger_runs_the_guards_and_records_nothing_on_refusal(tmp_path):
    ledger = Ledger.open(tmp_path / "l.sqlite", "Demo AB", policy=FACTS, init=True)
    bound = ledger.head_hash()  # the one event so far: the policy the ledger is bound to
    request = request_for(
        FACTS,
        recipient="processor",
        destination="FI",
        guarantee=Guarantee.GIVEN_SEGMENTATION,
        epsilon=0.1,
    )
    with pytest.raises(ReleaseRefusedError, match="DM-1"):
        ledger.reserve(request)
    with pytest.raises(ReleaseRefusedError, match="DM-2"):
        ledger.reserve(
            ReleaseRequest(**{**request.to_dict(), "destination": "US", "recipient": "purchasing"})
        )
    assert ledger.entries() == [] and ledger.head_hash() == bound
    assert ledger.verify_chain().n_events == 1 and ledger.head_hash() == bound
