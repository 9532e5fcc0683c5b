"""Explanations of a model's decisions: Grad-CAM heat maps over its worst errors and weakest classes.

Grad-CAM (Selvaraju et al. 2017) weighs the feature maps of the last convolution by the mean
gradient of a class score and keeps the positive part: where in the image the evidence for that
class lies. :func:`grad_cam` finds the last convolution of any bundled model itself; for a
spatial transformer (``stn-vgg``) it maps the heat map back from the warped view to the input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gtsrb_kit.errors import ConfigError
from gtsrb_kit.fileio import write_json
from gtsrb_kit.plotting import image_grid, wrap

ERRORS_PNG = "gradcam_errors.png"
WEAK_PNG = "gradcam_weak_classes.png"
RESULT_FILE = "explain.json"


def last_conv_layer(model: Any) -> str:
    """The name of the model's last layer that outputs a spatial feature map (a convolution's block)."""
    import keras

    skip = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.Dropout,
            keras.layers.SpatialDropout2D)
    for layer in reversed(model.layers):
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is not None and len(shape) == 4 and not isinstance(layer, skip):
            return layer.name
    raise ConfigError(f"{model.name}: has no convolution layer; Grad-CAM needs a convolutional model")


def grad_cam(model: Any, images: np.ndarray, class_ids: np.ndarray | None = None, *, layer: str | None = None,
             batch_size: int = 64) -> np.ndarray:
    """Grad-CAM maps of ``uint8`` images ``(N, H, W, C)`` for ``class_ids`` (default: the predicted class).

    Returns:
        ``float32`` ``(N, H, W)`` maps in [0, 1] (each scaled by its maximum; 0 where no evidence).
    """
    import keras
    import tensorflow as tf

    from gtsrb_kit.models import THETA_LAYER

    names = {lay.name for lay in model.layers}
    theta = [model.get_layer(THETA_LAYER).output] if THETA_LAYER in names else []
    probe = keras.Model(model.inputs, [model.get_layer(layer or last_conv_layer(model)).output, model.outputs[0],
                                       *theta])
    maps = []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size], tf.float32) / 255.0
        with tf.GradientTape() as tape:
            features, probs, *warp = probe(x, training=False)
            ids = tf.argmax(probs, axis=1) if class_ids is None else tf.constant(class_ids[start:start + batch_size])
            score = tf.math.log(tf.gather(probs, ids, batch_dims=1) + 1e-9)  # the class's logit up to a shared term
        weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0]
        if warp:
            cam = unwarp(cam.numpy(), np.asarray(warp[0]))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        maps.append((cam / tf.where(peak > 0, peak, 1.0)).numpy())
    return np.concatenate(maps).astype(np.float32) if maps else np.zeros((0, *images.shape[1:3]), np.float32)


def unwarp(maps: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Maps ``(N, H, W)`` seen in a spatial transformer's warped view, back in input coordinates.

    ``theta`` ``(N, 6)`` maps output to input points (:func:`gtsrb_kit.models.spatial_transform`);
    its inverse samples the maps, and input points the view did not cover get 0.
    """
    from gtsrb_kit.models import affine_points, spatial_transform

    affine = theta.reshape(-1, 2, 3).astype(np.float64)
    a_inv = np.linalg.inv(affine[..., :2])
    inverse = np.concatenate([a_inv, -a_inv @ affine[..., 2:]], axis=2).reshape(-1, 6).astype(np.float32)
    h, w = maps.shape[1:3]
    inside = (np.abs(np.asarray(affine_points(inverse, h, w))) <= 1 + 1e-6).all(axis=1).reshape(-1, h, w)
    back = np.asarray(spatial_transform(maps[..., None].astype(np.float32), inverse))[..., 0]
    return (back * inside).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map (jet colours) laid over the image, ``uint8`` RGB."""
    from matplotlib import colormaps

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    heat = colormaps["jet"](cam)[..., :3] * 255
    return (rgb * (1 - alpha) + heat * alpha).astype(np.uint8)


def _grid(x: np.ndarray, cams: dict[int, np.ndarray], y: np.ndarray, probs: np.ndarray, rows: np.ndarray,
          names: list[str], out: Path, title: str) -> Path:
    images, labels = [], []
    for i in rows:
        p = int(probs[i].argmax())
        images += [x[i], overlay(x[i], cams[i])]
        labels += [f"{wrap(f'true {y[i]}: {names[y[i]]}')}\np={probs[i, y[i]]:.2f}",
                   f"{wrap(f'pred {p}: {names[p]}')}\np={probs[i, p]:.2f}"]
    return image_grid(images, labels, out, title=title, cols=8, cell=110)


def explain(model_path: str | os.PathLike[str], data: str | os.PathLike[str], *, split: str = "test",
            out: str | os.PathLike[str] | None = None, count: int = 24, weak_classes: int = 4) -> dict[str, Any]:
    """Grad-CAM grids of a model's most confident mistakes and of correct images of its weakest classes.

    Args:
        model_path: A ``.keras`` file written by ``gtsrb-kit train``.
        data: A cooked file with the model's preprocessing.
        split: The split to explain.
        out: Folder for the PNGs and ``explain.json`` (default: ``<model folder>/explain``).
        count: Images per grid.
        weak_classes: How many of the lowest-recall classes the second grid shows.

    Returns:
        The content of ``explain.json``: the files written and the images shown.
    """
    from gtsrb_kit.evaluate import load_model, per_class_report, split_scores

    model = load_model(model_path)
    x, y, probs, names = split_scores(model, data, split)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:count]
    # the lowest recalls among classes the model gets right at least once (there is something to show)
    recall = {r["class_id"]: r["recall"] for r in per_class_report(y, pred, names) if r["recall"] > 0}
    weakest = sorted(recall, key=lambda c: (recall[c], c))[:weak_classes]
    right = [np.flatnonzero((y == c) & (pred == c))[: max(1, count // max(1, len(weakest)))] for c in weakest]
    weak_rows = np.concatenate(right).astype(int) if right else np.empty(0, int)
    shown = np.concatenate([worst, weak_rows]).astype(int)
    cams = dict(zip(shown.tolist(), grad_cam(model, x[shown])))
    out_dir = Path(out) if out is not None else Path(model_path).parent / "explain"
    files = {
        "errors": str(_grid(x, cams, y, probs, worst, names, out_dir / ERRORS_PNG,
                            f"Grad-CAM of the {len(worst)} most confident mistakes ({len(wrong)} in all)")),
        "weak_classes": str(_grid(x, cams, y, probs, weak_rows, names, out_dir / WEAK_PNG,
                                  "Grad-CAM of correct images of the weakest classes: " + ", ".join(map(str, weakest)))),
    }
    result = {"model": str(model_path), "data": str(data), "split": split, "layer": last_conv_layer(model),
              "errors": [int(i) for i in worst], "weak_classes": {str(c): round(recall[c], 4) for c in weakest},
              "weak_class_images": [int(i) for i in weak_rows], "files": files}
    write_json(out_dir / RESULT_FILE, result)
    return result
