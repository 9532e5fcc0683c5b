"""Training: run folder contents, determinism, input pipeline, resume after a kill, multi-device, CLI errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from gtsrb_kit.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
TINY = {"width": 8}  # a 40 k-parameter vgg-bn keeps these tests fast


@pytest.fixture(scope="module")
def cooked(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cooked file: 24x24 RGB, about 235 training / 200 validation / 172 test images."""
    from gtsrb_kit.cook import cook_dataset

    out = tmp_path_factory.mktemp("cooked")
    results = cook_dataset(synth_root, out, sizes=(24,), modes=("RGB",), val_fraction=0.5, workers=1)
    return results[0].path


@pytest.fixture(scope="module")
def first_run(cooked: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from gtsrb_kit.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "a"
    calls: list[tuple] = []
    metrics = train(cooked, model="vgg-bn", augment="strong", epochs=2, batch_size=64, run_dir=run_dir, seed=0,
                    verbose=0, progress=lambda *a: calls.append(a), model_options=TINY)
    assert calls[-1] == ("train", 2, 2)
    return run_dir, metrics


def test_run_folder(first_run: tuple[Path, dict], cooked: Path) -> None:
    from gtsrb_kit.store import load_split
    from gtsrb_kit.train import read_keras_metadata

    run_dir, metrics = first_run
    for name in ("best.keras", "last.keras", "history.csv", "history.json", "learning_curves.png", "metrics.json",
                 "config.json", "state.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").rglob("events.out.tfevents.*"))
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("test_accuracy", "best_val_accuracy", "best_epoch", "epochs_completed", "duration_s", "model", "data",
                "data_fingerprint", "model_params", "seed", "augment", "batch_size", "versions", "per_class"):
        assert key in metrics, key
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    val = [h["val_accuracy"] for h in history]
    assert metrics["best_epoch"] == 1 + int(np.argmax(val)) and metrics["best_val_accuracy"] == pytest.approx(max(val))
    assert metrics["epochs_completed"] == 2 and metrics["augment"] == "strong" and metrics["model"] == "vgg-bn"
    _, y_test = load_split(cooked, "test")
    assert metrics["test_count"] == len(y_test) and len(metrics["per_class"]) == 43
    assert sum(r["support"] for r in metrics["per_class"]) == len(y_test)
    assert metrics["test_errors"] == round((1 - metrics["test_accuracy"]) * len(y_test))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preprocessing"]["size"] == 24 and config["preprocessing"]["mode"] == "RGB"
    assert config["args"]["seed"] == 0 and config["args"]["epochs"] == 2
    best_meta = read_keras_metadata(run_dir / "best.keras")
    assert best_meta["mode"] == "RGB" and best_meta["epoch"] == metrics["best_epoch"]
    assert (run_dir / "history.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy,val_loss")


