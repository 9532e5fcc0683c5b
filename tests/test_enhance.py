"""Enhancement modes against the course's straightforward scikit-image recipe.

Stated tolerance (see gtsrb_kit.enhance): after round(255 * x), RGB, RGB-HE, L and L-HE are within
1 grey level of the reference on every pixel; L-LHE and L-CLAHE differ on fewer than 0.1 % of the
pixels (around grey inputs one level off); rank_equalize itself is bit-exact.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage import exposure, transform
from skimage.filters import rank
from skimage.morphology import disk

from gtsrb_kit import enhance as E
from gtsrb_kit.catalog import load_image, read_catalog
from gtsrb_kit.errors import ConfigError


def _reference_u8(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    ref = E.course_enhance(image, size, mode)
    ref = ref if ref.dtype == np.uint8 else E.to_uint8(ref)
    return ref if ref.ndim == 3 else ref[..., None]


def _compare(images: list[np.ndarray], size: int, mode: str) -> tuple[int, float]:
    """Max abs difference and fraction of differing pixels, fast path vs course recipe."""
    fast = E.apply_mode(np.stack([E.resize_image(im, size) for im in images]), mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.stack([_reference_u8(im, size, mode) for im in images])
    assert fast.shape == ref.shape and fast.dtype == np.uint8
    diff = np.abs(fast.astype(int) - ref.astype(int))
    return int(diff.max()), float((diff > 0).mean())


def _synthetic_images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(30, 33), (61, 45), (120, 97), (17, 23)]]
    smooth = np.linspace(0, 255, 40 * 52).reshape(40, 52).astype(np.uint8)
    images.append(np.dstack([smooth, smooth[::-1], 255 - smooth]))
    flat = np.full((35, 35, 3), 90, np.uint8)  # constant image: histogram edge case
    black = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
    black[10:30, 5:25] = 0  # V == 0 pixels for RGB-HE
    return [*images, flat, black]


# A grey input one level off (a value on a half level) moves these modes' results around it.
_NEIGHBOURHOOD_MODES = ("L-LHE", "L-CLAHE")


@pytest.mark.parametrize("mode", E.MODES)
def test_modes_match_course_on_synthetic_images(mode: str) -> None:
    for size in (24, 48, 32):
        max_diff, frac = _compare(_synthetic_images(), size, mode)
        if mode in _NEIGHBOURHOOD_MODES:
            assert frac < 1e-3, (mode, size, max_diff, frac)
        else:
            assert max_diff <= 1, (mode, size, max_diff, frac)


@pytest.fixture(scope="module")
def real_images(real_small_root) -> list[np.ndarray]:
    catalog = read_catalog(real_small_root, verify="none")
    rows = catalog.iloc[np.linspace(0, len(catalog) - 1, 48).astype(int)]
    return [load_image(p) for p in rows["path"]]


@pytest.mark.real
@pytest.mark.parametrize("mode", E.MODES)
def test_modes_match_course_on_real_images(real_images: list[np.ndarray], mode: str) -> None:
    for size in (24, 48):
        max_diff, frac = _compare(real_images, size, mode)
        if mode in _NEIGHBOURHOOD_MODES:
            assert frac < 1e-3, (mode, size, max_diff, frac)
        else:
            assert max_diff <= 1, (mode, size, max_diff, frac)


def test_resize_matches_skimage_to_float_rounding() -> None:
    rng = np.random.default_rng(1)
    for h, w, s in [(30, 33, 24), (45, 45, 48), (266, 232, 24), (25, 120, 48), (1, 9, 4), (48, 48, 48),
                    (10, 13, 48), (7, 60, 24), (47, 49, 48)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = E.resize_image(image, s)
        theirs = transform.resize(image, (s, s))
        assert ours.shape == theirs.shape == (s, s, 3)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    gray = rng.integers(0, 256, (40, 31), dtype=np.uint8)
    np.testing.assert_allclose(E.resize_image(gray, 24), transform.resize(gray, (24, 24)), rtol=0, atol=1e-12)


def test_rank_equalize_is_bit_exact() -> None:
    rng = np.random.default_rng(2)
    for h, w in [(24, 24), (48, 48), (13, 40), (5, 5)]:
        batch = rng.integers(0, 256, (6, h, w), dtype=np.uint8)
        batch[0] = 200  # flat image
        batch[1, :, : w // 2] = 0  # big dark region
        batch[2] = (batch[2] // 64) * 64  # few levels, many ties
        ours = E.rank_equalize(batch)
        theirs = np.stack([rank.equalize(img, footprint=disk(10)) for img in batch])
        np.testing.assert_array_equal(ours, theirs)
    for radius in (1, 3):
        img = rng.integers(0, 256, (1, 20, 17), dtype=np.uint8)
        np.testing.assert_array_equal(E.rank_equalize(img, radius)[0], rank.equalize(img[0], footprint=disk(radius)))
    assert E.rank_equalize(np.zeros((0, 8, 8), np.uint8)).shape == (0, 8, 8)


def test_equalize_hist_batch_matches_skimage_exactly() -> None:
    rng = np.random.default_rng(3)
    batch = rng.random((5, 24, 24))
    batch[1] = 0.25  # flat
    batch[2] = np.round(batch[2] * 4) / 4  # few values
    ours = E.equalize_hist_batch(batch)
    theirs = np.stack([exposure.equalize_hist(b) for b in batch])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_enhance_single_image_shapes_roi_and_errors() -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    for mode in E.MODES:
        out = E.enhance(image, 24, mode)
        assert out.shape == (24, 24, E.mode_channels(mode)) and out.dtype == np.uint8
    cropped = E.enhance(image, 24, "RGB", roi=(5, 6, 44, 53))
    np.testing.assert_array_equal(cropped, E.enhance(image[6:54, 5:45], 24, "RGB"))
    assert not np.array_equal(cropped, E.enhance(image, 24, "RGB"))
    with pytest.raises(ConfigError, match="unknown mode 'HSV'"):
        E.enhance(image, 24, "HSV")
    with pytest.raises(ConfigError, match="image size"):
        E.check_size(2)
    assert E.mode_channels("RGB-HE") == 3 and E.mode_channels("L-CLAHE") == 1


@pytest.mark.parametrize("shape", [(57, 40, 3), (20, 31, 3), (9, 70)], ids=["rgb", "flat", "gray"])
@pytest.mark.parametrize("size", [24, 48])
def test_resize_planes_matches_resize_image_and_fills_destinations(shape: tuple[int, ...], size: int) -> None:
    rng = np.random.default_rng(6)
    image = np.full(shape, 77, np.uint8) if shape == (20, 31, 3) else rng.integers(0, 256, shape, dtype=np.uint8)
    depth = image.shape[2] if image.ndim == 3 else 1
    dest = np.full((2, depth, size, size), -1.0)
    out = E.resize_planes(image, size, out=dest[1])
    single = E.resize_image(image, size)
    np.testing.assert_array_equal(dest[1], single.reshape(size, size, depth).transpose(2, 0, 1))
    assert np.shares_memory(out, dest) and (dest[0] == -1.0).all()
    if shape == (20, 31, 3):  # a flat image stays exactly flat
        np.testing.assert_array_equal(out, np.full((3, size, size), 77 / 255.0))
