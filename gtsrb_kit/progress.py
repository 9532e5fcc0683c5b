"""Progress reporting without a UI dependency.

Library functions that do long work accept ``progress: ProgressCallback | None``. They call it
as ``progress(description, completed, total)``; ``total`` may be ``None`` when unknown. The CLI
turns these calls into a rich progress bar; library users can pass any callable or nothing.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, int, "int | None"], None]


def report(progress: ProgressCallback | None, description: str, completed: int, total: int | None) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(description, completed, total)
