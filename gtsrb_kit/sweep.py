"""Sweeps: many models x many datasets x augmentations, run resumably, one folder per run.

A *plan* (TOML, YAML or JSON) says what to train::

    name = "gtsrb5"
    datasets = [
        "data/set-24x24-L.h5",                       # an enhanced file (a glob works too)
        { size = 24, mode = ["RGB", "L-LHE"] },      # recipes, cooked on the fly (lists expand)
    ]
    models = ["v1", "v2"]
    augment = ["none"]

    [cook]                 # where and how recipes are cooked
    root = "data/raw"      # raw GTSRB tree (default: $GTSRB_KIT_ROOT or ./data/raw)
    scale = 0.2            # out defaults to RUN_DIR/data

    [train]                # settings passed to gtsrb_kit.train.train
    epochs = 5
    batch_size = 64
    seed = 0

The plan's runs are the product datasets x models x augment (dataset-major order), or the
explicit ``[[runs]]`` list (``dataset``, ``model``, ``augment``, optional ``name`` and any
training setting). Each run is named ``{dataset-stem}__{model}__{augment}`` and trains in
``RUN_DIR/<name>/``. Relative paths in a plan file are relative to the plan's folder.

:func:`run_sweep` is resumable: finished runs (``metrics.json``) are skipped, interrupted ones
(``last.keras`` without metrics) are resumed, failed ones are retried. ``task_id`` runs exactly
one run (the index into :attr:`Plan.runs`), which is what a SLURM array task does. After every
run the combined report ``RUN_DIR/report.json`` is rebuilt from the files on disk under a lock.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import itertools
import json
import os
import re
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import write_text_atomic
from gtsrb_kit.paths import default_root
from gtsrb_kit.progress import ProgressCallback

from gtsrb_kit.runs import (  # noqa: F401 - the run-folder contract, re-exported
    CHECKPOINT_FILE, FAILED_FILE, LOCK_FILE, METRICS_FILE, PLAN_FILE, REPORT_JSON, RUN_FILE, file_lock, is_locked,
    read_json, run_status,
)

#: Keys of a plan file's top level.
PLAN_KEYS = ("name", "description", "datasets", "models", "augment", "cook", "train", "runs")
#: Keys of a dataset recipe (besides ``path`` for an existing file).
RECIPE_KEYS = ("size", "mode", "roi", "root", "out", "scale", "seed", "val_fraction")
#: Keys of the ``[cook]`` table (defaults for every recipe).
COOK_KEYS = ("root", "out", "scale", "seed", "val_fraction")
#: Training settings a plan may set when gtsrb_kit.train cannot be inspected.
_FALLBACK_TRAIN_KEYS = (
    "epochs", "batch_size", "seed", "learning_rate", "early_stopping", "lr_schedule", "devices", "mixed_precision",
)
#: Arguments of ``train`` the sweep itself provides.
_RESERVED_TRAIN_ARGS = ("data", "model", "augment", "run_dir", "resume", "progress", "verbose")
_NAME_OK = re.compile(r"[^A-Za-z0-9._+=-]+")
_COOK_DEFAULTS: dict[str, Any] = {"scale": 1.0, "seed": 0, "val_fraction": 0.2, "roi": False}

TrainFn = Callable[..., dict]
CookFn = Callable[..., Any]
LogFn = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Plan model


@dataclass
class DatasetSpec:
    """One dataset of a plan.

    Attributes:
        name: The file stem (``set-24x24-L``), used in run names and reports.
        path: Absolute path of the ``.h5`` file.
        recipe: ``None`` for an existing file; else the cook settings (``size``, ``mode``,
            ``roi``, ``root``, ``out``, ``scale``, ``seed``, ``val_fraction``).
    """

    name: str
    path: Path
    recipe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plan-file form of this dataset (absolute paths)."""
        if self.recipe is None:
            return {"path": str(self.path)}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.recipe.items()}


