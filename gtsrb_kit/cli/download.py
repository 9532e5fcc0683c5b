"""`gtsrb-kit download`: fetch, verify and unpack the official GTSRB archives."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from gtsrb_kit.cli._app import RootOption, app, is_interactive, progress_bar, resolve_root
from gtsrb_kit.download import PARTS, RetryPolicy, download_gtsrb


class OnlyPart(str, Enum):
    """Which part of the data set to fetch."""

    train = "train"
    test = "test"


@app.command("download")
def download_command(
    root: RootOption = None,  # type: ignore[assignment]
    mirror: Annotated[
        Optional[list[str]],
        typer.Option("--mirror", metavar="URL",
                     help="Folder URL holding the archives; repeatable, tried in order before the official site."),
    ] = None,
    official: Annotated[
        bool, typer.Option("--official/--no-official", help="Also try the official site (after any mirrors).")
    ] = True,
    checksums: Annotated[
        Optional[Path],
        typer.Option("--checksums", metavar="FILE", dir_okay=False,
                     help="SHA256SUMS file ('HEX  NAME' lines) overriding the built-in checksums, e.g. for a private mirror."),
    ] = None,
    source: Annotated[
        Optional[Path],
        typer.Option("--from", metavar="PATH",
                     help="Offline: import archives from this folder (or its archives/), one archive file, "
                     "or an extracted tree."),
    ] = None,
    only: Annotated[
        Optional[OnlyPart], typer.Option("--only", help="Fetch only the training or only the test part (images + labels).")
    ] = None,
    keep_archives: Annotated[
        bool, typer.Option("--keep-archives/--no-keep-archives", help="Keep verified archives under ROOT/archives.")
    ] = True,
    extract: Annotated[
        bool, typer.Option("--extract/--no-extract", help="Unpack the archives into ROOT (else only fetch and verify).")
    ] = True,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries per URL for transient failures.")] = 4,
    retry_delay: Annotated[
        float, typer.Option("--retry-delay", min=0.0, metavar="SECONDS", help="First retry delay; doubles each time.")
    ] = 1.0,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, metavar="SECONDS", help="Network timeout per read.")] = 60.0,
    progress: Annotated[
        Optional[bool], typer.Option("--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal).")
    ] = None,
) -> None:
    """Download, verify and unpack the official GTSRB archives into ROOT.

    Resumes partial downloads, checks checksums (the training archive has no known official checksum: its zip integrity and layout are checked instead) and does nothing when ROOT is already complete.

    ROOT then holds GTSRB/Final_Training, GTSRB/Final_Test and GT-final_test.csv.
    """  # noqa: E501 - one line per paragraph renders best in the help

    root_path = resolve_root(root)
    parts = (only.value,) if only is not None else PARTS
    show = is_interactive() if progress is None else progress
    with progress_bar(show) as callback:
        results = download_gtsrb(
            root_path,
            parts=parts,
            mirrors=mirror or (),
            official=official,
            checksums=checksums,
            source=source,
            keep_archives=keep_archives,
            extract=extract,
            policy=RetryPolicy(retries=retries, delay=retry_delay, timeout=timeout),
            progress=callback,
        )
    for r in results:
        line = f"{r.name}: {r.action}"
        if r.source and r.action != "verified":
            line += f" from {r.source}"
        if r.sha256:
            line += f", sha256 {r.sha256}" + ("" if r.checksum_verified else " (no known checksum: zip integrity checked)")
        if r.extracted:
            line += ", extracted"
        typer.echo(line)
        for note in r.notes:
            typer.echo(f"  note: {note}")
    if extract:
        typer.echo(f"{root_path}: official GTSRB layout ready; next: gtsrb-kit stats --root {root_path}")
    else:
        typer.echo(f"{root_path / 'archives'}: archives verified (not extracted)")
