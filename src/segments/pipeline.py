"""The main job: the whole story on the default data, through the library's stage functions.

:func:`run_demo` runs, in a fresh workspace and under one policy, the stages of the
``segments`` commands the README documents (each the library function behind the command,
logged as the command a user would type) — generate (a seeded dataset), prepare,
segment (exploratory and private), DP releases and the monthly archive, a k-anonymous
release, forecast and audit — then executes the notebooks into ``W/report/notebooks/`` and
prints a one-screen summary. Every release is charged to the workspace's throw-away demo
ledger (it says so), never to a controller's real ledger.

The privacy budget is planned before anything runs (:func:`plan_budget`): the releases of the
demo are sized from the policy's budget per period, so a policy with a smaller budget gets
smaller ε per release rather than a refusal half-way.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segments.anonymity.release import RELEASE_COLUMNS
from segments.exceptions import ReleaseRefusedError, WorkspaceError
from segments.policy import Policy
from segments.progress import progress
from segments.workspace import CARD, STAGES, Workspace, write_json

if TYPE_CHECKING:
    from segments.privacy.publishing import ReleaseContext

__all__ = ["BudgetPlan", "DemoSummary", "Step", "demo_steps", "plan_budget", "run_demo"]

#: Columns of the main job's k-anonymous segment table: what purchasing needs (region,
#: segment, spend band). With all eight customer columns at k = 10 every column but the
#: postcode ends up "*" (the segment included) and the policy's
#: privacy.max_fully_generalised_columns refuses it; with these three the segment is kept whole.
KANON_COLUMNS = RELEASE_COLUMNS
#: Months of the monthly purchasing series inside one budget period are each charged once.
_MONTHS_PER_PERIOD = 12
#: The main job's dataset: a retailer of this kind has tens of thousands of customers. It is
#: generated at run time (deterministic, seeded; a few seconds), never committed; the
#: committed 5,000-customer default dataset stays for the tests.
DEMO_CUSTOMERS = 50_000
#: ε of each of the two releases of the accuracy planner's scale probe.
PROBE_EPSILON = 0.02
NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass(frozen=True)
class BudgetPlan:
    """ε per release of the demo, fitted inside the policy's budget per period.

    The private segmentation takes the policy's own ``private_segments_epsilon``; of what
    remains, the monthly purchasing series gets half (spread over the twelve months of a
    period), the segment overview a quarter, the private-segment profiles and the survey
    statistics an eighth each. All of them fall in the same rolling period, so their sum is
    what the ledger compares with the budget; 5 % is held back for rounding.
    """

    budget: float
    segmentation: float
    overview: float
    profiles: float
    survey: float
    monthly: float
    probe: float = 0.0
    #: the survey table the accuracy plan chose (county × type, or the coarser per type)
    survey_spec: str = "survey_experience"

    @property
    def total(self) -> float:
        """Sum of the ε (under zCDP the ledger composes ρ, which is tighter than this sum)."""
        return (
            self.segmentation
            + self.probe
            + self.overview
            + self.profiles
            + self.survey
            + self.monthly * _MONTHS_PER_PERIOD
        )

    @classmethod
    def from_accuracy(cls, plan: Any, survey: float) -> BudgetPlan:
        """The ε of each release from an :class:`~segments.privacy.planner.AccuracyPlan`
        (``survey``: the survey's ε where the plan does not size it)."""
        fixed = dict(plan.fixed_epsilon)

        def spent(release: str) -> float:  # a release left out of the plan spends nothing
            return 0.0 if plan.releases[release].left_out else plan.epsilon(release)

        return cls(
            budget=plan.budget_epsilon,
            segmentation=fixed.get("private_segments", 0.0),
            probe=fixed.get("scale_probe", 0.0) + fixed.get("scale_probe_month", 0.0),
            overview=spent("segment_overview"),
            profiles=spent("category_mix"),
            survey=spent("survey") if "survey" in plan.releases else survey,
            monthly=spent("monthly_category"),
            survey_spec=(
                plan.releases["survey"].spec if "survey" in plan.releases else "survey_experience"
            ),
        )


def plan_budget(policy: Policy) -> BudgetPlan:
    """A first split of the policy's budget by fixed shares (before any data is seen).

    The main job replaces it by the accuracy plan (:func:`accuracy_plan`) once the scale
    probe has run; this split remains the fallback the steps are built with, and shows that
    a policy's budget leaves room after its private segmentation.

    Examples
    --------
    >>> plan = plan_budget(Policy.load("alloffice"))
    >>> plan.total <= plan.budget
    True
    """
    p = policy.privacy
    segmentation = p.private_segments_epsilon if "segmentation" in policy.purposes else 0.0
    usable = 0.95 * p.budget_epsilon - segmentation
    if usable <= 0:
        raise WorkspaceError(
            f"policy {policy.name!r}: budget_epsilon={p.budget_epsilon} per "
            f"{p.budget_period_months} months leaves nothing after the private segmentation "
            f"(ε={p.private_segments_epsilon}); raise the budget or lower "
            "private_segments_epsilon in the policy file"
        )
    return BudgetPlan(
        budget=p.budget_epsilon,
        segmentation=segmentation,
        overview=round(usable / 4, 4),
        profiles=round(usable / 8, 4),
        survey=round(usable / 8, 4),
        monthly=round(usable / 2 / _MONTHS_PER_PERIOD, 4),
    )


@dataclass(frozen=True)
class Step:
    """One stage of the main job: a library call, logged as the command a user would type.

    ``options`` are the call's parameters under the command line's option names (``True``
    is a bare switch), so the logged command and what runs are the same facts.
    """

    title: str
    command: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    findings: bool = False  # a failing check reports findings rather than a failure

    @property
    def argv(self) -> tuple[str, ...]:
        """The equivalent ``segments`` command line."""
        argv = list(self.command)
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is not None and value is not False:
                argv += [flag, str(value)]
        return tuple(argv)


def demo_steps(
    ws: Path, policy: Policy, as_of: str, plan: BudgetPlan, customers: int = DEMO_CUSTOMERS
) -> list[Step]:
    """The steps of the main job, in data-flow order, for the purposes ``policy`` declares.

    A policy without a segmentation purpose (AllCall) gets no segmentation steps, and its
    releases are keyed by the category rule (AL-2 style) instead of the private segments.
    Every charged step uses the workspace's throw-away demo ledger.
    """
    w = {"workspace": str(ws)}
    pol = {**w, "policy": policy.name}
    charged = {**pol, "demo_ledger": True, "as_of": as_of}
    segmenting = "segmentation" in policy.purposes
    keys = "private" if segmenting else "category_rule"
    survey_purpose = "surveys" if "surveys" in policy.purposes else "statistics"
    to_purchasing = {"purpose": "statistics", "recipient": "purchasing"}
    steps = [
        Step(
            f"generate ({customers:,} customers, seeded)",
            ("generate",),
            {**w, "customers": customers, "as_of": as_of},
        )
    ]
    steps += [
        Step(f"prepare ({purpose})", ("prepare",), {**pol, "purpose": purpose, "as_of": as_of})
        for purpose in ("segmentation", "statistics", "surveys", "microdata", "offers")
        if purpose in policy.purposes
    ]
    if segmenting:
        steps += [
            Step(
                "segment (exploratory, stays in the sandbox)",
                ("segment",),
                {**pol, "as_of": as_of},
            ),
            Step(
                "segment --private (DP k-means, charged)",
                ("segment",),
                {**charged, "private": True},
            ),
            Step(
                "target (offer list for the data steward, opt-outs excluded)",
                ("target",),
                {**w, "segment": "0"},
            ),
        ]
    steps += [
        Step(
            f"release segment overview ({keys} segments)",
            ("release",),
            {
                **charged,
                "spec": "segment_overview",
                "segments": keys,
                **to_purchasing,
                "epsilon": plan.overview,
            },
        ),
        Step(
            f"release category mix per segment ({keys} segments)",
            ("release",),
            {
                **charged,
                "spec": "category_mix",
                "segments": keys,
                **to_purchasing,
                "epsilon": plan.profiles,
            },
        ),
        Step(
            "release survey experience"
            + (" (national)" if plan.survey_spec == "survey_national" else ""),
            ("release",),
            {
                **charged,
                "spec": plan.survey_spec,
                "purpose": survey_purpose,
                "recipient": "analytics",
                "epsilon": plan.survey,
            },
        ),
        Step(
            "release backfill (monthly purchasing series)",
            ("release", "backfill"),
            {**charged, **to_purchasing, "epsilon": plan.monthly},
        ),
        Step(
            "kanon (k-anonymous segment table)",
            ("kanon",),
            {
                **charged,
                "purpose": "microdata",
                "recipient": "purchasing",
                "k": policy.privacy.min_k,
                "segments": "category_rule",
                # the columns purchasing needs: fewer columns keep the segment itself
                "columns": ",".join(KANON_COLUMNS),
                "seed": 7,
            },
        ),
        Step("forecast (from the archive only)", ("forecast",), {**w, "horizon": 6}),
        # a failing check of the audit is a finding the summary reports, not a failure
        Step("audit", ("audit",), {**pol, "dp_trials": 200}, findings=True),
    ]
    return steps


def _ledger(ws: Workspace, policy: Policy, options: Mapping[str, Any], log: list[str]) -> Any:
    """The ledger a step charges (the demo ledger when it says so), reconciled before use."""
    from segments.privacy.jobs import open_ledger

    ledger = open_ledger(
        ws,
        policy,
        kind="demo" if options.get("demo_ledger") else "controller",
        reconcile=False,
        # the frames a step reads (segment --private reads the segmentation purpose's)
        purpose=options.get("purpose", "segmentation"),
    )
    reconciled = ledger.reconcile()
    log += [
        f"ledger reconciliation: {r['release_id']} {r['action']}: {r['detail']}" for r in reconciled
    ]
    if ledger.label:
        log.append(ledger.label)
    return ledger


def _context(
    ws: Workspace, policy: Policy, options: Mapping[str, Any], log: list[str]
) -> ReleaseContext:
    """A step's release context: its purpose and recipient checked against the policy now,
    its ledger (:func:`_ledger`) opened only when the release first needs it."""
    from segments.privacy.publishing import ReleaseContext

    return ReleaseContext.open(
        lambda: _ledger(ws, policy, options, log),
        ws,
        policy,
        purpose=options["purpose"],
        recipient=options["recipient"],
    )


def _day(options: Mapping[str, Any]) -> dt.date:
    """The step's ``--as-of`` (every step that reads data as of a day names it)."""
    return dt.date.fromisoformat(options["as_of"])


def _run_library(step: Step, ws: Workspace, policy: Policy) -> list[str]:
    """Run ``step``'s library function; returns what it reports, for the log."""
    o = step.options
    log: list[str] = []
    command = step.command
    if command == ("generate",):
        from segments.synth.generate import generate

        made = generate(ws, customers=o["customers"], as_of=_day(o))
        log.append(f"wrote {made.path}: {made.manifest['row_counts']}")
    elif command == ("prepare",):
        from segments.prepare.frames import prepare

        report = prepare(ws, policy, o["purpose"], _day(o))
        log.append(f"prepared {report.output_counts} for purpose {report.purpose!r}")
    elif command == ("segment",) and o.get("private"):
        from segments.privacy.kmeans import fit_private_segments

        segmenting = {"purpose": "segmentation", "recipient": "analytics", **o}
        fitted = fit_private_segments(_context(ws, policy, segmenting, log), as_of=_day(o))
        log.append(f"private segments: release {fitted.release_id}, {fitted.metadata['segments']}")
    elif command == ("segment",):
        from segments.segmentation import segment

        result = segment(ws, policy, as_of=_day(o))
        log.append(f"k={result.metadata['k']}: {result.metadata['segments']}")
    elif command == ("target",):
        from segments.segmentation import target

        listed = target(ws, o["segment"])
        log.append(f"segment {listed.segment}: {listed.n_targeted} people written to {listed.path}")
    elif command == ("release",):
        from segments.privacy.jobs import release_spec

        released = release_spec(
            _context(ws, policy, o, log),
            o["spec"],
            as_of=_day(o),
            epsilon=o["epsilon"],
            segments=o.get("segments", "category_rule"),
        )
        log.append(f"released {released.release_id} -> {released.path}")
    elif command == ("release", "backfill"):
        from segments.privacy.archive import backfill
        from segments.privacy.jobs import release_params
        from segments.privacy.specs import get_spec

        months = backfill(
            _context(ws, policy, o, log),
            until=_day(o),
            params=release_params(ws, policy, o["purpose"]),
            spec=get_spec("monthly_category").with_epsilon(o["epsilon"]),
        )
        log += [f"released {month}: {rid}" for month, rid in months.released.items()]
        log += [f"skipped {month}: {why}" for month, why in months.skipped.items()]
    elif command == ("kanon",):
        from segments.anonymity.job import release_kanon

        kanon = release_kanon(
            _context(ws, policy, o, log),
            k=o["k"],
            columns=o["columns"].split(","),
            segments=o["segments"],
            as_of=_day(o),
            seed=o["seed"],
        )
        log.append(f"released {kanon.release_id}: levels {kanon.anonymised.levels}")
    elif command == ("forecast",):
        from segments.privacy.ledger import Ledger
        from segments.purchasing import forecast_purchasing

        # the limit the ledger recorded for the archive's releases (one owner: as `segments
        # forecast` reads it), and the archive's rows checked against the tables this
        # workspace's ledger published (an archive edited after the backfill is refused)
        book = Ledger.for_workspace(ws, policy.controller, policy=policy, create=False)
        forecast = forecast_purchasing(ws, o["horizon"], ledger=book)
        log.append(f"forecast {forecast.card['model']}: wrote {forecast.paths['export']}")
    elif command == ("audit",):
        from segments.audit.run import run_audit

        audit = run_audit(ws, policy, dp_trials=o["dp_trials"])
        log.append(
            "audit found failing checks"
            if not audit.passed
            else f"audit: no check fails, {audit.inconclusive} inconclusive"
        )
    else:  # pragma: no cover - demo_steps builds only the commands above
        raise WorkspaceError(f"main job: no library function for `segments {' '.join(command)}`")
    return log


@dataclass
class DemoSummary:
    """What the main job did: steps' timings, notebooks, report and budget and accuracy plans."""

    workspace: Path
    policy: str
    budget: BudgetPlan
    timings: dict[str, float] = field(default_factory=dict)
    notebooks: list[str] = field(default_factory=list)
    report: Path | None = None
    #: the accuracy plan's verdict (AccuracyPlan.statement): targets met, or which not and why
    accuracy: list[str] = field(default_factory=list)
    #: wall-clock seconds of the job (the notebooks overlap the steps, so timings overlap)
    wall_seconds: float = 0.0


def accuracy_plan(ws: Workspace, policy: Policy, as_of: str, override: bool = False) -> Any:
    """Run the charged scale probe on the prepared statistics frames, then plan by accuracy.

    The private segmentation keeps the policy's ε; the survey is planned like the others,
    its size from the probe's monthly buyers and the survey's public design
    (:func:`~segments.privacy.planner.survey_scale`); the probe's own ε is charged and
    counted. Without ``override`` a refused release is left out and its ε shared by the rest.
    """
    import datetime as dt

    from segments.privacy.ledger import Ledger
    from segments.privacy.planner import plan_by_accuracy, probe_scale, survey_scale
    from segments.privacy.publishing import ReleaseContext

    ledger = Ledger.for_workspace(ws, policy.controller, synthetic=True, policy=policy)
    segmenting = "segmentation" in policy.purposes
    k = int(policy.privacy.private_segments_k) if segmenting else 10
    context = ReleaseContext.open(
        ledger, ws, policy, purpose="statistics", recipient="purchasing", synthetic=True
    )
    scale, charged = probe_scale(
        context, as_of=dt.date.fromisoformat(as_of), segments=k, epsilon=PROBE_EPSILON
    )
    first = plan_budget(policy)
    fixed = {"private_segments": first.segmentation, **charged}
    return plan_by_accuracy(
        policy, survey_scale(scale, policy), fixed_epsilon=fixed, override=override
    )


def _charts(ws: Workspace) -> float:
    """The README's charts of DP outputs, from the main job's own releases (post-processing
    only): ``W/report/images/forecast-fan.png`` from its archive and
    ``W/report/images/dp-county-map.png`` from its segment overview (the customers per county
    it released at the planned ε), never from a notebook's release at another policy or ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    from segments.forecast import forecast_archive, load_archive
    from segments.plots import plot_county_map, plot_forecast_fans

    started = time.perf_counter()
    images = ws.report / "images"
    images.mkdir(parents=True, exist_ok=True)
    archive = load_archive(ws)
    forecast = forecast_archive(archive, horizon=6, model="auto", level=0.9)
    axes = plot_forecast_fans(archive, forecast, measure="units")
    figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
    # the figure lays itself out (constrained): a tight bounding box would lay it out twice
    figure.savefig(images / "forecast-fan.png", dpi=90)
    plt.close(figure)
    released = sorted(ws.root.glob("releases/segment_overview-*/customers_by_county.parquet"))
    if released:  # the policy's main job released a segment overview (one per run)
        card = json.loads((released[-1].parent / CARD).read_text(encoding="utf-8"))
        ax = plot_county_map(
            pl.read_parquet(released[-1]),
            "count",
            interval=("count_lower", "count_upper"),
            label="customers (released, ε-DP)",
        )
        loss = card["privacy_loss"]
        ax.set_title(
            "Customers per county with 95 % intervals\n(the main job's segment overview, "
            f"ε {float(loss['epsilon']):.3g} for the whole release)"
        )
        ax.figure.savefig(images / "dp-county-map.png", dpi=90, bbox_inches="tight")
        plt.close(ax.figure)
    return time.perf_counter() - started


def _run_step(step: Step, ws: Workspace, policy: Policy, log: Path) -> float:
    started = time.perf_counter()
    try:
        reported = _run_library(step, ws, policy)
    except Exception as exc:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"$ segments {' '.join(step.argv)}\nerror: {exc}\n\n")
        raise WorkspaceError(
            f"main job stopped at step '{step.title}': {' '.join(str(exc).split())} — the "
            f"command was `segments {' '.join(step.argv)}`; see {log}"
        ) from exc
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ segments {' '.join(step.argv)}\n" + "".join(f"{r}\n" for r in reported) + "\n")
    return time.perf_counter() - started


def _execute_notebook(path: Path, out: Path) -> str:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    ).execute()
    nbformat.write(nb, out / path.name)
    return path.name


def execute_notebooks(
    out: Path,
    notebooks: Sequence[Path] | None = None,
    *,
    show_progress: bool = True,
    kernels: int = 2,
    more_kernels_when: Path | None = None,
) -> list[str]:
    """Execute the notebooks (each builds its own workspace under data/workspace/),
    ``kernels`` at a time, and save the executed copies in ``out`` — the committed notebooks
    are not modified. With ``more_kernels_when``, one kernel until that file exists, then
    ``kernels`` (no progress bar)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]-*.ipynb")) if notebooks is None else notebooks
    out.mkdir(parents=True, exist_ok=True)
    if more_kernels_when is not None:
        return _execute_in_turn(paths, out, kernels, more_kernels_when)
    # each kernel is its own process: threads only wait on them
    with ThreadPoolExecutor(max_workers=kernels) as pool:
        done = pool.map(lambda p: _execute_notebook(p, out), paths)
        if not show_progress:
            return list(done)
        return list(progress(done, total=len(paths), desc="notebooks", unit="notebook"))


