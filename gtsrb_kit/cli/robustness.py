"""`gtsrb-kit robustness` (the GTSRB-C benchmark) and `gtsrb-kit explain` (Grad-CAM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gtsrb_kit.cli._app import RootOption, app, console, is_interactive, progress_bar, resolve_root

ModelOption = Annotated[Path, typer.Option("--model", help="A .keras file (e.g. runs/x/best.keras).",
                                           show_default=False)]


@app.command("robustness")
def robustness_command(
    model: ModelOption,
    root: RootOption = None,  # type: ignore[assignment]
    out: Annotated[Path | None, typer.Option("--out", help="Folder for robustness.json and the PNGs. Default: "
                                             "<model folder>/robustness.", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the corruptions.")] = 0,
    scale: Annotated[float, typer.Option("--scale", help="Share of the test images (class-stratified).")] = 1.0,
    challenges: Annotated[str | None, typer.Option("--challenges", help="Comma-separated challenges. Default: all 12.",
                                                   show_default=False)] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Another .keras model: adds the corruption "
                                                  "errors relative to it (mCE).", show_default=False)] = None,
    write: Annotated[Path | None, typer.Option("--write", help="Also save every corrupted test set as a cooked "
                                               "HDF5 file under this folder.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="Corrupting processes (default: one per "
                                                "CPU; 0 = none).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Accuracy of a model on GTSRB-C: the raw test images under 12 challenges at 5 levels each."""
    from gtsrb_kit.corrupt import CHALLENGES
    from gtsrb_kit.robustness import run_robustness

    chosen = CHALLENGES if challenges is None else [c.strip() for c in challenges.split(",") if c.strip()]
    with progress_bar(is_interactive()) as progress:
        result = run_robustness(model, resolve_root(root), out=out, seed=seed, scale=scale, challenges=chosen,
                                baseline=baseline, write=write, workers=workers, progress=progress)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"GTSRB-C accuracy of {model} ({result['images']:,} test images)", title_justify="left")
    for column in ("challenge", "1", "2", "3", "4", "5", "mean"):
        table.add_column(column, justify="left" if column == "challenge" else "right")
    for name, entry in result["challenges"].items():
        table.add_row(name, *(f"{a:.4f}" for a in entry["accuracy"]), f"{entry['mean']:.4f}")
    console.print(table)
    extra = f"; mCE {result['baseline']['mce']:.3f} against {baseline}" if "baseline" in result else ""
    console.print(f"robustness: clean accuracy {result['clean_accuracy']:.4f}, mean corruption accuracy "
                  f"{result['mean_corruption_accuracy']:.4f} (hardest: {', '.join(result['hardest'])}){extra}; "
                  f"{result['seconds']:.0f} s", highlight=False, soft_wrap=True)


@app.command("explain")
def explain_command(
    model: ModelOption,
    data: Annotated[Path | None, typer.Option("--data", help="A cooked set-*.h5 file. Default: the run's own data "
                                              "file (config.json beside the model).", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="test, val, train or meta.")] = "test",
    out: Annotated[Path | None, typer.Option("--out", help="Output folder. Default: <model folder>/explain.",
                                             show_default=False)] = None,
    count: Annotated[int, typer.Option("--count", min=1, max=200, help="Images per grid.")] = 24,
) -> None:
    """Grad-CAM heat maps over a model's most confident mistakes and the weakest classes (PNG grids)."""
    from gtsrb_kit.explain import explain
    from gtsrb_kit.runs import run_data
    from gtsrb_kit.train import default_data_file

    if data is None:
        data = run_data(model.parent) or default_data_file()
    result = explain(model, data, split=split, out=out, count=count)
    weak = ", ".join(f"{c} ({r:.3f})" for c, r in result["weak_classes"].items())
    console.print(f"explain: Grad-CAM at layer {result['layer']}; weakest classes by recall: {weak}; wrote "
                  f"{result['files']['errors']} and {result['files']['weak_classes']}", highlight=False, soft_wrap=True)
