"""A small, deterministic, GTSRB-format dataset drawn from scratch (no network, no real data).

:func:`generate_dataset` draws the 43 classes as pictograms and renders *tracks* of frames in
which the sign grows like a car approaching, on varied backgrounds, lighting, haze, blur and
noise, with a border of about 10 % around the sign (its bounding box is the ROI). It writes the
official layout (PPM + ``;`` CSVs, optionally the three zips) or the Kaggle one (PNG + CSVs).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from gtsrb_kit.classes import NUM_CLASSES
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import sha256_file, write_json
from gtsrb_kit.progress import ProgressCallback, report

SynthLayout = Literal["official", "kaggle"]
Colour = tuple[int, int, int]
Points = list[tuple[float, float]]
Rows = list[list[object]]

#: Name of the marker file that identifies a folder written by :func:`generate_dataset`.
MARKER = ".gtsrb-kit-synth.json"
#: The official archive names written with ``archives=True`` (under ``ROOT/archives/``).
ARCHIVE_NAMES: tuple[str, str, str] = (
    "GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip")
_ZIP_DATE = (2011, 1, 1, 0, 0, 0)
_PICT = 128  # side of the cached pictogram (drawn at _SUPER x this, then downscaled)
_SUPER = 2

RED = (200, 22, 32)
BLUE = (18, 70, 170)
WHITE = (245, 245, 242)
BLACK = (22, 22, 24)
YELLOW = (250, 196, 10)
GRAY = (120, 120, 120)
GREEN = (30, 150, 60)


# --------------------------------------------------------------------------- drawing helpers


class _Pen:
    """Draws in unit coordinates (0..1) on a square supersampled canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, size: int) -> None:
        self.draw, self.s = draw, size

    def _p(self, pts: Points) -> Points:
        return [(x * self.s, y * self.s) for x, y in pts]

    def _box(self, cx: float, cy: float, r: float) -> tuple[float, float, float, float]:
        s = self.s
        return ((cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s)

    def poly(self, pts: Points, fill: Colour) -> None:
        self.draw.polygon(self._p(pts), fill=fill)

    def line(self, pts: Points, width: float, fill: Colour) -> None:
        w = max(1, round(width * self.s))
        self.draw.line(self._p(pts), fill=fill, width=w, joint="curve")
        r = w / 2  # round caps
        for x, y in self._p([pts[0], pts[-1]]):
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)

    def disc(self, cx: float, cy: float, r: float, fill: Colour) -> None:
        self.draw.ellipse(self._box(cx, cy, r), fill=fill)

    def ring(self, cx: float, cy: float, r: float, width: float, fill: Colour) -> None:
        self.draw.ellipse(self._box(cx, cy, r), outline=fill, width=max(1, round(width * self.s)))

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Colour) -> None:
        self.draw.rectangle(self._p([(x0, y0), (x1, y1)]), fill=fill)

    def arrow(self, pts: Points, width: float, fill: Colour, head: float = 0.13) -> None:
        """A polyline ending in a triangular head pointing along its last segment."""
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
        n = math.hypot(x1 - x0, y1 - y0) or 1.0
        dx, dy = (x1 - x0) / n, (y1 - y0) / n
        bx, by = x1 - dx * head, y1 - dy * head  # base of the head
        self.line([*pts[:-1], (bx, by)], width, fill)
        px, py = -dy * head * 0.75, dx * head * 0.75
        self.poly([(x1, y1), (bx + px, by + py), (bx - px, by - py)], fill)


