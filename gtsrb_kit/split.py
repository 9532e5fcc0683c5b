"""Track-wise train/validation split, scale subsampling and the choice of reference images.

Frames of one track (one physical sign) never straddle two splits; every random choice comes
from a generator seeded with ``(seed, purpose, class)``. The rules are in ``docs/cook.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gtsrb_kit.errors import ConfigError

_PURPOSE_SCALE_TRAIN = 1
_PURPOSE_SCALE_TEST = 2
_PURPOSE_VAL = 3


@dataclass
class SplitPlan:
    """Which catalog rows (positional indices) go into each split of a cooked file."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    meta: np.ndarray
    dropped_tracks: list[int] = field(default_factory=list)

    def rows(self, split: str) -> np.ndarray:
        """The catalog row indices of ``split``."""
        return getattr(self, split)

    def counts(self) -> dict[str, int]:
        """Images per split."""
        return {s: int(len(self.rows(s))) for s in ("train", "val", "test", "meta")}


def check_fraction(name: str, value: float, *, low_open: bool, high_closed: bool, low: float = 0.0, high: float = 1.0) -> float:
    """Validate a fraction option and return it as float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    ok_low = value > low if low_open else value >= low
    ok_high = value <= high if high_closed else value < high
    if not (ok_low and ok_high and np.isfinite(value)):
        lo = "(" if low_open else "["
        hi = "]" if high_closed else ")"
        raise ConfigError(f"{name} must be in {lo}{low:g}, {high:g}{hi}, got {value:g}")
    return value


def _rng(seed: int, purpose: int, class_id: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, purpose, int(class_id)])


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _choose(rng: np.random.Generator, items: np.ndarray, k: int) -> np.ndarray:
    """``k`` items of a sorted array, chosen at random, returned sorted."""
    if k >= len(items):
        return items
    return np.sort(rng.choice(items, size=k, replace=False))


def scale_tracks(train: pd.DataFrame, scale: float, seed: int) -> np.ndarray:
    """The track ids kept at ``scale`` (whole tracks per class), sorted.

    Args:
        train: Catalog rows of the training split (``class_id``, ``track_id``).
        scale: Fraction of tracks to keep, in (0, 1].
        seed: Seed of the choice.
    """
    kept: list[np.ndarray] = []
    for class_id, group in train.groupby("class_id", sort=True):
        tracks = np.unique(group["track_id"].to_numpy())
        if scale >= 1.0:
            kept.append(tracks)
            continue
        k = max(min(2, len(tracks)), _round_half_up(scale * len(tracks)))
        kept.append(_choose(_rng(seed, _PURPOSE_SCALE_TRAIN, class_id), tracks, k))
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, np.int64)


def scale_test(test: pd.DataFrame, scale: float, seed: int) -> np.ndarray:
    """Positional indices (into ``test``) of a class-stratified ``scale`` subset, sorted."""
    if scale >= 1.0:
        return np.arange(len(test))
    chosen: list[np.ndarray] = []
    positions = np.arange(len(test))
    for class_id, idx in test.groupby("class_id", sort=True).indices.items():
        k = max(1, _round_half_up(scale * len(idx)))
        chosen.append(_choose(_rng(seed, _PURPOSE_SCALE_TEST, class_id), positions[np.sort(idx)], k))
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)


def val_tracks(train: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Track ids that go to validation: stratified by class, whole tracks, seeded; sorted."""
    chosen: list[np.ndarray] = []
    if val_fraction <= 0:
        return np.empty(0, np.int64)
    for class_id, group in train.groupby("class_id", sort=True):
        tracks = np.unique(group["track_id"].to_numpy())
        if len(tracks) < 2:
            continue
        k = min(len(tracks) - 1, max(1, _round_half_up(val_fraction * len(tracks))))
        chosen.append(_choose(_rng(seed, _PURPOSE_VAL, class_id), tracks, k))
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)


def reference_rows(catalog: pd.DataFrame, train_rows: np.ndarray) -> np.ndarray:
    """One reference image per class, as positional catalog indices sorted by class.

    The layout's ``meta`` pictograms where present (first by path when a class has several);
    otherwise the largest training image of the class (ties: first by path), taken from
    ``train_rows`` so the reference never leaks a validation or test image.
    """
    chosen: dict[int, int] = {}
    split = catalog["split"].to_numpy()
    class_ids = catalog["class_id"].to_numpy()
    rel = catalog["rel_path"].to_numpy()
    meta_idx = np.flatnonzero(split == "meta")
    if len(meta_idx):
        order = np.lexsort((rel[meta_idx], class_ids[meta_idx]))
        for i in meta_idx[order]:
            chosen.setdefault(int(class_ids[i]), int(i))
    train_rows = np.asarray(train_rows, dtype=np.int64)
    if len(train_rows):
        area = catalog["width"].to_numpy()[train_rows] * catalog["height"].to_numpy()[train_rows]
        order = np.lexsort((rel[train_rows], -area, class_ids[train_rows]))
        for i in train_rows[order]:
            chosen.setdefault(int(class_ids[i]), int(i))
    return np.array([chosen[c] for c in sorted(chosen)], dtype=np.int64)


def plan_split(
    catalog: pd.DataFrame,
    *,
    scale: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.2,
    drop_tracks: np.ndarray | list[int] | None = None,
) -> SplitPlan:
    """Decide which catalog rows go into train, val, test and meta.

    Args:
        catalog: From :func:`gtsrb_kit.catalog.read_catalog`.
        scale: Fraction of tracks (train/val) and of test images to keep, in (0, 1].
        seed: Seed of every random choice.
        val_fraction: Fraction of each class's tracks for validation, in [0, 1).
        drop_tracks: Track ids to leave out entirely (e.g. tracks that duplicate test images);
            applied after scaling, before the validation split.

    Returns:
        A :class:`SplitPlan`; rows within each split are in catalog order (class, then path).
    """
    scale = check_fraction("scale", scale, low_open=True, high_closed=True)
    val_fraction = check_fraction("val_fraction", val_fraction, low_open=False, high_closed=False)
    split = catalog["split"].to_numpy()
    train_idx = np.flatnonzero(split == "train")
    test_idx = np.flatnonzero(split == "test")
    train = catalog.iloc[train_idx]
    kept = scale_tracks(train, scale, seed)
    dropped = np.asarray(sorted(set(int(t) for t in (drop_tracks if drop_tracks is not None else []))), np.int64)
    kept = np.setdiff1d(kept, dropped)
    track_ids = train["track_id"].to_numpy()
    train_idx = train_idx[np.isin(track_ids, kept)]
    train = catalog.iloc[train_idx]
    to_val = val_tracks(train, val_fraction, seed)
    is_val = np.isin(train["track_id"].to_numpy(), to_val)
    test_idx = test_idx[scale_test(catalog.iloc[test_idx], scale, seed)]
    plan = SplitPlan(
        train=train_idx[~is_val],
        val=train_idx[is_val],
        test=test_idx,
        meta=np.empty(0, np.int64),
        dropped_tracks=[int(t) for t in np.intersect1d(dropped, np.unique(track_ids))],
    )
    plan.meta = reference_rows(catalog, plan.train)
    return plan
