"""The segmentation stage on a workspace, and targeting.

:func:`segment` reads the verified prepared frames, fits the exploratory model on the
profiling-eligible people and writes ``W/segments/`` (labels, profiles, metadata);
:func:`target` writes an offer list of one segment's pseudonyms (AO-5, AO-7).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import polars as pl

from segments._tables import read_table
from segments.exceptions import SchemaError
from segments.features import (
    FEATURE_GROUPS,
    customer_features,
)
from segments.progress import progress
from segments.provenance import _sign_segment_names, prepared_as_of, recorded_as_of
from segments.segmentation.profiles import segment_profiles
from segments.segmentation.selection import (
    DEFAULT_MODEL_CATEGORICAL,
    DEFAULT_MODEL_NUMERIC,
    FeatureSpec,
    SegmentModel,
    fit_segments,
)
from segments.workspace import (
    PREPARED_CUSTOMERS,
    PREPARED_LINES,
    Workspace,
    atomic_write_with,
    make_private,
    sha256_file,
    write_json,
)

if TYPE_CHECKING:
    from segments.policy import Policy


# --- the workspace stage ----------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentationResult:
    """What :func:`segment` wrote, and the fitted model.

    ``labels`` (``person_id``, ``segment``) and ``profiles`` are pandas, as every table the
    public API returns.
    """

    model: SegmentModel
    labels: pd.DataFrame
    profiles: pd.DataFrame
    metadata: dict[str, Any]
    paths: dict[str, Path]


def _load_policy(policy: Policy | str | Path) -> Policy:
    if isinstance(policy, str | Path):
        from segments.policy import Policy

        return Policy.load(policy)
    return policy


def _policy_bounds(policy: Policy) -> dict[str, tuple[float, float]]:
    bounds = getattr(getattr(policy, "privacy", None), "feature_bounds", None)
    if not bounds:
        raise SchemaError(
            f"policy {getattr(policy, 'name', policy)!r}: key 'privacy.feature_bounds' is "
            "missing or empty; rule: segmentation features are clipped to public bounds; fix: "
            "add the bounds of docs/architecture.md to the policy file"
        )
    return {str(k): (float(v[0]), float(v[1])) for k, v in dict(bounds).items()}


def _prepared_paths(ws: Workspace, purpose: str) -> tuple[Path, Path, Path]:
    """The purpose's prepared folder, lines and customers (refused when prepare has not run)."""
    folder = ws.prepared_dir(purpose)
    made_by = f"segments prepare --workspace {ws.root} --purpose {purpose}"
    lines_path = ws.require(folder / PREPARED_LINES, made_by)
    customers_path = ws.require(folder / PREPARED_CUSTOMERS, made_by)
    return folder, lines_path, customers_path


def _read_prepared_customers(ws: Workspace, purpose: str) -> pl.LazyFrame:
    """The prepared customers (one row per person; the lines are never read whole here)."""
    _, _, customers_path = _prepared_paths(ws, purpose)
    # Read under the shared workspace lock: an erasure rewrites these frames under the
    # exclusive one, and a lazy scan during the fit read them half-replaced ("Invalid
    # thrift"); an erasure recorded meanwhile refuses the write (Workspace.publishing).
    with ws.lock(exclusive=False):
        return pl.read_parquet(customers_path).lazy()


def profiling_flags(
    customers: pl.LazyFrame, purpose: str, clause_ids: Sequence[str]
) -> pl.DataFrame:
    """``person_id`` and ``profiling_eligible`` of the prepared customers: who may get a
    segment label (the exploratory and the private model); refused when the purpose's frames
    lack the flag (``clause_ids``: the profiling-eligibility rule's clauses)."""
    if "profiling_eligible" not in customers.collect_schema().names():
        raise SchemaError(
            f"table 'customers' (prepared for {purpose!r}), column 'profiling_eligible': rule "
            f"'only profiling-eligible people get a label' ({', '.join(clause_ids)}) — column "
            "missing; fix: prepare frames for a purpose whose columns include profiling_eligible"
        )
    return customers.select("person_id", "profiling_eligible").collect()


