"""Train a bundled model on a cooked HDF5 file: checkpoints, resume, TensorBoard, final test.

The best checkpoint is chosen on validation accuracy (the track-wise split) and the test set is
evaluated once, at the end (``docs/training.md``). Run-folder files: :mod:`gtsrb_kit.runs`; input
pipeline: :func:`gtsrb_kit.store.tf_dataset`; final test: :func:`gtsrb_kit.evaluate.split_scores`.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from gtsrb_kit.classes import NUM_CLASSES
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import sha256_file
from gtsrb_kit.models import DEFAULT_MODEL, build_model, check_model, custom_objects, default_learning_rate
from gtsrb_kit.plotting import plot_curves
from gtsrb_kit.progress import ProgressCallback, report
from gtsrb_kit.runs import (
    BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, CURVES_FILE, METRICS_FILE, STATE_FILE, TRAIN_LOCK, is_locked, read_history,
    read_json, read_keras_metadata, read_metrics, run_lock, save_keras_atomic, write_history, write_json,
)

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "onecycle")
#: Where training batches are made: ``host`` (a ``tf.data`` pipeline on the CPU), ``device`` (the
#: split held on the training device, batches gathered and augmented inside the training step,
#: :class:`gtsrb_kit.store.DeviceBatches`), ``auto`` (``device`` on GPUs, ``host`` on the CPU).
PIPELINES: tuple[str, ...] = ("auto", "host", "device")
DEFAULT_SCHEDULE = "cosine"
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


#: How the kept checkpoint (``best.keras``) is chosen: the epoch with the highest score on the
#: validation split. Validation accuracy moves by whole images (0.013 % each on the complete set)
#: and can peak early by luck; validation loss is smoother.
SELECTIONS: dict[str, Callable[[dict[str, float]], float]] = {
    "val_accuracy": lambda row: row.get("val_accuracy", float("nan")),
    "val_loss": lambda row: -row.get("val_loss", float("nan")),
    "last": lambda row: float(row["epoch"]),
}


@dataclass(frozen=True)
class Recipe:
    """A named set of measured training settings (``gtsrb-kit train --recipe NAME``).

    ``augment`` and ``model`` are the command's defaults under the recipe; :meth:`settings` are
    the :class:`TrainConfig` fields it sets (a plan's ``recipe`` sets only these). Settings given
    beside a recipe override it. The README's Training section has the figures.
    """

    epochs: int
    ema: float | None = 0.999
    select: str = "val_loss"
    augment: str = "strong"
    model: str = DEFAULT_MODEL

    def settings(self) -> dict[str, Any]:
        """The training settings (``epochs``, ``ema``, ``select``) as keyword arguments of :func:`train`."""
        return {"epochs": self.epochs, "ema": self.ema, "select": self.select}


RECIPES: dict[str, Recipe] = {
    "quick": Recipe(epochs=12),  # the shortest schedule measured that ends at 99.5 % on average
    "accurate": Recipe(epochs=20),  # the README's accuracy table (cli/accuracy.toml)
}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ConfigError: No such recipe.
    """
    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    return RECIPES[name]


def _ema_optimizer(net: Any) -> Any:
    """The optimizer that keeps ``net``'s moving average, or None (``ema`` off)."""
    optimizer = getattr(net.optimizer, "inner_optimizer", net.optimizer)  # under a loss-scale optimizer
    return optimizer if getattr(optimizer, "use_ema", False) else None


@contextmanager
def averaged_weights(net: Any) -> Iterator[None]:
    """Inside the block ``net`` holds the moving average of its weights when trained with ``ema``.

    Without ``ema`` nothing changes. Validation, ``best.keras`` and the benchmarks' test scores all
    see the average; the current weights come back exactly afterwards (copied, not swapped by
    arithmetic), so looking at the average never changes the training.
    """
    optimizer = _ema_optimizer(net)
    if optimizer is None:
        yield
        return
    current = [np.array(v) for v in net.trainable_variables]
    optimizer.finalize_variable_values(net.trainable_variables)
    try:
        yield
    finally:
        for variable, value in zip(net.trainable_variables, current):
            variable.assign(value)


def _validate_the_average() -> Any:
    """A callback: every evaluation inside ``fit`` (validation) sees :func:`averaged_weights`."""
    import keras

    class ValidateTheAverage(keras.callbacks.Callback):
        def on_test_begin(self, logs: Any = None) -> None:
            self._stack = ExitStack()
            self._stack.enter_context(averaged_weights(self.model))

        def on_test_end(self, logs: Any = None) -> None:
            self._stack.close()

    return ValidateTheAverage()


def _seed_states(net: Any) -> list[Any]:
    """The layers' random-number states (dropout), in the model's order; ``.keras`` files do not keep them."""
    return [v for v in net.non_trainable_variables if v.path.endswith("seed_generator_state")]


def _make_state_callback(run_dir: Path, state: dict[str, Any], preprocessing: dict[str, Any], *, epochs: int,
                         select: str, early_stopping: int | None, progress: ProgressCallback | None) -> Any:
    import keras

    class RunState(keras.callbacks.Callback):
        """Best checkpoint by the ``select`` score on validation, last checkpoint + state every epoch, early stop."""

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
            state["seed_states"] = [np.asarray(v).tolist() for v in _seed_states(self.model)]
            state["epochs_completed"] = epoch + 1
            val, score = row.get("val_accuracy"), SELECTIONS[select](row)
            if score > state["best_score"]:
                state["best_score"], state["best_val_accuracy"], state["best_epoch"] = score, val, epoch + 1
                with averaged_weights(self.model):
                    save_keras_atomic(self.model, run_dir / BEST_FILE,
                                      {**preprocessing, "epoch": epoch + 1, "val_accuracy": val, "score": score})
            save_keras_atomic(self.model, run_dir / CHECKPOINT_FILE, {**preprocessing, "state": state})
            write_json(run_dir / STATE_FILE, state)
            write_history(run_dir, state["history"])
            if early_stopping and epoch + 1 - state["best_epoch"] >= early_stopping:
                state["stopped_early"] = True
                self.model.stop_training = True
            report(progress, "train", epoch + 1, epochs)

    return RunState()


def _has_tensorboard() -> bool:
    """TensorBoard logging needs the ``tensorboard`` package (not pulled in by tensorflow-cpu)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _check_not_busy(run_dir: Path) -> None:
    """Refuse a run folder that is a file, or that another training process is using right now."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: is a file, not a folder; choose another --run-dir")
    if is_locked(run_dir / TRAIN_LOCK):
        raise ConfigError(f"{run_dir}: another gtsrb-kit train is running in it; wait for it to end "
                          "or choose another --run-dir")