@pytest.mark.slow
def test_cli_train_same_seed_same_history(first_run: tuple[Path, dict], cooked: Path, tmp_path: Path) -> None:
    """Same arguments through the CLI: identical per-epoch losses (CPU determinism)."""
    from gtsrb_kit.cli import app

    run_dir, _ = first_run
    result = CliRunner().invoke(app, ["train", "--data", str(cooked), "--model", "vgg-bn", "--preset", "strong",
                                      "--epochs", "2", "--batch-size", "64", "--run-dir", str(tmp_path / "b"),
                                      "--seed", "0", "--model-option", "width=8", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    # The data was cooked from a synth tree: the last lines point to the real-data commands.
    assert "next: the real benchmark" in result.output and "gtsrb-kit download --root data/gtsrb" in result.output
    a = json.loads((run_dir / "history.json").read_text())
    b = json.loads((tmp_path / "b" / "history.json").read_text())
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra["val_accuracy"] == rb["val_accuracy"]


def test_training_pipeline_is_the_public_loader(cooked: Path) -> None:
    from gtsrb_kit.augment import Augmenter
    from gtsrb_kit.store import load_split, tf_dataset

    x, y = load_split(cooked, "train")
    steps = math.ceil(len(x) / 50)

    def loader(**kw: object) -> object:
        return tf_dataset(cooked, "train", batch_size=50, shuffle=True, seed=3, num_classes=43, repeat=True, **kw)

    ds = loader(augmenter=Augmenter("none"))
    assert ds.element_spec[0].shape.as_list() == [None, 24, 24, 3]
    batches = list(ds.take(2 * steps).as_numpy_iterator())
    xb, yb = batches[0]
    assert xb.dtype == np.float32 and 0.0 <= xb.min() and xb.max() <= 1.0 and yb.shape == (50, 43)
    # each epoch is a permutation of the whole split, different per epoch
    epoch0 = np.concatenate([b[1].argmax(1) for b in batches[:steps]])
    epoch1 = np.concatenate([b[1].argmax(1) for b in batches[steps:]])
    assert sorted(epoch0) == sorted(y.tolist()) == sorted(epoch1) and not np.array_equal(epoch0, epoch1)
    pixels0 = np.concatenate([b[0] for b in batches[:steps]])
    assert np.allclose(np.sort(pixels0.reshape(len(x), -1).sum(1)), np.sort((x / 255.0).reshape(len(x), -1).sum(1)),
                       atol=1e-3)
    # starting at epoch 1 reproduces epoch 1 of an uninterrupted run, augmentation included
    aug = Augmenter("fidle", seed=3)
    full = list(loader(augmenter=aug).take(steps + 1).as_numpy_iterator())
    resumed = next(loader(augmenter=aug, initial_epoch=1).as_numpy_iterator())
    assert np.array_equal(full[steps][0], resumed[0]) and np.array_equal(full[steps][1], resumed[1])
    again = next(loader(augmenter=aug).as_numpy_iterator())  # same seed, same batches
    assert np.array_equal(full[0][0], again[0]) and np.array_equal(full[0][1], again[1])


KILLED = r"""
import sys, time
from gtsrb_kit.devices import split_cpu
split_cpu(2)  # two logical CPU devices: the MirroredStrategy path without GPUs
from gtsrb_kit.train import train

def progress(description, done, total):
    if done == 1:
        print("EPOCH1", flush=True)
        time.sleep(600)  # stand-in for a long second epoch: the test kills us here

train(sys.argv[1], model="vgg-bn", augment="fidle", epochs=3, batch_size=64, run_dir=sys.argv[2], seed=1,
      verbose=0, progress=progress, devices="cpu:0,1", pipeline=sys.argv[3], model_options={"width": 8})
"""


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["host", "device"])
def test_resume_after_kill(cooked: Path, tmp_path: Path, pipeline: str) -> None:
    """Kill a run (on two logical CPU devices) after epoch 1; resume continues at epoch 2."""
    from gtsrb_kit.train import train

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(cooked), str(run_dir), pipeline], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        if line.strip() != "EPOCH1":
            proc.kill()
            pytest.fail(f"training subprocess did not reach epoch 1: {proc.stderr.read()[-3000:]}")
    finally:
        proc.kill()
        proc.wait()
    assert (run_dir / "last.keras").is_file() and not (run_dir / "metrics.json").exists()
    before = json.loads((run_dir / "state.json").read_text())
    assert before["epochs_completed"] == 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["runtime"]["replicas"] == 2 and len(config["runtime"]["devices"]) == 2
    assert config["runtime"]["pipeline"] == pipeline
    assert not list(run_dir.glob("*.tmp*")), "a half-written file was left behind"

    epochs_run: list[int] = []
    metrics = train(cooked, model="vgg-bn", augment="fidle", epochs=3, batch_size=64, run_dir=run_dir, seed=1,
                    verbose=0, resume=True, model_options=TINY, pipeline=pipeline,
                    progress=lambda d, done, t: epochs_run.append(done))
    assert epochs_run == [1, 2, 3]  # starts after epoch 1, runs 2 and 3
    assert metrics["epochs_completed"] == 3 and metrics["resumed_from_epoch"] == 1
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[0] == before["history"][0]  # epoch 1 kept, not redone
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 3


@pytest.mark.parametrize(("settings", "message"), [
    ({"model": "nope"}, "unknown model 'nope'"),
    ({"lr_schedule": "zigzag"}, "unknown learning-rate schedule"),
    ({"augment": "wild"}, "unknown augmentation preset"),
    ({"model": "v1", "model_options": {"depth": 3}}, r"model 'v1' has no option depth \(its options: none\)"),
    ({"learning_rate": -1.0}, "learning rate must be positive"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"class_balance": 1.5}, "class balance 1.5: not between 0 and 1; use 0"),
])
def test_train_rejects_bad_settings(cooked: Path, tmp_path: Path, settings: dict, message: str) -> None:
    from gtsrb_kit.train import train

    with pytest.raises(ConfigError, match=message):
        train(cooked, run_dir=tmp_path / "x", **settings)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("settings", "message"), [
    ({"epochs": 2}, "already holds a training run; pass --resume"),
    ({"augment": "strong", "epochs": 2, "batch_size": 32, "resume": True, "model_options": TINY},
     r"cannot resume with different settings \(batch_size"),
])
def test_train_refuses_a_conflicting_run_folder(cooked: Path, first_run: tuple[Path, dict], settings: dict,
                                                message: str) -> None:
    from gtsrb_kit.train import train

    with pytest.raises(ConfigError, match=message):
        train(cooked, model="vgg-bn", run_dir=first_run[0], **settings)


