"""Evaluate a trained model on a cooked file, and classify image files with it.

A ``.keras`` file carries its preprocessing (size, mode, ROI crop, class names), so ``predict``
applies what the model was trained with. An image given to :func:`predict` is taken as a
GTSRB-style crop: for ROI-trained models its margin around the sign is cropped first.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import write_text_atomic
from gtsrb_kit.plotting import image_grid, pyplot, save_png, wrap
from gtsrb_kit.runs import CONFIG_FILE, read_json, read_keras_metadata, write_json

_NO_MODEL = "no such model file; pass a .keras file from a run folder (e.g. run/x/best.keras)"


def read_preprocessing(model_path: str | Path) -> dict[str, Any]:
    """The preprocessing a model was trained with (size, mode, roi, input_shape, class_names).

    Looks in the ``.keras`` file first, then in ``config.json`` beside it.

    Raises:
        DataError: the model file is missing or carries no preprocessing record.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(f"{model_path}: {_NO_MODEL}")
    meta = read_keras_metadata(model_path)
    if meta and meta.get("size") and meta.get("mode"):
        return {k: meta[k] for k in ("size", "mode", "roi", "input_shape", "class_names", "model") if k in meta}
    pre = (read_json(model_path.parent / CONFIG_FILE) or {}).get("preprocessing")
    if pre and pre.get("size") and pre.get("mode"):
        return pre
    raise DataError(f"{model_path}: no preprocessing record (not written by gtsrb-kit train, and no config.json "
                    "beside it); use a model from a gtsrb-kit run folder")


def load_model(model_path: str | Path) -> Any:
    """Load a ``.keras`` model to compute in float32 (:func:`~gtsrb_kit.models.as_float32`), with a
    one-line error for unreadable files."""
    import keras

    from gtsrb_kit.models import as_float32, custom_objects

    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(f"{model_path}: {_NO_MODEL}")
    try:
        model = keras.models.load_model(model_path, custom_objects=custom_objects())
    except Exception as exc:  # keras raises ValueError/OSError/zip errors
        raise DataError(f"{model_path}: not a loadable Keras model ({type(exc).__name__}); "
                        "pass a .keras file written by gtsrb-kit train") from None
    return as_float32(model)


