"""Cook enhanced datasets: one HDF5 file per (size, mode) variant, written in parallel.

Worker processes scan every image (digest, size check), then decode each chunk of images once
and produce every variant from it; this process writes the chunks in order, atomically per file.
Files already complete with the same recipe are skipped. The output is byte-identical for the
same inputs and arguments. The steps are described in ``docs/cook.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gtsrb_kit.catalog import image_digest, inspect_image, load_image, read_catalog, shared_digests
from gtsrb_kit.classes import CLASS_NAMES
from gtsrb_kit.enhance import (
    DEFAULT_MODES,
    DEFAULT_SIZES,
    MODES,
    apply_modes,
    check_mode,
    check_size,
    crop_roi,
    mode_channels,
    rank_equalize,
    resize_planes,
)
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.progress import ProgressCallback, report
from gtsrb_kit.split import SplitPlan, check_fraction, plan_split
from gtsrb_kit.store import (
    COMPRESSED_MODES,
    SCHEMA_VERSION,
    SPLITS,
    SplitColumns,
    VariantWriter,
    chunk_rows,
    encode_chunk,
    enhanced_filename,
    read_info,
    stored_recipe,
)
from gtsrb_kit.synth import MARKER as SYNTH_MARKER
from gtsrb_kit.workers import available_cores, ordered, process_pool

__all__ = ["MODES", "DEFAULT_MODES", "DEFAULT_SIZES", "CookResult", "cook_dataset", "COOK_ALGORITHM"]

COOK_ALGORITHM = 4  # bump when cooked pixels change for the same recipe
_IN_FLIGHT_PER_WORKER = 4
_GROUP_PIXELS = 16 * 48 * 48  # images enhanced together: their temporaries stay in the CPU cache
_SCAN_BLOCK = 256


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
    def filename(self) -> str:
        return enhanced_filename(self.size, self.mode, self.roi)

    @property
    def name(self) -> str:
        return self.filename[: -len(".h5")]


@dataclass(frozen=True)
class _Task:
    """One chunk of one split: the images to decode and the variants to produce."""

    split: str
    chunk: int
    chunk_rows: int  # rows of the HDF5 chunk (the last chunk is padded to it)
    paths: tuple[str, ...]
    rois: tuple[tuple[int, int, int, int] | None, ...]
    variants: tuple[_Variant, ...]


# --------------------------------------------------------------------------- worker side

def _scan(items: Sequence[tuple[str, tuple[int, int] | None]]) -> list[tuple[str | None, str | None]]:
    """``(digest, problem)`` of every ``(path, expected (width, height) or None)``."""
    out = []
    for path, expect in items:
        data, _, problem = inspect_image(path, expect)
        out.append((None if data is None else image_digest(data), problem))
    return out


def _cook_chunk(task: _Task) -> dict[str, tuple[int, bytes]]:
    """Decode the chunk's images once; return every variant's encoded chunk by variant name."""
    images = [load_image(p) for p in task.paths]
    out: dict[str, tuple[int, bytes]] = {}
    for (size, roi), variants in _by_geometry(task.variants).items():
        sources = [crop_roi(im, *box) if roi and box is not None else im for im, box in zip(images, task.rois)]
        modes = [v.mode for v in variants]
        pixels = _enhance_chunk(sources, size, modes, task.chunk_rows)
        out.update({v.name: encode_chunk(pixels[v.mode], v.mode) for v in variants})
    return out


def _enhance_chunk(sources: list[np.ndarray], size: int, modes: list[str], rows: int) -> dict[str, np.ndarray]:
    """Every mode of the images, resized to ``size``, into zero-padded ``(rows, size, size, C)`` arrays.

    Images go through in groups small enough for their float temporaries to stay in the CPU
    cache; L-LHE runs once over the whole chunk's grey images (its cost is per call).
    """
    lhe = "L-LHE" in modes
    per_group = [m for m in modes if m != "L-LHE"] + (["L"] if lhe and "L" not in modes else [])
    pixels = {m: np.zeros((rows, size, size, mode_channels(m)), np.uint8) for m in [*per_group, *modes]}
    group = max(1, _GROUP_PIXELS // (size * size))
    planes = np.empty((group, 3, size, size))
    for start in range(0, len(sources), group):
        part = sources[start:start + group]
        for i, image in enumerate(part):
            resize_planes(image, size, out=planes[i])
        for mode, values in apply_modes(np.moveaxis(planes[:len(part)], 1, -1), per_group).items():
            pixels[mode][start:start + len(part)] = values
    if lhe:
        pixels["L-LHE"][:len(sources), ..., 0] = rank_equalize(pixels["L"][:len(sources), ..., 0])
    return pixels


def _by_geometry(variants: Iterable[_Variant]) -> dict[tuple[int, bool], list[_Variant]]:
    groups: dict[tuple[int, bool], list[_Variant]] = {}
    for v in variants:
        groups.setdefault((v.size, v.roi), []).append(v)
    return groups


# --------------------------------------------------------------------------- planning

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


def _scan_rows(catalog: pd.DataFrame, rows: np.ndarray, pool: cf.Executor | None, workers: int,
               progress: ProgressCallback | None) -> list[tuple[str | None, str | None]]:
    """:func:`_scan` of the catalog ``rows``, in row order."""
    meta = (catalog["split"] == "meta").to_numpy()[rows]
    wh = catalog[["width", "height"]].to_numpy()[rows].tolist()
    items = [(p, None if m else tuple(s)) for p, m, s in zip(catalog["path"].to_numpy()[rows].tolist(), meta, wh)]
    blocks = [items[i:i + _SCAN_BLOCK] for i in range(0, len(items), _SCAN_BLOCK)]
    scanned: list[tuple[str | None, str | None]] = []
    for _, part in ordered(pool, _scan, blocks, max(2, 2 * workers)):
        scanned.extend(part)
        report(progress, "scanning images", len(scanned), len(items))
    return scanned


def _fingerprint(catalog: pd.DataFrame, rows: np.ndarray, digests: Sequence[str | None]) -> str:
    """Digest of the catalog rows used (paths, labels, sizes, ROIs) and of their files' contents."""
    sub = catalog.iloc[rows]
    cols = ["split", "rel_path", "class_id", "width", "height", "roi_x1", "roi_y1", "roi_x2", "roi_y2", "track_id"]
    text = "".join("\t".join(map(str, values)) + "\n" for values in zip(*(sub[c].tolist() for c in cols), strict=True))
    return image_digest((text + "".join(f"{d or '-'}\n" for d in digests)).encode("utf-8"))


