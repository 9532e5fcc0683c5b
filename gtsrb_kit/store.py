"""The enhanced-dataset HDF5 store: file names, schema version 1 (``docs/cook.md``), writing and loading.

``load_split`` reads through h5py (a split, or the rows asked for); ``tf_dataset`` is the pipeline
training uses::

    from gtsrb_kit.store import load_split, tf_dataset
    x, y = load_split("data/set-48x48-RGB.h5", "train")            # uint8 NHWC, int64
    ds = tf_dataset("data/set-48x48-RGB.h5", "train", batch_size=64, shuffle=True)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gtsrb_kit import __version__
from gtsrb_kit.classes import NUM_CLASSES
from gtsrb_kit.enhance import MODES, mode_channels
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import atomic_path, remove_stale_temporaries

SCHEMA_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test", "meta")
ENHANCED_FILE_PATTERN = "set-{size}x{size}-{mode}{roi}.h5"
CREATED_BY = "gtsrb-kit"
CHUNK_IMAGES = 256
_JSON_ATTRS = ("class_names", "recipe")


def enhanced_filename(size: int, mode: str, roi: bool = False) -> str:
    """File name of one cooked variant, e.g. ``set-48x48-RGB.h5`` or ``set-24x24-L-LHE-roi.h5``."""
    return ENHANCED_FILE_PATTERN.format(size=int(size), mode=mode, roi="-roi" if roi else "")


# --------------------------------------------------------------------------- writing

# Deflate costs much for little gain on these pixels; only L chunks are deflated, other chunks
# are stored with the gzip filter skipped (HDF5's per-chunk filter mask; every reader honours it).
COMPRESSED_MODES = frozenset({"L"})
GZIP_LEVEL = 1
_FILTER_SKIPPED = 1  # filter mask bit 0: the (only) filter, gzip, was not applied to this chunk
_STR_LIMIT = 1024


def chunk_rows(n: int) -> int:
    """Rows per HDF5 chunk for ``n`` images: at most CHUNK_IMAGES, all chunks (nearly) the same size.

    HDF5 stores an edge chunk whole; with equal chunks its padding is under one row per chunk.
    """
    chunks = max(1, -(-n // CHUNK_IMAGES))
    return max(1, -(-n // chunks))


def encode_chunk(pixels: np.ndarray, mode: str) -> tuple[int, bytes]:
    """One padded chunk as HDF5 stores it and its filter mask (for :meth:`VariantWriter.write_chunk`).

    HDF5's gzip filter stores a plain zlib stream, so chunks can be compressed anywhere (e.g. in
    worker processes) and written as they are.
    """
    raw = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    if mode not in COMPRESSED_MODES:
        return _FILTER_SKIPPED, raw
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    return 0, compressor.compress(raw) + compressor.flush()


@dataclass(frozen=True)
class SplitColumns:
    """What a file stores of one split besides the pixels."""

    y: np.ndarray
    path: list[str]
    track: np.ndarray | None = None


def _small_dataset(handle: h5py.File, name: str, data: np.ndarray) -> None:
    """Labels, tracks and paths: gzip-compressed (paths shrink about tenfold)."""
    if len(data):
        handle.create_dataset(name, data=data, chunks=(min(len(data), 16384),), compression="gzip",
                              compression_opts=4, shuffle=data.dtype.itemsize > 1, track_times=False)
    else:
        handle.create_dataset(name, data=data, track_times=False)


class VariantWriter:
    """Writes one variant file of schema v1 atomically (temporary name, renamed when complete).

    Use as a context manager; pixels arrive chunk by chunk through :meth:`write_chunk`. Files are
    byte-identical for the same content (no timestamps, fixed order).

    Args:
        path: The final file (see :func:`enhanced_filename`).
        size: Image side.
        mode: Enhancement mode.
        columns: :class:`SplitColumns` of every split of :data:`SPLITS`.
        attrs: File attributes after ``schema_version``, ``created_by`` and ``gtsrb_kit_version``,
            in the order given (``recipe`` is stored as canonical JSON).
    """

    def __init__(self, path: str | Path, *, size: int, mode: str, columns: dict[str, SplitColumns],
                 attrs: dict[str, Any]) -> None:
        self.path = Path(path)
        self.shape = (int(size), int(size), mode_channels(mode))
        self.columns = columns
        self.attrs = attrs
        self._stack = contextlib.ExitStack()
        self._datasets: dict[str, h5py.Dataset] = {}

    def __enter__(self) -> VariantWriter:
        remove_stale_temporaries(self.path)  # of killed cooks
        with _write_errors(self.path), self._stack as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            handle = stack.enter_context(h5py.File(tmp, "w", libver="earliest", track_order=False))
            for split in SPLITS:
                self._datasets[split] = self._create_split(handle, split, self.columns[split])
            self._write_attrs(handle)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        with _write_errors(self.path):
            self._stack.__exit__(*exc)

    def _create_split(self, handle: h5py.File, split: str, columns: SplitColumns) -> h5py.Dataset:
        n = len(columns.y)
        shape = (n, *self.shape)
        if n:
            ds = handle.create_dataset(f"x_{split}", shape=shape, dtype=np.uint8, chunks=(chunk_rows(n), *self.shape),
                                       track_times=False, compression="gzip", compression_opts=GZIP_LEVEL)
        else:  # HDF5 chunks cannot be larger than the data
            ds = handle.create_dataset(f"x_{split}", shape=shape, dtype=np.uint8, track_times=False)
        _small_dataset(handle, f"y_{split}", np.asarray(columns.y, dtype=np.int16))
        if columns.track is not None:
            _small_dataset(handle, f"track_{split}", np.asarray(columns.track, dtype=np.int64))
        encoded = [str(p).encode("utf-8") for p in columns.path]
        width = min(max([len(e) for e in encoded] + [1]), _STR_LIMIT)
        _small_dataset(handle, f"path_{split}", np.array(encoded, dtype=f"S{width}"))
        return ds

    def _write_attrs(self, handle: h5py.File) -> None:
        handle.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        handle.attrs["created_by"] = CREATED_BY
        handle.attrs["gtsrb_kit_version"] = __version__
        for name, value in self.attrs.items():
            if name == "recipe":
                value = json.dumps(value, sort_keys=True, separators=(",", ":"))
            elif name == "class_names":
                value = json.dumps(list(value))
            handle.attrs[name] = value

    def write_chunk(self, split: str, chunk: int, encoded: tuple[int, bytes]) -> None:
        """Store chunk number ``chunk`` of a split, as :func:`encode_chunk` returns it."""
        ds = self._datasets[split]
        mask, data = encoded
        with _write_errors(self.path):
            ds.id.write_direct_chunk((chunk * ds.chunks[0], 0, 0, 0), data, filter_mask=mask)


def _no_space(exc: Exception) -> bool:
    """A full disk, also as h5py reports it (HDF5's text in an OSError or RuntimeError, no errno)."""
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "errno = 28," in str(exc) or "No space left" in str(exc)


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """OSErrors (and HDF5's RuntimeErrors) while writing ``path`` as one DataError line naming its folder."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if _no_space(exc):
            raise DataError(f"{path.parent}: no space left on device (writing {path.name}); "
                            "free space or pass another --out") from None
        reason = getattr(exc, "strerror", None) or _first_line(exc)
        raise DataError(f"{path.parent}: cannot write {path.name} ({reason}); "
                        "check permissions and free space or pass another --out") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def stored_recipe(path: str | Path) -> dict | None:
    """The recipe of a complete gtsrb-kit file at ``path``, or None (missing, foreign, corrupt)."""
    if not Path(path).is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("created_by") != CREATED_BY:
                return None
            return _decode_attr("recipe", handle.attrs.get("recipe"))
    except _READ_ERRORS:
        return None


def _decode_attr(name: str, value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, np.ndarray):
        value = [v.decode("utf-8") if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in value]
    elif isinstance(value, np.generic):
        value = value.item()
    if name in _JSON_ATTRS and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


_RECOOK = "re-cook it with 'gtsrb-kit cook --force'"
# What h5py raises on a damaged file: HDF5's errors as OSError/RuntimeError, a missing or
# mistyped object as KeyError/TypeError/ValueError.
_READ_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError)


@contextlib.contextmanager
def _reading(path: str | Path, what: str) -> Iterator[None]:
    """h5py's errors while reading ``what`` of ``path`` as one DataError line."""
    try:
        yield
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: {what} unreadable ({_first_line(exc)}; damaged file?); {_RECOOK}") from None


def _open(path: str | Path) -> h5py.File:
    """Open a cooked file read-only and check that it is a gtsrb-kit file this version can read."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise DataError(f"{path}: is a folder, not a cooked HDF5 file; pass a set-*.h5 file")
        raise DataError(f"{path}: no such file; run 'gtsrb-kit cook' first or check the path")
    try:
        handle = h5py.File(path, "r")
    except _READ_ERRORS:
        raise DataError(f"{path}: not a readable HDF5 file (corrupt or truncated?); {_RECOOK}") from None
    try:
        with _reading(path, "attribute schema_version"):
            version = handle.attrs.get("schema_version")
            creator = _decode_attr("created_by", handle.attrs.get("created_by"))
        if version is None or creator != CREATED_BY:
            raise DataError(
                f"{path}: not a gtsrb-kit dataset (no schema_version/created_by attributes); "
                "cook one with 'gtsrb-kit cook'"
            )
        if not isinstance(version, (int, np.integer)):
            raise DataError(f"{path}: attribute schema_version is not an integer ({version!r}); {_RECOOK}")
        if int(version) > SCHEMA_VERSION:
            raise DataError(
                f"{path}: written by a newer gtsrb-kit (schema {int(version)}, this one reads {SCHEMA_VERSION}); "
                "upgrade gtsrb-kit"
            )
    except BaseException:
        handle.close()
        raise
    return handle


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def _x_dataset(handle: h5py.File, split: str) -> h5py.Dataset:
    _check_split(split)
    name = f"x_{split}"
    with _reading(handle.filename, f"dataset {name}"):
        if name in handle:
            _require(handle, f"y_{split}")
            return handle[name]
        have = [s for s in SPLITS if f"x_{s}" in handle]
    raise DataError(
        f"{handle.filename}: has no split {split!r} (it has: {', '.join(have) or 'none'}); {_RECOOK}"
    )


def _require(handle: h5py.File, name: str) -> None:
    if name not in handle:
        raise DataError(f"{handle.filename}: dataset {name} missing; {_RECOOK}")


def _read_labels(handle: h5py.File, split: str, indices: np.ndarray | None = None) -> np.ndarray:
    name = f"y_{split}"
    with _reading(handle.filename, f"dataset {name}"):
        ds = handle[name]
        y = ds[...] if indices is None else ds[indices]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{handle.filename}: dataset {name} holds {y.dtype} {y.shape}, not class ids; {_RECOOK}")
    y = np.asarray(y, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{handle.filename}: dataset {name} has class ids outside 0..{NUM_CLASSES - 1} "
                        f"({int(y.min())}..{int(y.max())}); {_RECOOK}")
    return y


def _attrs(handle: h5py.File) -> dict[str, Any]:
    with _reading(handle.filename, "attributes"):
        return {name: _decode_attr(name, handle.attrs[name]) for name in handle.attrs}


def _checked_attrs(handle: h5py.File) -> dict[str, Any]:
    """The file's attributes, with the types :func:`read_info` promises (else a DataError)."""
    info = _attrs(handle)
    expected = {"size": int, "mode": str, "class_names": list, "recipe": dict}
    for name, kind in expected.items():
        value = info.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{handle.filename}: attribute {name} is {type(value).__name__} {value!r:.40}, "
                            f"not {kind.__name__}; {_RECOOK}")
    if info["mode"] not in MODES or info["size"] < 1 or not all(isinstance(n, str) for n in info["class_names"]):
        raise DataError(f"{handle.filename}: attributes size/mode/class_names hold unusable values "
                        f"({info['size']!r}, {info['mode']!r}); {_RECOOK}")
    return info


