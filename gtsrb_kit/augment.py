"""Seeded, flip-free image augmentation for training, in three interchangeable paths.

Presets (:data:`PRESETS`):

* ``none``: images pass through unchanged.
* ``fidle``: the course's ``ImageDataGenerator`` settings: rotation up to 10 degrees, width and
  height shifts up to 10 %, zoom in [0.8, 1.2] (each axis on its own, as Keras does), shear up
  to 0.1 degree (Keras' ``shear_range`` is in degrees), nearest-pixel fill.
* ``strong``: a wider affine (15 degrees, 10 % shifts, zoom 0.85-1.15, 5 degrees shear) plus a
  small perspective, brightness/contrast (+-25 %), Gaussian blur (p 0.2), Gaussian noise
  (p 0.3) and one small occluding rectangle (p 0.3).

No preset ever flips: a mirrored "Dangerous curve to the left" is a "Dangerous curve to the right".

Paths (:data:`PATHS`) apply the same distributions in different ways:

* ``batch`` (the fastest on CPU for most shapes): all random matrices of a batch are drawn in one vectorised
  step from a numpy ``Generator`` seeded by ``(seed, batch number)``, then ``cv2.warpAffine`` /
  ``cv2.warpPerspective`` run per image and the photometric steps run vectorised, all inside
  ONE ``tf.numpy_function`` per batch.
* ``tf``: TensorFlow's ``ImageProjectiveTransformV3`` and stateless random ops, in-graph (runs on
  GPU when the pipeline does, no Python in the loop): the fastest for small images.
* ``albumentations``: an ``albumentations.Compose`` per image (slowest: per-call overhead), the
  way to use any pipeline of your own: ``Augmenter(A.Compose([...]))``.

``auto`` (the default) picks, per image shape, the path the benchmark found faster
(:func:`choose_path`). Every path is deterministic: batch ``k`` of a run with seed ``s`` gets the same draws whatever
the thread scheduling, so the same seed gives the same training images.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gtsrb_kit.errors import ConfigError

PRESETS: tuple[str, ...] = ("none", "fidle", "strong")
PATHS: tuple[str, ...] = ("batch", "tf", "albumentations")
DEFAULT_PRESET = "strong"
DEFAULT_PATH = "auto"
# ``auto`` takes the tf path for affine-only presets on images of at most this many values
# (24x24x3, 32x32x1): there per-image Python work makes the batch path the slower one
# (benchmarks/bench_augment.py: fidle at 24x24x1, tf 18-21x ImageDataGenerator, batch 9-12x;
# at 48x48x3, batch 15-18x, tf 10x; with photometric steps, batch wins at every size).
TF_PATH_MAX_VALUES = 24 * 24 * 3


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of one preset (shared by all paths)."""

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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def photometric(self) -> bool:
        return bool(self.brightness or self.contrast or self.blur_p or self.noise_p or self.occlusion_p)


PRESET_PARAMS: dict[str, AugmentParams] = {
    "none": AugmentParams(),
    "fidle": AugmentParams(rotation=10.0, shift=0.1, zoom=(0.8, 1.2), shear=0.1),
    "strong": AugmentParams(
        rotation=15.0, shift=0.1, zoom=(0.85, 1.15), shear=5.0, perspective=0.08,
        brightness=0.25, contrast=0.25, blur_p=0.2, noise_p=0.3, noise_std=(3.0, 10.0),
        occlusion_p=0.3, occlusion_size=(0.1, 0.3),
    ),
}


