"""Sweeps: run a plan's models x datasets x augmentations resumably, one folder per run.

Finished runs are skipped, interrupted ones resumed, failed ones retried; ``task_id`` runs one
run (a SLURM array task). After every run ``RUN_DIR/report.json`` is rebuilt under a lock.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import write_text_atomic
from gtsrb_kit.plans import (  # noqa: F401 - the plan API, also importable from here
    DatasetSpec, Plan, RunSpec, freeze_plan, load_plan, plan_from_dict, read_plan_file, run_name,
    train_setting_names,
)
from gtsrb_kit.progress import ProgressCallback
from gtsrb_kit.runs import (  # noqa: F401 - the run-folder contract, also importable from here
    CHECKPOINT_FILE, CONFIG_FILE, FAILED_FILE, LOCK_FILE, METRICS_FILE, PLAN_FILE, REPORT_JSON, RUN_FILE, dump_json,
    file_lock, is_locked, read_json, run_status, update_report_json,
)

TrainFn = Callable[..., dict]
CookFn = Callable[..., Any]
LogFn = Callable[[str], None]


@dataclass
class RunOutcome:
    """What the sweep did with one run.

    Attributes:
        index: Position in the plan (the array task id).
        name: Run name (its folder under the run directory).
        status: The run's state before this sweep touched it (see :func:`run_status`).
        action: ``skipped`` (already done or running elsewhere), ``trained``, ``resumed``,
            ``failed``, or with ``dry_run`` ``would-train`` / ``would-resume`` / ``would-skip``.
        metrics: The run's ``metrics.json`` content once done.
        error: One line when the run failed.
    """

    index: int
    name: str
    status: str
    action: str
    metrics: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`."""

    plan: Plan
    run_dir: Path
    outcomes: list[RunOutcome]
    report_path: Path | None = None
    to_cook: list[DatasetSpec] = field(default_factory=list)
    missing: list[DatasetSpec] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        """Runs that raised an error."""
        return [o for o in self.outcomes if o.action == "failed"]

    @property
    def ok(self) -> bool:
        """True when no run failed."""
        return not self.failed


def _default_cook(*args: Any, **kwargs: Any) -> Any:
    from gtsrb_kit.cook import cook_dataset

    return cook_dataset(*args, **kwargs)


def _default_train(*args: Any, **kwargs: Any) -> dict:
    from gtsrb_kit.train import train

    return train(*args, **kwargs)


def _dataset_ready(spec: DatasetSpec) -> bool:
    """Quick check (attributes only): the file exists and was cooked with this size, mode, roi,
    scale, seed and val_fraction. The cook itself also compares the source data; this does not."""
    if not spec.path.is_file() or spec.recipe is None:
        return spec.path.is_file()
    from gtsrb_kit.store import read_info  # lazy: h5py

    try:
        return _recipe_matches(spec.recipe, read_info(spec.path))
    except DataError:
        return False


def _recipe_matches(recipe: dict[str, Any], info: dict[str, Any]) -> bool:
    """Compare a recipe with a cooked file's attributes (attributes the file lacks do not count)."""
    for key in ("size", "mode", "roi", "scale", "seed", "val_fraction"):
        have, want = info.get(key), recipe[key]
        if have is None:
            continue
        if isinstance(want, float) or key in ("scale", "val_fraction"):
            try:
                if abs(float(have) - float(want)) > 1e-9:
                    return False
            except (TypeError, ValueError):
                return False
        elif (bool(have) if key == "roi" else have) != want:
            return False
    return True


def prepare_datasets(
    plan: Plan,
    *,
    datasets: Sequence[DatasetSpec] | None = None,
    cook_fn: CookFn | None = None,
    progress: ProgressCallback | None = None,
    log: LogFn | None = None,
    workers: int | None = None,
) -> list[Path]:
    """Make sure the plan's datasets exist: check enhanced files, cook recipes that are missing.

    Each recipe is cooked under a lock file beside its output (``.set-...h5.lock``), so array
    tasks that start together never cook the same file concurrently: the first cooks, the
    others wait and then find the file complete (``cook_dataset`` skips complete files).

    Args:
        plan: The plan.
        datasets: Only these (default: all of the plan's datasets).
        cook_fn: Replaces :func:`gtsrb_kit.cook.cook_dataset` (tests).
        progress: Passed to the cook.
        log: Called with one line per dataset cooked.
        workers: Worker processes for the cook (default: the cook's own default).

    Returns:
        The paths of the dataset files.

    Raises:
        DataError: an enhanced file listed by path does not exist.
    """
    cook_fn = cook_fn or _default_cook
    if workers is None and hasattr(os, "sched_getaffinity"):
        workers = len(os.sched_getaffinity(0))  # the CPUs SLURM (or taskset) gave this process
    paths = []
    for spec in datasets if datasets is not None else plan.datasets:
        paths.append(spec.path)
        if spec.recipe is None:
            if not spec.path.is_file():
                raise DataError(f"{spec.path}: dataset file not found; cook it first ('gtsrb-kit cook') "
                                "or list a recipe like {size=24, mode=\"L\"} in the plan")
            continue
        rec = spec.recipe
        out = Path(rec["out"])
        out.mkdir(parents=True, exist_ok=True)
        with file_lock(out / f".{spec.path.name}.lock"):
            if log and not _dataset_ready(spec):
                log(f"cooking {spec.path.name} from {rec['root']} (scale {rec['scale']:g})")
            # The cook skips a complete file with the same recipe (source data included).
            kwargs: dict[str, Any] = dict(
                sizes=(rec["size"],), modes=(rec["mode"],), roi_crop=rec["roi"], scale=rec["scale"],
                seed=rec["seed"], val_fraction=rec["val_fraction"], progress=progress,
            )
            if workers is not None:
                kwargs["workers"] = workers
            cook_fn(rec["root"], out, **kwargs)
            if not spec.path.is_file():
                raise DataError(f"{spec.path}: the cook did not write this file; check the recipe's size and mode")
    return paths


