"""Would shrinking the clip correction towards 0 by its own noise help? (issue 14, h14n)

The forecast lifts its level by the pooled clipped share ``r``, estimated with a standard
error ``sigma`` from the charged clip excess (segments.forecast, "The clip's bias"). With one
estimate ``r_hat ~ N(r, sigma**2)`` (a sum of many independent noises), compare the error of
the level correction, in units of ``sigma``, for a true share ``r`` = ratio x sigma:

- full: ``max(r_hat, 0)`` (what the forecast applies);
- none: no correction (error ``r``);
- positive-part James-Stein: ``max(1 - sigma**2 / r_hat**2, 0) r_hat``;
- plug-in MSE weight: ``r_hat**2 / (r_hat**2 + sigma**2) r_hat``;
- oracle weight ``r**2 / (r**2 + sigma**2)`` (knows ``r``: a lower bound, not an estimator).

Measured ratios on the backtests' archives: ~1.4 for Offix, ~2 for AllOffice at 50,000
customers (clipped share ~4 %, standard error 2.7-2.8 % and 2.1-2.2 %).

    python benchmarks/sim_clip_shrinkage.py  # seeded; its table: results/sim_clip_shrinkage.txt
"""

from __future__ import annotations

import numpy as np

RATIOS = (0.5, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0)


def main() -> None:
    rng = np.random.default_rng(20261206)
    print("r/sigma  RMSE/sigma: full  none  JS+   plug-in  (oracle weight)")
    for ratio in RATIOS:
        raw = rng.normal(ratio, 1.0, 400_000)
        full = np.maximum(raw, 0.0)
        js = np.where(raw > 0, np.maximum(1.0 - 1.0 / np.maximum(raw, 1e-12) ** 2, 0.0), 0.0) * full
        plug_in = full**2 / (full**2 + 1.0) * full
        rmse = {
            name: float(np.sqrt(np.mean((est - ratio) ** 2)))
            for name, est in (("full", full), ("none", 0.0 * full), ("js", js), ("plug", plug_in))
        }
        oracle = ratio / np.sqrt(ratio**2 + 1.0)
        print(
            f"{ratio:7.2f}  {rmse['full']:16.3f} {rmse['none']:5.3f} {rmse['js']:5.3f} "
            f"{rmse['plug']:8.3f}  ({oracle:.3f})"
        )


if __name__ == "__main__":
    main()
