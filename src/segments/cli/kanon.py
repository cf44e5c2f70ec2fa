"""``segments kanon``: a k-anonymous (optionally l-diverse) customer table, recorded in the ledger.

``segments kanon --workspace W --policy NAME --purpose P --recipient R --k K
[--l L --sensitive COL]`` reads ``W/prepared/<purpose>/{customers,lines}.parquet``, builds the
customer-level table (county, segment and spend band by default; ``--columns`` to choose),
finds the optimal full-domain generalisation within the policy's suppression limit, refuses
a table with more columns fully generalised than the policy's
``privacy.max_fully_generalised_columns`` (an explicit ``--max-fully-generalised`` overrides
it, recorded), checks it against the earlier k-anonymous releases of
the same people in the ledger, reserves the release in the ledger (AO-2 and AO-10 refusals
apply), and writes ``W/releases/<release-id>/table.parquet`` and ``certificate.json``.
Segments come from the category rule (AL-2) or the private model; labels of a model fitted on
the same data stay in the sandbox (AO-5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

from segments.cli.common import (
    add_ledger_options,
    add_workspace_option,
    country_code,
    is_synthetic,
    iso_date,
    non_negative_int,
    open_ledger,
    positive_int,
    refuse_early,
    safe_name,
    wants_simulated_ledger,
)
from segments.exceptions import KAnonymityError, PolicyError, WorkspaceError
from segments.workspace import Workspace, sha256_file

POPULATION = "customers"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "kanon",
        help="k-anonymous customer table (optimal generalisation), recorded in the ledger",
        description="Release a k-anonymous, optionally l-diverse customer-level table with "
        "the least information loss the hierarchies allow.",
    )
    add_workspace_option(parser)
    parser.add_argument("--policy", required=True, help="policy name (e.g. alloffice)")
    parser.add_argument(
        "--purpose", required=True, type=safe_name, help="policy purpose; reads W/prepared/<P>/"
    )
    parser.add_argument(
        "--recipient", required=True, type=safe_name, help="declared recipient in the policy"
    )
    parser.add_argument(
        "--destination", default="SE", type=country_code, help="ISO country code (default SE)"
    )
    parser.add_argument(
        "--k", type=positive_int, required=True, help="k (at least the policy's min_k)"
    )
    parser.add_argument(
        "--l", type=positive_int, help="l-diversity of --sensitive (>= policy min_l)"
    )
    parser.add_argument("--sensitive", help="sensitive column, released as is (e.g. spend_band)")
    parser.add_argument(
        "--diversity", choices=["distinct", "entropy"], default="distinct", help="l-diversity"
    )
    parser.add_argument(
        "--loss",
        choices=["discernibility", "loss", "precision", "height"],
        default="discernibility",
        help="loss the search minimises",
    )
    parser.add_argument(
        "--columns",
        help="comma-separated release columns, only those the purpose needs (default: "
        "county_code,segment,spend_band; others: birth_year, gender, postcode, "
        "municipality_code, customer_type, size_band, industry); fewer columns keep more "
        "detail in each",
    )
    parser.add_argument(
        "--max-fully-generalised",
        type=non_negative_int,
        metavar="N",
        help="columns allowed to end up one value in every row (default: the policy's "
        "privacy.max_fully_generalised_columns; above it is an explicit override, recorded "
        "in the ledger and the certificate)",
    )
    parser.add_argument(
        "--hierarchies",
        type=Path,
        metavar="DIR",
        help="ARX-style hierarchy files (hierarchy_<column>.csv, ';'-separated, one row per "
        "value) for columns without a built-in one (dates, countries and the customer "
        "columns have theirs)",
    )
    parser.add_argument(
        "--segments",
        default="category_rule",
        choices=["category_rule", "private", "fitted"],
        help="segment source (fitted is refused: its labels are personal data)",
    )
    parser.add_argument("--as-of", type=iso_date, help="release date (default: today)")
    parser.add_argument(
        "--seed", type=non_negative_int, help="seed of the row permutation (default: random)"
    )
    add_ledger_options(parser)
    parser.set_defaults(func=run)


def fully_generalised_threshold(policy: Any, asked: int | None) -> dict[str, Any]:
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


def check_parameters(args: argparse.Namespace, policy: Any) -> None:
    """Refuse k, l or a segment source the policy does not allow."""
    privacy = policy.privacy
    if args.k < privacy.min_k:
        raise PolicyError(
            f"--k={args.k} is below policy {policy.name!r} privacy.min_k={privacy.min_k} "
            f"({policy.cite('anonymous_release')}: released tables must not identify anyone); "
            f"use --k {privacy.min_k} or more"
        )
    if (args.l is None) != (args.sensitive is None):
        raise KAnonymityError("--l and --sensitive go together: give both or neither")
    if args.l is not None and args.l < privacy.min_l:
        raise PolicyError(
            f"--l={args.l} is below policy {policy.name!r} privacy.min_l={privacy.min_l} "
            f"({policy.cite('anonymous_release')}); use --l {privacy.min_l} or more"
        )
    if args.segments == "fitted":
        raise PolicyError(
            "--segments fitted is refused: labels from a model fitted on the same customers "
            "(W/segments/labels.parquet) are personal data that stay in the sandbox "
            f"({policy.cite('anonymous_release')}); "
            "use --segments category_rule or --segments private"
        )


def _segments(
    workspace: Workspace, which: str, lines: Any, customers: Any, ledger: Any, as_of: dt.date
) -> tuple[Any, str]:
    if which == "category_rule":
        from segments.features import category_rule_labels
        from segments.ingest import public_domains

        categories = public_domains(workspace).categories
        return category_rule_labels(lines, categories), "category_rule"
    # private segments: the DP k-means entry is found and hash-checked in the ledger this
    # release is recorded in, and each label recomputed from its centroids — a labels file
    # in W/segments/private/ is never trusted
    from segments.privacy.kmeans import private_model_labels, private_model_ref

    workspace.require(
        workspace.segments / "private" / "metadata.json", "segments segment --private"
    )
    ref = private_model_ref(workspace, ledger)
    return private_model_labels(ref, customers.lazy(), lines.lazy(), as_of).collect(), (
        "private_model"
    )


def _earlier_releases(ledger: Any, workspace: Workspace) -> list[Any]:
    """k-anonymous releases of the same population recorded in the ledger."""
    from segments.anonymity import EarlierRelease

    earlier = []
    for entry in ledger.entries(population=POPULATION):
        if entry.request.kind != "kanon" or entry.status != "published":
            continue
        spec = dict(entry.request.spec)
        if "levels" not in spec:
            cert = workspace.release_dir(entry.release_id) / "certificate.json"
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


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import polars as pl

    from segments.anonymity import (
        CUSTOMER_COLUMNS,
        RELEASE_COLUMNS,
        PrivacyModel,
        anonymise,
        check_linkage,
        customer_hierarchies,
        customer_release_table,
        write_certificate,
        write_table,
    )
    from segments.policy import Policy
    from segments.privacy.guards import GUARANTEE_K_ANONYMOUS
    from segments.privacy.ledger import ReleaseRequest

    workspace: Workspace = args.workspace
    policy = Policy.load(args.policy)
    purpose = policy.purpose(args.purpose)  # an undeclared purpose is refused here
    refuse_early(policy, args.purpose, args.recipient, args.destination)
    check_parameters(args, policy)
    prepared = workspace.prepared_dir(args.purpose)
    customers_path = workspace.require(prepared / "customers.parquet", "segments prepare")
    lines_path = workspace.require(prepared / "lines.parquet", "segments prepare")
    customers = pl.read_parquet(customers_path)
    lines = pl.read_parquet(lines_path)
    ledger = None
    if args.segments == "private":  # its provenance is checked in the ledger first
        ledger = open_ledger(args, policy)
    as_of = args.as_of or dt.date.today()
    labels, provenance = _segments(workspace, args.segments, lines, customers, ledger, as_of)
    columns = args.columns.split(",") if args.columns else list(RELEASE_COLUMNS)
    if args.sensitive and args.sensitive not in columns:
        columns.append(args.sensitive)
    table = customer_release_table(customers, lines, labels, columns)
    from segments.anonymity import read_hierarchies
    from segments.ingest import public_domains

    categories = public_domains(workspace).categories
    declared = read_hierarchies(args.hierarchies) if args.hierarchies else None
    hierarchies = customer_hierarchies(
        table, args.sensitive, categories=categories, declared=declared
    )
    model = PrivacyModel(
        k=args.k,
        suppression_limit=float(policy.privacy.suppression_limit),
        l=args.l,
        sensitive=args.sensitive,
        diversity=args.diversity,
    )
    threshold = fully_generalised_threshold(policy, args.max_fully_generalised)
    anon = anonymise(
        table,
        hierarchies,
        model,
        seed=np.random.default_rng(args.seed),
        loss=args.loss,
        max_fully_generalised=threshold["max_used"],
        threshold_rule=threshold["rule"],
    )
    threshold["columns"] = list(anon.fully_generalised)
    synthetic = is_synthetic(workspace) if wants_simulated_ledger(args) else False
    ledger = ledger or open_ledger(args, policy, synthetic)
    # the linkage check sees every column any release may show, not only this one's
    # (those the purpose's prepared frame carries: an ingested export has fewer)
    shown = [
        c for c in CUSTOMER_COLUMNS if c in customers.columns or c in ("segment", "spend_band")
    ]
    everything = customer_release_table(customers, lines, labels, shown)
    check_linkage(
        everything,
        customer_hierarchies(everything, categories=categories, declared=declared),
        anon,
        _earlier_releases(ledger, workspace),
        clause_ids=policy.clauses_for("anonymous_release"),
    )

    spec = {
        **model.to_dict(),
        "levels": anon.levels,
        "quasi_identifiers": list(anon.qis),
        "columns": columns,
        "segments": provenance,
        "loss_function": args.loss,
        "suppressed_rows": anon.suppressed,
        "released_rows": anon.table.height,
        "fully_generalised": threshold,
    }
    request = ReleaseRequest.for_policy(
        policy,
        population=POPULATION,
        purpose=args.purpose,
        recipient=args.recipient,
        destination=args.destination,
        clause_ids=policy.release_clause_ids(purpose.name),
        spec=spec,
        guarantee=GUARANTEE_K_ANONYMOUS,
        mechanism="full-domain generalisation with suppression",
        as_of=as_of,
        kind="kanon",
        population_fingerprint=sha256_file(customers_path),
        synthetic=synthetic,
        release_id=f"kanon-{as_of:%Y%m%d}-{uuid.uuid4().hex[:8]}",
    )
    from segments.privacy.publishing import begin

    publication = begin(
        ledger, request, policy=policy, final=workspace.release_dir(str(request.release_id))
    )
    release_id = publication.release_id
    final = publication.final
    try:
        digest = write_table(publication.staging, anon)
        write_certificate(
            publication.staging,
            anon,
            digest,
            extra={
                "release_id": release_id,
                "ledger_head_hash": publication.reservation.hash,
                "ledger_label": ledger.label,
                "evaluation": bool(ledger.evaluation),
                "guarantee": GUARANTEE_K_ANONYMOUS,
                "policy": policy.name,
                "population": POPULATION,
                "purpose": args.purpose,
                "recipient": args.recipient,
                "destination": request.destination,
                "clause_ids": list(request.clause_ids),
                "segments": provenance,
                "as_of": as_of.isoformat(),
                "fully_generalised": threshold,
            },
        )
    except BaseException as exc:
        publication.fail(exc)
        raise
    publication.complete("certificate.json")
    if ledger.label:
        print(ledger.label)
    util = anon.metrics["utility"]
    print(
        f"released {release_id}: {anon.table.height} rows, {model.name}, levels {anon.levels}, "
        f"{anon.suppressed} rows suppressed, {util['classes']} classes "
        f"(average size {util['average_class_size']:.1f}), highest prosecutor risk "
        f"{anon.metrics['risk']['prosecutor']['highest']:.3f}"
    )
    print("information kept per column (level of the hierarchy; 1 released value = none):")
    for c in anon.column_loss:
        print(
            f"  {c['column']:<14} level {c['level']}/{c['height']}  "
            f"{c['values before']:>6} values -> {c['released values']:<6}"
            + ("  FULLY GENERALISED" if c["fully generalised"] else "")
        )
    for warning in anon.warnings():
        print(f"warning: {warning}")
    if threshold["override"]:
        print(
            f"override: {len(anon.fully_generalised)} column(s) fully generalised where "
            f"policy {policy.name!r} allows {threshold['policy_max']} "
            f"({policy.cite('useful_release')}); recorded in the ledger and the certificate"
        )
    print(f"written to {final}")
    return 0
