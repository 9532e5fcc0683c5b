"""A small, deterministic, GTSRB-format dataset drawn from scratch (no network, no real data).

:func:`generate_dataset` draws the 43 sign classes as pictograms (red-bordered circles, blue
circles, triangles, an octagon, a diamond, each with its own glyph: digits, cars, arrows,
bars, dots...) and renders *tracks* of frames in which the sign grows like a car approaching
(about 25 px to 80 px), on varied backgrounds with varied lighting, haze, blur and noise.
Every image keeps a border of about 10 % (at least 5 px) around the sign, and the ROI in the
annotation CSV is the sign's bounding box, as in the real benchmark. Classes get an
unbalanced number of tracks and test images.

The tree is written in the official layout (PPM + ``;`` CSVs with CRLF) or the Kaggle layout
(PNG + ``Train.csv``/``Test.csv``/``Meta.csv``), optionally with the three official zip
archives. The same arguments always give byte-identical files.
"""

from __future__ import annotations

import contextlib
import functools
import io
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

#: Name of the marker file that identifies a folder written by :func:`generate_dataset`.
MARKER = ".gtsrb-kit-synth.json"
#: The official archive names written with ``archives=True`` (under ``ROOT/archives/``).
ARCHIVE_NAMES: tuple[str, str, str] = (
    "GTSRB_Final_Training_Images.zip",
    "GTSRB_Final_Test_Images.zip",
    "GTSRB_Final_Test_GT.zip",
)
_ZIP_DATE = (2011, 1, 1, 0, 0, 0)
_PICT = 128  # side of the cached pictogram (drawn at _SUPER x this, then downscaled)
_SUPER = 2

RED = (200, 22, 32)
BLUE = (18, 70, 170)
WHITE = (245, 245, 242)
BLACK = (22, 22, 24)
YELLOW = (250, 196, 10)
GRAY = (120, 120, 120)
ORANGE = (235, 120, 20)
GREEN = (30, 150, 60)

# Kaggle Meta.csv codes: ShapeId 0 triangle, 1 circle, 2 diamond, 3 inverted triangle, 4 octagon;
# ColorId 0 red, 1 blue, 2 yellow, 3 white.
_SHAPE_IDS = {"triangle": 0, "circle": 1, "diamond": 2, "triangle_down": 3, "octagon": 4}


# --------------------------------------------------------------------------- drawing helpers