# Seven-segment digits: segments a b c d e f g as line pairs in a unit digit box.
_SEGMENTS = {
    "a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 0.5)), "c": ((1, 0.5), (1, 1)), "d": ((0, 1), (1, 1)),
    "e": ((0, 0.5), (0, 1)), "f": ((0, 0), (0, 0.5)), "g": ((0, 0.5), (1, 0.5)),
}
_DIGITS = {
    "0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc", "5": "afgcd",
    "6": "afgedc", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


def _number(pen: _Pen, text: str, fill: Colour, cy: float = 0.5, height: float = 0.32) -> None:
    w = height * (0.42 if len(text) < 3 else 0.34)
    gap = w * 0.55
    x = 0.5 - (len(text) * w + (len(text) - 1) * gap) / 2
    top = cy - height / 2
    for ch in text:
        for seg in _DIGITS[ch]:
            (ax, ay), (bx, by) = _SEGMENTS[seg]
            pen.line([(x + ax * w, top + ay * height), (x + bx * w, top + by * height)], height * 0.16, fill)
        x += w + gap


def _car(pen: _Pen, cx: float, cy: float, fill: Colour, scale: float = 1.0) -> None:
    w, h = 0.13 * scale, 0.07 * scale
    pen.rect(cx - w, cy - h * 0.2, cx + w, cy + h, fill)
    pen.poly([(cx - w * 0.6, cy - h * 0.2), (cx - w * 0.35, cy - h * 1.2),
              (cx + w * 0.35, cy - h * 1.2), (cx + w * 0.6, cy - h * 0.2)], fill)
    pen.disc(cx - w * 0.6, cy + h, h * 0.45, fill)
    pen.disc(cx + w * 0.6, cy + h, h * 0.45, fill)


def _truck(pen: _Pen, cx: float, cy: float, fill: Colour) -> None:
    pen.rect(cx - 0.15, cy - 0.09, cx + 0.07, cy + 0.06, fill)
    pen.rect(cx + 0.08, cy - 0.03, cx + 0.15, cy + 0.06, fill)
    pen.disc(cx - 0.1, cy + 0.07, 0.03, fill)
    pen.disc(cx + 0.1, cy + 0.07, 0.03, fill)


def _person(pen: _Pen, cx: float, cy: float, scale: float, fill: Colour) -> None:
    s = scale
    pen.disc(cx, cy - 0.15 * s, 0.045 * s, fill)
    pen.line([(cx, cy - 0.09 * s), (cx, cy + 0.05 * s)], 0.045 * s, fill)
    pen.line([(cx, cy + 0.05 * s), (cx - 0.06 * s, cy + 0.17 * s)], 0.04 * s, fill)
    pen.line([(cx, cy + 0.05 * s), (cx + 0.06 * s, cy + 0.17 * s)], 0.04 * s, fill)
    pen.line([(cx - 0.07 * s, cy - 0.02 * s), (cx, cy - 0.07 * s), (cx + 0.07 * s, cy - 0.02 * s)], 0.035 * s, fill)


def _bar(pen: _Pen, fill: Colour = BLACK, width: float = 0.05) -> None:
    pen.line([(0.27, 0.73), (0.73, 0.27)], width, fill)


def _end80(p: _Pen) -> None:
    _number(p, "80", GRAY)
    _bar(p, GRAY, 0.045)


def _roundabout(p: _Pen) -> None:
    for k in range(3):
        a0 = k * 2 * math.pi / 3
        pts = [(0.5 + 0.2 * math.cos(a0 + t * 0.6), 0.5 + 0.2 * math.sin(a0 + t * 0.6)) for t in range(4)]
        p.arrow(pts, 0.06, WHITE, 0.12)


_SPEED_LIMITS = {0: "20", 1: "30", 2: "50", 3: "60", 4: "70", 5: "80", 7: "100", 8: "120"}

# What each class draws inside its sign body (classes 12, 13 and 15 draw nothing).
_GLYPHS: dict[int, Callable[[_Pen], object]] = {
    **{cid: functools.partial(_number, text=text, fill=BLACK) for cid, text in _SPEED_LIMITS.items()},
    6: _end80,
    9: lambda p: (_car(p, 0.36, 0.52, RED, 0.85), _car(p, 0.64, 0.52, BLACK, 0.85)),
    10: lambda p: (_truck(p, 0.36, 0.52, RED), _car(p, 0.68, 0.53, BLACK, 0.7)),
    11: lambda p: (p.line([(0.5, 0.42), (0.5, 0.8)], 0.06, BLACK), p.line([(0.38, 0.58), (0.62, 0.58)], 0.06, BLACK)),
    14: lambda p: (p.rect(0.22, 0.44, 0.78, 0.56, WHITE), p.rect(0.3, 0.36, 0.36, 0.64, WHITE),
                   p.rect(0.64, 0.36, 0.7, 0.64, WHITE)),
    16: lambda p: _truck(p, 0.5, 0.52, BLACK),
    17: lambda p: p.rect(0.2, 0.43, 0.8, 0.57, WHITE),
    18: lambda p: (p.line([(0.5, 0.4), (0.5, 0.66)], 0.06, BLACK), p.disc(0.5, 0.76, 0.035, BLACK)),
    19: lambda p: p.arrow([(0.56, 0.8), (0.56, 0.56), (0.4, 0.44)], 0.05, BLACK, 0.1),
    20: lambda p: p.arrow([(0.44, 0.8), (0.44, 0.56), (0.6, 0.44)], 0.05, BLACK, 0.1),
    21: lambda p: p.line([(0.44, 0.8), (0.44, 0.68), (0.58, 0.58), (0.44, 0.48), (0.5, 0.4)], 0.05, BLACK),
    22: lambda p: p.line([(0.26, 0.74), (0.34, 0.62), (0.42, 0.74), (0.58, 0.74), (0.66, 0.62), (0.74, 0.74)],
                         0.05, BLACK),
    23: lambda p: (_car(p, 0.5, 0.52, BLACK, 0.8), p.line([(0.36, 0.76), (0.44, 0.68), (0.5, 0.76)], 0.03, BLACK),
                   p.line([(0.52, 0.76), (0.58, 0.68), (0.66, 0.76)], 0.03, BLACK)),
    24: lambda p: (p.line([(0.42, 0.8), (0.42, 0.4)], 0.05, BLACK),
                   p.line([(0.6, 0.8), (0.6, 0.62), (0.52, 0.52), (0.52, 0.4)], 0.05, BLACK)),
    25: lambda p: (_person(p, 0.46, 0.62, 0.9, BLACK), p.line([(0.56, 0.56), (0.66, 0.74)], 0.04, BLACK),
                   p.rect(0.3, 0.76, 0.7, 0.8, BLACK)),
    26: lambda p: (p.disc(0.5, 0.44, 0.055, RED), p.disc(0.5, 0.59, 0.055, YELLOW), p.disc(0.5, 0.74, 0.055, GREEN)),
    27: lambda p: _person(p, 0.5, 0.62, 1.0, BLACK),
    28: lambda p: (_person(p, 0.42, 0.62, 0.9, BLACK), _person(p, 0.6, 0.66, 0.7, BLACK)),
    29: lambda p: (p.ring(0.38, 0.68, 0.08, 0.025, BLACK), p.ring(0.62, 0.68, 0.08, 0.025, BLACK),
                   p.line([(0.38, 0.68), (0.48, 0.52), (0.62, 0.68)], 0.025, BLACK)),
    30: lambda p: [p.line([(0.5 + 0.15 * math.cos(a), 0.62 + 0.15 * math.sin(a)),
                           (0.5 - 0.15 * math.cos(a), 0.62 - 0.15 * math.sin(a))], 0.035, BLACK)
                   for a in (0.0, math.pi / 3, 2 * math.pi / 3)],
    31: lambda p: p.poly([(0.32, 0.78), (0.36, 0.6), (0.58, 0.58), (0.66, 0.42), (0.72, 0.46),
                          (0.66, 0.6), (0.68, 0.78), (0.62, 0.78), (0.58, 0.66), (0.4, 0.66), (0.38, 0.78)], BLACK),
    32: lambda p: [p.line([(0.25 + d, 0.7 + d), (0.7 + d, 0.25 + d)], 0.018, BLACK)
                   for d in (-0.08, -0.04, 0.0, 0.04, 0.08)],
    33: lambda p: p.arrow([(0.4, 0.75), (0.4, 0.45), (0.72, 0.45)], 0.08, WHITE, 0.16),
    34: lambda p: p.arrow([(0.6, 0.75), (0.6, 0.45), (0.28, 0.45)], 0.08, WHITE, 0.16),
    35: lambda p: p.arrow([(0.5, 0.8), (0.5, 0.2)], 0.09, WHITE, 0.18),
    36: lambda p: (p.arrow([(0.45, 0.8), (0.45, 0.2)], 0.07, WHITE, 0.14),
                   p.arrow([(0.45, 0.6), (0.78, 0.6)], 0.07, WHITE, 0.14)),
    37: lambda p: (p.arrow([(0.55, 0.8), (0.55, 0.2)], 0.07, WHITE, 0.14),
                   p.arrow([(0.55, 0.6), (0.22, 0.6)], 0.07, WHITE, 0.14)),
    38: lambda p: p.arrow([(0.3, 0.3), (0.7, 0.7)], 0.09, WHITE, 0.18),
    39: lambda p: p.arrow([(0.7, 0.3), (0.3, 0.7)], 0.09, WHITE, 0.18),
    40: _roundabout,
    41: lambda p: (_car(p, 0.36, 0.52, GRAY, 0.85), _car(p, 0.64, 0.52, GRAY, 0.85), _bar(p, GRAY, 0.035)),
    42: lambda p: (_truck(p, 0.36, 0.52, GRAY), _car(p, 0.68, 0.53, GRAY, 0.7), _bar(p, GRAY, 0.035)),
}

_TRIANGLE = [(0.5, 0.03), (0.99, 0.9), (0.01, 0.9)]
_TRIANGLE_DOWN = [(x, 0.93 - y) for x, y in _TRIANGLE]
_OCTAGON = [(0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a))
            for a in (math.pi / 8 + k * math.pi / 4 for k in range(8))]
