"""Options shared by several commands."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segments.exceptions import WorkspaceError
from segments.workspace import DEFAULT_WORKSPACE, Workspace, check_name

if TYPE_CHECKING:
    from segments.policy import Policy
    from segments.privacy.ledger import Ledger

#: The smallest ε a command accepts. Below it every released value is noise (the noise
#: scale is over a thousand times each public bound), and far below it (ε = 1e-300) OpenDP's
#: integer noise saturates at ±9.2e18: such a request is a typo, not a privacy choice.
EPSILON_FLOOR = 1e-3

#: Ledgers opened by this command, with how many releases each held when opened: the error
#: boundary (cli/main.py) compares to say whether a failed command spent privacy budget.
OPENED_LEDGERS: list[tuple[Any, int]] = []


def workspace_path(text: str) -> Workspace:
    """An argparse type for ``--workspace``: a folder (or a path that does not exist yet)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty workspace path; give a folder")
    try:
        return Workspace(text).check_usable()
    except WorkspaceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_workspace_option(
    parser: argparse.ArgumentParser, default: Path = DEFAULT_WORKSPACE
) -> None:
    parser.add_argument(
        "--workspace",
        "-w",
        type=workspace_path,
        default=Workspace(default),
        metavar="DIR",
        help=f"workspace folder (default: {default})",
    )


def safe_name(text: str) -> str:
    """An argparse type for purpose, spec and recipient names: data, never paths."""
    try:
        return check_name("name", text)
    except WorkspaceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def finite_float(text: str) -> float:
    """An argparse type for a finite number (NaN and infinities refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give e.g. 0.95")
    return value


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type for a whole number from ``low`` (to ``high``): the range is checked at
    the edge, so a negative seed or sample size never reaches numpy as a traceback."""
    span = f"from {low} to {high}" if high is not None else f"{low} or more"

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; give one {span}"
            ) from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give a whole number {span}")
        return value

    return whole_number


#: Seeds, counts that may be zero (``--dp-trials 0`` skips), and sizes of at least one.
non_negative_int = int_in(0)
positive_int = int_in(1)


def positive_float(text: str) -> float:
    """An argparse type for a finite number above zero."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above zero; give a positive number")
    return value


def open_fraction(text: str) -> float:
    """An argparse type for a level or quantile strictly between 0 and 1 (e.g. 0.95)."""
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"{text} is not strictly between 0 and 1; give a level such as 0.95"
        )
    return value


def epsilon_value(text: str) -> float:
    """An argparse type for ``--epsilon``: finite, at least :data:`EPSILON_FLOOR`."""
    value = finite_float(text)
    if value < EPSILON_FLOOR:
        raise argparse.ArgumentTypeError(
            f"epsilon {text} is below the floor {EPSILON_FLOOR:g}: the noise would be over a "
            "thousand times every public bound (and saturates OpenDP's integer noise for tiny "
            f"values), so nothing useful could be released; give {EPSILON_FLOOR:g} or more"
        )
    if value > 100:
        raise argparse.ArgumentTypeError(
            f"epsilon {text} is above 100, which protects nobody; give a value such as 0.5"
        )
    return value


def country_code(text: str) -> str:
    """An argparse type for ``--destination``: an ISO 3166-1 alpha-2 code."""
    if not re.fullmatch(r"[A-Z]{2}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 3166-1 alpha-2 country code; give e.g. SE"
        )
    return text


def iso_date(text: str) -> dt.date:
    """An argparse type for YYYY-MM-DD dates."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date in YYYY-MM-DD form") from None


def add_policy_option(
    parser: argparse.ArgumentParser,
    help_text: str = "policy name or .toml path",
    *,
    required: bool = True,
    default: str | None = None,
) -> None:
    """``--policy NAME`` (a bundled policy's name or a ``.toml`` path)."""
    parser.add_argument("--policy", required=required, default=default, help=help_text)


def add_as_of_option(
    parser: argparse.ArgumentParser,
    help_text: str = "release date (default: today)",
    required: bool = False,
) -> None:
    """``--as-of DATE`` (YYYY-MM-DD)."""
    parser.add_argument("--as-of", required=required, type=iso_date, metavar="DATE", help=help_text)


def key_file_path(text: str) -> Path:
    """An argparse type for ``--key-file``: an empty value (``--key-file "$KEY"`` with the
    variable unset) is refused as empty, not read as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the key file path is empty; give the steward's key file")
    return Path(text)


def add_key_file_option(parser: argparse.ArgumentParser, why: str) -> None:
    """``--key-file FILE``: the data steward's pseudonymisation key, ``why`` this command
    wants it (e.g. "(to find the person's segment)")."""
    parser.add_argument(
        "--key-file", type=key_file_path, metavar="FILE", help=f"the steward's key file {why}"
    )


def add_release_parties(
    parser: argparse.ArgumentParser, purpose_help: str = "policy purpose; reads W/prepared/<P>/"
) -> None:
    """Who a release is for: ``--purpose``, ``--recipient`` (both declared by the policy)
    and ``--destination`` (an ISO country code, default SE)."""
    parser.add_argument("--purpose", required=True, type=safe_name, help=purpose_help)
    parser.add_argument(
        "--recipient", required=True, type=safe_name, help="declared recipient in the policy"
    )
    parser.add_argument(
        "--destination", default="SE", type=country_code, help="ISO country code (default SE)"
    )


def add_actions(
    sub: argparse._SubParsersAction, name: str, help_text: str
) -> argparse._SubParsersAction:
    """A command made of actions (``segments NAME ACTION``): the actions' subparsers."""
    group = sub.add_parser(name, help=help_text)
    return group.add_subparsers(dest="action", metavar="ACTION", required=True)