def _recipe(variant: _Variant, *, scale: float, seed: int, val_fraction: float, keep_dups: bool, fingerprint: str) -> dict:
    return {
        "schema_version": SCHEMA_VERSION, "cook_algorithm": COOK_ALGORITHM,
        "size": variant.size, "mode": variant.mode, "roi": variant.roi,
        "scale": scale, "seed": seed, "val_fraction": val_fraction, "keep_test_duplicates": keep_dups,
        "compression": "gzip-rle" if variant.mode in COMPRESSED_MODES else "none",
        "chunks": "balanced", "source_fingerprint": fingerprint,
    }


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
        if exc.errno == errno.ENOSPC:
            raise DataError(f"{out_dir}: no space left on device; free space or pass another --out") from None
        raise DataError(
            f"{out_dir}: cannot write there ({exc.strerror or exc}); check permissions and free space or pass another --out"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _duplicate_tracks(catalog: pd.DataFrame, plan: SplitPlan, digest_of: dict[int, str | None]) -> list[int]:
    """Training/validation tracks holding an image byte-identical to a selected test image."""
    train_rows = np.concatenate([plan.train, plan.val]).tolist()
    shared = shared_digests((digest_of[r] for r in train_rows), (digest_of[r] for r in plan.test.tolist()))
    tracks = catalog["track_id"].to_numpy()
    return sorted({int(tracks[r]) for r in train_rows if digest_of[r] in shared})


# --------------------------------------------------------------------------- writing

def _split_columns(plan: SplitPlan, catalog: pd.DataFrame) -> dict[str, SplitColumns]:
    """Labels, tracks and paths of every split (computed once, written to every file)."""
    cid, track, rel = (catalog[c].to_numpy() for c in ("class_id", "track_id", "rel_path"))
    return {split: SplitColumns(y=cid[rows], path=rel[rows].tolist(),
                                track=track[rows] if split in ("train", "val") else None)
            for split, rows in ((s, plan.rows(s)) for s in SPLITS)}


def _tasks(plan: SplitPlan, catalog: pd.DataFrame, variants: tuple[_Variant, ...]) -> Iterator[_Task]:
    """The chunks to cook, in file order (generated lazily: memory does not grow with the dataset)."""
    paths = catalog["path"].to_numpy()
    meta = (catalog["split"] == "meta").to_numpy()
    boxes = catalog[["roi_x1", "roi_y1", "roi_x2", "roi_y2"]].to_numpy()
    for split in SPLITS:
        rows = plan.rows(split)
        step = chunk_rows(len(rows))
        for chunk, start in enumerate(range(0, len(rows), step)):
            part = rows[start:start + step]
            yield _Task(split=split, chunk=chunk, chunk_rows=step, paths=tuple(str(paths[i]) for i in part),
                        rois=tuple(None if meta[i] else tuple(int(v) for v in boxes[i]) for i in part),
                        variants=variants)


def _cook_files(variants: tuple[_Variant, ...], plan: SplitPlan, catalog: pd.DataFrame, out_dir: Path, *,
                attrs: dict[str, dict], pool: cf.Executor | None, workers: int,
                progress: ProgressCallback | None) -> None:
    """Write every pending variant in one pass over the images (atomic per file)."""
    total = sum(len(plan.rows(split)) for split in SPLITS)
    columns = _split_columns(plan, catalog)
    with contextlib.ExitStack() as stack:
        writers = {v.name: stack.enter_context(VariantWriter(out_dir / v.filename, size=v.size, mode=v.mode,
                                                             columns=columns, attrs=attrs[v.name]))
                   for v in variants}
        done = 0
        report(progress, "cooking", 0, total)
        tasks = _tasks(plan, catalog, variants)
        for task, chunks in ordered(pool, _cook_chunk, tasks, max(2, workers * _IN_FLIGHT_PER_WORKER)):
            for name, encoded in chunks.items():
                writers[name].write_chunk(task.split, task.chunk, encoded)
            done += len(task.paths)
            report(progress, "cooking", done, total)


# --------------------------------------------------------------------------- public entry point

@dataclass(frozen=True)
class _Settings:
    scale: float
    seed: int
    val_fraction: float
    keep_dups: bool

    def plan(self, catalog: pd.DataFrame, drop_tracks: Sequence[int] = ()) -> SplitPlan:
        return plan_split(catalog, scale=self.scale, seed=self.seed, val_fraction=self.val_fraction,
                          drop_tracks=list(drop_tracks))


def _file_attrs(v: _Variant, recipe: dict, opts: _Settings, layout: str, dropped: int, skipped: int,
                synthetic: bool = False) -> dict[str, Any]:
    """Attributes of one variant file, in the order they are stored (``source_synthetic`` only when true)."""
    return {
        "size": np.int64(v.size), "mode": v.mode, "roi": np.bool_(v.roi), "scale": np.float64(opts.scale),
        "seed": np.int64(opts.seed), "val_fraction": np.float64(opts.val_fraction), "class_names": CLASS_NAMES,
        "source_fingerprint": recipe["source_fingerprint"], "source_layout": layout,
        "dropped_duplicate_tracks": np.int64(dropped), "skipped_images": np.int64(skipped), "recipe": recipe,
        **({"source_synthetic": np.bool_(True)} if synthetic else {}),
    }


def _drop_bad_images(catalog: pd.DataFrame, rows: np.ndarray, scanned: list[tuple[str | None, str | None]],
                     strict: bool) -> tuple[pd.DataFrame, list[dict]]:
    """The catalog without the images that do not decode to their CSV size (``strict``: an error)."""
    paths = catalog["path"].to_numpy()[rows]
    bad = [{"path": str(p), "problem": problem} for p, (_, problem) in zip(paths, scanned) if problem]
    if bad and strict:
        raise DataError(f"{bad[0]['path']}: {bad[0]['problem']} (run without --strict to skip unreadable images)")
    if not bad:
        return catalog, bad
    keep = ~catalog["path"].isin({b["path"] for b in bad}).to_numpy()
    return catalog[keep].reset_index(drop=True), bad


def _up_to_date(path: Path, recipe: dict) -> bool:
    """Complete with the same recipe and readable throughout (a damaged file is cooked again)."""
    if stored_recipe(path) != recipe:
        return False
    try:
        read_info(path)
    except DataError:
        return False
    return True


def _result(v: _Variant, out_dir: Path, written: bool, plan: SplitPlan, skipped: int, problems: list[dict]) -> CookResult:
    path = out_dir / v.filename
    if written:
        counts, dropped = plan.counts(), len(plan.dropped_tracks)
    else:
        info = read_info(path)
        counts = {s: d["count"] for s, d in info["splits"].items()}
        dropped, skipped = int(info.get("dropped_duplicate_tracks", 0)), int(info.get("skipped_images", 0))
    return CookResult(path=path, variant=v.name, size=v.size, mode=v.mode, roi=v.roi, counts=counts,
                      bytes=path.stat().st_size, skipped=not written, dropped_duplicate_tracks=dropped,
                      skipped_images=skipped, problems=problems if written else [])


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
    opts = _Settings(check_fraction("scale", scale, low_open=True, high_closed=True), int(seed),
                     check_fraction("val_fraction", val_fraction, low_open=False, high_closed=False),
                     bool(keep_test_duplicates))
    workers = int(workers) if workers is not None else available_cores()
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    with process_pool(workers, preload=__name__) as pool:
        catalog = read_catalog(root, strict=strict, verify="none", progress=progress)
        if not (catalog["split"] == "train").any():
            raise DataError(f"{root}: no training images found; check --root (run 'gtsrb-kit synth' for a test tree)")
        plan = opts.plan(catalog)
        used = np.unique(np.concatenate([plan.train, plan.val, plan.test, plan.meta]))  # meta reuses train rows
        scanned = _scan_rows(catalog, used, pool, workers, progress)
        fingerprint = _fingerprint(catalog, used, [d for d, _ in scanned])
        recipes = {v.name: _recipe(v, scale=opts.scale, seed=opts.seed, val_fraction=opts.val_fraction,
                                   keep_dups=opts.keep_dups, fingerprint=fingerprint) for v in variants}
        pending = tuple(v for v in variants if force or not _up_to_date(out_dir / v.filename, recipes[v.name]))
        problems = list(catalog.attrs.get("problems", []))
        bad: list[dict] = []
        if pending:
            digest_of = dict(zip(used.tolist(), (d for d, _ in scanned), strict=True))
            dup_tracks = [] if opts.keep_dups else _duplicate_tracks(catalog, plan, digest_of)
            layout = str(catalog.attrs.get("layout", ""))
            catalog, bad = _drop_bad_images(catalog, used, scanned, strict)
            problems += bad
            if bad or dup_tracks:
                plan = opts.plan(catalog, dup_tracks)
            synthetic = (Path(root) / SYNTH_MARKER).is_file()  # drawn by gtsrb-kit synth
            attrs = {v.name: _file_attrs(v, recipes[v.name], opts, layout, len(plan.dropped_tracks), len(bad),
                                         synthetic) for v in pending}
            _cook_files(pending, plan, catalog, out_dir, attrs=attrs, pool=pool, workers=workers, progress=progress)
    return [_result(v, out_dir, v in pending, plan, len(bad), problems) for v in variants]
