"""The layer rule (CONTRIBUTING.md): a module imports only its own or earlier stages of the
data flow, never a later stage and never the command line. Read from the source, so a new
import that breaks the rule fails here before anyone has to untangle it."""

from __future__ import annotations

import ast
import re
import tokenize
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Stages in data-flow order (docs/architecture.md); a module may import any module of its own
# or an earlier rank. Top-level modules and packages are named by their first two parts, and
# a package's module listed by its full name has its own rank (the prepare stage's key and log
# modules come before ingest, which reads them).
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "segments._lazy",
        "segments._tables",
        "segments.exceptions",
        "segments.months",
        "segments.taxonomy",
        "segments.workspace",
        "segments.schema",
    ),
    # the DP arithmetic and the families' names: what the policy and every release read
    ("segments.privacy.composition",),
    # the policy's rules and public parameters (no table library): what every later stage reads
    ("segments.policy", "segments.policy_parser"),
    # keys and the subject request log: what ingest, prepare and the audit all read
    ("segments.prepare.pseudonym", "segments.prepare.subject_log"),
    ("segments.provenance",),
    ("segments.progress",),
    # the line-level backends (polars, DuckDB, Spark): read Parquet, return per-person frames
    ("segments.engine",),
    ("segments.geography", "segments.plots", "segments.keys"),
    ("segments.synth", "segments.ingest"),
    # the proof that raw data is the generator's output: prepare reads it to allow the demo key
    ("segments.privacy.synthetic",),
    ("segments.prepare",),  # frames, retention, subjects
    ("segments.prepare.history",),
    ("segments.features",),
    ("segments.segmentation",),
    ("segments.privacy", "segments.anonymity"),
    ("segments.forecast", "segments.purchasing", "segments.session"),
    ("segments.audit",),
    ("segments.pipeline",),
    ("segments.cli",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

# Imports that break the rule and are scheduled to go (none since the main job calls the
# library instead of argv lists through the CLI). The test also fails when one of these is
# fixed, so the list never outlives the debt.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _unit(module: str) -> str:
    parts = module.split(".")
    for length in range(len(parts), 2, -1):
        if ".".join(parts[:length]) in RANK:
            return ".".join(parts[:length])
    return ".".join(parts[:2])


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """First-party modules imported anywhere in ``path`` (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "segments" or node.module.startswith("segments."):
                # `from segments.prepare import pseudonym` imports a submodule: count both
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("segments."))
    return found


def _edges() -> set[tuple[str, str]]:
    edges = set()
    for path in sorted((SRC / "segments").rglob("*.py")):
        source = _unit(_module_name(path))
        if source == "segments":  # the public surface re-exports every stage, lazily
            continue
        for target in map(_unit, _imports(path)):
            if target != source:
                edges.add((source, target))
    return edges


def test_every_module_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in (SRC / "segments").rglob("*.py")} - {"segments"}
    missing = sorted(units - set(RANK))
    assert not missing, f"add {missing} to LAYERS in tests/test_architecture.py"


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md's module table describes the tree: a new module (or a renamed
    one) fails here until the page says what it owns. The command modules are one per
    command (``segments --help``), so ``cli/`` is described as a whole."""
    page = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page[page.index("## Modules") : page.index("\n## ", page.index("## Modules") + 1)]
    unnamed = [
        str(rel)
        for rel in sorted(p.relative_to(SRC / "segments") for p in (SRC / "segments").rglob("*.py"))
        if rel.name != "__init__.py"
        and rel.parts[0] != "cli"
        and f"`{rel}`" not in table
        and f"`{rel.name}`" not in table
    ]
    assert not unnamed, f"describe these modules in docs/architecture.md's table: {unnamed}"


def test_no_module_imports_a_later_stage_or_the_cli() -> None:
    backwards = {(s, t) for s, t in _edges() if t in RANK and RANK[t] > RANK.get(s, -1)}
    new = sorted(backwards - KNOWN_VIOLATIONS)
    assert not new, f"imports of a later stage (layer rule, CONTRIBUTING.md): {new}"
    fixed = sorted(KNOWN_VIOLATIONS - backwards)
    assert not fixed, f"no longer violated: remove {fixed} from KNOWN_VIOLATIONS"


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [("segments.prepare", "segments.policy", True), ("segments.policy", "segments.audit", False)],
)
def test_the_rule_itself(source: str, target: str, expected: bool) -> None:
    assert (RANK[target] <= RANK[source]) is expected


