"""Sweep plans, execution (fake and real trainer), resumability and the `sweep` command."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gtsrb_kit.cli import app
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.plans import load_plan, plan_from_dict, run_name
from gtsrb_kit.sweep import file_lock, prepare_datasets, run_status, run_sweep

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def fake_h5(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89HDF fake " * 100)
    return path


class FakeTrainer:
    """Writes what gtsrb_kit.train.train writes; can fail or be 'killed' mid-run."""

    def __init__(self, fail: set[str] = frozenset(), kill: set[str] = frozenset()) -> None:
        self.calls: list[dict] = []
        self.fail = set(fail)
        self.kill = set(kill)

    def __call__(self, data, *, model, augment, run_dir, resume, progress=None, verbose=0, **settings):
        run_dir = Path(run_dir)
        self.calls.append({"data": Path(data), "model": model, "augment": augment, "run": run_dir.name,
                           "resume": resume, **settings})
        if (run_dir / "config.json").is_file() and not resume:  # like the real trainer
            raise ConfigError(f"{run_dir}: already holds a training run")
        (run_dir / "config.json").write_text(json.dumps({"args": settings}))
        if run_dir.name in self.fail:
            raise ValueError(f"boom in {run_dir.name}")
        (run_dir / "last.keras").write_bytes(b"ckpt")
        if run_dir.name in self.kill:
            raise KeyboardInterrupt
        epochs = settings.get("epochs", 10)
        acc = 0.5 + 0.1 * len(self.calls) % 0.5
        (run_dir / "history.csv").write_text(
            "epoch,accuracy,loss,val_accuracy,val_loss\n"
            + "".join(f"{e},{0.3 + 0.1 * e},{1 - 0.1 * e},{0.25 + 0.1 * e},{1.1 - 0.1 * e}\n" for e in range(epochs))
        )
        (run_dir / "best.keras").write_bytes(b"m" * 2000)
        metrics = {"test_accuracy": acc, "best_val_accuracy": acc - 0.01, "best_epoch": epochs,
                   "epochs_completed": epochs, "duration_s": 1.5, "model": model, "data": str(data),
                   "model_params": 1234, "seed": settings.get("seed", 0), "augment": augment,
                   "batch_size": settings.get("batch_size", 64)}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics


@pytest.fixture()
def two_files(tmp_path: Path) -> Path:
    fake_h5(tmp_path / "data" / "set-24x24-L.h5")
    fake_h5(tmp_path / "data" / "set-24x24-RGB.h5")
    return tmp_path


PLAN = """
name = "demo"
datasets = ["data/set-24x24-*.h5"]
models = ["v1", "v2"]
augment = ["none"]
[train]
epochs = 2
batch_size = 16
seed = 3
"""


# ---------------------------------------------------------------------------------------------- plans


def test_plan_product_order_names_and_relative_paths(two_files: Path) -> None:
    plan = load_plan(write(two_files / "plan.toml", PLAN))
    assert plan.name == "demo"
    assert [r.name for r in plan.runs] == [
        "set-24x24-L__v1__none", "set-24x24-L__v2__none", "set-24x24-RGB__v1__none", "set-24x24-RGB__v2__none",
    ]
    assert plan.runs[0].dataset.path == (two_files / "data" / "set-24x24-L.h5").resolve()
    assert plan.runs[3].settings == {"epochs": 2, "batch_size": 16, "seed": 3}


def test_plan_yaml_and_json_equal_toml(two_files: Path) -> None:
    toml_plan = load_plan(write(two_files / "plan.toml", PLAN))
    yaml_plan = load_plan(write(two_files / "plan.yaml", """
