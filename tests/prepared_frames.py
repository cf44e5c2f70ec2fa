"""Small, seeded frames shaped like the prepared frames (docs/architecture.md), for tests.

Four planted archetypes with distinct category mixes, order frequencies and basket sizes,
so a segmentation test can check that they are recovered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl

from segments.geography import municipalities_pl
from segments.schema import CHANNELS, PRODUCT_CATEGORIES, SIZE_BANDS

AS_OF = dt.date(2026, 6, 30)
# name: (customer type, mean orders, mean basket SEK, category weights, channel weights)
ARCHETYPES = {
    "bulk_office": ("business", 18, 3000, {"paper": 5, "toner_ink": 4, "filing_archiving": 1}),
    "pantry": ("business", 10, 1200, {"coffee_pantry": 6, "cleaning_hygiene": 4}),
    "home_office": ("private", 3, 400, {"writing": 4, "it_accessories": 4, "paper": 1}),
    "furnishing": ("business", 2, 9000, {"furniture": 7, "desk_accessories": 3}),
}


def _hex(values: np.ndarray) -> list[str]:
    return [f"{v:016x}" for v in values]


def make_prepared(
    n_persons: int = 400, seed: int = 0, as_of: dt.date = AS_OF
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Prepared-shaped ``customers``, ``lines`` and the planted ``truth`` (person, archetype)."""
    rng = np.random.default_rng(seed)
    names = list(ARCHETYPES)
    archetype = rng.integers(0, len(names), n_persons)
    ids = _hex(rng.choice(2**40, size=n_persons, replace=False) + 2**44)
    munis = municipalities_pl()
    muni_idx = rng.integers(0, munis.height, n_persons)
    kinds = np.array([ARCHETYPES[names[a]][0] for a in archetype])
    customers = pl.DataFrame(
        {
            "person_id": ids,
            "customer_type": kinds,
            "size_band": [
                None if k == "private" else SIZE_BANDS[rng.integers(1, 5)] for k in kinds
            ],
            "municipality_code": munis["municipality_code"].gather(muni_idx),
            "county_code": munis["county_code"].gather(muni_idx),
            "marketing_opt_out": rng.random(n_persons) < 0.1,
            "profiling_eligible": rng.random(n_persons) < 0.9,
        }
    )
    cat_index = {c: i for i, c in enumerate(PRODUCT_CATEGORIES)}
    mixes = np.full((len(names), len(PRODUCT_CATEGORIES)), 0.1)
    for a, name in enumerate(names):
        for cat, weight in ARCHETYPES[name][3].items():
            mixes[a, cat_index[cat]] += weight
    mixes /= mixes.sum(axis=1, keepdims=True)
    n_orders = rng.poisson([ARCHETYPES[names[a]][1] for a in archetype]) + 1
    order_person = np.repeat(np.arange(n_persons), n_orders)
    n_lines = rng.integers(1, 5, order_person.size)
    line_order = np.repeat(np.arange(order_person.size), n_lines)
    line_person = order_person[line_order]
    line_arch = archetype[line_person]
    cum = mixes.cumsum(axis=1)[line_arch]
    category = (rng.random(line_person.size)[:, None] > cum).sum(axis=1)
    basket = np.array([ARCHETYPES[names[a]][2] for a in line_arch], dtype=float)
    amount = np.round(basket / n_lines[line_order] * rng.lognormal(0, 0.3, line_person.size), 2)
    order_date = [
        as_of - dt.timedelta(days=int(d)) for d in rng.integers(0, 400, order_person.size)
    ]
    channel = rng.choice(np.array(CHANNELS), order_person.size, p=[0.6, 0.25, 0.15])
    order_ids = _hex(rng.choice(2**40, size=order_person.size, replace=False) + 2**44)
    lines = pl.DataFrame(
        {
            "person_id": [ids[p] for p in line_person],
            "order_id": [order_ids[o] for o in line_order],
            "order_date": [order_date[o] for o in line_order],
            "channel": channel[line_order],
            "product_id": (category * 10 + 1).astype(np.int32),
            "category": np.array(PRODUCT_CATEGORIES)[category],
            "quantity": np.ones(line_person.size, dtype=np.int32),
            "amount_sek": amount,
        },
        schema_overrides={"order_date": pl.Date},
    )
    truth = pl.DataFrame({"person_id": ids, "archetype": [names[a] for a in archetype]})
    return customers, lines, truth


def write_policy_report(folder: Path, as_of: dt.date, purpose: str = "statistics") -> Path:
    """A ``policy_report.json`` for hand-made frames: the as-of they were "prepared" for
    (a monthly release refuses a month ending after it)."""
    from segments.prepare import PolicyReport
    from segments.workspace import write_json

    report = PolicyReport(
        policy="alloffice",
        controller="AllOffice Nordic AB",
        purpose=purpose,
        purpose_clause_ids=(),
        as_of=as_of,
        key_provenance="test frames",
        key_id="0" * 16,
        input_counts={},
        output_counts={},
        columns={},
    )
    write_json(Path(folder) / "policy_report.json", report.to_dict())
    # and prepare's signed record, which is what binds the as-of (the report is only a report)
    from segments.workspace import Workspace

    sign_prepared(Workspace(Path(folder).parent.parent), Path(folder).name, as_of)
    return Path(folder) / "policy_report.json"


