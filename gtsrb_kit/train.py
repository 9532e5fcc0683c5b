"""Train a bundled model on a cooked HDF5 file: checkpoints, resume, TensorBoard, final test.

What the course did differently, on purpose:

* the best checkpoint is chosen on VALIDATION accuracy (the track-wise split stored in the file),
  not on training accuracy, and the test set is evaluated exactly once, at the end, with that
  best checkpoint;
* ``last.keras`` (with the optimizer state) is written atomically after every epoch, so a killed
  run continues with ``resume=True`` from the last completed epoch.

Run folder (``run_dir``)::

    config.json          every argument + the data's size/mode/roi/class names (for predict)
    best.keras           best validation accuracy so far (preprocessing embedded, see evaluate)
    last.keras           last completed epoch, with optimizer state and run state (for resume)
    state.json           epochs done, best epoch, history so far (human-readable copy)
    history.csv/.json    per-epoch loss, accuracy, val_loss, val_accuracy, learning rate, seconds
    learning_curves.png  loss and accuracy curves
    metrics.json         written last: test accuracy, per-class precision/recall, ... (finished runs)
    tb/                  TensorBoard logs

The input pipeline: the whole split sits in memory (cooked files are small: 13 k images of
48x48x3 are 90 MB); each epoch draws a seeded permutation ``(seed, epoch)``, gathers batches,
augments each batch with one seeded call (see :mod:`gtsrb_kit.augment`) in a parallel map,
converts to ``float32`` in [0, 1] and prefetches. Same seed, same batches, same augmentations.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import sha256_file, write_text_atomic
from gtsrb_kit.plotting import pyplot, save_png
from gtsrb_kit.models import DEFAULT_MODEL, MODELS, build_model
from gtsrb_kit.progress import ProgressCallback, report

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "onecycle")
DEFAULT_SCHEDULE = "cosine"
METADATA_NAME = "gtsrb_kit.json"  # extra member of the .keras zip: preprocessing + run state
# arguments that may differ between a run and its resumption
_RESUME_FREE = {"verbose", "devices", "mixed_precision", "early_stopping", "resume"}


def default_data_file() -> Path:
    """``<default_data_dir()>/set-48x48-RGB.h5``: what ``gtsrb-kit cook`` writes by default."""
    from gtsrb_kit.paths import default_data_dir

    return default_data_dir() / "set-48x48-RGB.h5"


def default_run_dir_for(model: str, data: str | Path) -> Path:
    """``<default_run_dir()>/<model>-<data file stem>``."""
    from gtsrb_kit.paths import default_run_dir

    return default_run_dir() / f"{model}-{Path(data).stem}"


def default_learning_rate(model: str) -> float:
    """Peak learning rate of AdamW for a model (batch-normalised models take a larger one)."""
    return 3e-3 if model in ("vgg-bn", "resnet-small", "v3-bn") else 1e-3


# --------------------------------------------------------------------------- .keras metadata

def save_keras_atomic(model: Any, path: Path, metadata: dict[str, Any]) -> None:
    """``model.save`` to a temporary ``.keras`` beside ``path``, embed ``metadata``, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(METADATA_NAME, json.dumps(metadata, indent=1, default=_json_default))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_keras_metadata(path: str | Path) -> dict[str, Any] | None:
    """The gtsrb-kit metadata embedded in a ``.keras`` file, or ``None`` if it has none."""
    try:
        with zipfile.ZipFile(path) as zf:
            if METADATA_NAME not in zf.namelist():
                return None
            return json.loads(zf.read(METADATA_NAME))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError):
        return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray,)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


# --------------------------------------------------------------------------- data

def _load_data(data: Path) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    from gtsrb_kit.store import load_split, read_info

    info = read_info(data)
    splits = {}
    for split in ("train", "val", "test"):
        if split not in info["splits"] or info["splits"][split]["count"] == 0:
            if split == "val":
                raise DataError(f"{data}: has no validation images; re-cook it with --val-fraction > 0 "
                                "(the best checkpoint is chosen on validation accuracy)")
            raise DataError(f"{data}: has no {split} images; re-cook it with 'gtsrb-kit cook'")
        splits[split] = load_split(data, split)
    return info, splits


def _num_classes(info: dict[str, Any]) -> int:
    names = info.get("class_names")
    return len(names) if isinstance(names, list) and names else 43