name: demo
datasets: [data/set-24x24-*.h5]
models: [v1, v2]
augment: none
train: {epochs: 2, batch_size: 16, seed: 3}
"""))
    assert yaml_plan.to_dict() == toml_plan.to_dict()
    # The explicit form (plan.json) round-trips to the same runs in the same order.
    frozen = write(two_files / "frozen" / "plan.json", json.dumps(toml_plan.to_dict()))
    again = load_plan(frozen)
    assert again.to_dict() == toml_plan.to_dict()  # array tasks never rewrite the frozen plan
    assert [(r.name, r.dataset.path, r.model, r.augment, r.settings) for r in again.runs] == \
        [(r.name, r.dataset.path, r.model, r.augment, r.settings) for r in toml_plan.runs]


def test_recipes_expand_and_cook_into_run_dir(tmp_path: Path) -> None:
    plan = plan_from_dict({
        "datasets": [{"size": [24, 32], "mode": "L"}, {"size": 24, "mode": "RGB", "roi": True, "scale": 0.5}],
        "models": "v1", "cook": {"root": str(tmp_path / "raw"), "scale": 0.25},
    }, run_dir=tmp_path / "runs")
    names = [d.name for d in plan.datasets]
    assert names == ["set-24x24-L", "set-32x32-L", "set-24x24-RGB-roi"]
    assert plan.datasets[0].path == (tmp_path / "runs" / "data" / "set-24x24-L.h5").resolve()
    assert plan.datasets[0].recipe["scale"] == 0.25 and plan.datasets[2].recipe["scale"] == 0.5
    assert plan.datasets[2].recipe["roi"] is True


def test_explicit_runs_with_overrides_and_names(two_files: Path) -> None:
    plan = load_plan(write(two_files / "plan.toml", """
datasets = ["data/set-24x24-L.h5"]
[train]
epochs = 3
[[runs]]
dataset = "set-24x24-L"
model = "v1"
[[runs]]
dataset = "data/set-24x24-RGB.h5"
model = "v2"
epochs = 1
name = "quick"
"""))
    assert [r.name for r in plan.runs] == ["set-24x24-L__v1__none", "quick"]
    assert plan.runs[0].settings == {"epochs": 3}
    assert plan.runs[1].settings == {"epochs": 1}
    assert plan.runs[1].dataset.name == "set-24x24-RGB"


def test_a_recipe_stands_for_its_settings_and_given_ones_win(two_files: Path) -> None:
    from gtsrb_kit.train import recipe

    plan = load_plan(write(two_files / "plan.toml", """
