"""The Typer application object, shared options and the error guard.

Command modules import ``app`` from here and register with ``@app.command()``. Library
modules never import this package: typer and rich stay in the CLI layer.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.abc
import importlib.machinery
import os
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


# what to do about the OSErrors users cause (a path that is wrong, read-only or full)
_OS_ADVICE = {
    errno.ENOENT: "check the path",
    errno.EACCES: "fix its permissions or choose a folder you can write to",
    errno.EPERM: "fix its permissions or choose another path",
    errno.EROFS: "choose a folder you can write to",
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EEXIST: "it is in the way: choose another path",
    errno.ENOTDIR: "part of the path is a file, not a folder: check the path",
    errno.EISDIR: "pass a file, not a folder",
}


def os_error_message(exc: OSError) -> str:
    """``<file>: <what is wrong>; <what to do>`` for an OSError (the file from the error, if it names one)."""
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    what = (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")
    return f"{where}{what}; {_OS_ADVICE.get(exc.errno or 0, 'check the path, its permissions and free space')}"


def _help_hint(ctx: click.Context | None) -> str:
    """``see 'gtsrb-kit CMD --help'`` for the command whose options were wrong."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return "see '" + " ".join(["gtsrb-kit", *reversed(names), "--help"]) + "'"


def _lower_first(text: str) -> str:
    text = _one_line(text).rstrip(".")
    return text[:1].lower() + text[1:]


def _bad_value(exc: click.exceptions.BadParameter) -> str:
    """What is wrong with a value, led by the value itself when the parser recorded it."""
    errors = getattr(exc.__cause__, "errors", None)  # typer parses with pydantic, which keeps the input
    value = errors()[0].get("input") if callable(errors) else None
    what = _lower_first(exc.message)
    return f" {value!r}: {what}" if isinstance(value, str) else f": {what}"


def usage_message(exc: click.exceptions.UsageError) -> str:
    """A click usage error as ``<option or value>: <what is wrong>; see 'gtsrb-kit CMD --help'``."""
    hint = _help_hint(exc.ctx)
    if isinstance(exc, click.exceptions.NoSuchOption):
        guess = f" (did you mean {', '.join(sorted(exc.possibilities))}?)" if exc.possibilities else ""
        return f"{exc.option_name}: no such option{guess}; {hint}"
    param = getattr(exc, "param", None)
    if isinstance(exc, click.exceptions.BadParameter) and param is not None:
        kind = getattr(param, "param_type_name", "option")
        name = param.opts[0] if kind == "option" and param.opts else str(param.metavar or param.name or "").upper()
        what = f": missing {kind}" if isinstance(exc, click.exceptions.MissingParameter) else _bad_value(exc)
        return f"{name}{what}; {hint}"
    return f"{_lower_first(exc.format_message())}; {hint}"


class GuardedGroup(TyperGroup):
    """The one error path: every exception that can reach the user becomes one ``error: ...`` line.

    Usage errors of click (bad or missing options, unknown commands) exit with 2, library errors
    with their ``exit_code``, OSErrors with 1; the message is printed here rather than raised as
    a click exception so that typer's rich error box does not wrap it. ``--debug`` re-raises
    library errors with their traceback.
    """

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.UsageError as exc:
            click.echo(f"error: {usage_message(exc)}", err=True)
            sys.exit(2)
        except click.exceptions.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

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
            if _state["debug"] or exc.errno == errno.EPIPE:
                raise
            _exit_with(os_error_message(exc), 1)
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
    quiet_tensorflow(not debug)


def quiet_tensorflow(quiet: bool = True) -> None:
    """Silence TensorFlow's start-up logging (oneDNN, CPU features, absl, XLA) unless ``--debug``.

    ``TF_CPP_MIN_LOG_LEVEL`` (kept when the user set it) quiets the C++ log after start-up; the
    lines TensorFlow prints while its libraries load ignore it, so the one ``import tensorflow``
    runs with stderr closed (:class:`_QuietTensorflowFinder`). Commands import TensorFlow
    lazily, after this has run, and those that never need it do not pay for it.
    """
    if not quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorflowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorflowFinder())


@contextlib.contextmanager
def _stderr_closed() -> Iterator[None]:
    """Send file descriptor 2 (what C++ libraries write to) to the null device while the block runs."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with _stderr_closed():
            self.loader.exec_module(module)


class _QuietTensorflowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual, but loads it with stderr closed; removes itself on first use."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


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
