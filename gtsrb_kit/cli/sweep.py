"""`gtsrb-kit sweep` (many models x many datasets, resumable, SLURM arrays) and `gtsrb-kit report`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from gtsrb_kit.cli._app import app, err_console, is_interactive, progress_bar
from gtsrb_kit.paths import RUNS_ENV, default_run_dir

RunDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--run-dir",
        help=f"Folder of the sweep (one sub-folder per run). Default: ${RUNS_ENV} or ./runs, then the plan's name.",
        show_default=False,
        file_okay=False,
    ),
]


def _echo(line: str) -> None:
    typer.echo(line)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _wide_console() -> Console:
    """A console that does not wrap tables at 80 columns when writing to a file or a pipe."""
    return Console(width=None if is_interactive() else 200, soft_wrap=False, highlight=False)


@app.command("sweep")
def sweep_command(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan file (.toml, .yaml or .json).",
                                              dir_okay=False)],
    run_dir: RunDirOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs and what would happen; change nothing.")] = False,
    count: Annotated[bool, typer.Option(
        "--count", help="Print the number of runs (array size) and exit; for job scripts.")] = False,
    task_id: Annotated[Optional[int], typer.Option(
        "--task-id", help="Run only the run at this index (0-based), e.g. $SLURM_ARRAY_TASK_ID.", min=0)] = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this run (repeatable).")] = None,
    prepare: Annotated[bool, typer.Option(
        "--prepare", help="Only cook the plan's missing datasets (do this once before submitting an array).")] = False,
    slurm: Annotated[bool, typer.Option(
        "--slurm", help="Write RUN_DIR/sweep.sbatch (a job array, one task per run) instead of running.")] = False,
    submit: Annotated[bool, typer.Option("--submit", help="With --slurm: also submit it with sbatch.")] = False,
    partition: Annotated[Optional[str], typer.Option("--partition", help="SLURM partition.")] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="SLURM account.")] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="SLURM time limit per task, e.g. 02:00:00.")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option("--cpus-per-task", help="SLURM CPUs per task.")] = None,
    gpus_per_task: Annotated[Optional[int], typer.Option("--gpus-per-task", help="SLURM GPUs per task.")] = None,
    mem: Annotated[Optional[str], typer.Option("--mem", help="SLURM memory per task, e.g. 16G.")] = None,
    max_parallel: Annotated[Optional[int], typer.Option(
        "--max-parallel", help="SLURM: at most this many array tasks at once.")] = None,
    setup: Annotated[Optional[list[str]], typer.Option(
        "--setup", help="SLURM: a shell line run before each task, e.g. 'module load cuda' (repeatable).")] = None,
    verbose: Annotated[Optional[int], typer.Option(
        "--verbose", help="Keras verbosity: 0 silent, 1 bar, 2 one line per epoch. Default: 0 on a terminal "
        "(a progress bar is shown), else 2.", min=0, max=2)] = None,
    stop_on_error: Annotated[bool, typer.Option("--stop-on-error", help="Stop at the first failed run.")] = False,
) -> None:
    """Train every combination of a plan's datasets, models and augmentations.

    Resumable: finished runs are skipped, interrupted ones resumed, failed ones retried.
    Exit code 0 when every selected run is done, 1 when a run failed, 2 for a bad plan.
    """
    from gtsrb_kit.plans import load_plan

    run_dir = run_dir if run_dir is not None else default_run_dir() / plan_file.stem
    plan = load_plan(plan_file, run_dir=run_dir)
    if count:
        _echo(str(len(plan.runs)))
    elif slurm:
        slurm_options = dict(partition=partition, account=account, time=time, cpus_per_task=cpus_per_task,
                             gpus_per_task=gpus_per_task, mem=mem, max_parallel=max_parallel, setup=setup or (),
                             verbose=2 if verbose is None else verbose)
        _write_slurm(plan, plan_file, run_dir, submit, slurm_options)
    elif prepare:
        _prepare(plan)
    elif dry_run:
        _list_dry_run(plan, run_dir, task_id, only)
    else:
        _run(plan, run_dir, task_id, only, verbose, stop_on_error)


def _write_slurm(plan: Any, plan_file: Path, run_dir: Path, submit: bool, options: dict[str, Any]) -> None:
    """Write (and with ``submit`` submit) the job array, after checking that its tasks can find their data."""
    from gtsrb_kit.errors import DataError
    from gtsrb_kit.slurm import submit as sbatch_submit
    from gtsrb_kit.slurm import write_slurm_script

    for d in plan.datasets:
        if d.recipe is not None and not d.path.is_file() and not Path(d.recipe["root"]).is_dir():
            raise DataError(f"{d.recipe['root']}: no raw GTSRB tree to cook {d.path.name} from; every array "
                            "task would fail: set cook.root in the plan (or run 'gtsrb-kit download')")
        if d.recipe is None and not d.path.is_file():
            raise DataError(f"{d.path}: dataset file not found; every array task would fail: cook it first "
                            "or list a recipe like {size=24, mode=\"L\"} in the plan")
    script = write_slurm_script(plan, run_dir, **options)
    _echo(f"wrote {script} ({_plural(len(plan.runs), 'array task')}, logs in {script.parent / 'logs'})")
    cook = [d for d in plan.datasets if d.recipe is not None and not d.path.is_file()]
    if cook:
        _echo(f"{len(cook)} dataset(s) will be cooked by the first task needing them; to cook them once "
              f"up front: gtsrb-kit sweep {plan_file} --run-dir {run_dir} --prepare")
    if submit:
        _echo(f"submitted job {sbatch_submit(script)}")
    else:
        _echo(f"submit with: sbatch {script}")


def _prepare(plan: Any) -> None:
    from gtsrb_kit.sweep import prepare_datasets

    with progress_bar(is_interactive()) as bar:
        paths = prepare_datasets(plan, progress=bar, log=_echo)
    for p in paths:
        _echo(f"ready: {p}")


def _list_dry_run(plan: Any, run_dir: Path, task_id: int | None, only: list[str] | None) -> None:
    from gtsrb_kit.sweep import run_sweep

    result = run_sweep(plan, run_dir, task_id=task_id, only=only, dry_run=True)
    _echo(f"plan {plan.name!r}: {_plural(len(plan.runs), 'run')} in {result.run_dir}")
    for o in result.outcomes:
        _echo(f"{o.index:>4}  {o.action:<13} {o.name}  [{o.status}]")
    for d in result.to_cook:
        _echo(f"      would cook  {d.path}")
    for d in result.missing:
        _echo(f"      MISSING     {d.path} (cook it first)")


def _run(plan: Any, run_dir: Path, task_id: int | None, only: list[str] | None, verbose: int | None,
         stop_on_error: bool) -> None:
    from gtsrb_kit.sweep import run_sweep

    # SLURM ends a task at its time limit with SIGTERM: stop like Ctrl-C (exit 130, "interrupted"),
    # the run keeps its last epoch's checkpoint and resumes when the task is submitted again.
    signal.signal(signal.SIGTERM, _interrupt)
    interactive = is_interactive()
    with progress_bar(interactive) as bar:
        result = run_sweep(
            plan, run_dir, task_id=task_id, only=only, progress=bar, log=_echo,
            verbose=(0 if interactive else 2) if verbose is None else verbose, keep_going=not stop_on_error,
        )
    counts: dict[str, int] = {}
    for o in result.outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in counts.items()) or "nothing to do"
    _echo(f"sweep {plan.name!r}: {summary}; report: {result.report_path}")
    if result.failed:
        for o in result.failed:
            err_console.print(f"failed: {o.name}: {o.error}", markup=False, highlight=False)
        raise typer.Exit(1)



def _percent(group: dict, key: str) -> str:
    """A seed group's ``key`` as ``mean ± std %``, ``-`` where no run has it (validation of refitted runs)."""
    from gtsrb_kit.report import mean_std

    text = mean_std(group[f"{key}_mean"], group[f"{key}_std"])
    return text if text == "-" else f"{text} %"

