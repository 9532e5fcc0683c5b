"""Seeded, flip-free image augmentation for training: the presets in-graph, or your own albumentations pipeline.

Presets (:data:`PRESET_PARAMS`): ``none``; ``fidle``, the course's ``ImageDataGenerator`` settings
(Keras' conventions); ``strong``, a wider affine plus perspective, brightness/contrast, blur, noise
and occlusion. None ever flips: a mirrored "curve to the left" is a "curve to the right". Batch
``k`` of seed ``s`` draws from ``(s, k)`` with stateless ops; one XLA-compiled function then warps
and recolours the batch in-graph, on the device of the input pipeline.
"""

from __future__ import annotations

import copy
import functools
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from gtsrb_kit.errors import ConfigError

DEFAULT_PRESET = "strong"
# accepted ``path`` values and the implementation each names: ``auto`` and ``batch`` stay valid
# so that existing command lines and run configs keep working
PATHS: dict[str, str] = {"auto": "tf", "batch": "tf", "tf": "tf", "albumentations": "albumentations"}


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of one preset."""

    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    shift: float = 0.0  # fraction of the side, per axis
    zoom: tuple[float, float] = (1.0, 1.0)  # per-axis scale range
    shear: float = 0.0  # degrees
    perspective: float = 0.0  # projective coefficient times side
    brightness: float = 0.0  # additive, fraction of 255
    contrast: float = 0.0  # multiplicative around the image mean
    blur_p: float = 0.0
    noise_p: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.0)  # in grey levels
    occlusion_p: float = 0.0
    occlusion_size: tuple[float, float] = (0.1, 0.25)  # fraction of the side


PRESET_PARAMS: dict[str, AugmentParams] = {
    "none": AugmentParams(),
    "fidle": AugmentParams(rotation=10.0, shift=0.1, zoom=(0.8, 1.2), shear=0.1),
    "strong": AugmentParams(rotation=15.0, shift=0.1, zoom=(0.85, 1.15), shear=5.0, perspective=0.08,
                            brightness=0.25, contrast=0.25, blur_p=0.2, noise_p=0.3, noise_std=(3.0, 10.0),
                            occlusion_p=0.3, occlusion_size=(0.1, 0.3)),
}
PRESETS: tuple[str, ...] = tuple(PRESET_PARAMS)


def check_preset(preset: str) -> str:
    """Return ``preset`` if known, else raise :class:`ConfigError` listing the valid ones."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown augmentation preset {preset!r}; use one of {', '.join(PRESETS)}")
    return preset


def check_path(path: str) -> str:
    """The implementation (``tf`` or ``albumentations``) that ``path`` names; :class:`ConfigError` if unknown."""
    if path not in PATHS:
        raise ConfigError(f"unknown augmentation path {path!r}; use one of {', '.join(PATHS)}")
    return PATHS[path]


# --------------------------------------------------------------------------- in-graph presets

# columns of the per-image uniform draw, each scaled to its range by _ranges
_COLUMNS = ("rotation", "shear", "zoom_x", "zoom_y", "shift_x", "shift_y", "persp_x", "persp_y", "contrast",
            "brightness", "blur", "noise", "noise_std", "occlusion", "occ_h", "occ_w", "occ_y", "occ_x", "occ_fill")