def sign_prepared(workspace, purpose: str, as_of: dt.date, key_id: str = "0" * 16) -> None:
    """Prepare's signed provenance record for hand-made frames in ``W/prepared/<purpose>/``
    (bound to the workspace's raw files now), as ``segments prepare`` writes it.

    Only prepare's writer signs (through the private ``_sign_prepared``); the tests act as
    the in-process caller holding the per-user secret, the documented trust limit."""
    from segments.provenance import PROVENANCE_FILE, _files_under, _sign_prepared, raw_hashes
    from segments.workspace import sha256_file, write_json

    folder = workspace.prepared_dir(purpose)
    written = {name: sha256_file(path) for name, path in _files_under(folder).items()}
    record = _sign_prepared(
        raw_hashes(workspace),
        written,
        purpose=purpose,
        as_of=as_of,
        key_id=key_id,
        demo_key=False,
    )
    write_json(folder / PROVENANCE_FILE, record)


def sign_prepared_before_key_kind(workspace, purpose: str, as_of: dt.date) -> None:
    """A record as prepare signed it before it recorded the key kind (steward or demo on raw
    proven synthetic): validly signed, same fields, no ``key_kind`` (r13b finding 2)."""
    from segments.provenance import PROVENANCE_FILE, _sign
    from segments.workspace import write_json

    path = workspace.prepared_dir(purpose) / PROVENANCE_FILE
    sign_prepared(workspace, purpose, as_of)
    record = json.loads(path.read_text(encoding="utf-8"))
    record.pop("mac")
    record.pop("key_kind")
    write_json(path, _sign(record))


def synthetic_proof(workspace=None):
    """A signed "proven synthetic" verdict for hand-made test frames in ``workspace``, as
    :func:`segments.privacy.synthetic.prove_synthetic` signs one (a ledger takes no flag): it
    is about the workspace's raw files now (none: about an empty ``raw/``), so a ledger
    opened with it takes releases of that workspace only.

    Only that module signs verdicts; the tests act as the in-process caller holding the
    per-user secret, the documented trust limit."""
    from segments.privacy.synthetic import _verdict, raw_digest

    raw = raw_digest(workspace) if workspace is not None else ""
    return _verdict(True, "hand-made test frames", "tests", raw)


@contextlib.contextmanager
def verified_plan(prepared_in, spec, params, purpose: str = "statistics", **kw):
    """``plan_release`` over the prepared frames of workspace ``prepared_in``/``purpose``
    read through :func:`segments.provenance.verified_frames`, as the release jobs plan (a
    plan of other files is refused at ``execute``). Sign hand-made frames first
    (:func:`sign_prepared`)."""
    from segments.privacy.releases import plan_release
    from segments.provenance import verified_frames

    names = ("customers.parquet", "lines.parquet")
    with (
        verified_frames(prepared_in, purpose, names) as copies,
        plan_release(
            spec,
            params,
            customers=copies["customers.parquet"],
            lines=copies["lines.parquet"],
            origins=copies.origins,
            **kw,
        ) as plan,
    ):
        yield plan


def install_prepared(
    workspace,
    paths,
    purpose: str = "statistics",
    as_of: dt.date = AS_OF,
    *,
    report: bool = False,
) -> None:
    """Copy hand-made ``customers`` and ``lines`` frames (``paths``: name -> file) into
    ``W/prepared/<purpose>/`` and sign them as prepare does (:func:`sign_prepared`); with
    ``report``, prepare's ``policy_report.json`` too (:func:`write_policy_report`)."""
    folder = workspace.prepared_dir(purpose)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("customers", "lines"):
        (folder / f"{name}.parquet").write_bytes(Path(paths[name]).read_bytes())
    if report:
        write_policy_report(folder, as_of, purpose)  # signs as well
    else:
        sign_prepared(workspace, purpose, as_of)


def segmentation_workspace(root: Path, n_persons: int, *, signed: bool = True):
    """A workspace at ``root`` whose prepared segmentation frames are :func:`make_prepared`'s
    (seed 4), with a ``policy_report.json`` of their as-of and, if ``signed``, prepare's
    signed record (:func:`sign_prepared`)."""
    from segments.workspace import Workspace, write_json

    ws = Workspace(root)
    customers, lines, _ = make_prepared(n_persons, seed=4)
    folder = ws.prepared_dir("segmentation")
    folder.mkdir(parents=True)
    customers.write_parquet(folder / "customers.parquet")
    lines.write_parquet(folder / "lines.parquet")
    write_json(folder / "policy_report.json", {"as_of": AS_OF.isoformat()})
    if signed:
        sign_prepared(ws, "segmentation", AS_OF)
    return ws
