"""One output type at the API boundary (issue 17): every public function, method, property or
field that returns a table returns pandas; polars stays inside (``_..._pl`` helpers)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import polars as pl
import pytest

#: The packages whose ``__all__`` is the public API.
PUBLIC_PACKAGES = (
    "segments",
    "segments.anonymity",
    "segments.prepare",
    "segments.privacy",
    "segments.synth",
)
#: Public modules besides those: every module ``segments`` re-exports from (its whole
#: ``__all__``, not only the re-exported names), and the modules an analyst imports by name.
#: The audit's check plumbing (``segments.audit.checks``: AuditContext) is not walked beyond
#: what ``segments`` exports: reviewers call ``run_audit``.
PUBLIC_MODULES = tuple(
    sorted(
        (set(__import__("segments")._EXPORTS) - {"segments.audit.checks"})
        | {"segments.geography", "segments.keys", "segments.months", "segments.session"}
    )
)
#: A polars table (or a container of them) named in an annotation.
POLARS_TABLE = re.compile(r"\b(pl|polars)\.(DataFrame|LazyFrame)\b")


def _annotation(value: Any) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _returns(owner: str, name: str, obj: Any) -> Iterator[tuple[str, str]]:
    """(qualified name, return annotation) of a callable, or of a class's public methods,
    properties and fields."""
    if inspect.isclass(obj):
        for attribute, value in vars(obj).items():
            if attribute.startswith("_") and attribute != "__call__":
                continue
            function = value.fget if isinstance(value, property) else value
            function = getattr(function, "func", function)  # functools.cached_property
            function = getattr(function, "__func__", function)  # class/static methods
            if inspect.isfunction(function):
                yield (
                    f"{name}.{attribute}",
                    _annotation(inspect.signature(function).return_annotation),
                )
        if dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                if not f.name.startswith("_"):
                    yield f"{name}.{f.name} (field)", _annotation(f.type)
    elif inspect.isfunction(obj):
        yield name, _annotation(inspect.signature(obj).return_annotation)


def _public_names(module: Any) -> list[str]:
    """A module's ``__all__``, or (a module without one) the names ``segments`` exports."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    import segments

    return list(segments._EXPORTS.get(module.__name__, ()))


def _public_returns() -> list[tuple[str, str]]:
    out = []
    for package in (*PUBLIC_PACKAGES, *PUBLIC_MODULES):
        module = importlib.import_module(package)
        for name in _public_names(module):
            if name.startswith("__"):
                continue
            out += [
                (f"{package}.{q}", a) for q, a in _returns(package, name, getattr(module, name))
            ]
    return out


def test_no_public_callable_or_field_returns_polars() -> None:
    returns = _public_returns()
    assert len(returns) > 200  # the walk found the API (not an empty list that always passes)
    polars = sorted(q for q, a in returns if POLARS_TABLE.search(a))
    assert polars == [], f"public names returning polars tables (return pandas): {polars}"


def test_the_walk_covers_every_public_module() -> None:
    walked = {q.split(".")[1] for q, _ in _public_returns() if q.count(".") >= 2}
    for module in ("geography", "keys", "session", "forecast", "plots", "features", "ingest"):
        assert module in walked, module
    # a module segments re-exports from without __all__ is walked by its exported names
    assert "segments.plots.plot_county_map" in {q for q, _ in _public_returns()}


def test_geography_tables_are_pandas_and_the_package_reads_polars() -> None:
    from segments import geography

    for public, internal, rows in (
        (geography.counties, geography.counties_pl, 21),
        (geography.municipalities, geography.municipalities_pl, 290),
        (geography.postcodes, geography.postcodes_pl, None),
    ):
        table = public()
        assert isinstance(table, pd.DataFrame) and isinstance(internal(), pl.DataFrame)
        assert rows is None or len(table) == rows
        assert list(table.columns) == internal().columns
    # the public copy is the caller's: editing it does not change what the package reads
    mine = geography.counties()
    mine.loc[0, "county_name_short"] = "edited"
    assert "edited" not in set(geography.counties_pl()["county_name_short"])


