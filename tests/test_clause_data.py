"""Clause ids are data of the policy file (issue 13 item 9, issue 15 item 2).

Every card, refusal and report cites only clauses of its own policy: Allkontor's and
AllCall's cards used to cite AllOffice's promises because clause ids were written in code.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
from prepared_frames import install_prepared, verified_plan
from release_helpers import proven_ledger, release_context

import segments
from segments.exceptions import PolicyError
from segments.policy import CLAUSE_KINDS, POLICY_NAMES, Policy
from segments.privacy._frames import write_prepared_frames
from segments.privacy.specs import SPECS, PrivacyParams, SegmentSource
from segments.workspace import Workspace

CLAUSE = re.compile(r"\b([A-Z]{2})-\d+\b")
SRC = Path(segments.__file__).parent
#: Modules that turn policies into cards, refusals and certificates: none may name a clause.
CONVERTED = (
    "policy.py",
    "privacy",
    "anonymity",
    "cli/kanon.py",
    "audit/run.py",
    "audit/dp_audit.py",
    "audit/mechanisms.py",
)


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """Non-docstring string constants of a module (what reaches a message or a card)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_clause_id_literal_in_the_release_and_refusal_code():
    files = [
        f
        for part in CONVERTED
        for f in ((SRC / part).rglob("*.py") if (SRC / part).is_dir() else [SRC / part])
    ]
    assert len(files) > 10
    found = [
        f"{f.relative_to(SRC)}:{line}: {text[:60]!r}"
        for f in files
        for line, text in _string_literals(f)
        if CLAUSE.search(text)
    ]
    assert found == []


def test_the_scan_finds_a_clause_literal(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Docstrings may cite AO-1."""\nX = ("AO-1",)\n', encoding="utf-8")
    assert [t for _, t in _string_literals(module) if CLAUSE.search(t)] == ["AO-1"]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_each_policy_declares_every_kind_with_only_its_own_clauses(name):
    policy = Policy.load(name)
    assert set(policy.clauses) == set(CLAUSE_KINDS)
    assert policy.clauses_for("anonymous_release")
    for purpose in policy.purposes:
        cited = {CLAUSE.match(c).group(1) for c in policy.release_clause_ids(purpose)}
        assert cited == {policy.clause_prefix}


def test_a_policy_citing_another_controllers_clause_is_refused(tmp_path):
    text = Policy.load("allkontor").path.read_text(encoding="utf-8")
    bad = tmp_path / "allkontor.toml"
    bad.write_text(text.replace('anonymous_release = ["AK-3"]', 'anonymous_release = ["AO-1"]'))
    with pytest.raises(PolicyError, match=r"clauses.anonymous_release.*more than one controller"):
        Policy.load(bad)
    missing = tmp_path / "missing.toml"
    missing.write_text(re.sub(r"(?s)\[clauses\].*?(?=\n\[privacy\])", "", text), encoding="utf-8")
    with pytest.raises(PolicyError, match="key 'clauses': missing key"):
        Policy.load(missing)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepared")
    return write_prepared_frames(folder, 300, 3_000, seed=np.random.default_rng(3))


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_card_cites_only_its_own_policys_clauses(name, frames, tmp_path):
    """The attack of item 9: an Allkontor or AllCall card cited AO-1, AO-4 and AL-4."""
    import datetime as dt

    policy = Policy.load(name)
    purpose = "statistics"
    workspace = Workspace(tmp_path / "ws").create()
    ledger = proven_ledger(workspace, policy, evaluation=True)
    params = PrivacyParams.from_policy(policy, purpose)
    install_prepared(workspace, frames, purpose)
    with verified_plan(
        workspace,
        SPECS["category_mix"],
        params,
        purpose,
        segments=SegmentSource.category_rule(),
        as_of=dt.date(2026, 3, 1),
    ) as plan:
        result = plan.execute(
            release_context(ledger, workspace, policy, purpose=purpose, recipient="purchasing")
        )
    card = json.loads((result.path / "card.json").read_text(encoding="utf-8"))
    assert card["clause_ids"] == list(policy.release_clause_ids(purpose))
    cited = set(CLAUSE.findall(json.dumps(card)))
    assert cited == {policy.clause_prefix}
    entry = ledger.entries()[-1]
    assert set(CLAUSE.findall(" ".join(entry.request.clause_ids))) == {policy.clause_prefix}
