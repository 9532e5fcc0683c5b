"""The GTSRB-C robustness benchmark: a model's accuracy under every challenge and level.

The corrupted test sets are built from the raw test images (:mod:`gtsrb_kit.corrupt`, at the
source resolution), then given the model's own preprocessing (size, mode, ROI crop). Worker
processes decode each chunk of images once and produce every challenge and level from it; this
process classifies them. :func:`run_robustness` writes ``robustness.json``, a PNG of accuracy
against level and a PNG of one sign under every challenge and level, and can save the corrupted
sets as cooked HDF5 files (one per challenge and level, readable with ``load_split``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gtsrb_kit.catalog import load_image, read_catalog
from gtsrb_kit.corrupt import CHALLENGES, LEVELS, NUM_LEVELS, check_challenge, corrupt, image_key
from gtsrb_kit.enhance import enhance
from gtsrb_kit.errors import DataError
from gtsrb_kit.fileio import write_json
from gtsrb_kit.plotting import image_grid, pyplot, save_png
from gtsrb_kit.progress import ProgressCallback, report
from gtsrb_kit.runs import ROBUSTNESS_FILE
from gtsrb_kit.split import check_fraction, scale_test
from gtsrb_kit.store import SplitColumns, VariantWriter, chunk_rows, encode_chunk, enhanced_filename
from gtsrb_kit.workers import available_cores, ordered, process_pool

RESULT_FILE = Path(ROBUSTNESS_FILE).name
CURVES_PNG = "robustness.png"
EXAMPLES_PNG = "challenges.png"
CLEAN = "clean"


@dataclass(frozen=True)
class _Task:
    """One chunk of test images and what to make of them (sent to a worker)."""

    paths: tuple[str, ...]
    rois: tuple[tuple[int, int, int, int] | None, ...]
    keys: tuple[int, ...]
    size: int
    mode: str
    seed: int
    challenges: tuple[str, ...]


def set_names(challenges: Sequence[str]) -> list[str]:
    """The corrupted sets of ``challenges``: ``clean`` then ``<challenge>/<level>``."""
    return [CLEAN] + [f"{c}/{level}" for c in challenges for level in range(1, NUM_LEVELS + 1)]


def _inputs(task: _Task) -> dict[str, np.ndarray]:
    """Model inputs of every set of the chunk: the raw images are decoded once."""
    images = [load_image(p) for p in task.paths]

    def prepared(pictures: list[np.ndarray]) -> np.ndarray:
        return np.stack([enhance(p, task.size, task.mode, roi) for p, roi in zip(pictures, task.rois)])

    out = {CLEAN: prepared(images)}
    for challenge in task.challenges:
        for level in range(1, NUM_LEVELS + 1):
            out[f"{challenge}/{level}"] = prepared(
                [corrupt(im, challenge, level, seed=task.seed, key=k) for im, k in zip(images, task.keys)])
    return out


def test_images(root: str | os.PathLike[str], *, scale: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """The catalog's test rows used by the benchmark (a class-stratified ``scale`` share of them)."""
    test = read_catalog(root, splits=("test",)).reset_index(drop=True)
    if test.empty:
        raise DataError(f"{root}: no test images; check --root (the benchmark uses the official test set)")
    rows = scale_test(test, check_fraction("scale", scale, low_open=True, high_closed=True), seed)
    return test.iloc[rows].reset_index(drop=True)


def _tasks(test: pd.DataFrame, preprocessing: dict[str, Any], seed: int, challenges: tuple[str, ...]) -> list[_Task]:
    rows = chunk_rows(len(test))
    boxes = test[["roi_x1", "roi_y1", "roi_x2", "roi_y2"]].to_numpy()
    roi = bool(preprocessing.get("roi"))
    tasks = []
    for start in range(0, len(test), rows):
        part = slice(start, start + rows)
        tasks.append(_Task(
            paths=tuple(test["path"].iloc[part]),
            rois=tuple(tuple(int(v) for v in b) if roi else None for b in boxes[part]),
            keys=tuple(image_key(p) for p in test["rel_path"].iloc[part]),
            size=int(preprocessing["size"]), mode=str(preprocessing["mode"]), seed=seed, challenges=challenges))
    return tasks