_DIAMOND = [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
_TRIANGLE_LAYERS = [(1.0, WHITE), (0.95, RED), (0.62, WHITE)]

# Sign bodies: shape -> (Meta.csv ShapeId, ColorId, class ids, outline polygon or None for a
# disc, centre y to scale it about, layers [(scale of the outline, colour), ...] outermost first).
# ShapeId 0 triangle, 1 circle, 2 diamond, 3 inverted triangle, 4 octagon; ColorId 0 red, 1 blue,
# 2 yellow, 3 white.
_SIGNS: dict[str, tuple[int, int, tuple[int, ...], Points | None, float, list[tuple[float, Colour]]]] = {
    "circle_red": (1, 0, (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16), None, 0.5, [(1.0, RED), (0.76, WHITE)]),
    "circle_end": (1, 3, (6, 32, 41, 42), None, 0.5, [(1.0, WHITE)]),
    "circle_no_entry": (1, 0, (17,), None, 0.5, [(1.0, WHITE), (0.94, RED)]),
    "circle_blue": (1, 1, tuple(range(33, 41)), None, 0.5, [(1.0, WHITE), (0.94, BLUE)]),
    "triangle": (0, 0, (11, *range(18, 32)), _TRIANGLE, sum(y for _, y in _TRIANGLE) / 3, _TRIANGLE_LAYERS),
    "triangle_down": (3, 0, (13,), _TRIANGLE_DOWN, sum(y for _, y in _TRIANGLE_DOWN) / 3, _TRIANGLE_LAYERS),
    "diamond": (2, 2, (12,), _DIAMOND, 0.5, [(1.0, WHITE), (0.96, BLACK), (0.9, WHITE), (0.62, YELLOW)]),
    "octagon": (4, 0, (14,), _OCTAGON, 0.5, [(1.0, WHITE), (0.93, RED)]),
}
_SHAPE_OF = {cid: shape for shape, (_, _, classes, *_) in _SIGNS.items() for cid in classes}


def _scaled(pts: Points, f: float, cy: float) -> Points:
    """``pts`` scaled by ``f`` about ``(0.5, cy)``; a scale of 1 returns them unchanged."""
    if f == 1:
        return pts
    return [(0.5 + (x - 0.5) * f, cy + (y - cy) * f) for x, y in pts]


@functools.lru_cache(maxsize=2 * NUM_CLASSES)
def draw_pictogram(class_id: int, size: int = _PICT) -> Image.Image:
    """Draw the clean pictogram of one class as an RGBA image (transparent outside the sign).

    The result is cached: ``copy()`` it before drawing on it.

    Args:
        class_id: 0..42.
        size: Side of the square result in pixels (drawn 2x larger, then downscaled).
    """
    if not 0 <= class_id < NUM_CLASSES:
        raise ConfigError(f"class id {class_id} is outside 0..{NUM_CLASSES - 1}")
    big = size * _SUPER
    canvas = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    pen = _Pen(ImageDraw.Draw(canvas), big)
    shape = _SHAPE_OF[class_id]
    *_, outline, cy, layers = _SIGNS[shape]
    for scale, colour in layers:
        if outline is None:
            pen.disc(0.5, 0.5, 0.5 * scale, colour)
        else:
            pen.poly(_scaled(outline, scale, cy), colour)
    if shape == "circle_end":
        pen.ring(0.5, 0.5, 0.495, 0.012, GRAY)
    if class_id in _GLYPHS:
        _GLYPHS[class_id](pen)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------- scene rendering

# Sky, foliage, buildings, dusk / shadow, overcast, earth.
_BACKGROUNDS = np.array([(125, 165, 215), (70, 100, 55), (125, 115, 105), (45, 45, 52), (165, 160, 150), (95, 80, 60)],
                        dtype=np.float32)


@dataclass
class _Track:
    """Appearance that stays (mostly) constant along one track."""

    rng: np.random.Generator
    class_id: int
    angle: float  # in-plane rotation of the sign, degrees
    aspect: float
    s0: float
    s1: float
    bg: np.ndarray  # (3, 3, 3) float colour grid
    gain: float
    cast: np.ndarray
    haze: float
    blur: float
    noise: float


def _make_track(class_id: int, seed: int, kind: int, index: int) -> _Track:
    rng = np.random.default_rng([seed, kind, class_id, index])
    angle = float(rng.uniform(-7, 7))
    base = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
    bg = np.clip(base + rng.normal(0, 18, size=(3, 3, 1)) + rng.normal(0, 8, size=(3, 3, 3)), 0, 255).astype(np.float32)
    # A few tracks are dark (dusk, shadow) or over-exposed, as in the real data.
    gain = float(np.exp(rng.normal(-0.15, 0.35)))
    if rng.random() < 0.12:
        gain = float(rng.uniform(0.18, 0.35))
    return _Track(
        rng=rng, class_id=class_id, angle=angle,
        aspect=float(rng.uniform(0.93, 1.07)),
        s0=float(rng.uniform(22, 32)), s1=float(rng.uniform(55, 85)),
        bg=bg, gain=min(gain, 1.6), cast=(1 + rng.normal(0, 0.07, size=3)).astype(np.float32),
        haze=float(rng.uniform(0.0, 0.35)) if rng.random() < 0.3 else 0.0,
        blur=float(rng.uniform(0.0, 0.9)), noise=float(rng.uniform(1.0, 7.0)),
    )


def _render(track: _Track, t: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One frame at position ``t`` in 0..1 along the track; returns (image, ROI x1,y1,x2,y2)."""
    rng = track.rng
    size = track.s0 * (track.s1 / track.s0) ** t  # geometric growth: the car approaches
    sw = max(8, round(size * track.aspect))
    sh = max(8, round(size))
    bx, by = max(5, round(0.1 * sw)), max(5, round(0.1 * sh))
    x1, y1 = bx + int(rng.integers(0, 3)), by + int(rng.integers(0, 3))
    w = x1 + sw + bx + int(rng.integers(0, 3))
    h = y1 + sh + by + int(rng.integers(0, 3))

    grid = np.clip(track.bg + rng.normal(0, 6, size=track.bg.shape), 0, 255).astype(np.uint8)
    scene = Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR)
    # Resize first, rotate the small result (rotating the large pictogram costs far more);
    # small signs start from the half-size pictogram.
    source = draw_pictogram(track.class_id, _PICT if sw > _PICT // 2 else _PICT // 2)
    sign = source.resize((sw, sh), Image.Resampling.BILINEAR)
    sign = sign.rotate(track.angle, resample=Image.Resampling.BICUBIC)
    scene.paste(sign, (x1, y1), sign)
    radius = track.blur + float(rng.uniform(0, 0.4)) + (0.6 if rng.random() < 0.1 else 0.0)
    if radius > 0.15:
        scene = scene.filter(ImageFilter.GaussianBlur(radius))
    arr = np.array(scene, dtype=np.float32)
    if track.haze:
        arr *= 1 - track.haze
        arr += 170.0 * track.haze
    gain = track.gain * float(1 + rng.normal(0, 0.05))
    arr *= gain * track.cast
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * track.noise + 0.5
    image = np.clip(arr, 0, 255, out=arr).astype(np.uint8)
    return image, (x1, y1, x1 + sw - 1, y1 + sh - 1)


def _class_counts(mean: int, rng: np.random.Generator) -> np.ndarray:
    """Unbalanced per-class counts around ``mean`` (at least 1 each)."""
    weights = np.exp(rng.normal(0, 0.45, size=NUM_CLASSES))
    return np.maximum(1, np.rint(mean * weights / weights.mean())).astype(int)


# --------------------------------------------------------------------------- writing


def _write_csv(path: Path, header: list[str], rows: Rows, sep: str = ";", newline: str = "\r\n") -> None:
    lines = [sep.join(header)] + [sep.join(str(v) for v in row) for row in rows]
    path.write_bytes((newline.join(lines) + newline).encode("ascii"))


def _zip_tree(zip_path: Path, base: Path, members: list[Path]) -> None:
    """Zip ``members`` (files under ``base``, with their folders) deterministically."""
    dirs: set[str] = set()
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for member in members:
            rel = member.relative_to(base)
            for parent in reversed(rel.parents[:-1]):
                name = parent.as_posix() + "/"
                if name not in dirs:
                    dirs.add(name)
                    info = zipfile.ZipInfo(name, _ZIP_DATE)
                    info.external_attr = 0o40755 << 16
                    zf.writestr(info, b"")
            info = zipfile.ZipInfo(rel.as_posix(), _ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.read_bytes(), compresslevel=6)


def _previous_entries(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / MARKER).read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def generate_dataset(
    out: Path,
    *,
    tracks_per_class: int = 20,
    frames_per_track: int = 10,
    test_per_class: int = 30,
    seed: int = 0,
    layout: SynthLayout = "official",
    archives: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write a small synthetic GTSRB dataset and return its root (what ``read_catalog`` reads).

    The tree is drawn in a temporary folder beside ``out`` and moved in when complete. An
    earlier output of this function there (it holds :data:`MARKER`) is replaced; entries of
    other names are left alone.

    Args:
        out: Target folder, created if missing: empty or an earlier synth output unless ``force``.
        tracks_per_class: Mean tracks per class (unbalanced on purpose, at least 1 each).
        frames_per_track: Frames per track; the sign grows from about 25 px to 80 px.
        test_per_class: Mean test images per class (at least 1 each).
        seed: Same seed, same arguments -> byte-identical files.
        layout: ``"official"`` (PPM + ``GT-*.csv``) or ``"kaggle"`` (PNG + Train/Test/Meta.csv).
        archives: Also write ``archives/`` with the three zips and ``SHA256SUMS`` (official only).
        force: Write into a non-empty foreign folder, replacing entries of the same names.
        progress: Optional ``progress(description, completed, total)`` callback.

    Returns:
        ``out``, the dataset root.

    Raises:
        ConfigError: a count is below 1, or ``archives`` with the Kaggle layout.
        DataError: ``out`` is a file, or a non-empty foreign folder without ``force``.
    """
    out = Path(out)
    _check_request(out, counts=(tracks_per_class, frames_per_track, test_per_class), layout=layout,
                   archives=archives, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    try:
        plan = _Plan(tmp, seed, frames_per_track, layout == "official")
        count_rng = np.random.default_rng([seed, 7])
        n_tracks = _class_counts(tracks_per_class, count_rng)
        n_test = _class_counts(test_per_class, count_rng)
        entries = _build(plan, n_tracks, n_test, archives=archives, progress=progress)
        counts = {"train": int(n_tracks.sum()) * frames_per_track, "test": int(n_test.sum()),
                  "tracks": int(n_tracks.sum())}
        marker = {
            "generator": "gtsrb-kit synth", "format": 1, "layout": layout, "seed": seed,
            "tracks_per_class": tracks_per_class, "frames_per_track": frames_per_track,
            "test_per_class": test_per_class, "archives": archives, "entries": entries, "counts": counts,
        }
        write_json(tmp / MARKER, marker, sort_keys=True)
        _swap_in(tmp, out, entries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_request(out: Path, *, counts: tuple[int, int, int], layout: str, archives: bool, force: bool) -> None:
    for name, value in zip(("tracks_per_class", "frames_per_track", "test_per_class"), counts):
        if value < 1:
            raise ConfigError(f"{name}={value}: must be at least 1")
    if layout not in ("official", "kaggle"):
        raise ConfigError(f"layout {layout!r}: use 'official' or 'kaggle'")
    if archives and layout != "official":
        raise ConfigError("archives are only written for the official layout; drop --archives or use --layout official")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; pick another --root")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not force:
        raise DataError(f"{out}: folder is not empty and was not written by 'gtsrb-kit synth'; "
                        "pick an empty --root or pass --force to overwrite its GTSRB entries")


def _swap_in(tmp: Path, out: Path, entries: list[str]) -> None:
    """Replace the entries of ``out`` (and of an earlier synth output there) by those of ``tmp``."""
    out.mkdir(exist_ok=True)
    old = _previous_entries(out)
    # Drop the marker first: a crash while swapping leaves a folder that needs --force,
    # never one that claims to be complete.
    _remove(out / MARKER)
    for name in sorted(set(old) | set(entries)):
        _remove(out / name)
    for name in entries:
        os.replace(tmp / name, out / name)
    os.replace(tmp / MARKER, out / MARKER)


@dataclass(frozen=True)
class _Plan:
    """Where the images go and the settings that shape them."""

    root: Path
    seed: int
    frames: int
    official: bool

    @property
    def ext(self) -> str:
        return "ppm" if self.official else "png"

    @property
    def test_dir(self) -> Path:
        return self.root / ("GTSRB/Final_Test/Images" if self.official else "Test")

    def class_dir(self, cid: int) -> Path:
        return self.root / (f"GTSRB/Final_Training/Images/{cid:05d}" if self.official else f"Train/{cid}")


_HEADER = ["Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]


def _build(plan: _Plan, n_tracks: np.ndarray, n_test: np.ndarray, *, archives: bool,
           progress: ProgressCallback | None) -> list[str]:
    """Render everything into ``plan.root``; return the top-level entry names."""
    train_rows, test_rows = _draw_images(plan, n_tracks, n_test, progress)
    if not plan.official:
        return _write_kaggle_tables(plan.root, train_rows, test_rows)
    for cid in range(NUM_CLASSES):
        _write_csv(plan.class_dir(cid) / f"GT-{cid:05d}.csv", ["Filename", *_HEADER],
                   [row for row in train_rows if row[-1] == cid])
    _write_csv(plan.test_dir / "GT-final_test.test.csv", ["Filename", *_HEADER[:-1]], [r[:-1] for r in test_rows])
    _write_csv(plan.root / "GT-final_test.csv", ["Filename", *_HEADER], test_rows)
    if not archives:
        return ["GTSRB", "GT-final_test.csv"]
    _write_archives(plan.root, progress)
    return ["GTSRB", "GT-final_test.csv", "archives"]


def _draw_images(plan: _Plan, n_tracks: np.ndarray, n_test: np.ndarray,
                 progress: ProgressCallback | None) -> tuple[Rows, Rows]:
    """Draw and write every training track and test image; return their CSV rows."""
    plan.test_dir.mkdir(parents=True)
    for cid in range(NUM_CLASSES):
        plan.class_dir(cid).mkdir(parents=True)
    # Test images: one frame of an unseen track each, shuffled over classes like the real set.
    test_classes = np.repeat(np.arange(NUM_CLASSES), n_test)
    test_classes = test_classes[np.random.default_rng([plan.seed, 11]).permutation(len(test_classes))]
    train_jobs = [functools.partial(_train_track, plan, cid, t)
                  for cid in range(NUM_CLASSES) for t in range(int(n_tracks[cid]))]
    test_jobs = [functools.partial(_test_image, plan, i, int(cid)) for i, cid in enumerate(test_classes)]
    total, done, results = len(train_jobs) * plan.frames + len(test_jobs), 0, []
    report(progress, "drawing images", 0, total)
    # Every track and test image draws from its own seeded generator, so the work can run in
    # threads (PIL and numpy release the GIL) without changing a byte of the output.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for rows in pool.map(lambda job: job(), train_jobs + test_jobs):
            results.append(rows)
            done += len(rows)
            report(progress, "drawing images", done, total)
    n = len(train_jobs)
    return [row for rows in results[:n] for row in rows], [row for rows in results[n:] for row in rows]


def _save_frame(plan: _Plan, track: _Track, t: float, path: Path) -> list[object]:
    """Render one frame of ``track`` into ``path``; return its CSV row."""
    image, roi = _render(track, t)
    Image.fromarray(image).save(path, format=plan.ext.upper(), **({} if plan.official else {"compress_level": 1}))
    h, w = image.shape[:2]
    return [path.name, w, h, *roi, track.class_id]


def _train_track(plan: _Plan, cid: int, track_no: int) -> Rows:
    track, n, folder = _make_track(cid, plan.seed, 0, track_no), plan.frames, plan.class_dir(cid)
    prefix = f"{track_no:05d}" if plan.official else f"{cid:05d}_{track_no:05d}"
    return [_save_frame(plan, track, f / (n - 1) if n > 1 else 0.5, folder / f"{prefix}_{f:05d}.{plan.ext}")
            for f in range(n)]


def _test_image(plan: _Plan, i: int, cid: int) -> Rows:
    track = _make_track(cid, plan.seed, 1, i)
    return [_save_frame(plan, track, float(track.rng.uniform(0, 1)), plan.test_dir / f"{i:05d}.{plan.ext}")]


def _write_kaggle_tables(root: Path, train_rows: Rows, test_rows: Rows) -> list[str]:
    _write_csv(root / "Train.csv", [*_HEADER, "Path"], [[*r[1:], f"Train/{r[-1]}/{r[0]}"] for r in train_rows],
               ",", "\n")
    _write_csv(root / "Test.csv", [*_HEADER, "Path"], [[*r[1:], f"Test/{r[0]}"] for r in test_rows], ",", "\n")
    (root / "Meta").mkdir()
    meta_rows: Rows = []
    for cid in range(NUM_CLASSES):
        # Transparent pixels carry white so that an RGB conversion shows the sign on white.
        rgba = np.array(draw_pictogram(cid))
        rgba[rgba[..., 3] == 0, :3] = 255
        Image.fromarray(rgba).save(root / f"Meta/{cid}.png", format="PNG")
        shape_id, color_id, *_ = _SIGNS[_SHAPE_OF[cid]]
        meta_rows.append([f"Meta/{cid}.png", cid, shape_id, color_id, f"{shape_id}.{cid}"])
    _write_csv(root / "Meta.csv", ["Path", "ClassId", "ShapeId", "ColorId", "SignId"], meta_rows, ",", "\n")
    return ["Meta", "Meta.csv", "Test", "Test.csv", "Train", "Train.csv"]


def _write_archives(root: Path, progress: ProgressCallback | None) -> None:
    """Zip the official tree into the three archives the benchmark's site publishes."""
    arch = root / "archives"
    arch.mkdir()
    members = [sorted(p for p in (root / f"GTSRB/Final_{part}/Images").rglob("*") if p.is_file())
               for part in ("Training", "Test")] + [[root / "GT-final_test.csv"]]
    for done, (name, files) in enumerate(zip(ARCHIVE_NAMES, members)):
        report(progress, "writing archives", done, 3)
        _zip_tree(arch / name, root, files)
    report(progress, "writing archives", 3, 3)
    (arch / "SHA256SUMS").write_text("".join(f"{sha256_file(arch / n)}  {n}\n" for n in ARCHIVE_NAMES))
