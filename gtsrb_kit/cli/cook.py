"""`gtsrb-kit cook` (enhanced HDF5 datasets) and `gtsrb-kit info` (what a cooked file holds)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gtsrb_kit.cli._app import (
    DataDirOption,
    RootOption,
    app,
    console,
    err_console,
    is_interactive,
    progress_bar,
    resolve_data_dir,
    resolve_root,
)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


@app.command("cook")
def cook(
    root: RootOption = None,  # type: ignore[assignment]
    out: DataDirOption = None,  # type: ignore[assignment]
    scale: Annotated[float, typer.Option("--scale", help="Fraction of whole tracks per class (train/val) and of "
                                         "test images per class, in (0, 1].")] = 1.0,
    size: Annotated[list[int] | None, typer.Option("--size", help="Image side; repeat for several. "
                                                   "Default: 24 and 48.", show_default=False)] = None,
    mode: Annotated[list[str] | None, typer.Option("--mode", help="RGB, RGB-HE, L, L-HE, L-LHE or L-CLAHE; repeat "
                                                   "for several. Default: RGB, RGB-HE, L, L-LHE.",
                                                   show_default=False)] = None,
    roi_crop: Annotated[bool, typer.Option("--roi-crop", help="Crop to the annotated sign before resizing "
                                           "(files get a -roi suffix).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and subsampling; same seed, "
                                      "byte-identical files.")] = 0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Fraction of each class's tracks for "
                                                "validation, in [0, 1).")] = 0.2,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes. Default: all cores.",
                                                show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild files that are already complete.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first unreadable image or catalog "
                                         "problem instead of skipping it.")] = False,
    keep_test_duplicates: Annotated[bool, typer.Option("--keep-test-duplicates", help="Keep training tracks "
                                                       "holding an image byte-identical to a test image.")] = False,
) -> None:
    """Cook enhanced HDF5 datasets: one set-{size}x{size}-{mode}.h5 per variant.

    Validation is split by track (stratified by class, seeded); files are written atomically and
    skipped on a rerun when complete with the same recipe. Load them with
    gtsrb_kit.store.load_split or tf_dataset.
    """
    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.enhance import DEFAULT_MODES, DEFAULT_SIZES

    source = resolve_root(root)
    target = resolve_data_dir(out)
    started = time.perf_counter()
    with progress_bar(is_interactive()) as progress:
        results = cook_dataset(
            source, target, sizes=tuple(size) if size else DEFAULT_SIZES,
            modes=tuple(mode) if mode else DEFAULT_MODES, roi_crop=roi_crop, scale=scale, seed=seed,
            val_fraction=val_fraction, force=force, workers=workers, strict=strict,
            keep_test_duplicates=keep_test_duplicates, progress=progress,
        )
    elapsed = time.perf_counter() - started

    table = Table(title=f"cooked datasets in {target}", title_justify="left")
    for column in ("file", "train", "val", "test", "meta", "size on disk", "status"):
        table.add_column(column, justify="left" if column in ("file", "status") else "right")
    for r in results:
        table.add_row(
            r.path.name, *(f"{r.counts.get(s, 0):,}" for s in ("train", "val", "test", "meta")),
            _human(r.bytes), "up to date (skipped)" if r.skipped else "written",
        )
    console.print(table)
    written = [r for r in results if not r.skipped]
    first = results[0]
    total_bytes = sum(r.bytes for r in results)
    console.print(
        f"cook: {len(written)} written, {len(results) - len(written)} up to date; "
        f"{sum(first.counts.values()):,} images per file; {_human(total_bytes)} in all; "
        f"scale {scale:g}, seed {seed}; {elapsed:.1f} s",
        highlight=False, soft_wrap=True,
    )
    if first.dropped_duplicate_tracks:
        console.print(
            f"cook: dropped {first.dropped_duplicate_tracks} training track(s) holding images byte-identical to "
            "test images (--keep-test-duplicates keeps them)", highlight=False, soft_wrap=True,
        )
    problems = list({p["path"]: p for r in written for p in r.problems}.values())  # the same images in every file
    if problems:
        err_console.print(
            f"warning: skipped {len(problems)} image(s) with problems, e.g. {problems[0]['path']}: "
            f"{problems[0]['problem']} (--strict stops instead)", highlight=False, soft_wrap=True,
        )


@app.command("info")
def info(
    file: Annotated[Path, typer.Argument(help="A cooked set-*.h5 file, or a folder of them.", show_default=False)],
) -> None:
    """Show what a cooked HDF5 file holds: attributes and images per split."""
    from gtsrb_kit.errors import DataError
    from gtsrb_kit.store import read_info

    files = sorted(file.glob("set-*.h5")) if file.is_dir() else [file]
    if not files:
        raise DataError(f"{file}: no set-*.h5 files in this folder; run 'gtsrb-kit cook' first")
    for path in files:
        data = read_info(path)
        splits = data.pop("splits")
        table = Table(title=f"{path} ({_human(data['bytes'])})", title_justify="left")
        for column in ("split", "images", "shape", "dtype", "classes", "tracks"):
            table.add_column(column, justify="left" if column in ("split", "dtype", "shape") else "right")
        for name, s in splits.items():
            table.add_row(name, f"{s['count']:,}", "x".join(map(str, s["shape"])), s["dtype"], str(s["classes"]),
                          str(s.get("tracks", "")))
        console.print(table)
        names = data.pop("class_names", [])
        recipe = data.pop("recipe", {})
        data.pop("path", None)
        data.pop("bytes", None)
        for key, value in data.items():
            console.print(f"  {key}: {value}", highlight=False, soft_wrap=True)
        console.print(f"  class_names: {len(names)} ({', '.join(map(str, names[:3]))}, ...)", highlight=False,
                      soft_wrap=True)
        if isinstance(recipe, dict):
            console.print("  recipe: " + ", ".join(f"{k}={v}" for k, v in sorted(recipe.items())
                                                   if k != "source_fingerprint"), highlight=False, soft_wrap=True)