def check_preset(preset: str) -> str:
    """Return ``preset`` if known, else raise :class:`ConfigError` listing the valid ones."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown augmentation preset {preset!r}; use one of {', '.join(PRESETS)}")
    return preset


def check_path(path: str) -> str:
    """Return ``path`` if known (``auto`` or one of :data:`PATHS`), else raise :class:`ConfigError`."""
    if path == "auto":
        return path
    if path not in PATHS:
        raise ConfigError(f"unknown augmentation path {path!r}; use one of auto, {', '.join(PATHS)}")
    return path


def choose_path(path: str, params: AugmentParams, shape: Any) -> str:
    """The path used for images of ``shape`` (H, W, C): ``path`` itself unless it is ``auto``.

    ``auto`` is the ``tf`` path for presets without photometric or perspective steps on images
    of at most :data:`TF_PATH_MAX_VALUES` values, otherwise the ``batch`` path.
    """
    path = check_path(path)
    if path != "auto":
        return path
    dims = [d for d in shape] if shape is not None else []
    known = len(dims) == 3 and all(isinstance(d, int) for d in dims)
    small = known and dims[0] * dims[1] * dims[2] <= TF_PATH_MAX_VALUES
    affine_only = not params.photometric and not params.perspective
    return "tf" if small and affine_only else "batch"


# --------------------------------------------------------------------------- random matrices (numpy)

def _rng(seed: int, counter: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(counter) & 0xFFFFFFFFFFFF]))


def random_homographies(rng: np.random.Generator, n: int, height: int, width: int, params: AugmentParams) -> np.ndarray:
    """Draw ``n`` forward 3x3 transforms (input -> output pixel coordinates) in one vectorised step.

    The transform is ``T(center + shift) . R . Shear . Zoom . T(-center)``, with an optional small
    projective part; it never mirrors (zoom factors stay positive).
    """
    theta = np.deg2rad(rng.uniform(-params.rotation, params.rotation, n))
    shear = np.deg2rad(rng.uniform(-params.shear, params.shear, n))
    zx = rng.uniform(params.zoom[0], params.zoom[1], n)
    zy = rng.uniform(params.zoom[0], params.zoom[1], n)
    tx = rng.uniform(-params.shift, params.shift, n) * width
    ty = rng.uniform(-params.shift, params.shift, n) * height
    # drawn even without perspective: the draws after it (photometric steps) depend on the stream
    persp = rng.uniform(-params.perspective, params.perspective, (n, 2))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = np.cos(theta), np.sin(theta)
    sin_s, cos_s = np.sin(shear), np.cos(shear)
    # A = R @ Shear @ Zoom, with Shear = [[1, -sin(s)], [0, cos(s)]] (Keras' convention)
    a00 = cos * zx
    a01 = (-cos * sin_s - sin * cos_s) * zy
    a10 = sin * zx
    a11 = (-sin * sin_s + cos * cos_s) * zy
    m = np.zeros((n, 3, 3))
    m[:, 0, 0], m[:, 0, 1] = a00, a01
    m[:, 1, 0], m[:, 1, 1] = a10, a11
    m[:, 0, 2] = cx + tx - a00 * cx - a01 * cy
    m[:, 1, 2] = cy + ty - a10 * cx - a11 * cy
    m[:, 2, 2] = 1.0
    if params.perspective:
        persp = persp / np.array([width, height])
        # projective row applied around the centre so the sign stays in place
        p = np.zeros((n, 3, 3))
        p[:, 0, 0] = p[:, 1, 1] = p[:, 2, 2] = 1.0
        p[:, 2, 0], p[:, 2, 1] = persp[:, 0], persp[:, 1]
        p[:, 2, 2] = 1.0 - persp[:, 0] * cx - persp[:, 1] * cy
        m = p @ m
        m /= m[:, 2:3, 2:3]
    return m


def _photometric_numpy(rng: np.random.Generator, out: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Brightness/contrast, blur, noise and occlusion on a uint8 batch (returns a new array)."""
    import cv2

    n, h, w, c = out.shape
    x = out.astype(np.float32)
    if params.contrast or params.brightness:
        alpha = 1.0 + rng.uniform(-params.contrast, params.contrast, (n, 1, 1, 1)).astype(np.float32)
        beta = (rng.uniform(-params.brightness, params.brightness, (n, 1, 1, 1)) * 255.0).astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        # (x - mean) * alpha + mean + beta, in place (same float32 operations in the same order)
        x -= mean
        x *= alpha
        x += mean
        x += beta
    if params.blur_p:
        for i in np.flatnonzero(rng.random(n) < params.blur_p):
            x[i] = cv2.GaussianBlur(x[i], (3, 3), 0).reshape(h, w, c)
    if params.noise_p:
        hit = (rng.random(n) < params.noise_p).astype(np.float32)
        std = rng.uniform(params.noise_std[0], params.noise_std[1], n).astype(np.float32) * hit
        # the whole batch's noise is drawn (it fixes the generator state for the draws after it),
        # but only images that were hit get it added: x + noise * 0 leaves the others unchanged
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        idx = np.flatnonzero(hit)
        if idx.size:
            x[idx] += noise[idx] * std[idx, None, None, None]
    if params.occlusion_p:
        hit = rng.random(n) < params.occlusion_p
        hh = np.maximum(1, (rng.uniform(*params.occlusion_size, n) * h).astype(int))
        ww = np.maximum(1, (rng.uniform(*params.occlusion_size, n) * w).astype(int))
        y0 = (rng.random(n) * (h - hh + 1)).astype(int)
        x0 = (rng.random(n) * (w - ww + 1)).astype(int)
        fill = rng.uniform(0, 255, n).astype(np.float32)
        for i in np.flatnonzero(hit):
            x[i, y0[i]:y0[i] + hh[i], x0[i]:x0[i] + ww[i]] = fill[i]
    np.clip(x, 0, 255, out=x)
    np.rint(x, out=x)
    return x.astype(np.uint8)


