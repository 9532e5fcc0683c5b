"""The ``gtsrb-kit`` command line: a thin Typer layer over the library.

Each command lives in its own module, which registers itself on :data:`app` when imported.
"""

from __future__ import annotations

from gtsrb_kit.cli._app import app
from gtsrb_kit.cli import download, stats, synth, cook, train, sweep, robustness, export  # noqa: F401,E402  (registration)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
