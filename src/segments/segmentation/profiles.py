"""Profiles and names of fitted segments: who is in each, in words a buyer reads.

Each profile summarises a segment's people (size, RFM medians, category, channel and
geography mix); each name is built from the words that set the segment apart from everyone
("frequent paper & toner buyers, Stockholm"). Both are derived from the fitted model's
labels, so they stay in the sandbox like the labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from segments.features import (
    CATEGORY_SHARE_FEATURES,
    CHANNEL_SHARE_FEATURES,
    LINE_SHARE_FEATURES,
    RFM_FEATURES,
)
from segments.geography import counties_pl

# --- profiles and names ---------------------------------------------------------------------
#: Short words for names ("frequent paper & toner buyers, Stockholm").
CATEGORY_WORDS = {
    "paper": "paper",
    "toner_ink": "toner",
    "writing": "writing",
    "filing_archiving": "filing",
    "desk_accessories": "desk",
    "coffee_pantry": "pantry",
    "cleaning_hygiene": "cleaning",
    "furniture": "furniture",
    "it_accessories": "IT",
    "packaging_shipping": "packaging",
}
_TYPE_WORDS = {"business": "business", "private": "private", "sole_trader": "sole-trader"}


def _county_names() -> dict[str, str]:
    c = counties_pl()
    return dict(zip(c["county_code"].to_list(), c["county_name_short"].to_list(), strict=True))


def _mix(values: pd.Series, top: int = 3) -> list[tuple[str, float]]:
    shares = values.value_counts(normalize=True, sort=True)
    return [(str(k), float(v)) for k, v in shares.head(top).items()]


def _frequency_word(median: float, overall: float) -> str:
    if median >= 1.5 * overall:
        return "frequent"
    if median <= overall / 1.5:
        return "occasional"
    return "regular"


def _recency_word(median: float, overall: float) -> str | None:
    if median >= 2 * max(overall, 1.0):
        return "lapsed"
    if median <= overall / 2:
        return "recent"
    return None


def _category_of(column: str) -> str:
    return column.removeprefix("line_").removeprefix("share_")


def _mix_columns(frame: pd.DataFrame) -> list[str]:
    """The category mix that names and profiles use: shares of order lines when present (what
    a segment buys, whatever the price: one chair would outweigh a year of pens in spend),
    else shares of spend."""
    lines = [c for c in LINE_SHARE_FEATURES if c in frame]
    return lines or [c for c in CATEGORY_SHARE_FEATURES if c in frame]


def _categories_phrase(mean_shares: pd.Series) -> str:
    ranked = mean_shares.sort_values(ascending=False, kind="stable")
    first, second = ranked.index[0], ranked.index[1]
    words = [CATEGORY_WORDS[_category_of(first)]]
    if ranked.iloc[1] >= 0.5 * ranked.iloc[0]:
        words.append(CATEGORY_WORDS[_category_of(second)])
    return " & ".join(words)


def _distinct_level(segment: pd.Series, overall: pd.Series) -> str | None:
    """The level over-represented in the segment (>= 40 % of it and >= 1.5x its overall share)."""
    seg = segment.value_counts(normalize=True)
    ref = overall.value_counts(normalize=True)
    lift = seg / ref.reindex(seg.index)
    eligible = lift[(seg >= 0.4) & (lift >= 1.5)]
    return None if eligible.empty else str(eligible.sort_values(ascending=False).index[0])


def _segment_name(
    group: pd.DataFrame, everyone: pd.DataFrame, county_names: Mapping[str, str]
) -> str:
    words = [
        _frequency_word(
            float(group["frequency_orders"].median()), float(everyone["frequency_orders"].median())
        )
    ]
    recency = _recency_word(
        float(group["recency_days"].median()), float(everyone["recency_days"].median())
    )
    if recency:
        words.insert(0, recency)
    spend = float(group["monetary_sek"].median()) / max(
        float(everyone["monetary_sek"].median()), 1e-9
    )
    if spend >= 2 or spend <= 0.5:
        words.append("high-spend" if spend >= 2 else "low-spend")
    if "customer_type" in group:
        kind = _distinct_level(group["customer_type"], everyone["customer_type"])
        if kind is not None:
            words.append(_TYPE_WORDS.get(kind, kind))
    share_cols = _mix_columns(group)
    if share_cols:
        words.append(_categories_phrase(group[share_cols].mean()))
    name = " ".join([*words, "buyers"])
    if "county_code" in group:
        county = _distinct_level(group["county_code"], everyone["county_code"])
        if county is not None:
            name += f", {county_names.get(county, county)}"
    return name


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def segment_profiles(features: pd.DataFrame, segments: np.ndarray | pd.Series) -> pd.DataFrame:
    """Aggregate profile and a short readable name per segment.

    Parameters
    ----------
    features : pandas.DataFrame
        The feature frame (RFM columns required; category shares, channel shares,
        ``county_code`` and ``customer_type`` used when present).
    segments : array-like of int
        The segment of each row.

    Returns
    -------
    pandas.DataFrame
        One row per segment: ``segment``, ``name``, ``size``, ``share``, the median of each
        RFM feature (``<feature>_median``), the mean category and channel shares
        (``<feature>_mean``), ``top_categories`` (share of order lines when the features
        have it, else of spend), ``top_counties`` and ``customer_types`` (readable mixes
        such as ``"Stockholm 31%, Skåne 12%"``). Personal-data-derived:
        for use inside the sandbox.
    """
    frame = features.reset_index(drop=True).assign(segment=np.asarray(segments))
    county_names = _county_names()
    rows = []
    for seg, group in frame.groupby("segment", sort=True):
        row: dict[str, Any] = {
            "segment": int(str(seg)),
            "size": len(group),
            "share": len(group) / len(frame),
        }
        row.update({f"{c}_median": float(group[c].median()) for c in RFM_FEATURES if c in group})
        mixes = (*CATEGORY_SHARE_FEATURES, *LINE_SHARE_FEATURES, *CHANNEL_SHARE_FEATURES)
        row.update({f"{c}_mean": float(group[c].mean()) for c in mixes if c in group})
        cats = _mix_columns(group)
        if cats:
            top = group[cats].mean().sort_values(ascending=False, kind="stable").head(3)
            row["top_categories"] = ", ".join(
                f"{_category_of(str(c))} {v:.0%}" for c, v in top.items()
            )
        if "county_code" in group:
            row["top_counties"] = ", ".join(
                f"{county_names.get(c, c)} {v:.0%}" for c, v in _mix(group["county_code"])
            )
        if "customer_type" in group:
            row["customer_types"] = ", ".join(
                f"{t} {v:.0%}" for t, v in _mix(group["customer_type"])
            )
        row["name"] = _segment_name(group, frame, county_names)
        rows.append(row)
    profiles = pd.DataFrame(rows)
    profiles["name"] = _unique_names(profiles["name"].tolist())
    first = ["segment", "name", "size", "share"]
    return profiles[first + [c for c in profiles.columns if c not in first]]
