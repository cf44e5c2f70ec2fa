"""Bounds for another business: choose a policy's clipping bounds privately, charged.

A policy's bounds (a person's spend in a release, their spend and units in one category in
one month, the segmentation features' upper bounds) must never be read off the private data.
For a new business there are two honest ways (docs/bring-your-own-data.md):

1. **public facts** — a price list, pack sizes, what a customer can plausibly buy; written
   into the policy file by hand, no privacy cost;
2. **chosen privately** — :func:`choose_policy_bounds`: each bound is a high quantile of the
   per-person values, found by OpenDP's private quantile
   (:func:`segments.privacy.bounds.private_bound`) over a public grid up to a public ceiling,
   its ε charged to the controller's ledger as a release (end-to-end ε-DP) before anything
   runs, and the result written as a TOML snippet for the policy file.

The unit is a person: every per-person value (their largest monthly cell, their total) is
one number per person, so each quantile has sensitivity one person.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from segments.exceptions import PolicyError
from segments.workspace import Workspace, sha256_file, write_json

__all__ = ["BOUNDED_QUANTITIES", "PolicyBounds", "choose_policy_bounds"]

#: What each private bound measures, one value per person (the policy key it sets).
BOUNDED_QUANTITIES = {
    "spend_bound_sek": "a person's total spend in the prepared window",
    "cell_spend_bound_sek": "a person's largest spend in one category in one month",
    "cell_units_bound": "a person's largest units in one category in one month",
    "feature_bounds.frequency_orders": "a person's orders in the prepared window",
    "feature_bounds.avg_basket_sek": "a person's mean order value",
}


def _per_person(lines: pl.DataFrame) -> dict[str, np.ndarray]:
    """One value per person for every quantity of :data:`BOUNDED_QUANTITIES`."""
    cells = (
        lines.with_columns(pl.col("order_date").dt.truncate("1mo").alias("_month"))
        .group_by("person_id", "_month", "category")
        .agg(pl.col("amount_sek").sum().alias("sek"), pl.col("quantity").sum().alias("units"))
        .group_by("person_id")
        .agg(pl.col("sek").max().alias("cell_sek"), pl.col("units").max().alias("cell_units"))
    )
    people = (
        lines.group_by("person_id")
        .agg(
            pl.col("amount_sek").sum().alias("spend"),
            pl.col("order_id").n_unique().alias("orders"),
        )
        .with_columns((pl.col("spend") / pl.col("orders")).alias("basket"))
        .join(cells, on="person_id")
    )
    return {
        "spend_bound_sek": people["spend"].to_numpy(),
        "cell_spend_bound_sek": people["cell_sek"].to_numpy(),
        "cell_units_bound": people["cell_units"].to_numpy().astype(float),
        "feature_bounds.frequency_orders": people["orders"].to_numpy().astype(float),
        "feature_bounds.avg_basket_sek": people["basket"].to_numpy(),
    }


@dataclass(frozen=True)
class PolicyBounds:
    """The bounds chosen, what they cost and where the evidence is."""

    bounds: dict[str, float]
    epsilon: float
    release_id: str
    path: Path

    def toml(self) -> str:
        """The snippet to copy into the policy file (``[privacy]`` and its feature bounds)."""
        top = [f"{k} = {v:g}" for k, v in self.bounds.items() if "." not in k]
        features = [
            f"{k.split('.', 1)[1]} = [0, {v:g}]" for k, v in self.bounds.items() if "." in k
        ]
        return (
            f"# chosen privately (release {self.release_id}, ε = {self.epsilon:g}, charged)\n"
            "[privacy]\n" + "\n".join(top) + "\n\n[privacy.feature_bounds]\n" + "\n".join(features)
        )


def choose_policy_bounds(
    workspace: Workspace | str | Path,
    policy: Any,
    ledger: Any,
    *,
    purpose: str,
    recipient: str,
    as_of: dt.date,
    epsilon: float,
    ceilings: dict[str, float],
    quantile: float = 0.98,
    destination: str | None = None,
    synthetic: bool = False,
) -> PolicyBounds:
    """Choose the bounds of :data:`BOUNDED_QUANTITIES` privately and charge their ε.

    Parameters
    ----------
    workspace : Workspace or path
        Reads ``W/prepared/<purpose>/lines.parquet``.
    policy : segments.Policy
    ledger : segments.Ledger
        The loss is reserved here before any quantile runs (refused if over budget).
    purpose, recipient : str
        Declared in the policy (the recipient is the controller's own staff writing the
        policy: an internal one).
    as_of : date
    epsilon : float
        Total ε, split evenly over the bounds.
    ceilings : dict
        A public largest value per quantity (the top of each candidate grid): facts such as
        "no order is larger than a pallet", never read from the data.
    quantile : float
        The quantile each bound targets (public).

    Returns
    -------
    PolicyBounds

    Raises
    ------
    PolicyError
        A missing ceiling or a bad ε or quantile (before anything is charged).
    BudgetExceededError, ReleaseRefusedError
        From the ledger, before any quantile runs.
    """
    from segments.privacy.bounds import bound_candidates, private_bound
    from segments.privacy.guards import GUARANTEE_END_TO_END
    from segments.privacy.ledger import ReleaseRequest

    missing = [k for k in BOUNDED_QUANTITIES if not ceilings.get(k, 0) > 0]
    if missing:
        raise PolicyError(
            f"parameter 'ceilings': no public ceiling for {missing[0]!r}; fix: give the largest "
            "value the business can plausibly see (a public fact) for every bound"
        )
    if not epsilon > 0 or not 0.5 <= quantile < 1.0:
        raise PolicyError(
            f"epsilon={epsilon!r} must be positive and quantile={quantile!r} in [0.5, 1)"
        )
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    lines_path = ws.require(ws.prepared_dir(purpose) / "lines.parquet", "segments prepare")
    family = str(policy.privacy.dp_family)
    if family != "pure":
        raise PolicyError(
            f"policy {policy.name!r}: dp_family={family!r}; private bounds are charged as pure "
            "ε-DP here; fix: set them from public facts under a zCDP policy"
        )
    share = epsilon / len(BOUNDED_QUANTITIES)
    release_id = f"policy-bounds-{as_of:%Y%m%d}-{uuid.uuid4().hex[:8]}"
    request = ReleaseRequest.for_policy(
        policy,
        population="customers",
        purpose=purpose,
        recipient=recipient,
        destination=destination or "SE",
        clause_ids=policy.release_clause_ids(purpose),
        spec={
            "kind": "policy bounds",
            "quantile": quantile,
            "quantities": BOUNDED_QUANTITIES,
            "ceilings": ceilings,
        },
        guarantee=GUARANTEE_END_TO_END,
        mechanism="OpenDP make_private_quantile (exponential mechanism), one per bound",
        bounds={"per person": "one value per person and quantity"},
        epsilon=epsilon,
        as_of=as_of,
        kind="dp",
        population_fingerprint=sha256_file(lines_path),
        synthetic=synthetic,
        release_id=release_id,
    )
    reservation = ledger.reserve(request, policy=policy)
    values = _per_person(pl.read_parquet(lines_path))
    chosen = {}
    for key, per_person in values.items():
        choice = private_bound(
            per_person,
            alpha=quantile,
            loss=share,
            family=family,
            candidates=bound_candidates(float(ceilings[key])),
        )
        chosen[key] = float(np.ceil(choice.bound))
    folder = ws.release_dir(str(reservation.release_id))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bounds.json"
    write_json(
        path,
        {
            "release_id": str(reservation.release_id),
            "bounds": chosen,
            "quantile": quantile,
            "epsilon": epsilon,
            "guarantee": GUARANTEE_END_TO_END,
        },
    )
    ledger.publish(reservation, files={"bounds.json": sha256_file(path)})
    return PolicyBounds(chosen, epsilon, str(reservation.release_id), path)
