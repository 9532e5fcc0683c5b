"""Time to test accuracy: gtsrb-kit's training recipe beside the Fidle course's, on one cooked file.

Usage::

    python benchmarks/bench_train.py DATA.h5 [--recipes gtsrb-kit,course] [--epochs 20] [--max-minutes M]
        [--targets 0.99,0.995] [--seed 0] [--course-best 0.991] [--out results.json] [--keep RUN_DIR]
        [--model vgg-bn] [--preset strong] [--batch-size 64] [--lr LR] [--lr-schedule cosine]
        [--select val_accuracy] [--mixed-precision auto] [--pipeline auto] [--ema 0.999]
        [--model-option width=8 ...]

Recipes, trained one after the other in this process, on the same data and machine:

* ``gtsrb-kit``: :func:`gtsrb_kit.train.run_training` as ``gtsrb-kit train`` runs it (default model
  ``vgg-bn``, ``--preset strong``, AdamW with its schedule, checkpoints in a temporary run folder);
  the ``--model ... --model-option`` options pass through.
* ``course``: the course's way, in plain Keras: model ``v2``, ``ImageDataGenerator`` with the
  course's settings (``benchmarks/fidle_course.py``), Adam at its default rate, batch 64, sparse
  categorical cross-entropy (categorical cross-entropy on integer labels, as the course writes it).

After every epoch a callback evaluates the **test** split. These test accuracies are for this
benchmark only: nothing (checkpoint, epoch, setting) is chosen by them; gtsrb-kit still keeps its
checkpoint by validation. Training seconds are cumulative wall time from the start of ``fit``,
validation and checkpointing included, the benchmark's own test evaluations excluded. A recipe
stops after ``--epochs`` or once its training time passes ``--max-minutes``.

Printed (Markdown) and written to ``--out`` (JSON): per epoch, seconds, images/s, validation and
test accuracy; per recipe, images/s (median over the epochs after the first), the training time
to each ``--targets`` test accuracy and the best test accuracy; the ratio of the course's time to
gtsrb-kit's to reach the course's best accuracy (``--course-best``) or as far as the course gets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

NOTE = "test accuracy is recorded for this benchmark only; nothing is chosen by it (checkpoints are kept by validation)"
RECIPES = ("gtsrb-kit", "course")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="a cooked set-*.h5 file (the course used 48x48 RGB)")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated: gtsrb-kit, course")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-minutes", type=float, default=None, help="stop a recipe after this much training time")
    p.add_argument("--targets", default="0.99,0.995", help="test accuracies to time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--course-best", type=float, default=0.991, help="the course's best test accuracy")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--keep", type=Path, help="keep gtsrb-kit's run folder here (a new folder; default: a "
                   "temporary one, removed), e.g. for a committee")
    kit = p.add_argument_group("gtsrb-kit recipe (as gtsrb-kit train)")
    kit.add_argument("--model", default="vgg-bn")
    kit.add_argument("--preset", default="strong")
    kit.add_argument("--batch-size", type=int, default=64)
    kit.add_argument("--lr", type=float, default=None)
    kit.add_argument("--lr-schedule", default=None)
    kit.add_argument("--select", default="val_accuracy")
    kit.add_argument("--mixed-precision", default="auto", help="auto, on, off or a Keras policy")
    kit.add_argument("--pipeline", default="auto", help="auto, host or device")
    kit.add_argument("--ema", type=float, default=None, help="momentum of the weights' moving average (e.g. 0.999)")
    kit.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = sorted(set(args.recipes) - set(RECIPES))
    if unknown:
        p.error(f"unknown recipe(s) {', '.join(unknown)}; use {', '.join(RECIPES)}")
    args.targets = [float(t) for t in args.targets.split(",") if t.strip()]
    return args


def environment() -> dict[str, Any]:
    """Device names, TensorFlow version, cores and the load average now."""
    import tensorflow as tf

    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu or "unknown", "gpus": gpus, "tensorflow": tf.__version__,
            "cores": len(os.sched_getaffinity(0)), "load_average": round(os.getloadavg()[0], 2)}


def make_recorder(x_test: np.ndarray, y_test: np.ndarray, n_train: int, max_seconds: float | None) -> Any:
    """A Keras callback that tests the model after every epoch and times training without those tests."""
    import keras

    from gtsrb_kit.evaluate import predict_probs
    from gtsrb_kit.train import averaged_weights

    class TestEveryEpoch(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, Any]] = []

        def on_train_begin(self, logs: Any = None) -> None:
            self.rows, self._start, self._excluded = [], time.perf_counter(), 0.0

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            now = time.perf_counter()
            seconds = now - self._start - self._excluded
            previous = self.rows[-1]["train_seconds"] if self.rows else 0.0
            with averaged_weights(self.model):  # the weights validation and best.keras see
                accuracy = float(np.mean(predict_probs(self.model, x_test).argmax(axis=1) == y_test))
            self._excluded += time.perf_counter() - now
            val = (logs or {}).get("val_accuracy")
            self.rows.append({"epoch": epoch + 1, "train_seconds": round(seconds, 3),
                              "images_per_s": round(n_train / max(seconds - previous, 1e-9), 1),
                              "val_accuracy": None if val is None else round(float(val), 6),
                              "test_accuracy": round(accuracy, 6)})
            if max_seconds is not None and seconds >= max_seconds:
                self.model.stop_training = True

    return TestEveryEpoch()


def run_gtsrb_kit(args: argparse.Namespace, recorder: Any) -> dict[str, Any]:
    """The library's own training, with ``recorder`` as an extra callback; returns its settings."""
    from gtsrb_kit.cli.train import _parse_options
    from gtsrb_kit.train import TrainConfig, run_training

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        cfg = TrainConfig(args.data, model=args.model, augment=args.preset, epochs=args.epochs,
                          batch_size=args.batch_size, run_dir=args.keep or Path(tmp) / "run", seed=args.seed,
                          learning_rate=args.lr, lr_schedule=args.lr_schedule, select=args.select, verbose=0,
                          mixed_precision=args.mixed_precision, pipeline=args.pipeline, ema=args.ema,
                          model_options=_parse_options(args.model_option))
        metrics = run_training(cfg, callbacks=[recorder])
    return {"model": cfg.model, "model_options": cfg.model_options, "preset": args.preset,
            "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "lr_schedule": cfg.lr_schedule,
            "select": cfg.select, "ema": cfg.ema, "mixed_precision": metrics["mixed_precision"],
            "devices": metrics["devices"],
            "final_test_accuracy_of_best_val_checkpoint": metrics["test_accuracy"]}


