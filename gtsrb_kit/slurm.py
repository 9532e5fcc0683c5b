"""SLURM job arrays for sweeps: one array task = one run of the plan (``docs/sweeps.md``).

The script freezes the plan into ``RUN_DIR/plan.json`` and calls the Python that wrote it, so
the job runs in the same environment.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gtsrb_kit.errors import ConfigError, GtsrbKitError
from gtsrb_kit.fileio import write_text_atomic
from gtsrb_kit.plans import Plan, freeze_plan

SCRIPT_NAME = "sweep.sbatch"
LOG_DIR = "logs"
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)


class SlurmError(GtsrbKitError):
    """``sbatch`` is missing or refused a job."""


def _sbatch_line(option: str, value: object) -> str:
    return f"#SBATCH --{option}={value}"


def _check_options(n_runs: int, *, time: str | None, mem: str | None, job_name: str, cpus_per_task: int | None,
                   gpus_per_task: int | None, max_parallel: int | None) -> None:
    """Raise ConfigError for a value SLURM would reject."""
    if n_runs < 1:
        raise ConfigError("the plan has no runs: nothing to submit")
    if time is not None and not _TIME.match(time):
        raise ConfigError(f"--time {time!r} is not a SLURM time; use e.g. 30:00, 02:00:00 or 1-00:00:00")
    if mem is not None and not _MEM.match(mem):
        raise ConfigError(f"--mem {mem!r} is not a SLURM memory size; use e.g. 8G or 16000M")
    for name, value in (("--cpus-per-task", cpus_per_task), ("--gpus-per-task", gpus_per_task),
                        ("--max-parallel", max_parallel)):
        if value is not None and value < (0 if name == "--gpus-per-task" else 1):
            raise ConfigError(f"{name} {value} must be a positive integer")
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", job_name):
        raise ConfigError(f"job name {job_name!r} must use only letters, digits and . _ + -")


def slurm_script(
    plan_file: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    n_runs: int,
    *,
    job_name: str = "gtsrb-sweep",
    partition: str | None = None,
    account: str | None = None,
    time: str | None = None,
    cpus_per_task: int | None = None,
    gpus_per_task: int | None = None,
    mem: str | None = None,
    max_parallel: int | None = None,
    extra_sbatch: Sequence[str] = (),
    setup: Sequence[str] = (),
    python: str | None = None,
    verbose: int = 2,
) -> str:
    """The text of a SLURM array script running one plan run per array task.

    Args:
        plan_file: The (frozen) plan the tasks read; made absolute.
        run_dir: The sweep's folder; made absolute. Logs go to ``run_dir/logs/%A_%a.out``.
        n_runs: Number of runs in the plan (array indices ``0..n_runs-1``).
        job_name: ``--job-name``.
        partition: ``--partition``.
        account: ``--account``.
        time: ``--time`` per task, e.g. ``"01:00:00"`` or ``"1-00:00:00"``.
        cpus_per_task: ``--cpus-per-task`` (also sets the trainer's thread count through SLURM).
        gpus_per_task: ``--gpus-per-task``.
        mem: ``--mem`` per task, e.g. ``"16G"``.
        max_parallel: At most this many tasks at once (``--array=0-N%K``).
        extra_sbatch: More ``#SBATCH`` options, e.g. ``["--qos=short"]``.
        setup: Shell lines run before the task (``module load ...``, ``source venv/bin/activate``).
        python: Interpreter the tasks use (default: this one, ``sys.executable``).
        verbose: Keras verbosity inside the job (2 = one line per epoch, good for logs).

    Raises:
        ConfigError: a value SLURM would reject.
    """
    _check_options(n_runs, time=time, mem=mem, job_name=job_name, cpus_per_task=cpus_per_task,
                   gpus_per_task=gpus_per_task, max_parallel=max_parallel)
    run_dir = Path(run_dir).resolve()
    plan_file = Path(plan_file).resolve()
    python = python or sys.executable
    array = f"0-{n_runs - 1}" + (f"%{max_parallel}" if max_parallel else "")
    lines = [
        "#!/bin/bash",
        f"# gtsrb-kit sweep as a SLURM job array: {n_runs} run{'' if n_runs == 1 else 's'}, one per array task.",
        f"# Submit with: sbatch {shlex.quote(str(run_dir / SCRIPT_NAME))}",
        _sbatch_line("job-name", job_name),
        _sbatch_line("array", array),
        _sbatch_line("output", run_dir / LOG_DIR / "%A_%a.out"),
        _sbatch_line("ntasks", 1),
    ]
    for option, value in (("partition", partition), ("account", account), ("time", time),
                          ("cpus-per-task", cpus_per_task), ("gpus-per-task", gpus_per_task), ("mem", mem)):
        if value is not None:
            lines.append(_sbatch_line(option, value))
    for extra in extra_sbatch:
        extra = extra.strip()
        if not extra.startswith("--") or "\n" in extra:
            raise ConfigError(f"extra sbatch option {extra!r} must look like --name=value")
        lines.append(f"#SBATCH {extra}")
    lines += [
        "",
        "set -euo pipefail",
        "export PYTHONUNBUFFERED=1",
        'export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"',
    ]
    lines += [line for line in setup if line.strip()]
    command = [python, "-m", "gtsrb_kit", "sweep", str(plan_file), "--run-dir", str(run_dir),
               "--verbose", str(verbose)]
    lines += [
        'echo "task ${SLURM_ARRAY_TASK_ID} of job ${SLURM_ARRAY_JOB_ID:-?} on $(hostname)"',
        " ".join(shlex.quote(c) for c in command) + ' --task-id "${SLURM_ARRAY_TASK_ID}"',
        "",
    ]
    return "\n".join(lines)


def write_slurm_script(
    plan: Plan,
    run_dir: str | os.PathLike[str],
    **options: object,
) -> Path:
    """Freeze ``plan`` into ``run_dir/plan.json`` and write ``run_dir/sweep.sbatch`` for it.

    Args:
        plan: The parsed plan.
        run_dir: The sweep's folder (created, with its ``logs/`` folder).
        **options: Keyword arguments of :func:`slurm_script` (partition, time, gpus_per_task, ...).

    Returns:
        The script's path (``sbatch`` it).
    """
    run_dir = Path(run_dir).resolve()
    (run_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
    frozen = freeze_plan(plan, run_dir)
    options.setdefault("job_name", _job_name(plan.name))
    text = slurm_script(frozen, run_dir, len(plan.runs), **options)  # type: ignore[arg-type]
    target = run_dir / SCRIPT_NAME
    write_text_atomic(target, text)
    target.chmod(0o755)
    return target


def _job_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-")
    return f"gtsrb-{cleaned}" if cleaned else "gtsrb-sweep"


def submit(script: str | os.PathLike[str], *, sbatch: str = "sbatch", extra_args: Sequence[str] = ()) -> str:
    """Submit a script with ``sbatch --parsable`` and return the job id.

    Raises:
        SlurmError: ``sbatch`` is not installed or refused the job (its message, on one line).
    """
    exe = shutil.which(sbatch)
    if exe is None:
        raise SlurmError(f"{sbatch}: not found; run this on a SLURM login node or submit {script} yourself")
    proc = subprocess.run([exe, "--parsable", *extra_args, str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = " ".join((proc.stderr or proc.stdout).split()) or f"exit code {proc.returncode}"
        raise SlurmError(f"sbatch refused {script}: {msg}")
    return proc.stdout.strip().split(";")[0]