def test_the_walk_would_catch_a_polars_return() -> None:
    # the check itself can fail: a public function annotated with polars is found
    def leaky() -> pl.DataFrame:
        return pl.DataFrame()

    @dataclasses.dataclass
    class Leaky:
        table: pl.DataFrame

    found = [a for _, a in [*_returns("x", "leaky", leaky), *_returns("x", "Leaky", Leaky)]]
    assert sum(bool(POLARS_TABLE.search(a)) for a in found) == 2


def test_table_returning_functions_give_pandas_at_run_time(tmp_path) -> None:
    # the annotations are not the whole truth: run the common ones and look
    import numpy as np

    from segments import (
        PrivacyModel,
        anonymise,
        category_rule_labels,
        copy_default_dataset,
        customer_features,
        customer_hierarchies,
        customer_release_table,
        generalise,
        load_raw,
        mondrian,
        read_archive,
        rfm_features,
    )
    from segments.anonymity import birth_year_hierarchy, class_sizes
    from segments.privacy._frames import write_prepared_frames

    ws_root = tmp_path / "ws"
    copy_default_dataset(ws_root)
    assert isinstance(load_raw(ws_root, "customers"), pd.DataFrame)
    assert isinstance(read_archive(__import__("segments").Workspace(ws_root)), pd.DataFrame)

    paths = write_prepared_frames(tmp_path / "frames", 200, 2_000, seed=np.random.default_rng(1))
    customers = pl.read_parquet(paths["customers"])
    lines = pl.read_parquet(paths["lines"])
    as_of = lines["order_date"].max() + dt.timedelta(days=1)
    # pandas in (what the API hands out) works as polars in does
    for frames in ((lines, customers), (lines.to_pandas(), customers.to_pandas())):
        assert isinstance(customer_features(*frames, as_of=as_of), pd.DataFrame)
        assert isinstance(rfm_features(frames[0], as_of=as_of), pd.DataFrame)
        labels = category_rule_labels(frames[0])
        assert isinstance(labels, pd.DataFrame)
        table = customer_release_table(frames[1], frames[0], labels, ["customer_type"])
        assert isinstance(table, pd.DataFrame)
    hierarchies = customer_hierarchies(table)
    anon = anonymise(table, hierarchies, PrivacyModel(k=2), seed=np.random.default_rng(0))
    assert isinstance(anon.table, pd.DataFrame) and len(anon.table) == anon.rows
    assert isinstance(class_sizes(anon.table, ["customer_type"]), pd.DataFrame)
    years = pd.DataFrame({"birth_year": [1980, 1981, 1990, 1991]})
    by = {"birth_year": birth_year_hierarchy()}
    assert isinstance(generalise(years, by, {"birth_year": 1}), pd.DataFrame)
    assert isinstance(mondrian(years, by, PrivacyModel(k=2)), pd.DataFrame)


@pytest.mark.parametrize("name", ["accuracy", "tables"])
def test_release_plan_outputs_are_pandas(tmp_path, name) -> None:
    import numpy as np

    from segments import Policy
    from segments.privacy import SPECS, PrivacyParams, SegmentSource, plan_release
    from segments.privacy._frames import write_prepared_frames

    paths = write_prepared_frames(tmp_path, 300, 3_000, seed=np.random.default_rng(2))
    with plan_release(
        SPECS["customers_by_county_segment"],
        PrivacyParams.from_policy(Policy.load("alloffice"), "statistics"),
        customers=paths["customers"],
        lines=paths["lines"],
        segments=SegmentSource.category_rule(),
        as_of=dt.date(2026, 3, 1),
    ) as plan:
        if name == "accuracy":
            out: Any = {"accuracy": plan.accuracy, "summary": plan.queries[0].summary}
        else:  # noisy answers outside a ledger: a test helper, not the library's API
            from release_helpers import run_unaccounted

            out = plan.tables(run_unaccounted(plan))
    assert out and all(isinstance(t, pd.DataFrame) for t in out.values())
