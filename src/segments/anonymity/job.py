"""The k-anonymous release as a workspace job: read the prepared frames, generalise, check
linkage against the earlier releases in the ledger, reserve, stage and publish.

The library function behind ``segments kanon`` and the main job (:mod:`segments.pipeline`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from segments.exceptions import KAnonymityError, PolicyError, WorkspaceError
from segments.provenance import hashing_raw_once
from segments.workspace import (
    CERTIFICATE,
    PREPARED_CUSTOMERS,
    PREPARED_LINES,
    SEGMENT_METADATA,
    Workspace,
)

if TYPE_CHECKING:
    import polars as pl

    from segments.anonymity.models import PrivacyModel
    from segments.anonymity.release import KAnonymousTable
    from segments.anonymity.search import Loss
    from segments.policy import Policy
    from segments.privacy.ledger import Ledger
    from segments.privacy.publishing import ReleaseContext

__all__ = [
    "KAnonymousRelease",
    "check_kanon_parameters",
    "fully_generalised_threshold",
    "release_kanon",
]


@dataclass(frozen=True)
class KAnonymousRelease:
    """A published k-anonymous table: its id, folder, model and the anonymisation."""

    release_id: str
    path: Path
    model: PrivacyModel
    anonymised: KAnonymousTable
    ledger_label: str
    #: the fully-generalised-columns rule applied (:func:`fully_generalised_threshold`)
    threshold: dict[str, Any]


def fully_generalised_threshold(policy: Policy, asked: int | None) -> dict[str, Any]:
    """How many columns may end up fully generalised: the policy's threshold, or the
    caller's explicit ``--max-fully-generalised`` (an override when above the policy's).

    Returns what the ledger entry and the certificate record: the policy's value and its
    clause ids, the value used and whether it overrides the policy.
    """
    policy_max = policy.privacy.max_fully_generalised_columns
    used = policy_max if asked is None else asked
    if asked is not None and asked < 0:
        raise KAnonymityError(
            f"--max-fully-generalised={asked} is negative; give 0 or more columns"
        )
    return {
        "policy_max": policy_max,
        "clause_ids": list(policy.clauses_for("useful_release")),
        "rule": f"policy {policy.name!r} privacy.max_fully_generalised_columns "
        f"({policy.cite('useful_release')}; an explicit --max-fully-generalised N overrides "
        "it, recorded in the ledger)",
        "max_used": used,
        "override": asked is not None and policy_max is not None and asked > policy_max,
    }


def check_kanon_parameters(
    policy: Policy,
    k: int,
    l: int | None,  # noqa: E741 - the l of l-diversity
    sensitive: str | None,
    segments: str,
) -> None:
    """Refuse k, l or a segment source the policy does not allow."""
    privacy = policy.privacy
    if k < privacy.min_k:
        raise PolicyError(
            f"--k={k} is below policy {policy.name!r} privacy.min_k={privacy.min_k} "
            f"({policy.cite('anonymous_release')}: released tables must not identify anyone); "
            f"use --k {privacy.min_k} or more"
        )
    if (l is None) != (sensitive is None):
        raise KAnonymityError("--l and --sensitive go together: give both or neither")
    if l is not None and l < privacy.min_l:
        raise PolicyError(
            f"--l={l} is below policy {policy.name!r} privacy.min_l={privacy.min_l} "
            f"({policy.cite('anonymous_release')}); use --l {privacy.min_l} or more"
        )
    if segments == "fitted":
        raise PolicyError(
            "--segments fitted is refused: labels from a model fitted on the same customers "
            "(W/segments/labels.parquet) are personal data that stay in the sandbox "
            f"({policy.cite('anonymous_release')}); "
            "use --segments category_rule or --segments private"
        )


def _segments(
    workspace: Workspace,
    which: str,
    lines: pl.DataFrame,
    customers: pl.DataFrame,
    ledger: Ledger | None,
    as_of: dt.date,
) -> tuple[pl.DataFrame, str]:
    if which == "category_rule":
        from segments.features import category_rule_labels_pl
        from segments.ingest import public_domains

        categories = public_domains(workspace).categories
        return category_rule_labels_pl(lines, categories), "category_rule"
    # private segments: the DP k-means entry is found and hash-checked in the ledger this
    # release is recorded in, and each label recomputed from its centroids — a labels file
    # in W/segments/private/ is never trusted
    from segments.privacy.kmeans import private_model_labels, private_model_ref

    workspace.require(workspace.private_segments / SEGMENT_METADATA, "segments segment --private")
    ref = private_model_ref(workspace, ledger)
    return private_model_labels(ref, customers.lazy(), lines.lazy(), as_of).collect(), (
        "private_model"
    )


def _earlier_releases(ledger: Ledger, workspace: Workspace) -> list[Any]:
    """k-anonymous releases of the same population recorded in the ledger."""
    from segments.anonymity.release import EarlierRelease
    from segments.privacy.ledger import POPULATION

    earlier = []
    for entry in ledger.entries(population=POPULATION):
        if entry.request.kind != "kanon" or entry.status != "published":
            continue
        spec = dict(entry.request.spec)
        if "levels" not in spec:
            cert = workspace.release_dir(entry.release_id) / CERTIFICATE
            if not cert.exists():
                raise WorkspaceError(
                    f"earlier k-anonymous release {entry.release_id!r} records no levels in "
                    f"the ledger and {cert} is missing; linkage cannot be checked"
                )
            spec = json.loads(cert.read_text(encoding="utf-8"))
        earlier.append(
            EarlierRelease(
                release_id=entry.release_id,
                levels=spec["levels"],
                k=int(spec.get("k") or spec["privacy_model"]["k"]),
                sensitive=spec.get("sensitive"),
                l=spec.get("l"),
                diversity=spec.get("diversity") or "distinct",
            )
        )
    return earlier


@hashing_raw_once
def release_kanon(
    context: ReleaseContext,
    *,
    k: int,
    l: int | None = None,  # noqa: E741 - the l of l-diversity
    sensitive: str | None = None,
    diversity: Literal["distinct", "entropy"] = "distinct",
    loss: Loss = "discernibility",
    columns: Sequence[str] | None = None,
    max_fully_generalised: int | None = None,
    hierarchies: Path | None = None,
    segments: str = "category_rule",
    as_of: dt.date | None = None,
    seed: int | None = None,
) -> KAnonymousRelease:
    """Release a k-anonymous (optionally l-diverse) customer table, recorded in the ledger.

    Parameters
    ----------
    context : segments.privacy.publishing.ReleaseContext
        The workspace (reads ``W/prepared/<purpose>/{customers,lines}.parquet``; writes
        ``W/releases/<release-id>/table.parquet`` and ``certificate.json``), the policy (its
        purposes, recipients, destinations, ``min_k``, ``min_l`` and suppression limit),
        purpose, recipient and destination, and the ledger recording the release (a context
        given a function opening it opens it only after the parameters and inputs were
        checked and the table anonymised).
    k, l, sensitive, diversity :
        The privacy model (``l`` and ``sensitive`` together or not at all).
    loss : str
        The loss the search minimises (:data:`segments.anonymity.LOSSES`).
    columns : sequence of str, optional
        Release columns (default :data:`segments.anonymity.RELEASE_COLUMNS`: county,
        segment, spend band).
    max_fully_generalised : int, optional
        Columns allowed to end up one value in every row (default: the policy's
        ``privacy.max_fully_generalised_columns``; above it is an explicit override,
        recorded in the ledger and the certificate).
    hierarchies : path, optional
        Folder of ARX-style hierarchy files for columns without a built-in one.
    segments : {'category_rule', 'private'}
        Segment source (``fitted`` is refused: its labels are personal data).
    as_of : date, optional
        Release date (default today).
    seed : int, optional
        Seed of the row permutation (default random).

    Returns
    -------
    KAnonymousRelease
    """
    import numpy as np

    from segments.anonymity.models import PrivacyModel
    from segments.anonymity.release import (
        CUSTOMER_COLUMNS,
        RELEASE_COLUMNS,
        anonymise,
        check_linkage,
        customer_hierarchies,
        customer_release_table_pl,
        write_certificate,
        write_table,
    )
    from segments.ingest import public_domains
    from segments.privacy.guards import Guarantee
    from segments.privacy.publishing import begin
    from segments.provenance import read_verified

    workspace, policy, purpose = context.workspace, context.policy, context.purpose
    check_kanon_parameters(policy, k, l, sensitive, segments)
    prepared = workspace.prepared_dir(purpose)
    names = (PREPARED_CUSTOMERS, PREPARED_LINES)
    for name in names:
        workspace.require(prepared / name, "segments prepare")
    # the bytes read are hashed against prepare's signed record, before anything is recorded
    frames, read_sha256 = read_verified(workspace, purpose, names, policy)
    customers, lines = frames[PREPARED_CUSTOMERS], frames[PREPARED_LINES]
    charged: Ledger | None = None
    if segments == "private":  # its provenance is checked in the ledger first
        charged = context.ledger
    from segments.privacy.ledger import ledger_today

    as_of = as_of or ledger_today()
    labels, provenance = _segments(workspace, segments, lines, customers, charged, as_of)
    chosen = list(columns) if columns else list(RELEASE_COLUMNS)
    if sensitive and sensitive not in chosen:
        chosen.append(sensitive)
    table = customer_release_table_pl(customers, lines, labels, chosen)
    from segments.anonymity.hierarchies import read_hierarchies

    categories = public_domains(workspace).categories
    declared = read_hierarchies(hierarchies) if hierarchies else None
    model = PrivacyModel(
        k=k,
        suppression_limit=float(policy.privacy.suppression_limit),
        l=l,
        sensitive=sensitive,
        diversity=diversity,
    )
    threshold = fully_generalised_threshold(policy, max_fully_generalised)
    anon = anonymise(
        table,
        customer_hierarchies(table, sensitive, categories=categories, declared=declared),
        model,
        seed=np.random.default_rng(seed),
        loss=loss,
        max_fully_generalised=threshold["max_used"],
        threshold_rule=threshold["rule"],
    )
    threshold["columns"] = list(anon.fully_generalised)
    if charged is None:
        charged = context.ledger
    # the linkage check sees every column any release may show, not only this one's
    # (those the purpose's prepared frame carries: an ingested export has fewer)
    shown = [
        c for c in CUSTOMER_COLUMNS if c in customers.columns or c in ("segment", "spend_band")
    ]
    everything = customer_release_table_pl(customers, lines, labels, shown)
    check_linkage(
        everything,
        customer_hierarchies(everything, categories=categories, declared=declared),
        anon,
        _earlier_releases(charged, workspace),
        clause_ids=policy.clauses_for("anonymous_release"),
    )

    spec = {
        **model.to_dict(),
        "levels": anon.levels,
        "quasi_identifiers": list(anon.qis),
        "columns": chosen,
        "segments": provenance,
        "loss_function": loss,
        "suppressed_rows": anon.suppressed,
        "released_rows": anon.rows,
        "fully_generalised": threshold,
    }
    request = context.request(
        spec=spec,
        guarantee=Guarantee.K_ANONYMOUS,
        mechanism="full-domain generalisation with suppression",
        as_of=as_of,
        kind="kanon",
        population_fingerprint=read_sha256[PREPARED_CUSTOMERS],
        release_id=f"kanon-{as_of:%Y%m%d}-{uuid.uuid4().hex[:8]}",
    )
    charged.check_workspace(workspace)  # a demo/evaluation ledger: only its proven data
    publication = begin(
        charged, request, policy=policy, final=workspace.release_dir(str(request.release_id))
    )
    release_id = publication.release_id
    try:
        digest = write_table(publication.staging, anon)
        write_certificate(
            publication.staging,
            anon,
            digest,
            # the ledger's fields, the parties and the files' hashes: complete()
            extra={
                "guarantee": Guarantee.K_ANONYMOUS,
                "segments": provenance,
                "as_of": as_of.isoformat(),
                "fully_generalised": threshold,
            },
        )
    except BaseException as exc:
        publication.fail(exc)
        raise
    publication.complete(CERTIFICATE)
    return KAnonymousRelease(release_id, publication.final, model, anon, charged.label, threshold)