def test_resume_of_finished_run_returns_its_metrics(first_run: tuple[Path, dict], cooked: Path) -> None:
    from gtsrb_kit.train import train

    run_dir, metrics = first_run
    again = train(cooked, model="vgg-bn", augment="strong", epochs=2, batch_size=64, run_dir=run_dir, seed=0,
                  resume=True, verbose=0, model_options=TINY)
    assert again == json.loads(json.dumps(metrics))


def test_a_run_from_before_a_setting_existed_resumes_with_its_default(first_run: tuple[Path, dict], cooked: Path,
                                                                      tmp_path: Path) -> None:
    import shutil

    from gtsrb_kit.train import train

    run_dir = tmp_path / "old"
    shutil.copytree(first_run[0], run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    for key in ("refit", "ema"):
        del config["args"][key]
    (run_dir / "config.json").write_text(json.dumps(config))
    same = dict(model="vgg-bn", augment="strong", epochs=2, batch_size=64, run_dir=run_dir, seed=0, resume=True,
                verbose=0, model_options=TINY)
    assert train(cooked, **same) == json.loads(json.dumps(first_run[1]))
    with pytest.raises(ConfigError, match=r"cannot resume with different settings \(refit: False -> True, select"):
        train(cooked, **same, refit=True)


def test_cli_errors(tmp_path: Path, cooked: Path) -> None:
    from gtsrb_kit.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["train", "--data", str(tmp_path / "nope.h5"), "--run-dir", str(tmp_path / "r")])
    assert missing.exit_code == 1
    assert "error:" in missing.output and "nope.h5: no such file; run 'gtsrb-kit cook'" in missing.output
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    bad = runner.invoke(app, ["train", "--data", str(foreign), "--run-dir", str(tmp_path / "r")])
    assert bad.exit_code == 1 and "not a gtsrb-kit dataset" in bad.output
    unknown = runner.invoke(app, ["train", "--data", str(cooked), "--model", "resnet-9000",
                                  "--run-dir", str(tmp_path / "r")])
    assert unknown.exit_code == 2 and "error: unknown model 'resnet-9000'" in unknown.output
    ema = runner.invoke(app, ["train", "--data", str(cooked), "--ema", "1.5", "--run-dir", str(tmp_path / "r")])
    assert ema.exit_code == 2 and "error: ema momentum must be between 0 and 1" in ema.output
    recipe = runner.invoke(app, ["train", "--data", str(cooked), "--recipe", "fastest", "--run-dir", str(tmp_path / "r")])
    assert recipe.exit_code == 2 and "error: unknown recipe 'fastest'; use one of quick, accurate" in recipe.output
    assert "Traceback" not in missing.output + bad.output + unknown.output + ema.output + recipe.output
    assert not (tmp_path / "r").exists()
    with pytest.raises(DataError):
        from gtsrb_kit.train import train

        train(foreign, run_dir=tmp_path / "r")


