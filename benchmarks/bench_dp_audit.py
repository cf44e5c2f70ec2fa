"""Empirical lower bounds on ε for the person-level releases (issue 13 items 2, 3 and 11).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_dp_audit.py [--trials 20000] \
        [--policy alloffice] [--output benchmarks/results/bench_dp_audit.json]

Neighbouring datasets differ by one PERSON in the raw data (a sole trader with two accounts,
the heaviest buyer), run through the real prepare; the survey neighbour is a person giving
every response the public rule allows, all at the top score in one cell. Each release's
resolved OpenDP measurement runs ``trials`` times on each side; the Clopper-Pearson bound
(95 %, selection and test halves) must be at or below the claimed ε. The baseline, in the
same command, is the survey release measured per response (before the fix): it must be
refuted. Each row also states the smallest violation the test detects with 95 % probability
at these trials.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from segments.audit.dp_audit import detectable_violation
from segments.audit.mechanisms import (
    audit_cases,
    audit_private_model_source,
    person_release_cases,
    raw_person_neighbours,
    survey_person_case,
)
from segments.policy import Policy
from segments.privacy.specs import SPECS, SegmentSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--policy", default="alloffice")
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--only", default="", help="run only the releases whose name contains this text"
    )
    args = parser.parse_args()
    policy = Policy.load(args.policy)
    seed = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        everyone = {n.label: n for n in raw_person_neighbours(policy, folder / "raw")}
        sole = [everyone["a sole trader with two accounts"]]
        heaviest = [everyone["the heaviest buyer"]]
        county = SPECS["customers_by_county_segment"]
        private = audit_private_model_source(policy, folder, seed=seed)
        # one person per release keeps the run near 20 minutes on the shared 2-core machine
        cases = person_release_cases(
            policy,
            sole,
            folder / "county",
            [("county (category rule)", county, SegmentSource.category_rule())],
        ) + person_release_cases(
            policy,
            heaviest,
            folder / "private",
            [("county (private-segment keyed)", county, private)],
        )
        import datetime as dt

        cases += [
            survey_person_case(
                policy, folder, epsilon=0.5, survey_month=dt.date(2026, 1, 1), seed=seed
            ),
            survey_person_case(
                policy, folder, epsilon=0.5, survey_month=dt.date(2026, 1, 1), seed=seed,
                broken=True,
            ),
            survey_person_case(policy, folder, epsilon=0.5, survey_month=None, seed=seed),
            survey_person_case(
                policy, folder, epsilon=0.5, survey_month=None, seed=seed, broken=True
            ),
        ]  # fmt: skip
        cases = [c for c in cases if args.only in c.name]
        rows = []
        start = time.perf_counter()
        for case in cases:
            t0 = time.perf_counter()
            (result,) = audit_cases([case], trials=args.trials)
            rows.append(
                {
                    "release": result.name,
                    "claimed_epsilon": round(result.claimed_epsilon, 4),
                    "empirical_lower_bound": round(result.epsilon_lower_bound, 4),
                    "at_or_below_claim": result.passed,
                    "detects_factor_95": detectable_violation(args.trials, result.claimed_epsilon),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    summary = {
        "policy": args.policy,
        "trials_per_side": args.trials,
        "confidence": 0.95,
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
