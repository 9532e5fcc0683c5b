"""`gtsrb-kit sweep` commands (placeholder until implemented)."""

from gtsrb_kit.cli._app import app  # noqa: F401