def _ranges(p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    r, s = math.radians(p.rotation), math.radians(p.shear)
    pairs = [(-r, r), (-s, s), p.zoom, p.zoom, (-p.shift, p.shift), (-p.shift, p.shift),
             (-p.perspective, p.perspective), (-p.perspective, p.perspective), (-p.contrast, p.contrast),
             (-p.brightness, p.brightness), (0, 1), (0, 1), p.noise_std, (0, 1), p.occlusion_size,
             p.occlusion_size, (0, 1), (0, 1), (0, 255)]
    return tuple(np.array(pairs, np.float32).T)  # lows, highs


def _maps(d: dict[str, Any], hf: Any, wf: Any) -> Any:
    """(N, 8) output -> input maps: Keras' ``Rotation . Shear . Zoom`` (never mirrors), shift, perspective."""
    import tensorflow as tf

    cos, sin = tf.cos(d["rotation"]), tf.sin(d["rotation"])
    sin_s, cos_s = tf.sin(d["shear"]), tf.cos(d["shear"])
    zx, zy = d["zoom_x"], d["zoom_y"]
    return tf.stack([cos * zx, (-cos * sin_s - sin * cos_s) * zy, (wf - 1) / 2 + d["shift_x"] * wf,
                     sin * zx, (-sin * sin_s + cos * cos_s) * zy, (hf - 1) / 2 + d["shift_y"] * hf,
                     d["persp_x"] / wf, d["persp_y"] / hf], axis=1)


def _warp(x: Any, m: list[Any], perspective: bool) -> Any:
    """Bilinear warp with nearest fill of a float NHWC batch, each image by its map of :func:`_maps`."""
    import tensorflow as tf

    n, h, w, c = tf.unstack(tf.shape(x))
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    u, v = (tf.range(wf) - (wf - 1) / 2)[None, None, :, None], (tf.range(hf) - (hf - 1) / 2)[None, :, None, None]
    den = 1.0 + m[6] * u + m[7] * v if perspective else 1.0
    sx, sy = (m[0] * u + m[1] * v) / den + m[2], (m[3] * u + m[4] * v) / den + m[5]
    sx, sy = tf.clip_by_value(sx, 0.0, wf - 1), tf.clip_by_value(sy, 0.0, hf - 1)
    x0, y0 = tf.floor(sx), tf.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, w - 1), tf.minimum(y0 + 1, h - 1)
    flat, base = tf.reshape(x, [-1, c]), (tf.range(n) * h * w)[:, None, None, None]
    # four gathers, not one over stacked indices: XLA fuses these into the arithmetic
    p00, p01, p10, p11 = (tf.gather(flat, (base + yy * w + xx)[..., 0])
                          for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)))
    return (p00 * (1 - fx) + p01 * fx) * (1 - fy) + (p10 * (1 - fx) + p11 * fx) * fy


def _blur(x: Any) -> Any:
    """3x3 binomial blur of a float NHWC batch, edges repeated."""
    import tensorflow as tf

    y = tf.pad(x, [[0, 0], [1, 1], [0, 0], [0, 0]], mode="SYMMETRIC")
    x = (y[:, :-2] + 2 * y[:, 1:-1] + y[:, 2:]) / 4
    y = tf.pad(x, [[0, 0], [0, 0], [1, 1], [0, 0]], mode="SYMMETRIC")
    return (y[:, :, :-2] + 2 * y[:, :, 1:-1] + y[:, :, 2:]) / 4


def _occlude(x: Any, d: dict[str, Any], p: AugmentParams) -> Any:
    """Fill one rectangle per hit image with a uniform grey."""
    import tensorflow as tf

    hf, wf = (tf.cast(side, tf.float32) for side in tf.unstack(tf.shape(x))[1:3])
    hh, ww = tf.maximum(1.0, tf.floor(d["occ_h"] * hf)), tf.maximum(1.0, tf.floor(d["occ_w"] * wf))
    y0, x0 = tf.floor(d["occ_y"] * (hf - hh + 1)), tf.floor(d["occ_x"] * (wf - ww + 1))
    rows, cols = tf.range(hf)[None, :, None, None], tf.range(wf)[None, None, :, None]
    inside = (rows >= y0) & (rows < y0 + hh) & (cols >= x0) & (cols < x0 + ww) & (d["occlusion"] < p.occlusion_p)
    return tf.where(inside, d["occ_fill"], x)


@functools.lru_cache(maxsize=None)
def _compiled(params: AugmentParams) -> Any:
    """A preset's column ranges and its XLA-compiled pixel work (XLA fuses gathers and arithmetic into one loop)."""
    import tensorflow as tf

    low, high = _ranges(params)

    def run(images: Any, maps: Any, draws: Any, noise: Any) -> Any:
        # one (N, 1, 1, 1) tensor per column, broadcasting over each image
        d = dict(zip(_COLUMNS, tf.unstack(draws[:, :, None, None, None], axis=1)))
        x = _warp(tf.cast(images, tf.float32), tf.unstack(maps[:, :, None, None, None], axis=1), params.perspective > 0)
        if params.brightness or params.contrast:
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            x = (x - mean) * (1.0 + d["contrast"]) + mean + d["brightness"] * 255.0
        if params.blur_p:
            x = tf.where(d["blur"] < params.blur_p, _blur(x), x)
        if params.noise_p:
            x = x + noise * tf.where(d["noise"] < params.noise_p, d["noise_std"], 0.0)
        if params.occlusion_p:
            x = _occlude(x, d, params)
        return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)

    return low, high, tf.function(run, jit_compile=True)