def predict_probs(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of ``uint8`` images, through the loader training uses (no shuffling)."""
    from gtsrb_kit.store import array_dataset

    return np.asarray(model.predict(array_dataset(x, batch_size=batch_size), verbose=0), dtype=np.float64)


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


#: Test-time augmentation: ``(dx, dy, scale)`` views of every image, shifts in pixels of a
#: 32-pixel image (scaled with the size), scales around the centre. Never a flip: a mirrored
#: sign is another sign (keep left / keep right).
TTA_VIEWS: tuple[tuple[float, float, float], ...] = (
    (0, 0, 1.0), (1, 0, 1.0), (-1, 0, 1.0), (0, 1, 1.0), (0, -1, 1.0), (0, 0, 1.08), (0, 0, 0.93),
)


def tta_view(x: np.ndarray, dx: float, dy: float, scale: float) -> np.ndarray:
    """``uint8`` images ``(N, H, W, C)`` shifted by ``(dx, dy)`` pixels of a 32-pixel image and scaled."""
    import cv2

    h, w = x.shape[1:3]
    unit = w / 32
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, scale)
    m[:, 2] += (dx * unit, dy * unit)
    out = [cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for img in x]
    return np.stack(out).reshape(x.shape)


def predict_tta(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities averaged over the :data:`TTA_VIEWS` of every image."""
    return np.mean([predict_probs(model, tta_view(x, *view), batch_size) for view in TTA_VIEWS], axis=0)


def split_scores(model: Any, data: str | Path, split: str = "test", batch_size: int = 256, *, tta: bool = False,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Images, labels, predicted probabilities (``tta``: averaged over :data:`TTA_VIEWS`) and class names.

    Raises:
        DataError: missing/foreign file, or images that do not fit the model.
    """
    from gtsrb_kit.store import class_names, load_split

    x, y = load_split(data, split)
    expected = tuple(int(v) for v in model.input_shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise DataError(f"{data}: images are {tuple(x.shape[1:])} but the model expects {expected}; "
                        "evaluate on a file cooked with the model's size and mode")
    names = class_names(data) or [str(i) for i in range(model.output_shape[-1])]
    probs = predict_tta(model, x, batch_size) if tta else predict_probs(model, x, batch_size)
    return x, y, probs, names


def committee_scores(models: Sequence[str | Path], data: Sequence[str | Path], split: str = "test",
                     batch_size: int = 256, *, tta: bool = False, cache: dict[tuple, tuple] | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """:func:`split_scores` of a committee: the mean of its members' probabilities.

    Each member reads its own data file (``data[i]``, cooked with its size and mode), so a
    committee may mix variants; the files must hold the same images in the same order (their
    labels are compared). ``cache`` (a dict kept by the caller) holds each member's scores, so
    committees that share members predict each of them once.
    """
    if len(models) != len(data):
        raise ConfigError(f"{len(models)} models but {len(data)} data files; give one --data, or one per --model")
    first = None
    total = None
    cache = {} if cache is None else cache
    for model_path, data_path in zip(models, data):
        key = (str(Path(model_path).resolve()), str(Path(data_path).resolve()), split, tta)
        if key not in cache:
            cache[key] = split_scores(load_model(model_path), data_path, split, batch_size, tta=tta)
        x, y, probs, names = cache[key]
        if first is None:
            first = (x, y, names)
        elif not np.array_equal(y, first[1]):
            raise DataError(f"{data_path}: its {split} split holds other images than {data[0]}'s; "
                            "cook the members' files from the same raw tree, scale and seed")
        total = probs if total is None else total + probs
    assert first is not None and total is not None
    return first[0], first[1], total / len(models), first[2]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def plot_confusion(cm: np.ndarray, out_png: Path, title: str) -> Path:
    """Row-normalised confusion matrix as a PNG (log colour scale to show rare errors)."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    rows = cm.sum(axis=1, keepdims=True)
    norm = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(np.where(norm > 0, norm, np.nan), cmap="viridis", norm=LogNorm(vmin=1e-3, vmax=1.0))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    n = cm.shape[0]
    ax.set_xticks(range(0, n, 2))
    ax.set_yticks(range(0, n, 2))
    ax.tick_params(labelsize=6)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    return save_png(fig, out_png)


def plot_worst(x: np.ndarray, y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], out_png: Path,
               count: int = 24) -> Path:
    """The misclassified images with the most confident wrong predictions, with true/predicted names."""
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    order = wrong[np.argsort(-probs[wrong, y_pred[wrong]], kind="stable")][:count]
    labels = [f"{wrap(f'true {y_true[i]}: {class_names[y_true[i]]}', 22)}\n"
              f"{wrap(f'pred {y_pred[i]}: {class_names[y_pred[i]]}', 22)}\np={probs[i, y_pred[i]]:.2f}" for i in order]
    title = f"{len(wrong)} misclassified; the {len(order)} most confident mistakes" if len(wrong) else \
        "no misclassified images"
    return image_grid([x[i] for i in order], labels, out_png, title=title, cols=6, cell=140)


def evaluate(
    model_path: str | Path | Sequence[str | Path],
    data: str | Path | Sequence[str | Path],
    *,
    out_dir: str | Path | None = None,
    split: str = "test",
    batch_size: int = 256,
    worst: int = 24,
    tta: bool = False,
    cache: dict[tuple, tuple] | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class table, confusion matrix and worst mistakes of a model (or committee) on one split.

    Args:
        model_path: A ``.keras`` file (e.g. ``run/x/best.keras``), or several: a committee, the
            mean of the models' probabilities.
        data: A cooked ``set-*.h5`` file with the same size and channels the model was trained on;
            for a committee one file, or one per model.
        out_dir: Where to write ``evaluation.json``, ``per_class.csv``, ``confusion_matrix.png`` and
            ``worst_errors.png`` (default: ``<model folder>/eval-<data stem>-<split>``, with
            ``committee<N>-`` for a committee).
        split: ``test`` (default), ``val``, ``train`` or ``meta``.
        batch_size: Inference batch size.
        worst: How many misclassified images to show.
        tta: Average the probabilities over the :data:`TTA_VIEWS` of every image.
        cache: Members' scores kept between calls (see :func:`committee_scores`).

    Returns:
        ``{"accuracy", "count", "errors", "per_class": [...], "files": {...}, "models", "data_files", ...}``;
        one model's also has ``model`` and ``data``.

    Raises:
        DataError: missing/foreign files, or a data file whose images do not fit the model.
    """
    models = [Path(model_path)] if isinstance(model_path, (str, Path)) else [Path(m) for m in model_path]
    data_files = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    if not models:
        raise ConfigError("no model given; pass at least one --model")
    data_files = data_files * len(models) if len(data_files) == 1 else data_files
    x, y, probs, names = committee_scores(models, data_files, split, batch_size, tta=tta, cache=cache)
    model_path, data = models[0], data_files[0]
    prefix = f"committee{len(models)}-" if len(models) > 1 else ""
    prefix += "tta-" if tta else ""
    y_pred = probs.argmax(axis=1)
    num_classes = int(probs.shape[1])
    out = Path(out_dir) if out_dir is not None else model_path.parent / f"eval-{prefix}{data.stem}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    cm = confusion_matrix(y, y_pred, num_classes)
    per_class = per_class_report(y, y_pred, names)
    accuracy = float(np.mean(y_pred == y)) if len(y) else float("nan")
    files = {
        "confusion_matrix": str(plot_confusion(cm, out / "confusion_matrix.png",
                                               f"{prefix}{model_path.name} on {data.name} ({split}): "
                                               f"accuracy {accuracy:.4f}")),
        "worst_errors": str(plot_worst(x, y, probs, names, out / "worst_errors.png", count=worst)),
        "per_class": str(out / "per_class.csv"),
        "evaluation": str(out / "evaluation.json"),
    }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(per_class[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(per_class)
    write_text_atomic(out / "per_class.csv", buf.getvalue())
    np.savetxt(out / "confusion_matrix.csv", cm, fmt="%d", delimiter=",")
    result = {
        **({"model": str(model_path), "data": str(data)} if len(models) == 1 else {}),  # a committee has no one model
        "models": [str(m) for m in models], "data_files": [str(f) for f in data_files], "split": split, "tta": tta,
        "accuracy": round(accuracy, 6),
        "count": int(len(y)), "errors": int(np.sum(y_pred != y)), "per_class": per_class, "files": files,
    }
    write_json(out / "evaluation.json", result)
    return result


def _gtsrb_sign_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The sign inside a GTSRB-style crop: a margin of 10 % of the sign size (at least 5 px) per side."""

    def inner(n: int) -> tuple[int, int]:
        sign = n / 1.2 if n / 1.2 >= 50 else n - 10
        if sign < 4:  # too small to hold a margin: keep everything
            return 0, n - 1
        margin = int(round((n - sign) / 2))
        return margin, n - 1 - margin

    x1, x2 = inner(width)
    y1, y2 = inner(height)
    return x1, y1, x2, y2


def preprocess_image(image: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
    """Turn one ``uint8`` RGB image into the model's input (``uint8`` ``(size, size, C)``)."""
    from gtsrb_kit.enhance import enhance

    roi = _gtsrb_sign_box(image.shape[1], image.shape[0]) if preprocessing.get("roi") else None
    return enhance(image, int(preprocessing["size"]), str(preprocessing["mode"]), roi=roi)


def predict(
    model_path: str | Path,
    images: Sequence[str | Path],
    *,
    top_k: int = 1,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Classify image files (PPM, PNG, JPEG, any size) with a trained model.

    Args:
        model_path: A ``.keras`` file written by :func:`gtsrb_kit.train.train`, or a model written by
            :func:`gtsrb_kit.export.export_model` (``.onnx``, ``.tflite``, SavedModel folder).
        images: Image files, each a crop around one sign (as GTSRB images are).
        top_k: How many classes to return per image (best first).
        batch_size: Inference batch size.

    Returns:
        One dict per image: ``path``, ``class_id``, ``name``, ``probability`` and ``top`` (the
        ``top_k`` best ``{class_id, name, probability}``).

    Raises:
        DataError: unreadable model or image files.
        ConfigError: ``top_k`` < 1 or no images given.
    """
    from gtsrb_kit.export import exported_kind, predict_exported

    if exported_kind(model_path):  # .onnx / .tflite / SavedModel: through its runtime (ONNX: no TensorFlow)
        return predict_exported(model_path, images, top_k=top_k, batch_size=batch_size)
    check_request(images, top_k)
    pre = read_preprocessing(model_path)
    model = load_model(model_path)
    x = read_inputs(images, pre)
    expected = tuple(int(v) for v in model.input_shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise DataError(f"{model_path}: expects {expected} inputs but its preprocessing record gives "
                        f"{tuple(x.shape[1:])}; the model file and its record disagree")
    return top_classes(images, predict_probs(model, x, batch_size), pre.get("class_names") or [], top_k)


def check_request(images: Sequence[str | Path], top_k: int) -> None:
    """A ConfigError for an empty image list or ``top_k`` < 1."""
    if not images:
        raise ConfigError("no images given; pass one or more PPM/PNG/JPEG files")
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")


def read_inputs(images: Sequence[str | Path], preprocessing: dict[str, Any]) -> np.ndarray:
    """The model inputs (``uint8``) of image files: the package's decoder, then :func:`preprocess_image`."""
    from gtsrb_kit.catalog import load_image

    batch = []
    for path in map(Path, images):
        if not path.is_file():
            raise DataError(f"{path}: no such image file")
        try:
            rgb = load_image(path)
        except Exception as exc:  # the decoder's DataError says why; anything else is named by its type
            why = str(exc).removeprefix(f"{path}: ").split(";")[0] if isinstance(exc, DataError) else type(exc).__name__
            raise DataError(f"{path}: not a readable image ({why}); pass PPM, PNG or JPEG files") from None
        batch.append(preprocess_image(rgb, preprocessing))
    return np.stack(batch)


def top_classes(images: Sequence[str | Path], probs: np.ndarray, class_names: Sequence[str], top_k: int,
                ) -> list[dict[str, Any]]:
    """Per image ``path``, ``class_id``, ``name``, ``probability`` and ``top`` (the ``top_k`` best)."""
    names = [str(n) for n in class_names]
    results = []
    for path, p in zip(images, probs):
        top = [{"class_id": int(c), "name": names[c] if c < len(names) else str(c), "probability": float(p[c])}
               for c in np.argsort(-p, kind="stable")[:top_k]]
        results.append({"path": str(path), **top[0], "top": top})
    return results