def _split_info(handle: h5py.File, split: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """One split's summary, after reading every dataset of it whole (finds damaged chunks)."""
    path, ds = handle.filename, _x_dataset(handle, split)
    n = int(ds.shape[0]) if ds.ndim else 0
    if ds.dtype != np.uint8 or tuple(ds.shape[1:]) != shape:
        raise DataError(f"{path}: dataset x_{split} holds {ds.dtype} {ds.shape}, expected uint8 (N, "
                        f"{', '.join(map(str, shape))}); {_RECOOK}")
    with _reading(path, f"dataset x_{split}"):
        step = ds.chunks[0] if ds.chunks else max(n, 1)
        for start in range(0, n, step):
            ds[start:start + step]
    y = _read_labels(handle, split)
    info = {"count": n, "shape": tuple(int(d) for d in ds.shape), "dtype": str(ds.dtype),
            "classes": int(len(np.unique(y))), "compression": ds.compression}
    columns = [f"path_{split}"] + ([f"track_{split}"] if split in ("train", "val") else [])
    for name in columns:
        _require(handle, name)
        with _reading(path, f"dataset {name}"):
            values = handle[name][...]
        if values.shape != (n,):
            raise DataError(f"{path}: dataset {name} has shape {values.shape}, expected ({n},) like x_{split}; {_RECOOK}")
        if name.startswith("track_"):
            info["tracks"] = int(len(np.unique(values)))
    if len(y) != n:
        raise DataError(f"{path}: dataset y_{split} has {len(y)} labels for {n} images; {_RECOOK}")
    return info


def read_info(path: str | Path) -> dict[str, Any]:
    """Attributes and per-split contents of a cooked file, after checking all of it.

    Every dataset is read whole (a damaged chunk is found here), and shapes, dtypes, label range
    and attribute types are checked.

    Returns:
        A dict with every file attribute (``size``, ``mode``, ``roi``, ``scale``, ``seed``,
        ``class_names`` (list), ``recipe`` (dict) ...), plus ``path``, ``bytes`` (file size) and
        ``splits``: ``{split: {"count", "shape", "dtype", "classes"}}`` for each split.

    Raises:
        DataError: the file is missing, corrupt, foreign, from a newer gtsrb-kit, or any of its
            datasets or attributes is missing or malformed (the message names it).
    """
    path = Path(path)
    with _open(path) as handle:
        info = _checked_attrs(handle)
        shape = (info["size"], info["size"], mode_channels(info["mode"]))
        info["splits"] = {split: _split_info(handle, split, shape) for split in SPLITS}
    info["path"] = str(path)
    info["bytes"] = path.stat().st_size
    return info


def class_names(path: str | Path) -> list[str]:
    """The class names stored in a cooked file (index = class id)."""
    with _open(path) as handle:
        names = _attrs(handle).get("class_names")
    if not isinstance(names, list):
        raise DataError(f"{path}: attribute class_names missing or not a JSON list; {_RECOOK}")
    return [str(n) for n in names]


def _normalize(x: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def _as_indices(indices: Sequence[int] | np.ndarray, count: int, path: Path, split: str) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < -count or idx.max() >= count):
        raise ConfigError(f"{path}: index out of range for split {split!r} with {count} images")
    return np.where(idx < 0, idx + count, idx)


def load_split(
    path: str | Path,
    split: str,
    *,
    normalize: bool = False,
    indices: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a cooked file into memory.

    Args:
        path: A ``set-*.h5`` file written by :func:`gtsrb_kit.cook.cook_dataset`.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"meta"``.
        normalize: Return ``float32`` pixels in [0, 1] instead of ``uint8``.
        indices: Optional image indices (any order, repeats allowed) to load only those.

    Returns:
        ``(x, y)``: pixels ``(N, H, W, C)`` (``uint8``, or ``float32`` when ``normalize``) and
        ``int64`` labels ``(N,)``.

    Raises:
        DataError: the file is missing, corrupt, foreign, newer, or lacks the split.
        ConfigError: unknown split name or out-of-range indices.
    """
    path = Path(path)
    with _open(path) as handle:
        ds = _x_dataset(handle, split)
        if indices is None:
            with _reading(path, f"dataset x_{split}"):
                x = ds[...]
            y = _read_labels(handle, split)
        else:
            idx = _as_indices(indices, ds.shape[0], path, split)
            # h5py wants increasing, unique indices: read those, then reorder.
            unique, inverse = np.unique(idx, return_inverse=True)
            with _reading(path, f"dataset x_{split}"):
                x = ds[unique][inverse] if unique.size else np.empty((0, *ds.shape[1:]), ds.dtype)
            y = _read_labels(handle, split, unique)[inverse] if unique.size else np.empty(0, np.int64)
    if len(x) != len(y):
        raise DataError(f"{path}: dataset y_{split} has {len(y)} labels for {len(x)} images; {_RECOOK}")
    return (_normalize(x) if normalize else x), y


class EnhancedFile:
    """A cooked file opened for lazy access (use as a context manager).

    ``ef.x(split)`` is the h5py dataset (slice it to read), ``ef.y(split)`` the labels,
    ``ef.info`` the attributes. Example::

        with open_enhanced("data/set-24x24-L.h5") as ef:
            first = ef.x("train")[:100]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle = _open(self.path)
        self.info = _attrs(self._handle)

    def x(self, split: str) -> h5py.Dataset:
        """The pixel dataset of ``split`` (lazy; slicing reads from disk)."""
        return _x_dataset(self._handle, split)

    def y(self, split: str) -> np.ndarray:
        """The ``int64`` labels of ``split``."""
        _x_dataset(self._handle, split)
        return _read_labels(self._handle, split)

    def __len__(self) -> int:
        return sum(self._handle[f"x_{s}"].shape[0] for s in SPLITS if f"x_{s}" in self._handle)

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> EnhancedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_enhanced(path: str | Path) -> EnhancedFile:
    """Open a cooked file for lazy access; see :class:`EnhancedFile`."""
    return EnhancedFile(path)


def tf_dataset(
    path: str | Path,
    split: str,
    *,
    batch_size: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = False,
    prefetch: bool = True,
    normalize: bool = True,
    drop_remainder: bool = False,
    augmenter: Any = None,
    num_classes: int | None = None,
    repeat: bool = False,
    initial_epoch: int = 0,
    class_balance: float = 0.0,
) -> Any:
    """A ``tf.data.Dataset`` of ``(images, labels)`` batches of one split: the pipeline training uses.

    The split is loaded into memory (cooked files are small). With ``shuffle``, epoch ``e`` is the
    permutation drawn from ``(seed, e)``; with an ``augmenter`` (see :mod:`gtsrb_kit.augment`),
    batch ``k`` of the run (counted over epochs) gets the augmentation draws of ``(seed, k)``. So
    the same seed gives the same batches, and a run resumed at ``initial_epoch`` sees the same
    batches as an uninterrupted one. Without ``repeat``, each iteration over the dataset is the
    next epoch.

    Args:
        path: A ``set-*.h5`` file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"meta"``.
        batch_size: Images per batch.
        shuffle: Shuffle every epoch (seeded).
        seed: Seed of the shuffling.
        cache: Kept for compatibility: the split is always held in memory.
        prefetch: Prefetch batches (``tf.data.AUTOTUNE``).
        normalize: ``float32`` pixels in [0, 1]; else ``uint8``.
        drop_remainder: Drop the last incomplete batch.
        augmenter: An :class:`~gtsrb_kit.augment.Augmenter` applied to every batch.
        num_classes: Give one-hot ``float32`` labels of this many classes instead of ``int64`` ids.
        repeat: Endless: epochs follow each other in one iteration.
        initial_epoch: The first epoch's number (for resuming).
        class_balance: With ``shuffle``, draw each epoch's images with replacement, rare classes
            more often (0: the split's frequencies, 1: every class equally often; :func:`sampling_cdf`).

    Returns:
        A ``tf.data.Dataset`` yielding ``(x, y)``: ``x`` ``(B, H, W, C)`` float32 (or uint8),
        ``y`` ``(B,)`` int64 (or ``(B, num_classes)`` float32).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    x, y = load_split(path, split)
    return array_dataset(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, prefetch=prefetch,
                         normalize=normalize, drop_remainder=drop_remainder, augmenter=augmenter,
                         num_classes=num_classes, repeat=repeat, initial_epoch=initial_epoch,
                         class_balance=class_balance)


def check_class_balance(balance: float) -> float:
    """``balance`` as a float, or :class:`ConfigError` unless it lies in [0, 1] (see :func:`sampling_cdf`)."""
    value = float(balance)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"class balance {balance}: not between 0 and 1; use 0 (the split's class frequencies) "
                          "to 1 (every class equally often)")
    return value


def sampling_cdf(labels: np.ndarray, balance: float) -> np.ndarray | None:
    """The cumulative sampling distribution of class-balanced epochs, or None for plain shuffles (``balance`` 0).

    An image of a class with ``c`` images is drawn with probability proportional to ``c ** -balance``:
    0 keeps the split's class frequencies, 1 draws every class equally often, 0.5 between the two.
    """
    balance = check_class_balance(balance)
    if balance == 0.0:
        return None
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = counts[inverse].astype(np.float64) ** -balance
    return np.cumsum(weights) / weights.sum()


def epoch_order(n: int, seed: int, epoch: Any, cdf: Any = None) -> Any:
    """The order of epoch ``epoch`` of a split of ``n`` images, drawn from ``(seed, epoch)``.

    Without ``cdf`` a permutation (every image once); with a :func:`sampling_cdf` of the split, ``n``
    images drawn with replacement from that distribution.
    """
    import tensorflow as tf

    keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]),
                                       alg="philox", dtype=tf.float64 if cdf is not None else tf.float32)
    if cdf is None:
        return tf.argsort(keys)
    return tf.minimum(tf.searchsorted(cdf, keys, side="right", out_type=tf.int32), n - 1)


def _batch_out(xb: Any, yb: Any, normalize: bool, num_classes: int | None) -> tuple[Any, Any]:
    """A batch as training takes it: ``float32`` pixels in [0, 1] (or ``uint8``), one-hot or ``int64`` labels."""
    import tensorflow as tf

    xb = tf.cast(xb, tf.float32) / 255.0 if normalize else xb
    return xb, (tf.one_hot(yb, num_classes) if num_classes else tf.cast(yb, tf.int64))


def array_dataset(x: np.ndarray, y: np.ndarray | None = None, *, batch_size: int = 64, shuffle: bool = False,
                  seed: int = 0, prefetch: bool = True, normalize: bool = True, drop_remainder: bool = False,
                  augmenter: Any = None, num_classes: int | None = None, repeat: bool = False,
                  initial_epoch: int = 0, class_balance: float = 0.0) -> Any:
    """:func:`tf_dataset` over images already in memory (``y=None``: labels are all 0).

    ``class_balance`` (with ``shuffle``): epochs drawn with replacement, see :func:`sampling_cdf`.
    """
    import tensorflow as tf  # lazy: TensorFlow is heavy

    y = np.zeros(len(x), np.int32) if y is None else y
    cdf = sampling_cdf(y, class_balance)
    if cdf is not None and not shuffle:
        raise ConfigError("class-balanced epochs are drawn at random; pass shuffle=True or class_balance=0")
    cdf = tf.constant(cdf) if cdf is not None else None

    n = int(len(x))
    steps = n // batch_size if drop_remainder else -(-n // batch_size)
    images, labels = tf.constant(x), tf.constant(np.asarray(y, dtype=np.int32))

    def epoch_batches(epoch: Any) -> Any:
        order = epoch_order(n, seed, epoch, cdf) if shuffle else tf.range(n)
        counters = tf.data.Dataset.range(steps).map(lambda b: epoch * steps + b)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
        return tf.data.Dataset.zip((counters, batches))

    if repeat:
        epochs = tf.data.Dataset.range(initial_epoch, 2**40)
    else:  # one epoch per iteration, numbered on from initial_epoch
        counter = iter(range(initial_epoch, 2**62))
        epochs = tf.data.Dataset.from_generator(lambda: iter([next(counter)]),
                                                output_signature=tf.TensorSpec((), tf.int64))
    ds = epochs.flat_map(epoch_batches).map(lambda k, idx: (k, tf.gather(images, idx), tf.gather(labels, idx)),
                                            num_parallel_calls=tf.data.AUTOTUNE)
    ds = augmenter.map_dataset(ds) if augmenter is not None else ds.map(lambda k, xb, yb: (xb, yb))

    ds = ds.map(lambda xb, yb: _batch_out(xb, yb, normalize, num_classes), num_parallel_calls=tf.data.AUTOTUNE)
    if not repeat:  # the generator hides the length from Keras
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


class DeviceBatches:
    """Training batches made in-graph from a copy of the split held on the device (no host work per step).

    ``batches(k)`` inside a ``tf.function`` (the training step) gives batch ``k`` of the run, equal to
    batch ``k`` of ``array_dataset(x, y, shuffle=True, seed=seed, augmenter=augmenter,
    num_classes=num_classes, repeat=True, drop_remainder=True, class_balance=class_balance)``: only
    full batches, so an epoch is ``steps = len(x) // batch_size`` batches. ``batches(k, replica)`` is replica ``replica``'s share
    of it when ``replicas`` devices split each batch. Create it inside the distribution strategy's
    scope: the images become a variable copied to each device once.

    Args:
        x, y: The split (``uint8`` NHWC, class ids).
        batch_size: Images per (global) batch; a multiple of ``replicas``.
        seed: Seed of the shuffles and of the augmentation draws.
        augmenter: An :class:`~gtsrb_kit.augment.Augmenter` on the in-graph (``tf``) path, or None.
        num_classes: One-hot ``float32`` labels of this many classes (else ``int64`` ids).
        replicas: Devices that share each batch.
        class_balance: Draw epochs with replacement towards equal class frequencies (:func:`sampling_cdf`).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int = 0, augmenter: Any = None,
                 num_classes: int | None = None, replicas: int = 1, class_balance: float = 0.0) -> None:
        import tensorflow as tf

        steps = self.steps_for(len(x), batch_size)
        if batch_size % replicas:
            raise ConfigError(f"batch size {batch_size} does not split over {replicas} devices; use a multiple of "
                              f"{replicas}")
        self.check_augmenter(augmenter)
        self.n, self.batch_size, self.seed, self.replicas = len(x), int(batch_size), int(seed), int(replicas)
        self.steps, self.augmenter, self.num_classes = steps, augmenter, num_classes
        self.images = tf.Variable(np.asarray(x, np.uint8), trainable=False, name="device_images")
        self.labels = tf.Variable(np.asarray(y, np.int32), trainable=False, name="device_labels")
        cdf = sampling_cdf(y, class_balance)
        self.cdf = tf.constant(cdf) if cdf is not None else None

    @staticmethod
    def steps_for(count: int, batch_size: int) -> int:
        """Batches per epoch of a split of ``count`` images: full batches only."""
        if not 1 <= batch_size <= count:
            raise ConfigError(f"batch size {batch_size}: the device pipeline makes full batches only and the "
                              f"training split has {count} images; choose a batch size of 1 to {count}")
        return count // batch_size

    @staticmethod
    def can_augment(augmenter: Any) -> bool:
        """Whether ``augmenter`` runs in-graph (a preset; an albumentations pipeline runs on the host)."""
        return augmenter is None or augmenter.is_identity or augmenter.path == "tf"

    @classmethod
    def check_augmenter(cls, augmenter: Any) -> None:
        """Raise :class:`ConfigError` unless :meth:`can_augment`."""
        if not cls.can_augment(augmenter):
            raise ConfigError("the device pipeline augments in-graph and cannot run an albumentations pipeline; "
                              "use a preset or --pipeline host")

    def __call__(self, k: Any, replica: Any = 0) -> tuple[Any, Any]:
        import tensorflow as tf

        k = tf.cast(tf.reshape(k, []), tf.int64)
        share = self.batch_size // self.replicas
        start = tf.cast(replica, tf.int64) * share
        order = epoch_order(self.n, self.seed, k // self.steps, self.cdf)
        idx = tf.slice(order, tf.reshape(tf.cast((k % self.steps) * self.batch_size + start, tf.int32), [1]), [share])
        xb, yb = tf.gather(self.images, idx), tf.gather(self.labels, idx)
        if self.augmenter is not None:
            xb = self.augmenter.augment_tensor(xb, k, rows=(start, self.batch_size))
        return _batch_out(xb, yb, True, self.num_classes)

    def counters(self, initial_epoch: int = 0) -> Any:
        """The endless ``tf.data`` dataset of batch numbers from ``initial_epoch`` on, one per replica.

        Each element is ``replicas`` copies of ``k``, so that a distribution strategy hands every
        replica the number of the batch it shares.
        """
        import tensorflow as tf

        first = initial_epoch * self.steps * self.replicas
        return tf.data.Dataset.range(first, 2**50).batch(self.replicas).map(lambda v: v // self.replicas)


class SplitSource:
    """Random access to one split of a cooked file: ``len(source)`` and ``source[i] -> (image, label)``.

    The file is opened lazily in each process that reads (h5py handles do not survive a fork), so
    the same object works unchanged as a PyTorch map-style ``Dataset`` (``DataLoader(source,
    num_workers=4)``), a Grain data source, or inside a Keras ``PyDataset``. Images are ``uint8``
    ``(H, W, C)`` (``float32`` in [0, 1] with ``normalize``), labels ``int``.
    """

    def __init__(self, path: str | Path, split: str = "train", *, normalize: bool = False) -> None:
        self.path = Path(path)
        self.split = split
        self.normalize = normalize
        with _open(self.path) as handle:
            self.shape = tuple(int(d) for d in _x_dataset(handle, split).shape)
            self.labels = _read_labels(handle, split)
        self._handle: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.path}: index {index} out of range for split {self.split!r} with {len(self)} images")
        with _reading(self.path, f"dataset x_{self.split}"):
            image = self._dataset()[i % len(self)]
        return (_normalize(image) if self.normalize else image), int(self.labels[i])

    def _dataset(self) -> h5py.Dataset:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = _open(self.path), os.getpid()
        return self._handle[f"x_{self.split}"]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def close(self) -> None:
        """Close this process's file handle (it reopens on the next read)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