def train_dataset(
    x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int, augmenter: Any, num_classes: int,
    initial_epoch: int = 0,
) -> Any:
    """The endless training ``tf.data`` pipeline, starting at ``initial_epoch``.

    Yields ``(float32 images in [0, 1], one-hot labels)``; epoch ``e`` uses the permutation drawn
    from ``(seed, e)`` and batch ``k`` of the run (counted over epochs) the augmentation draws of
    ``(seed, k)``, so a resumed run sees the same batches as an uninterrupted one.
    """
    import tensorflow as tf

    n = int(len(x))
    steps = math.ceil(n / batch_size)
    images = tf.constant(x)
    labels = tf.constant(np.asarray(y, dtype=np.int32))

    def epoch_batches(epoch: Any) -> Any:
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        order = tf.argsort(keys)
        counters = tf.data.Dataset.range(steps).map(lambda b: epoch * steps + b)
        return tf.data.Dataset.zip((counters, tf.data.Dataset.from_tensor_slices(order).batch(batch_size)))

    ds = tf.data.Dataset.range(initial_epoch, 2**40).flat_map(epoch_batches)
    ds = ds.map(lambda k, idx: (k, tf.gather(images, idx), tf.gather(labels, idx)),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = augmenter.map_dataset(ds)
    ds = ds.map(lambda xb, yb: (tf.cast(xb, tf.float32) / 255.0, tf.one_hot(yb, num_classes)),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray | None, *, batch_size: int, num_classes: int) -> Any:
    """Batches of ``float32`` images in [0, 1] (and one-hot labels when ``y`` is given), in order."""
    import tensorflow as tf

    if y is None:
        ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
        return ds.map(lambda xb: tf.cast(xb, tf.float32) / 255.0).prefetch(tf.data.AUTOTUNE)
    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, dtype=np.int32))).batch(batch_size)
    return ds.map(lambda xb, yb: (tf.cast(xb, tf.float32) / 255.0, tf.one_hot(yb, num_classes))).prefetch(
        tf.data.AUTOTUNE)