@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(metavar="DIR", help="A sweep's run folder (or any folder of runs).",
                                            file_okay=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Where to write report.md, report.html and charts/. Default: DIR.", file_okay=False)] = None,
    committee: Annotated[bool, typer.Option("--committee", help="Evaluate the committee of every recipe run with "
                                            "several seeds (mean probabilities, test split).")] = False,
    tta: Annotated[bool, typer.Option("--tta", help="With --committee: also with test-time augmentation.")] = False,
) -> None:
    """Tabulate a sweep (the run chosen per dataset by validation highlighted; mean ± std over seeds) and
    write report.json/.md/.html and charts."""
    from gtsrb_kit.report import (committee_of_all_text, committee_text, evaluate_committees, format_cell, recipe_text,
                                  write_report)

    if committee:
        with progress_bar(is_interactive()) as bar:
            for with_tta in (False, True) if tta else (False,):
                evaluate_committees(run_dir, tta=with_tta, progress=bar)
    files = write_report(run_dir, out_dir=out)
    report = files.report
    best = set(report["best_per_dataset"].values())
    table = Table(title=f"{report['name']}: {_plural(report['total'], 'run')}", show_lines=False)
    columns = (("run", "run"), ("status", "status"), ("best_val_accuracy", "val acc"), ("test_accuracy", "test acc"),
               ("lowest_recall", "min recall"), ("corruption_accuracy", "GTSRB-C"), ("epochs_completed", "epochs"),
               ("duration_s", "s"), ("dataset_mb", "data MB"))
    for key, title in columns:
        table.add_column(title, justify="left" if key in ("run", "status") else "right", no_wrap=key == "run")
    colors = {"done": "green", "failed": "red", "running": "blue", "interrupted": "yellow", "started": "yellow"}
    for row in report["runs"]:
        cells = [format_cell(k, row[k]) for k, _ in columns]
        cells[1] = f"[{colors.get(row['status'], 'dim')}]{cells[1]}[/]"
        table.add_row(*cells, style="bold green" if row["run"] in best else None)
    console = _wide_console()
    console.print(table)
    for g in report["groups"]:
        if len(g["runs"]) > 1:
            test, val, low = (_percent(g, key) for key in ("test_accuracy", "best_val_accuracy", "lowest_recall"))
            console.print(f"{recipe_text(g['recipe'])}: {g['done']} seed(s) done, test accuracy {test}, validation "
                          f"{val}, lowest recall {low}; committee "
                          f"{committee_text(g['committee'])}, with TTA {committee_text(g['committee_tta'])}",
                          markup=False, highlight=False)
    every = committee_of_all_text(report)
    if every:
        console.print(every, markup=False, highlight=False)
    if report["best"]:
        console.print(f"chosen by validation accuracy: {report['best']}  (bold green: the run chosen per dataset)",
                      markup=False)
    for path in (files.json, files.markdown, files.html, files.accuracy_chart, files.curves_chart):
        if path is not None:
            _echo(f"wrote {path}")
