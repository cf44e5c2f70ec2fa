"""Privacy parameters built by hand for the release tests (a small test retailer's public
bounds), and edited copies of a policy file for the attacks on adoption and renaming. Every
fact, default and check is :class:`segments.policy.PrivacyParameters`' own; this only names
the values these tests were written against (the library never reads them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segments.policy import Policy, PrivacyParameters

#: The test retailer's [privacy] section (k-anonymity, feature bounds and the DP k-means
#: settings are AllOffice's; the release bounds are small, so noise is visible in tests).
TEST_PRIVACY: dict[str, Any] = {
    "min_k": 10,
    "suppression_limit": 0.05,
    "min_l": 2,
    "dp_family": "pure",
    "delta": 0.0,
    "budget_epsilon": 10.0,
    "budget_period_months": 12,
    "budget_window_months": 14,
    "max_cells_per_person": 4,
    "spend_bound_sek": 50_000,
    "cell_spend_bound_sek": 10_000,
    "cell_units_bound": 100,
    "survey_score_bounds": (0, 10),
    "private_segments_k": 6,
    "private_segments_iterations": 5,
    "private_segments_epsilon": 1.0,
    "retention_months": 14,
}


def privacy_params(**changes: Any) -> PrivacyParameters:
    """The test retailer's parameters with ``changes`` (checked like any policy's)."""
    feature_bounds = Policy.load("alloffice").privacy.feature_bounds
    return PrivacyParameters(**{**TEST_PRIVACY, "feature_bounds": feature_bounds, **changes})


def edited_policy(folder: Path, *edits: tuple[str, str], name: str = "alloffice") -> Policy:
    """A copy of policy ``name`` in ``folder`` (same file name) with each ``(old, new)`` edit
    applied once; an edit whose ``old`` text is not in the file fails the test."""
    text = Policy.load(name).path.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    copy = Path(folder) / f"{name}.toml"
    copy.write_text(text, encoding="utf-8")
    return Policy.load(copy)
