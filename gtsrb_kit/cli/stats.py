"""`gtsrb-kit stats`: counts, sizes, brightness, blur and shared images of a GTSRB tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gtsrb_kit.cli._app import RootOption, app, console, is_interactive, progress_bar, resolve_root
from gtsrb_kit.paths import default_data_dir


def _range(d: dict[str, Any], unit: str = "") -> str:
    return f"{d['min']}-{d['max']}{unit} (median {d['median']}{unit})" if d else "-"


@app.command("stats")
def stats(
    root: RootOption = None,  # type: ignore[assignment]
    out: Annotated[Path | None, typer.Option("--out", help="Folder for stats.json, CSVs and plots. "
                                             "Default: ./data/stats ($GTSRB_KIT_DATA/stats).",
                                             show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first bad file or row instead of "
                                         "skipping it.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the PNG plots.")] = True,
    top: Annotated[int, typer.Option("--top", min=1, max=200, help="Images in the darkest/smallest/blurriest "
                                     "grids.")] = 24,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="Decoding processes (default: one per "
                                                "CPU for large sets; 0 = none).", show_default=False)] = None,
) -> None:
    """Measure a GTSRB tree: per-class counts, sizes, brightness/contrast, blur, train/test overlap.

    Writes stats.json, classes.csv, images.csv and PNG plots (class histogram, sizes, one sample
    per class, brightness per class, the darkest/smallest/blurriest images) to --out.
    """
    from gtsrb_kit.catalog import read_catalog
    from gtsrb_kit.stats import compute_stats, write_stats

    target = resolve_root(root)
    out_dir = out if out is not None else default_data_dir() / "stats"
    with progress_bar(is_interactive()) as progress:
        # verify="none": compute_stats decodes every image anyway and checks sizes itself.
        catalog = read_catalog(target, strict=strict, verify="none", progress=progress)
        result = compute_stats(catalog, workers=workers, top=top, strict=strict, progress=progress)
        written = write_stats(result, out_dir, plots=plots, progress=progress)

    s, pc = result.summary, result.per_class
    table = Table(title=f"GTSRB classes in {s['root']} ({s['layout']} layout)", show_lines=False)
    for name, justify in (("id", "right"), ("name", "left"), ("train", "right"), ("test", "right"),
                          ("tracks", "right"), ("train %", "right"), ("brightness", "right"),
                          ("contrast", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in pc.itertuples():
        table.add_row(str(row.class_id), row.class_name, str(row.train), str(row.test), str(row.tracks),
                      f"{row.train_pct:.1f}", _fmt(row.brightness_mean), _fmt(row.contrast_mean))
    table.add_row("", "total", str(int(pc["train"].sum())), str(int(pc["test"].sum())),
                  str(s["tracks"]["total"]), "100.0", _fmt(s["brightness"].get("mean")),
                  _fmt(s["contrast"].get("mean")), style="bold")
    console.print(table)

    shared = s["shared_train_test"]
    balance = s["class_balance"]
    lines = [
        f"images: {s['images']['train']} train ({s['classes']['train']} classes, {s['tracks']['total']} tracks), "
        f"{s['images']['test']} test",
        f"class balance: largest {balance['largest'].get('class_id')} ({balance['largest'].get('train')}), "
        f"smallest {balance['smallest'].get('class_id')} ({balance['smallest'].get('train')}), "
        f"ratio {balance['ratio']}",
        f"image size: width {_range(s['image_width'], ' px')}, height {_range(s['image_height'], ' px')}",
        f"sign (ROI) width: {_range(s['roi_width'], ' px')}",
        f"brightness: median {s['brightness'].get('median')}, {s['dark_images']['below_40']} images darker than 40/255",
        f"train/test overlap: {shared['groups']} identical image(s) in both sets"
        + (f" (classes {sorted({c for g in shared['items'] for c in g['class_ids']})})" if shared["groups"] else ""),
        f"duplicates within a set: train {s['duplicates_within_split']['train']}, "
        f"test {s['duplicates_within_split']['test']}",
    ]
    problems = len(s["catalog_problems"]) + len(s["image_problems"])
    if problems:
        lines.append(f"[yellow]{problems} bad file(s)/row(s) skipped (listed in stats.json)[/]")
    lines.append(f"wrote {len(written)} files to {out_dir}")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"