class _Writers(contextlib.ExitStack):
    """One cooked-schema HDF5 file per set, written chunk by chunk (``--write``)."""

    def __init__(self, out: Path | None, names: list[str], test: pd.DataFrame, preprocessing: dict[str, Any],
                 seed: int, scale: float) -> None:
        super().__init__()
        self.files: dict[str, VariantWriter] = {}
        if out is None:
            return
        size, mode, roi = int(preprocessing["size"]), str(preprocessing["mode"]), bool(preprocessing.get("roi"))
        empty = SplitColumns(y=np.empty(0, np.int16), path=[], track=np.empty(0, np.int64))
        test_columns = SplitColumns(y=test["class_id"].to_numpy(), path=list(test["rel_path"]))
        for name in names:
            challenge, _, level = name.partition("/")
            recipe = {"challenge": challenge, "level": int(level or 0), "size": size, "mode": mode, "roi": roi,
                      "seed": seed, "scale": scale, "parameter": LEVELS[challenge][int(level) - 1] if level else None}
            attrs = {"size": size, "mode": mode, "roi": roi, "scale": scale, "seed": seed, "challenge": challenge,
                     "level": int(level or 0), "class_names": preprocessing.get("class_names", []), "recipe": recipe}
            path = out / name.replace("/", "-") / enhanced_filename(size, mode, roi)
            path.parent.mkdir(parents=True, exist_ok=True)
            columns = {"train": empty, "val": empty, "test": test_columns, "meta": empty}
            self.files[name] = self.enter_context(
                VariantWriter(path, size=size, mode=mode, columns=columns, attrs=attrs))

    def write(self, chunk: int, sets: dict[str, np.ndarray], rows: int, mode: str) -> None:
        for name, writer in self.files.items():
            padded = np.zeros((rows, *sets[name].shape[1:]), np.uint8)
            padded[:len(sets[name])] = sets[name]
            writer.write_chunk("test", chunk, encode_chunk(padded, mode))


def _correct_counts(model_path: Path, preprocessing: dict[str, Any], test: pd.DataFrame, *, seed: int,
                    challenges: tuple[str, ...], workers: int, batch_size: int, write: Path | None, scale: float,
                    progress: ProgressCallback | None) -> dict[str, int]:
    """How many test images the model gets right in every set."""
    from gtsrb_kit.evaluate import load_model, predict_probs

    model = load_model(model_path)
    names = set_names(challenges)
    correct = dict.fromkeys(names, 0)
    labels = test["class_id"].to_numpy()
    tasks = _tasks(test, preprocessing, seed, challenges)
    rows, done = chunk_rows(len(test)), 0
    report(progress, "robustness", 0, len(test))
    with process_pool(workers, preload=__name__) as pool, \
            _Writers(write, names, test, preprocessing, seed, scale) as writers:
        for k, (task, sets) in enumerate(ordered(pool, _inputs, tasks, max(2, workers))):
            y = labels[done:done + len(task.paths)]
            predicted = predict_probs(model, np.concatenate([sets[n] for n in names]), batch_size).argmax(axis=1)
            for n, guess in zip(names, predicted.reshape(len(names), -1)):
                correct[n] += int(np.sum(guess == y))
            writers.write(k, sets, rows, str(preprocessing["mode"]))
            done += len(task.paths)
            report(progress, "robustness", done, len(test))
    return correct


def _scores(correct: dict[str, int], count: int, challenges: tuple[str, ...]) -> dict[str, Any]:
    accuracy = {n: c / count for n, c in correct.items()}
    per = {c: [round(accuracy[f"{c}/{lv}"], 6) for lv in range(1, NUM_LEVELS + 1)] for c in challenges}
    mean = float(np.mean([a for levels in per.values() for a in levels]))
    clean = accuracy[CLEAN]
    return {
        "clean_accuracy": round(clean, 6),
        "mean_corruption_accuracy": round(mean, 6),
        "relative_drop": round((clean - mean) / clean, 6) if clean else None,
        "challenges": {c: {"accuracy": per[c], "mean": round(float(np.mean(per[c])), 6)} for c in challenges},
        "hardest": sorted(challenges, key=lambda c: (np.mean(per[c]), c))[:3],
    }