datasets = ["data/set-24x24-L.h5"]
[train]
recipe = "accurate"
seed = 1
[[runs]]
dataset = "set-24x24-L"
model = "vgg-bn"
[[runs]]
dataset = "set-24x24-L"
model = "vgg-bn"
recipe = "quick"
ema = 0.99
name = "short"
"""))
    assert plan.runs[0].settings == {**recipe("accurate").settings(), "seed": 1}
    assert plan.runs[1].settings == {"epochs": 12, "ema": 0.99, "select": "val_loss", "seed": 1}


@pytest.mark.parametrize(("text", "key"), [
    ("models = ['v1']\ndatasets = ['a.h5']\nepoch = 3\n", "epoch"),
    ("models = ['v1']\ndatasets = ['a.h5']\n[train]\nrecipe = 'fastest'\n", "train.recipe: unknown recipe 'fastest'"),
    ("models = ['v1']\ndatasets = ['a.h5']\n[train]\nrecipe = ['quick']\n", "train.recipe: unknown recipe"),
    ("models = ['v1']\ndatasets = ['a.h5']\n[train]\nepochs = 0\n", "train.epochs"),
    ("models = ['v1']\ndatasets = ['a.h5']\n[train]\nlearnin_rate = 0.1\n", "train.learnin_rate"),
    ("models = ['nope']\ndatasets = ['a.h5']\n", "models"),
    ("models = []\ndatasets = ['a.h5']\n", "models"),
    ("models = ['v1']\ndatasets = [{size = 24}]\n", "datasets[0].mode"),
    ("models = ['v1']\ndatasets = [{size = 24, mode = 'L', colour = 1}]\n", "datasets[0].colour"),
    ("models = ['v1']\ndatasets = [{size = 'big', mode = 'L'}]\n", "datasets[0].size"),
    ("models = ['v1']\ndatasets = ['nothing-*.h5']\n", "datasets[0]"),
    ("models = ['v1']\ndatasets = [{size = 24, mode = 'L'}]\n[cook]\nscale = 2\n", "cook.scale"),
    ("datasets = ['a.h5']\n[[runs]]\nmodel = 'v1'\n", "runs[0].dataset"),
    ("datasets = ['a.h5']\n[[runs]]\ndataset = 'a.h5'\nmodel = 'v1'\n[[runs]]\ndataset = 'a.h5'\nmodel = 'v1'\n",
     "runs[1]"),
    ("models = ['v1'\n", "not valid TOML"),
    # values the owning modules reject, wrapped with the plan's key
    ("models = ['v1']\ndatasets = [{size = 2, mode = 'L'}]\n", "datasets[0].size: image size 2"),
    ("models = ['v1']\ndatasets = [{size = 24, mode = 'X'}]\n", "datasets[0].mode: unknown mode 'X'"),
    ("models = ['v1']\ndatasets = [{size = 24, mode = 'L', val_fraction = 1}]\n", "datasets[0].val_fraction"),
    ("models = ['v1']\naugment = ['wild']\ndatasets = ['a.h5']\n", "augment: unknown augmentation preset"),
    ("models = ['v1']\ndatasets = ['a.h5']\n[train]\nlearning_rate = -1\n", "train.learning_rate"),
    ("models = ['v1']\ndatasets = ['a.h5']\n[train]\nlr_schedule = 'zigzag'\n", "train.lr_schedule"),
])
def test_malformed_plan_one_line_error_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ") and key in msg


def test_cli_bad_plan_exit_code_2_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "models: [v1]\ndatasets: [a.h5]\ntrain: {epochs: -1}\n")
    result = runner.invoke(app, ["sweep", str(path), "--run-dir", str(tmp_path / "r"), "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: ") and "train.epochs" in result.stderr
    assert str(path) in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("name", "text", "message"), [
    ("plan.ini", "x", "unknown plan format"),
    ("nope.toml", None, "plan file not found"),
])
def test_unknown_plan_extension_and_missing_file(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    path = write(tmp_path / name, text) if text is not None else tmp_path / name
    with pytest.raises(ConfigError, match=message):
        load_plan(path)


def test_run_name_is_path_safe() -> None:
    assert run_name("set-24x24-L", "v3/bn", "light aug") == "set-24x24-L__v3-bn__light-aug"


# ---------------------------------------------------------------------------------------------- execution


def test_sweep_runs_all_then_skips_on_rerun(two_files: Path) -> None:
    plan = load_plan(write(two_files / "plan.toml", PLAN))
    trainer = FakeTrainer()
    lines: list[str] = []
    result = run_sweep(plan, two_files / "runs", train_fn=trainer, log=lines.append)
    assert result.ok and [o.action for o in result.outcomes] == ["trained"] * 4
    assert [c["run"] for c in trainer.calls] == [r.name for r in plan.runs]
    assert trainer.calls[0]["epochs"] == 2 and trainer.calls[0]["batch_size"] == 16 and trainer.calls[0]["seed"] == 3
    report = json.loads((two_files / "runs" / "report.json").read_text())
    assert report["total"] == 4 and report["complete"] and report["counts"] == {"done": 4}
    assert {r["run"] for r in report["runs"]} == {r.name for r in plan.runs}
    assert report["runs"][0]["dataset"] == "set-24x24-L" and report["runs"][0]["model"] == "v1"
    assert report["runs"][0]["dataset_mb"] > 0 and report["runs"][0]["epochs"] == 2
    assert set(report["best_per_dataset"]) == {"set-24x24-L", "set-24x24-RGB"}
    assert any("test accuracy" in line for line in lines)

    again = run_sweep(plan, two_files / "runs", train_fn=trainer)
    assert [o.action for o in again.outcomes] == ["skipped"] * 4
    assert len(trainer.calls) == 4


def test_sweep_log_shows_settings_as_training_applies_them(two_files: Path) -> None:
    # A refit has no validation images to select on: it keeps its last epoch, whatever the recipe says.
    text = PLAN.replace('models = ["v1", "v2"]', 'models = ["v1"]') + 'select = "val_loss"\nrefit = true\n'
    plan = load_plan(write(two_files / "plan.toml", text))
    lines: list[str] = []
    run_sweep(plan, two_files / "runs", train_fn=FakeTrainer(), log=lines.append)
    started = [line for line in lines if ": training (" in line]
    assert len(started) == 2 and all("select=last" in line and "refit=True" in line for line in started)
    assert not any("select=val_loss" in line for line in lines)


def test_interrupted_run_is_resumed_and_failed_run_retried(two_files: Path) -> None:
    plan = load_plan(write(two_files / "plan.toml", PLAN))
    killed, broken = plan.runs[1].name, plan.runs[2].name
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, two_files / "runs", train_fn=FakeTrainer(kill={killed}))
    assert run_status(two_files / "runs" / plan.runs[0].name) == "done"
    assert run_status(two_files / "runs" / killed) == "interrupted"
    assert run_status(two_files / "runs" / plan.runs[3].name) == "pending"

    trainer = FakeTrainer(fail={broken})
    result = run_sweep(plan, two_files / "runs", train_fn=trainer)
    assert [(o.name, o.action) for o in result.outcomes] == [
        (plan.runs[0].name, "skipped"), (killed, "resumed"), (broken, "failed"), (plan.runs[3].name, "trained"),
    ]
    assert [c["resume"] for c in trainer.calls] == [True, False, False]
    assert not result.ok and "boom" in result.failed[0].error
    assert run_status(two_files / "runs" / broken) == "failed"
    failed = json.loads((two_files / "runs" / broken / "failed.json").read_text())
    assert "ValueError: boom" in failed["error"] and "Traceback" in failed["traceback"]
    report = json.loads((two_files / "runs" / "report.json").read_text())
    assert report["counts"] == {"done": 3, "failed": 1} and not report["complete"]

    retrier = FakeTrainer()
    retry = run_sweep(plan, two_files / "runs", train_fn=retrier)
    assert [o.action for o in retry.outcomes] == ["skipped", "skipped", "trained", "skipped"]
    assert [(c["run"], c["resume"]) for c in retrier.calls] == [(broken, True)]  # continues its folder
    assert not (two_files / "runs" / broken / "failed.json").exists()


def test_task_id_runs_exactly_one(two_files: Path) -> None:
    plan = load_plan(write(two_files / "plan.toml", PLAN))
    trainer = FakeTrainer()
    result = run_sweep(plan, two_files / "runs", task_id=2, train_fn=trainer)
    assert [c["run"] for c in trainer.calls] == [plan.runs[2].name]
    assert [o.index for o in result.outcomes] == [2]
    report = json.loads((two_files / "runs" / "report.json").read_text())
    assert report["counts"] == {"done": 1, "pending": 3}
    with pytest.raises(ConfigError, match="task id 4 is out of range.*4 runs"):
        run_sweep(plan, two_files / "runs", task_id=4, train_fn=trainer)


def test_changed_settings_refuse_to_reuse_run_folder(two_files: Path) -> None:
    plan = load_plan(write(two_files / "plan.toml", PLAN))
    run_sweep(plan, two_files / "runs", task_id=0, train_fn=FakeTrainer())
    changed = load_plan(write(two_files / "plan.toml", PLAN.replace("epochs = 2", "epochs = 5")))
    with pytest.raises(ConfigError, match=r"other settings \(settings.epochs\)"):
        run_sweep(changed, two_files / "runs", task_id=0, train_fn=FakeTrainer())


def test_dry_run_changes_nothing(two_files: Path) -> None:
    plan = load_plan(write(two_files / "plan.toml", PLAN))
    run_sweep(plan, two_files / "runs", task_id=0, train_fn=FakeTrainer())
    before = sorted(p.relative_to(two_files) for p in (two_files / "runs").rglob("*"))
    result = run_sweep(plan, two_files / "runs", dry_run=True)
    assert [o.action for o in result.outcomes] == ["would-skip"] + ["would-train"] * 3
    assert sorted(p.relative_to(two_files) for p in (two_files / "runs").rglob("*")) == before


def test_run_locked_by_another_process_is_skipped(two_files: Path) -> None:
    plan = load_plan(write(two_files / "plan.toml", PLAN))
    folder = two_files / "runs" / plan.runs[0].name
    folder.mkdir(parents=True)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with file_lock(folder / ".run.lock"):
            held.set()
            release.wait(10)

    # flock locks belong to the open file description, so a second open() in this process conflicts too.
    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    try:
        assert run_status(folder) == "running"
        trainer = FakeTrainer()
        result = run_sweep(plan, two_files / "runs", task_id=0, train_fn=trainer)
        assert result.outcomes[0].action == "skipped" and trainer.calls == []
    finally:
        release.set()
        t.join()
    assert run_status(folder) == "started"


def test_missing_dataset_file_fails_the_run_with_a_clear_error(tmp_path: Path) -> None:
    plan = plan_from_dict({"datasets": [str(tmp_path / "set-24x24-L.h5")], "models": ["v1"]})
    result = run_sweep(plan, tmp_path / "runs", train_fn=FakeTrainer())
    assert not result.ok and "dataset file not found" in result.failed[0].error
    with pytest.raises(DataError, match="set-24x24-L.h5: dataset file not found"):
        prepare_datasets(plan)


class FakeCook:
    """Writes an HDF5 file with the attributes a cooked file carries (no images)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, root, out, *, sizes, modes, roi_crop, scale, seed, val_fraction, progress=None, workers=None):
        import h5py

        for s in sizes:
            for m in modes:
                path = Path(out) / f"set-{s}x{s}-{m}{'-roi' if roi_crop else ''}.h5"
                if path.is_file():  # like the real cook: skip a complete file with the same recipe
                    with h5py.File(path, "r") as fh:
                        if fh.attrs["scale"] == scale:
                            continue
                self.calls.append((sizes, modes, roi_crop, scale))
                with h5py.File(path, "w") as fh:
                    fh.attrs.update({"schema_version": 1, "created_by": "gtsrb-kit", "size": s, "mode": m,
                                     "roi": roi_crop, "scale": scale, "seed": seed, "val_fraction": val_fraction})


