"""Image enhancement modes of the course recipe, fast and faithful.

The course prepares each image with scikit-image: ``resize(img, (s, s))`` (Gaussian anti-aliasing
when shrinking, then bilinear interpolation), then one of these modes:

========== ==================================================================================
``RGB``     the resized colour image
``RGB-HE``  ``rgb2hsv``, ``equalize_hist`` of the V channel, ``hsv2rgb``
``L``       ``rgb2gray``
``L-HE``    ``equalize_hist(rgb2gray(img))`` (global histogram equalization)
``L-LHE``   ``rank.equalize(img_as_ubyte(rgb2gray(img)), disk(10))`` (local equalization)
``L-CLAHE`` ``equalize_adapthist(rgb2gray(img))`` (contrast-limited adaptive equalization)
========== ==================================================================================

This module computes the same results without scikit-image's per-call overhead, on batches of
same-sized images, and returns ``uint8`` (``round(255 * value)``):

* :func:`resize_image` / :func:`resize_planes` fold the anti-aliasing Gaussian (mirror border)
  and the bilinear taps of each axis into one cached matrix and resize with two float64 products
  with these matrices; they match ``skimage.transform.resize`` to float64 rounding;
* histogram equalization replicates ``np.histogram`` / ``np.interp`` bin for bin, vectorised over
  the batch; ``RGB-HE`` scales RGB by ``V' / V`` (what HSV round-tripping does, without it);
* the compiled kernels (``gtsrb_kit._kernels``, built by ``setup.py`` where a C compiler is
  available) run the resize over each output's band of non-zero weights only, and the
  equalization and the ``RGB``/``RGB-HE``/``L`` modes (:func:`store_modes`) with the same
  operations as the numpy code, bit for bit; without them (or with ``GTSRB_KIT_KERNELS=0``) the
  numpy code runs, cooking about 1.7x slower (:func:`resize_implementation` says which resize
  runs: it is the one step whose float rounding differs between the two);
* :func:`rank_equalize` counts, for every pixel, the disk neighbours not brighter than it with
  one vectorised comparison per disk offset over a mosaic of the whole batch: bit-exact with
  ``skimage.filters.rank.equalize``;
* ``L-CLAHE`` is a vectorised port of scikit-image's ``equalize_adapthist`` (all blocks of all
  images at once instead of a Python call per block).

:func:`course_enhance` is the straightforward scikit-image implementation, kept as the reference
for tests and the benchmark. Stated tolerance against it (after ``round(255 * x)``): at most 1 grey
level for every mode (rounding of values that sit on a half level), bit-exact for ``L-LHE``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gtsrb_kit.errors import ConfigError

MODES: tuple[str, ...] = ("RGB", "RGB-HE", "L", "L-HE", "L-LHE", "L-CLAHE")
DEFAULT_MODES: tuple[str, ...] = ("RGB", "RGB-HE", "L", "L-LHE")
DEFAULT_SIZES: tuple[int, ...] = (24, 48)
LHE_RADIUS = 10
GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray
_NBINS = 256

try:  # compiled inner loops (setup.py builds them where a C compiler is available)
    from gtsrb_kit import _kernels
except ImportError:  # pragma: no cover - the numpy code below does the same work
    _kernels = None
if os.environ.get("GTSRB_KIT_KERNELS", "1") == "0":  # run the numpy code (e.g. to compare)
    _kernels = None
_FMA = bool(_kernels is not None and _kernels.has_fma())


def resize_implementation() -> str:
    """The resize this installation runs: ``"c-fma"`` / ``"c"`` (compiled, with or without fused
    multiply-adds) or ``"numpy"``. They agree with skimage to float rounding, not bit for bit with
    each other, so cooked files record it."""
    if _kernels is None:
        return "numpy"
    return "c-fma" if _FMA else "c"


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
def _stacked_cols(n_in: int, sizes: tuple[int, ...]) -> np.ndarray:
    """``(n_in, sum(sizes))``: the column matrices of several sizes, transposed and side by side,
    scaled by 1/255 (the input is ``uint8``), so one product resizes the columns to every size."""
    return np.ascontiguousarray(np.concatenate([resize_matrix(n_in, s) for s in sizes]).T * (1.0 / 255.0))


@functools.lru_cache(maxsize=8192)
def _banded(n_in: int, n_out: int, columns: bool) -> tuple[np.ndarray, np.ndarray]:
    """One axis for the compiled resize: its matrix and each output's band of non-zero weights.

    Rows: ``(resize_matrix, band)``; columns: the transposed matrix scaled by 1/255 (the input is
    ``uint8``), ``(n_in, n_out)``. ``band[o]`` = first and end (exclusive) non-zero input index.
    """
    matrix = resize_matrix(n_in, n_out)
    nonzero = matrix != 0
    first = np.argmax(nonzero, axis=1)
    end = n_in - np.argmax(nonzero[:, ::-1], axis=1)
    band = np.ascontiguousarray(np.stack([first, end], axis=1), dtype=np.int32)
    if columns:
        matrix = np.ascontiguousarray(matrix.T * (1.0 / 255.0))
    return matrix, band


def resize_planes(image: np.ndarray, sizes: Sequence[int], out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """:func:`resize_image` of one image to several sizes, as channel planes ``(C, s, s)``.

    With the compiled kernels (see :func:`resize_implementation`), two banded products per size
    that skip the zeros of the resize matrices. Otherwise the image is taken channel by channel
    (planes stacked): one BLAS product resizes the columns of every plane to every size, then one
    batched product per size resizes the rows, straight into its destination (run it with
    single-threaded BLAS, see :func:`single_thread_blas`: for matrices this small, BLAS threads
    cost more than they save). Float64 throughout.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` ``uint8`` image.
        sizes: Output sides.
        out: Optional destinations, one C-contiguous float64 ``(C, s, s)`` array per size (e.g.
            rows of a planar batch; ``C`` = 1 for a 2-D image).

    Returns:
        One float64 ``(C, s, s)`` array per size, in [0, 1] (``out`` if given).
    """
    h, w = image.shape[:2]
    sizes = tuple(int(s) for s in sizes)
    depth = image.shape[2] if image.ndim == 3 else 1
    if out is None:
        out = [np.empty((depth, s, s)) for s in sizes]
    if _kernels is not None and image.size:
        targets = tuple((s, *_banded(h, s, False), *_banded(w, s, True), dst) for s, dst in zip(sizes, out))
        _kernels.resize(np.ascontiguousarray(image, dtype=np.uint8), h, w, depth, targets, _FMA)
        return list(out)
    planes = np.ascontiguousarray(image.transpose(2, 0, 1) if image.ndim == 3 else image[None], dtype=np.float64)
    cols = (planes.reshape(depth * h, w) @ _stacked_cols(w, sizes)).reshape(depth, h, -1)
    lo = float(image.min()) if image.size else 0.0
    flat = bool(image.size) and lo == float(image.max())
    start = 0
    for k, s in enumerate(sizes):
        np.matmul(resize_matrix(h, s), cols[:, :, start:start + s], out=out[k])
        start += s
        if flat:  # skimage clips to the input's range; only a flat image can drift from it
            out[k].fill(lo / 255.0)
    return list(out)


def resize_many(image: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """:func:`resize_image` of one image to several sizes (:func:`resize_planes`, interleaved).

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` ``uint8`` image.
        sizes: Output sides.

    Returns:
        One float64 array per size, ``(s, s, C)`` (or ``(s, s)``), in [0, 1].
    """
    planes = resize_planes(image, sizes)
    if image.ndim == 2:
        return [p[0] for p in planes]
    return [np.ascontiguousarray(p.transpose(1, 2, 0)) for p in planes]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``uint8`` image to ``(size, size, C)`` float64 in [0, 1] like skimage's ``resize``.

    ``skimage.transform.resize(image, (size, size))`` is a Gaussian (when shrinking, 'mirror'
    border) followed by bilinear interpolation, both linear along each axis: this computes it as
    two matrix products (:func:`resize_matrix`).

    Args:
        image: ``(H, W, 3)`` (or ``(H, W)``) ``uint8`` image.
        size: Output side.

    Returns:
        ``float64`` array ``(size, size, 3)`` (or ``(size, size)``), equal to
        ``skimage.transform.resize(image, (size, size))`` up to float rounding (about 1e-15;
        the result is not clipped to the input's range except for flat images, where rounding
        would otherwise break the flatness). The compiled and the numpy implementation differ
        in that rounding (see :func:`resize_implementation`).
    """
    with single_thread_blas():
        return resize_many(image, (size,))[0]


