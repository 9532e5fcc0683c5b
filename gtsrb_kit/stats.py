"""Dataset statistics: counts per class, sizes, ROIs, tracks, brightness, contrast, sharpness
and byte-identical train/test images, written as JSON, CSV and PNG plots (``docs/data.md``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gtsrb_kit.catalog import image_digest, inspect_image, load_image, shared_digests
from gtsrb_kit.classes import NUM_CLASSES, class_name
from gtsrb_kit.errors import DataError
from gtsrb_kit.fileio import atomic_path, write_json
from gtsrb_kit.plotting import image_grid, pyplot, save_png, wrap
from gtsrb_kit.progress import ProgressCallback, report
from gtsrb_kit.workers import available_cores, ordered, process_pool

#: Files :func:`write_stats` writes (plots only with ``plots=True``).
DATA_FILES: tuple[str, ...] = ("stats.json", "classes.csv", "images.csv")
PLOT_FILES: tuple[str, ...] = (
    "class_counts.png", "sizes.png", "samples.png", "brightness.png",
    "darkest.png", "smallest.png", "blurriest.png",
)
_MEASURES = ("brightness", "contrast", "sharpness")
_CHUNK = 400
_POOL_MIN_IMAGES = 3000  # below this a process pool costs more than it saves
_DARK = 40  # mean luminance below which an image counts as dark


# --------------------------------------------------------------------------- per-image measures

def measure_image(path: str | os.PathLike[str]) -> tuple[float, float, float, int, int, str]:
    """Measure one image file.

    Returns:
        ``(brightness, contrast, sharpness, width, height, sha256)``: mean and standard
        deviation of the luminance (ITU-R 601, 0..255), variance of its 4-neighbour Laplacian
        (low = blurry), the decoded size and the SHA-256 of the file's bytes.

    Raises:
        DataError: the file is missing, unreadable or not a decodable image.
    """
    data, rgb, problem = inspect_image(str(path))
    if rgb is None:
        raise DataError(f"{path}: {problem}; re-download or remove it")
    return (*_measures(rgb), rgb.shape[1], rgb.shape[0], image_digest(data))


def _measures(rgb: np.ndarray) -> tuple[float, float, float]:
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(gray)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_64F))
    return float(mean[0, 0]), float(std[0, 0]), float(lap_std[0, 0]) ** 2


def _measure_chunk(items: list[tuple[str, tuple[int, int] | None]]) -> tuple[np.ndarray, list[str], list[str]]:
    """Measures of many ``(path, expected size)``: (n, 3) float array, hashes, problems ('' when fine)."""
    values = np.full((len(items), 3), np.nan)
    hashes = [""] * len(items)
    errors = [""] * len(items)
    for i, (path, expect) in enumerate(items):
        data, rgb, problem = inspect_image(path, expect)
        if data is not None:
            hashes[i] = image_digest(data)
        if problem is None:
            values[i] = _measures(rgb)
        errors[i] = problem or ""
    return values, hashes, errors


def measure_images(
    paths: list[str], *, sizes: list[tuple[int, int]] | None = None, workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Measure many images (see :func:`measure_image`), in a process pool when worth it.

    Args:
        paths: Image files.
        sizes: Their expected ``(width, height)``: another size counts as an error.
        workers: Processes; ``None`` = one per CPU (at most 8), ``0`` or ``1`` = in this process.
        progress: Optional ``progress(description, completed, total)`` callback.

    Returns:
        A DataFrame aligned with ``paths``: ``brightness``, ``contrast``, ``sharpness`` (NaN
        for bad images), ``sha256`` and ``error`` ('' when fine).
    """
    total = len(paths)
    items = list(zip(paths, sizes or [None] * total))
    chunks = [items[i:i + _CHUNK] for i in range(0, total, _CHUNK)]
    if workers is None:
        workers = min(8, available_cores()) if total >= _POOL_MIN_IMAGES else 1
    results: list[tuple[np.ndarray, list[str], list[str]]] = []
    done = 0
    report(progress, "measuring images", 0, total)
    with process_pool(workers if len(chunks) > 1 else 1, preload=__name__) as pool:
        for chunk, result in ordered(pool, _measure_chunk, chunks, max(2, 2 * workers)):
            results.append(result)
            done += len(chunk)
            report(progress, "measuring images", done, total)
    values = np.concatenate([r[0] for r in results]) if results else np.empty((0, 3))
    return pd.DataFrame({
        "brightness": values[:, 0], "contrast": values[:, 1], "sharpness": values[:, 2],
        "sha256": [h for r in results for h in r[1]], "error": [e for r in results for e in r[2]],
    })


