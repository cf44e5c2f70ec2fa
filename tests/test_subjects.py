"""Tests of segments.prepare.subjects (register extract, AK-5) and the prepare/subject commands."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from rawframes import AS_OF, cli_args, customer, raw_tables, read_json, sole_trader_pair, write_raw

from segments.cli.main import main
from segments.exceptions import PolicyError, WorkspaceError
from segments.prepare.pseudonym import KEY_ENV_VAR, PseudonymKey, pseudonymise
from segments.prepare.subjects import explain_segment, subject_export, write_subject_export
from segments.workspace import Workspace, write_json

KEY = PseudonymKey(b"the tests' own steward key, 32+ bytes", "steward key (test)")


@pytest.fixture(autouse=True)
def _no_steward_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)


def _steward_key(tmp_path: Path) -> Path:
    path = tmp_path / "steward.key"
    path.write_text("s" * 40)
    path.chmod(0o600)
    return path


def _workspace(tmp_path: Path, *, synthetic: bool = True) -> Workspace:
    cs = [*sole_trader_pair(1, 2, "197002021234"), customer(3)]
    orders = [(10, 1, AS_OF), (11, 2, AS_OF), (12, 3, AS_OF)]
    return write_raw(
        Workspace(tmp_path / "ws"), raw_tables(cs, orders, lines_per_order=2), synthetic=synthetic
    )


def test_extract_holds_every_account_and_order_of_the_person(tmp_path: Path) -> None:
    extract = subject_export(_workspace(tmp_path), 2, policy="allkontor")
    assert [a["customer_id"] for a in extract["accounts"]] == [1, 2]
    assert extract["accounts"][0]["personnummer"] == "197002021234"  # their own data
    assert [o["order_id"] for o in extract["orders"]] == [10, 11]
    assert [line["line_no"] for line in extract["orders"][0]["lines"]] == [1, 2]
    assert extract["orders"][0]["lines"][1]["amount_sek"] == 50.0
    assert "sole trader" in extract["linked_accounts_note"]
    assert extract["controller"]["org_number"] == "556268-6823"
    assert "segment" not in extract  # no segments yet
    json.dumps(extract)  # JSON-able


def test_extract_names_the_segment_and_how_it_was_derived(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    ws.segments.mkdir(parents=True)
    person = pseudonymise(KEY, "person", [1])[0]
    pl.DataFrame({"person_id": [person], "segment": ["paper"]}).write_parquet(
        ws.segments / "labels.parquet"
    )
    write_json(ws.segments / "metadata.json", {"source": "category_rule", "as_of": "2026-06-30"})
    extract = subject_export(ws, 2, key=KEY)  # hand-built raw: not proven synthetic
    assert extract["segment"]["segment"] == "paper"
    assert "largest share of your spending" in extract["segment"]["explanation"]
    other = subject_export(ws, 3, key=KEY)
    assert other["segment"]["segment"] is None
    assert "not in the current segmentation" in other["segment"]["explanation"]


def test_extract_lists_the_prepared_purposes_the_person_is_in(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    assert (
        main(
            [
                *cli_args("prepare", workspace=ws),
                "--purpose",
                "statistics",
                "--key-file",
                str(_steward_key(tmp_path)),
            ]
        )
        == 0
    )
    assert subject_export(ws, 1, key_file=_steward_key(tmp_path))["prepared_purposes"] == [
        "statistics"
    ]


def test_explanation_of_a_fitted_model() -> None:
    text = explain_segment(
        2, {"model": "KMeans", "fitted_on_private_data": True, "names": {"2": "large paper buyers"}}
    )
    assert "KMeans" in text and "large paper buyers" in text and "never released" in text


def test_unknown_customer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match=r"no customer 99"):
        subject_export(_workspace(tmp_path), 99)


def test_segment_lookup_on_real_data_needs_the_steward_key(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, synthetic=False)
    ws.segments.mkdir(parents=True)
    pl.DataFrame({"person_id": ["ab" * 16], "segment": ["x"]}).write_parquet(
        ws.segments / "labels.parquet"
    )
    with pytest.raises(PolicyError, match=r"no pseudonymisation key"):
        subject_export(ws, 1)


def test_write_to_file_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extract = {"accounts": [{"first_name": "Åsa"}]}
    write_subject_export(extract, tmp_path / "out.json")
    assert read_json(tmp_path / "out.json") == extract
    write_subject_export(extract)
    assert json.loads(capsys.readouterr().out) == extract


def test_cli_subject_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = _workspace(tmp_path)
    out = tmp_path / "extract.json"
    assert (
        main(
            [
                "subject",
                "export",
                "--workspace",
                str(ws.root),
                "--customer",
                "3",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert read_json(out)["accounts"][0]["customer_id"] == 3
    assert main(["subject", "export", "--workspace", str(ws.root), "--customer", "42"]) == 2
    assert "no customer 42" in capsys.readouterr().err


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = _workspace(tmp_path)
    args = cli_args("prepare", workspace=ws)
    # hand-built tables under a manifest saying "synthetic": not the generator's output, so
    # the public demo key is refused (r13 #2) in one line, and nothing is written
    assert main([*args, "--purpose", "segmentation"]) == 2
    err = capsys.readouterr().err
    assert "not proven synthetic" in err and "demo key is refused" in err
    assert "Traceback" not in err and not ws.prepared.exists()
    key = ["--key-file", str(_steward_key(tmp_path))]
    assert main([*args, "--purpose", "segmentation", *key]) == 0
    printed = capsys.readouterr().out
    assert "prepared 2 persons and 6 order lines" in printed
    assert "steward key (key file)" in printed
    assert main([*args, "--purpose", "surveys"]) == 2
    assert "'surveys' is not declared by policy 'alloffice'" in capsys.readouterr().err
    inside = ws.root / "key.txt"
    inside.write_text("k" * 40)
    assert main([*args, "--purpose", "segmentation", "--key-file", str(inside)]) == 2
    assert "never be kept beside the data" in capsys.readouterr().err