def _check_identity(run: RunSpec, folder: Path) -> None:
    recorded = read_json(folder / RUN_FILE)
    if recorded is None or "identity" not in recorded:
        return
    have, want = recorded["identity"], run.identity()
    if have != want:
        diffs = [k for k in want if have.get(k) != want[k]]
        if "settings" in diffs:
            keys = sorted(set(have.get("settings", {})) | set(want["settings"]))
            diffs = [f"settings.{k}" for k in keys if have.get("settings", {}).get(k) != want["settings"].get(k)]
        raise ConfigError(
            f"{folder}: this run folder was made with other settings ({', '.join(diffs)}); "
            "use another --run-dir or delete that folder"
        )


def _record_run(run: RunSpec, index: int, folder: Path) -> None:
    record: dict[str, Any] = {
        "name": run.name, "index": index, "dataset_path": str(run.dataset.path),
        "identity": run.identity(),
    }
    slurm = {k: os.environ[v] for k, v in (("array_job_id", "SLURM_ARRAY_JOB_ID"),
                                           ("array_task_id", "SLURM_ARRAY_TASK_ID"),
                                           ("job_id", "SLURM_JOB_ID")) if v in os.environ}
    if slurm:
        record["slurm"] = slurm
    write_text_atomic(folder / RUN_FILE, dump_json(record))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (ConfigError, DataError)) else f"{type(exc).__name__}: {text}"


def run_sweep(
    plan: Plan | str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    task_id: int | None = None,
    only: Sequence[str] | None = None,
    dry_run: bool = False,
    train_fn: TrainFn | None = None,
    cook_fn: CookFn | None = None,
    progress: ProgressCallback | None = None,
    log: LogFn | None = None,
    verbose: int = 0,
    keep_going: bool = True,
) -> SweepResult:
    """Run a plan's runs that are not finished yet, each in ``run_dir/<run name>/``.

    Finished runs are skipped, interrupted ones resumed (``train(..., resume=True)``), failed
    ones retried, runs another process is training right now are left alone. After each run the
    combined report ``run_dir/report.json`` is rebuilt from disk under a lock, so array tasks
    that finish together never lose each other's rows.

    Args:
        plan: A :class:`Plan` or a plan file.
        run_dir: The sweep's folder.
        task_id: Run only the run at this index (a SLURM array task).
        only: Run only the runs with these names.
        dry_run: Change nothing; report what would run (``action`` ``would-*``).
        train_fn: Replaces :func:`gtsrb_kit.train.train` (tests).
        cook_fn: Replaces :func:`gtsrb_kit.cook.cook_dataset` (tests).
        progress: Passed to the cook and the trainer.
        log: Called with one line per event (start, end, failure of each run).
        verbose: Keras verbosity passed to the trainer.
        keep_going: After a failed run, continue with the next one (else stop there).

    Returns:
        A :class:`SweepResult`; ``result.ok`` is false when a run failed.

    Raises:
        ConfigError: a malformed plan, a bad task id or a run folder made with other settings.
    """
    run_dir = Path(run_dir).resolve()
    if not isinstance(plan, Plan):
        plan = load_plan(plan, run_dir=run_dir)
    selected = _select(plan, task_id, only)
    if dry_run:
        return _dry_run(plan, run_dir, selected)
    job = _Job(plan, run_dir, train_fn or _default_train, cook_fn, progress, log or (lambda line: None), verbose)
    run_dir.mkdir(parents=True, exist_ok=True)
    freeze_plan(plan, run_dir)
    outcomes: list[RunOutcome] = []
    for n, (i, run) in enumerate(selected, 1):
        outcomes.append(job.run(i, run, f"[{n}/{len(selected)}] {run.name}"))
        if outcomes[-1].action == "skipped":
            continue
        update_report_json(run_dir)
        if outcomes[-1].action == "failed" and not keep_going:
            break
    return SweepResult(plan, run_dir, outcomes, update_report_json(run_dir))