def _schedule(name: str, lr: float, total_steps: int, steps_per_epoch: int) -> Any:
    import keras

    if name == "constant":
        return lr
    if name == "cosine":
        warmup = min(steps_per_epoch, max(1, total_steps // 20))
        return keras.optimizers.schedules.CosineDecay(
            lr / 10, decay_steps=max(1, total_steps - warmup), alpha=0.0, warmup_target=lr, warmup_steps=warmup)
    # one-cycle: linear warm-up over 30 % of the steps from lr/25, then cosine down to ~0
    warmup = max(1, int(0.3 * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        lr / 25, decay_steps=max(1, total_steps - warmup), alpha=1e-3, warmup_target=lr, warmup_steps=warmup)


# --------------------------------------------------------------------------- metrics

def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of every class (``nan``-free: 0 where undefined)."""
    rows = []
    for cls, name in enumerate(class_names):
        tp = int(np.sum((y_pred == cls) & (y_true == cls)))
        predicted = int(np.sum(y_pred == cls))
        support = int(np.sum(y_true == cls))
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class_id": cls, "name": name, "precision": round(precision, 6), "recall": round(recall, 6),
                     "f1": round(f1, 6), "support": support})
    return rows


def versions() -> dict[str, str]:
    """Versions of the software that matters for reproducing a run."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("gtsrb-kit", "numpy", "tensorflow", "tensorflow-cpu", "keras", "albumentations",
                "opencv-python-headless", "h5py"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def plot_learning_curves(history: list[dict[str, Any]], out_png: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch (training and validation) as a PNG."""
    plt = pyplot()

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [h.get(key) for h in history], "o-", label=f"train {key}")
        ax.plot(epochs, [h.get(f"val_{key}") for h in history], "o-", label=f"validation {key}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out_png)


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    _write_json(run_dir / "history.json", history)
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(run_dir / "history.csv", buf.getvalue())


# --------------------------------------------------------------------------- the trainer

def _make_state_callback(run_dir: Path, state: dict[str, Any], preprocessing: dict[str, Any], *, epochs: int,
                         early_stopping: int | None, progress: ProgressCallback | None) -> Any:
    import keras

    class RunState(keras.callbacks.Callback):
        """Best checkpoint on val accuracy, last checkpoint + state after every epoch, early stop."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = dict(logs or {})
            lr = self.model.optimizer.learning_rate
            row: dict[str, Any] = {"epoch": epoch + 1}
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                if key in logs:
                    row[key] = float(logs[key])
            row["learning_rate"] = float(np.asarray(lr))
            row["seconds"] = round(time.perf_counter() - self._started, 3)
            state["history"].append(row)
            state["epochs_completed"] = epoch + 1
            val = row.get("val_accuracy", float("nan"))
            if val > state["best_val_accuracy"]:
                state["best_val_accuracy"] = val
                state["best_epoch"] = epoch + 1
                save_keras_atomic(self.model, run_dir / "best.keras",
                                  {**preprocessing, "epoch": epoch + 1, "val_accuracy": val})
            save_keras_atomic(self.model, run_dir / "last.keras", {**preprocessing, "state": state})
            _write_json(run_dir / "state.json", state)
            _write_history(run_dir, state["history"])
            if early_stopping and epoch + 1 - state["best_epoch"] >= early_stopping:
                state["stopped_early"] = True
                self.model.stop_training = True
            report(progress, "train", epoch + 1, epochs)

    return RunState()


def _check_model_options(model: str, options: dict[str, Any]) -> None:
    import inspect

    params = inspect.signature(MODELS[model].builder).parameters
    known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"model {model!r} has no option {', '.join(unknown)} "
                          f"(its options: {', '.join(known) or 'none'})")


def _has_tensorboard() -> bool:
    """TensorBoard logging needs the ``tensorboard`` package (not pulled in by tensorflow-cpu)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _check_run_dir(run_dir: Path, config: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """Validate the run folder; returns the previous config when resuming one."""
    existing = run_dir / "config.json"
    if not existing.is_file():
        if (run_dir / "last.keras").exists() or (run_dir / "metrics.json").exists():
            raise ConfigError(f"{run_dir}: holds run files but no config.json; choose another --run-dir")
        return None
    if not resume:
        raise ConfigError(f"{run_dir}: already holds a training run; pass --resume to continue it, "
                          "or choose another --run-dir")
    try:
        old = json.loads(existing.read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{existing}: unreadable; delete the run folder and start again") from None
    old_args, new_args = old.get("args", {}), config["args"]
    diff = sorted(k for k in set(old_args) | set(new_args)
                  if k not in _RESUME_FREE and old_args.get(k) != new_args.get(k))
    if diff:
        details = ", ".join(f"{k}: {old_args.get(k)!r} -> {new_args.get(k)!r}" for k in diff)
        raise ConfigError(f"{run_dir}: cannot resume with different settings ({details}); "
                          "use the original ones or another --run-dir")
    return old


def train(
    data: str | Path | None = None,
    *,
    model: str = DEFAULT_MODEL,
    augment: Any = "none",
    epochs: int = 10,
    batch_size: int = 64,
    run_dir: str | Path | None = None,
    seed: int = 0,
    resume: bool = False,
    learning_rate: float | None = None,
    early_stopping: int | None = None,
    lr_schedule: str | None = None,
    devices: str | None = None,
    mixed_precision: str = "auto",
    progress: ProgressCallback | None = None,
    verbose: int = 1,
    augment_path: str = "auto",
    label_smoothing: float = 0.1,
    weight_decay: float = 1e-4,
    model_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on a cooked file, keep the best validation checkpoint, test it once.

    Args:
        data: A cooked ``set-*.h5`` file (default :func:`default_data_file`).
        model: A name of :data:`gtsrb_kit.models.MODELS`.
        augment: Preset (``none``, ``fidle``, ``strong``), an albumentations pipeline or an
            :class:`~gtsrb_kit.augment.Augmenter` (a custom pipeline is recorded as ``custom``
            and cannot be resumed from the command line).
        epochs: Total epochs (also when resuming).
        batch_size: Global batch size (split over devices).
        run_dir: Output folder (default ``<default_run_dir()>/<model>-<data stem>``).
        seed: Seeds Keras, the shuffles and the augmentation.
        resume: Continue an interrupted run in ``run_dir`` from its last completed epoch.
        learning_rate: Peak AdamW learning rate (default :func:`default_learning_rate`).
        early_stopping: Stop after this many epochs without a better validation accuracy.
        lr_schedule: ``constant``, ``cosine`` (default: warm-up then cosine decay) or ``onecycle``.
        devices: ``auto``, ``cpu``, ``gpu``, ``gpu:0,1``, ``cpu:0,1`` (see :mod:`gtsrb_kit.devices`).
        mixed_precision: ``auto`` (on for GPUs), ``on``, ``off`` or a Keras policy name.
        progress: Called as ``progress("train", epochs_done, epochs)`` after every epoch.
        verbose: Keras ``fit`` verbosity (0 silent, 1 bar, 2 one line per epoch).
        augment_path: ``auto``, ``batch``, ``tf`` or ``albumentations`` (see :mod:`gtsrb_kit.augment`).
        label_smoothing: Label smoothing of the cross-entropy.
        weight_decay: AdamW weight decay.
        model_options: Extra builder options of the model, e.g. ``{"width": 16}`` for ``vgg-bn``.

    Returns:
        The metrics dict, also written to ``run_dir/metrics.json``.

    Raises:
        DataError: missing, foreign or incomplete data file.
        ConfigError: unknown model/preset/schedule, bad numbers, or a run folder that conflicts.
    """
    from gtsrb_kit.augment import make_augmenter

    started = time.perf_counter()
    data = Path(data) if data is not None else default_data_file()
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}: choose one of {', '.join(MODELS)} (see `gtsrb-kit models`)")
    if int(epochs) < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    schedule = lr_schedule or DEFAULT_SCHEDULE
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown learning-rate schedule {lr_schedule!r}; use one of {', '.join(SCHEDULES)}")
    if early_stopping is not None and int(early_stopping) < 1:
        raise ConfigError(f"early stopping patience must be at least 1 epoch, got {early_stopping}")
    _check_model_options(model, model_options or {})
    augmenter = make_augmenter(augment, seed=seed, path=augment_path)
    lr = float(learning_rate) if learning_rate is not None else default_learning_rate(model)
    if not lr > 0:
        raise ConfigError(f"learning rate must be positive, got {learning_rate}")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir_for(model, data)

    info, splits = _load_data(data)
    num_classes = _num_classes(info)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits["train"], splits["val"], splits["test"]
    input_shape = tuple(int(v) for v in x_train.shape[1:])
    used_augment_path = augmenter.path_for(input_shape)  # "auto" resolved for this data
    class_names = [str(n) for n in info.get("class_names") or []] or [str(i) for i in range(num_classes)]

    args = {
        "data": str(data.resolve()), "model": model, "augment": augmenter.preset,
        "augment_path": used_augment_path,
        "epochs": int(epochs), "batch_size": int(batch_size), "seed": int(seed), "learning_rate": lr,
        "lr_schedule": schedule, "early_stopping": early_stopping, "devices": devices,
        "mixed_precision": mixed_precision, "label_smoothing": float(label_smoothing),
        "weight_decay": float(weight_decay), "verbose": verbose, "resume": bool(resume),
        "model_options": dict(model_options or {}),
    }
    preprocessing = {
        "size": int(info.get("size", input_shape[0])), "mode": info.get("mode"), "roi": bool(info.get("roi", False)),
        "input_shape": list(input_shape), "class_names": class_names, "model": model,
    }
    config = {"args": args, "preprocessing": preprocessing, "data_fingerprint": info.get("source_fingerprint"),
              "counts": {s: int(len(splits[s][1])) for s in splits}}
    old = _check_run_dir(run_dir, config, resume)
    if old is not None and (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    run_dir.mkdir(parents=True, exist_ok=True)

    import keras
    import tensorflow as tf

    from gtsrb_kit.devices import reset_policy, setup_devices

    keras.utils.set_random_seed(int(seed))
    setup = setup_devices(devices, mixed_precision)
    if not setup.gpu:
        tf.config.experimental.enable_op_determinism()
    config["runtime"] = {"devices": setup.devices, "replicas": setup.replicas,
                         "policy": keras.mixed_precision.global_policy().name, "jit_compile": setup.jit_compile}
    _write_json(run_dir / "config.json", config)

    steps = math.ceil(len(x_train) / batch_size)
    state: dict[str, Any] = {"epochs_completed": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "history": [],
                             "stopped_early": False}
    try:
        with setup.strategy.scope():
            last = run_dir / "last.keras"
            if resume and last.is_file():
                meta = read_keras_metadata(last) or {}
                if "state" not in meta:
                    raise DataError(f"{last}: has no run state; delete the run folder and start again")
                state = meta["state"]
                best_meta = read_keras_metadata(run_dir / "best.keras") or {}
                if best_meta.get("val_accuracy", -1.0) > state["best_val_accuracy"]:
                    state["best_val_accuracy"] = best_meta["val_accuracy"]
                    state["best_epoch"] = best_meta.get("epoch", state["best_epoch"])
                net = keras.models.load_model(last)
            else:
                net = build_model(model, input_shape, num_classes, **(model_options or {}))
                optimizer = keras.optimizers.AdamW(
                    learning_rate=_schedule(schedule, lr, steps * int(epochs), steps), weight_decay=weight_decay)
                net.compile(
                    optimizer=optimizer,
                    loss=keras.losses.CategoricalCrossentropy(label_smoothing=float(label_smoothing)),
                    metrics=["accuracy"], jit_compile=setup.jit_compile,
                )
        initial_epoch = int(state["epochs_completed"])
        params = int(net.count_params())
        if initial_epoch < int(epochs) and not state.get("stopped_early"):
            ds_train = train_dataset(x_train, y_train, batch_size=batch_size, seed=seed, augmenter=augmenter,
                                     num_classes=num_classes, initial_epoch=initial_epoch)
            ds_val = eval_dataset(x_val, y_val, batch_size=max(256, batch_size), num_classes=num_classes)
            callbacks = [_make_state_callback(run_dir, state, preprocessing, epochs=int(epochs),
                                              early_stopping=early_stopping, progress=progress)]
            if _has_tensorboard():
                callbacks.insert(0, keras.callbacks.TensorBoard(
                    log_dir=str(run_dir / "tb"), histogram_freq=0, write_graph=False, profile_batch=0,
                    update_freq="epoch"))
            report(progress, "train", initial_epoch, int(epochs))
            net.fit(ds_train, validation_data=ds_val, epochs=int(epochs), initial_epoch=initial_epoch,
                    steps_per_epoch=steps, callbacks=callbacks, verbose=verbose, shuffle=False)
        train_seconds = time.perf_counter() - started

        # the test set, once, with the best validation checkpoint
        best_path = run_dir / "best.keras"
        best = keras.models.load_model(best_path)
        probs = best.predict(eval_dataset(x_test, None, batch_size=max(256, batch_size), num_classes=num_classes),
                             verbose=0)
    finally:
        reset_policy()
    y_pred = np.argmax(probs, axis=1)
    test_accuracy = float(np.mean(y_pred == y_test))
    plot_learning_curves(state["history"], run_dir / "learning_curves.png",
                         title=f"{model} on {data.name} (augment {augmenter.preset})")
    _write_history(run_dir, state["history"])
    previous_seconds = float(sum(h.get("seconds", 0.0) for h in state["history"][:initial_epoch]))
    metrics = {
        "test_accuracy": round(test_accuracy, 6),
        "test_errors": int(np.sum(y_pred != y_test)),
        "test_count": int(len(y_test)),
        "best_val_accuracy": round(float(state["best_val_accuracy"]), 6),
        "best_epoch": int(state["best_epoch"]),
        "epochs_completed": int(state["epochs_completed"]),
        "epochs": int(epochs),
        "stopped_early": bool(state.get("stopped_early")),
        "resumed_from_epoch": initial_epoch if resume and initial_epoch else None,
        "duration_s": round(train_seconds + previous_seconds, 2),
        "model": model,
        "run_dir": str(run_dir),
        "model_params": params,
        "model_sha256": sha256_file(best_path),
        "data": str(data.resolve()),
        "data_fingerprint": info.get("source_fingerprint"),
        "data_sha256": sha256_file(data),
        "size": preprocessing["size"], "mode": preprocessing["mode"], "roi": preprocessing["roi"],
        "seed": int(seed),
        "augment": augmenter.preset,
        "augment_path": used_augment_path,
        "batch_size": int(batch_size),
        "learning_rate": lr,
        "lr_schedule": schedule,
        "devices": setup.devices,
        "replicas": setup.replicas,
        "mixed_precision": config["runtime"]["policy"],
        "versions": versions(),
        "per_class": per_class_report(y_test, y_pred, class_names),
    }
    _write_json(run_dir / "metrics.json", metrics)
    return metrics
