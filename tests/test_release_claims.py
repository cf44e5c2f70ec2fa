"""Issue 13, r13 findings 4, 5, 7 and 9: what a release card claims and which "once" a
month release keeps are decided by the release and its ledger entry, never by a caller of
:meth:`ReleasePlan.execute` (extra_card, clause_ids, once_key, a renamed spec) nor by an
empty folder handed to ``ledger --cards``.

Each test runs the reviewer's attack (/tmp/r13/py/a3_extra_card.py, a4_clause_params.py,
a11_month_twice.py, a12_archive_month.py, a10_misc.sh); on main before the fix each was
accepted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pytest
from prepared_frames import install_prepared
from privacy_params import edited_policy
from release_helpers import proven_ledger, release_context

from segments.exceptions import ReleaseRefusedError
from segments.policy import Policy
from segments.privacy._frames import write_prepared_frames
from segments.privacy.archive import (
    _read_archive_pl,
    archive_problems,
    rebuild_archive,
    release_month,
)
from segments.privacy.jobs import plan_spec
from segments.privacy.ledger import Ledger
from segments.privacy.specs import SPECS, PrivacyParams
from segments.workspace import Workspace

PURPOSE = "statistics"
DATA_AS_OF = dt.date(2026, 2, 10)
MONTH = dt.date(2025, 12, 1)
AS_OF = dt.date(2026, 1, 5)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load("alloffice")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("claims")
    return write_prepared_frames(
        folder, 300, 3_000, seed=np.random.default_rng(7), start=dt.date(2025, 9, 10), months=5
    )


@pytest.fixture()
def workspace(tmp_path, frames) -> Workspace:
    ws = Workspace(tmp_path / "ws").create()
    install_prepared(ws, frames, PURPOSE, DATA_AS_OF, report=True)
    return ws


def _execute(ws, policy, ledger, spec="scale_probe", month=None, **kw):
    with plan_spec(
        ws, policy, spec, purpose=PURPOSE, as_of=AS_OF, month=month, epsilon=0.05
    ) as plan:
        clause_ids = kw.pop("clause_ids", None)
        context = release_context(
            ledger,
            ws,
            policy,
            purpose=PURPOSE,
            recipient="purchasing",
            synthetic=True,
            clause_ids=clause_ids,
        )
        return plan.execute(context, **kw)


def test_attack_extra_card_cannot_overwrite_the_computed_claims(workspace, policy):
    """r13 #4: extra_card={"privacy_loss": ε 0.001, "guarantee": ..., "clause_ids": ...}
    replaced the card's own fields; now the notes sit under "extra" and the card states
    what the ledger charged."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    forged = {
        "privacy_loss": {"epsilon": 0.001, "delta": None, "rho": None},
        "guarantee": "end-to-end ε-DP (audited, k=1000)",
        "clause_ids": ["OF-1"],
    }
    result = _execute(workspace, policy, ledger, extra_card=forged)
    card = json.loads((result.path / "card.json").read_text(encoding="utf-8"))
    entry = next(e for e in ledger.entries() if e.release_id == result.release_id)
    assert card["extra"] == forged
    assert card["privacy_loss"]["epsilon"] == pytest.approx(entry.loss.epsilon)
    assert card["privacy_loss"]["epsilon"] == pytest.approx(0.05)
    assert card["guarantee"] == str(entry.request.guarantee)
    assert card["clause_ids"] == list(policy.release_clause_ids(PURPOSE))
    assert ledger.verify_cards([result.path / "card.json"], workspace.releases).ok


def test_attack_a_card_claiming_other_than_its_ledger_entry_fails_verification(workspace, policy):
    """r13 #4, second half: `ledger --cards` compares the card's loss, guarantee, clauses
    and spec with the ledger entry, not only ids and hashes (a card given as data, so the
    file hashes cannot catch it)."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    result = _execute(workspace, policy, ledger)
    card = json.loads((result.path / "card.json").read_text(encoding="utf-8"))
    assert ledger.verify_cards([card]).ok
    for key, value in (
        ("privacy_loss", {**card["privacy_loss"], "epsilon": 0.001}),
        ("guarantee", "end-to-end ε-DP (audited)"),
        ("clause_ids", ["OF-1", "OF-2"]),
        ("spec", {**card["spec"], "epsilon": 0.001}),
    ):
        verdict = ledger.verify_cards([{**card, key: value}])
        assert not verdict.ok
        assert any(key in p and "differ from what the ledger" in p for p in verdict.problems)


def test_attack_another_policys_clause_ids_are_refused_before_any_charge(workspace, policy):
    """r13 #5: execute(clause_ids=("OF-1",)) (Offix's clause on an AllOffice release, or via
    ReleaseSpec.clause_ids) went into the ledger and the card."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    head = ledger.head_hash()
    with pytest.raises(ReleaseRefusedError, match=r"\['OF-1'\] are not clauses of policy"):
        _execute(workspace, policy, ledger, clause_ids=("OF-1",))
    spec = dataclasses.replace(SPECS["scale_probe"], clause_ids=("AO-1", "AK-2"))
    with pytest.raises(ReleaseRefusedError, match=r"\['AK-2'\] are not clauses"):
        _execute(workspace, policy, ledger, spec=spec)
    assert ledger.head_hash() == head and not ledger.entries()
    # its own clauses (a subset) are fine, and the card cites all of its own
    result = _execute(workspace, policy, ledger, clause_ids=("AO-1",))
    assert result.card["clause_ids"] == list(policy.release_clause_ids(PURPOSE))