def augment_batch_numpy(images: np.ndarray, params: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """Augment a ``uint8`` NHWC batch with the ``batch`` path (new array; the input is untouched)."""
    import cv2

    n, h, w, c = images.shape
    if n == 0:
        return images.copy()
    mats = random_homographies(rng, n, h, w, params)
    out = np.empty_like(images)
    # OpenCV writes straight into each slot of ``out`` (dst=): no per-image result array, reshape
    # or copy. Single-channel batches go in as (N, H, W) views, since OpenCV drops the channel axis.
    src = np.ascontiguousarray(images)
    if c == 1:
        src, dst = src.reshape(n, h, w), out.reshape(n, h, w)
    else:
        dst = out
    size = (w, h)
    flags, border = cv2.INTER_LINEAR, cv2.BORDER_REPLICATE
    if params.perspective:
        warp = cv2.warpPerspective
    else:
        warp = cv2.warpAffine
        mats = np.ascontiguousarray(mats[:, :2])
    for image, mat, slot in zip(src, mats, dst):
        warp(image, mat, size, slot, flags, border)
    if params.photometric:
        out = _photometric_numpy(rng, out, params)
    return out


# --------------------------------------------------------------------------- albumentations

def albumentations_pipeline(preset: str, *, seed: int = 0) -> Any:
    """The ``albumentations.Compose`` of a preset (seeded), equivalent to the ``batch`` path."""
    import albumentations as A
    import cv2

    p = PRESET_PARAMS[check_preset(preset)]
    transforms: list[Any] = []
    if preset != "none":
        transforms.append(A.Affine(
            scale={"x": p.zoom, "y": p.zoom}, translate_percent={"x": (-p.shift, p.shift), "y": (-p.shift, p.shift)},
            rotate=(-p.rotation, p.rotation), shear={"x": (-p.shear, p.shear), "y": (0.0, 0.0)},
            interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REPLICATE, p=1.0,
        ))
    if p.perspective:
        transforms.append(A.Perspective(scale=(0.01, 0.04), border_mode=cv2.BORDER_REPLICATE, p=0.7))
    if p.brightness or p.contrast:
        transforms.append(A.RandomBrightnessContrast(brightness_limit=p.brightness, contrast_limit=p.contrast, p=1.0))
    if p.blur_p:
        transforms.append(A.GaussianBlur(blur_limit=(3, 3), p=p.blur_p))
    if p.noise_p:
        transforms.append(A.GaussNoise(std_range=(p.noise_std[0] / 255, p.noise_std[1] / 255), p=p.noise_p))
    if p.occlusion_p:
        transforms.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=p.occlusion_size,
                                          hole_width_range=p.occlusion_size, fill="random_uniform", p=p.occlusion_p))
    return A.Compose(transforms, seed=seed)


def _is_albumentations(obj: Any) -> bool:
    try:
        import albumentations as A
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, (A.BaseCompose, A.BasicTransform))