def add_ledger_options(parser: argparse.ArgumentParser) -> None:
    """Which ledger a release is charged to: the controller's (default), the workspace's
    throw-away demo ledger, or the evaluation ledger (data proven synthetic only)."""
    ledger = parser.add_mutually_exclusive_group()
    ledger.add_argument("--ledger", help="ledger file (default: the controller's ledger)")
    ledger.add_argument(
        "--demo-ledger",
        action="store_true",
        help="the throw-away demo ledger in W/ledger/ (data proven synthetic only)",
    )
    ledger.add_argument(
        "--evaluation-ledger",
        action="store_true",
        help="the evaluation ledger in W/ledger/ (data proven synthetic only)",
    )
    parser.add_argument(
        "--init-ledger",
        action="store_true",
        help="start (or move) the controller's ledger at --ledger PATH; refused while the "
        "registry of controller ledgers knows another one",
    )


def is_synthetic(workspace: Workspace) -> bool:
    """True when the workspace's raw data is *proven* synthetic: regenerated from the
    manifest's seed and parameters and equal byte for byte (the manifest's flag is not
    trusted; the verdict is cached by the files' hashes)."""
    from segments.privacy.synthetic import prove_synthetic

    return bool(prove_synthetic(workspace))


def wants_simulated_ledger(args: argparse.Namespace) -> bool:
    """True when the command asked for the demo or the evaluation ledger."""
    return bool(getattr(args, "demo_ledger", False) or getattr(args, "evaluation_ledger", False))


def open_ledger(args: argparse.Namespace, policy: Policy, synthetic: bool | None = None) -> Ledger:
    """The ledger chosen by :func:`add_ledger_options`, opened by
    :func:`segments.privacy.jobs.open_ledger` and reconciled, each reconciled release
    reported."""
    from segments.privacy.jobs import LedgerKind
    from segments.privacy.jobs import open_ledger as open_chosen

    kind: LedgerKind = "controller"
    if getattr(args, "demo_ledger", False):
        kind = "demo"
    elif getattr(args, "evaluation_ledger", False):
        kind = "evaluation"
    ledger = open_chosen(
        args.workspace,
        policy,
        kind=kind,
        path=getattr(args, "ledger", None),
        init=bool(getattr(args, "init_ledger", False)),
        reconcile=False,
        purpose=getattr(args, "purpose", None),
    )
    report_reconciliation(ledger)
    return track_ledger(ledger)


def ledger_when_needed(
    args: argparse.Namespace, policy: Policy, synthetic: bool | None = None
) -> Callable[[], Ledger]:
    """:func:`open_ledger`, called once and only when the release first needs the ledger
    (a refusal found before that opens, reconciles and tracks no ledger)."""
    opened: list[Ledger] = []

    def ledger() -> Ledger:
        if not opened:
            opened.append(open_ledger(args, policy, synthetic))
        return opened[0]

    return ledger


def print_ledger_label(label: str | None) -> None:
    """Print the ledger's label (a demo or evaluation ledger says so); the controller's
    ledger has none."""
    if label:
        print(label)


def report_reconciliation(ledger: Ledger) -> list[dict[str, str]]:
    """Run :meth:`Ledger.reconcile` and print one line per finished or aborted release."""
    done: list[dict[str, str]] = ledger.reconcile()
    for item in done:
        print(
            f"ledger reconciliation: release {item['release_id']} {item['action']}: "
            f"{item['detail']}"
        )
    return done


def refuse_early(policy: Policy, purpose: str, recipient: str, destination: str) -> None:
    """The ledger's guards before any ledger file is opened
    (:func:`segments.privacy.jobs.refuse_early`)."""
    from segments.privacy.jobs import refuse_early as refuse

    refuse(policy, purpose, recipient, destination)


def track_ledger(ledger: Ledger) -> Ledger:
    """Remember ``ledger`` and its release count, so a failure can say if budget was spent."""
    OPENED_LEDGERS.append((ledger, len(ledger.entries())))
    return ledger


def budget_statement() -> str:
    """Whether the ledgers this command opened gained a charge since they were opened."""
    if not OPENED_LEDGERS:
        return "no privacy budget was spent"
    charged: list[str] = []
    for ledger, before in OPENED_LEDGERS:
        try:
            after = len(ledger.entries())
        except Exception:  # noqa: BLE001 - the ledger itself may be what failed
            return f"check `segments ledger` for ledger {ledger.path}: it could not be read"
        if after > before:
            charged.append(f"{after - before} release(s) charged to ledger {ledger.path}")
    if not charged:
        return "no privacy budget was spent"
    return "privacy budget WAS spent: " + "; ".join(charged) + " (see `segments ledger`)"
