"""The synthetic data generator: one module per table, planted ground-truth archetypes.

``generate(workspace, ...)`` writes ``W/raw/``; ``load_raw(workspace, table)`` reads a table
back with validation; ``DEFAULT_DATASET`` is the committed default dataset and
``copy_default_dataset`` puts it into a workspace.
"""

from __future__ import annotations

from segments.synth.archetypes import ARCHETYPES, archetype_names, category_mix_overlap
from segments.synth.generate import (
    DEFAULT_DATASET,
    PERSONS,
    TRUTH_TABLES,
    DefaultDataset,
    GenerateResult,
    copy_default_dataset,
    generate,
    load_raw,
    read_manifest,
    window_start,
)

__all__ = [
    "ARCHETYPES",
    "DEFAULT_DATASET",
    "PERSONS",
    "TRUTH_TABLES",
    "DefaultDataset",
    "GenerateResult",
    "archetype_names",
    "category_mix_overlap",
    "copy_default_dataset",
    "generate",
    "load_raw",
    "read_manifest",
    "window_start",
]
