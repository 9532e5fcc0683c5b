"""The device pipeline (``--pipeline device``): the host pipeline's batches, made in-graph; training with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gtsrb_kit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = {"width": 8}


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (103, 16, 16, 3), dtype=np.uint8), rng.integers(0, 43, 103)


def _device(split: tuple[np.ndarray, np.ndarray], replicas: int, seed: int = 4, preset: str = "strong") -> object:
    from gtsrb_kit.augment import Augmenter
    from gtsrb_kit.store import DeviceBatches

    return DeviceBatches(*split, batch_size=20, seed=seed, augmenter=Augmenter(preset, seed=seed), num_classes=43,
                         replicas=replicas)


def _batch(batches: object, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``k`` made inside a tf.function, the replicas' shares put back together, pixels as uint8."""
    import tensorflow as tf

    make = tf.function(lambda k, r: batches(k, r))
    parts = [make(tf.constant(k, tf.int64), r) for r in range(batches.replicas)]
    x = np.concatenate([p[0].numpy() for p in parts])
    return np.rint(x * 255).astype(np.uint8), np.concatenate([p[1].numpy() for p in parts])


@pytest.mark.parametrize("replicas", [1, 2])
def test_device_batches_are_the_host_pipelines(split: tuple[np.ndarray, np.ndarray], replicas: int) -> None:
    """Batch k on the device equals batch k of the tf.data pipeline (full batches), augmentation included."""
    from gtsrb_kit.augment import Augmenter
    from gtsrb_kit.store import array_dataset

    ds = array_dataset(*split, batch_size=20, shuffle=True, seed=4, augmenter=Augmenter("strong", seed=4),
                       num_classes=43, repeat=True, drop_remainder=True)
    host = list(ds.take(12).as_numpy_iterator())
    batches = _device(split, replicas)
    assert batches.steps == 5
    for k in (0, 4, 5, 11):  # within an epoch, across the epoch boundary, and later
        x, y = _batch(batches, k)
        assert np.array_equal(x, np.rint(host[k][0] * 255).astype(np.uint8)), k
        assert np.array_equal(y, host[k][1]), k


def test_class_balanced_device_batches_are_the_host_pipelines(split: tuple[np.ndarray, np.ndarray]) -> None:
    """With class balance both pipelines draw the same images, with replacement."""
    from gtsrb_kit.store import DeviceBatches, array_dataset

    ds = array_dataset(*split, batch_size=20, shuffle=True, seed=4, repeat=True, drop_remainder=True,
                       class_balance=1.0, normalize=False)
    host = list(ds.take(6).as_numpy_iterator())
    batches = DeviceBatches(*split, batch_size=20, seed=4, class_balance=1.0)
    drawn = [_batch(batches, k) for k in range(6)]
    assert all(np.array_equal(d[0], h[0]) and np.array_equal(d[1], h[1]) for d, h in zip(drawn, host, strict=True))
    epoch = np.concatenate([d[0] for d in drawn[:5]]).reshape(100, -1)
    assert len(np.unique(epoch, axis=0)) < 100  # drawn with replacement: some images twice in one epoch


def test_device_batches_same_seed_same_batches(split: tuple[np.ndarray, np.ndarray]) -> None:
    first, again, other = (_batch(_device(split, 1, seed=s), 3) for s in (7, 7, 8))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])

def test_device_epoch_is_a_shuffle_of_full_batches(split: tuple[np.ndarray, np.ndarray]) -> None:
    """Labels = image numbers: an epoch holds steps x batch_size different images, a new order each epoch."""
    from gtsrb_kit.store import DeviceBatches

    batches = DeviceBatches(split[0], np.arange(len(split[0])), batch_size=20, seed=2)
    epochs = [np.concatenate([_batch(batches, e * batches.steps + b)[1] for b in range(batches.steps)])
              for e in (0, 1)]
    assert all(len(set(ids.tolist())) == 100 for ids in epochs) and not np.array_equal(*epochs)


def test_device_batches_never_flip() -> None:
    """Dark left half, bright right half: after the strongest preset the right half is still the brighter."""
    from gtsrb_kit.augment import Augmenter
    from gtsrb_kit.store import DeviceBatches

    x = np.zeros((64, 24, 24, 3), np.uint8)
    x[:, :, 12:] = 255
    batches = DeviceBatches(x, np.zeros(64, int), batch_size=64, augmenter=Augmenter("strong", seed=1))
    for k in range(3):
        xb = _batch(batches, k)[0].astype(float)
        assert (xb[:, :, 12:].mean(axis=(1, 2, 3)) > xb[:, :, :12].mean(axis=(1, 2, 3)) + 100).all()