class _Pen:
    """Draws in unit coordinates (0..1) on a square supersampled canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, size: int) -> None:
        self.draw = draw
        self.s = size

    def _p(self, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x * self.s, y * self.s) for x, y in pts]

    def poly(self, pts: list[tuple[float, float]], fill: tuple[int, int, int]) -> None:
        self.draw.polygon(self._p(pts), fill=fill)

    def line(self, pts: list[tuple[float, float]], width: float, fill: tuple[int, int, int]) -> None:
        w = max(1, round(width * self.s))
        self.draw.line(self._p(pts), fill=fill, width=w, joint="curve")
        r = w / 2  # round caps
        for x, y in self._p([pts[0], pts[-1]]):
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)

    def disc(self, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
        s = self.s
        self.draw.ellipse(((cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s), fill=fill)

    def ring(self, cx: float, cy: float, r: float, width: float, fill: tuple[int, int, int]) -> None:
        s = self.s
        self.draw.ellipse(((cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s), outline=fill,
                          width=max(1, round(width * s)))

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: tuple[int, int, int]) -> None:
        s = self.s
        self.draw.rectangle((x0 * s, y0 * s, x1 * s, y1 * s), fill=fill)

    def arrow(self, pts: list[tuple[float, float]], width: float, fill: tuple[int, int, int],
              head: float = 0.13) -> None:
        """A polyline ending in a triangular head pointing along its last segment."""
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
        dx, dy = x1 - x0, y1 - y0
        n = math.hypot(dx, dy) or 1.0
        dx, dy = dx / n, dy / n
        bx, by = x1 - dx * head, y1 - dy * head  # base of the head
        self.line([*pts[:-1], (bx, by)], width, fill)
        px, py = -dy, dx
        self.poly([(x1, y1), (bx + px * head * 0.75, by + py * head * 0.75),
                   (bx - px * head * 0.75, by - py * head * 0.75)], fill)


# Seven-segment digits: segments a b c d e f g as line pairs in a unit digit box.
_SEGMENTS = {
    "a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 0.5)), "c": ((1, 0.5), (1, 1)), "d": ((0, 1), (1, 1)),
    "e": ((0, 0.5), (0, 1)), "f": ((0, 0), (0, 0.5)), "g": ((0, 0.5), (1, 0.5)),
}
_DIGITS = {
    "0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc", "5": "afgcd",
    "6": "afgedc", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


def _number(pen: _Pen, text: str, fill: tuple[int, int, int], cy: float = 0.5, height: float = 0.32) -> None:
    w = height * (0.42 if len(text) < 3 else 0.34)
    gap = w * 0.55
    total = len(text) * w + (len(text) - 1) * gap
    x = 0.5 - total / 2
    stroke = height * 0.16
    for ch in text:
        for seg in _DIGITS[ch]:
            (ax, ay), (bx, by) = _SEGMENTS[seg]
            pen.line([(x + ax * w, cy - height / 2 + ay * height), (x + bx * w, cy - height / 2 + by * height)],
                     stroke, fill)
        x += w + gap


def _car(pen: _Pen, cx: float, cy: float, fill: tuple[int, int, int], scale: float = 1.0) -> None:
    w, h = 0.13 * scale, 0.07 * scale
    pen.rect(cx - w, cy - h * 0.2, cx + w, cy + h, fill)
    pen.poly([(cx - w * 0.6, cy - h * 0.2), (cx - w * 0.35, cy - h * 1.2),
              (cx + w * 0.35, cy - h * 1.2), (cx + w * 0.6, cy - h * 0.2)], fill)
    pen.disc(cx - w * 0.6, cy + h, h * 0.45, fill)
    pen.disc(cx + w * 0.6, cy + h, h * 0.45, fill)


def _truck(pen: _Pen, cx: float, cy: float, fill: tuple[int, int, int]) -> None:
    pen.rect(cx - 0.15, cy - 0.09, cx + 0.07, cy + 0.06, fill)
    pen.rect(cx + 0.08, cy - 0.03, cx + 0.15, cy + 0.06, fill)
    pen.disc(cx - 0.1, cy + 0.07, 0.03, fill)
    pen.disc(cx + 0.1, cy + 0.07, 0.03, fill)


def _person(pen: _Pen, cx: float, cy: float, scale: float, fill: tuple[int, int, int]) -> None:
    s = scale
    pen.disc(cx, cy - 0.15 * s, 0.045 * s, fill)
    pen.line([(cx, cy - 0.09 * s), (cx, cy + 0.05 * s)], 0.045 * s, fill)
    pen.line([(cx, cy + 0.05 * s), (cx - 0.06 * s, cy + 0.17 * s)], 0.04 * s, fill)
    pen.line([(cx, cy + 0.05 * s), (cx + 0.06 * s, cy + 0.17 * s)], 0.04 * s, fill)
    pen.line([(cx - 0.07 * s, cy - 0.02 * s), (cx, cy - 0.07 * s), (cx + 0.07 * s, cy - 0.02 * s)], 0.035 * s, fill)


def _bar(pen: _Pen, fill: tuple[int, int, int] = BLACK, width: float = 0.05) -> None:
    pen.line([(0.27, 0.73), (0.73, 0.27)], width, fill)


# Glyphs drawn inside the sign, per class.
def _glyphs() -> dict[int, Callable[[_Pen], None]]:
    g: dict[int, Callable[[_Pen], None]] = {}
    for cid, text in zip((0, 1, 2, 3, 4, 5, 7, 8), ("20", "30", "50", "60", "70", "80", "100", "120")):
        g[cid] = lambda p, t=text: _number(p, t, BLACK)

    def end80(p: _Pen) -> None:
        _number(p, "80", GRAY)
        _bar(p, GRAY, 0.045)

    g[6] = end80
    g[9] = lambda p: (_car(p, 0.36, 0.52, RED, 0.85), _car(p, 0.64, 0.52, BLACK, 0.85))
    g[10] = lambda p: (_truck(p, 0.36, 0.52, RED), _car(p, 0.68, 0.53, BLACK, 0.7))
    g[11] = lambda p: (p.line([(0.5, 0.42), (0.5, 0.8)], 0.06, BLACK),
                       p.line([(0.38, 0.58), (0.62, 0.58)], 0.06, BLACK))
    g[12] = lambda p: None
    g[13] = lambda p: None
    g[14] = lambda p: (p.rect(0.22, 0.44, 0.78, 0.56, WHITE), p.rect(0.3, 0.36, 0.36, 0.64, WHITE),
                       p.rect(0.64, 0.36, 0.7, 0.64, WHITE))
    g[15] = lambda p: None
    g[16] = lambda p: _truck(p, 0.5, 0.52, BLACK)
    g[17] = lambda p: p.rect(0.2, 0.43, 0.8, 0.57, WHITE)
    g[18] = lambda p: (p.line([(0.5, 0.4), (0.5, 0.66)], 0.06, BLACK), p.disc(0.5, 0.76, 0.035, BLACK))
    g[19] = lambda p: p.arrow([(0.56, 0.8), (0.56, 0.56), (0.4, 0.44)], 0.05, BLACK, 0.1)
    g[20] = lambda p: p.arrow([(0.44, 0.8), (0.44, 0.56), (0.6, 0.44)], 0.05, BLACK, 0.1)
    g[21] = lambda p: p.line([(0.44, 0.8), (0.44, 0.68), (0.58, 0.58), (0.44, 0.48), (0.5, 0.4)], 0.05, BLACK)
    g[22] = lambda p: p.line([(0.26, 0.74), (0.34, 0.62), (0.42, 0.74), (0.58, 0.74), (0.66, 0.62), (0.74, 0.74)],
                             0.05, BLACK)
    g[23] = lambda p: (_car(p, 0.5, 0.52, BLACK, 0.8), p.line([(0.36, 0.76), (0.44, 0.68), (0.5, 0.76)], 0.03, BLACK),
                       p.line([(0.52, 0.76), (0.58, 0.68), (0.66, 0.76)], 0.03, BLACK))
    g[24] = lambda p: (p.line([(0.42, 0.8), (0.42, 0.4)], 0.05, BLACK),
                       p.line([(0.6, 0.8), (0.6, 0.62), (0.52, 0.52), (0.52, 0.4)], 0.05, BLACK))
    g[25] = lambda p: (_person(p, 0.46, 0.62, 0.9, BLACK), p.line([(0.56, 0.56), (0.66, 0.74)], 0.04, BLACK),
                       p.rect(0.3, 0.76, 0.7, 0.8, BLACK))
    g[26] = lambda p: (p.disc(0.5, 0.44, 0.055, RED), p.disc(0.5, 0.59, 0.055, YELLOW), p.disc(0.5, 0.74, 0.055, GREEN))
    g[27] = lambda p: _person(p, 0.5, 0.62, 1.0, BLACK)
    g[28] = lambda p: (_person(p, 0.42, 0.62, 0.9, BLACK), _person(p, 0.6, 0.66, 0.7, BLACK))
    g[29] = lambda p: (p.ring(0.38, 0.68, 0.08, 0.025, BLACK), p.ring(0.62, 0.68, 0.08, 0.025, BLACK),
                       p.line([(0.38, 0.68), (0.48, 0.52), (0.62, 0.68)], 0.025, BLACK))
    g[30] = lambda p: [p.line([(0.5 + 0.15 * math.cos(a), 0.62 + 0.15 * math.sin(a)),
                               (0.5 - 0.15 * math.cos(a), 0.62 - 0.15 * math.sin(a))], 0.035, BLACK)
                       for a in (0.0, math.pi / 3, 2 * math.pi / 3)]
    g[31] = lambda p: p.poly([(0.32, 0.78), (0.36, 0.6), (0.58, 0.58), (0.66, 0.42), (0.72, 0.46),
                              (0.66, 0.6), (0.68, 0.78), (0.62, 0.78), (0.58, 0.66), (0.4, 0.66), (0.38, 0.78)], BLACK)
    g[32] = lambda p: [p.line([(0.25 + d, 0.7 + d), (0.7 + d, 0.25 + d)], 0.018, BLACK)
                       for d in (-0.08, -0.04, 0.0, 0.04, 0.08)]
    g[33] = lambda p: p.arrow([(0.4, 0.75), (0.4, 0.45), (0.72, 0.45)], 0.08, WHITE, 0.16)
    g[34] = lambda p: p.arrow([(0.6, 0.75), (0.6, 0.45), (0.28, 0.45)], 0.08, WHITE, 0.16)
    g[35] = lambda p: p.arrow([(0.5, 0.8), (0.5, 0.2)], 0.09, WHITE, 0.18)
    g[36] = lambda p: (p.arrow([(0.45, 0.8), (0.45, 0.2)], 0.07, WHITE, 0.14),
                       p.arrow([(0.45, 0.6), (0.78, 0.6)], 0.07, WHITE, 0.14))
    g[37] = lambda p: (p.arrow([(0.55, 0.8), (0.55, 0.2)], 0.07, WHITE, 0.14),
                       p.arrow([(0.55, 0.6), (0.22, 0.6)], 0.07, WHITE, 0.14))
    g[38] = lambda p: p.arrow([(0.3, 0.3), (0.7, 0.7)], 0.09, WHITE, 0.18)
    g[39] = lambda p: p.arrow([(0.7, 0.3), (0.3, 0.7)], 0.09, WHITE, 0.18)

    def roundabout(p: _Pen) -> None:
        for k in range(3):
            a0 = k * 2 * math.pi / 3
            pts = [(0.5 + 0.2 * math.cos(a0 + t * 0.6), 0.5 + 0.2 * math.sin(a0 + t * 0.6)) for t in range(4)]
            p.arrow(pts, 0.06, WHITE, 0.12)

    g[40] = roundabout
    g[41] = lambda p: (_car(p, 0.36, 0.52, GRAY, 0.85), _car(p, 0.64, 0.52, GRAY, 0.85), _bar(p, GRAY, 0.035))
    g[42] = lambda p: (_truck(p, 0.36, 0.52, GRAY), _car(p, 0.68, 0.53, GRAY, 0.7), _bar(p, GRAY, 0.035))
    return g


@dataclass(frozen=True)
class _SignSpec:
    shape: str  # circle_red | circle_blue | circle_end | circle_no_entry | triangle | triangle_down | octagon | diamond
    color_id: int


def _spec(class_id: int) -> _SignSpec:
    if class_id in (6, 32, 41, 42):
        return _SignSpec("circle_end", 3)
    if class_id <= 10 or class_id in (15, 16):
        return _SignSpec("circle_red", 0)
    if class_id == 17:
        return _SignSpec("circle_no_entry", 0)
    if class_id == 11 or 18 <= class_id <= 31:
        return _SignSpec("triangle", 0)
    if class_id == 12:
        return _SignSpec("diamond", 2)
    if class_id == 13:
        return _SignSpec("triangle_down", 0)
    if class_id == 14:
        return _SignSpec("octagon", 0)
    return _SignSpec("circle_blue", 1)


def _shape_id(spec: _SignSpec) -> int:
    return _SHAPE_IDS[spec.shape if spec.shape in _SHAPE_IDS else "circle"]


def _scaled(pts: list[tuple[float, float]], f: float, cx: float, cy: float) -> list[tuple[float, float]]:
    return [(cx + (x - cx) * f, cy + (y - cy) * f) for x, y in pts]


@functools.lru_cache(maxsize=2 * NUM_CLASSES)
def draw_pictogram(class_id: int, size: int = _PICT) -> Image.Image:
    """Draw the clean pictogram of one class as an RGBA image (transparent outside the sign).

    The result is cached: treat it as read-only (``copy()`` it before drawing on it).

    Args:
        class_id: 0..42.
        size: Side of the square result in pixels (drawn 2x larger, then downscaled).
    """
    if not 0 <= class_id < NUM_CLASSES:
        raise ConfigError(f"class id {class_id} is outside 0..{NUM_CLASSES - 1}")
    big = size * _SUPER
    canvas = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    pen = _Pen(ImageDraw.Draw(canvas), big)
    spec = _spec(class_id)
    c = 0.5
    if spec.shape.startswith("circle"):
        inner = {"circle_red": WHITE, "circle_end": WHITE, "circle_blue": BLUE, "circle_no_entry": RED}[spec.shape]
        rim = {"circle_red": RED, "circle_end": WHITE, "circle_blue": WHITE, "circle_no_entry": WHITE}[spec.shape]
        pen.disc(c, c, 0.5, rim)
        pen.disc(c, c, 0.5 if spec.shape == "circle_end" else 0.47 if rim == WHITE else 0.38, inner)
        if spec.shape == "circle_red":
            pen.disc(c, c, 0.38, WHITE)
        if spec.shape == "circle_end":
            pen.ring(c, c, 0.495, 0.012, GRAY)
    elif spec.shape in ("triangle", "triangle_down"):
        tri = [(0.5, 0.03), (0.99, 0.9), (0.01, 0.9)]
        if spec.shape == "triangle_down":
            tri = [(x, 0.93 - y) for x, y in tri]
        cy = sum(y for _, y in tri) / 3
        pen.poly(tri, WHITE)
        pen.poly(_scaled(tri, 0.95, 0.5, cy), RED)
        pen.poly(_scaled(tri, 0.62, 0.5, cy), WHITE)
    elif spec.shape == "octagon":
        angles = [math.pi / 8 + k * math.pi / 4 for k in range(8)]
        octo = [(0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a)) for a in angles]
        pen.poly(octo, WHITE)
        pen.poly(_scaled(octo, 0.93, 0.5, 0.5), RED)
    else:  # diamond
        dia = [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
        pen.poly(dia, WHITE)
        pen.poly(_scaled(dia, 0.96, 0.5, 0.5), BLACK)
        pen.poly(_scaled(dia, 0.9, 0.5, 0.5), WHITE)
        pen.poly(_scaled(dia, 0.62, 0.5, 0.5), YELLOW)
    _GLYPHS[class_id](pen)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


_GLYPHS = _glyphs()

# --------------------------------------------------------------------------- scene rendering

_BACKGROUNDS = np.array([
    (125, 165, 215),  # sky
    (70, 100, 55),    # foliage
    (125, 115, 105),  # buildings
    (45, 45, 52),     # dusk / shadow
    (165, 160, 150),  # overcast
    (95, 80, 60),     # earth
], dtype=np.float32)


@dataclass
class _Track:
    """Appearance that stays (mostly) constant along one track."""

    rng: np.random.Generator
    pict: Image.Image
    small: Image.Image  # half-size pictogram: cheaper source for small signs
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


def _make_track(
    pictures: dict[int, tuple[Image.Image, Image.Image]], class_id: int, seed: int, kind: int, index: int
) -> _Track:
    rng = np.random.default_rng([seed, kind, class_id, index])
    angle = float(rng.uniform(-7, 7))
    base = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
    bg = np.clip(base + rng.normal(0, 18, size=(3, 3, 1)) + rng.normal(0, 8, size=(3, 3, 3)), 0, 255).astype(np.float32)
    # A few tracks are dark (dusk, shadow) or over-exposed, as in the real data.
    gain = float(np.exp(rng.normal(-0.15, 0.35)))
    if rng.random() < 0.12:
        gain = float(rng.uniform(0.18, 0.35))
    return _Track(
        rng=rng, pict=pictures[class_id][0], small=pictures[class_id][1], angle=angle,
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
    # Resize first, rotate the small result: rotating the large pictogram costs 10x more.
    source = track.pict if sw > _PICT // 2 else track.small
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


def _encode(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    return buf.getvalue()


def _write_csv(path: Path, header: list[str], rows: list[list[object]], sep: str, newline: str) -> None:
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


def _is_synth_output(folder: Path) -> bool:
    return (folder / MARKER).is_file()


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
    tracks_per_class: int = 4,
    frames_per_track: int = 10,
    test_per_class: int = 12,
    seed: int = 0,
    layout: SynthLayout = "official",
    archives: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write a small synthetic GTSRB dataset and return its root (what ``read_catalog`` reads).

    The tree is drawn in a temporary folder beside ``out`` and moved in only when complete.
    A folder written earlier by this function (it holds ``.gtsrb-kit-synth.json``) is
    replaced; entries of other names in it are left alone.

    Args:
        out: Target folder; created if missing. Must be empty or an earlier synth output
            unless ``force``.
        tracks_per_class: Mean number of tracks per class (each class gets about this many,
            at least 1, unbalanced on purpose).
        frames_per_track: Frames per track; the sign grows from about 25 px to 80 px.
        test_per_class: Mean number of test images per class (at least 1 each).
        seed: Same seed, same arguments -> byte-identical files.
        layout: ``"official"`` (PPM + ``GT-*.csv``) or ``"kaggle"`` (PNG + Train/Test/Meta.csv).
        archives: Also write ``archives/`` with the three official zip files and
            ``SHA256SUMS`` (official layout only).
        force: Write into a non-empty folder that is not a synth output, replacing entries of
            the same names (``GTSRB/``, ``GT-final_test.csv``, ``archives/``, ``Train/``...).
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
        plan = _Plan(tmp, tracks_per_class, frames_per_track, test_per_class, seed, layout)
        entries, counts = _build(plan, archives=archives, progress=progress)
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
    if out.is_dir() and any(out.iterdir()) and not _is_synth_output(out) and not force:
        raise DataError(f"{out}: folder is not empty and was not written by 'gtsrb-kit synth'; "
                        "pick an empty --root or pass --force to overwrite its GTSRB entries")


def _swap_in(tmp: Path, out: Path, entries: list[str]) -> None:
    """Replace the entries of ``out`` (and of an earlier synth output there) by those of ``tmp``."""
    out.mkdir(exist_ok=True)
    old = _previous_entries(out) if _is_synth_output(out) else []
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
    """What to draw, where: the arguments of :func:`generate_dataset` that shape the images."""

    root: Path
    tracks_per_class: int
    frames_per_track: int
    test_per_class: int
    seed: int
    layout: SynthLayout

    @property
    def official(self) -> bool:
        return self.layout == "official"

    @property
    def ext(self) -> str:
        return "ppm" if self.official else "png"

    @property
    def train_root(self) -> Path:
        return self.root / ("GTSRB/Final_Training/Images" if self.official else "Train")

    @property
    def test_dir(self) -> Path:
        return self.root / ("GTSRB/Final_Test/Images" if self.official else "Test")

    def class_dir(self, cid: int) -> Path:
        return self.train_root / (f"{cid:05d}" if self.official else str(cid))


Rows = list[list[object]]
_HEADER = ["Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]


def _build(plan: _Plan, *, archives: bool, progress: ProgressCallback | None) -> tuple[list[str], dict[str, int]]:
    """Render everything into ``plan.root``; return the top-level entry names and image counts."""
    pictures = {c: (draw_pictogram(c), draw_pictogram(c, _PICT // 2)) for c in range(NUM_CLASSES)}
    count_rng = np.random.default_rng([plan.seed, 7])
    n_tracks = _class_counts(plan.tracks_per_class, count_rng)
    n_test = _class_counts(plan.test_per_class, count_rng)
    train_rows, test_rows = _draw_images(plan, pictures, n_tracks, n_test, progress)
    counts = {"train": len(train_rows), "test": len(test_rows), "tracks": int(n_tracks.sum())}
    if not plan.official:
        return _write_kaggle_tables(plan, pictures, train_rows, test_rows), counts
    _write_official_tables(plan, train_rows, test_rows)
    entries = ["GTSRB", "GT-final_test.csv"]
    if archives:
        _write_archives(plan.root, progress)
        entries.append("archives")
    return entries, counts


def _draw_images(plan: _Plan, pictures: dict, n_tracks: np.ndarray, n_test: np.ndarray,
                 progress: ProgressCallback | None) -> tuple[Rows, Rows]:
    """Draw and write every training track and test image; return their CSV rows."""
    plan.test_dir.mkdir(parents=True)
    for cid in range(NUM_CLASSES):
        plan.class_dir(cid).mkdir(parents=True)
    fmt, ext, frames = ("PPM" if plan.official else "PNG"), plan.ext, plan.frames_per_track

    def train_track(cid: int, track_no: int) -> Rows:
        track = _make_track(pictures, cid, plan.seed, 0, track_no)
        rows: Rows = []
        for f in range(frames):
            image, roi = _render(track, f / (frames - 1) if frames > 1 else 0.5)
            name = f"{track_no:05d}_{f:05d}.{ext}" if plan.official else f"{cid:05d}_{track_no:05d}_{f:05d}.{ext}"
            (plan.class_dir(cid) / name).write_bytes(_encode(image, fmt))
            h, w = image.shape[:2]
            rows.append([name, w, h, *roi, cid])
        return rows

    def test_image(i: int, cid: int) -> Rows:
        track = _make_track(pictures, cid, plan.seed, 1, i)
        image, roi = _render(track, float(track.rng.uniform(0, 1)))
        name = f"{i:05d}.{ext}"
        (plan.test_dir / name).write_bytes(_encode(image, fmt))
        h, w = image.shape[:2]
        return [[name, w, h, *roi, cid]]

    # Test images: one frame of an unseen track each, shuffled over classes like the real set.
    test_classes = np.repeat(np.arange(NUM_CLASSES), n_test)
    test_classes = test_classes[np.random.default_rng([plan.seed, 11]).permutation(len(test_classes))]
    jobs = [(train_track, cid, t, frames) for cid in range(NUM_CLASSES) for t in range(int(n_tracks[cid]))]
    n_train_jobs = len(jobs)
    jobs += [(test_image, i, int(cid), 1) for i, cid in enumerate(test_classes)]
    results = _run_threaded(jobs, progress)
    return ([r for rows in results[:n_train_jobs] for r in rows],
            [r for rows in results[n_train_jobs:] for r in rows])


def _run_threaded(jobs: list[tuple[Callable[[int, int], Rows], int, int, int]],
                  progress: ProgressCallback | None) -> list[Rows]:
    """Run ``fn(a, b)`` for every job in threads, in order, counting ``n`` images per job."""
    # Every track and test image draws from its own seeded generator, so the work can run in
    # threads (PIL and numpy release the GIL) without changing a byte of the output.
    total, done, results = sum(n for *_, n in jobs), 0, []
    report(progress, "drawing images", 0, total)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(fn, a, b) for fn, a, b, _ in jobs]
        for future, (*_, n) in zip(futures, jobs):
            results.append(future.result())
            done += n
            report(progress, "drawing images", done, total)
    return results


def _write_official_tables(plan: _Plan, train_rows: Rows, test_rows: Rows) -> None:
    by_class: dict[int, Rows] = {}
    for row in train_rows:
        by_class.setdefault(int(row[-1]), []).append(row)
    for cid in range(NUM_CLASSES):
        _write_csv(plan.class_dir(cid) / f"GT-{cid:05d}.csv", ["Filename", *_HEADER], by_class.get(cid, []),
                   ";", "\r\n")
    _write_csv(plan.test_dir / "GT-final_test.test.csv", ["Filename", *_HEADER[:-1]], [r[:-1] for r in test_rows],
               ";", "\r\n")
    _write_csv(plan.root / "GT-final_test.csv", ["Filename", *_HEADER], test_rows, ";", "\r\n")


def _write_kaggle_tables(plan: _Plan, pictures: dict, train_rows: Rows, test_rows: Rows) -> list[str]:
    root = plan.root
    _write_csv(root / "Train.csv", [*_HEADER, "Path"], [[*r[1:], f"Train/{r[-1]}/{r[0]}"] for r in train_rows],
               ",", "\n")
    _write_csv(root / "Test.csv", [*_HEADER, "Path"], [[*r[1:], f"Test/{r[0]}"] for r in test_rows], ",", "\n")
    meta_dir = root / "Meta"
    meta_dir.mkdir()
    meta_rows: Rows = []
    for cid in range(NUM_CLASSES):
        # Transparent pixels carry white so that an RGB conversion shows the sign on white.
        rgba = np.asarray(pictures[cid][0]).copy()
        rgba[rgba[..., 3] == 0, :3] = 255
        Image.fromarray(rgba, "RGBA").save(meta_dir / f"{cid}.png", format="PNG")
        spec = _spec(cid)
        meta_rows.append([f"Meta/{cid}.png", cid, _shape_id(spec), spec.color_id, f"{_shape_id(spec)}.{cid}"])
    _write_csv(root / "Meta.csv", ["Path", "ClassId", "ShapeId", "ColorId", "SignId"], meta_rows, ",", "\n")
    return ["Meta", "Meta.csv", "Test", "Test.csv", "Train", "Train.csv"]


def _write_archives(root: Path, progress: ProgressCallback | None) -> None:
    """Zip the official tree into the three archives the benchmark's site publishes."""
    arch = root / "archives"
    arch.mkdir()
    train_files = sorted(p for p in (root / "GTSRB/Final_Training/Images").rglob("*") if p.is_file())
    test_files = sorted(p for p in (root / "GTSRB/Final_Test/Images").rglob("*") if p.is_file())
    report(progress, "writing archives", 0, 3)
    _zip_tree(arch / ARCHIVE_NAMES[0], root, train_files)
    report(progress, "writing archives", 1, 3)
    _zip_tree(arch / ARCHIVE_NAMES[1], root, test_files)
    report(progress, "writing archives", 2, 3)
    _zip_tree(arch / ARCHIVE_NAMES[2], root, [root / "GT-final_test.csv"])
    report(progress, "writing archives", 3, 3)
    sums = "".join(f"{sha256_file(arch / n)}  {n}\n" for n in ARCHIVE_NAMES)
    (arch / "SHA256SUMS").write_text(sums)
