"""The Typer application object, shared options and the error guard.

Command modules import ``app`` from here and register with ``@app.command()``. Library
modules never import this package: typer and rich stay in the CLI layer.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.22 vendors its own click; exceptions must come from that copy to be handled
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer runs on the click package
    import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperGroup

from gtsrb_kit.errors import GtsrbKitError
from gtsrb_kit.paths import DATA_ENV, ROOT_ENV, default_data_dir, default_root

console = Console()
err_console = Console(stderr=True)

_state: dict[str, bool] = {"debug": False}


class UserError(click.ClickException):
    """A one-line error for the user, printed on stderr as ``error: ...``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:  # noqa: D102 - click API
        click.echo(f"error: {self.format_message()}", err=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class GuardedGroup(TyperGroup):
    """Turns library errors into one-line messages with a non-zero exit code (no traceback).

    The message is printed here rather than raised as a click exception so that typer's rich
    error box does not wrap it: scripts and logs get exactly one ``error: ...`` line.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _exit_with(exc.format_message(), exc.exit_code)
        except (click.ClickException, typer.Exit, typer.Abort):
            raise
        except GtsrbKitError as exc:
            if _state["debug"]:
                raise
            _exit_with(str(exc), exc.exit_code)
        except OSError as exc:
            if _state["debug"]:
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            what = exc.strerror or str(exc)
            _exit_with(f"{where}{what} (check the path, its permissions and free space)", 1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise typer.Exit(130) from None


def _exit_with(message: str, exit_code: int) -> None:
    click.echo(f"error: {_one_line(message)}", err=True)
    raise typer.Exit(exit_code)


app = typer.Typer(
    name="gtsrb-kit",
    cls=GuardedGroup,
    help="GTSRB made model-ready: download, statistics, enhanced HDF5 datasets, training, sweeps, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


@app.callback()
def _main_callback(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
) -> None:
    """GTSRB made model-ready.

    Typical session: [bold]gtsrb-kit download[/] (or [bold]synth[/] offline), [bold]stats[/],
    [bold]cook --scale 0.2[/], [bold]train --augment[/], [bold]evaluate[/].
    """
    _state["debug"] = debug


RootOption = Annotated[
    Path,
    typer.Option(
        "--root",
        help=f"Folder of the raw GTSRB tree (official or Kaggle layout). Default: ${ROOT_ENV} or ./data/raw.",
        envvar=ROOT_ENV,
        show_default=False,
        file_okay=False,
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--out",
        help=f"Folder for cooked HDF5 files. Default: ${DATA_ENV} or ./data.",
        envvar=DATA_ENV,
        show_default=False,
    ),
]


def resolve_root(root: Path | None) -> Path:
    """The raw data root given on the command line, else the default."""
    return root if root is not None else default_root()


def resolve_data_dir(out: Path | None) -> Path:
    """The cooked data folder given on the command line, else the default."""
    return out if out is not None else default_data_dir()


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar as a library ``ProgressCallback(description, completed, total)``.

    One bar per distinct description. Disabled (a no-op callback) when ``enabled`` is false.
    """
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def callback(description: str, completed: int, total: int | None) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=completed, total=total)

        yield callback


def fail(message: str, exit_code: int = 1) -> None:
    """Stop the command with a one-line error."""
    raise UserError(message, exit_code)


def is_interactive() -> bool:
    """True when stderr is a terminal (progress bars make sense)."""
    return sys.stderr.isatty()