def test_device_batches_refuse_what_they_cannot_do(split: tuple[np.ndarray, np.ndarray]) -> None:
    from gtsrb_kit.augment import Augmenter
    from gtsrb_kit.store import DeviceBatches

    with pytest.raises(ConfigError, match="does not split over 3 devices"):
        DeviceBatches(*split, batch_size=20, replicas=3)
    with pytest.raises(ConfigError, match="makes full batches only and the training split has 103 images"):
        DeviceBatches(*split, batch_size=200)
    with pytest.raises(ConfigError, match="cannot run an albumentations pipeline"):
        DeviceBatches(*split, batch_size=20, augmenter=Augmenter("fidle", path="albumentations"))


@pytest.fixture(scope="module")
def cooked(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gtsrb_kit.cook import cook_dataset

    out = tmp_path_factory.mktemp("cooked-device")
    return cook_dataset(synth_root, out, sizes=(24,), modes=("RGB",), val_fraction=0.5, workers=1)[0].path


def test_training_on_the_device_pipeline(cooked: Path, tmp_path: Path) -> None:
    """Same seed, same run; full batches only; the pipeline is recorded."""
    from gtsrb_kit.train import train

    runs = [train(cooked, model="vgg-bn", augment="strong", epochs=2, batch_size=64, run_dir=tmp_path / name,
                  seed=0, verbose=0, pipeline="device", model_options=TINY) for name in ("a", "b")]
    assert runs[0]["pipeline"] == "device" and runs[0]["test_accuracy"] == runs[1]["test_accuracy"]
    a, b = (json.loads((tmp_path / name / "history.json").read_text()) for name in ("a", "b"))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["runtime"]["pipeline"] == "device" and config["args"]["pipeline"] == "device"
    host = train(cooked, model="vgg-bn", augment="strong", epochs=1, batch_size=64, run_dir=tmp_path / "host",
                 seed=0, verbose=0, model_options=TINY)
    assert host["pipeline"] == "host"  # auto on the CPU


@pytest.mark.parametrize(("settings", "message"), [
    ({"pipeline": "gpu"}, "unknown pipeline 'gpu'; use one of auto, host, device"),
    ({"pipeline": "device", "augment": "fidle", "augment_path": "albumentations"},
     "cannot run an albumentations pipeline"),
    ({"pipeline": "device", "batch_size": 5000}, "makes full batches only"),
])
def test_bad_pipeline_settings_leave_nothing(cooked: Path, tmp_path: Path, settings: dict, message: str) -> None:
    from gtsrb_kit.train import train

    with pytest.raises(ConfigError, match=message):
        train(cooked, run_dir=tmp_path / "x", model_options=TINY, **settings)
    assert not (tmp_path / "x").exists()


def test_cli_pipeline_option(cooked: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gtsrb_kit", "train", "--data", str(cooked), "--pipeline", "tpu",
                             "--run-dir", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["error: unknown pipeline 'tpu'; use one of auto, host, device"]


@pytest.mark.parametrize("pipeline", ["host", "device"])
def test_several_steps_per_call_train_the_same(cooked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              pipeline: str) -> None:
    """The GPU setting (several steps per call into the compiled step), forced on the CPU: the same run."""
    import gtsrb_kit.train as train_module

    def run(name: str) -> list[float]:
        train_module.train(cooked, model="vgg-bn", augment="strong", epochs=2, batch_size=64, run_dir=tmp_path / name,
                           seed=0, verbose=0, pipeline=pipeline, model_options=TINY)
        return [row["loss"] for row in json.loads((tmp_path / name / "history.json").read_text())]

    real = train_module.steps_per_execution
    assert real(490, gpu=True) == 14 and real(491, gpu=True) == 1 and real(490, gpu=False) == 1
    one = run("one")
    chosen = []

    def several(steps: int, gpu: bool) -> int:
        chosen.append(max(d for d in (1, 2, 3, 4, 5) if steps % d == 0))
        return chosen[-1]

    monkeypatch.setattr(train_module, "steps_per_execution", several)
    assert run("several") == one and chosen[0] > 1
