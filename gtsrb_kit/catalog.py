"""Read a GTSRB tree (official or Kaggle layout) into one pandas DataFrame: the single truth
about its images, and the one image decoder of the package.

Every row is one image (columns: :data:`CATALOG_COLUMNS`). Problems (missing files, sizes that
disagree with the CSV, unknown class ids, duplicate rows, unreadable images) exclude the row and
are listed in ``df.attrs["problems"]`` (``path``, ``problem``); ``strict=True`` raises instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image

from gtsrb_kit.classes import NUM_CLASSES, class_name
from gtsrb_kit.errors import DataError
from gtsrb_kit.progress import ProgressCallback, report

Layout = Literal["official", "kaggle"]
Verify = Literal["none", "header", "full"]

CATALOG_COLUMNS: tuple[str, ...] = (
    "split", "path", "rel_path", "class_id", "class_name", "width", "height",
    "roi_x1", "roi_y1", "roi_x2", "roi_y2", "track", "frame", "track_id",
)
_CSV_COLUMNS = {
    "Width": "width", "Height": "height", "Roi.X1": "roi_x1", "Roi.Y1": "roi_y1",
    "Roi.X2": "roi_x2", "Roi.Y2": "roi_y2", "ClassId": "class_id",
}
_INT_COLUMNS = ("class_id", "width", "height", "roi_x1", "roi_y1", "roi_x2", "roi_y2", "track", "frame", "track_id")
TRACK_ID_FACTOR = 100_000

OFFICIAL_TRAIN_DIR = Path("GTSRB/Final_Training/Images")
OFFICIAL_TEST_DIR = Path("GTSRB/Final_Test/Images")
OFFICIAL_TEST_LABELS = "GT-final_test.csv"


def detect_layout(root: str | Path) -> Layout:
    """Tell which layout a folder holds.

    Raises:
        DataError: when the folder holds neither layout.
    """
    root = Path(root)
    if (root / "Train.csv").is_file() or (root / "Test.csv").is_file():
        return "kaggle"
    if (root / OFFICIAL_TRAIN_DIR).is_dir() or (root / OFFICIAL_TEST_DIR).is_dir():
        return "official"
    if not root.exists():
        raise DataError(f"{root}: no such folder; run 'gtsrb-kit download' (or 'gtsrb-kit synth') or pass --root")
    raise DataError(
        f"{root}: no GTSRB tree found (expected GTSRB/Final_Training/Images or Train.csv); "
        "run 'gtsrb-kit download' (or 'gtsrb-kit synth') or pass --root"
    )


def _read_csv(path: Path, sep: str, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable annotation CSV ({_first_line(exc)}); re-download or regenerate it") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; is this a GTSRB annotation file?")
    return frame


_POSIX_PATHS = os.sep == "/" and os.altsep is None


def _join_all(root: Path, rel_paths: pd.Series) -> list[str]:
    # Plain strings: pathlib (or even os.path.join) per row is most of a catalog read otherwise.
    base = os.path.join(str(root), "")
    if _POSIX_PATHS:
        return [r if r.startswith("/") else base + r for r in rel_paths.tolist()]
    return [os.path.join(base, r) for r in rel_paths.tolist()]


def _existing_files(paths: list[str]) -> np.ndarray:
    """Which paths exist, listing each folder once (a ``stat`` per file costs several times more).

    A folder named like an image counts as present; decoding it fails later with a clear error.
    """
    if not _POSIX_PATHS:
        return np.array([os.path.isfile(p) for p in paths], dtype=bool)
    present: set[str] = set()
    for folder in {p[:p.rfind("/")] for p in paths}:
        try:
            names = os.listdir(folder or "/")
        except OSError:
            continue
        prefix = folder + "/"
        present.update([prefix + name for name in names])
    return np.fromiter((p in present for p in paths), dtype=bool, count=len(paths))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _to_int(frame: pd.DataFrame, columns: list[str], csv_path: Path, problems: list[dict]) -> pd.DataFrame:
    """Convert columns to int; rows with non-numeric values become problems."""
    bad = np.zeros(len(frame), dtype=bool)
    for col in columns:
        values = pd.to_numeric(frame[col].str.strip(), errors="coerce")
        bad |= values.isna().to_numpy()
        frame[col] = values
    if bad.any():
        rows = frame[bad]
        sources = [f"GT-{d}.csv" for d in rows["folder"]] if "folder" in rows else [csv_path.name] * len(rows)
        for path, source in zip(rows["path"], sources):
            problems.append({"path": str(path), "problem": f"non-numeric value in {source}"})
    frame = frame[~bad].copy()
    for col in columns:
        frame[col] = frame[col].astype(np.int64)
    return frame


_OFFICIAL_HEADER = ("Filename", *_CSV_COLUMNS)


def _official(root: Path, problems: list[dict]) -> pd.DataFrame:
    parts: list[pd.DataFrame] = []
    train_dir = root / OFFICIAL_TRAIN_DIR
    if train_dir.is_dir():
        csvs: list[tuple[str, Path]] = []
        for class_dir in sorted(p for p in train_dir.iterdir() if p.is_dir()):
            csv_path = class_dir / f"GT-{class_dir.name}.csv"
            if not csv_path.is_file():
                problems.append({"path": str(csv_path), "problem": "annotation CSV missing; images of this folder skipped"})
                continue
            csvs.append((class_dir.name, csv_path))
        frame = None
        if csvs:
            # Read every class CSV first and convert once: per-folder pandas work dominates otherwise.
            per_class: list[pd.DataFrame] = []
            for folder, csv_path in csvs:
                part = _read_csv(csv_path, ";", _OFFICIAL_HEADER)
                part["folder"] = folder
                per_class.append(part)
            frame = pd.concat(per_class, ignore_index=True).rename(columns=_CSV_COLUMNS)
            stems = frame["Filename"].str.rsplit(".", n=1).str[0].str.split("_")
            frame["track"] = stems.str[0]
            frame["frame"] = stems.str[1]
        if frame is not None:
            rel_dir = str(OFFICIAL_TRAIN_DIR)
            frame["rel_path"] = [f"{rel_dir}/{d}/{f}" for d, f in zip(frame["folder"].tolist(), frame["Filename"].tolist())]
            frame["path"] = _join_all(root, frame["rel_path"])
            frame["split"] = "train"
            frame = _to_int(frame, [*_CSV_COLUMNS.values(), "track", "frame"], train_dir, problems)
            folder_id = pd.to_numeric(frame["folder"], errors="coerce")
            wrong = (folder_id.notna() & (folder_id != frame["class_id"])).to_numpy()
            for p, d in zip(frame.loc[wrong, "path"], frame.loc[wrong, "folder"]):
                problems.append({"path": p, "problem": f"ClassId disagrees with its folder {d}"})
            parts.append(frame[~wrong].drop(columns="folder"))
    test_dir = root / OFFICIAL_TEST_DIR
    if test_dir.is_dir():
        labels = root / OFFICIAL_TEST_LABELS
        if not labels.is_file():
            labels = root / "GTSRB" / OFFICIAL_TEST_LABELS
        if not labels.is_file():
            problems.append({
                "path": str(root / OFFICIAL_TEST_LABELS),
                "problem": "test labels missing (GTSRB_Final_Test_GT.zip); test images skipped",
            })
        else:
            frame = _read_csv(labels, ";", _OFFICIAL_HEADER).rename(columns=_CSV_COLUMNS)
            rel_dir = str(OFFICIAL_TEST_DIR)
            frame["rel_path"] = [f"{rel_dir}/{f}" for f in frame["Filename"].tolist()]
            frame["path"] = _join_all(root, frame["rel_path"])
            frame["track"] = -1
            frame["frame"] = -1
            frame["split"] = "test"
            parts.append(_to_int(frame, list(_CSV_COLUMNS.values()), labels, problems))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(CATALOG_COLUMNS))


def _kaggle(root: Path, problems: list[dict]) -> pd.DataFrame:
    parts: list[pd.DataFrame] = []
    for split, name in (("train", "Train.csv"), ("test", "Test.csv")):
        csv_path = root / name
        if not csv_path.is_file():
            continue
        frame = _read_csv(csv_path, ",", ("Path", *_CSV_COLUMNS)).rename(columns=_CSV_COLUMNS)
        frame["rel_path"] = frame["Path"].str.strip()
        frame["path"] = _join_all(root, frame["rel_path"])
        if split == "train":
            stems = frame["rel_path"].str.rsplit("/", n=1).str[-1].str.rsplit(".", n=1).str[0].str.split("_")
            frame["track"] = stems.str[-2]
            frame["frame"] = stems.str[-1]
        else:
            # Strings: _to_int below parses these columns with the .str accessor.
            frame["track"] = "-1"
            frame["frame"] = "-1"
        frame["split"] = split
        parts.append(_to_int(frame, [*_CSV_COLUMNS.values(), "track", "frame"], csv_path, problems))
    meta_path = root / "Meta.csv"
    if meta_path.is_file():
        frame = _read_csv(meta_path, ",", ("Path", "ClassId")).rename(columns={"ClassId": "class_id"})
        frame["rel_path"] = frame["Path"].str.strip()
        frame["path"] = _join_all(root, frame["rel_path"])
        for col in ("width", "height", "roi_x1", "roi_y1", "roi_x2", "roi_y2"):
            frame[col] = -1
        frame["track"] = -1
        frame["frame"] = -1
        frame["split"] = "meta"
        parts.append(_to_int(frame, ["class_id"], meta_path, problems))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(CATALOG_COLUMNS))


def _check_images(frame: pd.DataFrame, verify: Verify, problems: list[dict], progress: ProgressCallback | None) -> np.ndarray:
    """Open every image (header, or full decode); return a keep-mask and fill meta sizes."""
    keep = np.ones(len(frame), dtype=bool)
    total = len(frame)
    widths = frame["width"].to_numpy().copy()
    heights = frame["height"].to_numpy().copy()
    for i, (path, split) in enumerate(zip(frame["path"], frame["split"])):
        if i % 500 == 0:
            report(progress, "checking images", i, total)
        size, problem = _image_size(path, verify)
        if split == "meta" and problem is None:
            widths[i], heights[i] = size
        elif problem is None:
            problem = _size_problem(size, (widths[i], heights[i]))
        if problem is not None:
            problems.append({"path": path, "problem": problem})
            keep[i] = False
    report(progress, "checking images", total, total)
    frame["width"] = widths
    frame["height"] = heights
    return keep


def _image_size(path: str, verify: Verify) -> tuple[tuple[int, int], str | None]:
    """``((width, height), problem)`` from the header (``verify="header"``) or a full decode."""
    if verify == "full":  # the package's one decoder, as cook and stats read the file
        _, image, problem = inspect_image(path)
        return (0, 0) if image is None else (image.shape[1], image.shape[0]), problem
    try:
        with _open_image(path) as image:
            return image.size, None
    except FileNotFoundError:
        return (0, 0), "file missing"
    except IsADirectoryError:
        return (0, 0), "unreadable file (Is a directory)"
    except _PIL_ERRORS as exc:
        return (0, 0), _unreadable(exc)


def _drop(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``frame`` without the masked rows (no copy when there are none: the usual case)."""
    return frame[~rows].reset_index(drop=True) if rows.any() else frame


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Names, track ids and integer columns added; rows sorted by split, class and path."""
    names = {c: class_name(int(c)) for c in frame["class_id"].unique().tolist()}
    frame["class_name"] = frame["class_id"].map(names)
    frame["track_id"] = np.where(frame["split"] == "train", frame["class_id"] * TRACK_ID_FACTOR + frame["track"], -1)
    for col in _INT_COLUMNS:
        frame[col] = frame[col].astype(np.int64)
    rank = {"train": 0, "test": 1, "meta": 2}
    codes, splits_seen = pd.factorize(frame["split"], sort=False)
    split_rank = np.array([rank[s] for s in splits_seen.tolist()], dtype=np.int64)
    codes = split_rank[codes] if len(frame) else np.zeros(0, np.int64)
    # numpy sorts the unicode array in C (pandas would factorize the strings first)
    rel = np.array(frame["rel_path"].tolist(), dtype=str)
    order = np.lexsort((rel, frame["class_id"].to_numpy(), codes))
    return frame.iloc[order][list(CATALOG_COLUMNS)].reset_index(drop=True)


def read_catalog(
    root: str | Path,
    *,
    strict: bool = False,
    verify: Verify = "header",
    splits: tuple[str, ...] = ("train", "test", "meta"),
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Read a GTSRB tree (official or Kaggle layout) into a DataFrame, one row per image.

    Args:
        root: Folder holding the tree (the one that contains ``GTSRB/`` or ``Train.csv``).
        strict: Raise on the first problem instead of reporting and excluding bad rows.
        verify: ``"header"`` opens each image to check it exists, is an image and has the size
            the CSV gives; ``"full"`` also decodes the pixels (finds truncated files);
            ``"none"`` only checks that files exist.
        splits: Which splits to keep.
        progress: Optional ``progress(description, completed, total)`` callback.

    Returns:
        The catalog, sorted by split, class and path, with ``attrs`` ``root``, ``layout`` and
        ``problems`` (a list of ``{"path", "problem"}`` dicts for excluded rows).

    Raises:
        DataError: the folder holds no GTSRB tree, a CSV is unreadable, or (``strict``) any
            image or row has a problem.
    """
    root = Path(root).resolve()
    layout = detect_layout(root)
    problems: list[dict] = []
    frame = _official(root, problems) if layout == "official" else _kaggle(root, problems)
    frame = _drop(frame, ~frame["split"].isin(splits).to_numpy())

    dup = frame.duplicated(subset=["path"], keep="first").to_numpy()
    for p in frame.loc[dup, "path"]:
        problems.append({"path": p, "problem": "duplicate row in the annotation CSV (first kept)"})
    frame = _drop(frame, dup)

    bad_class = ~frame["class_id"].between(0, NUM_CLASSES - 1).to_numpy()
    for p, c in zip(frame.loc[bad_class, "path"], frame.loc[bad_class, "class_id"]):
        problems.append({"path": p, "problem": f"class id {c} is outside 0..{NUM_CLASSES - 1}"})
    frame = _drop(frame, bad_class)

    if verify == "none":
        exists = _existing_files(frame["path"].tolist())
        for p in frame.loc[~exists, "path"]:
            problems.append({"path": p, "problem": "file missing"})
        keep = exists
    else:
        keep = _check_images(frame, verify, problems, progress)
    frame = _drop(frame, ~keep)

    if len(frame):
        roi_bad = (
            (frame["roi_x1"] < 0) | (frame["roi_y1"] < 0)
            | (frame["roi_x2"] >= frame["width"]) | (frame["roi_y2"] >= frame["height"])
            | (frame["roi_x2"] <= frame["roi_x1"]) | (frame["roi_y2"] <= frame["roi_y1"])
        ) & (frame["split"] != "meta")
        for p in frame.loc[roi_bad, "path"]:
            problems.append({"path": p, "problem": "ROI lies outside the image"})
        frame = _drop(frame, roi_bad.to_numpy())

    frame = _finish(frame)
    if strict and problems:
        first = problems[0]
        raise DataError(
            f"{first['path']}: {first['problem']} ({len(problems)} problem(s) in {root}; "
            "fix or remove the files, or run without --strict to skip them)"
        )
    frame.attrs.update({"root": str(root), "layout": layout, "problems": problems})
    return frame


