"""``segments target``: the offer list of one segment, for the data steward (AO-5, AO-7)."""

from __future__ import annotations

import argparse

from segments.cli.common import add_workspace_option


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "target",
        help="write the pseudonyms to offer in one segment (excludes opt-outs)",
        description="Write W/segments/targets/segment-<id>.parquet: the pseudonyms of the "
        "profiling-eligible people in a segment who have not opted out of marketing (the policy's "
        "exclusions), for the data steward, who alone can resolve them (the key_custody clause).",
    )
    add_workspace_option(parser)
    parser.add_argument(
        "--segment", required=True, metavar="S", help="segment id or its exact name"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segments.segmentation import target

    result = target(args.workspace, args.segment)
    excluded = ", ".join(f"{n} {rule}" for rule, n in result.excluded.items() if n)
    print(
        f"segment {result.segment} ({result.name}): {result.n_targeted} of "
        f"{result.n_in_segment} people written to {result.path}"
        + (f"; excluded: {excluded}" if excluded else "")
    )
    return 0