# --------------------------------------------------------------------------- TensorFlow path

def _tf_augment(images: Any, seed: Any, params: AugmentParams) -> Any:
    """In-graph version of the ``batch`` path on a ``uint8`` NHWC tensor (stateless, seeded)."""
    import tensorflow as tf

    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=12)

    def uni(i: int, lo: float, hi: float, extra: tuple[int, ...] = ()) -> Any:
        return tf.random.stateless_uniform(tf.concat([[n], extra], 0) if extra else [n], seeds[i], lo, hi)

    deg = math.pi / 180.0
    theta = uni(0, -params.rotation * deg, params.rotation * deg + 1e-12)
    shear = uni(1, -params.shear * deg, params.shear * deg + 1e-12)
    zx = uni(2, params.zoom[0], params.zoom[1] + 1e-12)
    zy = uni(3, params.zoom[0], params.zoom[1] + 1e-12)
    tx = uni(4, -params.shift, params.shift + 1e-12) * wf
    ty = uni(5, -params.shift, params.shift + 1e-12) * hf
    px = uni(6, -params.perspective, params.perspective + 1e-12) / wf
    py = uni(7, -params.perspective, params.perspective + 1e-12) / hf
    cx, cy = (wf - 1) / 2, (hf - 1) / 2
    cos, sin = tf.cos(theta), tf.sin(theta)
    a00 = cos * zx
    a01 = (-cos * tf.sin(shear) - sin * tf.cos(shear)) * zy
    a10 = sin * zx
    a11 = (-sin * tf.sin(shear) + cos * tf.cos(shear)) * zy
    zero, one = tf.zeros_like(a00), tf.ones_like(a00)
    affine = tf.stack([
        tf.stack([a00, a01, cx + tx - a00 * cx - a01 * cy], -1),
        tf.stack([a10, a11, cy + ty - a10 * cx - a11 * cy], -1),
        tf.stack([zero, zero, one], -1),
    ], 1)
    proj = tf.stack([
        tf.stack([one, zero, zero], -1),
        tf.stack([zero, one, zero], -1),
        tf.stack([px, py, 1.0 - px * cx - py * cy], -1),
    ], 1)
    forward = tf.matmul(proj, affine)
    inverse = tf.linalg.inv(forward)  # the op maps output -> input coordinates
    inverse = inverse / inverse[:, 2:3, 2:3]
    flat = tf.reshape(inverse, [-1, 9])[:, :8]
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=flat, output_shape=shape[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST",
    )
    if params.brightness or params.contrast:
        alpha = 1.0 + uni(8, -params.contrast, params.contrast + 1e-12)[:, None, None, None]
        beta = uni(9, -params.brightness, params.brightness + 1e-12)[:, None, None, None] * 255.0
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * alpha + mean + beta
    extra = tf.random.experimental.stateless_split(seeds[10], num=8)
    if params.blur_p:
        k = tf.constant([1.0, 2.0, 1.0]) / 4.0
        kernel = (k[:, None] * k[None, :])[:, :, None, None]
        c = tf.shape(x)[3]
        blurred = tf.nn.depthwise_conv2d(
            tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC"), tf.tile(kernel, [1, 1, c, 1]),
            strides=[1, 1, 1, 1], padding="VALID",
        )
        hit = tf.random.stateless_uniform([n], extra[0]) < params.blur_p
        x = tf.where(hit[:, None, None, None], blurred, x)
    if params.noise_p:
        hit = tf.cast(tf.random.stateless_uniform([n], extra[1]) < params.noise_p, tf.float32)
        std = tf.random.stateless_uniform([n], extra[2], params.noise_std[0], params.noise_std[1]) * hit
        x = x + tf.random.stateless_normal(tf.shape(x), extra[3]) * std[:, None, None, None]
    if params.occlusion_p:
        lo, hi = params.occlusion_size
        hit = tf.random.stateless_uniform([n], extra[4]) < params.occlusion_p
        sizes = tf.random.stateless_uniform([n, 2], extra[5], lo, hi) * tf.stack([hf, wf])
        sizes = tf.maximum(1.0, tf.floor(sizes))
        origin = tf.floor(tf.random.stateless_uniform([n, 2], extra[6]) * (tf.stack([hf, wf]) - sizes + 1))
        fill = tf.random.stateless_uniform([n], extra[7], 0.0, 255.0)
        rows = tf.cast(tf.range(h), tf.float32)[None, :, None]
        cols = tf.cast(tf.range(w), tf.float32)[None, None, :]
        mask = ((rows >= origin[:, 0, None, None]) & (rows < (origin[:, 0] + sizes[:, 0])[:, None, None])
                & (cols >= origin[:, 1, None, None]) & (cols < (origin[:, 1] + sizes[:, 1])[:, None, None])
                & hit[:, None, None])
        x = tf.where(mask[..., None], fill[:, None, None, None], x)
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)


