"""The OpenDP names the product uses, imported from OpenDP's own modules, not its prelude.

``opendp.prelude`` also imports ``opendp.extras.sklearn``, and with it scikit-learn, SciPy
and pandas, which no release uses: in a month-closing's process that was ~150 MB resident
for the whole run and ~2.7 s of imports (polars, numpy and DuckDB loaded: 67 MB, then
228 MB with the prelude, 81 MB with the modules below; issue 21). The names are OpenDP's
own objects, the very ones the prelude re-exports, so no measurement, noise or privacy map
changes: ``import segments.privacy._opendp as dp`` reads as ``import opendp.prelude as dp``.
"""

from __future__ import annotations

from opendp import combinators as c
from opendp import measurements as m
from opendp import transformations as t
from opendp.accuracy import (
    discrete_gaussian_scale_to_accuracy,
    discrete_laplacian_scale_to_accuracy,
    gaussian_scale_to_accuracy,
    laplacian_scale_to_accuracy,
)
from opendp.context import Context, domain_of, loss_of, unit_of
from opendp.core import new_function
from opendp.domains import atom_domain, user_domain, vector_domain, with_margin
from opendp.extras import polars
from opendp.extras.polars import dp_len as len  # noqa: A004 (the prelude's name)
from opendp.measures import max_divergence, zero_concentrated_divergence
from opendp.metrics import absolute_distance, l1_distance, l2_distance, symmetric_distance
from opendp.mod import enable_features
from opendp.typing import i64

__all__ = [
    "Context",
    "absolute_distance",
    "atom_domain",
    "c",
    "discrete_gaussian_scale_to_accuracy",
    "discrete_laplacian_scale_to_accuracy",
    "domain_of",
    "enable_features",
    "gaussian_scale_to_accuracy",
    "i64",
    "l1_distance",
    "l2_distance",
    "laplacian_scale_to_accuracy",
    "len",
    "loss_of",
    "m",
    "max_divergence",
    "new_function",
    "polars",
    "symmetric_distance",
    "t",
    "unit_of",
    "user_domain",
    "vector_domain",
    "with_margin",
    "zero_concentrated_divergence",
]
