"""Can the empirical DP audit refute a release that spends twice its claim? (issue 17, r17 #3)

    PYTHONPATH=src python benchmarks/bench_dp_audit_2x.py --trials 20000 [--pilot 1000]

The query is the session's filtered, grouped query of tests/test_session.py (customers of
the removed person's own type and industry, count and spend clipped at 50,000 SEK per
county); neighbours differ by one PERSON through the real prepare (a sole trader's two
accounts, the heaviest buyer; ``raw_person_neighbours``). Cases:

* **honest**: released at ε 1, claimed ε 1 (each person);
* **twice its claim**: released at ε 2, claimed ε 1 (the heaviest buyer);
* **1.5 x its claim**: released at ε 1.5, claimed ε 1 (the heaviest buyer).

Each case's mechanism runs ``--trials`` times per dataset, once; both statistics are computed
on the same runs, so the baseline is in the same command:

* **baseline, one number**: the spend in the person's cell (the audit's earlier statistic);
* **likelihood ratio**: of the person's whole cell, count and spend
  (``with_likelihood_ratio``; its Laplace fit on ``--pilot`` separate runs per dataset).

Each lower bound is at the audit's family confidence (95 % over the cases, Bonferroni).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_result

from segments.audit.dp_audit import epsilon_lower_bound, family_confidence
from segments.audit.mechanisms import (
    MechanismCase,
    person_release_cases,
    raw_person_neighbours,
    with_likelihood_ratio,
)
from segments.policy import Policy
from segments.privacy.specs import ReleaseSpec
from segments.session import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from release_helpers import person_cell_query  # noqa: E402  (the query test_session audits)

RESULTS = Path(__file__).parent / "results" / "bench_dp_audit_2x.json"


def cases(folder: Path) -> list[tuple[str, MechanismCase]]:
    """(label, case) for the honest and under-claimed releases."""
    policy = Policy.load("alloffice")
    neighbours = raw_person_neighbours(policy, folder / "raw")
    session = Session(folder / "none", policy, "statistics", "purchasing")
    out = []
    for i, person in enumerate(neighbours):
        query = person_cell_query(session, person)
        releases = [("honest", 1.0)]
        if person.label == "the heaviest buyer":
            releases += [("twice its claim", 2.0), ("1.5 x its claim", 1.5)]
        for label, true_epsilon in releases:
            spec = ReleaseSpec("audit", ("q",), true_epsilon, definitions=(query,))
            (case,) = person_release_cases(
                policy, [person], folder / f"{label}-{i}", [(label, spec, None)]
            )
            case.claimed_epsilon = 1.0
            out.append((f"{label} (true ε {true_epsilon:g}): {case.name}", case))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--pilot", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict = {
        "args": vars(args) | {"out": str(args.out)},
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_audit2x_") as tmp:
        labelled = cases(Path(tmp))
        confidence = family_confidence(0.95, len(labelled))
        for label, case in labelled:
            ratio_case = with_likelihood_ratio(case, args.pilot)  # pilot runs: not audited
            runs = {}
            for side, data in (("d", case.dataset), ("d_prime", case.neighbour)):
                answers = [case.mechanism(data) for _ in range(args.trials)]
                runs[side] = (
                    np.array([case.statistic(a) for a in answers]),
                    np.array([ratio_case.statistic(a) for a in answers]),
                )
            one, _, _ = epsilon_lower_bound(runs["d"][0], runs["d_prime"][0], confidence=confidence)
            lr, _, _ = epsilon_lower_bound(runs["d"][1], runs["d_prime"][1], confidence=confidence)
            row = {
                "case": label,
                "claimed_epsilon": case.claimed_epsilon,
                "lower_bound_one_number": round(one, 4),
                "lower_bound_likelihood_ratio": round(lr, 4),
                "refuted_one_number": one > case.claimed_epsilon,
                "refuted_likelihood_ratio": lr > case.claimed_epsilon,
            }
            print(row, flush=True)
            report["cases"].append(row)
    report["confidence_each"] = confidence
    report["total_s"] = round(time.perf_counter() - started, 1)
    add_result(args.out, f"trials-{args.trials}", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
