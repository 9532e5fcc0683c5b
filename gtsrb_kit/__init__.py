"""gtsrb-kit: the German Traffic Sign Recognition Benchmark, model-ready.

The public API is flat: everything a user needs is importable from ``gtsrb_kit`` directly.
Names are resolved lazily, so ``import gtsrb_kit`` is fast and never imports TensorFlow;
functions that need TensorFlow import it when they are called.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # classes, errors, paths
    "CLASS_NAMES": "gtsrb_kit.classes",
    "NUM_CLASSES": "gtsrb_kit.classes",
    "class_name": "gtsrb_kit.classes",
    "GtsrbKitError": "gtsrb_kit.errors",
    "DataError": "gtsrb_kit.errors",
    "DownloadError": "gtsrb_kit.errors",
    "ConfigError": "gtsrb_kit.errors",
    "default_root": "gtsrb_kit.paths",
    "default_data_dir": "gtsrb_kit.paths",
    "default_run_dir": "gtsrb_kit.paths",
    # catalog
    "read_catalog": "gtsrb_kit.catalog",
    "catalog_problems": "gtsrb_kit.catalog",
    "detect_layout": "gtsrb_kit.catalog",
    "load_image": "gtsrb_kit.catalog",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gtsrb_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