def catalog_problems(catalog: pd.DataFrame) -> pd.DataFrame:
    """The problems found while reading a catalog, as a DataFrame with ``path`` and ``problem``."""
    return pd.DataFrame(catalog.attrs.get("problems", []), columns=["path", "problem"])


def load_image(path: str | Path) -> np.ndarray:
    """Decode one image file (PPM, PNG, JPEG...) to an RGB ``uint8`` array of shape (H, W, 3).

    Raises:
        DataError: the file is missing or not a readable image.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file missing; check the path") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable file ({exc.strerror or exc}); check permissions") from None
    return decode_image_bytes(data, str(path))


# A binary 8-bit PPM (GTSRB's format): "P6", width, height, maxval 255, separated by whitespace
# or comment lines, then one whitespace byte and the RGB pixels.
_PPM_HEADER = re.compile(rb"P6(?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(255)\s")


_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError,
               Image.DecompressionBombWarning)
_OBJECT_REPR = re.compile(r"\s*(<[\w.]+ object at 0x[0-9a-fA-F]+>|'[^']*')")


def _open_image(source: str | io.BytesIO) -> Image.Image:
    """``Image.open`` with Pillow's decompression-bomb warning raised as an error (never printed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(source)


def _unreadable(exc: BaseException) -> str:
    """Pillow's reason, without the file object or name it quotes (the caller names the file)."""
    reason = _OBJECT_REPR.sub("", _first_line(exc)).strip() or type(exc).__name__
    return f"unreadable image ({reason})"