def _execute_in_turn(paths: Sequence[Path], out: Path, kernels: int, signal: Path) -> list[str]:
    """Execute ``paths`` on one kernel, and on ``kernels`` once the file ``signal`` exists
    (the main job's own steps have ended and left both cores to the notebooks)."""
    import queue
    import threading

    todo: queue.SimpleQueue[Path] = queue.SimpleQueue()
    for path in paths:
        todo.put(path)
    names: dict[Path, str] = {}
    failures: list[BaseException] = []

    def kernel(waits: bool) -> None:
        while waits and not signal.exists() and not todo.empty():
            time.sleep(0.2)
        while not failures:
            try:
                path = todo.get_nowait()
            except queue.Empty:
                return
            try:
                names[path] = _execute_notebook(path, out)
            except BaseException as exc:  # raised below, once every kernel has stopped
                failures.append(exc)

    # each kernel is its own process: threads only wait on them
    threads = [threading.Thread(target=kernel, args=(n > 0,)) for n in range(max(kernels, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [names[path] for path in paths]


def _notebooks_alongside(ws: Workspace) -> tuple[Any, Callable[[], list[str]]]:
    """Start executing the notebooks in a background process (they read the committed dataset
    and build their own workspaces, never the main job's), one kernel at a time, so they use
    the core the mostly single-threaded main job leaves idle: two kernels beside the job made
    three busy processes on two cores and slowed the job, which is the longer of the two (at
    50,000 customers the job's process took 158 s of CPU, all ten notebooks 126 s together,
    measured under load on 2026-12-06). The executed copies are staged under
    ``W/logs/`` and moved into ``W/report/notebooks/`` only when asked for, after the audit:
    the audit never scans a half-written notebook (as before, it scans the committed ones).
    Once the job's own steps end (the returned function is called), the notebooks still to
    run take a second kernel: both cores are theirs then (the job waited 58 s on one kernel,
    measured on 2026-12-06).

    A process, not a thread: CPython 3.11's parser keeps a process-wide recursion counter
    that imports compiled in two threads at once corrupt.

    Returns the process and a function that waits for it and moves the notebooks in (it
    raises :class:`WorkspaceError` with the process's last lines when a notebook failed).
    """
    import subprocess

    staging = ws.root / "logs" / "notebooks"
    staging.parent.mkdir(parents=True, exist_ok=True)
    output = ws.root / "logs" / "notebooks.log"
    code = (
        "import sys; from pathlib import Path; from segments.pipeline import execute_notebooks; "
        "paths = sorted(Path(sys.argv[2]).glob('[0-9][0-9]-*.ipynb')); "
        "print('\\n'.join(execute_notebooks(Path(sys.argv[1]), paths, show_progress=False, "
        "kernels=2, more_kernels_when=Path(sys.argv[3]))))"
    )
    signal = ws.root / "logs" / "notebooks.job-done"
    signal.unlink(missing_ok=True)
    names = ws.root / "logs" / "notebooks.done"
    with output.open("w", encoding="utf-8") as log, names.open("w", encoding="utf-8") as done:
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(staging), str(NOTEBOOKS_DIR), str(signal)],
            stdout=done,
            stderr=log,
            text=True,
        )

    def finish() -> list[str]:
        signal.touch()  # the job's steps are done: the rest may take both cores
        process.wait()
        if process.returncode != 0:
            tail = output.read_text(encoding="utf-8").strip().splitlines()[-3:]
            raise WorkspaceError(
                f"executing the notebooks failed (exit {process.returncode}): "
                + " / ".join(tail)
                + f"; the whole log is {output}"
            )
        target = ws.report / "notebooks"
        if target.exists():
            shutil.rmtree(target)
        ws.report.mkdir(parents=True, exist_ok=True)
        staging.replace(target)
        return [line for line in names.read_text(encoding="utf-8").splitlines() if line]

    return process, finish


def _fresh(ws: Workspace) -> None:
    """Start from an empty workspace; refuse to delete a folder that is not one."""
    if ws.root.exists() and any(ws.root.iterdir()):
        known = set(STAGES) | {"ledger", "logs", "notebooks"}
        strangers = sorted(p.name for p in ws.root.iterdir() if p.name not in known)
        if strangers:
            raise WorkspaceError(
                f"{ws.root} holds {strangers[:3]}, which a workspace does not; choose another "
                "--workspace (the main job starts from an empty one)"
            )
        shutil.rmtree(ws.root)
    ws.create()


def run_demo(
    workspace: str | Path,
    policy: str = "alloffice",
    *,
    notebooks: bool = True,
    echo: Callable[[str], Any] = print,
    override_accuracy: bool = False,
    customers: int = DEMO_CUSTOMERS,
) -> DemoSummary:
    """Run the whole flow on a seeded 50,000-customer dataset in a fresh workspace.

    Parameters
    ----------
    workspace : path
    policy : str
    notebooks : bool
        Execute the notebooks into ``W/report/notebooks/``.
    echo : callable
    override_accuracy : bool
        Release even what the accuracy plan refuses (expected error above the policy's
        ``max_relative_error``); by default such a release is skipped and said so.
    customers : int
        Size of the generated dataset (the tests run the whole flow on 5,000).
    """
    from segments.synth import DEFAULT_DATASET

    ws = Workspace(workspace)
    pol = Policy.load(policy)
    plan = plan_budget(pol)
    _fresh(ws)
    logs = ws.root / "logs"
    logs.mkdir()
    log = logs / "main_job.log"
    as_of = DEFAULT_DATASET.as_of.isoformat()
    summary = DemoSummary(ws.root, pol.name, plan)
    echo(f"segments main job — policy {pol.name} ({pol.controller}), workspace {ws.root}")
    echo(
        f"privacy budget {plan.budget} ε per {pol.privacy.budget_period_months} months "
        f"(throw-away demo ledger in {ws.ledger_folder})"
    )
    started_job = time.perf_counter()
    # the notebooks run alongside the main job (make demo: 82 s after it, issue 14 item 4)
    background, notebooks_done = _notebooks_alongside(ws) if notebooks else (None, None)
    try:
        return _main_job(
            ws, pol, plan, summary, as_of, log, customers, override_accuracy, echo, started_job,
            notebooks_done,
        )  # fmt: skip
    finally:
        if background is not None and background.poll() is None:  # the job failed
            background.terminate()
            background.wait()


def _main_job(
    ws: Workspace,
    pol: Policy,
    plan: BudgetPlan,
    summary: DemoSummary,
    as_of: str,
    log: Path,
    customers: int,
    override_accuracy: bool,
    echo: Callable[[str], Any],
    started_job: float,
    notebooks_done: Callable[[], list[str]] | None,
) -> DemoSummary:
    """The main job's steps after the workspace is fresh (see :func:`run_demo`)."""
    steps = demo_steps(ws.root, pol, as_of, plan, customers)
    first_release = next(i for i, s in enumerate(steps) if s.argv[0] == "release")
    bar = progress(total=len(steps), desc="main job", unit="step")

    def run(step: Step) -> None:  # one step, timed, on the progress bar and in the log
        bar.set_description_str(step.title)
        seconds = _run_step(step, ws, pol, log)
        summary.timings[step.title] = seconds
        with bar.external_write_mode():
            echo(f"  {seconds:6.1f} s  {step.title}")
        bar.update()

    for step in steps[:first_release]:
        run(step)
    # plan by accuracy: a charged scale probe, then ε per release to meet the targets
    started = time.perf_counter()
    accuracy = accuracy_plan(ws, pol, as_of, override=override_accuracy)
    summary.budget = plan = BudgetPlan.from_accuracy(accuracy, survey=plan.survey)
    summary.timings["accuracy plan (scale probe, charged)"] = time.perf_counter() - started
    summary.accuracy = accuracy.statement(override=override_accuracy)
    write_json(ws.report / "accuracy_plan.json", accuracy.to_dict())
    with bar.external_write_mode():
        for line in accuracy.describe().splitlines():
            echo(f"  {line}")
    released = {
        "segment_overview": "segment overview",
        "category_mix": "category mix",
        "survey": "survey experience",
    }
    skip = set()
    for name in accuracy.releases:
        try:
            accuracy.check(name, override=override_accuracy)
        except ReleaseRefusedError as refused:  # reported; the release is left out
            with bar.external_write_mode():
                echo(f"  skipped: {refused}")
            skip.add(released.get(name, name))
    for step in demo_steps(ws.root, pol, as_of, plan, customers)[first_release:]:
        if any(part in step.title for part in skip):
            bar.update()
            continue
        run(step)
    bar.close()
    summary.timings["charts"] = _charts(ws)
    if notebooks_done is not None:
        started = time.perf_counter()
        summary.notebooks = notebooks_done()
        # only the wait after the main job: the notebooks ran alongside it
        summary.timings["notebooks (waited for after the main job)"] = time.perf_counter() - started
        echo(
            f"  {summary.timings['notebooks (waited for after the main job)']:6.1f} s  "
            f"notebooks ({len(summary.notebooks)}, run alongside the main job; this is the "
            "wait after it)"
        )
    summary.wall_seconds = time.perf_counter() - started_job
    summary.report = ws.report / "audit.html"
    write_json(
        ws.report / "main_job.json",
        {
            "policy": pol.name,
            "customers": customers,
            "timings": summary.timings,
            "wall_seconds": summary.wall_seconds,
            "budget": plan.__dict__,
            "accuracy_plan": accuracy.to_dict(),
        },
    )
    return summary


if __name__ == "__main__":  # pragma: no cover
    run_demo(sys.argv[1] if len(sys.argv) > 1 else "data/workspace")


def print_summary(summary: DemoSummary, echo: Callable[[str], Any] = print) -> int:
    """One screen: what ran, what was released, what it cost, what the audit found, and what
    to do next (open the report, show the ledger, open the notebooks).

    The audit's verdict is read from ``W/report/audit.json``, the structured results the audit
    wrote. Returns the exit code: 1 when the audit found a failing check, else 0 — also when
    some of its checks are inconclusive or a clause is not verified (where `segments audit`
    exits 3): the demo's audit runs 200 trials at the releases' small ε, which cannot refute
    every claim, and the summary says so rather than failing the job.
    """
    from segments.audit.render import load_audit_json
    from segments.privacy.ledger import Ledger

    ws = Workspace(summary.workspace)
    pol = Policy.load(summary.policy)
    ledger = Ledger.for_workspace(ws, pol.controller, policy=pol, create=False)  # reads only
    entries = ledger.entries()
    kinds = {k: sum(e.request.kind == k for e in entries) for k in ("dp", "kanon")}
    verdict = "no audit report"
    failed = False
    short_of_verified = ""
    if (ws.report / "audit.json").exists():
        audit = load_audit_json(ws.report)
        verdict = audit["banner"]
        failed = not audit["passed"]
        if audit.get("exit_status") == 3:
            why = (
                [f"{audit['inconclusive']} checks are inconclusive"]
                if audit.get("inconclusive")
                else []
            )
            if audit.get("unverified_clauses"):
                why.append(f"{', '.join(audit['unverified_clauses'])} not fully verified")
            short_of_verified = "; ".join(why)
    as_of = max((e.request.as_of for e in entries), default=None)
    balance = ledger.balance("customers", as_of) if as_of else None
    echo("")
    seconds = summary.wall_seconds or sum(summary.timings.values())
    echo(f"main job finished in {seconds:.0f} s — {summary.workspace}")
    echo(f"  releases     {kinds['dp']} differentially private, {kinds['kanon']} k-anonymous")
    if balance is not None:
        echo(f"  budget       {_balance_line(balance)}")
    echo(f"  ledger       {ledger.label}")
    for i, line in enumerate(summary.accuracy):
        echo(f"  {'accuracy' if i == 0 else '':<12} {line}")
    echo(f"  forecast     {ws.forecasts / 'purchasing_export.csv'}")
    echo(f"  audit        {verdict}")
    if short_of_verified and not failed:
        echo(
            f"{'':<15}no check fails, so the main job exits 0; {short_of_verified} (a test "
            "that could not have refuted a violation at the demo's trials is inconclusive), "
            "for which `segments audit` exits 3"
        )
    echo(f"  report       {ws.report / 'audit.html'}")
    if summary.notebooks:
        echo(f"  notebooks    {len(summary.notebooks)} executed into {ws.report / 'notebooks'}")
    for line in next_steps(ws, pol):
        echo(line)
    return 1 if failed else 0


def next_steps(ws: Workspace, policy: Policy) -> list[str]:
    """What to do after the main job: the report, the ledger command that works for this
    workspace's throw-away ledger, and the notebooks."""
    report = (ws.report / "audit.html").resolve()
    return [
        "",
        "next steps",
        f"  open the reviewer's report   {report.as_uri()}",
        f"  show the ledger              segments ledger --workspace {ws.root} "
        f"--policy {policy.name}",
        f"  explore the notebooks        jupyter lab {NOTEBOOKS_DIR}",
    ]


def _balance_line(balance: Any) -> str:
    return (
        f"{balance.period_total.describe()} spent in the rolling "
        f"{balance.budget_period_months}-month period (budget ε {balance.budget_epsilon:g}, "
        f"{balance.remaining_epsilon:.3g} left); peak period {balance.peak_period_total.describe()}"
    )
