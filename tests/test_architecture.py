"""The layer rule (CONTRIBUTING.md): a module imports only its own or earlier stages of the
data flow, never a later stage and never the command line. Read from the source, so a new
import that breaks the rule fails here before anyone has to untangle it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Stages in data-flow order (docs/architecture.md); a module may import any module of its own
# or an earlier rank. Top-level modules and packages are named by their first two parts.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "segments._lazy",
        "segments.exceptions",
        "segments.months",
        "segments.workspace",
        "segments.schema",
    ),
    # keys and the subject request log: what ingest, prepare and the audit all read
    ("segments.pseudonym", "segments.subject_log"),
    ("segments.provenance",),
    ("segments.progress",),
    ("segments.geography", "segments.plots", "segments.keys"),
    ("segments.synth", "segments.ingest"),
    ("segments.policy",),
    ("segments.prepare", "segments.retention", "segments.subjects"),
    ("segments.history",),
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
    return ".".join(module.split(".")[:2])


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """First-party modules imported anywhere in ``path`` (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "segments":  # `from segments import schema`: the submodules
                found.update(f"segments.{alias.name}" for alias in node.names)
            elif node.module.startswith("segments."):
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
