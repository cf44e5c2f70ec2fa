"""``segments segment``: fit the exploratory segmentation and write ``W/segments/``.

Options are added by small functions so further modes (e.g. a private, DP-learned
segmentation) can add their own switches and branch in :func:`run`.
"""

from __future__ import annotations

import argparse

from segments.cli.common import (
    add_as_of_option,
    add_policy_option,
    add_workspace_option,
    non_negative_int,
    positive_int,
    safe_name,
)
from segments.cli.segment_private import add_private_options, run_private


def k_range(text: str) -> range:
    """An argparse type for an inclusive range of segment counts such as ``3-10``."""
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range like 3-10") from None
    if first < 2 or last < first:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the range must start at 2 or more and not run backwards (e.g. 3-10)"
        )
    return range(first, last + 1)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Workspace, policy, purpose, as-of and seed: shared by every segmentation mode."""
    add_workspace_option(parser)
    add_policy_option(
        parser,
        "policy name or .toml path (default: alloffice)",
        required=False,
        default="alloffice",
    )
    parser.add_argument(
        "--purpose",
        default="segmentation",
        type=safe_name,
        help="which prepared frames to read (default: segmentation)",
    )
    add_as_of_option(parser, "reference date for recency (default: the prepared frames' as_of)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")


def add_exploratory_options(parser: argparse.ArgumentParser) -> None:
    """Options of the exploratory (non-private) model."""
    parser.add_argument(
        "--k-range",
        type=k_range,
        default=range(3, 11),
        metavar="LOW-HIGH",
        help="numbers of segments to compare (default: 3-10)",
    )
    parser.add_argument(
        "--model",
        default="kmeans",
        help="model family, one of segments.segmentation.MODELS (default: kmeans)",
    )
    parser.add_argument(
        "--selection-sample",
        type=positive_int,
        default=20_000,
        metavar="N",
        help="choose k on a random subsample of N people; the final fit uses everyone "
        "(default: 20000)",
    )
    parser.add_argument(
        "--features",
        type=lambda text: tuple(g.strip() for g in text.split(",") if g.strip()),
        metavar="GROUPS",
        help="comma-separated feature groups: rfm, category_spend, category_lines, channel, "
        "season (default: the default model's); features the same for everyone are dropped "
        "with a note",
    )


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "segment",
        help="segment the prepared customers (labels, profiles, metadata)",
        description="Compute features from W/prepared/<purpose>/, choose the number of "
        "segments by split-half evidence (held-out Davies-Bouldin index among the k whose "
        "halves agree; the smaller k when two are too close to call), fit on everyone and "
        "write W/segments/{labels,profiles}.parquet and metadata.json. Labels are personal "
        "data: only profiling-eligible people get one (the policy's profiling_eligibility), "
        "and nothing here is a release.",
    )
    add_common_options(parser)
    add_exploratory_options(parser)
    add_private_options(parser)  # --private: DP k-means (segments.cli.segment_private)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.private:  # DP k-means segments (issue 6); everything below is the exploratory model
        return run_private(args)
    from segments.segmentation import segment

    result = segment(
        args.workspace,
        args.policy,
        args.purpose,
        as_of=args.as_of,
        k_range=args.k_range,
        model=args.model,
        seed=args.seed,
        selection_sample=args.selection_sample,
        groups=args.features,
    )
    meta = result.metadata
    for note in meta.get("feature_notes", []):
        print(f"note: {note}")
    print(
        f"{meta['model']} with k={meta['k']} fitted on {meta['n_customers']} people (k chosen on "
        f"{meta['selection_sample_size']}); {meta['n_labelled']} profiling-eligible people "
        f"labelled in {result.paths['labels']}"
    )
    scores = result.model.scores
    print("  k  held-out Davies-Bouldin  stability (ARI)  silhouette          BIC")
    for row in scores.itertuples():
        mark = "*" if row.k == meta["k"] else " "
        print(
            f"{mark}{row.k:>2}  {row.davies_bouldin:6.3f} "
            f"[{row.davies_bouldin_low:.3f}, {row.davies_bouldin_high:.3f}]  "
            f"{row.stability_ari_mean:.3f}          {row.silhouette:10.3f} {row.bic:12.0f}"
        )
    if result.model.selection is not None:
        print(f"  {result.model.selection.summary()}")
    for seg, name in meta["segments"].items():
        size = int(result.profiles.loc[result.profiles["segment"] == int(seg), "size"].iloc[0])
        print(f"  segment {seg}: {name} ({size} people)")
    return 0
