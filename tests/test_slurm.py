"""SLURM job-array scripts: their text, the task command run locally, and a real one-node cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gtsrb_kit.cli import app
from gtsrb_kit.errors import ConfigError
from gtsrb_kit.slurm import SlurmError, slurm_script, submit, write_slurm_script
from gtsrb_kit.plans import load_plan
from gtsrb_kit.sweep import run_status

runner = CliRunner()
TINY_MODEL = "v1"  # small and fast at 24x24 for one epoch


def test_script_text(tmp_path: Path) -> None:
    text = slurm_script(tmp_path / "plan.json", tmp_path / "runs", 6, partition="gpu", time="02:00:00",
                        cpus_per_task=4, gpus_per_task=1, mem="16G", max_parallel=2, account="proj",
                        extra_sbatch=["--qos=short"], setup=["module load cuda"], python="/opt/py/bin/python")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for expected in ("#SBATCH --array=0-5%2", f"#SBATCH --output={tmp_path / 'runs' / 'logs'}/%A_%a.out",
                     "#SBATCH --partition=gpu", "#SBATCH --time=02:00:00", "#SBATCH --cpus-per-task=4",
                     "#SBATCH --gpus-per-task=1", "#SBATCH --mem=16G", "#SBATCH --account=proj",
                     "#SBATCH --qos=short", "module load cuda"):
        assert expected in lines, expected
    # every #SBATCH line comes before the first command (sbatch stops reading them there)
    first_cmd = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(i < first_cmd for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert lines[-1] == (f"/opt/py/bin/python -m gtsrb_kit sweep {tmp_path / 'plan.json'} --run-dir "
                         f"{tmp_path / 'runs'} --verbose 2 --task-id \"${{SLURM_ARRAY_TASK_ID}}\"")
    (tmp_path / "s.sh").write_text(text)
    assert subprocess.run(["bash", "-n", str(tmp_path / "s.sh")]).returncode == 0


def test_script_uses_this_python_by_default(tmp_path: Path) -> None:
    text = slurm_script(tmp_path / "p.json", tmp_path, 1)
    assert f"{sys.executable} -m gtsrb_kit sweep" in text and "#SBATCH --array=0-0" in text
    assert "--partition" not in text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"time": "two hours"}, "--time 'two hours' is not a SLURM time"),
    ({"mem": "lots"}, "--mem 'lots' is not a SLURM memory size"),
    ({"cpus_per_task": 0}, "--cpus-per-task 0 must be a positive integer"),
    ({"extra_sbatch": ["qos=short"]}, "must look like --name=value"),
])
def test_script_rejects_bad_values(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        slurm_script(tmp_path / "p.json", tmp_path, 3, **kwargs)


def _plan_file(tmp_path: Path, models: list[str]) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "set-24x24-L.h5").write_bytes(b"x")
    path = tmp_path / "plan.toml"
    path.write_text(f'name = "hpc"\ndatasets = ["data/set-24x24-L.h5"]\nmodels = {json.dumps(models)}\n'
                    "[train]\nepochs = 1\n")
    return path


def test_cli_slurm_writes_script_and_frozen_plan(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path, ["v1", "v2", "v3"])
    result = runner.invoke(app, ["sweep", str(plan), "--run-dir", str(tmp_path / "runs"), "--slurm",
                                 "--partition", "debug", "--time", "10:00"])
    assert result.exit_code == 0, result.output
    script = tmp_path / "runs" / "sweep.sbatch"
    assert f"wrote {script} (3 array tasks" in result.stdout and f"sbatch {script}" in result.stdout
    text = script.read_text()
    assert "#SBATCH --array=0-2" in text and "#SBATCH --partition=debug" in text
    assert "#SBATCH --job-name=gtsrb-hpc" in text
    assert os.access(script, os.X_OK) and (tmp_path / "runs" / "logs").is_dir()
    # Editing the plan afterwards does not change what the submitted tasks run.
    frozen = tmp_path / "runs" / "plan.json"
    assert str(frozen) in text
    plan.write_text(plan.read_text().replace('["v1", "v2", "v3"]', '["v3", "v1"]'))
    assert [r.model for r in load_plan(frozen).runs] == ["v1", "v2", "v3"]


def test_cli_slurm_refuses_missing_dataset_files(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path, ["v1"])
    (tmp_path / "data" / "set-24x24-L.h5").unlink()
    result = runner.invoke(app, ["sweep", str(plan), "--run-dir", str(tmp_path / "runs"), "--slurm"])
    assert result.exit_code == 1 and "set-24x24-L.h5: dataset file not found" in result.stderr
    assert not (tmp_path / "runs" / "sweep.sbatch").exists()


def test_cli_slurm_refuses_recipes_without_raw_data(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(f'datasets = [{{size = 24, mode = "L"}}]\nmodels = ["v1"]\n[cook]\nroot = "{tmp_path / "none"}"\n')
    result = runner.invoke(app, ["sweep", str(plan), "--run-dir", str(tmp_path / "runs"), "--slurm"])
    assert result.exit_code == 1 and "no raw GTSRB tree to cook set-24x24-L.h5" in result.stderr


def test_submit_without_sbatch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="sbatch: not found"):
        submit(tmp_path / "x.sbatch")


# ---------------------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def hpc_data(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24x24 L dataset cooked from the synthetic tree (shared by this module's real runs)."""
    from gtsrb_kit.cook import cook_dataset

    out = tmp_path_factory.mktemp("hpc-data")
    cook_dataset(synth_root, out, sizes=(24,), modes=("L",), workers=1)
    return out / "set-24x24-L.h5"