@dataclass
class RunSpec:
    """One training run of a plan: a dataset, a model, an augmentation preset and settings."""

    name: str
    dataset: DatasetSpec
    model: str
    augment: str
    settings: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What must match for a run folder on disk to count as this run."""
        return {
            "dataset": self.dataset.name, "model": self.model, "augment": self.augment,
            "settings": dict(sorted(self.settings.items())),
        }


@dataclass
class Plan:
    """A parsed plan: its datasets and the ordered list of runs (the array index is the position)."""

    name: str
    datasets: list[DatasetSpec]
    runs: list[RunSpec]
    source: Path | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The plan in its explicit form (``runs`` listed, absolute paths), loadable by :func:`plan_from_dict`."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["datasets"] = [d.to_dict() for d in self.datasets]
        out["runs"] = [
            {"name": r.name, "dataset": r.dataset.name, "model": r.model, "augment": r.augment, **r.settings}
            for r in self.runs
        ]
        return out

    def run(self, name_or_index: str | int) -> RunSpec:
        """The run with this name or index."""
        if isinstance(name_or_index, int):
            if not 0 <= name_or_index < len(self.runs):
                raise ConfigError(
                    f"task id {name_or_index} is out of range: plan {self.name!r} has {len(self.runs)} runs "
                    f"(0..{len(self.runs) - 1})"
                )
            return self.runs[name_or_index]
        for r in self.runs:
            if r.name == name_or_index:
                return r
        raise ConfigError(f"plan {self.name!r} has no run named {name_or_index!r} (see 'gtsrb-kit sweep PLAN --dry-run')")


def cooked_name(size: int, mode: str, roi: bool = False) -> str:
    """File stem of a cooked dataset: ``set-{size}x{size}-{mode}[-roi]``."""
    return f"set-{size}x{size}-{mode}{'-roi' if roi else ''}"


def run_name(dataset: str, model: str, augment: str) -> str:
    """Deterministic run folder name: ``{dataset-stem}__{model}__{augment}``."""
    return "__".join(_NAME_OK.sub("-", part) for part in (dataset, model, augment))


# ----------------------------------------------------------------------------------------------
# Parsing


class _Where:
    """Builds one-line ConfigErrors naming the plan file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")


