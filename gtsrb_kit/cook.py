"""Cook enhanced datasets: one HDF5 file per (size, mode) variant, written in parallel.

How it runs:

1. read the catalog (:func:`gtsrb_kit.catalog.read_catalog`), plan the track-wise split
   (:mod:`gtsrb_kit.split`) and hash every image used (in the workers): the hashes and the
   catalog rows make the source fingerprint of each variant's recipe; files already complete
   with the same recipe are skipped (``force`` rebuilds them);
2. unless ``keep_test_duplicates``, drop training tracks holding an image byte-identical to a
   selected test image (same hashes; real GTSRB has eight such frames);
3. cut every split into chunks of :data:`~gtsrb_kit.store.CHUNK_IMAGES` images; worker processes
   decode each image once, produce every variant of the chunk (:mod:`gtsrb_kit.enhance`, with
   its compiled kernels where built) and compress it; the main process writes the compressed
   chunks straight into the HDF5 files, in order, with a bounded number of chunks in flight, so
   memory does not grow with the dataset;
4. each file is written under a temporary name and renamed when complete.

The output is byte-identical for the same inputs, arguments and installation (no timestamps,
fixed order; the recipe records which resize implementation ran, see
:func:`gtsrb_kit.enhance.resize_implementation`).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from gtsrb_kit.catalog import decode_image_bytes, read_catalog
from gtsrb_kit.classes import CLASS_NAMES
from gtsrb_kit.enhance import (
    DEFAULT_MODES,
    DEFAULT_SIZES,
    MODES,
    check_mode,
    check_size,
    keep_freed_memory,
    mode_channels,
    rank_equalize,
    resize_implementation,
    resize_planes,
    set_single_thread_blas,
    single_thread_blas,
    store_modes,
)
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import atomic_path, remove_stale_temporaries
from gtsrb_kit.progress import ProgressCallback, report
from gtsrb_kit.split import SplitPlan, check_fraction, plan_split
from gtsrb_kit.store import CHUNK_IMAGES, CREATED_BY, SCHEMA_VERSION, SPLITS, enhanced_filename

__all__ = ["MODES", "DEFAULT_MODES", "DEFAULT_SIZES", "CookResult", "cook_dataset", "COOK_ALGORITHM"]


def _package_version() -> str:
    try:
        from gtsrb_kit import __version__

        return str(__version__)
    except ImportError:  # e.g. a stale editable install that sees gtsrb_kit as a namespace package
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("gtsrb-kit")
        except PackageNotFoundError:
            return "unknown"


COOK_ALGORITHM = 2  # bump when cooked pixels change for the same recipe (2: matrix resize)
GZIP_LEVEL = 1
# Every pixel dataset has a gzip filter, but deflate is the costliest step per byte here (this
# zlib does 20-65 MB/s on these images) for little gain: RGB and L shrink by 1.12-1.2x,
# equalized modes (flat histograms) by 1.0-1.08x. Only L chunks are deflated (run-length
# strategy: the fastest, about 1.12-1.21x), which keeps the files under 1/8 of the course's
# float64 arrays; other chunks are stored with the filter skipped (HDF5's per-chunk filter mask;
# every reader honours it). Chunks are sized so that a split's chunks are (nearly) equal
# (:func:`_chunk_rows`): the last one is padded by fewer rows than there are chunks.
COMPRESSED_MODES = frozenset({"L"})
_IN_FLIGHT_PER_WORKER = 4
_GROUP_PIXELS = 16 * 48 * 48  # pixels per group of images enhanced together (16 at 48 px, 64 at 24 px)
_GROUP_MAX = 64


@dataclass(frozen=True)
class CookResult:
    """What happened to one variant file."""

    path: Path
    variant: str
    size: int
    mode: str
    roi: bool
    counts: dict[str, int]
    bytes: int
    skipped: bool
    dropped_duplicate_tracks: int = 0
    skipped_images: int = 0
    problems: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _Variant:
    size: int
    mode: str
    roi: bool

    @property
    def name(self) -> str:
        return enhanced_filename(self.size, self.mode, self.roi)[: -len(".h5")]

    @property
    def channels(self) -> int:
        return mode_channels(self.mode)


# --------------------------------------------------------------------------- worker side

@dataclass(frozen=True)
class _Task:
    """One chunk of one split: the images to decode and the variants to produce."""

    split: str
    chunk: int
    rows: int                        # images of this chunk (the last one may be partial)
    chunk_rows: int                  # rows of the HDF5 chunk (the buffer is padded to this)
    paths: tuple[str, ...]
    rois: tuple[tuple[int, int, int, int] | None, ...]
    sizes: tuple[tuple[int, int] | None, ...]   # expected (width, height), None for meta
    variants: tuple[_Variant, ...]
    slot: int | None = None          # byte offset of this task's slot in the shared buffer, if any


@dataclass(frozen=True)
class _Slots:
    """The shared chunk buffer of a pool: ``count`` slots of ``size`` bytes, mapped at ``address``."""

    buffer: Any
    size: int
    count: int
    address: int


# Chunks travel from the workers to the writing process through one anonymous shared mapping,
# created before the workers are forked (they inherit it with this variable): a worker writes a
# chunk into its task's slot and returns only offsets, and the writer hands HDF5 a view of the
# slot. Through the result pipe, every chunk was copied four more times (about a tenth of the
# cook's CPU).
_shared_slots: _Slots | None = None
_SHARED_LIMIT = 512 << 20


_READ_BLOCK = 1 << 20


def _read_file(path: str) -> bytes:
    """A file's bytes with plain ``os`` calls (half the cost of ``open().read()`` for small files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = [os.read(fd, _READ_BLOCK)]
        while len(parts[-1]) == _READ_BLOCK:
            parts.append(os.read(fd, _READ_BLOCK))
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# A binary 8-bit PPM (GTSRB's format): "P6", width, height, maxval 255, separated by whitespace
# or comment lines, then one whitespace byte and the RGB pixels.
_PPM_HEADER = re.compile(rb"P6(?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(255)\s")


