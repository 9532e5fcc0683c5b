"""Augmentation throughput vs Keras' ImageDataGenerator, and the cost of --augment per epoch.

Usage::

    python benchmarks/bench_augment.py [--data set-48x48-RGB.h5] [--images 4096] [--batch-size 64]
                                       [--shapes 24x24x1,48x48x3] [--rounds 3] [--configs fidle/tf,...]
                                       [--epoch-steps 40] [--skip-epoch]

Part 1, for each shape: augmented images per second of, side by side on the same images with the
same batch size,

* ``ImageDataGenerator`` (``keras.src.legacy.preprocessing.image``) with the course's settings
  (rotation 10, shifts 0.1, zoom 0.2, shear 0.1, nearest fill), iterated through ``.flow``;
* this package's training pipeline (``tf.data``: gather, augment, float conversion, prefetch)
  with the ``fidle`` and ``strong`` presets, in-graph (``tf``) and through
  :func:`~gtsrb_kit.augment.albumentations_pipeline` (``albumentations``), and without
  augmentation.

Measurements are interleaved: each of ``--rounds`` rounds times ImageDataGenerator and then
every config, and each ratio is taken within its round, so both sides of a ratio ran under the
same load (the machine may be shared); medians and the range of the ratios are printed, with the
load average at the start and the end.

Part 2: time per training step of the default model with ``--augment`` off and on (fidle and
strong), with the full training input pipeline; the overhead is the relative
difference.

Images come from ``--data`` (a cooked file; channels converted as needed) or are synthetic.
Threads: TensorFlow and OpenCV use every core they see; run under ``taskset -c 0,1`` to measure
on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _images(data: str | None, n: int, shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h, w, c = shape
    if data:
        from gtsrb_kit.store import load_split

        x, y = load_split(data, "train", indices=np.arange(n))
        out = np.stack([cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, -1) for img in x])
        if out.shape[-1] == 3 and c == 1:
            out = (out @ np.array([0.2125, 0.7154, 0.0721]))[..., None].round().astype(np.uint8)
        elif out.shape[-1] == 1 and c == 3:
            out = np.repeat(out, 3, axis=-1)
        return out, y
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = ((xx + yy) * 255 // (h + w)).astype(np.uint8)
    x = np.repeat(base[None, :, :, None], n, 0).repeat(c, 3)
    x = np.clip(x.astype(int) + rng.integers(-30, 30, x.shape), 0, 255).astype(np.uint8)
    return x, rng.integers(0, 43, n)


def bench_idg(x: np.ndarray, y: np.ndarray, batch_size: int, min_seconds: float) -> float:
    from fidle_course import course_generator

    flow = course_generator().flow(x.astype(np.float32), y, batch_size=batch_size, seed=0)
    next(flow)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or count < len(x):
        xb, _ = next(flow)
        count += len(xb)
    return count / (time.perf_counter() - start)


def bench_pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, preset: str, path: str,
                   min_seconds: float) -> float:
    from gtsrb_kit.augment import Augmenter
    from gtsrb_kit.store import array_dataset

    ds = array_dataset(x, y, batch_size=batch_size, shuffle=True, seed=0, repeat=True,
                       augmenter=Augmenter(preset, path=path, seed=0), num_classes=43)
    it = iter(ds)
    for _ in range(3):
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or count < len(x):
        xb, _ = next(it)
        count += int(xb.shape[0])
    return count / (time.perf_counter() - start)


def bench_epoch(x: np.ndarray, y: np.ndarray, batch_size: int, steps: int, rounds: int = 3) -> dict[str, float]:
    """Seconds per training step of the default model for each preset (best of interleaved rounds).

    Rounds alternate the presets so that load changes on a shared machine hit all of them alike.
    """
    import keras

    from gtsrb_kit.augment import Augmenter
    from gtsrb_kit.models import DEFAULT_MODEL, build_model
    from gtsrb_kit.store import array_dataset

    keras.utils.set_random_seed(0)
    model = build_model(DEFAULT_MODEL, x.shape[1:])
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    iters = {p: iter(array_dataset(x, y, batch_size=batch_size, shuffle=True, seed=0, repeat=True,
                                   augmenter=Augmenter(p, seed=0), num_classes=43)) for p in ("none", "fidle", "strong")}
    best = {p: float("inf") for p in iters}
    model.train_on_batch(*next(iters["none"]))  # trace once
    for _ in range(rounds):
        for preset, it in iters.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(*next(it))
            best[preset] = min(best[preset], (time.perf_counter() - start) / steps)
    return best


CONFIGS: tuple[tuple[str, str], ...] = (
    ("fidle", "tf"), ("fidle", "albumentations"), ("strong", "tf"), ("strong", "albumentations"), ("none", "tf"),
)


def bench_shape(x: np.ndarray, y: np.ndarray, batch_size: int, seconds: float, rounds: int,
                configs: tuple[tuple[str, str], ...]) -> tuple[list[float], dict[tuple[str, str], list[float]]]:
    """ImageDataGenerator and every config, interleaved over ``rounds`` rounds.

    Each round measures ImageDataGenerator and then every config, so that a load change on a
    shared machine hits both sides of a ratio alike; a config's ratio in a round is taken
    against that round's ImageDataGenerator figure.
    """
    idg: list[float] = []
    rates: dict[tuple[str, str], list[float]] = {cfg: [] for cfg in configs}
    for _ in range(rounds):
        idg.append(bench_idg(x, y, batch_size, seconds))
        for preset, path in configs:
            rates[(preset, path)].append(bench_pipeline(x, y, batch_size, preset, path, seconds))
    return idg, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="cooked set-*.h5 file (default: synthetic images)")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shapes", default="24x24x1,48x48x3")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds (ImageDataGenerator, then every config); medians are shown")
    parser.add_argument("--configs", default=",".join(f"{p}/{q}" for p, q in CONFIGS),
                        help="preset/path pairs to measure, comma-separated (e.g. fidle/tf)")
    parser.add_argument("--epoch-steps", type=int, default=15)
    parser.add_argument("--epoch-shape", default="48x48x3")
    parser.add_argument("--skip-epoch", action="store_true")
    args = parser.parse_args()
    configs = tuple(tuple(c.split("/")) for c in args.configs.split(","))  # type: ignore[misc]
    print(f"cores visible: {len(os.sched_getaffinity(0))}; batch size {args.batch_size}; {args.images} images; "
          f"{args.rounds} interleaved rounds (medians); load average {os.getloadavg()[0]:.1f}")
    for spec in args.shapes.split(","):
        shape = tuple(int(v) for v in spec.split("x"))
        x, y = _images(args.data, args.images, shape)  # type: ignore[arg-type]
        idg, rates = bench_shape(x, y, args.batch_size, args.seconds, args.rounds, configs)  # type: ignore[arg-type]
        print(f"\n{spec}: augmented images/s, median of {args.rounds} rounds (median per-round ratio to "
              f"ImageDataGenerator; range)")
        print(f"  {'ImageDataGenerator (course settings)':40s} {np.median(idg):10.0f}   1.0x   "
              f"({min(idg):.0f}-{max(idg):.0f} images/s)")
        for (preset, path), values in rates.items():
            ratios = [v / i for v, i in zip(values, idg)]
            print(f"  {f'gtsrb-kit {preset} / {path}':40s} {np.median(values):10.0f} {np.median(ratios):5.1f}x   "
                  f"({min(ratios):.1f}-{max(ratios):.1f}x)", flush=True)
    if not args.skip_epoch:
        shape = tuple(int(v) for v in args.epoch_shape.split("x"))
        x, y = _images(args.data, args.images, shape)  # type: ignore[arg-type]
        times = bench_epoch(x, y, args.batch_size, args.epoch_steps)
        print(f"\nepoch cost, default model, {args.epoch_shape}, batch {args.batch_size} "
              "(seconds per training step incl. input pipeline; best of 3 interleaved rounds)")
        for preset in ("none", "fidle", "strong"):
            extra = (times[preset] / times["none"] - 1) * 100
            print(f"  augment {preset:7s} {times[preset]:.4f} s/step   {extra:+6.1f} % vs none")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