def _check_run_dir(run_dir: Path, config: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """Validate the run folder; returns the previous config when resuming one."""
    existing = run_dir / CONFIG_FILE
    if not existing.is_file():
        if (run_dir / CHECKPOINT_FILE).exists() or (run_dir / METRICS_FILE).exists():
            raise ConfigError(f"{run_dir}: holds run files but no config.json; choose another --run-dir")
        return None
    if not resume:
        raise ConfigError(f"{run_dir}: already holds a training run; pass --resume to continue it, "
                          "or choose another --run-dir")
    old = read_json(existing)
    if old is None:
        raise ConfigError(f"{existing}: unreadable; delete the run folder and start again")
    # a setting newer than the run's config.json had its default then
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    old_args, new_args = {**defaults, **old.get("args", {})}, config["args"]
    diff = sorted(k for k in set(old_args) | set(new_args)
                  if k not in _RESUME_FREE and old_args.get(k) != new_args.get(k))
    if diff:
        details = ", ".join(f"{k}: {old_args.get(k)!r} -> {new_args.get(k)!r}" for k in diff)
        raise ConfigError(f"{run_dir}: cannot resume with different settings ({details}); "
                          "use the original ones or another --run-dir")
    return old


@dataclass
class TrainConfig:
    """Every setting of one training run (see :func:`train` for their meaning); validated on creation."""

    data: Path = field(default_factory=default_data_file)
    model: str = DEFAULT_MODEL
    augment: Any = "none"
    epochs: int = 10
    batch_size: int = 64
    run_dir: Path | None = None
    seed: int = 0
    resume: bool = False
    learning_rate: float | None = None
    early_stopping: int | None = None
    lr_schedule: str | None = None
    devices: str | None = None
    mixed_precision: str = "auto"
    verbose: int = 1
    augment_path: str = "auto"
    label_smoothing: float = 0.1
    weight_decay: float = 1e-4
    model_options: dict[str, Any] = field(default_factory=dict)
    select: str = "val_accuracy"
    pipeline: str = "auto"
    ema: float | None = None
    refit: bool = False
    class_balance: float = 0.0

    def __post_init__(self) -> None:
        from gtsrb_kit.store import check_class_balance

        self.data = Path(self.data) if self.data is not None else default_data_file()
        self.model_options = dict(self.model_options or {})
        check_model(self.model, self.model_options)
        self.epochs, self.batch_size, self.seed = int(self.epochs), int(self.batch_size), int(self.seed)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if (self.lr_schedule or DEFAULT_SCHEDULE) not in SCHEDULES:
            raise ConfigError(f"unknown learning-rate schedule {self.lr_schedule!r}; use one of {', '.join(SCHEDULES)}")
        self.lr_schedule = self.lr_schedule or DEFAULT_SCHEDULE
        if self.select not in SELECTIONS:
            raise ConfigError(f"unknown selection {self.select!r}; use one of {', '.join(SELECTIONS)}")
        if self.pipeline not in PIPELINES:
            raise ConfigError(f"unknown pipeline {self.pipeline!r}; use one of {', '.join(PIPELINES)}")
        if self.early_stopping is not None and int(self.early_stopping) < 1:
            raise ConfigError(f"early stopping patience must be at least 1 epoch, got {self.early_stopping}")
        if self.ema is not None and not 0 < float(self.ema) < 1:
            raise ConfigError(f"ema momentum must be between 0 and 1 (e.g. 0.999), got {self.ema}")
        self.class_balance = check_class_balance(self.class_balance)
        self.refit = bool(self.refit)
        if self.refit and self.early_stopping is not None:
            raise ConfigError("early stopping watches the validation images, which --refit trains on; "
                              "drop --early-stopping")
        if self.refit:  # nothing is left to select on: the run keeps its last epoch
            self.select = "last"

    def training_splits(self) -> tuple[str, ...]:
        """The splits of the cooked file that the run trains on."""
        return ("train", "val") if self.refit else ("train",)

    def resolve(self) -> None:
        """Fill in the defaults that depend on other settings (learning rate, run folder)."""
        given = self.learning_rate
        self.learning_rate = float(given) if given is not None else default_learning_rate(self.model)
        if not self.learning_rate > 0:
            raise ConfigError(f"learning rate must be positive, got {given}")
        self.run_dir = Path(self.run_dir) if self.run_dir is not None else default_run_dir_for(self.model, self.data)

    def args(self, augmenter: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """The settings as recorded in ``config.json`` (compared when resuming)."""
        args = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "run_dir"}
        return {**args, "data": str(self.data.resolve()), "augment": augmenter.preset,
                "augment_path": augmenter.path_for(input_shape), "label_smoothing": float(self.label_smoothing),
                "weight_decay": float(self.weight_decay), "resume": bool(self.resume)}


@dataclass
class _Data:
    """What training needs to know about the cooked file."""

    info: dict[str, Any]
    input_shape: tuple[int, ...]
    class_names: list[str]
    counts: dict[str, int]


def _read_data(data: Path) -> _Data:
    from gtsrb_kit.store import read_info

    info = read_info(data)
    for split in ("train", "val", "test"):
        if info["splits"].get(split, {}).get("count", 0) == 0:
            if split == "val":
                raise DataError(f"{data}: has no validation images; re-cook it with --val-fraction > 0 "
                                "(the best checkpoint is chosen on validation accuracy)")
            raise DataError(f"{data}: has no {split} images; re-cook it with 'gtsrb-kit cook'")
    names = info.get("class_names")
    num_classes = len(names) if isinstance(names, list) and names else NUM_CLASSES
    return _Data(info, tuple(info["splits"]["train"]["shape"][1:]),
                 [str(n) for n in names or []] or [str(i) for i in range(num_classes)],
                 {s: info["splits"][s]["count"] for s in ("train", "val", "test")})


def _run_config(cfg: TrainConfig, data: _Data, augmenter: Any) -> dict[str, Any]:
    """The content of ``config.json`` (without its ``runtime`` part)."""
    preprocessing = {
        "size": int(data.info.get("size", data.input_shape[0])), "mode": data.info.get("mode"),
        "roi": bool(data.info.get("roi", False)), "input_shape": list(data.input_shape),
        "class_names": data.class_names, "model": cfg.model,
    }
    return {"args": cfg.args(augmenter, data.input_shape), "preprocessing": preprocessing,
            "data_fingerprint": data.info.get("source_fingerprint"), "counts": data.counts}


def _build_or_resume(cfg: TrainConfig, data: _Data, setup: Any, steps: int) -> tuple[Any, dict[str, Any]]:
    """The model and run state: from ``last.keras`` when resuming, else built and compiled."""
    import keras

    run_dir = Path(cfg.run_dir)  # type: ignore[arg-type]
    last = run_dir / CHECKPOINT_FILE
    with setup.strategy.scope():
        if cfg.resume and last.is_file():
            meta = read_keras_metadata(last) or {}
            if "state" not in meta:
                raise DataError(f"{last}: has no run state; delete the run folder and start again")
            state = meta["state"]
            state.setdefault("best_score", state["best_val_accuracy"])  # runs from before --select
            best_meta = read_keras_metadata(run_dir / BEST_FILE) or {}
            best_score = best_meta.get("score", best_meta.get("val_accuracy", -math.inf))
            if best_score > state["best_score"]:  # best.keras was written after the last state
                state["best_score"], state["best_val_accuracy"] = best_score, best_meta.get("val_accuracy", -1.0)
                state["best_epoch"] = best_meta.get("epoch", state["best_epoch"])
            net = keras.models.load_model(last, custom_objects=custom_objects())
            for variable, value in zip(_seed_states(net), state.get("seed_states", [])):
                variable.assign(np.asarray(value, dtype=variable.dtype))  # dropout continues, not repeats
            return net, state
        net = build_model(cfg.model, data.input_shape, len(data.class_names), **cfg.model_options)
        schedule = _schedule(str(cfg.lr_schedule), float(cfg.learning_rate or 0), steps * cfg.epochs, steps)
        net.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay,
                                             use_ema=cfg.ema is not None, ema_momentum=cfg.ema or 0.99),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=float(cfg.label_smoothing)),
            metrics=["accuracy"], jit_compile=setup.jit_compile,
            steps_per_execution=steps_per_execution(steps, setup.gpu),
        )
    state = {"epochs_completed": 0, "best_val_accuracy": -1.0, "best_score": -math.inf, "best_epoch": 0,
             "history": [], "stopped_early": False}
    return net, state


def applied_settings(model: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as training applies them (a refit keeps its last epoch: ``select`` is ``last``).

    Raises:
        ConfigError: A setting is invalid.
    """
    config = TrainConfig(Path("plan.h5"), model=model, **settings)
    return {k: getattr(config, k) for k in settings}


def resolve_pipeline(pipeline: str, gpu: bool, augmenter: Any) -> str:
    """The pipeline (``host`` or ``device``) that ``pipeline`` of :data:`PIPELINES` names here."""
    from gtsrb_kit.store import DeviceBatches

    if pipeline == "auto":
        return "device" if gpu and DeviceBatches.can_augment(augmenter) else "host"
    if pipeline == "device":
        DeviceBatches.check_augmenter(augmenter)
    return pipeline


def steps_per_epoch(count: int, batch_size: int, pipeline: str) -> int:
    """Batches per epoch: the device pipeline makes full batches only."""
    from gtsrb_kit.store import DeviceBatches

    return DeviceBatches.steps_for(count, batch_size) if pipeline == "device" else math.ceil(count / batch_size)


def steps_per_execution(steps: int, gpu: bool, most: int = 32) -> int:
    """Training steps per call into the compiled step: on GPUs the largest divisor of ``steps`` up to ``most``.

    A GPU step of these small models takes about as long as Keras' work between two calls, so
    several steps run in one call; a divisor keeps every epoch exactly ``steps`` batches long
    (batch ``k`` stays batch ``k`` of the run, also when resuming). The CPU gains nothing from it.
    """
    return max(d for d in range(1, min(most, steps) + 1) if steps % d == 0) if gpu else 1


def _training_images(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of the splits the run trains on, in split order."""
    from gtsrb_kit.store import load_split

    parts = [load_split(cfg.data, split) for split in cfg.training_splits()]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _train_from_device(cfg: TrainConfig, net: Any, augmenter: Any, classes: int, initial_epoch: int) -> Any:
    """Make ``net``'s training step build its own batch; returns the dataset of batch numbers to fit on."""
    import tensorflow as tf

    from gtsrb_kit.store import DeviceBatches

    x, y = _training_images(cfg)
    strategy = net.distribute_strategy
    with strategy.scope():
        batches = DeviceBatches(x, y, batch_size=cfg.batch_size, seed=cfg.seed, augmenter=augmenter,
                                num_classes=classes, replicas=strategy.num_replicas_in_sync,
                                class_balance=cfg.class_balance)
    # Keras builds its metrics from a sample of the fit data, here batch numbers: show it a batch's shapes
    share = cfg.batch_size // batches.replicas
    net.test_on_batch(np.zeros((share, *x.shape[1:]), np.float32), np.zeros((share, classes), np.float32))
    keras_step = net.train_step

    def train_step(k: Any) -> Any:
        return keras_step(batches(k, tf.distribute.get_replica_context().replica_id_in_sync_group))

    # an attribute of this instance, not a subclass: the saved model stays the plain bundled one
    net.train_step = train_step
    return batches.counters(initial_epoch)


def _fit(cfg: TrainConfig, net: Any, state: dict[str, Any], preprocessing: dict[str, Any], augmenter: Any,
         steps: int, pipeline: str, hooks: tuple[ProgressCallback | None, Sequence[Any]]) -> None:
    """Train from the state's next epoch to ``cfg.epochs`` (or the early stop); ``hooks``: progress, extra callbacks."""
    import keras

    from gtsrb_kit.store import array_dataset, tf_dataset

    progress, extra = hooks
    initial_epoch = int(state["epochs_completed"])
    if initial_epoch >= cfg.epochs or state.get("stopped_early"):
        return
    run_dir = Path(cfg.run_dir)  # type: ignore[arg-type]
    classes = len(preprocessing["class_names"])
    if pipeline == "device":
        ds_train = _train_from_device(cfg, net, augmenter, classes, initial_epoch)
    else:
        ds_train = array_dataset(*_training_images(cfg), batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                                 augmenter=augmenter, num_classes=classes, repeat=True, initial_epoch=initial_epoch,
                                 class_balance=cfg.class_balance)
    ds_val = None if cfg.refit else tf_dataset(cfg.data, "val", batch_size=max(256, cfg.batch_size),
                                               num_classes=classes)
    callbacks = [_make_state_callback(run_dir, state, preprocessing, epochs=cfg.epochs, select=cfg.select,
                                      early_stopping=cfg.early_stopping, progress=progress), *extra]
    if _ema_optimizer(net) is not None:
        callbacks.insert(0, _validate_the_average())
    if _has_tensorboard():
        callbacks.insert(0, keras.callbacks.TensorBoard(
            log_dir=str(run_dir / "tb"), histogram_freq=0, write_graph=False, profile_batch=0, update_freq="epoch"))
    report(progress, "train", initial_epoch, cfg.epochs)
    net.fit(ds_train, validation_data=ds_val, epochs=cfg.epochs, initial_epoch=initial_epoch,
            steps_per_epoch=steps, callbacks=callbacks, verbose=cfg.verbose, shuffle=False)


def _final_metrics(cfg: TrainConfig, data: _Data, state: dict[str, Any], test: tuple[np.ndarray, np.ndarray],
                   seconds: float, initial_epoch: int, augmenter: Any, runtime: dict[str, Any],
                   params: int) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    from gtsrb_kit.evaluate import per_class_report

    run_dir = Path(cfg.run_dir)  # type: ignore[arg-type]
    y_test, y_pred = test
    previous_seconds = float(sum(h.get("seconds", 0.0) for h in state["history"][:initial_epoch]))
    return {
        "test_accuracy": round(float(np.mean(y_pred == y_test)), 6),
        "test_errors": int(np.sum(y_pred != y_test)), "test_count": int(len(y_test)),
        "best_val_accuracy": None if cfg.refit else round(float(state["best_val_accuracy"]), 6),
        "best_epoch": int(state["best_epoch"]), "select": cfg.select, "epochs_completed": int(state["epochs_completed"]),
        "epochs": cfg.epochs, "stopped_early": bool(state.get("stopped_early")),
        "resumed_from_epoch": initial_epoch if cfg.resume and initial_epoch else None,
        "duration_s": round(seconds + previous_seconds, 2),
        "model": cfg.model, "run_dir": str(run_dir), "model_params": params,
        "model_sha256": sha256_file(run_dir / BEST_FILE),
        "data": str(cfg.data.resolve()), "data_fingerprint": data.info.get("source_fingerprint"),
        "data_sha256": sha256_file(cfg.data),
        "size": int(data.info.get("size", data.input_shape[0])), "mode": data.info.get("mode"),
        "roi": bool(data.info.get("roi", False)), "seed": cfg.seed,
        "augment": augmenter.preset, "augment_path": augmenter.path_for(data.input_shape),
        "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "lr_schedule": cfg.lr_schedule,
        "devices": runtime["devices"], "replicas": runtime["replicas"], "mixed_precision": runtime["policy"],
        "pipeline": runtime["pipeline"], "ema": cfg.ema, "refit": cfg.refit,
        "class_balance": cfg.class_balance,
        "train_images": sum(data.counts[split] for split in cfg.training_splits()),
        "versions": versions(), "per_class": per_class_report(y_test, y_pred, data.class_names),
    }


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
    select: str = "val_accuracy",
    pipeline: str = "auto",
    ema: float | None = None,
    refit: bool = False,
    class_balance: float = 0.0,
    callbacks: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Train a model on a cooked file, keep the best validation checkpoint, test it once.

    Args:
        data: A cooked ``set-*.h5`` file (default :func:`default_data_file`).
        progress: Called as ``progress("train", epochs_done, epochs)`` after every epoch.
        callbacks: Extra Keras callbacks for ``fit``, run after the run's own (which keeps the
            checkpoints); not part of the run's settings (``config.json``, resume checks).
        model, augment, ...: The fields of :class:`TrainConfig`:
            ``model`` (a name of :data:`gtsrb_kit.models.MODELS`);
            ``augment`` (preset ``none``, ``fidle``, ``strong``, an albumentations pipeline or an
            :class:`~gtsrb_kit.augment.Augmenter`; a custom pipeline is recorded as ``custom``);
            ``epochs`` (total, also when resuming); ``batch_size`` (global, split over devices);
            ``run_dir`` (default ``<default_run_dir()>/<model>-<data stem>``); ``seed`` (Keras, the
            shuffles and the augmentation); ``resume`` (continue from the last completed epoch);
            ``learning_rate`` (peak AdamW rate, default :func:`gtsrb_kit.models.default_learning_rate`);
            ``early_stopping`` (epochs without a better validation accuracy); ``lr_schedule``
            (``constant``, ``cosine`` (default) or ``onecycle``); ``devices`` (see
            :mod:`gtsrb_kit.devices`); ``mixed_precision`` (``auto``, ``on``, ``off`` or a policy);
            ``verbose`` (Keras ``fit``); ``augment_path`` (see :mod:`gtsrb_kit.augment`);
            ``label_smoothing``; ``weight_decay``; ``model_options`` (builder options, e.g.
            ``{"width": 16}``); ``select`` (the validation score that picks ``best.keras``:
            ``val_accuracy`` or ``val_loss``, see :data:`SELECTIONS`); ``pipeline`` (where batches
            are made, see :data:`PIPELINES`); ``ema`` (momentum of a moving average of
            the weights, e.g. ``0.999``, that validation, ``best.keras`` and the test use; default none);
            ``refit`` (train on the training and validation images, for a schedule chosen on
            validation before: no validation, ``best.keras`` is the last epoch, ``select`` is
            ``last``; ``best_val_accuracy`` is None); ``class_balance`` (0 to 1: draw each epoch's
            images with replacement, an image of a class of ``c`` images with weight ``c ** -class_balance``,
            so 1 shows every class equally often; default 0, a plain shuffle).

    Returns:
        The metrics dict, also written to ``run_dir/metrics.json``.

    Raises:
        DataError: missing, foreign or incomplete data file.
        ConfigError: unknown model/preset/schedule, bad numbers, or a run folder that conflicts.
    """
    settings = {k: v for k, v in locals().items() if k not in ("progress", "callbacks")}
    return run_training(TrainConfig(**settings), progress=progress, callbacks=callbacks)


def run_training(cfg: TrainConfig, *, progress: ProgressCallback | None = None,
                 callbacks: Sequence[Any] | None = None) -> dict[str, Any]:
    """Train as :func:`train` does, from a :class:`TrainConfig` (``callbacks``: see :func:`train`).

    Everything that can be checked (settings, data, run folder, the model's build) is checked
    before the run folder is created: a failed start leaves nothing behind.
    """
    from gtsrb_kit.augment import make_augmenter

    started = time.perf_counter()
    augmenter = make_augmenter(cfg.augment, seed=cfg.seed, path=cfg.augment_path)
    cfg.resolve()
    run_dir = Path(cfg.run_dir)  # type: ignore[arg-type]
    data = _read_data(cfg.data)
    config = _run_config(cfg, data, augmenter)
    _check_not_busy(run_dir)
    if _check_run_dir(run_dir, config, cfg.resume) is not None:
        finished = read_metrics(run_dir)
        if finished is not None:
            return finished

    import keras
    import tensorflow as tf

    from gtsrb_kit.devices import reset_policy, setup_devices

    keras.utils.set_random_seed(cfg.seed)
    setup = setup_devices(cfg.devices, cfg.mixed_precision)
    if not setup.gpu:
        tf.config.experimental.enable_op_determinism()
    pipeline = resolve_pipeline(cfg.pipeline, setup.gpu, augmenter)
    config["runtime"] = {"devices": setup.devices, "replicas": setup.replicas, "pipeline": pipeline,
                         "policy": keras.mixed_precision.global_policy().name, "jit_compile": setup.jit_compile}
    steps = steps_per_epoch(sum(data.counts[s] for s in cfg.training_splits()), cfg.batch_size, pipeline)
    try:
        net, state = _build_or_resume(cfg, data, setup, steps)
        with run_lock(run_dir):
            _check_run_dir(run_dir, config, cfg.resume)  # another process may have started it meanwhile
            write_json(run_dir / CONFIG_FILE, config)
            return _train_and_test(cfg, data, (net, state), config, augmenter, steps, (progress, callbacks or ()),
                                   started)
    finally:
        reset_policy()


def _train_and_test(cfg: TrainConfig, data: _Data, model: tuple[Any, dict[str, Any]], config: dict[str, Any],
                    augmenter: Any, steps: int, hooks: tuple[ProgressCallback | None, Sequence[Any]],
                    started: float) -> dict[str, Any]:
    """Fit (``hooks``: progress, extra callbacks), test the best checkpoint, write the curves and ``metrics.json``."""
    from gtsrb_kit.evaluate import load_model, split_scores

    run_dir = Path(cfg.run_dir)  # type: ignore[arg-type]
    net, state = model
    initial_epoch = int(state["epochs_completed"])
    _fit(cfg, net, state, config["preprocessing"], augmenter, steps, config["runtime"]["pipeline"], hooks)
    seconds = time.perf_counter() - started
    _, y_test, probs, _ = split_scores(load_model(run_dir / BEST_FILE), cfg.data, "test", max(256, cfg.batch_size))
    write_history(run_dir, state["history"])
    plot_curves({cfg.model: read_history(run_dir)}, run_dir / CURVES_FILE,
                title=f"{cfg.model} on {cfg.data.name} (augment {augmenter.preset})")
    metrics = _final_metrics(cfg, data, state, (y_test, probs.argmax(axis=1)), seconds, initial_epoch, augmenter,
                             config["runtime"], int(net.count_params()))
    write_json(run_dir / METRICS_FILE, metrics)
    return metrics