def run_course(args: argparse.Namespace, recorder: Any) -> dict[str, Any]:
    """The course's recipe in plain Keras: v2, ImageDataGenerator, Adam, batch 64; returns its settings."""
    import keras
    from fidle_course import course_generator

    from gtsrb_kit.models import build_model
    from gtsrb_kit.store import load_split, read_info

    batch = 64
    keras.utils.set_random_seed(args.seed)
    x, y = load_split(args.data, "train", normalize=True)
    has_val = read_info(args.data)["splits"].get("val", {}).get("count", 0) > 0
    validation = load_split(args.data, "val", normalize=True) if has_val else None
    model = build_model("v2", x.shape[1:])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    flow = course_generator().flow(x, y, batch_size=batch, seed=args.seed)
    # each epoch passes over every image once (the course's steps_per_epoch=n//64 would exhaust Keras 3's iterator)
    model.fit(flow, epochs=args.epochs, validation_data=validation, callbacks=[recorder], verbose=0)
    return {"model": "v2", "augment": "ImageDataGenerator (course settings)", "optimizer": "adam",
            "batch_size": batch, "input_shape": list(x.shape[1:])}


def time_to(rows: list[dict[str, Any]], accuracy: float) -> float | None:
    """Training seconds at the first epoch whose test accuracy reaches ``accuracy`` (None if never)."""
    return next((r["train_seconds"] for r in rows if r["test_accuracy"] >= accuracy - 1e-9), None)


def summarize(rows: list[dict[str, Any]], targets: list[float]) -> dict[str, Any]:
    """images/s (median after the first epoch), time to each target, best test accuracy."""
    steady = rows[1:] or rows
    return {"images_per_s": round(float(np.median([r["images_per_s"] for r in steady])), 1) if rows else None,
            "time_to": {f"{t:.4g}": time_to(rows, t) for t in targets},
            "best_test_accuracy": max((r["test_accuracy"] for r in rows), default=None),
            "epochs": len(rows), "train_seconds": rows[-1]["train_seconds"] if rows else 0.0}