def test_attack_a_month_cannot_be_released_twice_by_naming_its_once_key(workspace, policy):
    """r13 #7: plan_spec(monthly_category, month) executed with no once_key, or as a
    renamed spec, was charged again for a month the archive had released."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    params = PrivacyParams.from_policy(policy, PURPOSE)
    first = release_month(
        release_context(
            ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing", synthetic=True
        ),
        MONTH,
        as_of=AS_OF,
        params=params,
    )
    charged = len(ledger.entries())
    renamed = dataclasses.replace(SPECS["monthly_category"], name="monthly_category_b")
    for spec in ("monthly_category", renamed):
        with pytest.raises(ReleaseRefusedError, match="2025-12"):
            _execute(workspace, policy, ledger, spec=spec, month=MONTH)
    with pytest.raises(TypeError, match="once_key"):
        _execute(workspace, policy, ledger, spec="monthly_category", month=MONTH, once_key=None)
    assert len(ledger.entries()) == charged
    # the card's month is the release's (from the window), whatever a caller adds
    assert first.card["month"] == MONTH.isoformat()


def test_rebuild_archive_takes_the_month_from_the_ledger_entry(workspace, policy):
    """r13 #7: a monthly card without (or with a forged) "month" broke `ledger --cards`
    and every later release with "Invalid isoformat string: 'None'"; the month is the
    ledger entry's window now, so a card's notes cannot move or break it."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    result = _execute(
        workspace,
        policy,
        ledger,
        spec="monthly_category",
        month=MONTH,
        extra_card={"month": None},
    )
    assert result.card["month"] == MONTH.isoformat()
    assert result.card["extra"] == {"month": None}
    restored = rebuild_archive(workspace.releases, ledger)
    assert restored == [
        f"{workspace.archive}: restored month 2025-12 ({result.release_id}) from its "
        "published table"
    ]
    assert set(_read_archive_pl(workspace)["month"].to_list()) == {MONTH}
    assert archive_problems(workspace.releases, ledger) == []


def test_attack_ledger_cards_on_an_empty_folder_is_not_verified(workspace, policy, tmp_path):
    """r13 #9: `segments ledger --cards EMPTY_DIR` said "0 release cards verified" (exit 0)
    while the ledger held releases."""
    ledger = proven_ledger(workspace, policy, evaluation=True)
    _execute(workspace, policy, ledger)
    empty = tmp_path / "empty"
    empty.mkdir()
    verdict = ledger.verify_cards([], empty)
    assert not verdict.ok
    assert any("no release card of ledger" in p for p in verdict.problems)
    cards = sorted(workspace.releases.glob("*/card.json"))
    assert ledger.verify_cards(cards, workspace.releases).ok


def test_attack_adopting_a_policy_that_drops_a_promises_checks_is_refused(tmp_path, policy):
    """r13 #6: `promises` was descriptive, so --adopt-policy took a copy whose AO-1 kept only
    the audit checks that pass (the audit went "2 fail" → "0 fail"). A promise's wording may
    change; its checks may only grow, and a promise may not be dropped."""
    ledger = Ledger.for_policy(policy, releases=tmp_path / "ws" / "releases")
    events = len(ledger.events())
    fewer = edited_policy(
        tmp_path, ('  "guarantee_recipient",\n  "kanon_recount",\n  "budget",\n', "")
    )
    with pytest.raises(ReleaseRefusedError, match="loosens rules") as refused:
        ledger.change_policy(fewer)
    ids = policy.clauses_for("anonymous_release")  # cited from the policy (r13b #5)
    assert ids and f"clause {', '.join(ids)})" in str(refused.value)
    for check in ("guarantee_recipient", "kanon_recount", "budget"):
        assert f"promises.AO-1.checks: {check!r} removed" in str(refused.value)
    assert len(ledger.events()) == events
    # rewording a promise and adding a check is adopted (a tightening)
    more = edited_policy(
        tmp_path,
        ("is not personal data.", "is not personal data (reworded)."),
        ('  "pii_scan",\n]', '  "pii_scan",\n  "purposes_declared",\n]'),
    )
    ledger.change_policy(more)
    assert len(ledger.events()) == events + 1


