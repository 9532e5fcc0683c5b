"""The enhanced-dataset HDF5 store: file schema, names and loaders.

One file holds one variant (an image size and an enhancement mode). Schema version 1:

* datasets ``x_train, x_val, x_test, x_meta``: ``uint8`` pixels ``(N, H, W, C)`` (``C`` = 3 for
  RGB modes, 1 for L modes), chunked (256 images per chunk) and gzip-compressed;
* ``y_train, y_val, y_test, y_meta``: ``int16`` class ids;
* ``track_train, track_val``: catalog ``track_id`` of every training / validation image;
* ``path_train, path_val, path_test, path_meta``: the source image's ``rel_path`` (so a user can
  re-split or trace an image back to its file);
* file attributes: ``schema_version``, ``gtsrb_kit_version``, ``created_by``, ``size``, ``mode``,
  ``roi``, ``scale``, ``seed``, ``val_fraction``, ``class_names`` (JSON list), ``source_fingerprint``,
  ``recipe`` (JSON of every parameter; used to skip files that are already up to date) and a few
  counts (``dropped_duplicate_tracks``, ``skipped_images``).

Loaders read lazily through h5py, so files larger than memory work::

    from gtsrb_kit.store import load_split, tf_dataset
    x, y = load_split("data/set-48x48-RGB.h5", "train")            # uint8 NHWC, int64
    ds = tf_dataset("data/set-48x48-RGB.h5", "train", batch_size=64, shuffle=True)
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gtsrb_kit import __version__
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
        self.shape = (int(size), int(size), 3 if mode.startswith("RGB") else 1)
        self.columns = columns
        self.attrs = attrs
        self._stack = contextlib.ExitStack()
        self._datasets: dict[str, h5py.Dataset] = {}

    def __enter__(self) -> VariantWriter:
        remove_stale_temporaries(self.path)  # of killed cooks
        with self._stack as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            handle = stack.enter_context(h5py.File(tmp, "w", libver="earliest", track_order=False))
            for split in SPLITS:
                self._datasets[split] = self._create_split(handle, split, self.columns[split])
            self._write_attrs(handle)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: Any) -> None:
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
        ds.id.write_direct_chunk((chunk * ds.chunks[0], 0, 0, 0), data, filter_mask=mask)


def stored_recipe(path: str | Path) -> dict | None:
    """The recipe of a complete gtsrb-kit file at ``path``, or None (missing, foreign, corrupt)."""
    if not Path(path).is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("created_by") != CREATED_BY:
                return None
            return _decode_attr("recipe", handle.attrs.get("recipe"))
    except (OSError, KeyError, ValueError):
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


def _open(path: str | Path) -> h5py.File:
    """Open a cooked file read-only and check that it is a gtsrb-kit file this version can read."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise DataError(f"{path}: is a folder, not a cooked HDF5 file; pass a set-*.h5 file")
        raise DataError(f"{path}: no such file; run 'gtsrb-kit cook' first or check the path")
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise DataError(f"{path}: not a readable HDF5 file (corrupt or truncated?); re-cook it with 'gtsrb-kit cook --force'") from None
    try:
        version = handle.attrs.get("schema_version")
        if version is None or _decode_attr("created_by", handle.attrs.get("created_by")) != CREATED_BY:
            raise DataError(
                f"{path}: not a gtsrb-kit dataset (no schema_version/created_by attributes); "
                "cook one with 'gtsrb-kit cook'"
            )
        version = int(version)
        if version > SCHEMA_VERSION:
            raise DataError(
                f"{path}: written by a newer gtsrb-kit (schema {version}, this one reads {SCHEMA_VERSION}); "
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
    if name not in handle or f"y_{split}" not in handle:
        have = [s for s in SPLITS if f"x_{s}" in handle]
        raise DataError(
            f"{handle.filename}: has no split {split!r} (it has: {', '.join(have) or 'none'}); "
            "re-cook it with 'gtsrb-kit cook --force'"
        )
    return handle[name]


def _read_labels(handle: h5py.File, split: str, indices: np.ndarray | None = None) -> np.ndarray:
    ds = handle[f"y_{split}"]
    y = ds[...] if indices is None else ds[indices]
    return np.asarray(y, dtype=np.int64)


def _attrs(handle: h5py.File) -> dict[str, Any]:
    return {name: _decode_attr(name, handle.attrs[name]) for name in handle.attrs}


def read_info(path: str | Path) -> dict[str, Any]:
    """Attributes and per-split contents of a cooked file.

    Returns:
        A dict with every file attribute (``size``, ``mode``, ``roi``, ``scale``, ``seed``,
        ``class_names`` (list), ``recipe`` (dict) ...), plus ``path``, ``bytes`` (file size) and
        ``splits``: ``{split: {"count", "shape", "dtype", "classes"}}`` for each split present.

    Raises:
        DataError: the file is missing, corrupt, foreign or from a newer gtsrb-kit.
    """
    path = Path(path)
    with _open(path) as handle:
        info = _attrs(handle)
        splits: dict[str, dict[str, Any]] = {}
        for split in SPLITS:
            if f"x_{split}" not in handle:
                continue
            ds = handle[f"x_{split}"]
            y = _read_labels(handle, split)
            splits[split] = {
                "count": int(ds.shape[0]),
                "shape": tuple(int(d) for d in ds.shape),
                "dtype": str(ds.dtype),
                "classes": int(len(np.unique(y))),
                "compression": ds.compression,
            }
            if f"track_{split}" in handle:
                splits[split]["tracks"] = int(len(np.unique(handle[f"track_{split}"][...])))
        info["splits"] = splits
    info["path"] = str(path)
    info["bytes"] = path.stat().st_size
    return info


def class_names(path: str | Path) -> list[str]:
    """The class names stored in a cooked file (index = class id)."""
    with _open(path) as handle:
        names = _decode_attr("class_names", handle.attrs.get("class_names"))
    if not isinstance(names, list):
        raise DataError(f"{path}: class_names attribute missing or malformed; re-cook it with 'gtsrb-kit cook --force'")
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
            x = ds[...]
            y = _read_labels(handle, split)
        else:
            idx = _as_indices(indices, ds.shape[0], path, split)
            # h5py wants increasing, unique indices: read those, then reorder.
            unique, inverse = np.unique(idx, return_inverse=True)
            x = ds[unique][inverse] if unique.size else np.empty((0, *ds.shape[1:]), ds.dtype)
            y = _read_labels(handle, split, unique)[inverse] if unique.size else np.empty(0, np.int64)
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


def _batches(
    path: Path,
    split: str,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    normalize: bool,
    drop_remainder: bool,
    cached: tuple[np.ndarray, np.ndarray] | None,
    window_blocks: int = 8,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield numpy batches of one epoch.

    Without a cache, images are read block by block (one HDF5 chunk per block). Shuffling then
    permutes the block order and mixes ``window_blocks`` blocks at a time, so memory stays bounded
    whatever the file size; with a cache the whole split is permuted.
    """
    rng = np.random.default_rng([seed, epoch]) if shuffle else None

    def emit(x: np.ndarray, y: np.ndarray, carry: list) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if carry:
            x = np.concatenate([carry[0], x])
            y = np.concatenate([carry[1], y])
            carry.clear()
        n_full = len(x) // batch_size * batch_size
        for start in range(0, n_full, batch_size):
            xb = x[start:start + batch_size]
            yield (_normalize(xb) if normalize else xb), y[start:start + batch_size]
        if n_full < len(x):
            carry.extend([x[n_full:], y[n_full:]])

    carry: list = []
    if cached is not None:
        x_all, y_all = cached
        order = rng.permutation(len(x_all)) if rng is not None else None
        if order is None:
            yield from emit(x_all, y_all, carry)
        else:
            for start in range(0, len(order), batch_size * 64):
                part = order[start:start + batch_size * 64]
                yield from emit(x_all[part], y_all[part], carry)
    else:
        with _open(path) as handle:
            ds = _x_dataset(handle, split)
            labels = _read_labels(handle, split)
            n = ds.shape[0]
            block = ds.chunks[0] if ds.chunks else CHUNK_IMAGES
            starts = np.arange(0, n, block)
            if rng is not None:
                starts = rng.permutation(starts)
            for w in range(0, len(starts), window_blocks):
                group = starts[w:w + window_blocks]
                xs = [ds[s:s + block] for s in group]
                ys = [labels[s:s + block] for s in group]
                x = np.concatenate(xs) if len(xs) > 1 else xs[0]
                y = np.concatenate(ys) if len(ys) > 1 else ys[0]
                if rng is not None:
                    perm = rng.permutation(len(x))
                    x, y = x[perm], y[perm]
                yield from emit(x, y, carry)
    if carry and not drop_remainder:
        x, y = carry
        yield (_normalize(x) if normalize else x), y


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
):
    """A ``tf.data.Dataset`` of ``(images, labels)`` batches read lazily from a cooked file.

    Each iteration over the dataset is one epoch; with ``shuffle`` every epoch has its own order,
    and the sequence of orders depends only on ``seed``. Without ``cache`` the file is read one
    HDF5 chunk at a time (files larger than memory work; shuffling mixes 8 chunks at a time);
    with ``cache`` the split is loaded into memory once and fully shuffled.

    Args:
        path: A ``set-*.h5`` file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"meta"``.
        batch_size: Images per batch.
        shuffle: Shuffle every epoch (seeded).
        seed: Seed of the shuffling.
        cache: Load the split into memory first.
        prefetch: Prefetch batches (``tf.data.AUTOTUNE``).
        normalize: ``float32`` pixels in [0, 1]; else ``uint8``.
        drop_remainder: Drop the last incomplete batch.

    Returns:
        A ``tf.data.Dataset`` yielding ``(x, y)``: ``x`` ``(B, H, W, C)`` float32 (or uint8),
        ``y`` ``(B,)`` int64.
    """
    import tensorflow as tf  # lazy: TensorFlow is heavy

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    path = Path(path)
    with _open(path) as handle:
        ds = _x_dataset(handle, split)
        shape = tuple(int(d) for d in ds.shape[1:])
    cached = load_split(path, split) if cache else None
    epochs = iter(range(1 << 62))

    def generator() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield from _batches(
            path, split, batch_size=batch_size, shuffle=shuffle, seed=seed, epoch=next(epochs),
            normalize=normalize, drop_remainder=drop_remainder, cached=cached,
        )

    batch_dim = batch_size if drop_remainder else None
    signature = (
        tf.TensorSpec((batch_dim, *shape), tf.float32 if normalize else tf.uint8),
        tf.TensorSpec((batch_dim,), tf.int64),
    )
    dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset

