"""Image enhancement modes of the course recipe (resize, then RGB, RGB-HE, L, L-HE, L-LHE or
L-CLAHE), computed on batches of same-sized images and returned as ``uint8``.

:func:`course_enhance` is the course's per-image scikit-image recipe, the reference the fast
functions are tested against; the modes and the tolerance of each are in ``docs/cook.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from gtsrb_kit.errors import ConfigError

MODES: tuple[str, ...] = ("RGB", "RGB-HE", "L", "L-HE", "L-LHE", "L-CLAHE")
DEFAULT_MODES: tuple[str, ...] = ("RGB", "RGB-HE", "L", "L-LHE")
DEFAULT_SIZES: tuple[int, ...] = (24, 48)
LHE_RADIUS = 10
GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray
_NBINS = 256


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is known, else raise :class:`ConfigError` listing the valid ones."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def check_size(size: int) -> int:
    """Return ``size`` if it is a usable image side (4..512 pixels), else raise :class:`ConfigError`."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 4 <= int(size) <= 512:
        raise ConfigError(f"image size {size!r} is not usable; use an integer from 4 to 512 (e.g. 24, 32, 48)")
    return int(size)


def mode_channels(mode: str) -> int:
    """Channels of a mode's images: 3 for ``RGB*`` modes, 1 for ``L*`` modes."""
    return 3 if check_mode(mode).startswith("RGB") else 1


def crop_roi(image: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """Crop to the annotated sign; ``x2``/``y2`` are inclusive, as in the GTSRB CSVs."""
    return image[int(y1):int(y2) + 1, int(x1):int(x2) + 1]


# --------------------------------------------------------------------------- resize

def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """scipy.ndimage 'mirror' boundary (d c b | a b c d | c b a) for integer positions."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)


@functools.lru_cache(maxsize=4096)
def _axis_plan(n_in: int, n_out: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """How skimage's resize treats one axis: Gaussian kernel (or None), then bilinear taps.

    Mirrors ``skimage.transform.resize(order=1, mode='reflect', anti_aliasing=None)``:
    ``ndi.gaussian_filter(sigma=max(0, (f - 1) / 2), mode='mirror', truncate=4)`` when
    shrinking, then ``ndi.zoom(order=1, mode='mirror', grid_mode=True)``.

    Returns:
        ``(kernel, lo, hi, weight)``: output pixel ``o`` is ``(1 - weight[o]) * in[lo[o]] +
        weight[o] * in[hi[o]]`` of the blurred input.
    """
    factor = n_in / n_out
    sigma = max(0.0, (factor - 1) / 2)
    kernel = None
    if sigma > 1e-15:  # scipy skips an axis whose sigma is (almost) zero
        radius = int(4.0 * sigma + 0.5)
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 / (sigma * sigma) * x ** 2)
        kernel /= kernel.sum()
    # grid_mode=True: output pixel centres map to input coordinates (o + 0.5) * f - 0.5
    coords = (np.arange(n_out) + 0.5) * factor - 0.5
    if n_in == 1:
        zeros = np.zeros(n_out, np.intp)
        return kernel, zeros, zeros, np.zeros(n_out)
    period = 2 * (n_in - 1)
    c = np.mod(coords, period)
    c = np.where(c > n_in - 1, period - c, c)  # 'mirror' beyond the edge pixels
    lo = np.minimum(np.floor(c).astype(np.intp), n_in - 2)
    return kernel, lo, lo + 1, c - lo


@functools.lru_cache(maxsize=4096)
def _tap_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The bilinear step of one axis as an (n_out, n_in) matrix (two non-zeros per row)."""
    _, lo, hi, weight = _axis_plan(n_in, n_out)
    matrix = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, lo), 1.0 - weight)
    np.add.at(matrix, (rows, hi), weight)
    return matrix


