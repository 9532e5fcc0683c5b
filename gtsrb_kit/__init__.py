"""gtsrb-kit: the German Traffic Sign Recognition Benchmark, model-ready.

The public API is flat: everything a user needs is importable from ``gtsrb_kit`` directly.
Names are resolved lazily, so ``import gtsrb_kit`` is fast and never imports TensorFlow;
functions that need TensorFlow import it when they are called.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module" or "module:attribute" (functions named like their module, e.g.
# gtsrb_kit.train.train, get distinct public names: a submodule import would shadow them)
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
    # download
    "download_gtsrb": "gtsrb_kit.download",
    "official_archives": "gtsrb_kit.download",
    "read_checksums": "gtsrb_kit.download",
    "verify_archive": "gtsrb_kit.download",
    "fetch_archive": "gtsrb_kit.download",
    "RetryPolicy": "gtsrb_kit.download",
    "extract_zip": "gtsrb_kit.extract",
    "ExtractLimits": "gtsrb_kit.extract",
    # catalog, offline dataset, statistics
    "read_catalog": "gtsrb_kit.catalog",
    "catalog_problems": "gtsrb_kit.catalog",
    "detect_layout": "gtsrb_kit.catalog",
    "load_image": "gtsrb_kit.catalog",
    "generate_dataset": "gtsrb_kit.synth",
    "compute_stats": "gtsrb_kit.stats",
    "write_stats": "gtsrb_kit.stats",
    "DatasetStats": "gtsrb_kit.stats",
    # enhance, cook, store (loaders)
    "MODES": "gtsrb_kit.enhance",
    "enhance_image": "gtsrb_kit.enhance:enhance",
    "apply_mode": "gtsrb_kit.enhance",
    "cook_dataset": "gtsrb_kit.cook",
    "CookResult": "gtsrb_kit.cook",
    "enhanced_filename": "gtsrb_kit.store",
    "read_info": "gtsrb_kit.store",
    "load_split": "gtsrb_kit.store",
    "class_names": "gtsrb_kit.store",
    "open_enhanced": "gtsrb_kit.store",
    "tf_dataset": "gtsrb_kit.store",
    "SplitSource": "gtsrb_kit.store",
    "DeviceBatches": "gtsrb_kit.store",
    # augmentation, models, training, evaluation
    "make_augmenter": "gtsrb_kit.augment",
    "albumentations_pipeline": "gtsrb_kit.augment",
    "preview_grid": "gtsrb_kit.augment",
    "list_models": "gtsrb_kit.models",
    "build_model": "gtsrb_kit.models",
    "DEFAULT_MODEL": "gtsrb_kit.models",
    "train_model": "gtsrb_kit.train:train",
    "evaluate_model": "gtsrb_kit.evaluate:evaluate",
    "predict": "gtsrb_kit.evaluate",
    "load_model": "gtsrb_kit.evaluate",
    # robustness (GTSRB-C) and explanations
    "CHALLENGES": "gtsrb_kit.corrupt",
    "corrupt_image": "gtsrb_kit.corrupt:corrupt",
    "run_robustness": "gtsrb_kit.robustness",
    "grad_cam": "gtsrb_kit.explain",
    "explain_model": "gtsrb_kit.explain:explain",
    # sweeps, batch jobs, reports
    "load_plan": "gtsrb_kit.plans",
    "plan_from_dict": "gtsrb_kit.plans",
    "run_sweep": "gtsrb_kit.sweep",
    "prepare_datasets": "gtsrb_kit.sweep",
    "run_status": "gtsrb_kit.runs",
    "write_slurm_script": "gtsrb_kit.slurm",
    "write_report": "gtsrb_kit.report",
    "collect_runs": "gtsrb_kit.runs",
    "runs_frame": "gtsrb_kit.report",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'gtsrb_kit' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
