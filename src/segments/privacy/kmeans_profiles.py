"""Profiles and names of the private segments, from a DP release keyed by them.

The segments of :func:`segments.privacy.kmeans.fit_private_segments` are described only
through a release of their own (noisy counts, spend and categories per segment), charged to
the ledger like any release; the profiles and names are post-processing of it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segments.provenance import _sign_segment_names, hashing_raw_once
from segments.workspace import (
    CARD,
    CENTROIDS,
    PREPARED_CUSTOMERS,
    PREPARED_LINES,
    SEGMENT_METADATA,
    SEGMENT_PROFILES,
    atomic_write_with,
    write_json,
)

if TYPE_CHECKING:
    from segments.privacy.publishing import ReleaseContext

__all__ = ["PROFILE_QUERIES", "private_segment_profiles"]

#: The DP release behind the private segments' profiles and names.
PROFILE_QUERIES = ("spend_by_segment", "category_by_segment")
#: Below this noisy count a segment's noisy means and category ranks are mostly noise.
_MIN_PROFILED = 50


@hashing_raw_once
def private_segment_profiles(
    context: ReleaseContext, *, epsilon: float = 0.5, as_of: dt.date | None = None
) -> tuple[Any, Any]:
    """Profiles and names of the private segments, from a DP release keyed by them.

    Asks the release engine (:func:`segments.privacy.releases.plan_release`) for the noisy
    customer count, total and mean spend per private segment and the noisy spend per category
    per segment — charged to the ledger like any release, with the segmentation's own loss
    stated on its card — then derives each segment's profile and name from those noisy
    tables only (post-processing). Writes ``W/segments/private/profiles.parquet`` and the
    names into ``metadata.json``.

    Parameters
    ----------
    context : segments.privacy.publishing.ReleaseContext
        The ledger :func:`fit_private_segments` charged (which must have run), workspace,
        policy, purpose (the prepared frames read), recipient and destination.
    epsilon : float, default 0.5
        ε of the profile release (split over its two queries).
    as_of : date, optional
        Default: the as-of the ledger recorded for the DP k-means entry the segments rest on
        (``metadata.json`` is an editable file: an ``as_of`` there that disagrees with the
        entry is refused before anything is charged).

    Returns
    -------
    (pandas.DataFrame, ReleaseResult)
        One row per segment (``segment``, ``name``, ``customers``, ``customers_reliable``,
        ``mean_spend_sek``, ``mean_spend_sek_status``, ``top_categories``,
        ``top_categories_reliable``) and the published release. A ``_reliable`` column is
        false where the release's cells behind it are noisier than the policy's
        ``max_relative_error`` (``postprocess.reliability_footnote`` is the legend).
    """
    from segments.exceptions import ReleaseRefusedError
    from segments.privacy.releases import plan_release
    from segments.privacy.specs import PrivacyParams, ReleaseSpec, SegmentSource
    from segments.provenance import verified_frames

    ws, policy, purpose = context.workspace, context.policy, context.purpose
    folder = ws.require(ws.private_segments / CARD, "segments segment --private").parent
    metadata = json.loads((folder / SEGMENT_METADATA).read_text(encoding="utf-8"))
    # the segmentation's time is the ledger's record of its entry, never the editable file
    segments = SegmentSource.private_model(ws, context.ledger)  # verified against this ledger
    assert segments.model is not None
    fitted_as_of = context.ledger.entry(segments.model.release_id).request.as_of
    stated = str(metadata.get("as_of", fitted_as_of.isoformat()))[:10]
    if stated != fitted_as_of.isoformat():
        raise ReleaseRefusedError(
            "private segment profiles refused before anything was charged (rule: the anonymity "
            f"claim of every release, {policy.cite('anonymous_release')}): "
            f"{folder / SEGMENT_METADATA} states as_of {stated}, but the ledger recorded the "
            f"DP k-means entry {segments.model.release_id} as of {fitted_as_of}; the file is "
            "not the record — restore it or run `segments segment --private` again"
        )
    as_of = as_of or fitted_as_of
    prepared = ws.prepared_dir(purpose)
    spec = ReleaseSpec(
        "private_segment_profiles",
        PROFILE_QUERIES,
        epsilon=epsilon,
        description="customers, total and mean spend, and spend per category per private "
        "segment: the profiles and names shown to purchasers and reviewers",
    )
    names = (PREPARED_CUSTOMERS, PREPARED_LINES)
    for name in names:
        ws.require(prepared / name, f"segments prepare --purpose {purpose}")
    with (
        # the bytes read are hashed against prepare's signed record (no check-then-read gap)
        verified_frames(ws, purpose, names, policy) as copies,
        plan_release(
            spec,
            PrivacyParams.from_policy(policy, purpose),
            customers=copies[PREPARED_CUSTOMERS],
            lines=copies[PREPARED_LINES],
            segments=segments,
            as_of=as_of,
            workspace=ws,
            origins=copies.origins,
        ) as plan,
    ):
        # the segmentation's loss from its ledger entry, not from an editable card
        # the card's end_to_end_privacy_loss (k-means + this release) is the release's own
        result = plan.execute(context)
    profiles = _profiles_from_release(result._tables, [str(k) for k in metadata["segments"]])
    atomic_write_with(folder / SEGMENT_PROFILES, lambda p: profiles.to_parquet(p, index=False))
    metadata["segments"] = dict(zip(profiles["segment"], profiles["name"], strict=True))
    metadata["names_from"] = f"DP release {result.release_id} ({', '.join(PROFILE_QUERIES)})"
    # re-signed, bound to the centroids the ledger verified (not the file's own claim)
    metadata["names_signed"] = _sign_segment_names(
        metadata["segments"],
        names_from=metadata["names_from"],
        bound_to={CENTROIDS: segments.model.centroids_sha256},
    )
    write_json(folder / SEGMENT_METADATA, metadata)
    return profiles, result


def _profiles_from_release(tables: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """Post-process the noisy tables into one profile row per segment (no private data)."""
    spend = tables["spend_by_segment"].to_pandas().set_index("segment")
    cats = tables["category_by_segment"].to_pandas()
    rows = []
    for key in keys:
        mine = cats[cats["segment"] == key].sort_values("sek", ascending=False)
        top = [str(c) for c in mine["category"].head(3)]
        customers = max(int(spend.loc[key, "count"]), 0) if key in spend.index else 0
        mean = spend.loc[key, "mean_spend_sek"] if key in spend.index else float("nan")
        mean = float(mean) if mean is not None and np.isfinite(float(mean)) else float("nan")
        spend_text = f"~{mean:,.0f} SEK".replace(",", " ") if np.isfinite(mean) else "spend n/a"
        name = (
            f"{' & '.join(top[:2]) or 'mixed'} buyers, {spend_text}"
            if customers >= _MIN_PROFILED
            else f"small segment (noisy count {customers}: too few people for a DP profile)"
        )
        status = (
            str(spend.loc[key, "mean_spend_sek_status"])
            if key in spend.index
            else "not published: no released count"
        )
        rows.append(
            {
                "segment": key,
                "name": name,
                "customers": customers,
                # the release's own marks (postprocess.mark_unreliable_cells), carried over
                "customers_reliable": bool(spend.loc[key, "count_reliable"])
                if key in spend.index
                else False,
                "mean_spend_sek": mean,
                "mean_spend_sek_status": status,
                "top_categories": ", ".join(top),
                # the names rank categories by noisy spend: only as sure as those cells
                "top_categories_reliable": bool(len(top) and mine["sek_reliable"].head(3).all()),
            }
        )
    return pd.DataFrame(rows)