def _augment(images: Any, seed: Any, params: AugmentParams, rows: tuple[Any, Any] | None = None) -> Any:
    """Augment a ``uint8`` NHWC batch (array or tensor) with the draws of ``seed``, an int64 pair.

    ``rows=(start, total)``: the images are rows ``start...`` of a batch of ``total`` and get those
    rows' draws (a replica's share of a global batch).
    """
    import tensorflow as tf

    # philox everywhere: the same draws on the CPU, on a GPU and under XLA
    uniform_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2, alg="philox"))
    low, high, run = _compiled(params)
    shape = tf.shape(images)
    start, total = (tf.cast(v, tf.int32) for v in rows) if rows is not None else (0, shape[0])
    draws = low + tf.random.stateless_uniform([total, len(_COLUMNS)], uniform_seed, alg="philox") * (high - low)
    draws = draws[start:start + shape[0]]
    maps = _maps(dict(zip(_COLUMNS, tf.unstack(draws, axis=1))), *tf.unstack(tf.cast(shape[1:3], tf.float32)))
    noise = (tf.random.stateless_normal(tf.concat([[total], shape[1:]], 0), noise_seed, alg="philox")
             [start:start + shape[0]] if params.noise_p else None)
    return run(images, maps, draws, noise)


# --------------------------------------------------------------------------- albumentations

def albumentations_pipeline(preset: str, *, seed: int = 0) -> Any:
    """An ``albumentations.Compose`` close to a preset (seeded), to start a pipeline of your own from.

    Its affine, brightness/contrast, noise and occlusion use the preset's ranges; its perspective
    (``A.Perspective``, corner jitter) and blur (``A.GaussianBlur``) are albumentations' own, so
    its images follow the preset's distributions only approximately.
    """
    import albumentations as A
    import cv2

    p = PRESET_PARAMS[check_preset(preset)]
    transforms = [
        preset != "none" and A.Affine(
            scale={"x": p.zoom, "y": p.zoom}, translate_percent={"x": (-p.shift, p.shift), "y": (-p.shift, p.shift)},
            rotate=(-p.rotation, p.rotation), shear={"x": (-p.shear, p.shear), "y": (0.0, 0.0)},
            interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REPLICATE, p=1.0),
        p.perspective and A.Perspective(scale=(0.01, 0.04), border_mode=cv2.BORDER_REPLICATE, p=0.7),
        (p.brightness or p.contrast) and A.RandomBrightnessContrast(
            brightness_limit=p.brightness, contrast_limit=p.contrast, p=1.0),
        p.blur_p and A.GaussianBlur(blur_limit=(3, 3), p=p.blur_p),
        p.noise_p and A.GaussNoise(std_range=(p.noise_std[0] / 255, p.noise_std[1] / 255), p=p.noise_p),
        p.occlusion_p and A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=p.occlusion_size,
                                          hole_width_range=p.occlusion_size, fill="random_uniform", p=p.occlusion_p),
    ]
    return A.Compose([t for t in transforms if t], seed=seed)


# --------------------------------------------------------------------------- the Augmenter

