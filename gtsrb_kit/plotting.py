"""The two things every PNG-writing function needs: a headless pyplot and an atomic save."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gtsrb_kit.fileio import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only: works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as a PNG (atomically, without a timestamp) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    pyplot().close(fig)
    return path


def plot_curves(histories: dict[str, dict[str, list[float]]], out: str | os.PathLike[str], *,
                keys: tuple[str, ...] = ("loss", "accuracy"), title: str = "") -> Path:
    """Per-epoch curves of runs: one panel per key, a colour per run, validation solid, training dashed.

    Args:
        histories: Run name -> column -> values per epoch (as :func:`gtsrb_kit.runs.read_history`).
        out: The PNG to write.
        keys: The metrics to plot (``val_<key>`` is the validation curve).
        title: The figure's title.
    """
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys) + 2.5 * (len(keys) == 1), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        for k, (name, hist) in enumerate(histories.items()):
            for column, style, label in ((f"val_{key}", "-", f"{name} validation"), (key, "--", f"{name} train")):
                values = hist.get(column)
                if values:
                    epochs = hist["epoch"] if len(hist.get("epoch", [])) == len(values) else range(1, len(values) + 1)
                    ax.plot(list(epochs), values, style, color=colors[k % len(colors)], label=label,
                            marker="o", markersize=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out)