def segment(
    workspace: Workspace | str | Path,
    policy: Policy | str | Path,
    purpose: str = "segmentation",
    *,
    as_of: dt.date | None = None,
    k_range: Iterable[int] = range(3, 11),
    model: str = "kmeans",
    seed: int = 0,
    selection_sample: int | None = 20_000,
    n_splits: int = 5,
    spec: FeatureSpec | None = None,
    n_bootstrap: int | None = None,
    groups: Sequence[str] | None = None,
) -> SegmentationResult:
    """Segment the prepared customers; write labels, profiles and metadata to ``W/segments/``.

    Features are computed for everyone with purchases in the prepared frames (the purpose
    allows the analysis, AO-4); the model is fitted on them; only people with
    ``profiling_eligible`` get a row in ``labels.parquet`` (AO-5, AL-3, AK-4). Everything
    is computed before anything is written, and each file is written atomically.

    Parameters
    ----------
    workspace : Workspace or path
    policy : Policy or str
        A policy (or its name); its ``privacy.feature_bounds`` are the public bounds.
    purpose : str, default 'segmentation'
        Which prepared frames to read (``W/prepared/<purpose>/``).
    as_of : datetime.date, optional
        Reference date for recency; default: the prepared frames' ``as_of`` from prepare's
        signed record (:func:`segments.provenance.prepared_as_of`; a ``policy_report.json``
        that disagrees is refused), the report's for hand-made frames without a record.
    k_range, model, seed, selection_sample, n_splits, n_bootstrap
        As in :func:`fit_segments`.
    spec : FeatureSpec, optional
        Default: :data:`DEFAULT_MODEL_NUMERIC` and :data:`DEFAULT_MODEL_CATEGORICAL` with the
        policy's bounds, the category shares following the data's declared taxonomy
        (:func:`segments.ingest.public_domains`). Features that are the same for everyone
        (one channel, one category) are dropped with a note in the metadata, not refused.
    groups : sequence of str, optional
        Build the default spec from these groups of :func:`segments.features.feature_groups`
        (``rfm``, ``category_spend``, ``category_lines``, ``channel``, ``season``) instead.

    Returns
    -------
    SegmentationResult

    Raises
    ------
    WorkspaceError
        The prepared frames are missing, or no ``as_of`` is known.
    ReleaseRefusedError
        ``policy_report.json`` states another as-of than prepare's signed record.
    SchemaError
        A prepared column is missing or the policy has no feature bounds.
    ValueError
        As in :func:`fit_segments`.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    log_state = ws.erasure_log_state()  # an erasure after this point refuses the write
    policy = _load_policy(policy)
    folder, lines_path, customers_path = _prepared_paths(ws, purpose)
    # the signed record's as-of when prepare wrote one (a report that disagrees is refused)
    as_of = as_of or prepared_as_of(ws, purpose, charged=False)
    from segments.ingest import public_domains

    categories = public_domains(ws).categories
    with progress(total=3, desc="segment", unit="stage") as bar:
        bar.set_postfix_str("features", refresh=True)
        # The lines go by path, so the engine the setting selects reads them (only the
        # per-person sums come back); read under the shared lock (_read_prepared_customers).
        with ws.lock(exclusive=False):
            customers = pl.read_parquet(customers_path).lazy()
            features = customer_features(lines_path, customers, as_of=as_of, categories=categories)
        bar.update()
        bar.set_postfix_str("choosing k, fitting", refresh=True)
        fitted, spec, notes = _fit(
            features, spec, policy, categories, groups, k_range, model, seed,
            selection_sample, n_splits, n_bootstrap,
        )  # fmt: skip
        bar.update()
        bar.set_postfix_str("profiles and writing", refresh=True)
        result = _finish(ws, log_state, policy, purpose, as_of, customers, features, fitted, notes)
        bar.update()
    return result


def _fit(
    features: pd.DataFrame,
    spec: FeatureSpec | None,
    policy: Policy,
    categories: Sequence[str],
    groups: Sequence[str] | None,
    k_range: Iterable[int],
    model: str,
    seed: int,
    selection_sample: int | None,
    n_splits: int,
    n_bootstrap: int | None,
) -> tuple[SegmentModel, FeatureSpec, list[str]]:
    """The default spec (constant features dropped, with notes) and the fitted model."""
    notes: list[str] = []
    if spec is None:
        spec, notes = _spec_for(features, _policy_bounds(policy), categories, groups)
    fitted = fit_segments(
        features,
        spec,
        k_range=k_range,
        model=model,
        seed=seed,
        selection_sample=selection_sample,
        n_splits=n_splits,
        n_bootstrap=n_bootstrap,
    )
    return fitted, spec, notes


def _finish(
    ws: Workspace,
    log_state: Any,
    policy: Policy,
    purpose: str,
    as_of: dt.date,
    customers: pl.LazyFrame,
    features: pd.DataFrame,
    fitted: SegmentModel,
    notes: list[str],
) -> SegmentationResult:
    """Labels of the profiling-eligible, profiles and metadata, written atomically."""
    everyone = pl.DataFrame({"person_id": features["person_id"], "segment": fitted.labels_})
    eligible = profiling_flags(customers, purpose, policy.profiling_eligibility.clause_ids)
    labels = (
        everyone.join(eligible, on="person_id", how="inner")
        .filter(pl.col("profiling_eligible"))
        .select("person_id", "segment")
        .sort("person_id")
    )
    profiles = segment_profiles(features, fitted.labels_)
    labelled = labels.group_by("segment").len().to_pandas().set_index("segment")["len"]
    profiles["labelled"] = profiles["segment"].map(labelled).fillna(0).astype("int64")
    n_customers = eligible.height
    metadata = {
        **fitted.metadata(),
        "policy": str(getattr(policy, "name", policy)),
        "purpose": purpose,
        "as_of": as_of.isoformat(),
        # the policy's own clauses: the purpose's and who may be profiled
        "clause_ids": list(
            dict.fromkeys(
                (*policy.purpose(purpose).clause_ids, *policy.profiling_eligibility.clause_ids)
            )
        ),
        "k_range": [int(k) for k in fitted.scores["k"]],
        "n_prepared_customers": n_customers,
        "n_without_purchases": n_customers - len(features),
        "n_labelled": labels.height,
        "n_not_profiling_eligible": len(features) - labels.height,
        "segments": {str(s): n for s, n in zip(profiles["segment"], profiles["name"], strict=True)},
        "feature_notes": notes,
    }
    with ws.publishing(log_state, "segment"):
        paths = _write_segments(ws, labels, profiles, metadata)
    return SegmentationResult(fitted, labels.to_pandas(), profiles, metadata, paths)


def _spec_for(
    features: pd.DataFrame,
    bounds: Mapping[str, tuple[float, float]],
    categories: Sequence[str],
    groups: Sequence[str] | None,
) -> tuple[FeatureSpec, list[str]]:
    """The default spec for this taxonomy (or the chosen groups), constant features dropped.

    A feature that is the same for everyone (every order on one channel, one category, one
    customer type) cannot separate segments; it is left out and the note says so.
    """
    from segments.features import feature_groups

    by_group = feature_groups(categories)
    if groups is None:  # the groups of the default model, in the declared taxonomy
        chosen = tuple(
            g for g, fs in FEATURE_GROUPS.items() if set(fs) & set(DEFAULT_MODEL_NUMERIC)
        )
    else:
        unknown = [g for g in groups if g not in by_group]
        if unknown:
            raise ValueError(
                f"parameter 'features' has unknown group(s) {unknown}; fix: choose from "
                f"{list(by_group)}"
            )
        chosen = tuple(groups)
    numeric = [f for g in chosen for f in by_group[g]]
    categorical = list(DEFAULT_MODEL_CATEGORICAL)
    constant = [c for c in [*numeric, *categorical] if features[c].nunique(dropna=False) <= 1]
    notes = [
        f"feature {c!r} dropped: the same value ({features[c].iloc[0]!s}) for everyone, so it "
        "cannot separate segments"
        for c in constant
    ]
    numeric = [c for c in numeric if c not in constant]
    categorical = [c for c in categorical if c not in constant]
    if not numeric and not categorical:
        raise ValueError(
            f"table 'features': every chosen feature {chosen} is constant; rule: segmentation "
            "needs a feature that varies; fix: choose other groups with --features"
        )
    # a share lies in [0, 1] by definition: the declared categories' shares need no entry
    bounds = {
        **{f: (0.0, 1.0) for f in numeric if f.startswith(("share_", "line_share_"))},
        **bounds,
    }
    missing = [f for f in numeric if f not in bounds]
    if missing:
        raise SchemaError(
            f"policy: key 'privacy.feature_bounds.{missing[0]}' is missing; rule: segmentation "
            "features are clipped to public bounds; fix: add it to the policy file"
        )
    spec = FeatureSpec(
        bounds=bounds,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        groups={g: tuple(f for f in by_group[g] if f in numeric) for g in chosen},
    )
    return spec, notes


def _write_segments(
    ws: Workspace, labels: pl.DataFrame, profiles: pd.DataFrame, metadata: dict[str, Any]
) -> dict[str, Path]:
    folder = ws.segments
    paths = {
        "labels": ws.labels,
        "profiles": ws.segment_profiles,
        "metadata": ws.segment_metadata,
    }
    # Target lists name segments of the previous segmentation: stale now, and they would
    # keep people who have since objected or been erased (issue 18). `segments target`
    # writes fresh ones.
    shutil.rmtree(ws.targets, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # pseudonymous labels: owner-only whatever the umask
    atomic_write_with(paths["labels"], labels.write_parquet)
    atomic_write_with(paths["profiles"], lambda p: profiles.to_parquet(p, index=False))
    for path in (paths["labels"], paths["profiles"]):
        make_private(path)
    # the names, signed and bound to the profiles just written: a release shows these
    # names only, never ones edited into metadata.json afterwards
    metadata["names_signed"] = _sign_segment_names(
        metadata["segments"],
        names_from=f"the profiles of the exploratory {metadata.get('model', 'model')} "
        f"(k={metadata.get('k')}) fitted on the prepared {metadata.get('purpose')} data as of "
        f"{metadata.get('as_of')} by `segments segment`: computed from private data, not "
        "differentially private",
        bound_to={paths["profiles"].name: sha256_file(paths["profiles"])},
    )
    write_json(paths["metadata"], metadata)  # last: its presence marks a complete run
    make_private(paths["metadata"])
    return paths


# --- targeting (AO-5, AO-7) ---------------------------------------------------------------------
@dataclass(frozen=True)
class TargetResult:
    """The offer list written for the data steward, and what was excluded."""

    segment: int
    name: str
    path: Path
    n_targeted: int
    n_in_segment: int
    excluded: dict[str, int]


def _resolve_segment(value: int | str, names: Mapping[str, str]) -> int:
    text = str(value).strip()
    if re.fullmatch(r"\d+", text) and text in names:
        return int(text)
    matches = [int(s) for s, n in names.items() if n == text]
    if matches:
        return matches[0]
    choices = "; ".join(f"{s}: {n}" for s, n in names.items())
    raise ValueError(
        f"parameter 'segment' is {value!r}, which is not a segment of the current "
        f"segmentation; fix: pass a segment id or exact name ({choices})"
    )


def _targeting_clauses(metadata: Mapping[str, Any]) -> str:
    """The clause ids behind targeting, cited from the policy the segmentation recorded."""
    from segments.exceptions import PolicyError
    from segments.policy import Policy

    try:
        policy = Policy.load(metadata["policy"])
    except (KeyError, PolicyError):
        return "the policy's profiling_eligibility and marketing_opt_out"
    opt_out = policy.exclusions.get("marketing_opt_out")
    ids = (*policy.profiling_eligibility.clause_ids, *(opt_out.clause_ids if opt_out else ()))
    return ", ".join(dict.fromkeys(ids))


def target(workspace: Workspace | str | Path, segment: int | str) -> TargetResult:
    """Write the pseudonyms of the people to offer in one segment, for the data steward.

    A person is targeted if they have a label in the segment, are still in the prepared
    customers, are still ``profiling_eligible`` (AO-5, AL-3, AK-4; a withdrawal since the
    segmentation takes effect now, AO-8) and have not opted out of marketing (AO-7, AK-4).

    Parameters
    ----------
    workspace : Workspace or path
    segment : int or str
        Segment id, or its exact name from ``W/segments/metadata.json``.

    Returns
    -------
    TargetResult
        Written to ``W/segments/targets/segment-<id>.parquet`` (``person_id`` only) with a
        summary ``segment-<id>.json`` (counts excluded per rule, clause ids).

    Raises
    ------
    WorkspaceError
        No segmentation in the workspace.
    ValueError
        Unknown segment.
    SchemaError
        The prepared customers lack ``marketing_opt_out`` or ``profiling_eligible``.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    log_state = ws.erasure_log_state()  # an erasure after this point refuses the write
    made_by = f"segments segment --workspace {ws.root}"
    meta_path = ws.require(ws.segment_metadata, made_by)
    metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    seg = _resolve_segment(segment, metadata["segments"])
    purpose = metadata["purpose"]
    # the same reader of prepare's signed record as the segmentation: a record not signed
    # for this user, for another purpose, or without the key kind (pseudonyms perhaps made
    # with the public demo key) is refused before a list of pseudonyms is written, and so
    # are frames with no record at all (a deleted record would hide the key kind)
    recorded_as_of(ws, purpose, required=True)
    members = (
        pl.read_parquet(ws.require(ws.labels, made_by))
        .filter(pl.col("segment") == seg)
        .select("person_id")
    )
    customers = _read_prepared_customers(ws, purpose)
    flags = ("profiling_eligible", "marketing_opt_out")
    missing = [c for c in flags if c not in customers.collect_schema().names()]
    if missing:
        raise SchemaError(
            f"table 'customers' (prepared for {purpose!r}), column {missing[0]!r}: rule "
            f"'offers respect eligibility and marketing opt-outs' ({_targeting_clauses(metadata)})"
            " — column missing; "
            "fix: prepare frames for a purpose whose columns include both flags"
        )
    current = members.join(
        customers.select("person_id", *flags).collect(), on="person_id", how="left"
    )
    gone = current.filter(pl.col("profiling_eligible").is_null())
    not_eligible = current.filter(pl.col("profiling_eligible") == False)  # noqa: E712
    opted_out = current.filter(pl.col("profiling_eligible") & pl.col("marketing_opt_out"))
    targeted = current.filter(pl.col("profiling_eligible") & ~pl.col("marketing_opt_out"))
    folder = ws.targets
    path = folder / f"segment-{seg}.parquet"
    excluded = {
        "no_longer_in_prepared_customers": gone.height,
        "not_profiling_eligible": not_eligible.height,
        "marketing_opt_out": opted_out.height,
    }
    summary = {
        "segment": seg,
        "name": metadata["segments"][str(seg)],
        "purpose": purpose,
        "clause_ids": list(metadata.get("clause_ids", [])),  # the segmentation's policy
        "n_in_segment": members.height,
        "n_targeted": targeted.height,
        "excluded": excluded,
        "recipient": "data steward (holds the pseudonymisation key)",
    }
    with ws.publishing(log_state, f"target --segment {seg}"):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)  # pseudonyms of people to contact: owner-only whatever the umask
        atomic_write_with(path, targeted.select("person_id").sort("person_id").write_parquet)
        write_json(folder / f"segment-{seg}.json", summary)
        make_private(folder)
    return TargetResult(seg, summary["name"], path, targeted.height, members.height, excluded)