# --------------------------------------------------------------------------- dataset statistics


@dataclass
class DatasetStats:
    """Everything :func:`compute_stats` found.

    Attributes:
        summary: JSON-ready dict (what ``stats.json`` holds).
        per_class: One row per class id 0..42 (``classes.csv``).
        per_image: The catalog's readable train/test rows plus ``brightness``,
            ``contrast``, ``sharpness``, ``sha256``, ``aspect``, ``roi_width`` and
            ``roi_height`` (``images.csv``).
        shared: Groups of byte-identical images found in both training and test set.
    """

    summary: dict[str, Any]
    per_class: pd.DataFrame
    per_image: pd.DataFrame
    shared: list[dict[str, Any]] = field(default_factory=list)


def _describe(values: pd.Series | np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {}
    q = np.percentile(v, [5, 50, 95])
    return {"min": _num(v.min()), "p5": _num(q[0]), "median": _num(q[1]), "mean": _num(v.mean()),
            "p95": _num(q[2]), "max": _num(v.max())}


def _num(x: float) -> float | int:
    x = float(x)
    return int(x) if x.is_integer() else round(x, 3)


def find_shared_images(per_image: pd.DataFrame) -> list[dict[str, Any]]:
    """Groups of byte-identical files that appear in both the training and the test set.

    Args:
        per_image: Rows with ``split``, ``rel_path``, ``class_id``, ``sha256``.

    Returns:
        One dict per distinct content: ``sha256``, ``class_ids``, ``train`` and ``test``
        (sorted relative paths), ordered by the first training path.
    """
    rows = per_image
    both = shared_digests(rows.loc[rows["split"] == "train", "sha256"], rows.loc[rows["split"] == "test", "sha256"])
    groups = []
    for digest, group in rows[rows["sha256"].isin(both)].groupby("sha256"):
        groups.append({
            "sha256": str(digest),
            "class_ids": sorted(int(c) for c in group["class_id"].unique()),
            "train": sorted(group.loc[group["split"] == "train", "rel_path"].astype(str)),
            "test": sorted(group.loc[group["split"] == "test", "rel_path"].astype(str)),
        })
    return sorted(groups, key=lambda g: g["train"][0])


def _extremes(per_image: pd.DataFrame, column: str, n: int, ascending: bool = True) -> list[dict[str, Any]]:
    ok = per_image[np.isfinite(per_image[column].astype(float))]
    picked = ok.sort_values([column, "rel_path"], ascending=[ascending, True], kind="stable").head(n)
    return [{"rel_path": str(r.rel_path), "split": str(r.split), "class_id": int(r.class_id),
             "width": int(r.width), "height": int(r.height), column: _num(getattr(r, column))}
            for r in picked.itertuples()]


def _measure_catalog(catalog: pd.DataFrame, *, workers: int | None, strict: bool,
                     progress: ProgressCallback | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measures of every training and test image, and the rows of the bad ones (left out)."""
    images = catalog[catalog["split"].isin(["train", "test"])].reset_index(drop=True)
    if images.empty:
        raise DataError(f"{catalog.attrs.get('root', 'catalog')}: no training or test images to measure; "
                        "check --root")
    # The catalog may have been read without opening the images (verify="none"): the decoded
    # size is checked here instead, at no extra cost.
    sizes = list(zip(images["width"].tolist(), images["height"].tolist()))
    measures = measure_images(list(images["path"]), sizes=sizes, workers=workers, progress=progress)
    per_image = pd.concat([images, measures], axis=1)
    per_image["aspect"] = (per_image["width"] / per_image["height"]).round(4)
    per_image["roi_width"] = per_image["roi_x2"] - per_image["roi_x1"] + 1
    per_image["roi_height"] = per_image["roi_y2"] - per_image["roi_y1"] + 1
    unreadable = per_image[per_image["error"] != ""]
    if strict and len(unreadable):
        first = unreadable.iloc[0]
        raise DataError(f"{first['path']}: {first['error']} ({len(unreadable)} bad image(s); "
                        "fix or remove them, or run without --strict to skip them)")
    # Bad images stay listed in the summary but out of every statistic.
    return per_image[per_image["error"] == ""].drop(columns="error").reset_index(drop=True), unreadable


def _per_class(per_image: pd.DataFrame) -> pd.DataFrame:
    """Counts, shares and median measures of every class."""
    train = per_image[per_image["split"] == "train"]
    test = per_image[per_image["split"] == "test"]
    ids = pd.Index(range(NUM_CLASSES), name="class_id")
    per_class = pd.DataFrame(index=ids)
    per_class["class_name"] = [class_name(i) for i in ids]
    per_class["train"] = train.groupby("class_id").size().reindex(ids, fill_value=0)
    per_class["test"] = test.groupby("class_id").size().reindex(ids, fill_value=0)
    per_class["tracks"] = train.groupby("class_id")["track_id"].nunique().reindex(ids, fill_value=0)
    per_class["train_pct"] = (100 * per_class["train"] / max(1, len(train))).round(2)
    per_class["test_pct"] = (100 * per_class["test"] / max(1, len(test))).round(2)
    grouped = per_image.groupby("class_id")
    per_class["brightness_mean"] = grouped["brightness"].mean().reindex(ids).round(2)
    per_class["brightness_std"] = grouped["brightness"].std(ddof=0).reindex(ids).round(2)
    per_class["contrast_mean"] = grouped["contrast"].mean().reindex(ids).round(2)
    per_class["sharpness_median"] = grouped["sharpness"].median().reindex(ids).round(1)
    per_class["roi_width_median"] = grouped["roi_width"].median().reindex(ids)
    return per_class.reset_index()


def _summary(catalog: pd.DataFrame, per_image: pd.DataFrame, per_class: pd.DataFrame, shared: list[dict[str, Any]],
             unreadable: pd.DataFrame, top: int) -> dict[str, Any]:
    """The JSON summary of a measured catalog."""
    train = per_image[per_image["split"] == "train"]
    test = per_image[per_image["split"] == "test"]
    hashed = per_image[per_image["sha256"] != ""]
    within = {s: int(len(g) - g["sha256"].nunique()) for s, g in hashed.groupby("split")}
    counts = per_class.set_index("class_id")["train"]
    present = counts[counts > 0]
    tracks = per_class.set_index("class_id")["tracks"]
    return {
        "root": str(catalog.attrs.get("root", "")),
        "layout": str(catalog.attrs.get("layout", "")),
        "images": {"train": len(train), "test": len(test), "meta": int((catalog["split"] == "meta").sum())},
        "classes": {"train": int((per_class["train"] > 0).sum()), "test": int((per_class["test"] > 0).sum())},
        "tracks": {"total": int(train["track_id"].nunique()), "per_class": _describe(tracks[tracks > 0])},
        "class_balance": {
            "largest": {"class_id": int(present.idxmax()), "train": int(present.max())} if len(present) else {},
            "smallest": {"class_id": int(present.idxmin()), "train": int(present.min())} if len(present) else {},
            "ratio": _num(present.max() / present.min()) if len(present) else None,
        },
        "image_width": _describe(per_image["width"]),
        "image_height": _describe(per_image["height"]),
        "roi_width": _describe(per_image["roi_width"]),
        "roi_height": _describe(per_image["roi_height"]),
        "aspect_ratio": _describe(per_image["aspect"]),
        "brightness": _describe(per_image["brightness"]),
        "contrast": _describe(per_image["contrast"]),
        "sharpness": _describe(per_image["sharpness"]),
        "dark_images": {"below_40": int((per_image["brightness"] < _DARK).sum()),
                        "below_25": int((per_image["brightness"] < 25).sum())},
        "shared_train_test": {
            "groups": len(shared),
            "train_images": sum(len(g["train"]) for g in shared),
            "test_images": sum(len(g["test"]) for g in shared),
            "items": shared,
        },
        "duplicates_within_split": {"train": within.get("train", 0), "test": within.get("test", 0)},
        "darkest": _extremes(per_image, "brightness", top),
        "smallest": _extremes(per_image.assign(area=per_image["width"] * per_image["height"]), "area", top),
        # Dark images have a low Laplacian variance whatever their focus (and darkest.png shows
        # them already), so the blurriest are picked among images that are not dark.
        "blurriest": _extremes(lit if len(lit := per_image[per_image["brightness"] >= _DARK]) else per_image,
                               "sharpness", top),
        "image_problems": [{"path": str(p), "problem": e} for p, e in zip(unreadable["path"], unreadable["error"])],
        "catalog_problems": [dict(p) for p in catalog.attrs.get("problems", [])],
    }


def compute_stats(
    catalog: pd.DataFrame,
    *,
    workers: int | None = None,
    top: int = 24,
    strict: bool = False,
    progress: ProgressCallback | None = None,
) -> DatasetStats:
    """Measure a catalog: counts, sizes, brightness/contrast/sharpness, shared images.

    Args:
        catalog: From :func:`~gtsrb_kit.catalog.read_catalog` (``meta`` rows are ignored).
        workers: Processes for decoding (see :func:`measure_images`).
        top: How many images the darkest/smallest/blurriest lists keep.
        strict: Raise on the first unreadable image or size that disagrees with the CSV
            (otherwise they are listed in ``summary["image_problems"]`` and left out).
        progress: Optional ``progress(description, completed, total)`` callback.

    Raises:
        DataError: the catalog holds no training or test image, or (``strict``) an image is
            unreadable or has another size than its CSV row says.
    """
    started = time.perf_counter()
    per_image, unreadable = _measure_catalog(catalog, workers=workers, strict=strict, progress=progress)
    per_class = _per_class(per_image)
    shared = find_shared_images(per_image)
    summary = _summary(catalog, per_image, per_class, shared, unreadable, top)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return DatasetStats(summary=summary, per_class=per_class, per_image=per_image, shared=shared)


# --------------------------------------------------------------------------- writing


def _grid(paths: list[str], labels: list[str], out: Path, title: str, cols: int) -> None:
    images = []
    for path in paths:
        try:
            images.append(load_image(path))
        except DataError:
            images.append(None)
    image_grid(images, labels, out, title=title, cols=cols)


def write_stats(
    stats: DatasetStats,
    out: str | os.PathLike[str],
    *,
    plots: bool = True,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Write ``stats.json``, ``classes.csv``, ``images.csv`` and (``plots``) the PNG plots.

    Every file is written atomically. Returns the paths written, in :data:`DATA_FILES` then
    :data:`PLOT_FILES` order.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    written.append(write_json(out / "stats.json", stats.summary))
    with atomic_path(out / "classes.csv") as tmp:
        stats.per_class.to_csv(tmp, index=False)
    written.append(out / "classes.csv")
    columns = ["split", "rel_path", "class_id", "width", "height", "roi_x1", "roi_y1", "roi_x2", "roi_y2",
               "track_id", "brightness", "contrast", "sharpness", "sha256"]
    with atomic_path(out / "images.csv") as tmp:
        stats.per_image[columns].to_csv(tmp, index=False, float_format="%.3f")
    written.append(out / "images.csv")
    if plots:
        written += _write_plots(stats, out, progress)
    return written


def _class_counts_figure(plt: Any, pc: pd.DataFrame) -> Any:
    x = np.arange(len(pc))
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.bar(x - 0.2, pc["train"], 0.4, label=f"train ({int(pc['train'].sum())})", color="#3b6fb6")
    ax.bar(x + 0.2, pc["test"], 0.4, label=f"test ({int(pc['test'].sum())})", color="#e08a2c")
    ax.set_xticks(x, [str(i) for i in pc["class_id"]], fontsize=7)
    ax.set_xlabel("class id")
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    ax.legend()
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.13, top=0.92)
    return fig


def _sizes_figure(plt: Any, pi: pd.DataFrame) -> Any:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    hi = max(int(pi[["width", "height"]].max().max()), 20)
    bins = np.arange(0, hi + 6, 5)
    axes[0].hist([pi["width"], pi["height"]], bins=bins, label=["width", "height"], color=["#3b6fb6", "#e08a2c"])
    axes[0].set_title("Image size (px)")
    axes[0].legend()
    axes[1].hist([pi["roi_width"], pi["roi_height"]], bins=bins, label=["width", "height"],
                 color=["#3b6fb6", "#e08a2c"])
    axes[1].set_title("Sign (ROI) size (px)")
    axes[1].legend()
    axes[2].hist(pi["aspect"], bins=40, color="#555555")
    axes[2].set_title("Aspect ratio (width / height)")
    for a in axes:
        a.set_ylabel("images")
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.92, wspace=0.3)
    return fig


def _sample_per_class(pi: pd.DataFrame) -> tuple[list[str], list[str]]:
    """One sample per class: a large, not-too-dark training image (test if no training image)."""
    paths, labels = [], []
    for cid in range(NUM_CLASSES):
        rows = pi[(pi["class_id"] == cid) & (pi["split"] == "train")]
        rows = rows if len(rows) else pi[pi["class_id"] == cid]
        if rows.empty:
            continue
        bright = rows[rows["brightness"] >= rows["brightness"].median()]
        best = bright.sort_values(["roi_width", "rel_path"], ascending=[False, True], kind="stable").iloc[0]
        paths.append(str(best["path"]))
        labels.append(wrap(f"{cid}: {class_name(cid)}", 16, 4))
    return paths, labels


def _brightness_figure(plt: Any, pc: pd.DataFrame) -> Any:
    x = np.arange(len(pc))
    fig, axes = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True)
    axes[0].bar(x, pc["brightness_mean"], yerr=pc["brightness_std"], color="#d9a520", ecolor="#666666",
                capsize=2)
    axes[0].set_ylabel("mean luminance")
    axes[0].set_title("Brightness per class (mean ± std over images; 0 = black, 255 = white)")
    axes[1].bar(x, pc["contrast_mean"], color="#6a51a3")
    axes[1].set_ylabel("luminance std")
    axes[1].set_title("Contrast per class (mean over images of the luminance standard deviation)")
    axes[1].set_xticks(x, [str(i) for i in pc["class_id"]], fontsize=7)
    axes[1].set_xlabel("class id")
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.1, top=0.94, hspace=0.25)
    return fig


def _write_plots(stats: DatasetStats, out: Path, progress: ProgressCallback | None) -> list[Path]:
    plt = pyplot()

    pc, pi = stats.per_class, stats.per_image
    written: list[Path] = []
    total = len(PLOT_FILES)

    def mark(name: str) -> None:
        written.append(out / name)
        report(progress, "drawing plots", len(written), total)

    report(progress, "drawing plots", 0, total)
    for name, fig in (("class_counts.png", _class_counts_figure(plt, pc)), ("sizes.png", _sizes_figure(plt, pi))):
        save_png(fig, out / name)
        mark(name)
    paths, labels = _sample_per_class(pi)
    _grid(paths, labels, out / "samples.png", "One sample per class", cols=9)
    mark("samples.png")
    save_png(_brightness_figure(plt, pc), out / "brightness.png")
    mark("brightness.png")
    by_rel = dict(zip(pi["rel_path"], pi["path"]))
    for name, key, title, fmt in (
        ("darkest.png", "darkest", "Darkest images (mean luminance)", "{:.1f}"),
        ("smallest.png", "smallest", "Smallest images (width x height)", None),
        ("blurriest.png", "blurriest", f"Blurriest images not darker than {_DARK} (variance of the Laplacian)",
         "{:.1f}"),
    ):
        items = stats.summary[key]
        labs = []
        for it in items:
            value = f"{it['width']}x{it['height']}" if fmt is None else fmt.format(it[_value_key(it)])
            labs.append(f"class {it['class_id']} ({it['split']})\n{value}")
        _grid([by_rel[it["rel_path"]] for it in items], labs, out / name, title, cols=8)
        mark(name)
    return written


def _value_key(item: dict[str, Any]) -> str:
    return next(k for k in ("brightness", "sharpness", "area") if k in item)
