"""``segments segment --private``: DP k-means segments, charged to the ledger (issue 6).

Hooked into :mod:`segments.cli.segment` by two calls: :func:`add_private_options` adds the
switches, and its ``run`` hands over to :func:`run_private` when ``--private`` is given.
"""

from __future__ import annotations

import argparse

from segments.cli.common import safe_name
from segments.workspace import CARD

__all__ = ["add_private_options", "run_private"]


def add_private_options(parser: argparse.ArgumentParser) -> None:
    """The ``--private`` switch and the ledger it charges."""
    group = parser.add_argument_group(
        "private segmentation (DP k-means; k, iterations and ε from the policy)"
    )
    group.add_argument(
        "--private",
        action="store_true",
        help="learn segments with DP k-means instead: the centroids are a release charged to "
        "the ledger, so releases keyed by them are end-to-end ε-DP (W/segments/private/)",
    )
    group.add_argument(
        "--recipient",
        default="analytics",
        type=safe_name,
        help="recipient of the centroids (default: analytics)",
    )
    ledger = group.add_mutually_exclusive_group()
    ledger.add_argument("--ledger", help="ledger file (default: the controller's ledger)")
    ledger.add_argument(
        "--demo-ledger", action="store_true", help="the throw-away demo ledger in W/ledger/"
    )


def run_private(args: argparse.Namespace) -> int:
    """Fit the private segments and print what was charged and released."""
    from segments.cli.common import open_ledger, print_ledger_label
    from segments.policy import Policy
    from segments.privacy.kmeans import fit_private_segments
    from segments.privacy.publishing import ReleaseContext

    policy = Policy.load(args.policy)
    ws = args.workspace
    ledger = open_ledger(args, policy)
    context = ReleaseContext.open(
        ledger, ws, policy, purpose=args.purpose, recipient=args.recipient
    )
    result = fit_private_segments(context, as_of=args.as_of, seed=args.seed)
    print_ledger_label(ledger.label)
    loss = result.card["privacy_loss"]
    print(
        f"private segments (DP k-means, k={result.model.n_clusters}, "
        f"{result.model.iterations} iterations): release {result.release_id}, "
        f"ε = {loss['epsilon']:.6g}"
        + (f" (ρ = {loss['rho']:.6g}, δ = {loss['delta']:g})" if loss.get("rho") else "")
        + ", charged to the ledger; labels written for the profiling-eligible people"
    )
    for seg, name in result.metadata["segments"].items():
        count = float(
            result.centroids.loc[result.centroids["segment"] == seg, "noisy_count"].iloc[0]
        )
        print(f"  segment {seg}: {name} (noisy count ≈ {count:.0f})")
    print(f"  written to {result.paths[CARD].parent}")
    return 0
