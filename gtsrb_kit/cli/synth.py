"""`gtsrb-kit synth`: write a small synthetic GTSRB dataset (works offline)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from gtsrb_kit.cli._app import RootOption, app, console, is_interactive, progress_bar, resolve_root


class _Layout(str, Enum):
    official = "official"
    kaggle = "kaggle"


@app.command("synth")
def synth(
    root: RootOption = None,  # type: ignore[assignment]
    layout: Annotated[_Layout, typer.Option("--layout", help="official (PPM + GT-*.csv) or kaggle (PNG + Train.csv).")]
    = _Layout.official,
    archives: Annotated[bool, typer.Option("--archives", help="Also write ROOT/archives/ with the three official zips "
                                           "and SHA256SUMS (official layout).")] = False,
    tracks_per_class: Annotated[int, typer.Option("--tracks-per-class", min=1, help="Mean tracks per class.")] = 20,
    frames_per_track: Annotated[int, typer.Option("--frames-per-track", min=1, help="Frames per track.")] = 10,
    test_per_class: Annotated[int, typer.Option("--test-per-class", min=1, help="Mean test images per class.")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same files (byte for byte).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder that synth did not write, "
                                        "replacing its GTSRB entries.")] = False,
) -> None:
    """Draw a small synthetic GTSRB dataset (43 classes, tracks of growing signs) into --root.

    Needs no network: use it to try every command offline. Same seed, same bytes.
    """
    from gtsrb_kit.synth import MARKER, generate_dataset

    target = resolve_root(root)
    with progress_bar(is_interactive()) as progress:
        out = generate_dataset(
            Path(target), tracks_per_class=tracks_per_class, frames_per_track=frames_per_track,
            test_per_class=test_per_class, seed=seed, layout=layout.value, archives=archives, force=force,
            progress=progress,
        )
    counts = json.loads((out / MARKER).read_text())["counts"]
    extra = ", archives/ with 3 zips" if archives else ""
    console.print(
        f"synth: wrote {counts['train']} training images ({counts['tracks']} tracks) and "
        f"{counts['test']} test images, 43 classes, {layout.value} layout{extra}, seed {seed} -> {out}",
        highlight=False, soft_wrap=True,
    )