def test_budget_and_as_of_refusals_cite_the_policys_own_clause(tmp_path, policy):
    """r13 #8: the budget and as-of refusals of a controller's ledger cited no clause; now
    they cite the policy's anonymity clause (from the policy file, never a literal)."""
    from segments.exceptions import BudgetExceededError
    from segments.policy import Guarantee
    from segments.privacy.ledger import ReleaseRequest

    def ask(epsilon: float, as_of: dt.date) -> ReleaseRequest:
        return ReleaseRequest.for_policy(
            policy,
            population="customers",
            purpose=PURPOSE,
            recipient="purchasing",
            destination="SE",
            guarantee=Guarantee.END_TO_END,
            as_of=as_of,
            epsilon=epsilon,
        )

    ledger = Ledger.for_policy(policy, releases=tmp_path / "ws" / "releases")
    today = dt.date.today()
    clause = f"clause {', '.join(policy.clauses_for('anonymous_release'))})"
    ledger.reserve(ask(policy.privacy.budget_epsilon, today))
    with pytest.raises(BudgetExceededError, match="refused before anything ran") as budget:
        ledger.reserve(ask(0.5, today))
    with pytest.raises(ReleaseRefusedError, match="runs ahead of today") as ahead:
        ledger.reserve(ask(0.01, today + dt.timedelta(days=3)))
    with pytest.raises(ReleaseRefusedError, match="behind the population") as behind:
        ledger.reserve(ask(0.01, today - dt.timedelta(days=400)))
    for refused in (budget, ahead, behind):
        assert clause in str(refused.value)
    assert len(ledger.entries()) == 1


def test_attack_a_hand_built_release_context_cannot_cite_or_charge_under_another_policy(
    workspace, policy
):
    """Issue 15 point 7: a release carries one ReleaseContext, built by
    ReleaseContext.open and checked against the policy and the ledger. A context built by
    hand or copied with dataclasses.replace naming another policy's clauses, a subset of
    its own, or a policy other than the one the ledger is bound to is refused before
    anything is charged; a refused context never opens its ledger."""
    from segments.privacy.publishing import ReleaseContext

    ledger = proven_ledger(workspace, policy, evaluation=True)
    context = release_context(
        ledger, workspace, policy, purpose=PURPOSE, recipient="purchasing", synthetic=True
    )
    assert context.clause_ids == policy.release_clause_ids(PURPOSE)
    assert context.ledger is ledger
    _execute(workspace, policy, ledger)  # binds the ledger to the policy
    head, charged = ledger.head_hash(), len(ledger.entries())
    with pytest.raises(ReleaseRefusedError, match=r"\['OF-1'\] are not clauses of policy"):
        dataclasses.replace(context, clause_ids=("OF-1",))
    with pytest.raises(ReleaseRefusedError, match="not the clauses policy 'alloffice' states"):
        dataclasses.replace(context, clause_ids=("AO-1",))  # the card cites all of its own
    with pytest.raises(ReleaseRefusedError, match=r"\['OF-1'\] are not clauses of policy"):
        ReleaseContext(
            workspace=workspace,
            policy=policy,
            purpose=PURPOSE,
            recipient="purchasing",
            destination="SE",
            synthetic=True,
            clause_ids=("OF-1",),
            opener=lambda: ledger,
        )
    # a copied and edited policy (a larger budget) on the ledger bound to the real one
    richer = dataclasses.replace(
        policy, privacy=dataclasses.replace(policy.privacy, budget_epsilon=1000.0)
    )
    with pytest.raises(ReleaseRefusedError, match="ledger .* is bound to"):
        release_context(ledger, workspace, richer, purpose=PURPOSE, recipient="purchasing")
    swapped = dataclasses.replace(context, policy=richer)  # its facts check out; its ledger not
    with (
        pytest.raises(ReleaseRefusedError, match="ledger .* is bound to"),
        plan_spec(workspace, policy, "scale_probe", purpose=PURPOSE, as_of=AS_OF) as plan,
    ):
        plan.execute(swapped)
    # an undeclared recipient is refused before the ledger is opened (or created)
    opened: list[Ledger] = []
    with pytest.raises(ReleaseRefusedError, match="no-such-recipient"):
        release_context(
            lambda: opened.append(ledger) or ledger,  # type: ignore[func-returns-value]
            workspace,
            policy,
            purpose=PURPOSE,
            recipient="no-such-recipient",
        )
    assert opened == []
    assert ledger.head_hash() == head and len(ledger.entries()) == charged