def test_cli_recipe_gives_its_settings_and_options_beside_it_win(tmp_path: Path, cooked: Path) -> None:
    from gtsrb_kit.cli import app
    from gtsrb_kit.train import RECIPES

    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    assert all(name in help_text for name in RECIPES)
    result = CliRunner().invoke(app, ["train", "--data", str(cooked), "--recipe", "quick", "--epochs", "1",
                                      "--model-option", "width=8", "--run-dir", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    args = json.loads((tmp_path / "r" / "config.json").read_text())["args"]
    quick = RECIPES["quick"]
    assert (args["model"], args["augment"], args["ema"], args["select"]) == (quick.model, quick.augment, quick.ema,
                                                                               quick.select)
    assert args["epochs"] == 1  # given beside the recipe: it wins


def test_cli_without_a_recipe_keeps_the_plain_defaults(monkeypatch: pytest.MonkeyPatch, cooked: Path) -> None:
    import gtsrb_kit.train
    from gtsrb_kit.cli import app

    seen: dict = {}

    class Stop(Exception):
        pass

    def capture(data, **kwargs):  # the CLI's call into the library, not a training
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(gtsrb_kit.train, "train", capture)
    CliRunner().invoke(app, ["train", "--data", str(cooked)])
    assert seen["augment"] == "none" and not {"epochs", "ema", "select"} & set(seen)  # train()'s own defaults
    CliRunner().invoke(app, ["train", "--data", str(cooked), "--augment", "--recipe", "accurate", "--select",
                             "val_accuracy"])
    assert (seen["augment"], seen["epochs"], seen["ema"], seen["select"]) == ("strong", 20, 0.999, "val_accuracy")


def test_cli_augment_preview(cooked: Path, tmp_path: Path) -> None:
    from gtsrb_kit.cli import app

    runner = CliRunner()
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["augment-preview", "--data", str(cooked), "--out", str(out), "--classes", "0,14,17",
                                 "--draws", "3", "--preset", "fidle"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(app, ["augment-preview", "--data", str(cooked), "--out", str(tmp_path / "x.png"),
                              "--classes", "zero"])
    assert bad.exit_code == 2 and "error: --classes 'zero'" in bad.output
    wrong = runner.invoke(app, ["augment-preview", "--data", str(cooked), "--out", str(tmp_path / "x.png"),
                                "--preset", "mirror"])
    assert wrong.exit_code == 2 and "unknown augmentation preset 'mirror'" in wrong.output
    assert not (tmp_path / "x.png").exists()


def test_cli_evaluate_defaults_to_the_runs_data(first_run: tuple[Path, dict], tmp_path: Path) -> None:
    from gtsrb_kit.cli import app

    run_dir, metrics = first_run
    result = CliRunner().invoke(app, ["evaluate", "--model", str(run_dir / "best.keras"), "--out", str(tmp_path),
                                      "--json"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["data"] == metrics["data"]
    assert parsed["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)  # same checkpoint, same test set


def test_next_steps_only_for_synthetic_data(tmp_path: Path) -> None:
    import h5py

    from gtsrb_kit.cli.train import _from_synth

    with h5py.File(tmp_path / "real.h5", "w") as handle:
        handle.attrs["source_layout"] = "official"
    assert not _from_synth(tmp_path / "real.h5") and not _from_synth(tmp_path / "missing.h5")


def test_select_by_validation_loss(cooked: Path, tmp_path: Path) -> None:
    from gtsrb_kit.train import read_history, train

    metrics = train(cooked, model="vgg-bn", epochs=3, batch_size=64, run_dir=tmp_path / "r", seed=1, verbose=0,
                    model_options=TINY, select="val_loss")
    history = read_history(tmp_path / "r")
    best = int(np.argmin(history["val_loss"])) + 1
    assert metrics["best_epoch"] == best and metrics["select"] == "val_loss"
    assert metrics["best_val_accuracy"] == pytest.approx(history["val_accuracy"][best - 1], abs=1e-6)


def test_unknown_selection() -> None:
    from gtsrb_kit.errors import ConfigError
    from gtsrb_kit.train import TrainConfig

    with pytest.raises(ConfigError, match="unknown selection 'test_accuracy'"):
        TrainConfig(select="test_accuracy")


@pytest.mark.parametrize("pipeline", ["host", "device"])
def test_refit_trains_on_train_and_val_and_keeps_the_last_epoch(cooked: Path, tmp_path: Path, pipeline: str) -> None:
    import keras

    from gtsrb_kit.store import read_info
    from gtsrb_kit.train import read_history, train

    class Steps(keras.callbacks.Callback):
        def on_train_begin(self, logs: object = None) -> None:
            self.steps = [0, 0]

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            self.steps[self.epoch] += 1

        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.epoch = epoch

    counts = {s: read_info(cooked)["splits"][s]["count"] for s in ("train", "val")}
    images = counts["train"] + counts["val"]
    steps = Steps()
    metrics = train(cooked, model="vgg-bn", epochs=2, batch_size=32, run_dir=tmp_path / "r", verbose=0,
                    model_options=TINY, ema=0.9, select="val_loss", refit=True, pipeline=pipeline, callbacks=[steps])
    assert steps.steps == [images // 32 if pipeline == "device" else math.ceil(images / 32)] * 2
    assert metrics["refit"] and metrics["train_images"] == images and metrics["select"] == "last"
    assert metrics["best_epoch"] == 2 and metrics["best_val_accuracy"] is None
    assert not any(k.startswith("val_") for k in read_history(tmp_path / "r"))


def test_cli_refit_and_its_refusal_of_early_stopping(cooked: Path, tmp_path: Path) -> None:
    from gtsrb_kit.cli import app

    base = ["train", "--data", str(cooked), "--refit", "--epochs", "1", "--model-option", "width=8", "-q"]
    stop = CliRunner().invoke(app, [*base, "--early-stopping", "2", "--run-dir", str(tmp_path / "x")])
    assert stop.exit_code == 2 and "error: early stopping watches the validation images" in stop.output
    assert not (tmp_path / "x").exists()
    done = CliRunner().invoke(app, [*base, "--run-dir", str(tmp_path / "r")])
    assert done.exit_code == 0, done.output
    assert "trained on train+val, kept at epoch 1/1" in done.output


def test_cli_class_balance_is_a_recorded_setting_that_changes_the_batches(first_run: tuple[Path, dict],
                                                                          cooked: Path, tmp_path: Path) -> None:
    """--class-balance 1: metrics and config.json say so; the epochs differ from plain shuffles of the same seed."""
    from gtsrb_kit.cli import app

    base = ["train", "--data", str(cooked), "--augment", "--epochs", "2", "--batch-size", "64", "--seed", "0",
            "--model-option", "width=8", "-q"]
    done = CliRunner().invoke(app, [*base, "--class-balance", "1", "--run-dir", str(tmp_path / "b")])
    assert done.exit_code == 0, done.output
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert metrics["class_balance"] == 1.0 and config["args"]["class_balance"] == 1.0
    plain = json.loads((first_run[0] / "history.json").read_text())
    balanced = json.loads((tmp_path / "b" / "history.json").read_text())
    assert first_run[1]["class_balance"] == 0.0 and plain[0]["loss"] != balanced[0]["loss"]
    bad = CliRunner().invoke(app, [*base, "--class-balance", "-1", "--run-dir", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "error: class balance -1.0: not between 0 and 1" in bad.output
    assert not (tmp_path / "x").exists()


def test_extra_callbacks_see_every_epoch(cooked: Path, tmp_path: Path) -> None:
    """``train(callbacks=...)``: called at every epoch end, after the run's state; not a recorded setting."""
    import keras

    from gtsrb_kit.train import TrainConfig, run_training

    seen: list[tuple[int, int, set]] = []

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            state = json.loads((tmp_path / "r" / "state.json").read_text())
            seen.append((epoch, state["epochs_completed"], set(logs or {})))

    cfg = TrainConfig(cooked, model="vgg-bn", epochs=2, run_dir=tmp_path / "r", verbose=0, model_options=TINY)
    run_training(cfg, callbacks=[Recorder()])
    assert [(e, done) for e, done, _ in seen] == [(0, 1), (1, 2)]
    assert all({"loss", "val_accuracy"} <= keys for _, _, keys in seen)
    assert "callbacks" not in json.loads((tmp_path / "r" / "config.json").read_text())["args"]


@pytest.mark.parametrize(("faster", "policy"), [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_precision_on_the_cpu(monkeypatch: pytest.MonkeyPatch, faster: bool, policy: str) -> None:
    """auto: bfloat16 where the CPU trains faster with it, else float32."""
    import keras

    import gtsrb_kit.devices as devices

    monkeypatch.setattr(devices, "cpu_prefers_bfloat16", lambda cpuinfo=None: faster)
    try:
        setup = devices.setup_devices("cpu", "auto")
        assert keras.mixed_precision.global_policy().name == policy and setup.mixed_precision == faster
        devices.setup_devices("cpu", "off")
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        devices.reset_policy()


@pytest.mark.parametrize(("vendor", "flags", "faster"), [
    ("AuthenticAMD", "fpu avx512f avx512_bf16 avx512_vnni", True),      # measured 1.12-1.21x
    ("GenuineIntel", "fpu avx512f avx512_bf16 avx512_fp16", False),     # measured 0.74x
    ("GenuineIntel", "fpu avx512f avx512_bf16 amx_bf16 amx_tile", True),
    ("AuthenticAMD", "fpu avx2 fma", False),
    ("", "", False),
])
def test_which_cpus_prefer_bfloat16(vendor: str, flags: str, faster: bool) -> None:
    from gtsrb_kit.devices import cpu_prefers_bfloat16

    cpuinfo = f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: some CPU\nflags\t\t: {flags}\n\n"
    assert cpu_prefers_bfloat16(cpuinfo) is faster
    assert cpu_prefers_bfloat16(cpuinfo.replace("flags\t\t:", "flags:")) is faster


class _Interrupted(Exception):
    pass


def _interrupt_after(epochs: int) -> object:
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch + 1 == epochs:
                raise _Interrupted

    return Interrupt()


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(path, compile=False).get_weights()


def test_ema_validates_and_keeps_the_average(cooked: Path, tmp_path: Path) -> None:
    """``ema``: validation scores the moving average and best.keras holds it; training keeps the current weights."""
    from gtsrb_kit.evaluate import load_model, split_scores
    from gtsrb_kit.train import read_history, train

    run_dir = tmp_path / "ema"
    metrics = train(cooked, model="vgg-bn", epochs=1, run_dir=run_dir, seed=0, verbose=0, model_options=TINY,
                    mixed_precision="off", ema=0.9)
    assert metrics["ema"] == 0.9 and metrics["best_epoch"] == 1
    _, y_val, probs, _ = split_scores(load_model(run_dir / "best.keras"), cooked, "val")
    assert np.mean(probs.argmax(axis=1) == y_val) == pytest.approx(read_history(run_dir)["val_accuracy"][0],
                                                                    abs=1.5 / len(y_val))
    # after 4 steps at momentum 0.9 the average is mostly the initial weights, not the current ones
    kept, current = _weights(run_dir / "best.keras"), _weights(run_dir / "last.keras")
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(kept, current)) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("ema", [None, 0.8])
def test_resumed_run_equals_the_uninterrupted_one(cooked: Path, tmp_path: Path, ema: float | None) -> None:
    """Interrupted after epoch 1 and resumed, a run ends bit for bit as the uninterrupted one: data order,
    augmentation, dropout and the weights' average all continue where they stopped."""
    from gtsrb_kit.train import TrainConfig, read_history, run_training

    settings = dict(model="vgg-bn", augment="fidle", epochs=3, seed=3, verbose=0, model_options=TINY,
                    mixed_precision="off", ema=ema, select="val_loss")
    whole = run_training(TrainConfig(cooked, run_dir=tmp_path / "whole", **settings))
    with pytest.raises(_Interrupted):
        run_training(TrainConfig(cooked, run_dir=tmp_path / "cut", **settings), callbacks=[_interrupt_after(1)])
    resumed = run_training(TrainConfig(cooked, run_dir=tmp_path / "cut", resume=True, **settings))
    assert resumed["resumed_from_epoch"] == 1 and resumed["best_epoch"] == whole["best_epoch"]
    for key in ("loss", "val_loss"):
        assert read_history(tmp_path / "cut")[key] == read_history(tmp_path / "whole")[key]
    for a, b in zip(_weights(tmp_path / "cut" / "best.keras"), _weights(tmp_path / "whole" / "best.keras")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ema", [0.0, 1.0, -0.5])
def test_ema_momentum_is_checked(ema: float) -> None:
    from gtsrb_kit.train import TrainConfig

    with pytest.raises(ConfigError, match="ema momentum must be between 0 and 1"):
        TrainConfig(ema=ema)


def test_looking_at_the_average_never_changes_training(cooked: Path, tmp_path: Path) -> None:
    """A callback that scores the average after every epoch (as the benchmarks do) leaves the run bit for bit."""
    import keras

    from gtsrb_kit.train import TrainConfig, averaged_weights, read_history, run_training

    class Peek(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            before = [np.array(v) for v in self.model.trainable_variables]
            with averaged_weights(self.model):
                assert any(not np.array_equal(a, np.array(v)) for a, v in zip(before, self.model.trainable_variables))
            for a, v in zip(before, self.model.trainable_variables):
                np.testing.assert_array_equal(a, np.array(v))

    settings = dict(model="vgg-bn", epochs=2, seed=4, verbose=0, model_options=TINY, mixed_precision="off", ema=0.9)
    run_training(TrainConfig(cooked, run_dir=tmp_path / "plain", **settings))
    run_training(TrainConfig(cooked, run_dir=tmp_path / "peeked", **settings), callbacks=[Peek()])
    assert read_history(tmp_path / "peeked")["loss"] == read_history(tmp_path / "plain")["loss"]
    for a, b in zip(_weights(tmp_path / "peeked" / "last.keras"), _weights(tmp_path / "plain" / "last.keras")):
        np.testing.assert_array_equal(a, b)
