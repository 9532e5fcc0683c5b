"""What every PNG-writing function needs: a headless pyplot, an atomic save, image grids, learning curves."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


#: Floor of the log-scale error panel: an error rate of 0 (a perfect epoch) is drawn there.
ERROR_FLOOR = 1e-4


def _epochs(hist: dict[str, list[float]], n: int) -> list[float]:
    return list(hist["epoch"]) if len(hist.get("epoch", [])) == n else list(range(1, n + 1))


def _draw_panel(ax: Any, histories: dict[str, dict[str, list[float]]], key: str, colors: list[str], *,
                error: bool = False) -> None:
    """One panel: ``key`` (or its error rate ``1 - key`` on a log axis) per run, validation solid."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    for k, (name, hist) in enumerate(histories.items()):
        for column, style, label in ((f"val_{key}", "-", f"{name} validation"), (key, "--", f"{name} train")):
            values = hist.get(column)
            if values:
                ys = np.maximum(1.0 - np.asarray(values, dtype=float), ERROR_FLOOR) if error else values
                ax.plot(_epochs(hist, len(values)), ys, style, color=colors[k % len(colors)], label=label,
                        marker="o", markersize=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    if error:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g} %"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(f"error rate (1 - {key}), log scale")
        ax.grid(alpha=0.3, which="both")
    else:
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(histories: dict[str, dict[str, list[float]]], out: str | os.PathLike[str], *,
                keys: tuple[str, ...] = ("loss", "accuracy"), title: str = "", error_rate: bool = True) -> Path:
    """Per-epoch curves of runs: one panel per key, a colour per run, validation solid, training dashed.

    Args:
        histories: Run name -> column -> values per epoch (as :func:`gtsrb_kit.runs.read_history`).
        out: The PNG to write.
        keys: The metrics to plot (``val_<key>`` is the validation curve).
        title: The figure's title.
        error_rate: Add a last panel with the error rate (1 - accuracy) on a log scale, where the
            last fraction of a percent stays visible (0 is drawn at :data:`ERROR_FLOOR`); only
            when ``keys`` holds ``accuracy``.
    """
    plt = pyplot()
    panels = [(key, False) for key in keys] + ([("accuracy", True)] if error_rate and "accuracy" in keys else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 2.5 * (len(panels) == 1), 4.2),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, error) in zip(axes.flat, panels):
        _draw_panel(ax, histories, key, colors, error=error)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out)


def wrap(text: str, width: int = 18, lines: int = 2) -> str:
    """``text`` broken into at most ``lines`` lines of ``width`` characters (for grid labels)."""
    return "\n".join(textwrap.wrap(text, width)[:lines])


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _thumb(image: np.ndarray | None, cell: int) -> Any:
    """``image`` letterboxed into a ``cell`` x ``cell`` RGB square (grey when None)."""
    from PIL import Image

    canvas = Image.new("RGB", (cell, cell), (128, 128, 128) if image is None else "white")
    if image is not None:
        thumb = Image.fromarray(np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image)).convert("RGB")
        scale = cell / max(thumb.size)
        size = (max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale)))
        thumb = thumb.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR)
        canvas.paste(thumb, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return canvas


def image_grid(images: Sequence[np.ndarray | None], labels: Sequence[str], out: str | os.PathLike[str], *,
               title: str, cols: int, cell: int = 88) -> Path:
    """Write ``images`` (``uint8`` HxWx1 or HxWx3; None: a grey cell) as a labelled PNG mosaic.

    Drawn with Pillow, which is many times faster than a matplotlib axis per image.
    """
    from PIL import Image, ImageDraw

    rows = max(1, math.ceil(len(images) / cols))
    title_h = 30
    label_h = 6 + 12 * max((label.count("\n") + 1 for label in labels), default=1)
    mosaic = Image.new("RGB", (max(cols * cell, 240), title_h + rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(mosaic)
    draw.text((mosaic.width // 2, 8), title, fill="black", font=_font(16), anchor="mt")
    small = _font(10)
    for i, (image, label) in enumerate(zip(images, labels)):
        r, c = divmod(i, cols)
        top = title_h + r * (cell + label_h)
        mosaic.paste(_thumb(image, cell - 6), (c * cell + 3, top + 3))
        draw.multiline_text((c * cell + cell // 2, top + cell + 1), label, fill="black", font=small, anchor="ma",
                            align="center", spacing=1)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        mosaic.save(tmp, format="PNG")
    return path
