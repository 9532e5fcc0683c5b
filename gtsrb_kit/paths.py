"""Default locations. Every command uses these when no path is given.

* Raw GTSRB trees live under :func:`default_root` (``$GTSRB_KIT_ROOT``, else ``./data/raw``).
* Cooked HDF5 files go to :func:`default_data_dir` (``$GTSRB_KIT_DATA``, else ``./data``).
* Training runs go to :func:`default_run_dir` (``$GTSRB_KIT_RUNS``, else ``./runs``).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "GTSRB_KIT_ROOT"
DATA_ENV = "GTSRB_KIT_DATA"
RUNS_ENV = "GTSRB_KIT_RUNS"


def default_root() -> Path:
    """Folder holding the raw GTSRB tree (official or Kaggle layout)."""
    return Path(os.environ.get(ROOT_ENV) or Path("data") / "raw")


def default_data_dir() -> Path:
    """Folder where cooked ``set-*.h5`` files are written and looked up."""
    return Path(os.environ.get(DATA_ENV) or "data")


def default_run_dir() -> Path:
    """Folder under which training runs and sweeps are written."""
    return Path(os.environ.get(RUNS_ENV) or "runs")