def compare(results: dict[str, Any], course_best: float) -> dict[str, Any] | None:
    """Course time / gtsrb-kit time to the course's best accuracy, or to as far as the course got."""
    if not {"gtsrb-kit", "course"} <= set(results):
        return None
    course, kit = results["course"]["epochs"], results["gtsrb-kit"]["epochs"]
    reached = results["course"]["summary"]["best_test_accuracy"] or 0.0
    accuracy = min(course_best, reached)
    t_course, t_kit = time_to(course, accuracy), time_to(kit, accuracy)
    ratio = round(t_course / t_kit, 2) if t_course is not None and t_kit else None
    return {"accuracy": accuracy, "course_seconds": t_course, "gtsrb_kit_seconds": t_kit, "ratio": ratio}


def _fmt(value: float | None, spec: str, missing: str = "not reached") -> str:
    return missing if value is None else format(value, spec)


def print_epochs(name: str, rows: list[dict[str, Any]]) -> None:
    """The per-epoch Markdown table of one recipe."""
    print(f"\n### {name}\n\n| epoch | training s | images/s | val accuracy | test accuracy |\n| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['epoch']} | {r['train_seconds']:.1f} | {r['images_per_s']:,.0f} | "
              f"{_fmt(r['val_accuracy'], '.4f', '-')} | {r['test_accuracy']:.4f} |")


def print_summary(results: dict[str, Any], targets: list[float], comparison: dict[str, Any] | None) -> None:
    """The summary Markdown table and the course/gtsrb-kit ratio."""
    heads = " | ".join(f"time to {t:.1%}" for t in targets)
    print(f"\n### Summary\n\n| recipe | images/s | {heads} | best test accuracy | epochs | training s |")
    print("| --- | ---: |" + " ---: |" * len(targets) + " ---: | ---: | ---: |")
    for name, res in results.items():
        s = res["summary"]
        times = " | ".join(_fmt(s["time_to"][f"{t:.4g}"], ".1f") + ("" if s["time_to"][f"{t:.4g}"] is None else " s")
                           for t in targets)
        print(f"| {name} | {_fmt(s['images_per_s'], ',.0f', '-')} | {times} | "
              f"{_fmt(s['best_test_accuracy'], '.4f', '-')} | {s['epochs']} | {s['train_seconds']:.1f} |")
    if comparison:
        c = comparison
        print(f"\nTime to {c['accuracy']:.2%} test accuracy: course {_fmt(c['course_seconds'], '.1f')} s, "
              f"gtsrb-kit {_fmt(c['gtsrb_kit_seconds'], '.1f')} s; ratio course / gtsrb-kit: "
              f"{_fmt(c['ratio'], '.2f', 'n/a (gtsrb-kit did not reach it)')}")
    print(f"\n({NOTE}.)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen recipes, print the tables, write ``--out``; returns the results."""
    args = parse_args(argv)
    from gtsrb_kit.store import load_split, read_info

    env = environment()
    print(f"devices: CPU {env['cpu']}; GPUs {', '.join(env['gpus']) or 'none'}; TensorFlow {env['tensorflow']}; "
          f"{env['cores']} cores; load average {env['load_average']:.2f} at the start")
    x_test, y_test = load_split(args.data, "test")
    n_train = int(read_info(args.data)["splits"]["train"]["count"])
    max_seconds = None if args.max_minutes is None else 60.0 * args.max_minutes
    results: dict[str, Any] = {}
    for name in args.recipes:
        import keras

        keras.backend.clear_session()
        recorder = make_recorder(x_test, y_test, n_train, max_seconds)
        settings = (run_gtsrb_kit if name == "gtsrb-kit" else run_course)(args, recorder)
        results[name] = {"settings": settings, "epochs": recorder.rows, "summary": summarize(recorder.rows, args.targets)}
        print_epochs(name, recorder.rows)
    comparison = compare(results, args.course_best)
    print_summary(results, args.targets, comparison)
    env["load_average_end"] = round(os.getloadavg()[0], 2)
    print(f"load average at the end: {env['load_average_end']:.2f}")
    out = {"note": NOTE, "data": str(args.data), "train_count": n_train, "test_count": int(len(y_test)),
           "environment": env, "targets": args.targets, "recipes": results, "comparison": comparison}
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