class Augmenter:
    """A seeded augmentation: ``aug(images, counter)`` or ``aug.map_dataset(ds)``.

    Args:
        preset: A name of :data:`PRESETS`, :class:`AugmentParams`, or an albumentations
            transform of your own (applied per image; it must not flip).
        path: A key of :data:`PATHS`: in-graph (``tf``) or :func:`albumentations_pipeline`.
        seed: Base seed; batch ``k`` draws from ``(seed, k)``.
    """

    def __init__(self, preset: Any = DEFAULT_PRESET, *, path: str = "auto", seed: int = 0) -> None:
        self.seed = int(seed)
        self._local = threading.local()
        self._pipeline = None
        if isinstance(preset, str):
            self.preset, self.path, self.params = check_preset(preset), check_path(path), PRESET_PARAMS.get(preset)
        elif isinstance(preset, AugmentParams):
            self.preset, self.path, self.params = "custom", check_path(path), preset
        elif type(preset).__module__.split(".")[0] == "albumentations":
            self.preset, self.path, self.params, self._pipeline = "custom", "albumentations", None, preset
        else:
            raise ConfigError(f"augmentation {preset!r} is neither a preset name ({', '.join(PRESETS)}) "
                              "nor an albumentations transform; pass one of those")
        self.is_identity = self.params == AugmentParams()  # the ``none`` preset: images pass unchanged

    def path_for(self, shape: Any = None) -> str:
        """The implementation used (``tf`` or ``albumentations``), whatever the image shape."""
        return self.path

    def _albumentations(self, images: np.ndarray, counter: int) -> np.ndarray:
        # one Compose per thread: tf.data's parallel map calls us from several threads at once
        pipe = getattr(self._local, "pipeline", None)
        if pipe is None:
            pipe = self._local.pipeline = (copy.deepcopy(self._pipeline) if self._pipeline is not None
                                           else albumentations_pipeline(self.preset, seed=self.seed))
        pipe.set_random_seed(int(np.random.default_rng([self.seed & 0xFFFFFFFF, counter]).integers(0, 2**31 - 1)))
        return np.stack([np.asarray(pipe(image=image)["image"]).reshape(image.shape) for image in images])

    def augment_numpy(self, images: np.ndarray, counter: int = 0) -> np.ndarray:
        """Augment one ``uint8`` NHWC batch as batch number ``counter`` of the run (new array)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ConfigError(f"augmentation needs a uint8 batch (N, H, W, C); got {images.dtype} {images.shape}")
        if self.is_identity or len(images) == 0:
            return images.copy()
        if self.path == "albumentations":
            return self._albumentations(images, int(counter))
        return np.asarray(_augment(images, np.array([self.seed, counter], np.int64), self.params))

    __call__ = augment_numpy

    def augment_tensor(self, images: Any, counter: Any, rows: tuple[Any, Any] | None = None) -> Any:
        """Augment a ``uint8`` NHWC tensor in a ``tf.data`` map or a ``tf.function`` (static shape kept).

        ``rows=(start, total)``: the images are rows ``start...`` of batch ``counter`` of ``total``
        images and get what those rows would get (``tf`` path only).
        """
        import tensorflow as tf

        if self.is_identity:
            return images
        if self.path == "tf":
            out = _augment(images, tf.stack([tf.constant(self.seed, tf.int64), tf.cast(counter, tf.int64)]),
                           self.params, rows)
        elif rows is not None:
            raise ConfigError("an albumentations pipeline runs on the host, per batch; use the in-graph presets "
                              "for a replica's share of a batch")
        else:
            out = tf.numpy_function(lambda x, k: self.augment_numpy(x, int(k)), [images, counter], tf.uint8,
                                    stateful=False)
        out.set_shape(images.shape)
        return out

    def map_dataset(self, ds: Any, *, num_parallel_calls: Any = None) -> Any:
        """Map a dataset of ``(counter, images, labels)`` batches to ``(augmented images, labels)``, in order."""
        import tensorflow as tf

        calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
        return ds.map(lambda k, x, y: (self.augment_tensor(x, k), y), num_parallel_calls=calls, deterministic=True)


def make_augmenter(augment: Any, *, seed: int = 0, path: str = "auto") -> Augmenter:
    """An :class:`Augmenter` from a preset name, an albumentations pipeline or an Augmenter."""
    if isinstance(augment, Augmenter):
        return augment
    return Augmenter("none" if augment is None else augment, path=path, seed=seed)


def preview_grid(images: np.ndarray, labels: np.ndarray, out_png: Any, *, augment: Any = DEFAULT_PRESET,
                 draws: int = 6, per_class: int = 1, classes: Any = None, seed: int = 0, path: str = "auto",
                 class_names: Any = None) -> Any:
    """Write a PNG grid and return its path: ``per_class`` originals of each of ``classes`` (default: all),
    each followed by ``draws`` augmented versions (``augment``, ``seed``, ``path``: see :func:`make_augmenter`)."""
    from gtsrb_kit.plotting import image_grid, wrap

    aug = make_augmenter(augment, seed=seed, path=path)
    labels = np.asarray(labels)
    chosen = sorted(set(labels.tolist())) if classes is None else [int(c) for c in classes]
    idx = [i for cls in chosen for i in np.flatnonzero(labels == cls)[:per_class]]
    if not idx:
        raise ConfigError(f"classes {chosen}: not in the data, so there are no images to preview; choose others")
    originals = np.asarray(images)[idx]
    grid = np.stack([originals] + [aug(originals, counter=d) for d in range(draws)], axis=1)
    names = [wrap(str(class_names[c]), 11) if class_names is not None and c < len(class_names) else ""
             for c in (int(labels[i]) for i in idx)]
    cells = [f"class {labels[i]}\n{name}" if d == 0 else f"draw {d}" for i, name in zip(idx, names) for d in range(draws + 1)]
    return image_grid(list(grid.reshape(-1, *grid.shape[2:])), cells, out_png, cols=draws + 1, cell=64,
                      title=f"augmentation {aug.preset} ({aug.path} path, seed {seed}); first column: original")
