"""Augmentation: invariants of every preset, determinism, no flips, tf.data, preview."""

from __future__ import annotations

import numpy as np
import pytest

from gtsrb_kit.augment import PATHS, PRESETS, AugmentParams, Augmenter, check_preset, preview_grid
from gtsrb_kit.errors import ConfigError


def ramp_batch(n: int, size: int, channels: int) -> np.ndarray:
    """Images that are dark top-left and bright bottom-right: any mirror shows up in the halves."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    img = (255 * (0.55 * xx + 0.45 * yy)).astype(np.uint8)
    batch = np.repeat(img[None, :, :, None], n, axis=0).repeat(channels, axis=3)
    if channels == 3:
        batch[..., 1] //= 2  # channels differ, so a channel swap would show too
    return batch


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("shape", [(6, 24, 24, 1), (5, 32, 32, 3)])
def test_invariants(preset: str, shape: tuple[int, int, int, int]) -> None:
    n, size, _, channels = shape
    images = ramp_batch(n, size, channels)
    before = images.copy()
    out = Augmenter(preset, seed=3)(images, counter=7)
    assert out.dtype == np.uint8 and out.shape == images.shape and out is not images
    assert np.array_equal(images, before), "input was modified"
    if preset == "none":
        assert np.array_equal(out, images)
        return
    assert not np.array_equal(out, images)
    # never mirrored: left stays darker than right, top darker than bottom, in every image
    f = out.astype(np.float64)
    half = size // 2
    assert (f[:, :, :half].mean(axis=(1, 2, 3)) < f[:, :, half:].mean(axis=(1, 2, 3))).all()
    assert (f[:, :half].mean(axis=(1, 2, 3)) < f[:, half:].mean(axis=(1, 2, 3))).all()
    if channels == 3:
        assert (f[..., 1].mean(axis=(1, 2)) < f[..., 0].mean(axis=(1, 2))).all()


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_same_seed_same_batches(preset: str) -> None:
    images = np.random.default_rng(2).integers(0, 256, (9, 48, 48, 3), dtype=np.uint8)
    out = Augmenter(preset, seed=2**33 + 1)(images, counter=5)
    assert np.array_equal(out, Augmenter(preset, seed=2**33 + 1)(images, counter=5))
    assert not np.array_equal(out, Augmenter(preset, seed=2**33 + 1)(images, counter=6)), "batches differ"
    assert not np.array_equal(out, Augmenter(preset, seed=4)(images, counter=5)), "seeds differ"


@pytest.mark.parametrize("path", PATHS)
def test_every_path_value_is_accepted(path: str) -> None:
    aug = Augmenter("fidle", path=path, seed=1)
    assert aug.path_for((24, 24, 1)) == ("albumentations" if path == "albumentations" else "tf")
    images = ramp_batch(4, 24, 1)
    assert np.array_equal(aug(images, counter=2), Augmenter("fidle", path=path, seed=1)(images, counter=2))


def test_zero_strengths_are_the_identity() -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 20, 28, 3), dtype=np.uint8)
    params = AugmentParams(occlusion_size=(0.2, 0.2))  # not the default, so the warp runs
    assert not Augmenter(params).is_identity and np.array_equal(Augmenter(params)(images), images)


def test_fidle_keeps_content_within_its_shift() -> None:
    img = np.zeros((200, 48, 48, 1), np.uint8)
    img[:, 22:26, 22:26] = 255
    out = Augmenter("fidle", seed=1)(img)
    centres = [np.argwhere(o[..., 0] > 127).mean(axis=0) for o in out if (o > 127).any()]
    assert np.abs(np.array(centres) - 23.5).max() <= 0.1 * 48 * 1.25 + 3  # 10 % shift, zoom 0.8, rounding


def test_custom_albumentations_pipeline() -> None:
    import albumentations as A

    images = ramp_batch(4, 24, 3)
    aug = Augmenter(A.Compose([A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.0, p=1.0)]), seed=1)
    assert aug.preset == "custom" and aug.path == "albumentations"
    out = aug(images, counter=0)
    assert out.shape == images.shape and not np.array_equal(out, images)
    assert np.array_equal(out, aug(images, counter=0))


@pytest.mark.parametrize("make,message", [
    (lambda: Augmenter("wild"), "unknown augmentation preset 'wild'"),
    (lambda: check_preset("wild"), "unknown augmentation preset 'wild'"),
    (lambda: Augmenter("fidle", path="gpu"), "unknown augmentation path 'gpu'"),
    (lambda: Augmenter("fidle")(np.zeros((2, 8, 8, 3), np.float32)), "uint8 batch"),
    (lambda: Augmenter(42), "neither a preset"),
])
def test_errors(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize("path", ["tf", "albumentations"])
def test_map_dataset_keeps_static_shape_and_order(path: str) -> None:
    import tensorflow as tf

    images = ramp_batch(8, 24, 1)
    labels = np.arange(8, dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4).enumerate().map(lambda k, xy: (k, *xy))
    aug = Augmenter("strong", path=path, seed=5)
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
