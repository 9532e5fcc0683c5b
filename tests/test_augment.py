"""Augmentation: invariants of every preset on every path, determinism, no flips, tf.data, preview."""

from __future__ import annotations

import numpy as np
import pytest

from gtsrb_kit.augment import (
    PATHS, PRESETS, Augmenter, _rng, augment_batch_numpy, preview_grid, random_homographies,
)
from gtsrb_kit.errors import ConfigError


def ramp_batch(n: int, size: int, channels: int) -> np.ndarray:
    """Images that are dark top-left and bright bottom-right: any mirror shows up in the halves."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    img = (255 * (0.55 * xx + 0.45 * yy)).astype(np.uint8)
    batch = np.repeat(img[None, :, :, None], n, axis=0)
    batch = np.repeat(batch, channels, axis=3)
    if channels == 3:
        batch[..., 1] //= 2  # channels differ, so a channel swap would show too
    return batch


CASES = [(preset, path) for preset in PRESETS for path in PATHS]


@pytest.mark.parametrize("preset,path", CASES)
@pytest.mark.parametrize("shape", [(6, 24, 24, 1), (5, 32, 32, 3)])
def test_invariants(preset: str, path: str, shape: tuple[int, int, int, int]) -> None:
    n, size, _, channels = shape
    images = ramp_batch(n, size, channels)
    before = images.copy()
    aug = Augmenter(preset, path=path, seed=3)
    out = aug(images, counter=7)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.array_equal(images, before), "input was modified"
    assert out is not images
    # determinism: same seed and batch counter -> identical; a fresh Augmenter too
    assert np.array_equal(out, aug(images, counter=7))
    assert np.array_equal(out, Augmenter(preset, path=path, seed=3)(images, counter=7))
    if preset == "none":
        assert np.array_equal(out, images)
        return
    assert not np.array_equal(out, images)
    assert not np.array_equal(out, aug(images, counter=8)), "another batch must get other draws"
    assert not np.array_equal(out, Augmenter(preset, path=path, seed=4)(images, counter=7))
    # never mirrored: left stays darker than right, top darker than bottom, in every image
    f = out.astype(np.float64)
    half = size // 2
    assert (f[:, :, :half].mean(axis=(1, 2, 3)) < f[:, :, half:].mean(axis=(1, 2, 3))).all()
    assert (f[:, :half].mean(axis=(1, 2, 3)) < f[:, half:].mean(axis=(1, 2, 3))).all()
    if channels == 3:
        assert (f[..., 1].mean(axis=(1, 2)) < f[..., 0].mean(axis=(1, 2))).all()


def test_auto_path_follows_the_benchmark() -> None:
    """auto: in-graph tf for affine-only presets on small images, the batch path everywhere else."""
    from gtsrb_kit.augment import choose_path

    fidle, strong = Augmenter("fidle"), Augmenter("strong")
    assert fidle.path == "auto" and fidle.path_for((24, 24, 1)) == "tf" and fidle.path_for((24, 24, 3)) == "tf"
    assert fidle.path_for((48, 48, 3)) == "batch" and fidle.path_for((48, 48, 1)) == "batch"
    assert fidle.path_for((None, None, 1)) == "batch"  # unknown static shape
    assert strong.path_for((24, 24, 1)) == "batch"  # photometric steps: batch wins at every size
    assert Augmenter("fidle", path="batch").path_for((24, 24, 1)) == "batch"
    assert choose_path("albumentations", fidle.params, (24, 24, 1)) == "albumentations"
    small, large = ramp_batch(4, 24, 1), ramp_batch(4, 48, 3)
    assert np.array_equal(fidle(small, counter=2), Augmenter("fidle", path="tf")(small, counter=2))
    assert np.array_equal(fidle(large, counter=2), Augmenter("fidle", path="batch")(large, counter=2))
    with pytest.raises(ConfigError, match="unknown augmentation path 'gpu'"):
        Augmenter("fidle", path="gpu")


def test_homographies_never_mirror() -> None:
    params = Augmenter("strong").params
    mats = random_homographies(np.random.default_rng(0), 2000, 32, 32, params)
    assert (np.linalg.det(mats[:, :2, :2]) > 0).all()
    assert (mats[:, 0, 0] > 0).all() and (mats[:, 1, 1] > 0).all()


def test_fidle_matches_its_ranges() -> None:
    # a centred dot moves by at most shift + zoom/rotation effects; check the warp keeps content centred
    img = np.zeros((200, 48, 48, 1), np.uint8)
    img[:, 22:26, 22:26] = 255
    out = augment_batch_numpy(img, Augmenter("fidle").params, np.random.default_rng(1))
    ys, xs = np.nonzero(out[..., 0].mean(axis=0) > 0)
    assert abs(xs.mean() - 23.5) < 2 and abs(ys.mean() - 23.5) < 2
    centres = [np.argwhere(o[..., 0] > 127).mean(axis=0) for o in out if (o > 127).any()]
    shifts = np.abs(np.array(centres) - 23.5)
    assert shifts.max() <= 0.1 * 48 + 3  # 10 % shift plus rounding


def test_custom_albumentations_pipeline() -> None:
    import albumentations as A

    images = ramp_batch(4, 24, 3)
    aug = Augmenter(A.Compose([A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.0, p=1.0)]), seed=1)
    assert aug.preset == "custom" and aug.path == "albumentations"
    out = aug(images, counter=0)
    assert out.shape == images.shape and not np.array_equal(out, images)
    assert np.array_equal(out, aug(images, counter=0))


def test_errors() -> None:
    with pytest.raises(ConfigError, match="unknown augmentation preset 'wild'"):
        Augmenter("wild")
    with pytest.raises(ConfigError, match="unknown augmentation path"):
        Augmenter("fidle", path="gpu-magic")
    with pytest.raises(ConfigError, match="uint8 batch"):
        Augmenter("fidle")(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ConfigError, match="neither a preset"):
        Augmenter(42)


@pytest.mark.parametrize("path", PATHS)
def test_map_dataset_keeps_static_shape_and_order(path: str) -> None:
    import tensorflow as tf

    images = ramp_batch(8, 24, 1)
    labels = np.arange(8, dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4).enumerate().map(lambda k, xy: (k, *xy))
    aug = Augmenter("fidle", path=path, seed=5)
    mapped = aug.map_dataset(ds)
    assert mapped.element_spec[0].shape.as_list() == [None, 24, 24, 1]
    batches = list(mapped.as_numpy_iterator())
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # batch k of the dataset equals a direct call with counter k
    assert np.array_equal(batches[1][0], aug(images[4:], counter=1))


def test_preview_grid(tmp_path) -> None:
    images = np.concatenate([ramp_batch(2, 24, 3), 255 - ramp_batch(2, 24, 3)])
    labels = np.array([0, 0, 5, 5])
    out = preview_grid(images, labels, tmp_path / "p.png", augment="strong", draws=3, class_names=["a"] * 43)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="no images to preview"):
        preview_grid(images, labels, tmp_path / "q.png", classes=[7])
    assert not (tmp_path / "q.png").exists()


def _reference_batch(images: np.ndarray, params, rng: np.random.Generator) -> np.ndarray:
    """The batch path as first written (one new array per image, full-batch masks): the optimised
    code must give byte-identical batches, since trained results depend on these exact draws."""
    import cv2

    n, h, w, c = images.shape
    mats = random_homographies(rng, n, h, w, params)
    out = np.empty_like(images)
    for i in range(n):
        if params.perspective:
            warped = cv2.warpPerspective(images[i], mats[i], (w, h), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE)
        else:
            warped = cv2.warpAffine(images[i], mats[i, :2], (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        out[i] = warped.reshape(h, w, c)
    if not params.photometric:
        return out
    x = out.astype(np.float32)
    alpha = 1.0 + rng.uniform(-params.contrast, params.contrast, (n, 1, 1, 1)).astype(np.float32)
    beta = (rng.uniform(-params.brightness, params.brightness, (n, 1, 1, 1)) * 255.0).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * alpha + mean + beta
    for i in np.flatnonzero(rng.random(n) < params.blur_p):
        x[i] = cv2.GaussianBlur(x[i], (3, 3), 0).reshape(h, w, c)
    hit = (rng.random(n) < params.noise_p).astype(np.float32)
    std = rng.uniform(params.noise_std[0], params.noise_std[1], n).astype(np.float32) * hit
    x += rng.standard_normal(x.shape, dtype=np.float32) * std[:, None, None, None]
    hit = rng.random(n) < params.occlusion_p
    hh = np.maximum(1, (rng.uniform(*params.occlusion_size, n) * h).astype(int))
    ww = np.maximum(1, (rng.uniform(*params.occlusion_size, n) * w).astype(int))
    y0 = (rng.random(n) * (h - hh + 1)).astype(int)
    x0 = (rng.random(n) * (w - ww + 1)).astype(int)
    fill = rng.uniform(0, 255, n).astype(np.float32)
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    mask = (hit[:, None, None] & (rows >= y0[:, None, None]) & (rows < (y0 + hh)[:, None, None])
            & (cols >= x0[:, None, None]) & (cols < (x0 + ww)[:, None, None]))
    x = np.where(mask[..., None], fill[:, None, None, None], x)
    return np.rint(np.clip(x, 0, 255)).astype(np.uint8)


@pytest.mark.parametrize("preset", ["fidle", "strong"])
@pytest.mark.parametrize("shape", [(16, 24, 24, 1), (9, 48, 48, 3), (5, 20, 28, 4)])
def test_batch_path_matches_reference(preset: str, shape: tuple[int, int, int, int]) -> None:
    params = Augmenter(preset).params
    noisy = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    smooth = ramp_batch(shape[0], max(shape[1:3]), shape[3])[:, :shape[1], :shape[2]]
    for images in (noisy, smooth, noisy[:, ::-1]):  # the last one is a non-contiguous view
        for seed, counter in ((0, 0), (5, 3), (2**33 + 1, 2**40)):
            got = augment_batch_numpy(images, params, _rng(seed, counter))
            want = _reference_batch(np.ascontiguousarray(images), params, _rng(seed, counter))
            assert got.dtype == np.uint8 and got.flags.c_contiguous
            assert np.array_equal(got, want), (preset, shape, seed, counter)