def _relative_to(scores: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """ImageNet-C's corruption errors of a model relative to a baseline's (``mCE``, relative ``mCE``)."""
    ce, relative = {}, {}
    for c, entry in scores["challenges"].items():
        err = np.subtract(1, entry["accuracy"])
        base_err = np.subtract(1, base["challenges"][c]["accuracy"])
        ce[c] = float(err.sum() / max(base_err.sum(), 1e-12))
        clean_gap = base_err.sum() - NUM_LEVELS * (1 - base["clean_accuracy"])
        relative[c] = float((err.sum() - NUM_LEVELS * (1 - scores["clean_accuracy"])) / max(clean_gap, 1e-12))
    return {"corruption_error": {c: round(v, 4) for c, v in ce.items()}, "mce": round(float(np.mean(list(ce.values()))), 4),
            "relative_mce": round(float(np.mean(list(relative.values()))), 4)}


def plot_robustness(result: dict[str, Any], out_png: str | os.PathLike[str]) -> Path:
    """Accuracy against level (0 = clean) for every challenge."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab20")
    for i, (c, entry) in enumerate(result["challenges"].items()):
        ax.plot(range(NUM_LEVELS + 1), [result["clean_accuracy"], *entry["accuracy"]], marker="o", markersize=3,
                color=cmap(i % 20), label=f"{c} ({entry['mean']:.3f})")
    ax.set(xlabel="severity level (0 = clean)", ylabel="test accuracy", ylim=(0, 1.01),
           title=f"GTSRB-C: mean corruption accuracy {result['mean_corruption_accuracy']:.4f} "
                 f"(clean {result['clean_accuracy']:.4f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    return save_png(fig, out_png)


def plot_challenges(image: np.ndarray, out_png: str | os.PathLike[str], *, seed: int = 0, key: int = 0,
                    challenges: Sequence[str] = CHALLENGES) -> Path:
    """One raw sign under every challenge (rows) and level (columns, the first clean)."""
    images, labels = [], []
    for c in challenges:
        images.append(image)
        labels.append(c.replace("_", " "))
        for level in range(1, NUM_LEVELS + 1):
            images.append(corrupt(image, c, level, seed=seed, key=key))
            labels.append(f"level {level}")
    return image_grid(images, labels, out_png, title="GTSRB-C: every challenge at levels 1-5", cols=NUM_LEVELS + 1,
                      cell=72)


def run_robustness(
    model: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    scale: float = 1.0,
    challenges: Sequence[str] = CHALLENGES,
    baseline: str | os.PathLike[str] | None = None,
    write: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    batch_size: int = 256,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Measure a model on GTSRB-C built from the raw test images under ``root``.

    Args:
        model: A ``.keras`` file written by ``gtsrb-kit train`` (its preprocessing is applied).
        root: The raw GTSRB tree (official or Kaggle layout).
        out: Folder for ``robustness.json`` and the PNGs (default: ``<model folder>/robustness``).
        seed: Seed of the corruptions (the same seed gives the same pixels).
        scale: Share of the test images (class-stratified; 1 = all 12,630).
        challenges: Which challenges (default: all of :data:`~gtsrb_kit.corrupt.CHALLENGES`).
        baseline: Another model: adds ImageNet-C's corruption errors relative to it.
        write: Also save every corrupted set as a cooked HDF5 file under this folder.
        workers: Processes that corrupt and preprocess (default: one per CPU).
        batch_size: Inference batch size.
        progress: Optional ``progress(description, completed, total)`` callback.

    Returns:
        The content of ``robustness.json``.
    """
    from gtsrb_kit.evaluate import read_preprocessing

    started = time.perf_counter()
    model = Path(model)
    chosen = tuple(dict.fromkeys(check_challenge(c) for c in challenges))
    pre = read_preprocessing(model)
    test = test_images(root, scale=scale, seed=seed)
    workers = min(8, available_cores()) if workers is None else workers
    common = {"seed": seed, "challenges": chosen, "workers": workers, "batch_size": batch_size, "scale": scale,
              "progress": progress}
    correct = _correct_counts(model, pre, test, write=None if write is None else Path(write), **common)
    result = {"model": str(model), "root": str(root), "images": len(test), "seed": seed, "scale": scale,
              "preprocessing": {k: pre.get(k) for k in ("size", "mode", "roi")}, **_scores(correct, len(test), chosen),
              "levels": {c: list(LEVELS[c]) for c in chosen}}
    if baseline is not None:
        base_pre = read_preprocessing(baseline)
        base = _scores(_correct_counts(Path(baseline), base_pre, test, write=None, **common), len(test), chosen)
        result["baseline"] = {"model": str(baseline), **base, **_relative_to(result, base)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    out_dir = Path(out) if out is not None else model.parent / Path(ROBUSTNESS_FILE).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RESULT_FILE, result)
    plot_robustness(result, out_dir / CURVES_PNG)
    first = test.iloc[0]
    plot_challenges(load_image(first["path"]), out_dir / EXAMPLES_PNG, seed=seed, key=image_key(first["rel_path"]),
                    challenges=chosen)
    return result