def _size_problem(size: tuple[int, int], expect: tuple[int, int] | None) -> str | None:
    if expect is None or tuple(size) == tuple(expect):
        return None
    return f"image is {size[0]}x{size[1]} but the CSV says {expect[0]}x{expect[1]}"


def _decode(data: bytes, expect: tuple[int, int] | None = None) -> tuple[np.ndarray | None, str | None]:
    """``(RGB array, None)`` or ``(None, problem)``; a size other than ``expect`` is a problem, found
    from the header before the pixels are decoded."""
    header = _PPM_HEADER.match(data)
    if header is not None:
        width, height = int(header[1]), int(header[2])
        count = width * height * 3
        if width and height and len(data) - header.end() >= count:
            problem = _size_problem((width, height), expect)
            if problem:
                return None, problem
            return np.frombuffer(data, np.uint8, count=count, offset=header.end()).reshape(height, width, 3), None
    try:
        with _open_image(io.BytesIO(data)) as image:
            problem = _size_problem(image.size, expect)
            if problem:
                return None, problem
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return np.asarray(image.convert("RGB")), None
    except _PIL_ERRORS as exc:
        return None, _unreadable(exc)


def decode_image_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an RGB ``uint8`` array (H, W, 3); errors name ``name``.

    Binary 8-bit PPMs are read without a copy (read-only); Pillow decodes anything else and
    says what is wrong with a broken file.

    Raises:
        DataError: not a readable image.
    """
    image, problem = _decode(data)
    if image is None:
        raise DataError(f"{name}: {problem}; re-download or remove it")
    return image


def inspect_image(path: str, expect: tuple[int, int] | None = None) -> tuple[bytes | None, np.ndarray | None, str | None]:
    """Read and decode one image file without raising: ``(file bytes, RGB array, problem)``.

    ``problem`` is None for a good image, else what is wrong with it: missing, unreadable, not an
    image, or (with ``expect`` = its CSV's ``(width, height)``) of another size.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, None, "file missing"
    except OSError as exc:
        return None, None, f"unreadable file ({exc.strerror or exc})"
    image, problem = _decode(data, expect)
    return data, image, problem


def image_digest(data: bytes) -> str:
    """The content hash of an image file's bytes (SHA-256, hex): equal digests, identical files."""
    return hashlib.sha256(data).hexdigest()


def shared_digests(train: Iterable[str | None], test: Iterable[str | None]) -> set[str]:
    """Digests (:func:`image_digest`) found among both the training and the test images."""
    return (set(train) & set(test)) - {None, ""}
