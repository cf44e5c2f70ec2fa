"""Property: whatever the data, k and suppression limit, an anonymised table's smallest
equivalence class has at least k rows (counted independently of the search), and no more
rows are suppressed than the limit allows."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from segments.anonymity import PrivacyModel, anonymise
from segments.anonymity.hierarchies import (
    birth_year_hierarchy,
    customer_type_hierarchy,
    size_band_hierarchy,
)
from segments.exceptions import KAnonymityError

HIERARCHIES = {
    "birth_year": birth_year_hierarchy(),
    "customer_type": customer_type_hierarchy(),
    "size_band": size_band_hierarchy(),
}
ROW = st.fixed_dictionaries(
    {
        "birth_year": st.sampled_from(["1950", "1961", "1984", "1985", "1999", "2003", "n/a"]),
        "customer_type": st.sampled_from(["business", "sole_trader", "private"]),
        "size_band": st.sampled_from(["0", "1-9", "10-49", "50-249", "250+", "n/a"]),
    }
)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(ROW, min_size=1, max_size=60),
    k=st.integers(min_value=2, max_value=8),
    limit=st.sampled_from([0.0, 0.05, 0.2]),
)
def test_smallest_class_is_at_least_k(rows: list[dict[str, str]], k: int, limit: float) -> None:
    df = pl.DataFrame(rows)
    model = PrivacyModel(k=k, suppression_limit=limit)
    try:
        anon = anonymise(df, HIERARCHIES, model, seed=np.random.default_rng(0))
    except KAnonymityError:
        return  # refusing is always allowed; releasing a class smaller than k never is
    table = anon.table  # pandas, as the public API returns
    if len(table):
        sizes = table.groupby(list(HIERARCHIES)).size()
        assert sizes.min() >= k
    assert anon.suppressed <= model.max_suppressed(df.height)
    assert len(table) + anon.suppressed == df.height == anon.n_input_rows