def _select(plan: Plan, task_id: int | None, only: Sequence[str] | None) -> list[tuple[int, RunSpec]]:
    """The (index, run) pairs a call asks for: one array task, named runs, or all."""
    selected = list(enumerate(plan.runs))
    if task_id is not None:
        selected = [(int(task_id), plan.run(int(task_id)))]
    if only:
        for name in only:
            plan.run(name)  # raises on unknown names
        selected = [(i, r) for i, r in selected if r.name in set(only)]
    return selected


def _dry_run(plan: Plan, run_dir: Path, selected: list[tuple[int, RunSpec]]) -> SweepResult:
    """What a sweep would do, changing nothing."""
    outcomes = []
    for i, run in selected:
        folder = run_dir / run.name
        status = run_status(folder)
        if folder.is_dir():
            _check_identity(run, folder)
        action = {"done": "would-skip", "running": "would-skip", "interrupted": "would-resume"}.get(
            status, "would-train")
        outcomes.append(RunOutcome(i, run.name, status, action, read_json(folder / METRICS_FILE)))
    needed = {r.dataset.name: r.dataset for _, r in selected if run_status(run_dir / r.name) != "done"}
    to_cook = [d for d in needed.values() if d.recipe is not None and not _dataset_ready(d)]
    missing = [d for d in needed.values() if d.recipe is None and not d.path.is_file()]
    return SweepResult(plan, run_dir, outcomes, None, to_cook, missing)


@dataclass
class _Job:
    """One sweep call's runs: what they share (plan, folders, trainer, cook, logging)."""

    plan: Plan
    run_dir: Path
    train_fn: TrainFn
    cook_fn: CookFn | None
    progress: ProgressCallback | None
    log: LogFn
    verbose: int
    prepared: set[str] = field(default_factory=set)  # datasets checked by this call

    def run(self, index: int, run: RunSpec, tag: str) -> RunOutcome:
        """Skip, train or resume one run, under its lock; a failure is recorded, not raised."""
        folder = self.run_dir / run.name
        status = run_status(folder)
        if folder.is_dir():
            _check_identity(run, folder)
        if status == "done":
            self.log(f"{tag}: done already, skipped")
            return RunOutcome(index, run.name, status, "skipped", read_json(folder / METRICS_FILE))
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / LOCK_FILE, blocking=False) as held:
            if not held:
                self.log(f"{tag}: another process is training it, skipped")
                return RunOutcome(index, run.name, "running", "skipped")
            action = "resumed" if (folder / CHECKPOINT_FILE).is_file() else "trained"
            try:
                metrics = self._train(index, run, folder, tag)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                message = _one_line(exc)
                write_text_atomic(folder / FAILED_FILE, dump_json({
                    "error": message, "type": type(exc).__name__, "traceback": traceback.format_exc(),
                }))
                self.log(f"{tag}: FAILED: {message}")
                return RunOutcome(index, run.name, status, "failed", error=message)
            return RunOutcome(index, run.name, status, action, metrics)

    def _train(self, index: int, run: RunSpec, folder: Path, tag: str) -> dict[str, Any] | None:
        # A folder an earlier attempt started (config.json) is continued, never refused.
        resume = (folder / CHECKPOINT_FILE).is_file() or (folder / CONFIG_FILE).is_file()
        _record_run(run, index, folder)
        with contextlib.suppress(FileNotFoundError):
            (folder / FAILED_FILE).unlink()
        if run.dataset.name not in self.prepared:
            prepare_datasets(self.plan, datasets=[run.dataset], cook_fn=self.cook_fn, progress=self.progress,
                             log=self.log)
            self.prepared.add(run.dataset.name)
        self.log(f"{tag}: {'resuming' if resume else 'training'} ({_settings_text(run)})")
        metrics = self.train_fn(run.dataset.path, model=run.model, augment=run.augment, run_dir=folder,
                                resume=resume, progress=self.progress, verbose=self.verbose, **run.settings)
        if not (folder / METRICS_FILE).is_file() and isinstance(metrics, dict):
            write_text_atomic(folder / METRICS_FILE, dump_json(metrics))
        metrics = read_json(folder / METRICS_FILE) or metrics
        acc, dur, val = ((metrics or {}).get(k) for k in ("test_accuracy", "duration_s", "best_val_accuracy"))
        acc_txt = f"test accuracy {acc:.4f}" if isinstance(acc, (int, float)) else "finished"
        acc_txt = f"best validation accuracy {val:.4f}, {acc_txt}" if isinstance(val, (int, float)) else acc_txt
        dur_txt = f" in {dur:.1f} s" if isinstance(dur, (int, float)) else ""
        self.log(f"{tag}: {acc_txt}{dur_txt}")
        return metrics


def _settings_text(run: RunSpec) -> str:
    """The run's settings as its training applies them (a refit, say, keeps its last epoch: select=last)."""
    from gtsrb_kit.train import applied_settings

    return ", ".join(f"{k}={v}" for k, v in applied_settings(run.model, run.settings).items()) or "defaults"
