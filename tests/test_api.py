"""The public surface: flat exports, lazy TensorFlow, the CLI's command list and error guard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gtsrb_kit
from gtsrb_kit.cli import app
from gtsrb_kit.errors import ConfigError, DataError

COMMANDS = (
    "download", "synth", "stats", "cook", "info", "train", "evaluate", "predict",
    "models", "augment-preview", "sweep", "report",
)


@pytest.mark.parametrize("name", sorted(set(gtsrb_kit.__all__) - {"__version__"}))
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(gtsrb_kit, name) is not None


def test_import_and_numpy_paths_do_not_import_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys, gtsrb_kit\n"
        "for n in gtsrb_kit.__all__: getattr(gtsrb_kit, n)\n"
        "import gtsrb_kit.cli\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["False", "False"]


def test_no_bare_cli_package_is_installed(tmp_path: Path) -> None:
    # Run outside the repo (and without PYTHONPATH) so only installed packages are importable.
    code = "import importlib.util; print(importlib.util.find_spec('cli'))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path, env=env)
    assert out.stdout.strip() == "None"
    assert not (Path(gtsrb_kit.__file__).parents[1] / "cli" / "__init__.py").exists()


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output
    for command in COMMANDS:
        sub = CliRunner().invoke(app, [command, "--help"])
        assert sub.exit_code == 0, (command, sub.output)
        assert "Usage:" in sub.output


@pytest.mark.parametrize(
    ("error", "code"),
    [(DataError("data/x.h5: not a gtsrb-kit file;\nre-cook it"), 1), (ConfigError("bad --mode 'Z'"), 2)],
)
def test_guard_prints_one_line_and_exit_code(error: Exception, code: int) -> None:
    import typer

    from gtsrb_kit.cli._app import GuardedGroup

    probe = typer.Typer(cls=GuardedGroup)

    @probe.command()
    def boom() -> None:
        raise error

    @probe.command()
    def other() -> None:  # two commands, so 'boom' is a subcommand as in the real app
        pass

    result = CliRunner().invoke(probe, ["boom"])
    assert result.exit_code == code
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert str(error).split()[0] in result.stderr
    assert "Traceback" not in result.output


def test_os_errors_name_the_file(tmp_path: Path) -> None:
    import typer

    from gtsrb_kit.cli._app import GuardedGroup

    probe = typer.Typer(cls=GuardedGroup)
    target = tmp_path / "missing" / "file.h5"

    @probe.command()
    def write() -> None:
        target.write_bytes(b"x")

    @probe.command()
    def other() -> None:
        pass

    result = CliRunner().invoke(probe, ["write"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {target}: No such file or directory")
