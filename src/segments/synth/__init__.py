"""The synthetic data generator: one module per table, planted ground-truth archetypes.

``generate(workspace, ...)`` writes ``W/raw/``; ``load_raw(workspace, table)`` reads a table
back with validation; ``DEFAULT_DATASET`` is the committed default dataset and
``copy_default_dataset`` puts it into a workspace.
"""

from __future__ import annotations

from segments._lazy import lazy_exports

_EXPORTS: dict[str, tuple[str, ...]] = {
    "segments.synth.archetypes": (
        "ARCHETYPES",
        "archetype_names",
        "category_mix_overlap",
    ),
    "segments.synth.defaults": (
        "DEFAULT_DATASET",
        "DefaultDataset",
    ),
    "segments.synth.generate": (
        "PERSONS",
        "TRUTH_TABLES",
        "GenerateResult",
        "copy_default_dataset",
        "generate",
        "load_raw",
        "read_manifest",
        "window_start",
    ),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
