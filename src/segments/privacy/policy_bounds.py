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
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from segments.exceptions import PolicyError
from segments.privacy.composition import DPFamily
from segments.workspace import PREPARED_LINES, Workspace, sha256_file, write_json

if TYPE_CHECKING:
    from segments.policy import Policy
    from segments.privacy.ledger import Ledger


__all__ = ["BOUNDED_QUANTITIES", "CATEGORY_TABLES", "PolicyBounds", "choose_policy_bounds"]

#: Per-category cell bounds (a policy table each): a person's largest spend or units in that
#: category in one month, rounded up to a divisor of the largest cell bound chosen beside it
#: (cells are released on its scale). Asked for with a ceiling per category, e.g.
#: ``cell_units_by_category.vinyl``; the category must be in the workspace's taxonomy.
CATEGORY_TABLES = {
    "cell_units_by_category": ("cell_units_bound", "units"),
    "cell_spend_sek_by_category": ("cell_spend_bound_sek", "sek"),
}

#: What each private bound measures, one value per person (the policy key it sets).
BOUNDED_QUANTITIES = {
    "spend_bound_sek": "a person's total spend in the prepared window",
    "cell_spend_bound_sek": "a person's largest spend in one category in one month",
    "cell_units_bound": "a person's largest units in one category in one month",
    "feature_bounds.frequency_orders": "a person's orders in the prepared window",
    "feature_bounds.avg_basket_sek": "a person's mean order value",
}


def _per_category(lines: pl.DataFrame, keys: list[str]) -> dict[str, np.ndarray]:
    """One value per person (0 for who never bought it) for each per-category key, e.g.
    ``cell_units_by_category.vinyl``: their largest units in that category in one month."""
    people = lines.select("person_id").unique().sort("person_id")
    cells = (
        lines.with_columns(pl.col("order_date").dt.truncate("1mo").alias("_month"))
        .group_by("person_id", "_month", "category")
        .agg(pl.col("amount_sek").sum().alias("sek"), pl.col("quantity").sum().alias("units"))
    )
    out = {}
    for key in keys:
        table, category = key.split(".", 1)
        column = CATEGORY_TABLES[table][1]
        largest = (
            cells.filter(pl.col("category") == category)
            .group_by("person_id")
            .agg(pl.col(column).max().alias("v"))
        )
        joined = people.join(largest, on="person_id", how="left").sort("person_id")
        out[key] = joined["v"].fill_null(0).to_numpy().astype(float)
    return out


def _divisor_at_least(value: float, top: float) -> float:
    """The smallest divisor of the (whole) largest bound ``top`` that is at least ``value``.

    Examples
    --------
    >>> _divisor_at_least(7, 40), _divisor_at_least(41, 40), _divisor_at_least(0, 40)
    (8.0, 40.0, 1.0)
    """
    whole = int(top)
    for d in range(max(1, int(np.ceil(value))), whole + 1):
        if whole % d == 0:
            return float(d)
    return float(whole)


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
        """The snippet to copy into the policy file (``[privacy]``, its feature bounds and
        any per-category tables)."""
        top = [f"{k} = {v:g}" for k, v in self.bounds.items() if "." not in k]
        features = [
            f"{k.split('.', 1)[1]} = [0, {v:g}]"
            for k, v in self.bounds.items()
            if k.startswith("feature_bounds.")
        ]
        text = (
            f"# chosen privately (release {self.release_id}, ε = {self.epsilon:g}, charged)\n"
            "[privacy]\n" + "\n".join(top) + "\n\n[privacy.feature_bounds]\n" + "\n".join(features)
        )
        for table in CATEGORY_TABLES:
            rows = [
                f"{k.split('.', 1)[1]} = {v:g}"
                for k, v in self.bounds.items()
                if k.startswith(table + ".")
            ]
            if rows:
                text += f"\n\n[privacy.{table}]\n" + "\n".join(rows)
        return text