def read_plan_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a plan file (``.toml``, ``.yaml``/``.yml`` or ``.json``) into a dict, without validating it.

    Raises:
        ConfigError: unreadable file, unknown extension or a syntax error (one line, with the file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: plan file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the plan ({exc})") from None
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown plan format {suffix or '(no extension)'!r}; use .toml, .yaml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # syntax errors of three parsers
        msg = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid {suffix.lstrip('.').upper()}: {msg}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a plan must be a table/mapping at the top level, not {type(data).__name__}")
    return data


def load_plan(path: str | os.PathLike[str], *, run_dir: str | os.PathLike[str] | None = None) -> Plan:
    """Read and validate a plan file.

    Args:
        path: ``.toml``, ``.yaml``/``.yml`` or ``.json`` plan.
        run_dir: The sweep's run folder; recipes without ``out`` cook into ``run_dir/data``.

    Raises:
        ConfigError: a malformed plan; the one-line message names the file and the key.
    """
    path = Path(path)
    data = read_plan_file(path)
    return plan_from_dict(data, base_dir=path.resolve().parent, source=str(path), run_dir=run_dir,
                          default_name=path.stem)


def plan_from_dict(
    data: dict[str, Any],
    *,
    base_dir: str | os.PathLike[str] = ".",
    source: str = "<plan>",
    run_dir: str | os.PathLike[str] | None = None,
    default_name: str = "sweep",
) -> Plan:
    """Validate a plan given as a dict (the content of a plan file).

    Args:
        data: The plan (see the module docstring for its keys).
        base_dir: Folder that relative paths are relative to.
        source: How error messages name the plan (its file name).
        run_dir: The sweep's run folder; recipes without ``out`` cook into ``run_dir/data``
            (without a run folder, into ``./data``).
        default_name: The plan's name when it has no ``name`` key.

    Raises:
        ConfigError: one line naming ``source`` and the offending key.
    """
    where = _Where(source)
    base = Path(base_dir).resolve()
    if not isinstance(data, dict):
        raise where.error("(top level)", "a plan must be a mapping")
    unknown = sorted(set(data) - set(PLAN_KEYS))
    if unknown:
        raise where.error(unknown[0], f"unknown key (known: {', '.join(PLAN_KEYS)})")

    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise where.error("name", "must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise where.error("description", "must be a string")

    cook = _parse_cook(data.get("cook", {}), where, base, run_dir)
    train = _parse_settings(data.get("train", {}), "train", where)

    datasets: list[DatasetSpec] = []
    raw_datasets = data.get("datasets", [])
    if isinstance(raw_datasets, (str, dict)):
        raw_datasets = [raw_datasets]
    if not isinstance(raw_datasets, list):
        raise where.error("datasets", "must be a list of files or recipes")
    for i, item in enumerate(raw_datasets):
        datasets.extend(_parse_dataset(item, f"datasets[{i}]", where, base, cook))
    by_name: dict[str, DatasetSpec] = {}
    for i, spec in enumerate(datasets):
        other = by_name.get(spec.name)
        if other is not None and other != spec:
            raise where.error("datasets", f"two different datasets are both named {spec.name!r}; keep one")
        by_name.setdefault(spec.name, spec)
    datasets = list(by_name.values())

    if "runs" in data:
        runs = _parse_runs(data, where, base, cook, train, by_name, datasets)
    else:
        if not datasets:
            raise where.error("datasets", "the plan lists no datasets")
        models = _string_list(data.get("models"), "models", where, required=True)
        augments = _string_list(data.get("augment", ["none"]), "augment", where, required=True)
        runs = [
            RunSpec(run_name(d.name, m, a), d, m, a, dict(train))
            for d, m, a in itertools.product(datasets, models, augments)
        ]
    seen: dict[str, int] = {}
    for i, run in enumerate(runs):
        if run.name in seen:
            raise where.error(
                f"runs[{i}]", f"run name {run.name!r} is used twice (also runs[{seen[run.name]}]); give one a 'name'"
            )
        seen[run.name] = i
    if not runs:
        raise where.error("runs", "the plan has no runs")
    _check_registries(runs, where, explicit="runs" in data)
    return Plan(name=name.strip(), datasets=datasets, runs=runs, source=None if source == "<plan>" else Path(source),
                description=description)


def _string_list(value: Any, key: str, where: _Where, *, required: bool) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if value is None or (required and value == []):
        raise where.error(key, "must list at least one name")
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise where.error(key, "must be a string or a list of non-empty strings")
    out: list[str] = []
    for v in value:
        if v.strip() not in out:
            out.append(v.strip())
    return out


def _resolve(base: Path, value: Any, key: str, where: _Where) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise where.error(key, "must be a path")
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return (p if p.is_absolute() else base / p).resolve()


def _parse_cook(raw: Any, where: _Where, base: Path, run_dir: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise where.error("cook", "must be a table of cook settings")
    unknown = sorted(set(raw) - set(COOK_KEYS))
    if unknown:
        raise where.error(f"cook.{unknown[0]}", f"unknown key (known: {', '.join(COOK_KEYS)})")
    cook = dict(_COOK_DEFAULTS)
    cook["root"] = _resolve(base, raw["root"], "cook.root", where) if "root" in raw else default_root().resolve()
    if "out" in raw:
        cook["out"] = _resolve(base, raw["out"], "cook.out", where)
    else:
        cook["out"] = (Path(run_dir) / "data").resolve() if run_dir is not None else Path("data").resolve()
    for key in ("scale", "seed", "val_fraction"):
        if key in raw:
            cook[key] = raw[key]
    _check_cook_values(cook, "cook", where)
    return cook


def _check_cook_values(rec: dict[str, Any], prefix: str, where: _Where) -> None:
    scale = rec.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise where.error(f"{prefix}.scale", f"must be a number in (0, 1], not {scale!r}")
    rec["scale"] = float(scale)
    seed = rec.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise where.error(f"{prefix}.seed", f"must be an integer, not {seed!r}")
    vf = rec.get("val_fraction")
    if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 1:
        raise where.error(f"{prefix}.val_fraction", f"must be a number in [0, 1), not {vf!r}")
    rec["val_fraction"] = float(vf)


def _cook_modes() -> tuple[str, ...] | None:
    try:
        from gtsrb_kit import cook as cook_module
    except ImportError:
        return None
    for attr in ("MODES", "COOK_MODES", "ENHANCE_MODES"):
        modes = getattr(cook_module, attr, None)
        if modes:
            return tuple(modes)
    try:
        from gtsrb_kit import enhance
    except ImportError:
        return None
    modes = getattr(enhance, "MODES", None)
    return tuple(modes) if modes else None


def _parse_dataset(item: Any, key: str, where: _Where, base: Path, cook: dict[str, Any]) -> list[DatasetSpec]:
    if isinstance(item, (str, os.PathLike)):
        item = {"path": str(item)}
    if not isinstance(item, dict):
        raise where.error(key, "must be a file path or a recipe table like {size=24, mode=\"L\"}")
    if "path" in item:
        extra = sorted(set(item) - {"path"})
        if extra:
            raise where.error(f"{key}.{extra[0]}", "a dataset given by 'path' takes no other keys")
        raw = item["path"]
        if not isinstance(raw, str) or not raw.strip():
            raise where.error(f"{key}.path", "must be a path")
        expanded = os.path.expandvars(os.path.expanduser(raw))
        pattern = expanded if os.path.isabs(expanded) else str(base / expanded)
        if glob.has_magic(pattern):
            matches = sorted(Path(p).resolve() for p in glob.glob(pattern))
            if not matches:
                raise where.error(key, f"no file matches {raw!r} (relative to {base}); cook the datasets first")
            return [DatasetSpec(p.stem, p) for p in matches]
        p = Path(pattern).resolve()
        return [DatasetSpec(p.stem, p)]
    unknown = sorted(set(item) - set(RECIPE_KEYS))
    if unknown:
        raise where.error(f"{key}.{unknown[0]}", f"unknown key (known: path, {', '.join(RECIPE_KEYS)})")
    for need in ("size", "mode"):
        if need not in item:
            raise where.error(f"{key}.{need}", "missing (a recipe needs size and mode, e.g. {size=24, mode=\"L\"})")
    sizes = item["size"] if isinstance(item["size"], list) else [item["size"]]
    modes = item["mode"] if isinstance(item["mode"], list) else [item["mode"]]
    rois = item.get("roi", cook["roi"])
    rois = rois if isinstance(rois, list) else [rois]
    known_modes = _cook_modes()
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or not 8 <= s <= 512:
            raise where.error(f"{key}.size", f"must be an integer image side in 8..512, not {s!r}")
    for m in modes:
        if not isinstance(m, str) or (known_modes is not None and m not in known_modes):
            choices = f" (choose from {', '.join(known_modes)})" if known_modes else ""
            raise where.error(f"{key}.mode", f"{m!r} is not a cook mode{choices}")
    for r in rois:
        if not isinstance(r, bool):
            raise where.error(f"{key}.roi", f"must be true or false, not {r!r}")
    common = dict(cook)
    for k in ("root", "out"):
        if k in item:
            common[k] = _resolve(base, item[k], f"{key}.{k}", where)
    for k in ("scale", "seed", "val_fraction"):
        if k in item:
            common[k] = item[k]
    _check_cook_values(common, key, where)
    specs = []
    for s, m, r in itertools.product(sizes, modes, rois):
        recipe = {"size": s, "mode": m, "roi": r, "root": common["root"], "out": common["out"],
                  "scale": common["scale"], "seed": common["seed"], "val_fraction": common["val_fraction"]}
        stem = cooked_name(s, m, r)
        specs.append(DatasetSpec(stem, Path(common["out"]) / f"{stem}.h5", recipe))
    return specs


def train_setting_names() -> tuple[str, ...]:
    """Training settings a plan may give (keyword arguments of :func:`gtsrb_kit.train.train`)."""
    try:
        from gtsrb_kit.train import train as train_fn
    except ImportError:
        return _FALLBACK_TRAIN_KEYS
    params = inspect.signature(train_fn).parameters
    return tuple(n for n, p in params.items()
                 if n not in _RESERVED_TRAIN_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def _parse_settings(raw: Any, key: str, where: _Where, allowed: Sequence[str] | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise where.error(key, "must be a table of training settings")
    allowed = tuple(allowed) if allowed is not None else train_setting_names()
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in allowed:
            raise where.error(f"{key}.{k}", f"unknown training setting (known: {', '.join(allowed)})")
        if k in ("epochs", "batch_size") and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise where.error(f"{key}.{k}", f"must be a positive integer, not {v!r}")
        if k == "seed" and (isinstance(v, bool) or not isinstance(v, int)):
            raise where.error(f"{key}.{k}", f"must be an integer, not {v!r}")
        if k == "learning_rate" and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise where.error(f"{key}.{k}", f"must be a positive number, not {v!r}")
        out[k] = v
    return out


def _parse_runs(
    data: dict[str, Any], where: _Where, base: Path, cook: dict[str, Any], train: dict[str, Any],
    by_name: dict[str, DatasetSpec], datasets: list[DatasetSpec],
) -> list[RunSpec]:
    raw_runs = data["runs"]
    if not isinstance(raw_runs, list):
        raise where.error("runs", "must be a list of tables (dataset, model, augment, ...)")
    for key in ("models", "augment"):
        if key in data:
            raise where.error(key, "give either 'runs' or the product keys (models, augment), not both")
    allowed = train_setting_names()
    runs = []
    for i, item in enumerate(raw_runs):
        key = f"runs[{i}]"
        if not isinstance(item, dict):
            raise where.error(key, "must be a table with dataset, model and augment")
        if "dataset" not in item:
            raise where.error(f"{key}.dataset", "missing")
        if "model" not in item:
            raise where.error(f"{key}.model", "missing")
        ds_raw = item["dataset"]
        if isinstance(ds_raw, str) and ds_raw in by_name:
            ds = by_name[ds_raw]
        else:
            found = _parse_dataset(ds_raw, f"{key}.dataset", where, base, cook)
            if len(found) != 1:
                raise where.error(f"{key}.dataset", "must name exactly one dataset")
            ds = found[0]
            if ds.name in by_name and by_name[ds.name] != ds:
                raise where.error(f"{key}.dataset", f"differs from the dataset already named {ds.name!r}")
            if ds.name not in by_name:
                by_name[ds.name] = ds
                datasets.append(ds)
        model = item["model"]
        if not isinstance(model, str) or not model.strip():
            raise where.error(f"{key}.model", "must be a model name")
        augment = item.get("augment", "none")
        if not isinstance(augment, str) or not augment.strip():
            raise where.error(f"{key}.augment", "must be an augmentation preset name")
        overrides = {k: v for k, v in item.items() if k not in ("dataset", "model", "augment", "name")}
        settings = {**train, **_parse_settings(overrides, key, where, allowed)}
        name = item.get("name") or run_name(ds.name, model.strip(), augment.strip())
        if not isinstance(name, str) or _NAME_OK.search(name) or name.startswith("."):
            raise where.error(f"{key}.name", f"{name!r} must use only letters, digits and . _ + = -")
        runs.append(RunSpec(name, ds, model.strip(), augment.strip(), settings))
    return runs


def _check_registries(runs: list[RunSpec], where: _Where, *, explicit: bool) -> None:
    """Check model and augmentation names against the registries, where those modules exist."""
    try:
        from gtsrb_kit.models import list_models
    except ImportError:
        list_models = None  # type: ignore[assignment]
    if list_models is not None:
        known = [m[0] if isinstance(m, (tuple, list)) else str(m) for m in list_models()]
        for i, r in enumerate(runs):
            if r.model not in known:
                raise where.error(f"runs[{i}].model" if explicit else "models",
                                  f"unknown model {r.model!r} (choose from {', '.join(known)})")
    presets = _augment_presets()
    if presets is not None:
        for i, r in enumerate(runs):
            if r.augment not in presets:
                raise where.error(f"runs[{i}].augment" if explicit else "augment",
                                  f"unknown augmentation preset {r.augment!r} (choose from {', '.join(presets)})")


def _augment_presets() -> list[str] | None:
    try:
        from gtsrb_kit import augment as augment_module
    except ImportError:
        return None
    for attr in ("list_presets", "list_augmentations"):
        fn = getattr(augment_module, attr, None)
        if callable(fn):
            return list(fn())
    presets = getattr(augment_module, "PRESETS", None)
    return list(presets) if presets else None


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"


def freeze_plan(plan: Plan, run_dir: str | os.PathLike[str]) -> Path:
    """Write the plan in its explicit form to ``RUN_DIR/plan.json`` (only when its content changed).

    Array tasks and reports read this frozen copy, so editing the original plan file later does
    not shift the array indices of a submitted job.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / PLAN_FILE
    text = _dump(plan.to_dict())
    try:
        if target.read_text(encoding="utf-8") == text:
            return target
    except OSError:
        pass
    write_text_atomic(target, text)
    return target


# ----------------------------------------------------------------------------------------------
# Execution


@dataclass
class RunOutcome:
    """What the sweep did with one run.

    Attributes:
        index: Position in the plan (the array task id).
        name: Run name (its folder under the run directory).
        status: The run's state before this sweep touched it (see :func:`run_status`).
        action: ``skipped`` (already done or running elsewhere), ``trained``, ``resumed``,
            ``failed``, or with ``dry_run`` ``would-train`` / ``would-resume`` / ``would-skip``.
        metrics: The run's ``metrics.json`` content once done.
        error: One line when the run failed.
    """

    index: int
    name: str
    status: str
    action: str
    metrics: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`."""

    plan: Plan
    run_dir: Path
    outcomes: list[RunOutcome]
    report_path: Path | None = None
    to_cook: list[DatasetSpec] = field(default_factory=list)
    missing: list[DatasetSpec] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        """Runs that raised an error."""
        return [o for o in self.outcomes if o.action == "failed"]

    @property
    def ok(self) -> bool:
        """True when no run failed."""
        return not self.failed


def _default_cook(*args: Any, **kwargs: Any) -> Any:
    from gtsrb_kit.cook import cook_dataset

    return cook_dataset(*args, **kwargs)


def _default_train(*args: Any, **kwargs: Any) -> dict:
    from gtsrb_kit.train import train

    return train(*args, **kwargs)


def _dataset_ready(spec: DatasetSpec) -> bool:
    """Quick check (attributes only): the file exists and was cooked with this size, mode, roi,
    scale, seed and val_fraction. The cook itself also compares the source data; this does not."""
    if not spec.path.is_file():
        return False
    if spec.recipe is None:
        return True
    try:
        import h5py

        with h5py.File(spec.path, "r") as handle:
            info = {k: handle.attrs[k] for k in handle.attrs}
    except (OSError, ValueError):
        return False
    info = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
            for k, v in info.items()}
    return info.get("created_by") == "gtsrb-kit" and _recipe_matches(spec.recipe, info)


def _recipe_matches(recipe: dict[str, Any], info: dict[str, Any]) -> bool:
    """Compare a recipe with a cooked file's attributes (attributes the file lacks do not count)."""
    for key in ("size", "mode", "roi", "scale", "seed", "val_fraction"):
        have, want = info.get(key), recipe[key]
        if have is None:
            continue
        if isinstance(want, float) or key in ("scale", "val_fraction"):
            try:
                if abs(float(have) - float(want)) > 1e-9:
                    return False
            except (TypeError, ValueError):
                return False
        elif (bool(have) if key == "roi" else have) != want:
            return False
    return True


def prepare_datasets(
    plan: Plan,
    *,
    datasets: Sequence[DatasetSpec] | None = None,
    cook_fn: CookFn | None = None,
    progress: ProgressCallback | None = None,
    log: LogFn | None = None,
    workers: int | None = None,
) -> list[Path]:
    """Make sure the plan's datasets exist: check enhanced files, cook recipes that are missing.

    Each recipe is cooked under a lock file beside its output (``.set-...h5.lock``), so array
    tasks that start together never cook the same file concurrently: the first cooks, the
    others wait and then find the file complete (``cook_dataset`` skips complete files).

    Args:
        plan: The plan.
        datasets: Only these (default: all of the plan's datasets).
        cook_fn: Replaces :func:`gtsrb_kit.cook.cook_dataset` (tests).
        progress: Passed to the cook.
        log: Called with one line per dataset cooked.
        workers: Worker processes for the cook (default: the cook's own default).

    Returns:
        The paths of the dataset files.

    Raises:
        DataError: an enhanced file listed by path does not exist.
    """
    cook_fn = cook_fn or _default_cook
    if workers is None and hasattr(os, "sched_getaffinity"):
        workers = len(os.sched_getaffinity(0))  # the CPUs SLURM (or taskset) gave this process
    paths = []
    for spec in datasets if datasets is not None else plan.datasets:
        paths.append(spec.path)
        if spec.recipe is None:
            if not spec.path.is_file():
                raise DataError(f"{spec.path}: dataset file not found; cook it first ('gtsrb-kit cook') "
                                "or list a recipe like {size=24, mode=\"L\"} in the plan")
            continue
        rec = spec.recipe
        out = Path(rec["out"])
        out.mkdir(parents=True, exist_ok=True)
        with file_lock(out / f".{spec.path.name}.lock"):
            if log and not _dataset_ready(spec):
                log(f"cooking {spec.path.name} from {rec['root']} (scale {rec['scale']:g})")
            # The cook skips a complete file with the same recipe (source data included).
            kwargs: dict[str, Any] = dict(
                sizes=(rec["size"],), modes=(rec["mode"],), roi_crop=rec["roi"], scale=rec["scale"],
                seed=rec["seed"], val_fraction=rec["val_fraction"], progress=progress,
            )
            if workers is not None:
                kwargs["workers"] = workers
            cook_fn(rec["root"], out, **kwargs)
            if not spec.path.is_file():
                raise DataError(f"{spec.path}: the cook did not write this file; check the recipe's size and mode")
    return paths


def _check_identity(run: RunSpec, folder: Path) -> None:
    recorded = read_json(folder / RUN_FILE)
    if recorded is None or "identity" not in recorded:
        return
    have, want = recorded["identity"], run.identity()
    if have != want:
        diffs = [k for k in want if have.get(k) != want[k]]
        if "settings" in diffs:
            keys = sorted(set(have.get("settings", {})) | set(want["settings"]))
            diffs = [f"settings.{k}" for k in keys if have.get("settings", {}).get(k) != want["settings"].get(k)]
        raise ConfigError(
            f"{folder}: this run folder was made with other settings ({', '.join(diffs)}); "
            "use another --run-dir or delete that folder"
        )


def _record_run(run: RunSpec, index: int, folder: Path) -> None:
    record: dict[str, Any] = {
        "name": run.name, "index": index, "dataset_path": str(run.dataset.path),
        "identity": run.identity(),
    }
    slurm = {k: os.environ[v] for k, v in (("array_job_id", "SLURM_ARRAY_JOB_ID"),
                                           ("array_task_id", "SLURM_ARRAY_TASK_ID"),
                                           ("job_id", "SLURM_JOB_ID")) if v in os.environ}
    if slurm:
        record["slurm"] = slurm
    write_text_atomic(folder / RUN_FILE, _dump(record))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (ConfigError, DataError)) else f"{type(exc).__name__}: {text}"


def run_sweep(
    plan: Plan | str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    task_id: int | None = None,
    only: Sequence[str] | None = None,
    dry_run: bool = False,
    train_fn: TrainFn | None = None,
    cook_fn: CookFn | None = None,
    progress: ProgressCallback | None = None,
    log: LogFn | None = None,
    verbose: int = 0,
    keep_going: bool = True,
) -> SweepResult:
    """Run a plan's runs that are not finished yet, each in ``run_dir/<run name>/``.

    Finished runs are skipped, interrupted ones resumed (``train(..., resume=True)``), failed
    ones retried, runs another process is training right now are left alone. After each run the
    combined report ``run_dir/report.json`` is rebuilt from disk under a lock, so array tasks
    that finish together never lose each other's rows.

    Args:
        plan: A :class:`Plan` or a plan file.
        run_dir: The sweep's folder.
        task_id: Run only the run at this index (a SLURM array task).
        only: Run only the runs with these names.
        dry_run: Change nothing; report what would run (``action`` ``would-*``).
        train_fn: Replaces :func:`gtsrb_kit.train.train` (tests).
        cook_fn: Replaces :func:`gtsrb_kit.cook.cook_dataset` (tests).
        progress: Passed to the cook and the trainer.
        log: Called with one line per event (start, end, failure of each run).
        verbose: Keras verbosity passed to the trainer.
        keep_going: After a failed run, continue with the next one (else stop there).

    Returns:
        A :class:`SweepResult`; ``result.ok`` is false when a run failed.

    Raises:
        ConfigError: a malformed plan, a bad task id or a run folder made with other settings.
    """
    run_dir = Path(run_dir).resolve()
    if not isinstance(plan, Plan):
        plan = load_plan(plan, run_dir=run_dir)
    selected = list(enumerate(plan.runs))
    if task_id is not None:
        target = plan.run(int(task_id))
        selected = [(int(task_id), target)]
    if only:
        for name in only:
            plan.run(name)  # raises on unknown names
        selected = [(i, r) for i, r in selected if r.name in set(only)]

    outcomes: list[RunOutcome] = []
    if dry_run:
        for i, run in selected:
            folder = run_dir / run.name
            status = run_status(folder)
            if folder.is_dir():
                _check_identity(run, folder)
            action = {"done": "would-skip", "running": "would-skip", "interrupted": "would-resume"}.get(
                status, "would-train")
            outcomes.append(RunOutcome(i, run.name, status, action, read_json(folder / METRICS_FILE)))
        needed = {r.dataset.name: r.dataset for _, r in selected if run_status(run_dir / r.name) != "done"}
        to_cook = [d for d in needed.values() if d.recipe is not None and not _dataset_ready(d)]
        missing = [d for d in needed.values() if d.recipe is None and not d.path.is_file()]
        return SweepResult(plan, run_dir, outcomes, None, to_cook, missing)

    train_fn = train_fn or _default_train
    run_dir.mkdir(parents=True, exist_ok=True)
    freeze_plan(plan, run_dir)
    from gtsrb_kit.report import update_report_json

    total = len(selected)
    prepared: set[str] = set()  # datasets checked by this call (the cook's own check reads the catalog)
    for n, (i, run) in enumerate(selected, 1):
        folder = run_dir / run.name
        tag = f"[{n}/{total}] {run.name}"
        status = run_status(folder)
        if folder.is_dir():
            _check_identity(run, folder)
        if status == "done":
            if log:
                log(f"{tag}: done already, skipped")
            outcomes.append(RunOutcome(i, run.name, status, "skipped", read_json(folder / METRICS_FILE)))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / LOCK_FILE, blocking=False) as held:
            if not held:
                if log:
                    log(f"{tag}: another process is training it, skipped")
                outcomes.append(RunOutcome(i, run.name, "running", "skipped"))
                continue
            # A folder an earlier attempt started (config.json) is continued, never refused.
            resume = (folder / CHECKPOINT_FILE).is_file() or (folder / "config.json").is_file()
            action = "resumed" if (folder / CHECKPOINT_FILE).is_file() else "trained"
            try:
                _record_run(run, i, folder)
                with contextlib.suppress(FileNotFoundError):
                    (folder / FAILED_FILE).unlink()
                if run.dataset.name not in prepared:
                    prepare_datasets(plan, datasets=[run.dataset], cook_fn=cook_fn, progress=progress, log=log)
                    prepared.add(run.dataset.name)
                if log:
                    settings = ", ".join(f"{k}={v}" for k, v in run.settings.items())
                    log(f"{tag}: {'resuming' if resume else 'training'} ({settings or 'defaults'})")
                metrics = train_fn(
                    run.dataset.path, model=run.model, augment=run.augment, run_dir=folder, resume=resume,
                    progress=progress, verbose=verbose, **run.settings,
                )
                if not (folder / METRICS_FILE).is_file() and isinstance(metrics, dict):
                    write_text_atomic(folder / METRICS_FILE, _dump(metrics))
                metrics = read_json(folder / METRICS_FILE) or metrics
                if log:
                    acc = (metrics or {}).get("test_accuracy")
                    dur = (metrics or {}).get("duration_s")
                    acc_txt = f"test accuracy {acc:.4f}" if isinstance(acc, (int, float)) else "finished"
                    dur_txt = f" in {dur:.1f} s" if isinstance(dur, (int, float)) else ""
                    log(f"{tag}: {acc_txt}{dur_txt}")
                outcomes.append(RunOutcome(i, run.name, status, action, metrics))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                message = _one_line(exc)
                write_text_atomic(folder / FAILED_FILE, _dump({
                    "error": message, "type": type(exc).__name__, "traceback": traceback.format_exc(),
                }))
                if log:
                    log(f"{tag}: FAILED: {message}")
                outcomes.append(RunOutcome(i, run.name, status, "failed", error=message))
        update_report_json(run_dir)
        if outcomes[-1].action == "failed" and not keep_going:
            break
    report_path = update_report_json(run_dir)
    return SweepResult(plan, run_dir, outcomes, report_path)
