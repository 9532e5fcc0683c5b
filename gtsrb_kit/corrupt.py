"""GTSRB-C: the 12 challenge types of CURE-TSR at 5 severity levels, applied to raw sign images.

:func:`corrupt` changes one ``uint8`` RGB image at its source resolution and keeps its shape and
dtype. Spatial parameters (blur radii, drop and flake sizes) are given for a 32-pixel sign and
scaled with the image, so a level means the same on a 30-pixel and a 200-pixel crop. Every draw
comes from a generator seeded with ``(seed, challenge, key)``, ``key`` naming the image
(:func:`image_key` of its path), so every user gets the same pixels whatever subset they take,
and the levels of one image share their random geometry (where the drops, mud and shadow fall)
and differ only in strength.
The levels and their parameters are in :data:`LEVELS` and ``docs/robustness.md``.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable

import numpy as np

from gtsrb_kit.errors import ConfigError

#: Parameter of each challenge at levels 1..5 (what it means: see the challenge's function).
LEVELS: dict[str, tuple[float, ...]] = {
    "decolorization": (0.2, 0.4, 0.6, 0.8, 1.0),      # share of grey mixed in
    "lens_blur": (1.0, 1.5, 2.0, 2.5, 3.0),           # defocus disk radius (px of a 32-px sign)
    "codec_error": (30, 18, 12, 8, 5),                # JPEG quality
    "darkening": (0.7, 0.55, 0.42, 0.3, 0.2),         # light kept
    "dirty_lens": (0.74, 0.71, 0.68, 0.65, 0.62),     # mud threshold (lower: more mud)
    "exposure": (0.75, 0.6, 0.45, 0.33, 0.22),        # range of the shadows kept (the rest burns out)
    "gaussian_blur": (0.6, 0.9, 1.2, 1.6, 2.2),       # sigma (px of a 32-px sign)
    "noise": (0.04, 0.08, 0.12, 0.17, 0.24),          # standard deviation (share of 255)
    "rain": (0.01, 0.02, 0.03, 0.045, 0.06),          # share of pixels starting a drop
    "shadow": (0.3, 0.45, 0.6, 0.72, 0.85),           # darkness of the shadow
    "snow": (0.01, 0.02, 0.035, 0.05, 0.07),          # share of pixels holding a flake
    "haze": (0.75, 0.6, 0.47, 0.36, 0.26),            # transmission (light of the scene kept)
}
#: The challenge names, in the order of :data:`LEVELS`.
CHALLENGES: tuple[str, ...] = tuple(LEVELS)
NUM_LEVELS = 5


def check_challenge(name: str) -> str:
    """``name`` if it is a challenge of :data:`CHALLENGES`, else a ConfigError."""
    if name not in LEVELS:
        raise ConfigError(f"{name!r}: not a challenge; use one of {', '.join(CHALLENGES)}")
    return name


def check_level(level: int) -> int:
    """``level`` if it is 1..5, else a ConfigError."""
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= NUM_LEVELS:
        raise ConfigError(f"{level!r}: not a severity level; use 1 to {NUM_LEVELS}")
    return int(level)


def image_key(name: str) -> int:
    """A stable number for an image (its relative path): the part of the seed that names it."""
    return zlib.crc32(name.encode("utf-8"))


def corrupt(image: np.ndarray, challenge: str, level: int, *, seed: int = 0, key: int = 0) -> np.ndarray:
    """One ``(H, W, 3)`` ``uint8`` RGB image under ``challenge`` at ``level`` (1..5), same shape and dtype."""
    check_challenge(challenge)
    param = LEVELS[challenge][check_level(level) - 1]
    entropy = [int(seed), CHALLENGES.index(challenge), int(key)]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    unit = min(image.shape[:2]) / 32
    out = _FUNCTIONS[challenge](np.ascontiguousarray(image), param, unit, rng)
    out = out if out.dtype == np.uint8 else np.clip(out, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- the challenges
# Each takes (image, parameter, unit = pixels per pixel of a 32-px sign, generator).


def _decolorization(image: np.ndarray, share: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float32)
    return image * (1 - share) + gray * share


def _darkening(image: np.ndarray, kept: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    return image * np.float32(kept)


def _exposure(image: np.ndarray, kept: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    return 255 - (255 - image.astype(np.float32)) * kept


def _gaussian_blur(image: np.ndarray, sigma: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), sigma * unit, borderType=cv2.BORDER_REFLECT_101)


def _codec_error(image: np.ndarray, quality: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    _, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def _lens_blur(image: np.ndarray, radius: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    """Defocus: the image seen through a disk (pillbox) kernel with an anti-aliased rim."""
    import cv2

    r = radius * unit
    grid = np.arange(-int(np.ceil(r)), int(np.ceil(r)) + 1, dtype=np.float32)
    kernel = np.clip(r + 0.5 - np.hypot(grid[:, None], grid[None, :]), 0, 1)
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101)


def _streaks(shape: tuple[int, int], density: float, length: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """A ``float32`` map in [0, 1] of random drops drawn out into streaks ``length`` long at ``angle``."""
    import cv2

    seeds = (rng.random(shape) < density).astype(np.float32)
    size = max(3, int(round(length)) | 1)
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = np.sin(np.radians(angle)) * c, np.cos(np.radians(angle)) * c
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0)
    return np.minimum(cv2.filter2D(seeds, -1, kernel, borderType=cv2.BORDER_CONSTANT), 1.0)


def _rain(image: np.ndarray, density: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    drops = _streaks(image.shape[:2], density, 6 * unit, rng.uniform(-15, 15), rng)
    drops = cv2.GaussianBlur(drops, (0, 0), 0.5 * unit)[..., None] * 0.8
    dim = image * np.float32(1 - 3 * density)  # rain clouds take light away
    return dim * (1 - drops) + 210 * drops


def _snow(image: np.ndarray, density: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    flakes = (rng.random(image.shape[:2]) < density).astype(np.float32)
    flakes = cv2.GaussianBlur(flakes, (0, 0), 0.7 * unit)
    flakes = np.minimum(flakes / max(float(flakes.max()), 1e-6) * 1.4, 1.0)[..., None]
    veil = 0.25 * density / 0.07  # falling snow also whitens the air
    hazy = image * (1 - veil) + 235 * veil
    return hazy * (1 - flakes) + 250 * flakes


def _haze(image: np.ndarray, transmission: float, unit: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    field = cv2.resize(rng.uniform(0.85, 1.15, (4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    t = np.clip(transmission * field, 0.05, 1.0)[..., None]
    return image * t + 215 * (1 - t)


@functools.lru_cache(maxsize=64)
def _albumentation(challenge: str, value: float) -> Callable[..., dict]:
    """The albumentations transform of a challenge at a parameter value (built once: building is slow)."""
    import albumentations as A

    if challenge == "noise":
        return A.GaussNoise(std_range=(value, value), p=1)
    if challenge == "shadow":
        return A.RandomShadow(shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 1), shadow_intensity_range=(value, value), p=1)
    return A.Spatter(mode="mud", cutout_threshold=(value, value), intensity=(0.8, 0.8), p=1)  # dirty_lens


def _with_albumentations(challenge: str) -> Callable[..., np.ndarray]:
    def apply(image: np.ndarray, value: float, unit: float, rng: np.random.Generator) -> np.ndarray:
        transform = _albumentation(challenge, value)
        transform.set_random_seed(int(rng.integers(2**31)))
        return transform(image=image)["image"]

    return apply


_FUNCTIONS: dict[str, Callable[[np.ndarray, float, float, np.random.Generator], np.ndarray]] = {
    "decolorization": _decolorization,
    "lens_blur": _lens_blur,
    "codec_error": _codec_error,
    "darkening": _darkening,
    "dirty_lens": _with_albumentations("dirty_lens"),
    "exposure": _exposure,
    "gaussian_blur": _gaussian_blur,
    "noise": _with_albumentations("noise"),
    "rain": _rain,
    "shadow": _with_albumentations("shadow"),
    "snow": _snow,
    "haze": _haze,
}
