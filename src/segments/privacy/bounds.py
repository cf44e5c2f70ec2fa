"""Contribution bounds chosen privately: a DP quantile of per-person totals (OpenDP).

A clipping bound guessed an order of magnitude too high costs an order of magnitude in
noise; one computed from the data without noise leaks it. The middle way, used here and by
every release that bounds a person's total contribution, is OpenDP's private quantile
(``make_private_quantile``, the exponential mechanism over a public candidate list): the
bound is the ``alpha``-quantile of the per-person totals, its privacy loss is charged with
the release and stated on the card.

:func:`make_private_bound` builds the OpenDP measurement on a vector of per-person totals
(one value per person: symmetric distance 1 per person); :func:`private_bound` runs it
outside any ledger, for a caller that charges the loss itself (e.g. ingest's checks), and
:func:`bound_candidates` is the public grid of candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import segments.privacy._opendp as dp
from segments.exceptions import PolicyError
from segments.privacy.composition import DP_FAMILIES, DPFamily, privacy_measure, scale_for_loss

__all__ = [
    "BoundChoice",
    "bound_candidates",
    "make_private_bound",
    "private_bound",
    "quantile_scale",
]

dp.enable_features("contrib")


def bound_candidates(upper: float, *, lower: float = 1.0, per_doubling: int = 4) -> list[float]:
    """A public geometric grid of candidate bounds from ``lower`` to ``upper`` (both in).

    ``per_doubling`` candidates per factor of two: the chosen bound is at most
    ``2 ** (1 / per_doubling)`` (19 % for 4) above the true quantile among them.

    Examples
    --------
    >>> bound_candidates(16, per_doubling=1)
    [1.0, 2.0, 4.0, 8.0, 16.0]
    """
    if not (math.isfinite(upper) and upper > lower > 0):
        raise PolicyError(
            f"bound candidates: upper={upper!r} must be a finite number above lower={lower!r} > 0"
        )
    steps = math.ceil(per_doubling * math.log2(upper / lower))
    grid = [round(lower * 2.0 ** (i / per_doubling), 6) for i in range(steps)]
    return [*grid, float(upper)]


def _measure(family: str) -> Any:
    if family not in DP_FAMILIES:
        raise PolicyError(f"dp_family={family!r} is not a known family; use one of {DP_FAMILIES}")
    return privacy_measure(family)


def _quantile(candidates: Sequence[float], alpha: float, family: str, scale: float) -> Any:
    return dp.m.make_private_quantile(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        _measure(family),
        candidates=[float(c) for c in candidates],
        alpha=alpha,
        scale=scale,
    )


def quantile_measurement(
    candidates: Sequence[float], alpha: float, family: str, scale: float
) -> Any:
    """OpenDP's quantile measurement (the exponential mechanism over ``candidates``) at a given
    ``scale``: what :func:`make_private_bound` runs, rebuilt from recorded facts (the audit's
    composition check, :func:`segments.audit.mechanisms.recorded_composition`)."""
    return _quantile(candidates, alpha, family, scale)


def quantile_scale(candidates: Sequence[float], alpha: float, family: str, loss: float) -> float:
    """The exponential mechanism's scale whose OpenDP loss (ε, or ρ under zCDP) is ``loss``.

    OpenDP's loss is proportional to 1/scale (ε) or 1/scale² (ρ); measured at scale 1 and
    solved, then checked by the caller with ``measurement.map``.
    """
    if not (math.isfinite(loss) and loss > 0):
        raise PolicyError(f"private bound: loss={loss!r} must be a positive finite number")
    at_one = float(_quantile(candidates, alpha, family, 1.0).map(1))
    scale = scale_for_loss(family, at_one, loss)
    return scale * (1.0 + 1e-9)  # never above the planned loss through rounding


def make_private_bound(
    candidates: Sequence[float], alpha: float, loss: float, family: str = DPFamily.PURE.value
) -> Any:
    """OpenDP measurement: the ``alpha``-quantile of per-person totals among ``candidates``.

    Parameters
    ----------
    candidates : sequence of float
        Public, increasing candidate bounds (:func:`bound_candidates`).
    alpha : float
        The quantile in (0, 1), e.g. 0.98 (a public policy fact).
    loss : float
        ε (``family="pure"``) or ρ (``"zcdp"``) the measurement may spend.
    family : {'pure', 'zcdp'}

    Returns
    -------
    opendp.mod.Measurement
        On ``vector_domain(atom_domain(T=float))`` with symmetric distance: one value per
        person, so ``d_in = 1`` is one person. Its ``map(1)`` is at most ``loss``.
    """
    if not 0.0 < alpha < 1.0:
        raise PolicyError(f"private bound: alpha={alpha!r} must lie in (0, 1), e.g. 0.98")
    candidates = [float(c) for c in candidates]
    if len(candidates) < 2 or any(b <= a for a, b in zip(candidates, candidates[1:], strict=False)):
        raise PolicyError(
            "private bound: candidates must be at least two strictly increasing public values"
        )
    measurement = _quantile(
        candidates, alpha, family, quantile_scale(candidates, alpha, family, loss)
    )
    if float(measurement.map(1)) > loss * (1 + 1e-9):  # pragma: no cover - guard on OpenDP
        raise RuntimeError("private bound: OpenDP's loss exceeds the planned loss")
    return measurement


@dataclass(frozen=True)
class BoundChoice:
    """A privately chosen bound (``factor`` × the private quantile) and what it cost."""

    bound: float
    alpha: float
    loss: float
    family: str
    candidates: tuple[float, ...]
    factor: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """The chosen bound and its evidence (quantile, loss, candidates) as a JSON-able dict."""
        return {
            "bound": self.bound,
            "quantile": self.alpha,
            "factor": self.factor,
            "loss": self.loss,
            "loss_kind": "epsilon" if self.family == DPFamily.PURE else "rho",
            "candidates": [self.candidates[0], self.candidates[-1], len(self.candidates)],
            "mechanism": "OpenDP make_private_quantile (exponential mechanism)",
        }


def private_bound(
    totals: np.ndarray | Sequence[float],
    *,
    alpha: float,
    loss: float,
    family: str = DPFamily.PURE.value,
    upper: float | None = None,
    candidates: Sequence[float] | None = None,
) -> BoundChoice:
    """Run :func:`make_private_bound` on per-person totals; the caller charges ``loss``.

    Parameters
    ----------
    totals : array of float
        One non-negative total per person (the unit of privacy).
    alpha, loss, family
        As in :func:`make_private_bound`.
    upper : float, optional
        The public largest bound (default grid from 1 to ``upper``); or pass ``candidates``.

    Examples
    --------
    >>> totals = np.random.default_rng(0).exponential(30.0, 20_000)  # 90th pct: 69
    >>> choice = private_bound(totals, alpha=0.9, loss=1.0, upper=1_000)
    >>> 55 <= choice.bound <= 85
    True
    """
    if candidates is None:
        if upper is None:
            raise PolicyError("private bound: pass the public upper bound or candidates")
        candidates = bound_candidates(upper)
    measurement = make_private_bound(candidates, alpha, loss, family)
    values = np.asarray(totals, dtype=float)
    chosen = float(measurement([float(v) for v in values]))
    return BoundChoice(chosen, alpha, float(measurement.map(1)), family, tuple(candidates))