@functools.lru_cache(maxsize=4096)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """skimage's resize of one axis as an ``(n_out, n_in)`` matrix: bilinear taps after the Gaussian.

    Both steps are linear, so ``resize(x) = My @ x @ Mx.T`` (``My = resize_matrix(h, s)``,
    ``Mx = resize_matrix(w, s)``); the Gaussian's 'mirror' border is folded into the columns.
    """
    kernel = _axis_plan(n_in, n_out)[0]
    taps = _tap_matrix(n_in, n_out)
    if kernel is None:
        return taps
    radius = len(kernel) // 2
    rows = np.broadcast_to(np.arange(n_in)[:, None], (n_in, len(kernel)))
    cols = _mirror(rows + np.arange(-radius, radius + 1)[None, :], n_in)
    blur = np.zeros((n_in, n_in))
    np.add.at(blur, (rows, cols), np.broadcast_to(kernel, rows.shape))
    return taps @ blur


@functools.lru_cache(maxsize=4096)
def _column_matrix(n_in: int, size: int) -> np.ndarray:
    """``resize_matrix(n_in, size).T / 255``: resizes the columns of a ``uint8`` image to [0, 1]."""
    return np.ascontiguousarray(resize_matrix(n_in, size).T * (1.0 / 255.0))


def resize_planes(image: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`resize_image` of one image as channel planes ``(C, size, size)`` (into ``out`` if given).

    The channels are stacked: one product resizes the columns of every plane, one batched
    product the rows, straight into the destination. Float64 throughout; ``C`` = 1 for a 2-D image.
    """
    h, w = image.shape[:2]
    depth = image.shape[2] if image.ndim == 3 else 1
    out = np.empty((depth, size, size)) if out is None else out
    planes = np.ascontiguousarray(image.transpose(2, 0, 1) if image.ndim == 3 else image[None], dtype=np.float64)
    cols = (planes.reshape(depth * h, w) @ _column_matrix(w, size)).reshape(depth, h, size)
    np.matmul(resize_matrix(h, size), cols, out=out)
    if image.size and image.min() == image.max():  # skimage clips to the input's range; only a flat image drifts
        out.fill(float(image.min()) / 255.0)
    return out


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``uint8`` image to ``(size, size, C)`` float64 in [0, 1] like skimage's ``resize``.

    ``skimage.transform.resize(image, (size, size))`` is a Gaussian (when shrinking, 'mirror'
    border) followed by bilinear interpolation, both linear along each axis: this computes it as
    two matrix products (:func:`resize_matrix`), equal to scikit-image up to float rounding (about
    1e-15). A 2-D image gives a 2-D result.
    """
    planes = resize_planes(image, int(size))
    return planes[0] if image.ndim == 2 else np.ascontiguousarray(planes.transpose(1, 2, 0))


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2gray``: ``0.2125 R + 0.7154 G + 0.0721 B`` (no BLAS call, no threads)."""
    return rgb[..., 0] * GRAY_WEIGHTS[0] + rgb[..., 1] * GRAY_WEIGHTS[1] + rgb[..., 2] * GRAY_WEIGHTS[2]


def to_uint8(values: np.ndarray) -> np.ndarray:
    """``round(255 * values)`` as ``uint8``, rounding half to even.

    ``values`` must lie in [0, 1] up to float rounding (every mode's output does); nothing is
    clipped, which saves a pass over the data.
    """
    out = np.multiply(values, 255.0)
    np.rint(out, out=out)
    return out.astype(np.uint8)


# --------------------------------------------------------------------------- global equalization

_EDGE_BAND = 1e-6  # in bin units: closer than this to a bin edge or centre, decide exactly


def equalize_hist_batch(images: np.ndarray) -> np.ndarray:
    """``skimage.exposure.equalize_hist(img)`` (256 bins) for every image of a float batch.

    Replicates ``np.histogram``'s bin assignment (uniform bins over [min, max], with its edge
    corrections) and ``np.interp`` (precomputed slopes) per image, vectorised. The bin of a value
    and its side of the bin centre are read from its fractional bin position; only values within
    ``_EDGE_BAND`` of an edge or a centre are compared with the actual edges and centres, as numpy
    does, so the result is the same.

    Args:
        images: ``(N, H, W)`` float64.

    Returns:
        ``(N, H, W)`` float64, the equalized images.
    """
    n = images.shape[0]
    if n == 0:
        return images.astype(np.float64)
    flat = images.reshape(n, -1)
    npix = flat.shape[1]
    lo = flat.min(axis=1)
    hi = flat.max(axis=1)
    same = lo == hi
    lo = np.where(same, lo - 0.5, lo)
    hi = np.where(same, hi + 0.5, hi)
    # np.histogram's edges, np.linspace(lo, hi, 257) per row, computed as linspace does
    edges = np.arange(_NBINS + 1, dtype=np.float64)[None, :] * ((hi - lo) / _NBINS)[:, None]
    edges += lo[:, None]
    edges[:, -1] = hi
    # Fractional bin positions only locate a value's bin and its side of the bin centre: values
    # within _EDGE_BAND of an edge or a centre are then decided exactly, so rounding here is harmless.
    pos = flat - lo[:, None]
    pos *= (_NBINS / (hi - lo))[:, None]
    idx = pos.astype(np.intp)  # intp: np.take is several times slower with other index types
    np.minimum(idx, _NBINS - 1, out=idx)  # hi itself belongs to the last bin
    frac = pos - idx
    frac -= 0.5
    ravel_idx, ravel_frac = idx.ravel(), frac.ravel()
    near = np.flatnonzero(np.abs(frac) > 0.5 - _EDGE_BAND)  # near an edge (or past the last one)
    if len(near):
        r = near // npix
        v = flat.ravel()[near]
        k = ravel_idx[near]
        k = k - (v < edges[r, k])
        k = k + ((v >= edges[r, k + 1]) & (k != _NBINS - 1))
        moved = k != ravel_idx[near]
        ravel_idx[near] = k
        ravel_frac[near[moved]] = pos.ravel()[near[moved]] - k[moved] - 0.5
    rows = np.arange(n, dtype=np.intp)[:, None]
    hist = np.bincount((idx + rows * _NBINS).ravel(), minlength=n * _NBINS)
    cdf = hist.reshape(n, _NBINS).cumsum(axis=1)
    cdf = cdf / cdf[:, -1:].astype(np.float64)
    centers = (edges[:, :-1] + edges[:, 1:]) / 2.0
    # np.interp(v, centers, cdf): j with centers[j] <= v < centers[j + 1]; v's bin is j or j + 1.
    j1 = idx + (frac >= 0)  # j + 1: an index into the padded table below
    near = np.flatnonzero(np.abs(frac) < _EDGE_BAND)
    if len(near):
        r = near // npix
        k = ravel_idx[near]
        j1.ravel()[near] = k + (flat.ravel()[near] >= centers[r, k])
    # Rows padded to 257 entries: j = -1 (left of the first centre) and j = 255 (right of the
    # last) read constant segments (slope 0, value cdf[0] / cdf[-1]), as np.interp returns.
    slopes = np.zeros((n, _NBINS + 1))
    # A nearly flat image (its values differ by rounding only) can have equal centres: slope 0 there.
    widths = centers[:, 1:] - centers[:, :-1]
    np.divide(cdf[:, 1:] - cdf[:, :-1], widths, out=slopes[:, 1:_NBINS], where=widths > 0)
    x0 = np.empty((n, _NBINS + 1))
    x0[:, 1:] = centers
    x0[:, 0] = centers[:, 0]
    y0 = np.empty((n, _NBINS + 1))
    y0[:, 1:] = cdf
    y0[:, 0] = cdf[:, 0]
    j1 += rows * (_NBINS + 1)
    at = j1.ravel()
    out = np.take(x0.ravel(), at)
    np.subtract(flat.ravel(), out, out=out)
    out *= np.take(slopes.ravel(), at)
    out += np.take(y0.ravel(), at)
    return out.reshape(images.shape)


def rgb_equalize_value_batch(rgb: np.ndarray) -> np.ndarray:
    """``hsv2rgb`` of ``rgb2hsv(img)`` with its V channel histogram-equalized, for a batch.

    With hue and saturation fixed, HSV-to-RGB is linear in V, so the result is the RGB image
    scaled by ``V' / V`` (grey ``V'`` where ``V == 0``).

    Args:
        rgb: ``(N, H, W, 3)`` float64 in [0, 1].
    """
    v = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])  # faster than max(axis=-1)
    v_eq = equalize_hist_batch(v)
    positive = v > 0
    scale = np.divide(v_eq, v, out=np.zeros_like(v), where=positive)
    out = rgb * scale[..., None]
    if not positive.all():
        black = ~positive
        out[black] = v_eq[black][:, None]
    return out


# --------------------------------------------------------------------------- local equalization

@functools.lru_cache(maxsize=16)
def _disk_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """Offsets of skimage.morphology.disk(radius): dy^2 + dx^2 <= radius^2."""
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    keep = dy * dy + dx * dx <= radius * radius
    return tuple(zip(dy[keep].tolist(), dx[keep].tolist()))


@functools.lru_cache(maxsize=64)
def _disk_population(h: int, w: int, radius: int) -> np.ndarray:
    """How many disk pixels around each pixel lie inside an (h, w) image."""
    valid = np.zeros((h + 2 * radius, w + 2 * radius), np.int64)
    valid[radius:radius + h, radius:radius + w] = 1
    integral = np.zeros((h, w), np.int64)
    for dy, dx in _disk_offsets(radius):
        integral += valid[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
    return integral


def rank_equalize(images: np.ndarray, radius: int = LHE_RADIUS) -> np.ndarray:
    """``skimage.filters.rank.equalize(img, disk(radius))`` for a batch of ``uint8`` images, bit-exact.

    For each pixel, skimage outputs ``floor(255 * count / pop)`` where ``count`` is the number of
    pixels of the disk around it (inside the image) that are not brighter than it, and ``pop``
    the number of disk pixels inside the image. Images are laid side by side with ``radius``
    zero columns between them; zero padding is never brighter than a pixel, so counting the
    *brighter* neighbours needs no masks: ``count = pop - brighter``.

    Args:
        images: ``(N, H, W)`` ``uint8``.
        radius: Disk radius (the course uses 10).

    Returns:
        ``(N, H, W)`` ``uint8``.
    """
    import cv2  # OpenCV's SIMD comparisons are several times faster than numpy's here

    n, h, w = images.shape
    if n == 0:
        return images.copy()
    r = radius
    pitch = w + r
    width = n * pitch
    mosaic = np.zeros((h + 2 * r, width + 2 * r), np.uint8)
    body = mosaic[r:r + h, r:r + width].reshape(h, n, pitch)
    body[:, :, :w] = images.transpose(1, 0, 2)
    center = mosaic[r:r + h, r:r + width]
    offsets = [o for o in _disk_offsets(r) if o != (0, 0)]  # the centre is never brighter
    count_gt = np.zeros((h, width), np.int64)
    for start in range(0, len(offsets), 255):
        # cv2.compare marks hits with 255, i.e. -1 modulo 256: subtracting counts them in uint8,
        # exact for groups of at most 255 offsets
        acc = np.zeros((h, width), np.uint8)
        for dy, dx in offsets[start:start + 255]:
            mask = cv2.compare(mosaic[r + dy:r + dy + h, r + dx:r + dx + width], center, cv2.CMP_GT)
            np.subtract(acc, mask, out=acc)
        count_gt += acc
    count_gt = count_gt.reshape(h, n, pitch)[:, :, :w].transpose(1, 0, 2)
    pop = _disk_population(h, w, r)
    return ((255 * (pop - count_gt)) // pop).astype(np.uint8)


# --------------------------------------------------------------------------- modes

def _clahe(gray: np.ndarray) -> np.ndarray:
    """``skimage.exposure.equalize_adapthist`` of every image of a float batch."""
    from skimage.exposure import equalize_adapthist

    return np.stack([equalize_adapthist(np.clip(g, 0.0, 1.0)) for g in gray]) if len(gray) else gray.copy()


def apply_mode(rgb: np.ndarray, mode: str) -> np.ndarray:
    """Apply one enhancement mode to a batch of resized images (see :func:`apply_modes`).

    Returns:
        ``(N, S, S, C)`` ``uint8``: ``C`` = 3 for RGB modes, 1 for L modes.
    """
    return apply_modes(rgb, [mode])[mode]


def apply_modes(rgb: np.ndarray, modes: Sequence[str]) -> dict[str, np.ndarray]:
    """Apply several enhancement modes to a batch of resized images, computing shared steps once.

    Args:
        rgb: ``(N, S, S, 3)`` float64 in [0, 1], as returned by :func:`resize_image` (stacked).
        modes: Modes of :data:`MODES`.

    Returns:
        ``{mode: (N, S, S, C) uint8}``: ``C`` = 3 for RGB modes, 1 for L modes.
    """
    out: dict[str, np.ndarray] = {}
    gray = gray_u8 = None
    for mode in modes:
        check_mode(mode)
        if mode == "RGB":
            out[mode] = to_uint8(rgb)
            continue
        if mode == "RGB-HE":
            out[mode] = to_uint8(rgb_equalize_value_batch(rgb))
            continue
        if gray is None:
            gray = to_gray(rgb)
            gray_u8 = to_uint8(gray)  # == skimage's img_as_ubyte for [0, 1] floats
        if mode == "L":
            result = gray_u8
        elif mode == "L-HE":
            result = to_uint8(equalize_hist_batch(gray))
        elif mode == "L-LHE":
            result = rank_equalize(gray_u8)
        else:
            result = to_uint8(_clahe(gray))
        out[mode] = result[..., None]
    return out


def enhance(image: np.ndarray, size: int, mode: str, roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Resize one ``uint8`` RGB image and apply a mode: the cooked pixels of that image.

    Args:
        image: ``(H, W, 3)`` ``uint8`` RGB.
        size: Output side.
        mode: One of :data:`MODES`.
        roi: Optional ``(x1, y1, x2, y2)`` (inclusive) to crop to before resizing.

    Returns:
        ``(size, size, C)`` ``uint8``.
    """
    check_mode(mode)
    if roi is not None:
        image = crop_roi(image, *roi)
    return apply_mode(resize_image(image, size)[None], mode)[0]


def course_enhance(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """The course's straightforward scikit-image recipe (reference for tests and benchmarks).

    Returns:
        float64 in [0, 1] ``(size, size, 3)`` for RGB modes, ``(size, size)`` for ``L``, ``L-HE``
        and ``L-CLAHE``; ``uint8`` ``(size, size)`` for ``L-LHE`` (as skimage returns it).
    """
    from skimage import color, exposure, transform
    from skimage.filters import rank
    from skimage.morphology import disk
    from skimage.util import img_as_ubyte

    check_mode(mode)
    img = transform.resize(image, (size, size))
    if mode == "RGB":
        return img
    if mode == "RGB-HE":
        hsv = color.rgb2hsv(img)
        hsv[:, :, 2] = exposure.equalize_hist(hsv[:, :, 2])
        return color.hsv2rgb(hsv)
    gray = color.rgb2gray(img)
    if mode == "L":
        return gray
    if mode == "L-HE":
        return exposure.equalize_hist(gray)
    if mode == "L-LHE":
        return rank.equalize(img_as_ubyte(gray), footprint=disk(LHE_RADIUS))
    return exposure.equalize_adapthist(gray)