# --------------------------------------------------------------------------- the Augmenter

class Augmenter:
    """A seeded augmentation preset (or a custom albumentations pipeline) on one path.

    Example::

        aug = Augmenter("strong", seed=1)
        out = aug(images)                    # uint8 NHWC in, new uint8 NHWC out
        ds = aug.map_dataset(ds)            # ds of (counter, uint8 images, labels) batches

        import albumentations as A
        mine = Augmenter(A.Compose([A.Affine(rotate=(-5, 5), p=1)]), seed=1)

    Args:
        preset: A name of :data:`PRESETS`, or an ``albumentations`` transform/Compose of your own
            (it must not flip; it is applied per image).
        path: ``auto`` (per image shape, see :func:`choose_path`), ``batch``, ``tf`` or
            ``albumentations``. A custom pipeline always uses ``albumentations``.
        seed: Base seed; batch ``k`` draws from ``(seed, k)``.
    """

    def __init__(self, preset: Any = DEFAULT_PRESET, *, path: str = "auto", seed: int = 0) -> None:
        self.seed = int(seed)
        self._local = threading.local()
        if _is_albumentations(preset):
            self.preset = "custom"
            self.path = "albumentations"
            self.params = AugmentParams()
            self._pipeline = preset
            return
        if not isinstance(preset, str):
            raise ConfigError(f"augmentation {preset!r} is neither a preset name ({', '.join(PRESETS)}) "
                              "nor an albumentations transform")
        self.preset = check_preset(preset)
        self.path = check_path(path)
        self.params = PRESET_PARAMS[self.preset]
        self._pipeline = None

    def __repr__(self) -> str:
        return f"Augmenter(preset={self.preset!r}, path={self.path!r}, seed={self.seed})"

    def path_for(self, shape: Any) -> str:
        """The path used for images of ``shape`` (H, W, C) (resolves ``auto``)."""
        return choose_path(self.path, self.params, shape)

    @property
    def is_identity(self) -> bool:
        """True for the ``none`` preset."""
        return self.preset == "none"

    def _albu(self) -> Any:
        # one Compose per thread: tf.data's parallel map calls us from several threads at once
        pipe = getattr(self._local, "pipeline", None)
        if pipe is None:
            pipe = copy.deepcopy(self._pipeline) if self._pipeline is not None else albumentations_pipeline(
                self.preset, seed=self.seed)
            self._local.pipeline = pipe
        return pipe

    def augment_numpy(self, images: np.ndarray, counter: int = 0) -> np.ndarray:
        """Augment one ``uint8`` NHWC batch as batch number ``counter`` of the run (new array)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ConfigError(f"augmentation needs a uint8 batch (N, H, W, C); got {images.dtype} {images.shape}")
        if self.is_identity:
            return images.copy()
        path = self.path_for(tuple(int(d) for d in images.shape[1:]))
        if path == "batch":
            return augment_batch_numpy(images, self.params, _rng(self.seed, counter))
        if path == "tf":
            return np.asarray(_tf_augment(images, [self.seed, int(counter)], self.params))
        pipe = self._albu()
        pipe.set_random_seed(int(_rng(self.seed, counter).integers(0, 2**31 - 1)))
        out = np.empty_like(images)
        n, h, w, c = images.shape
        for i in range(n):
            res = pipe(image=images[i])["image"]
            out[i] = np.asarray(res).reshape(h, w, c)
        return out

    def __call__(self, images: np.ndarray, counter: int = 0) -> np.ndarray:
        """Same as :meth:`augment_numpy`."""
        return self.augment_numpy(images, counter)

    def augment_tensor(self, images: Any, counter: Any) -> Any:
        """Augment a ``uint8`` NHWC tensor inside a ``tf.data`` map (static shape kept)."""
        import tensorflow as tf

        if self.is_identity:
            return images
        if self.path_for(tuple(images.shape[1:])) == "tf":
            seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(counter, tf.int64)])
            out = _tf_augment(images, seed, self.params)
        else:
            out = tf.numpy_function(lambda x, k: self.augment_numpy(x, int(k)), [images, counter], tf.uint8,
                                    stateful=False)
        out.set_shape(images.shape)
        return out

    def map_dataset(self, ds: Any, *, num_parallel_calls: Any = None) -> Any:
        """Map a dataset of ``(counter, images, labels)`` batches to ``(augmented images, labels)``.

        Order is deterministic (``tf.data`` keeps it with parallel calls); so are the draws.
        """
        import tensorflow as tf

        calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
        return ds.map(lambda k, x, y: (self.augment_tensor(x, k), y), num_parallel_calls=calls, deterministic=True)


def make_augmenter(augment: Any, *, seed: int = 0, path: str = "auto") -> Augmenter:
    """An :class:`Augmenter` from a preset name, an albumentations pipeline or an Augmenter."""
    if isinstance(augment, Augmenter):
        return augment
    if augment is None:
        augment = "none"
    return Augmenter(augment, path=path, seed=seed)


def preview_grid(
    images: np.ndarray,
    labels: np.ndarray,
    out_png: Any,
    *,
    augment: Any = DEFAULT_PRESET,
    draws: int = 6,
    per_class: int = 1,
    classes: Any = None,
    seed: int = 0,
    path: str = "auto",
    class_names: Any = None,
) -> Any:
    """Write a PNG grid: per class, an original image then ``draws`` augmented versions of it.

    Args:
        images: ``uint8`` NHWC images.
        labels: Their class ids.
        out_png: Output PNG path (written atomically).
        augment: Preset name, albumentations pipeline or :class:`Augmenter`.
        draws: Augmented versions per original.
        per_class: Originals per class.
        classes: Class ids to show (default: every class present).
        seed: Augmentation seed.
        path: Augmentation path.
        class_names: Names for row labels (index = class id).

    Returns:
        The path of the PNG.
    """
    from gtsrb_kit.plotting import pyplot, save_png

    plt = pyplot()
    aug = make_augmenter(augment, seed=seed, path=path)
    labels = np.asarray(labels)
    chosen_classes = sorted(set(int(c) for c in labels)) if classes is None else [int(c) for c in classes]
    rows: list[tuple[int, np.ndarray]] = []
    for cls in chosen_classes:
        idx = np.flatnonzero(labels == cls)[:per_class]
        rows += [(cls, images[i]) for i in idx]
    if not rows:
        raise ConfigError("no images to preview: the chosen classes are not in the data")
    originals = np.stack([r[1] for r in rows])
    draws_out = [aug(originals, counter=d) for d in range(draws)]
    cols = draws + 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 1.1, len(rows) * 1.1 + 0.4), squeeze=False)
    gray = originals.shape[-1] == 1
    for r, (cls, _) in enumerate(rows):
        for c in range(cols):
            img = originals[r] if c == 0 else draws_out[c - 1][r]
            ax = axes[r][c]
            ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                name = class_names[cls] if class_names is not None and cls < len(class_names) else ""
                ax.set_ylabel(f"{cls}", fontsize=7, rotation=0, labelpad=10)
                if name:
                    ax.set_title(name[:28], fontsize=4.5)
            elif r == 0:
                ax.set_title(f"draw {c}", fontsize=6)
    fig.suptitle(f"augmentation {aug.preset} ({aug.path_for(originals.shape[1:])} path, seed {seed}); "
                 "first column: original", fontsize=8)
    fig.tight_layout()
    return save_png(fig, out_png, dpi=110)