def test_recipes_cooked_once_and_recooked_when_the_recipe_changes(tmp_path: Path) -> None:
    cook = FakeCook()
    spec = {"datasets": [{"size": 24, "mode": ["L", "RGB"]}], "models": ["v1", "v2"],
            "cook": {"root": str(tmp_path), "scale": 0.5}}
    plan = plan_from_dict(spec, run_dir=tmp_path / "runs")
    result = run_sweep(plan, tmp_path / "runs", train_fn=FakeTrainer(), cook_fn=cook)
    assert result.ok and len(result.outcomes) == 4
    assert cook.calls == [((24,), ("L",), False, 0.5), ((24,), ("RGB",), False, 0.5)]
    assert (tmp_path / "runs" / "data" / "set-24x24-L.h5").is_file()
    prepare_datasets(plan, cook_fn=cook)
    assert len(cook.calls) == 2  # up to date: not cooked again
    spec["cook"]["scale"] = 0.25
    prepare_datasets(plan_from_dict(spec, run_dir=tmp_path / "runs"), cook_fn=cook)
    assert cook.calls[2:] == [((24,), ("L",), False, 0.25), ((24,), ("RGB",), False, 0.25)]


def test_concurrent_prepare_cooks_each_file_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cook = FakeCook()
    plan = plan_from_dict({"datasets": [{"size": 24, "mode": "L"}], "models": ["v1"],
                           "cook": {"root": str(tmp_path)}}, run_dir=tmp_path / "runs")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: prepare_datasets(plan, cook_fn=cook), range(4)))
    assert len(cook.calls) == 1