def test_the_prepare_package_keeps_its_names_and_loads_its_stage_only_when_used() -> None:
    """``segments.prepare`` is both the stage's package and its main function; importing the
    key module (as ingest does) must not import the whole stage, and the public names stay."""
    import subprocess
    import sys

    script = (
        "import sys, segments, segments.prepare.pseudonym, segments.prepare.subject_log\n"
        "assert 'segments.prepare.frames' not in sys.modules, 'the key module loaded prepare'\n"
        "from segments.prepare import PolicyReport, frames, prepare, read_prepared\n"
        "assert segments.prepare is prepare is frames.prepare and callable(prepare)\n"
        "assert segments.read_prepared is read_prepared and PolicyReport.__name__\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


_CLAUSE_ID = re.compile(r"\b(AO|AK|AL|OF|AC)-\d+\b")


def _docstrings(tree: ast.AST) -> set[int]:
    """Ids of the docstring nodes (module, class, function and attribute docstrings)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        documented = isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        for i, stmt in enumerate(body):
            after_assignment = i > 0 and isinstance(body[i - 1], ast.Assign | ast.AnnAssign)
            is_string = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            if is_string and ((i == 0 and documented) or after_assignment):
                found.add(id(stmt.value))
    return found


def test_no_clause_id_is_written_in_the_code() -> None:
    """Clause ids are data (the policy files' ``[clauses]``, ``[promises]`` and rules): a
    string in the code that names one would cite one controller's clause for every
    controller. Docstrings and comments may name them as examples."""
    found = []
    for path in sorted((SRC / "segments").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and id(node) not in docs and _CLAUSE_ID.search(text):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value[:60]!r}")
    assert not found, "clause ids in code (read them from the Policy instead):\n" + "\n".join(found)


#: The DP formulas, written once in privacy/composition.py (noise scale and accuracy of each
#: family, ρ↔(ε, δ), the OpenDP measure of a family); anywhere else they are copies.
_DP_FORMULAS = re.compile(
    r"max_divergence\(|zero_concentrated_divergence\(|sqrt\(2(\.0)? \*|_scale_to_accuracy\("
    r"|log\(1(\.0)? / delta|\*\* ?2 ?/ ?2(\.0)?\b"
)


def _code_only(path: Path) -> str:
    """The source with every comment and string blanked (formulas are code, not prose)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    with path.open("rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                (row, col), (end_row, end_col) = tok.start, tok.end
                for r in range(row, end_row + 1):
                    line = lines[r - 1]
                    start = col if r == row else 0
                    stop = end_col if r == end_row else len(line.rstrip("\n"))
                    lines[r - 1] = line[:start] + " " * (stop - start) + line[stop:]
    return "".join(lines)


def _code_strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def test_each_dp_formula_and_family_name_is_written_once() -> None:
    """Noise scale ↔ accuracy, ρ ↔ (ε, δ) and the families' names live in
    ``privacy/composition.py``; other modules call it (and compare with ``DPFamily``)."""
    home = SRC / "segments" / "privacy" / "composition.py"
    copies, literals = [], []
    for path in sorted((SRC / "segments").rglob("*.py")):
        if path == home:
            continue
        for match in _DP_FORMULAS.finditer(_code_only(path)):
            copies.append(f"{path.relative_to(SRC)}: {match.group(0)!r}")
        literals += [
            f"{path.relative_to(SRC)}:{line}: {text!r}"
            for line, text in _code_strings(path)
            if text in ("pure", "zcdp")
        ]
    assert not copies, f"DP formulas outside privacy/composition.py: {copies}"
    assert not literals, f"use DPFamily.PURE / DPFamily.ZCDP instead of: {literals}"


#: Private helpers imported across modules: only the signers of provenance records, which stay
#: private on purpose (issue 13: no public function signs frames; test_verified_reads checks
#: it). The test fails on a new one, and when one of these goes.
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = {
    ("segments.prepare.frames", "segments.provenance._sign_prepared"),
    ("segments.prepare.history", "segments.provenance._sign_replay"),
    ("segments.privacy.synthetic", "segments.provenance._sign"),
    ("segments.privacy.synthetic", "segments.provenance._signed"),
    # signing stays private, as prepare's: only the writers of segment names sign them
    ("segments.segmentation.job", "segments.provenance._sign_segment_names"),
    ("segments.privacy.kmeans", "segments.provenance._sign_segment_names"),
    ("segments.privacy.kmeans_profiles", "segments.provenance._sign_segment_names"),
}


def test_no_module_imports_another_modules_private_helpers() -> None:
    """A leading underscore means "only this module relies on it": a helper another module
    needs is public (named, documented, tested) or moves to where both can own it."""
    found = set()
    for path in sorted((SRC / "segments").rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            if node.module.startswith("segments") and node.module != module:
                found |= {
                    (module, f"{node.module}.{alias.name}")
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                }
    new = sorted(found - KNOWN_PRIVATE_IMPORTS)
    assert not new, f"private helpers imported from another module: {new}"
    fixed = sorted(KNOWN_PRIVATE_IMPORTS - found)
    assert not fixed, f"no longer imported: remove {fixed} from KNOWN_PRIVATE_IMPORTS"


#: Workspace file names still spelled outside workspace.py: none left (the test fails on a new
#: one; an entry added here must be removed when its module is fixed).
KNOWN_PATH_LITERALS: set[tuple[str, str]] = set()


def _path_literals(path: Path) -> set[str]:
    """The workspace's file and folder names (``segments.workspace.FILE_NAMES``,
    ``FOLDER_NAMES``) this module spells: a file name in any string of the code, a folder
    name where it is joined onto a path (``x / "archive"``)."""
    from segments.workspace import FILE_NAMES, FOLDER_NAMES

    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docs and node.value in FILE_NAMES:
            found.add(str(node.value))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and right.value in FOLDER_NAMES:
                found.add(str(right.value))
    return found


def test_only_the_workspace_builds_the_workspaces_paths() -> None:
    """``Workspace`` owns every path (its docstring's promise): a stage asks it for
    ``ws.labels``, ``ws.archive``, ``ws.policy_report(purpose)`` instead of joining
    ``"labels.parquet"`` by hand, so a file that moves moves in one place."""
    found = set()
    for path in sorted((SRC / "segments").rglob("*.py")):
        if path == SRC / "segments" / "workspace.py":
            continue
        found |= {(_module_name(path), name) for name in _path_literals(path)}
    new = sorted(found - KNOWN_PATH_LITERALS)
    assert not new, f"hand-built workspace paths (use the Workspace method): {new}"
    fixed = sorted(KNOWN_PATH_LITERALS - found)
    assert not fixed, f"no longer spelled: remove {fixed} from KNOWN_PATH_LITERALS"


def test_the_notebooks_call_the_library_not_the_command_line() -> None:
    """Every stage is a library function: the notebooks (like the main job) call it, never
    ``segments.cli`` (only the CLI's own tests, and the benchmark that times the commands as
    a shell runs them, go through the command line)."""
    import json

    notebooks = sorted((SRC.parent / "notebooks").glob("*.ipynb"))
    assert notebooks
    found = []
    for path in notebooks:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        if re.search(r"\bsegments\.cli\b|from segments import cli\b", code):
            found.append(path.name)
    assert not found, f"notebooks importing segments.cli (call the library function): {found}"


def test_each_guarantee_label_is_spelled_once() -> None:
    """The guarantees a release may claim are one enum (``segments.policy.Guarantee``); a
    second spelling (a tuple in the audit, a constant in segmentation) could drift from the
    ledger's and let a card or report state a guarantee the guards never checked. (Prose
    in messages may describe a guarantee in words.)"""
    from segments.policy import Guarantee

    home = SRC / "segments" / "policy.py"
    labels = {g.value for g in Guarantee}
    found = [
        f"{path.relative_to(SRC)}:{line}: {text!r}"
        for path in sorted((SRC / "segments").rglob("*.py"))
        if path != home
        for line, text in _code_strings(path)
        if text.strip() in labels
    ]
    assert not found, f"use segments.policy.Guarantee instead of: {found}"


def test_the_policys_recipients_and_destinations_have_one_owner() -> None:
    """The guards read the policy's own recipient type and EU/EEA list (no copies), the
    policy does not re-implement the guards, and a release's parameters are the policy's
    own dataclass (one set of fields, defaults and checks)."""
    from segments import policy
    from segments.privacy import guards, specs

    assert guards.Recipient is policy.Recipient and guards.EU_EEA is policy.EU_EEA
    assert guards.RECIPIENT_KINDS is policy.RECIPIENT_KINDS
    assert not hasattr(policy.Policy, "check_release")
    assert specs.PrivacyParams is policy.PrivacyParameters


#: Calendar-month arithmetic written by hand (rolling a month over a year end).
_MONTH_ARITHMETIC = re.compile(r"% 12 \+ 1|month // 12|month == 12\b|month \+ 1\b|month - 1\b")


def test_calendar_month_arithmetic_is_written_once() -> None:
    """Retention cutoffs, budget periods, partitions, key lists and the archive's months all
    count months with ``segments.months``; a hand-rolled year-end rule elsewhere is a copy."""
    home = SRC / "segments" / "months.py"
    copies = [
        f"{path.relative_to(SRC)}: {match.group(0)!r}"
        for path in sorted((SRC / "segments").rglob("*.py"))
        if path != home
        for match in _MONTH_ARITHMETIC.finditer(_code_only(path))
    ]
    assert not copies, f"use segments.months (add_months, next_month, ...): {copies}"


def test_the_policy_the_ledger_and_the_workspace_are_typed() -> None:
    """A parameter named ``policy``, ``ledger`` or ``workspace`` says what it is
    (``Policy``, ``Ledger``, ``Workspace``; imported under ``TYPE_CHECKING`` where a cycle
    would form), so mypy checks every caller instead of trusting ``Any``."""
    untyped = re.compile(r"\b(policy|ledger|workspace): Any\b")
    found = [
        f"{path.relative_to(SRC)}: {match.group(0)}"
        for path in sorted((SRC / "segments").rglob("*.py"))
        for match in untyped.finditer(_code_only(path))
    ]
    assert not found, f"type these parameters: {found}"


def test_a_privacy_loss_travels_as_privacy_loss_not_as_a_dict() -> None:
    """``PrivacyLoss`` (privacy/composition.py) is the type a loss is passed as; a dict of
    ε, δ and ρ built elsewhere is a second shape of the same fact (a card writes
    ``loss.to_dict()``). Table rows that carry ε beside other columns are not losses."""
    home = SRC / "segments" / "privacy" / "composition.py"
    loss_keys = {"epsilon", "delta", "rho"}
    found = []
    for path in sorted((SRC / "segments").rglob("*.py")):
        if path == home:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if len(keys) >= 2 and keys <= loss_keys and len(keys) == len(node.keys):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, f"pass a PrivacyLoss instead of a dict: {found}"


def test_every_release_takes_one_release_context_and_none_runs_without_a_ledger() -> None:
    """Issue 15 point 7: the ledger, workspace, policy, purpose, recipient, destination,
    synthetic proof and clause ids travel as one ``ReleaseContext`` (built by
    ``ReleaseContext.open``, checked against the policy and the ledger), so no release
    function takes them one by one; and no library function runs a plan's measurements
    outside a ledger (``run_unaccounted`` lives in tests/release_helpers.py)."""
    import inspect

    from segments.anonymity.job import release_kanon
    from segments.privacy.archive import backfill, release_month
    from segments.privacy.jobs import release_spec
    from segments.privacy.kmeans import fit_private_segments, private_segment_profiles
    from segments.privacy.planner import probe_scale
    from segments.privacy.releases import ReleasePlan

    group = {"ledger", "workspace", "policy", "purpose", "recipient", "destination"}
    group |= {"synthetic", "clause_ids"}
    releases = (
        ReleasePlan.execute,
        release_month,
        backfill,
        release_kanon,
        fit_private_segments,
        private_segment_profiles,
        release_spec,
        probe_scale,
    )
    loose = {f.__qualname__: sorted(group & set(inspect.signature(f).parameters)) for f in releases}
    assert not any(loose.values()), f"take a ReleaseContext instead of: {loose}"
    assert all("context" in inspect.signature(f).parameters for f in releases)
    unaccounted = [
        str(path.relative_to(SRC))
        for path in sorted((SRC / "segments").rglob("*.py"))
        if "run_unaccounted" in path.read_text(encoding="utf-8")
    ]
    assert not unaccounted, f"measurements run outside a ledger in {unaccounted}"
