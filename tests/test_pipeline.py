"""The main job: budget planned inside every policy, steps per policy, the whole flow."""

from __future__ import annotations

import json
import time

import pytest

from segments.exceptions import WorkspaceError
from segments.pipeline import demo_steps, plan_budget, print_summary, run_demo
from segments.policy import POLICY_NAMES, Policy


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_the_plan_fits_every_policys_budget(name: str) -> None:
    policy = Policy.load(name)
    plan = plan_budget(policy)
    assert 0 < plan.total <= policy.privacy.budget_epsilon
    assert min(plan.overview, plan.profiles, plan.survey, plan.monthly) > 0


def test_a_budget_too_small_for_the_segmentation_is_refused() -> None:
    from dataclasses import replace

    policy = Policy.load("alloffice")
    poor = replace(policy, privacy=replace(policy.privacy, budget_epsilon=1.0))
    with pytest.raises(WorkspaceError, match="leaves nothing after the private segmentation"):
        plan_budget(poor)


def test_steps_follow_the_purposes_a_policy_declares(tmp_path) -> None:
    allcall = Policy.load("allcall")  # declares no segmentation purpose
    titles = [s.title for s in demo_steps(tmp_path, allcall, "2026-10-31", plan_budget(allcall))]
    assert not any(t.startswith("segment") for t in titles)
    assert "release segment overview (category_rule segments)" in titles
    office = Policy.load("alloffice")
    steps = demo_steps(tmp_path, office, "2026-10-31", plan_budget(office))
    assert [s.title for s in steps][-1] == "audit"
    assert all("--demo-ledger" in s.argv for s in steps if s.argv[0] in ("release", "kanon"))


def test_an_unknown_folder_is_never_emptied(tmp_path) -> None:
    (tmp_path / "thesis.docx").write_text("not a workspace")
    with pytest.raises(WorkspaceError, match="which a workspace does not"):
        run_demo(tmp_path, notebooks=False, echo=lambda _: None)
    assert (tmp_path / "thesis.docx").exists()


@pytest.mark.slow
def test_the_main_job_runs_end_to_end(tmp_path, capsys) -> None:
    ws = tmp_path / "ws"
    # the whole flow on 5,000 customers (make demo uses 50,000; the suite must stay fast);
    # at that size the accuracy plan refuses what it cannot release usefully, so override
    summary = run_demo(
        ws, "alloffice", notebooks=False, echo=lambda _: None, customers=5_000,
        override_accuracy=True,
    )  # fmt: skip
    assert print_summary(summary) == 0
    out = capsys.readouterr().out
    assert "0 fail" in out and "THROW-AWAY DEMO LEDGER" in out
    # an audit short of verified (where `segments audit` exits 3) leaves the job at 0, and
    # the summary says why
    status = json.loads((ws / "report" / "audit.json").read_text())["exit_status"]
    assert ("so the main job exits 0" in out) == (status == 3)
    # 5,000 customers cannot give ±10 %: the summary says which target is missed and why,
    # and that the refused releases went out only because of the override
    assert "accuracy     cannot meet monthly_category" in out
    assert "released anyway (--override-accuracy)" in out
    # next steps: the report, the ledger command that works for this workspace, the notebooks
    assert (ws / "report" / "audit.html").resolve().as_uri() in out
    assert f"segments ledger --workspace {ws} --policy alloffice" in out
    assert "jupyter lab" in out
    for made in (
        "report/audit.html",
        "forecasts/purchasing_export.csv",
        "releases/archive/monthly_category.parquet",
        "segments/private/labels.parquet",
    ):
        assert (ws / made).exists(), made


def test_notebooks_run_alongside_and_land_in_the_report_only_when_done(tmp_path, monkeypatch):
    """The main job executes the notebooks in the background; their copies stay out of the
    report (which the audit scans) until the job asks for them."""
    import nbformat

    from segments import pipeline
    from segments.workspace import Workspace

    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 6 * 7\nx")])
    nbformat.write(notebook, folder / "01-tiny.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", folder)
    ws = Workspace(tmp_path / "ws").create()
    _, finish = pipeline._notebooks_alongside(ws)
    assert not (ws.report / "notebooks").exists()
    assert finish() == ["01-tiny.ipynb"]
    executed = nbformat.read(ws.report / "notebooks" / "01-tiny.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["data"]["text/plain"] == "42"
    assert not (ws.root / "logs" / "notebooks").exists()
    # a failing notebook is reported with the process's last lines, nothing moved in
    broken = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")])
    nbformat.write(broken, folder / "02-broken.ipynb")
    _, finish = pipeline._notebooks_alongside(ws)
    with pytest.raises(WorkspaceError, match="executing the notebooks failed"):
        finish()


def test_the_notebooks_take_one_kernel_beside_the_job_and_two_after_it(tmp_path, monkeypatch):
    """Beside the main job (one busy core of two) the notebooks take the other core: a second
    kernel would make three busy processes and slow the job, the longer of the two. Once the
    job's steps end (it asks for the notebooks), the ones still to run take a second kernel."""
    import nbformat

    from segments import pipeline
    from segments.workspace import Workspace

    folder, times = tmp_path / "notebooks", tmp_path / "times.txt"
    folder.mkdir()
    for name, seconds in (("01-a", 2.0), ("02-b", 20.0), ("03-c", 1.0)):
        source = (
            "import time\n"
            f"with open({str(times)!r}, 'a') as fh: fh.write(f'{name} start {{time.time()}}\\n')\n"
            f"time.sleep({seconds})\n"
            f"with open({str(times)!r}, 'a') as fh: fh.write(f'{name} end {{time.time()}}\\n')"
        )
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
        nbformat.write(notebook, folder / f"{name}.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", folder)
    ws = Workspace(tmp_path / "ws").create()
    _, finish = pipeline._notebooks_alongside(ws)

    def seen() -> dict[str, float]:
        lines = times.read_text().split("\n") if times.exists() else []
        return {" ".join(line.split()[:2]): float(line.split()[2]) for line in lines if line}

    deadline = time.time() + 180
    while "02-b start" not in seen() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    before = seen()
    assert before["02-b start"] >= before["01-a end"], before  # one kernel beside the job
    assert "03-c start" not in before, before
    assert finish() == ["01-a.ipynb", "02-b.ipynb", "03-c.ipynb"]
    after = seen()
    assert after["03-c start"] < after["02-b end"], after  # a second kernel after the job