def test_recipe_datasets_are_named_by_the_store(tmp_path: Path) -> None:
    from gtsrb_kit.store import enhanced_filename

    plan = plan_from_dict({"datasets": [{"size": 24, "mode": "L-LHE", "roi": True}], "models": ["v1"]},
                          run_dir=tmp_path)
    assert plan.datasets[0].path.name == enhanced_filename(24, "L-LHE", True)


def test_cli_dry_run_lists_runs(two_files: Path) -> None:
    plan = write(two_files / "plan.toml", PLAN)
    result = runner.invoke(app, ["sweep", str(plan), "--run-dir", str(two_files / "runs"), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "4 runs" in lines[0]
    assert lines[1].split()[:3] == ["0", "would-train", "set-24x24-L__v1__none"]
    assert not (two_files / "runs").exists()


def test_cli_sweep_runs_with_a_fake_trainer_and_exit_code(two_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gtsrb_kit.sweep as sweep_module

    plan = write(two_files / "plan.toml", PLAN)
    monkeypatch.setattr(sweep_module, "_default_train", FakeTrainer(fail={"set-24x24-RGB__v2__none"}))
    result = runner.invoke(app, ["sweep", str(plan), "--run-dir", str(two_files / "runs")])
    assert result.exit_code == 1
    assert "3 trained, 1 failed" in result.stdout
    assert "failed: set-24x24-RGB__v2__none: ValueError: boom" in result.stderr
    monkeypatch.setattr(sweep_module, "_default_train", FakeTrainer())
    result = runner.invoke(app, ["sweep", str(plan), "--run-dir", str(two_files / "runs"), "--task-id", "3"])
    assert result.exit_code == 0, result.output
    assert "1 trained" in result.stdout


def test_default_run_dir_uses_env_and_plan_name(two_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gtsrb_kit.sweep as sweep_module

    monkeypatch.setenv("GTSRB_KIT_RUNS", str(two_files / "allruns"))
    monkeypatch.setattr(sweep_module, "_default_train", FakeTrainer())
    plan = write(two_files / "plan.toml", PLAN)
    result = runner.invoke(app, ["sweep", str(plan), "--only", "set-24x24-L__v1__none"])
    assert result.exit_code == 0, result.output
    assert (two_files / "allruns" / "plan" / "set-24x24-L__v1__none" / "metrics.json").is_file()
    assert os.listdir(two_files / "allruns" / "plan").count("set-24x24-L__v2__none") == 0


def test_sigterm_stops_a_sweep_like_ctrl_c(tmp_path: Path) -> None:
    """SLURM's time limit sends SIGTERM: the task exits 130 'interrupted', the run is not marked failed."""
    import signal
    import subprocess
    import sys
    import time

    plan = write(tmp_path / "plan.toml", 'datasets = [{size = 24, mode = "L"}]\nmodels = ["v1"]\n'
                 f'[cook]\nroot = "{tmp_path / "raw"}"\nout = "{tmp_path / "data"}"\n')
    run = tmp_path / "runs" / "set-24x24-L__v1__none"
    # Hold the cook lock so the task waits there (before any TensorFlow import) until it is killed.
    with file_lock(tmp_path / "data" / ".set-24x24-L.h5.lock"):
        proc = subprocess.Popen([sys.executable, "-m", "gtsrb_kit", "sweep", str(plan), "--run-dir",
                                 str(tmp_path / "runs"), "--task-id", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (run / "run.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    assert run_status(run) == "started" and not (run / "failed.json").exists()