def choose_policy_bounds(
    workspace: Workspace | str | Path,
    policy: Policy,
    ledger: Ledger,
    *,
    purpose: str,
    recipient: str,
    as_of: dt.date,
    epsilon: float,
    ceilings: dict[str, float],
    quantile: float = 0.98,
    destination: str | None = None,
) -> PolicyBounds:
    """Choose the bounds of :data:`BOUNDED_QUANTITIES` privately and charge their ε.

    Parameters
    ----------
    workspace : Workspace or path
        Reads ``W/prepared/<purpose>/lines.parquet`` through
        :func:`segments.provenance.read_verified`: only the bytes prepare's signed record
        names (the card's fingerprint is their SHA-256).
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
        From the ledger, before any quantile runs; ReleaseRefusedError also for frames
        without prepare's signed record or whose bytes differ from it (nothing charged).
    """
    from segments.privacy.bounds import bound_candidates, private_bound
    from segments.privacy.guards import Guarantee
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
    by_category = sorted(k for k in ceilings if k.split(".", 1)[0] in CATEGORY_TABLES)
    unknown = [k for k in ceilings if k not in BOUNDED_QUANTITIES and k not in by_category]
    if unknown:
        raise PolicyError(
            f"parameter 'ceilings': {unknown[0]!r} is not a bound this command chooses; fix: "
            f"use one of {sorted(BOUNDED_QUANTITIES)} or <table>.<category> for the tables "
            f"{sorted(CATEGORY_TABLES)}"
        )
    if by_category:
        from segments.ingest import public_domains

        taxonomy = tuple(public_domains(ws).categories)
        for key in by_category:
            if key.split(".", 1)[1] not in taxonomy or not ceilings[key] > 0:
                raise PolicyError(
                    f"parameter 'ceilings': {key!r} needs a positive ceiling and a category of "
                    f"the workspace's declared taxonomy {list(taxonomy)}; nothing was charged"
                )
    ws.require(ws.prepared_frame(purpose, PREPARED_LINES), "segments prepare")
    family = str(policy.privacy.dp_family)
    if family != DPFamily.PURE:
        raise PolicyError(
            f"policy {policy.name!r}: dp_family={family!r}; private bounds are charged as pure "
            "ε-DP here; fix: set them from public facts under a zCDP policy"
        )
    quantities = {**BOUNDED_QUANTITIES}
    for key in by_category:
        table, category = key.split(".", 1)
        what = "units" if CATEGORY_TABLES[table][1] == "units" else "spend"
        quantities[key] = f"a person's largest {what} in {category!r} in one month"
    # the bytes read are hashed against prepare's signed record before anything is charged,
    # and the quantiles run on those bytes (a private copy), never on a re-read of W/prepared
    from segments.provenance import read_verified

    frames, read_sha256 = read_verified(ws, purpose, (PREPARED_LINES,), policy)
    lines = frames[PREPARED_LINES]
    share = epsilon / len(quantities)
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
            "quantities": quantities,
            "ceilings": ceilings,
            "source": {
                "lines": str(ws.prepared_frame(purpose, PREPARED_LINES)),
                "sha256": {"lines": read_sha256[PREPARED_LINES]},
            },
        },
        guarantee=Guarantee.END_TO_END,
        mechanism="OpenDP make_private_quantile (exponential mechanism), one per bound",
        bounds={"per person": "one value per person and quantity"},
        epsilon=epsilon,
        as_of=as_of,
        kind="dp",
        population_fingerprint=read_sha256[PREPARED_LINES],
        release_id=release_id,
    )
    ledger.check_workspace(ws)  # a demo/evaluation ledger: only the data it was proven for
    reservation = ledger.reserve(request, policy=policy)
    values = {**_per_person(lines), **_per_category(lines, by_category)}
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
    for key in by_category:  # post-processing: on the scale of the largest cell bound
        top = chosen[CATEGORY_TABLES[key.split(".", 1)[0]][0]]
        chosen[key] = _divisor_at_least(min(chosen[key], top), top)
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
            "guarantee": Guarantee.END_TO_END,
        },
    )
    ledger.publish(reservation, files={"bounds.json": sha256_file(path)})
    return PolicyBounds(chosen, epsilon, str(reservation.release_id), path)