def planted_archetypes(workspace: Workspace, person_ids: pl.Series) -> np.ndarray:
    """Planted archetype per prepared pseudonym, for evaluating a segmentation on synthetic data.

    Reads the planted truth (``W/raw/truth/``), which only evaluations may read. The truth is
    per account; a person with two accounts (a sole trader's private and business account,
    AO-3) is segmented on the purchases of both, so their archetype is that of the account
    with most of their order lines — the buying the features describe.

    Parameters
    ----------
    workspace : Workspace
        With synthetic raw data and its truth tables.
    person_ids : polars.Series
        Pseudonyms as ``prepare`` wrote them (the demo key of the synthetic dataset).

    Returns
    -------
    numpy.ndarray
        The archetype of each person, in the order of ``person_ids`` (None where unknown).
    """
    from segments._tables import reads_bound_to
    from segments.prepare.frames import link_persons
    from segments.prepare.pseudonym import load_key, pseudonymise_series
    from segments.privacy.synthetic import prove_synthetic
    from segments.workspace import raw_hashed_once, raw_hashes

    # the raw tables and the truth are parsed from the bytes hashed first, and the demo key's
    # synthetic proof is about those very bytes (one pass over W/raw/, shared): truth or
    # customers swapped in between the reading and the proof would otherwise be evaluated
    # under a proof of other files
    with raw_hashed_once(), reads_bound_to(workspace.raw, raw_hashes(workspace)):
        orders = read_table(workspace.raw_table("orders"), ["order_id", "customer_id"])
        lines_per_account = (
            read_table(workspace.raw_table("order_lines"), ["order_id"])
            .join(orders, on="order_id")
            .group_by("customer_id")
            .agg(pl.len().alias("n_lines"))
        )
        dominant = (
            link_persons(read_table(workspace.raw_table("customers")))
            .select("customer_id", "person_root")
            .join(lines_per_account, on="customer_id", how="left")
            .with_columns(pl.col("n_lines").fill_null(0))
            .sort(["person_root", "n_lines", "customer_id"], descending=[False, True, False])
            .unique("person_root", keep="first")
            .join(read_table(workspace.truth / "archetypes.parquet"), on="customer_id")
        )
        key = load_key(workspace=workspace, synthetic_proof=prove_synthetic)
    dominant = dominant.with_columns(
        pseudonymise_series(key, "person", dominant["person_root"], "person_id")
    )
    return (
        pl.DataFrame({"person_id": person_ids})
        .join(dominant.select("person_id", "archetype"), on="person_id", how="left")["archetype"]
        .to_numpy()
    )
