"""Shared fixtures.

* ``shared_gtsrb``: the real-data folder ``../shared/gtsrb`` beside the repo (skips when absent).
* ``real_small_root`` / ``real_full_root``: official-layout trees materialized from it.
* ``synth_root``: a small official-layout tree from the built-in generator (no network, no
  shared data), generated once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_GTSRB = Path(os.environ.get("GTSRB_KIT_SHARED", REPO.parent / "shared" / "gtsrb"))

# Tests must never write into the user's ./data or ./runs by accident.
os.environ.pop("GTSRB_KIT_ROOT", None)
os.environ.pop("GTSRB_KIT_DATA", None)
os.environ.pop("GTSRB_KIT_RUNS", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


def materialize(out: Path, *args: str) -> Path:
    """Run ../shared/gtsrb/materialize.py into ``out`` (idempotent) and return ``out``."""
    subprocess.run(
        [sys.executable, str(SHARED_GTSRB / "materialize.py"), str(out), *args],
        check=True, capture_output=True, text=True,
    )
    return out


@pytest.fixture(scope="session")
def shared_gtsrb() -> Path:
    if not (SHARED_GTSRB / "materialize.py").is_file():
        pytest.skip(f"real GTSRB data not available at {SHARED_GTSRB}")
    return SHARED_GTSRB


@pytest.fixture(scope="session")
def real_small_root(shared_gtsrb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real data, official layout: 1 track per class (10 frames each), 300 test images."""
    return materialize(tmp_path_factory.mktemp("real-small"), "--max-tracks", "1", "--max-test", "300")


@pytest.fixture(scope="session")
def real_full_root(shared_gtsrb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All of the shared real data (13,070 training + 12,630 test images), official layout."""
    return materialize(tmp_path_factory.mktemp("real-full"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the official layout (seed 0)."""
    from gtsrb_kit.synth import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("synth"), tracks_per_class=2, frames_per_track=5, test_per_class=4, seed=0
    )