@functools.lru_cache(maxsize=1)
def _openblas_threads() -> tuple[Any, Any] | None:
    """(get, set) of the thread count of numpy's bundled OpenBLAS, or None where not found."""
    import ctypes
    import glob
    import os

    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run the block with numpy's OpenBLAS on one thread (restored after); a no-op elsewhere."""
    funcs = _openblas_threads()
    if funcs is None:
        yield
        return
    get, put = funcs
    before = get()
    if before != 1:
        put(1)
    try:
        yield
    finally:
        if before != 1:
            put(before)


def keep_freed_memory(limit_mib: int = 256) -> bool:
    """Make glibc's ``malloc`` keep freed blocks of up to ``limit_mib`` in this process (worker processes).

    The batch functions here allocate many temporaries of a few hundred KiB. By default glibc
    hands blocks that large back to the kernel when freed (``mmap``/trim), so every new one
    costs page faults: on small batches that doubles or triples their run time. With these
    settings the process keeps its high-water mark of memory instead (a few tens of MiB).
    Process-wide and permanent: meant for the worker processes of :mod:`gtsrb_kit.cook`.

    Returns:
        True where applied (glibc), False elsewhere (a no-op).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    limit = int(limit_mib) << 20
    return bool(mallopt(m_mmap_threshold, limit) and mallopt(m_trim_threshold, 2 * limit)
                and mallopt(m_top_pad, 16 << 20))


def set_single_thread_blas() -> None:
    """Make numpy's OpenBLAS single-threaded in this process for good (worker processes)."""
    funcs = _openblas_threads()
    if funcs is not None:
        funcs[1](1)


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
    if _kernels is not None and images[0].size:
        source = np.ascontiguousarray(images, dtype=np.float64)
        out = np.empty(source.shape)
        _kernels.equalize_hist(source, out, n, source[0].size)  # the same operations, compiled
        return out
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
    slopes[:, 1:_NBINS] = (cdf[:, 1:] - cdf[:, :-1]) / (centers[:, 1:] - centers[:, :-1])
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