def _ppm_pixels(data: bytes) -> np.ndarray | None:
    """The RGB pixels of a binary 8-bit PPM, without copying (None for anything else)."""
    header = _PPM_HEADER.match(data)
    if header is None:
        return None
    width, height = int(header[1]), int(header[2])
    count = width * height * 3
    if not width or not height or len(data) - header.end() < count:
        return None  # truncated: the generic decoder says what is wrong
    return np.frombuffer(data, np.uint8, count=count, offset=header.end()).reshape(height, width, 3)


def _decode(path: str) -> np.ndarray:
    data = _read_file(path)
    pixels = _ppm_pixels(data)
    if pixels is not None:
        return pixels
    import cv2  # only here: binary PPMs (all of GTSRB) need no OpenCV in the workers

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3:
        return decode_image_bytes(data, path)  # Pillow reads what OpenCV does not, or says why not
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # contiguous: reductions on a reversed view are slow


def _region_bytes(variant: _Variant, rows: int) -> int:
    """Bytes of one variant's chunk in a slot: the pixels, plus zlib's worst-case growth if deflated."""
    raw = rows * variant.size * variant.size * variant.channels
    return raw + (raw // 100 + 1024 if variant.mode in COMPRESSED_MODES else 0)  # > zlib's compressBound


def _slot_bytes(variants: Sequence[_Variant]) -> int:
    """Bytes of one task's slot: every variant's chunk of the largest chunk size."""
    return sum(_region_bytes(v, CHUNK_IMAGES) for v in variants)


def _chunk_arrays(task: _Task) -> dict[_Variant, np.ndarray]:
    """Zeroed destination arrays of a task's chunks: views of its slot when there is one."""
    shared = _shared_slots.buffer if task.slot is not None and _shared_slots is not None else None
    arrays: dict[_Variant, np.ndarray] = {}
    offset = task.slot or 0
    for v in task.variants:
        shape = (task.chunk_rows, v.size, v.size, v.channels)  # padded: HDF5 stores edge chunks whole
        if shared is None:
            arrays[v] = np.zeros(shape, np.uint8)
            continue
        arrays[v] = np.frombuffer(shared, np.uint8, count=int(np.prod(shape)), offset=offset).reshape(shape)
        arrays[v][task.rows:] = 0
        offset += _region_bytes(v, task.chunk_rows)
    return arrays


def _filter_chunks(arrays: dict[_Variant, np.ndarray], task: _Task) -> dict[str, tuple[int, Any]]:
    """Chunks as HDF5 stores them, with their filter masks (for ``write_direct_chunk``).

    HDF5's gzip filter stores a plain zlib stream, so the worker compresses with :mod:`zlib`
    and the main process only copies bytes. Chunks written into a shared slot are returned as
    ``(mask, (offset, size))``; others as ``(mask, bytes)``.
    """
    slots = _shared_slots if task.slot is not None else None
    out: dict[str, tuple[int, Any]] = {}
    for v, pixels in arrays.items():
        if slots is None:
            raw = np.ascontiguousarray(pixels).tobytes()
            out[v.name] = (0, _deflate(raw)) if v.mode in COMPRESSED_MODES else (_FILTER_SKIPPED, raw)
            continue
        offset = pixels.__array_interface__["data"][0] - slots.address
        if v.mode in COMPRESSED_MODES:
            packed = _deflate(pixels.data)
            slots.buffer[offset:offset + len(packed)] = packed
            out[v.name] = (0, (offset, len(packed)))
        else:
            out[v.name] = (_FILTER_SKIPPED, (offset, pixels.nbytes))
    return out


def _deflate(raw: bytes) -> bytes:
    """A zlib stream (what HDF5's gzip filter inflates) with the run-length strategy.

    About twice as fast as level 1 for about 1.12-1.21x instead of 1.16-1.3x on these images,
    and it squeezes zero padding as well.
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    return compressor.compress(raw) + compressor.flush()


_PIXEL_FILTER: dict[str, Any] = {"compression": "gzip", "compression_opts": GZIP_LEVEL}
_FILTER_SKIPPED = 1  # filter mask bit 0: the (only) filter, gzip, was not applied to this chunk


def _cook_chunk(task: _Task) -> tuple[dict[str, tuple[int, bytes]], list[dict]]:
    """Decode the chunk's images once; return every variant's stored chunk, and any problems."""
    with single_thread_blas():  # tiny matrix products: BLAS threads only get in the way
        return _cook_chunk_pixels(task)


def _cook_chunk_pixels(task: _Task) -> tuple[dict[str, tuple[int, bytes]], list[dict]]:
    problems: list[dict] = []
    keys = sorted({(v.size, v.roi) for v in task.variants})
    sizes_of = {roi: tuple(s for s, r in keys if r == roi) for roi in sorted({r for _, r in keys})}
    mine = {key: [v for v in task.variants if (v.size, v.roi) == key] for key in keys}
    arrays = _chunk_arrays(task)
    local = {key: any(v.mode == "L-LHE" for v in mine[key]) for key in keys}
    gray = {key: np.zeros((task.rows, key[0], key[0]), np.uint8) for key in keys if local[key]}
    # Images are enhanced in groups small enough for their float64 temporaries to stay in the CPU
    # cache and large enough to spread the per-call overhead (more images for small sizes).
    group = {key: max(1, min(_GROUP_MAX, _GROUP_PIXELS // (key[0] * key[0]))) for key in keys}
    # planar (image, channel, row, column), as the resize writes them and the modes read them
    buffers = {key: np.empty((group[key], 3, key[0], key[0])) for key in keys}
    first = dict.fromkeys(keys, 0)  # first chunk row in each buffer

    def flush(key: tuple[int, bool], stop: int) -> None:
        start = first[key]
        first[key] = stop
        if problems or stop == start:
            return  # the chunk is dropped anyway: just find every unreadable image
        outputs = {v.mode: arrays[v][start:stop] for v in mine[key] if v.mode != "L-LHE"}
        cooks_l = "L" in outputs
        if local[key] and not cooks_l:
            outputs["L"] = gray[key][start:stop, ..., None]  # the grey uint8 image is the input of L-LHE
        store_modes(buffers[key][:stop - start], outputs)
        if local[key] and cooks_l:
            gray[key][start:stop] = outputs["L"][..., 0]

    for i in range(task.rows):
        path, roi, expect = task.paths[i], task.rois[i], task.sizes[i]
        try:
            image = _decode(path)
        except (DataError, OSError) as exc:
            problems.append({"path": path, "problem": str(exc).split("\n")[0]})
            image = None
        if image is not None and expect is not None and (image.shape[1], image.shape[0]) != tuple(expect):
            problems.append({
                "path": path,
                "problem": f"image is {image.shape[1]}x{image.shape[0]} but the CSV says {expect[0]}x{expect[1]}",
            })
        elif image is not None and not problems:
            for use_roi, sizes in sizes_of.items():
                src = image[roi[1]:roi[3] + 1, roi[0]:roi[2] + 1] if use_roi and roi is not None else image
                resize_planes(src, sizes, out=[buffers[(size, use_roi)][i - first[(size, use_roi)]] for size in sizes])
        for key in keys:
            if i + 1 - first[key] == group[key] or i + 1 == task.rows:
                flush(key, i + 1)
    if problems:
        return {}, problems
    for key, grey in gray.items():
        equalized = rank_equalize(grey)
        for variant in mine[key]:
            if variant.mode == "L-LHE":
                arrays[variant][:task.rows, ..., 0] = equalized
    return _filter_chunks(arrays, task), problems


def _hash_files(paths: Sequence[str]) -> list[str | None]:
    """Content hashes of files (None for unreadable ones)."""
    digests: list[str | None] = []
    for path in paths:
        try:
            digests.append(hashlib.blake2b(_read_file(path), digest_size=16).hexdigest())
        except OSError:
            digests.append(None)
    return digests


def _init_worker(opencv: bool) -> None:
    # one process per core: keep OpenCV and BLAS from starting threads of their own
    if opencv or "cv2" in sys.modules:
        import cv2

        cv2.setNumThreads(1)
    set_single_thread_blas()
    keep_freed_memory()


# --------------------------------------------------------------------------- executor

class _InlineExecutor:
    """The executor interface, run in this process (workers=1): simpler and no start-up cost."""

    def submit(self, fn, *args):  # noqa: ANN001, ANN201
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:  # noqa: D102
        pass


class _Workers:
    """The worker pool of one cook, started on first use (in-process for ``workers <= 1``).

    With fork (the fast, usual case) :meth:`start` runs at once, so that the workers get ready
    while this process reads the catalog and before any HDF5 file is open here (fork would copy
    it); the shared chunk slots are mapped just before. Spawned workers (once TensorFlow's
    threads are loaded, fork is unsafe) cost seconds to start, so they wait until there is work.
    """

    def __init__(self, workers: int, slot_bytes: int, opencv: bool) -> None:
        self.workers = workers
        self.slot_bytes = slot_bytes
        self.opencv = opencv
        self.pool: Any = None
        self.slots: _Slots | None = None
        methods = multiprocessing.get_all_start_methods()
        self.method = "fork" if "fork" in methods and "tensorflow" not in sys.modules else "spawn"
        if self.method == "spawn" and "forkserver" in methods:
            self.method = "forkserver"

    def start(self) -> tuple[Any, _Slots | None]:
        """The executor (started if needed) and its shared slots (None: results come by pipe)."""
        global _shared_slots
        if self.pool is not None:
            return self.pool, self.slots
        if self.workers <= 1:
            self.pool = _InlineExecutor()
            return self.pool, None
        count = min(self.workers * _IN_FLIGHT_PER_WORKER + 1, _SHARED_LIMIT // max(1, self.slot_bytes))
        if self.method == "fork" and self.slot_bytes and count >= 3 and _shared_slots is None:
            import mmap

            try:
                buffer = mmap.mmap(-1, self.slot_bytes * count)  # anonymous and shared: forked workers inherit it
            except OSError:  # no room for it: results come through the pipe
                buffer = None
            if buffer is not None:
                address = np.frombuffer(buffer, np.uint8).__array_interface__["data"][0]
                self.slots = _shared_slots = _Slots(buffer, self.slot_bytes, count, address)
        main = sys.modules.get("__main__")
        if self.method != "fork" and main is not None and not hasattr(main, "__spec__"):
            # Jupyter kernels' __main__ lacks __spec__, which the spawn machinery reads; None is what
            # Python itself sets for interactive sessions
            main.__spec__ = None
        self.pool = cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context(self.method), initializer=_init_worker,
            initargs=(self.opencv,),
        )
        for _ in range(self.workers):  # with fork, the first submit starts them all
            self.pool.submit(_noop)
        return self.pool, self.slots

    def close(self, failed: bool) -> None:
        global _shared_slots
        if self.pool is not None:
            # no work is left: the workers exit on their own (the executor joins them)
            self.pool.shutdown(wait=False, cancel_futures=failed)
        if self.slots is not None:
            _shared_slots = None
            with contextlib.suppress(BufferError):  # a view still alive: the mapping goes with it
                self.slots.buffer.close()


@contextlib.contextmanager
def _worker_pool(workers: int, slot_bytes: int = 0, opencv: bool = False) -> Iterator[_Workers]:
    pool = _Workers(workers, slot_bytes, opencv)
    if pool.method == "fork":
        pool.start()
    try:
        yield pool
    except BaseException:
        pool.close(failed=True)
        raise
    else:
        pool.close(failed=False)


def _ordered(executor: Any, fn: Any, items: Iterable[Any], window: int) -> Iterator[tuple[Any, Any]]:
    """``(item, fn(item))`` in order, with at most ``window`` items in flight (bounded memory).

    The first ``window`` items are submitted at once, before the first result is asked for: the
    caller can do other work while they run.
    """
    pending: collections.deque[tuple[Any, cf.Future]] = collections.deque()
    it = iter(items)
    for item in it:
        pending.append((item, executor.submit(fn, item)))
        if len(pending) >= window:
            break

    def results() -> Iterator[tuple[Any, Any]]:
        while pending:
            item, future = pending.popleft()
            result = future.result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append((nxt, executor.submit(fn, nxt)))
            yield item, result

    return results()


_END = object()


def _noop() -> None:
    return None


# --------------------------------------------------------------------------- planning helpers

def _hash_rows(catalog: pd.DataFrame, rows: np.ndarray, executor: Any, workers: int,
               progress: ProgressCallback | None) -> dict[int, str | None]:
    """Content hashes of the images of catalog ``rows`` (None for unreadable files), by row."""
    paths = catalog["path"].to_numpy()[rows].tolist()
    block = max(64, min(2048, len(paths) // max(1, workers * 4) + 1))
    parts = [paths[i:i + block] for i in range(0, len(paths), block)]
    digests: list[str | None] = []
    for _, part in _ordered(executor, _hash_files, parts, window=max(2, workers * 2)):
        digests.extend(part)
        report(progress, "hashing images", len(digests), len(paths))
    return dict(zip(np.asarray(rows).tolist(), digests, strict=True))


def _fingerprint(catalog: pd.DataFrame, rows: np.ndarray, digests: dict[int, str | None]) -> str:
    """Hash of the catalog rows used (paths, labels, sizes, ROIs) and of their files' contents."""
    digest = hashlib.sha256()
    sub = catalog.iloc[rows]
    cols = ["split", "rel_path", "class_id", "width", "height", "roi_x1", "roi_y1", "roi_x2", "roi_y2", "track_id"]
    rows_text = "".join("\t".join(map(str, values)) + "\n" for values in zip(*(sub[c].tolist() for c in cols), strict=True))
    digest.update(rows_text.encode("utf-8"))
    digest.update("".join(f"{digests[r] or '-'}\n" for r in np.asarray(rows).tolist()).encode())
    return digest.hexdigest()


def _recipe(variant: _Variant, *, scale: float, seed: int, val_fraction: float, keep_dups: bool, fingerprint: str) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "cook_algorithm": COOK_ALGORITHM,
        "size": variant.size,
        "mode": variant.mode,
        "roi": variant.roi,
        "scale": scale,
        "seed": seed,
        "val_fraction": val_fraction,
        "keep_test_duplicates": keep_dups,
        "compression": "gzip-rle" if variant.mode in COMPRESSED_MODES else "none",
        "resize": resize_implementation(),  # the implementations differ in float rounding
        "chunks": "balanced",
        "source_fingerprint": fingerprint,
    }