@pytest.fixture(scope="module")
def hpc_sweep(hpc_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2-run plan (one tiny model, two seeds) and its run folder, shared by the real runs below.

    The local task test trains run 1; the SLURM test then submits the whole array: task 0 trains,
    task 1 finds its run done. Either test also works alone.
    """
    base = tmp_path_factory.mktemp("hpc")
    plan_file = base / "plan.toml"
    plan_file.write_text(
        f'name = "hpc-test"\ndatasets = ["{hpc_data}"]\n'
        + "".join(f'[[runs]]\ndataset = "{hpc_data.stem}"\nmodel = "{TINY_MODEL}"\nname = "seed{s}"\nseed = {s}\n'
                  "epochs = 1\nbatch_size = 64\n" for s in range(2))
    )
    run_dir = base / "runs"
    plan = load_plan(plan_file, run_dir=run_dir)
    return plan, write_slurm_script(plan, run_dir, time="10:00", cpus_per_task=1)


def test_task_command_runs_one_combination_without_slurm(hpc_sweep) -> None:
    """The generated script, run by bash with SLURM_ARRAY_TASK_ID set: synth -> cook -> real training."""
    plan, script = hpc_sweep
    run_dir = script.parent
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "777"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[1/1] seed1: training" in proc.stdout and "test accuracy" in proc.stdout
    assert "seed0" not in proc.stdout
    assert run_status(run_dir / "seed1") == "done" and run_status(run_dir / "seed0") == "pending"
    record = json.loads((run_dir / "seed1" / "run.json").read_text())
    assert record["index"] == 1 and record["slurm"]["array_task_id"] == "1"
    metrics = json.loads((run_dir / "seed1" / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["epochs_completed"] == 1 and metrics["seed"] == 1
    report = json.loads((run_dir / "report.json").read_text())
    assert report["counts"] == {"done": 1, "pending": 1}
    # The same task again: a done run is never retrained (and TensorFlow is not even imported).
    again = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "[1/1] seed1: done already, skipped" in again.stdout


def _slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s.strip().rstrip("*") in ("idle", "mix", "alloc") for s in out.stdout.split())


@pytest.mark.slurm
def test_job_array_on_a_real_slurm_cluster(hpc_sweep) -> None:
    if not _slurm_up():
        pytest.skip("no SLURM cluster answers (start one with: bash ../shared/slurm/local-cluster.sh start)")
    plan, script = hpc_sweep
    run_dir = script.parent
    job = submit(script)
    assert job.isdigit()
    deadline = time.monotonic() + 420
    try:
        while time.monotonic() < deadline:
            q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True)
            if q.returncode != 0 or not q.stdout.strip():
                break
            time.sleep(2)
        else:
            pytest.fail(f"job array {job} did not finish in time: {q.stdout}")
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    names = [r.name for r in plan.runs]
    for i, name in enumerate(names):
        log = run_dir / "logs" / f"{job}_{i}.out"
        assert log.is_file(), f"no log for task {i}: {sorted(os.listdir(run_dir / 'logs'))}"
        text = log.read_text()
        assert f"task {i} of job {job}" in text
        # each task handled exactly its own run (trained it, or found it done already)
        assert set(re.findall(r"\[\d+/\d+\] (\S+): ", text)) == {name}, text
        assert run_status(run_dir / name) == "done", text
        record = json.loads((run_dir / name / "run.json").read_text())
        assert record["index"] == i and record["slurm"]["array_task_id"] == str(i)
    trained_here = json.loads((run_dir / "seed0" / "run.json").read_text())
    assert trained_here["slurm"]["array_job_id"] == job
    report = json.loads((run_dir / "report.json").read_text())
    assert report["complete"] and report["total"] == len(names) == 2
    assert [r["run"] for r in report["runs"]] == names
    assert all(r["test_accuracy"] is not None for r in report["runs"])


# ---------------------------------------------------------------------------------------------- cli/ examples

EXAMPLES = Path(__file__).resolve().parents[1] / "cli"


def test_example_scripts_are_valid_and_not_a_package() -> None:
    for name in ("sweep-array.sbatch", "sweep-loop.sh"):
        assert subprocess.run(["bash", "-n", str(EXAMPLES / name)]).returncode == 0, name
    assert not (EXAMPLES / "__init__.py").exists()
    assert "#SBATCH --array" not in (EXAMPLES / "sweep-array.sbatch").read_text()  # given at sbatch time
    plan = load_plan(EXAMPLES / "gtsrb5.toml", run_dir="/tmp/x")
    assert len(plan.runs) == 12 and plan.runs[0].name == "set-24x24-RGB__v1__none"


def test_accuracy_plan_is_the_accurate_recipe_and_its_variants() -> None:
    """Three seeds each: three inputs, a refit, 30 epochs, class-balanced epochs and a spatial transformer;
    the rest is `accurate`."""
    from gtsrb_kit.train import recipe

    plan = load_plan(EXAMPLES / "accuracy.toml", run_dir="/tmp/x")
    rgb, grey, large = ["set-32x32-RGB-HE-roi", "set-32x32-L-CLAHE-roi", "set-48x48-RGB-HE-roi"]
    assert [d.name for d in plan.datasets] == [rgb, grey, large]
    variants = [(rgb, {}), (grey, {}), (rgb, {"refit": True}), (large, {}), (rgb, {"epochs": 30}),
                (rgb, {"class_balance": 1.0})]
    models = ["vgg-bn"] * 3 * len(variants) + ["stn-vgg"] * 3
    variants.append((rgb, {}))
    base = {**recipe("accurate").settings(), "batch_size": 64, "mixed_precision": "off"}

    def changed(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k != "seed" and base.get(k) != v}

    assert [(r.dataset.name, r.settings["seed"], changed(r.settings)) for r in plan.runs] == [
        (name, s, change) for name, change in variants for s in (0, 1, 2)]
    assert [r.model for r in plan.runs] == models
    assert {(r.augment, r.settings["mixed_precision"]) for r in plan.runs} == {("strong", "off")}
    assert len({r.name for r in plan.runs}) == len(plan.runs)


def test_example_loop_runs_every_task_once(tmp_path: Path) -> None:
    """cli/sweep-loop.sh with the real --count/--prepare/report and a stand-in for the training tasks."""
    plan = _plan_file(tmp_path, ["v1", "v2", "v3"])
    fake = tmp_path / "fake-kit"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'for a in "$@"; do if [ "$prev" = --task-id ]; then echo "task $a" >> "$MARKS"; exit 0; fi; prev=$a; done\n'
        f'exec {sys.executable} -m gtsrb_kit "$@"\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "GTSRB_KIT": str(fake), "MARKS": str(tmp_path / "marks"), "JOBS": "2"}
    proc = subprocess.run(["bash", str(EXAMPLES / "sweep-loop.sh"), str(plan), str(tmp_path / "runs")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted((tmp_path / "marks").read_text().splitlines()) == ["task 0", "task 1", "task 2"]
    assert proc.stdout.count(": ok") == 3 and (tmp_path / "runs" / "report.html").is_file()