# --------------------------------------------------------------------------- CLAHE

_CLAHE_GRAY = 2**14  # skimage's NR_OF_GRAY
_CLAHE_BATCH = 16


def _rescale_rows(x: np.ndarray, omax: float) -> np.ndarray:
    """``skimage.exposure.rescale_intensity(img, out_range=(0, omax))`` per image of a float batch."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    imin = flat.min(axis=1)[:, None]
    imax = flat.max(axis=1)[:, None]
    same = imin == imax
    span = np.where(same, 1.0, imax - imin)
    out = (flat - imin) / span * (omax - 0.0) + 0.0
    if same.any():
        out = np.where(same, np.clip(flat, 0.0, omax), out)
    return out.reshape(x.shape)


def _clip_histograms(hist: np.ndarray, clip_limit: int) -> np.ndarray:
    """skimage's ``clip_histogram`` for every row of ``hist`` at once (same redistribution order)."""
    nbins = hist.shape[1]
    excess = np.maximum(hist - clip_limit, 0).sum(axis=1)
    hist = np.minimum(hist, clip_limit)
    bin_incr = excess // nbins
    upper = clip_limit - bin_incr
    low = hist < upper[:, None]
    excess -= low.sum(axis=1) * bin_incr
    hist = hist + low * bin_incr[:, None]
    mid = (hist >= upper[:, None]) & (hist < clip_limit)
    excess += np.where(mid, hist - clip_limit, 0).sum(axis=1)
    hist = np.where(mid, clip_limit, hist)
    positions = np.arange(nbins)
    rows = np.flatnonzero(excess > 0)
    if len(rows):
        # remainders[step, p] = p % step: "p - index is a multiple of step" without a modulo per pass
        remainders = (positions[None, :] % np.arange(1, nbins + 1)[:, None]).astype(np.int16)
    while len(rows):
        sub, left = hist[rows], excess[rows]
        before = left.copy()
        for index in range(nbins):
            under = sub < clip_limit
            step = np.minimum(np.maximum(1, under.sum(axis=1) // left), nbins)
            hit = remainders[step - 1] == (index % step)[:, None].astype(np.int16)
            hit &= under
            if index:
                hit[:, :index] = False
            sub += hit
            left -= hit.sum(axis=1)
            done = left <= 0
            if done.any():
                hist[rows[done]] = sub[done]
                excess[rows[done]] = left[done]
                keep = ~done
                rows, sub, left, before = rows[keep], sub[keep], left[keep], before[keep]
                if not len(rows):
                    break
        if len(rows):
            hist[rows] = sub
            excess[rows] = left
            rows = rows[left != before]  # a full pass without progress ends skimage's loop
    return hist


def clahe_batch(gray: np.ndarray, clip_limit: float = 0.01, nbins: int = 256) -> np.ndarray:
    """``skimage.exposure.equalize_adapthist(img)`` (default kernel) for a batch, vectorised.

    A line-by-line port of scikit-image's ``_clahe`` (kernel 1/8 of each side, 2**14 grey levels,
    clipped block histograms, bilinear blend of the four neighbouring block mappings) that runs
    every block of every image at once.

    Args:
        gray: ``(N, H, W)`` float64 in [0, 1].

    Returns:
        ``(N, H, W)`` float64 in [0, 1].
    """
    n, h, w = gray.shape
    if n == 0:
        return gray.astype(np.float64)
    if n > _CLAHE_BATCH:  # small batches keep the block histograms in cache
        return np.concatenate([clahe_batch(gray[i:i + _CLAHE_BATCH], clip_limit, nbins)
                               for i in range(0, n, _CLAHE_BATCH)])
    u16 = np.clip(np.rint(gray * 65535.0), 0, 65535)  # img_as_uint
    img = np.round(_rescale_rows(u16, _CLAHE_GRAY - 1.0)).astype(np.uint16)
    ky, kx = max(h // 8, 1), max(w // 8, 1)
    pads = [(k // 2, (k - s % k) % k + int(np.ceil(k / 2.0))) for k, s in ((ky, h), (kx, w))]
    img = np.pad(img, [(0, 0), *pads], mode="reflect")
    lut = (np.arange(_CLAHE_GRAY, dtype=np.uint16) // (1 + _CLAHE_GRAY // nbins)).astype(np.uint16)
    img = lut[img]
    ph, pw = img.shape[1:]
    hy, hx = int(ph / ky) - 1, int(pw / kx) - 1
    blocks = img[:, ky // 2:ky // 2 + hy * ky, kx // 2:kx // 2 + hx * kx]
    blocks = blocks.reshape(n, hy, ky, hx, kx).transpose(0, 1, 3, 2, 4).reshape(n * hy * hx, ky * kx)
    elements = ky * kx
    clim = int(np.clip(clip_limit * elements, 1, None)) if clip_limit > 0 else elements
    offsets = (np.arange(len(blocks)) * nbins)[:, None]
    hist = np.bincount((blocks.astype(np.int64) + offsets).ravel(), minlength=len(blocks) * nbins)
    hist = _clip_histograms(hist.reshape(len(blocks), nbins).astype(np.int16 if elements < 2**15 else np.int64), clim)
    mapped = np.cumsum(hist, axis=-1).astype(float)
    mapped *= (_CLAHE_GRAY - 1 - 0) / elements
    mapped += 0
    np.clip(mapped, None, _CLAHE_GRAY - 1, out=mapped)
    maps = mapped.astype(np.int16).reshape(n, hy, hx, nbins)  # values <= 2**14 - 1
    maps = np.pad(maps, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge").ravel()
    py, px = int(ph / ky), int(pw / kx)
    tiles = img.reshape(n, py, ky, px, kx).transpose(0, 1, 3, 2, 4).reshape(n, py, px, ky * kx).astype(np.intp)
    cx = np.tile(np.arange(kx) / kx, ky)
    cy = np.repeat(np.arange(ky) / ky, kx)
    # flat index of (image, block row, block col, grey) in the padded maps; edges shift the block
    base = (np.arange(n)[:, None, None] * (hy + 2) + np.arange(py)[None, :, None]) * (hx + 2) + np.arange(px)
    base = base[..., None] * nbins + tiles
    result = np.zeros(tiles.shape, dtype=np.float32)
    for ey, ex in ((0, 0), (0, 1), (1, 0), (1, 1)):
        values = maps[base + (ey * (hx + 2) + ex) * nbins].astype(np.float64)
        coeff = np.prod([cx if ex else 1 - cx, cy if ey else 1 - cy], 0)
        result += (values * coeff).astype(np.float32)
    result = result.astype(np.uint16)
    result = result.reshape(n, py, px, ky, kx).transpose(0, 1, 3, 2, 4).reshape(n, ph, pw)
    result = result[:, pads[0][0]:ph - pads[0][1], pads[1][0]:pw - pads[1][1]].astype(np.float64)
    return _rescale_rows(result, 1.0)


# --------------------------------------------------------------------------- modes

def apply_mode(rgb: np.ndarray, mode: str) -> np.ndarray:
    """Apply one enhancement mode to a batch of resized images.

    Args:
        rgb: ``(N, S, S, 3)`` float64 in [0, 1], as returned by :func:`resize_image` (stacked).
        mode: One of :data:`MODES`.

    Returns:
        ``(N, S, S, C)`` ``uint8``: ``C`` = 3 for RGB modes, 1 for L modes.
    """
    check_mode(mode)
    if mode == "RGB":
        return to_uint8(rgb)
    if mode == "RGB-HE":
        return to_uint8(rgb_equalize_value_batch(rgb))
    gray = to_gray(rgb)
    if mode == "L":
        out = to_uint8(gray)
    elif mode == "L-HE":
        out = to_uint8(equalize_hist_batch(gray))
    elif mode == "L-LHE":
        out = rank_equalize(to_uint8(gray))  # to_uint8 == skimage's img_as_ubyte for [0, 1] floats
    else:
        out = to_uint8(clahe_batch(gray))
    return out[..., None]


def apply_modes(rgb: np.ndarray, modes: Sequence[str]) -> dict[str, np.ndarray]:
    """:func:`apply_mode` for several modes of the same batch, computing shared steps once.

    The grey image (``L``, ``L-HE``, ``L-LHE``, ``L-CLAHE``) and its ``uint8`` form (``L`` is the
    input of ``L-LHE``) are computed once for all modes.

    Args:
        rgb: ``(N, S, S, 3)`` float64 in [0, 1].
        modes: Modes of :data:`MODES`.

    Returns:
        ``{mode: (N, S, S, C) uint8}``.
    """
    out: dict[str, np.ndarray] = {}
    gray = gray_u8 = None
    for mode in modes:
        check_mode(mode)
        if mode == "RGB":
            out[mode] = to_uint8(rgb)
        elif mode == "RGB-HE":
            out[mode] = to_uint8(rgb_equalize_value_batch(rgb))
        else:
            if gray is None:
                gray = to_gray(rgb)
            if mode in ("L", "L-LHE") and gray_u8 is None:
                gray_u8 = to_uint8(gray)
            if mode == "L":
                result = gray_u8
            elif mode == "L-HE":
                result = to_uint8(equalize_hist_batch(gray))
            elif mode == "L-LHE":
                result = rank_equalize(gray_u8)
            else:
                result = to_uint8(clahe_batch(gray))
            out[mode] = result[..., None]
    return out


_COMPILED_MODES = ("RGB", "RGB-HE", "L")


def store_modes(planes: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
    """:func:`apply_modes` of a planar batch, written into ``uint8`` destinations (cooking's hot path).

    ``RGB``, ``RGB-HE`` and ``L`` go through the compiled kernels where they are built (the same
    operations in the same order: bit-identical), the other modes through :func:`apply_modes`.

    Args:
        planes: ``(N, 3, S, S)`` float64 in [0, 1] (rows of the planar batches that
            :func:`resize_planes` fills).
        outputs: ``{mode: (N, S, S, C) uint8 destination}`` for modes of :data:`MODES`.
    """
    rest = dict(outputs)
    compiled = [m for m in _COMPILED_MODES if m in rest and rest[m].flags.c_contiguous]
    if _kernels is not None and compiled and len(planes):
        picked = [rest.pop(m) if m in compiled else None for m in _COMPILED_MODES]
        _kernels.store_modes(np.ascontiguousarray(planes, dtype=np.float64), len(planes), planes.shape[-1], *picked)
    if rest:
        for mode, pixels in apply_modes(np.moveaxis(planes, 1, -1), list(rest)).items():
            rest[mode][...] = pixels


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