def _recipe_json(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def _existing_recipe(path: Path) -> str | None:
    """The recipe of a complete gtsrb-kit file at ``path``, or None (missing, foreign, corrupt)."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("created_by") != CREATED_BY:
                return None
            recipe = handle.attrs.get("recipe")
            return recipe.decode() if isinstance(recipe, bytes) else recipe
    except (OSError, KeyError, ValueError):
        return None


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, not a folder; pass a folder with --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"{out_dir}: a file is in the way of this folder; pass another --out") from None
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot create the output folder ({exc.strerror}); pass another --out") from None
    probe = out_dir / f".gtsrb-kit-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
    except OSError as exc:
        raise DataError(
            f"{out_dir}: cannot write there ({exc.strerror or exc}); check permissions and free space or pass another --out"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _find_duplicate_tracks(catalog: pd.DataFrame, plan: SplitPlan, digests: dict[int, str | None]) -> list[int]:
    """Training/validation tracks holding an image byte-identical to a selected test image.

    ``digests``: content hashes by catalog row (:func:`_hash_rows`), for every row of the plan.
    """
    test_hashes = {digests[r] for r in plan.test.tolist()} - {None}
    train_rows = np.concatenate([plan.train, plan.val])
    tracks = catalog["track_id"].to_numpy()[train_rows]
    return sorted({int(t) for t, r in zip(tracks.tolist(), train_rows.tolist()) if digests[r] in test_hashes})


# --------------------------------------------------------------------------- writing

_STR_LIMIT = 1024


def _small_dataset(handle: h5py.File, name: str, data: np.ndarray) -> None:
    """Labels, tracks and paths: gzip-compressed (paths shrink about tenfold)."""
    if len(data):
        handle.create_dataset(name, data=data, chunks=(min(len(data), 16384),), compression="gzip",
                              compression_opts=4, shuffle=data.dtype.itemsize > 1, track_times=False)
    else:
        handle.create_dataset(name, data=data, track_times=False)


def _split_columns(plan: SplitPlan, catalog: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Labels, tracks and encoded paths of every split (computed once, written to every file)."""
    cid = catalog["class_id"].to_numpy()
    track = catalog["track_id"].to_numpy()
    rel = catalog["rel_path"].to_numpy()
    columns: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        rows = plan.rows(split)
        encoded = [str(p).encode("utf-8") for p in rel[rows]]
        width = max([len(e) for e in encoded] + [1])
        columns[split] = {"y": cid[rows].astype(np.int16),
                          "path": np.array(encoded, dtype=f"S{min(width, _STR_LIMIT)}")}
        if split in ("train", "val"):
            columns[split]["track"] = track[rows].astype(np.int64)
    return columns


def _chunk_rows(n: int) -> int:
    """Rows per HDF5 chunk for ``n`` images: at most CHUNK_IMAGES, all chunks (nearly) the same size.

    HDF5 stores an edge chunk whole; with equal chunks its padding is under one row per chunk,
    so it can be stored uncompressed like the others.
    """
    chunks = max(1, -(-n // CHUNK_IMAGES))
    return max(1, -(-n // chunks))


def _write_file_header(handle: h5py.File, variant: _Variant, columns: dict[str, dict[str, np.ndarray]]) -> dict[str, h5py.Dataset]:
    """Create the datasets of one file and write everything except the pixels."""
    datasets: dict[str, h5py.Dataset] = {}
    for split in SPLITS:
        n = len(columns[split]["y"])
        chunk_rows = _chunk_rows(n)
        shape = (n, variant.size, variant.size, variant.channels)
        if n:
            datasets[split] = handle.create_dataset(
                f"x_{split}", shape=shape, dtype=np.uint8, chunks=(chunk_rows, *shape[1:]),
                track_times=False, **_PIXEL_FILTER,
            )
        else:  # an empty split (e.g. val_fraction=0): HDF5 chunks cannot be larger than the data
            datasets[split] = handle.create_dataset(f"x_{split}", shape=shape, dtype=np.uint8, track_times=False)
        _small_dataset(handle, f"y_{split}", columns[split]["y"])
        if "track" in columns[split]:
            _small_dataset(handle, f"track_{split}", columns[split]["track"])
        _small_dataset(handle, f"path_{split}", columns[split]["path"])
    return datasets


def _write_attrs(handle: h5py.File, variant: _Variant, recipe: dict, *, scale: float, seed: int,
                 val_fraction: float, dropped: int, skipped: int, layout: str) -> None:
    attrs = handle.attrs
    # fixed order, no timestamps: the file is byte-identical for the same inputs
    attrs["schema_version"] = np.int64(SCHEMA_VERSION)
    attrs["created_by"] = CREATED_BY
    attrs["gtsrb_kit_version"] = _package_version()
    attrs["size"] = np.int64(variant.size)
    attrs["mode"] = variant.mode
    attrs["roi"] = np.bool_(variant.roi)
    attrs["scale"] = np.float64(scale)
    attrs["seed"] = np.int64(seed)
    attrs["val_fraction"] = np.float64(val_fraction)
    attrs["class_names"] = json.dumps(list(CLASS_NAMES))
    attrs["source_fingerprint"] = recipe["source_fingerprint"]
    attrs["source_layout"] = layout
    attrs["dropped_duplicate_tracks"] = np.int64(dropped)
    attrs["skipped_images"] = np.int64(skipped)
    attrs["recipe"] = _recipe_json(recipe)


def _tasks(plan: SplitPlan, catalog: pd.DataFrame, variants: tuple[_Variant, ...]) -> Iterator[_Task]:
    """The chunks to cook, in file order (generated lazily: memory does not grow with the dataset)."""
    paths = catalog["path"].to_numpy()
    split_col = catalog["split"].to_numpy()
    roi_cols = catalog[["roi_x1", "roi_y1", "roi_x2", "roi_y2"]].to_numpy()
    wh = catalog[["width", "height"]].to_numpy()
    for split in SPLITS:
        rows = plan.rows(split)
        chunk_rows = _chunk_rows(len(rows))
        for chunk, start in enumerate(range(0, len(rows), chunk_rows)):
            part = rows[start:start + chunk_rows]
            is_meta = [split_col[i] == "meta" for i in part]
            yield _Task(
                split=split, chunk=chunk, rows=len(part), chunk_rows=chunk_rows,
                paths=tuple(str(paths[i]) for i in part),
                rois=tuple(None if m else tuple(int(v) for v in roi_cols[i]) for i, m in zip(part, is_meta)),
                sizes=tuple(None if m else (int(wh[i][0]), int(wh[i][1])) for i, m in zip(part, is_meta)),
                variants=variants,
            )


def _write_chunk(ds: h5py.Dataset, first_row: int, data: bytes, mask: int) -> None:
    """Store one already-filtered chunk (compressed in a worker) at ``first_row``."""
    ds.id.write_direct_chunk((first_row, *(0,) * (ds.ndim - 1)), data, filter_mask=mask)


class _BadImages(Exception):
    def __init__(self, problems: list[dict]) -> None:
        super().__init__(f"{len(problems)} unreadable image(s)")
        self.problems = problems


def _cook_files(
    variants: tuple[_Variant, ...], plan: SplitPlan, catalog: pd.DataFrame, out_dir: Path, *,
    recipes: dict[str, dict], executor: Any, slots: _Slots | None, workers: int, strict: bool,
    progress: ProgressCallback | None,
    scale: float, seed: int, val_fraction: float, skipped_images: int,
) -> None:
    """Write every pending variant in one pass over the images (atomic per file)."""
    total = sum(len(plan.rows(split)) for split in SPLITS)
    layout = str(catalog.attrs.get("layout", ""))
    window = max(2, workers * _IN_FLIGHT_PER_WORKER)
    tasks: Iterable[_Task] = _tasks(plan, catalog, variants)
    if slots is not None:
        # in flight: `window` tasks plus the one being written, each in its own slot
        window = min(window, slots.count - 1)
        tasks = (dataclasses.replace(t, slot=(i % slots.count) * slots.size) for i, t in enumerate(tasks))
    results = _ordered(executor, _cook_chunk, tasks, window)  # the workers start on the first chunks now
    columns = _split_columns(plan, catalog)
    with contextlib.ExitStack() as stack:
        handles: dict[str, h5py.File] = {}
        datasets: dict[str, dict[str, h5py.Dataset]] = {}
        for v in variants:
            final = out_dir / enhanced_filename(v.size, v.mode, v.roi)
            remove_stale_temporaries(final)  # of killed cooks
            tmp = stack.enter_context(atomic_path(final))  # with the usual permissions already
            handle = stack.enter_context(h5py.File(tmp, "w", libver="earliest", track_order=False))
            handles[v.name] = handle
            datasets[v.name] = _write_file_header(handle, v, columns)
            _write_attrs(handle, v, recipes[v.name], scale=scale, seed=seed, val_fraction=val_fraction,
                         dropped=len(plan.dropped_tracks), skipped=skipped_images, layout=layout)
        done = 0
        report(progress, "cooking", 0, total)
        bad: list[dict] = []
        view = memoryview(slots.buffer) if slots is not None else None
        for task, (chunks, problems) in results:
            if problems:
                if strict:
                    first = problems[0]
                    raise DataError(f"{first['path']}: {first['problem']} (run without --strict to skip unreadable images)")
                bad.extend(problems)
                continue
            if bad:
                continue  # a second pass without the bad images follows; just find them all
            for name, (mask, data) in chunks.items():
                if isinstance(data, tuple):
                    data = view[data[0]:data[0] + data[1]]
                _write_chunk(datasets[name][task.split], task.chunk * task.chunk_rows, data, mask)
            done += task.rows
            report(progress, "cooking", done, total)
        if bad:
            raise _BadImages(bad)


# --------------------------------------------------------------------------- public entry point

def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _variants(sizes: Sequence[int], modes: Sequence[str], roi_crop: bool) -> tuple[_Variant, ...]:
    if not sizes:
        raise ConfigError("no image size given; pass at least one --size (e.g. 24 or 48)")
    if not modes:
        raise ConfigError(f"no mode given; pass at least one --mode ({', '.join(MODES)})")
    seen: dict[str, _Variant] = {}
    for size in sizes:
        for mode in modes:
            v = _Variant(check_size(size), check_mode(mode), bool(roi_crop))
            seen.setdefault(v.name, v)
    return tuple(seen.values())


def cook_dataset(
    root: str | Path,
    out_dir: str | Path,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    modes: Sequence[str] = DEFAULT_MODES,
    roi_crop: bool = False,
    scale: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.2,
    force: bool = False,
    workers: int | None = None,
    strict: bool = False,
    keep_test_duplicates: bool = False,
    progress: ProgressCallback | None = None,
) -> list[CookResult]:
    """Cook one HDF5 file per (size, mode) variant from a raw GTSRB tree.

    Args:
        root: Raw GTSRB tree (official or Kaggle layout).
        out_dir: Folder for the ``set-{size}x{size}-{mode}[-roi].h5`` files (created if needed).
        sizes: Image sides (default 24 and 48).
        modes: Modes of :data:`MODES` (default the course's RGB, RGB-HE, L, L-LHE).
        roi_crop: Crop each image to its annotated sign before resizing (``-roi`` files).
        scale: Fraction of whole tracks per class (train/val) and of test images per class, in (0, 1].
        seed: Seed of the split and the subsampling; the same seed gives byte-identical files.
        val_fraction: Fraction of each class's tracks for validation, in [0, 1).
        force: Rebuild files even if they are complete with the same recipe.
        workers: Worker processes (default: all cores; 1 runs in this process).
        strict: Stop at the first unreadable image or catalog problem instead of skipping it.
        keep_test_duplicates: Keep training tracks that hold an image byte-identical to a test image.
        progress: Optional ``progress(description, completed, total)`` callback.

    Returns:
        One :class:`CookResult` per variant, in the order of ``sizes`` x ``modes``.

    Raises:
        ConfigError: unknown mode, bad size, scale or val_fraction.
        DataError: no GTSRB tree at ``root``, no images, an output folder that is a file or not
            writable, or (``strict``) an unreadable image.
    """
    variants = _variants(sizes, modes, roi_crop)
    scale = check_fraction("scale", scale, low_open=True, high_closed=True)
    val_fraction = check_fraction("val_fraction", val_fraction, low_open=False, high_closed=False)
    seed = int(seed)
    workers = int(workers) if workers is not None else _available_cores()
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)

    # OpenCV only serves L-LHE (and images other than binary PPM): imported here, before the
    # workers are forked, so that they share it instead of each importing it
    opencv = any(v.mode == "L-LHE" for v in variants)
    if opencv:
        import cv2  # noqa: F401
    with _worker_pool(workers, _slot_bytes(variants), opencv) as pool:
        catalog = read_catalog(root, strict=strict, verify="none", progress=progress)
        problems = list(catalog.attrs.get("problems", []))
        if not (catalog["split"] == "train").any():
            raise DataError(f"{root}: no training images found; check --root (run 'gtsrb-kit synth' for a test tree)")
        plan = plan_split(catalog, scale=scale, seed=seed, val_fraction=val_fraction)
        used = np.sort(np.concatenate([plan.train, plan.val, plan.test, plan.meta]))
        # one read of every image used: its hash goes into the fingerprint and finds test duplicates
        # (spawned workers would take seconds to start: hash in this process until they are needed)
        digests = _hash_rows(catalog, used, pool.pool or _InlineExecutor(), workers, progress)
        fingerprint = _fingerprint(catalog, used, digests)
        recipes = {
            v.name: _recipe(v, scale=scale, seed=seed, val_fraction=val_fraction,
                            keep_dups=keep_test_duplicates, fingerprint=fingerprint)
            for v in variants
        }
        pending = tuple(
            v for v in variants
            if force or _existing_recipe(out_dir / enhanced_filename(v.size, v.mode, v.roi)) != _recipe_json(recipes[v.name])
        )
        skipped_images = 0
        if pending:
            executor, slots = pool.start()
            if not keep_test_duplicates:
                dup_tracks = _find_duplicate_tracks(catalog, plan, digests)
                if dup_tracks:
                    plan = plan_split(catalog, scale=scale, seed=seed, val_fraction=val_fraction, drop_tracks=dup_tracks)
            for _attempt in range(3):
                try:
                    _cook_files(pending, plan, catalog, out_dir, recipes=recipes, executor=executor, slots=slots, workers=workers,
                                strict=strict, progress=progress, scale=scale, seed=seed, val_fraction=val_fraction,
                                skipped_images=skipped_images)
                    break
                except _BadImages as bad:
                    problems.extend(bad.problems)
                    skipped_images += len(bad.problems)
                    bad_paths = {p["path"] for p in bad.problems}
                    keep = ~catalog["path"].isin(bad_paths).to_numpy()
                    catalog = catalog[keep].reset_index(drop=True)
                    plan = plan_split(catalog, scale=scale, seed=seed, val_fraction=val_fraction,
                                      drop_tracks=plan.dropped_tracks)
            else:  # pragma: no cover - every pass removes the images it could not read
                raise DataError(f"{root}: images keep failing to decode; run with --strict to see the first one")
    results: list[CookResult] = []
    for v in variants:
        path = out_dir / enhanced_filename(v.size, v.mode, v.roi)
        if v in pending:  # what was just written
            counts, dropped, skipped_n = plan.counts(), len(plan.dropped_tracks), skipped_images
        else:
            counts, dropped, skipped_n = _file_counts(path)
        results.append(CookResult(
            path=path, variant=v.name, size=v.size, mode=v.mode, roi=v.roi, counts=counts,
            bytes=path.stat().st_size, skipped=v not in pending, dropped_duplicate_tracks=dropped,
            skipped_images=skipped_n, problems=problems if v in pending else [],
        ))
    return results


def _file_counts(path: Path) -> tuple[dict[str, int], int, int]:
    with h5py.File(path, "r") as handle:
        counts = {s: int(handle[f"x_{s}"].shape[0]) for s in SPLITS if f"x_{s}" in handle}
        dropped = int(handle.attrs.get("dropped_duplicate_tracks", 0))
        skipped = int(handle.attrs.get("skipped_images", 0))
    return counts, dropped, skipped
