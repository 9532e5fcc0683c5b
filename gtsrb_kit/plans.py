"""Sweep plans (TOML, YAML or JSON; ``docs/sweeps.md``): which models x datasets x augmentations to train.

Values are checked by the modules that own them (sizes and modes: :mod:`gtsrb_kit.enhance`,
fractions: :mod:`gtsrb_kit.split`, models and training settings: :class:`gtsrb_kit.train.TrainConfig`,
presets: :mod:`gtsrb_kit.augment`); a plan adds where in the file the bad value is.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gtsrb_kit.errors import ConfigError
from gtsrb_kit.fileio import write_text_atomic
from gtsrb_kit.paths import default_root
from gtsrb_kit.runs import PLAN_FILE, dump_json

#: Keys of a plan file's top level.
PLAN_KEYS = ("name", "description", "datasets", "models", "augment", "cook", "train", "runs")
#: Keys of a dataset recipe (besides ``path`` for an existing file).
RECIPE_KEYS = ("size", "mode", "roi", "root", "out", "scale", "seed", "val_fraction")
#: Keys of the ``[cook]`` table (defaults for every recipe).
COOK_KEYS = ("root", "out", "scale", "seed", "val_fraction")
#: Arguments of ``train`` the sweep itself provides.
_RESERVED_TRAIN_ARGS = ("data", "model", "augment", "run_dir", "resume", "progress", "verbose")
_NAME_OK = re.compile(r"[^A-Za-z0-9._+=-]+")
_COOK_DEFAULTS: dict[str, Any] = {"scale": 1.0, "seed": 0, "val_fraction": 0.2, "roi": False}



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


def run_name(dataset: str, model: str, augment: str) -> str:
    """Deterministic run folder name: ``{dataset-stem}__{model}__{augment}``."""
    return "__".join(_NAME_OK.sub("-", part) for part in (dataset, model, augment))



class _Where:
    """Builds one-line ConfigErrors naming the plan file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def check(self, key: str, owner_check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``owner_check(*args, **kwargs)``, its ConfigError told with this plan's file and ``key``."""
        try:
            return owner_check(*args, **kwargs)
        except ConfigError as exc:
            raise self.error(key, str(exc)) from None

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

    by_name = _parse_datasets(data.get("datasets", []), where, base, cook)
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
    _check_run_names(runs, where)
    _check_registries(runs, where, explicit="runs" in data)
    return Plan(name=name.strip(), datasets=datasets, runs=runs, source=None if source == "<plan>" else Path(source),
                description=description)


def _parse_datasets(raw: Any, where: _Where, base: Path, cook: dict[str, Any]) -> dict[str, DatasetSpec]:
    """The plan's datasets by name (globs and recipe lists expanded)."""
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        raise where.error("datasets", "must be a list of files or recipes")
    by_name: dict[str, DatasetSpec] = {}
    for i, item in enumerate(raw):
        for spec in _parse_dataset(item, f"datasets[{i}]", where, base, cook):
            if by_name.setdefault(spec.name, spec) != spec:
                raise where.error("datasets", f"two different datasets are both named {spec.name!r}; keep one")
    return by_name


def _check_run_names(runs: list[RunSpec], where: _Where) -> None:
    seen: dict[str, int] = {}
    for i, run in enumerate(runs):
        if run.name in seen:
            raise where.error(
                f"runs[{i}]", f"run name {run.name!r} is used twice (also runs[{seen[run.name]}]); give one a 'name'"
            )
        seen[run.name] = i
    if not runs:
        raise where.error("runs", "the plan has no runs")


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
    from gtsrb_kit.split import check_fraction

    rec["scale"] = where.check(f"{prefix}.scale", check_fraction, "scale", rec.get("scale"),
                               low_open=True, high_closed=True)
    rec["val_fraction"] = where.check(f"{prefix}.val_fraction", check_fraction, "val_fraction",
                                      rec.get("val_fraction"), low_open=False, high_closed=False)
    seed = rec.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise where.error(f"{prefix}.seed", f"must be an integer, not {seed!r}")


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
    from gtsrb_kit.enhance import check_mode, check_size
    from gtsrb_kit.store import enhanced_filename

    sizes = [where.check(f"{key}.size", check_size, s) for s in sizes]
    modes = [where.check(f"{key}.mode", check_mode, m) for m in modes]
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
        path = Path(common["out"]) / enhanced_filename(s, m, r)
        specs.append(DatasetSpec(path.stem, path, recipe))
    return specs


def train_setting_names() -> tuple[str, ...]:
    """Training settings a plan may give (fields of :class:`gtsrb_kit.train.TrainConfig`)."""
    from gtsrb_kit.train import TrainConfig

    return tuple(f.name for f in fields(TrainConfig) if f.name not in _RESERVED_TRAIN_ARGS)


def _parse_settings(raw: Any, key: str, where: _Where, allowed: Sequence[str] | None = None) -> dict[str, Any]:
    """Training settings of ``[train]`` or a run; a ``recipe`` is expanded into its settings, the others win."""
    from gtsrb_kit.train import TrainConfig, recipe

    if not isinstance(raw, dict):
        raise where.error(key, "must be a table of training settings")
    allowed = tuple(allowed) if allowed is not None else train_setting_names()
    given = dict(raw)
    name = given.pop("recipe", None)
    for k, v in given.items():
        if k not in allowed:
            raise where.error(f"{key}.{k}", f"unknown training setting (known: recipe, {', '.join(allowed)})")
        if k != "model_options":  # depends on the model: checked when the run's config is made
            where.check(f"{key}.{k}", _check_setting, TrainConfig, k, v)
    if "recipe" not in raw:
        return given
    return {**where.check(f"{key}.recipe", recipe, name).settings(), **given}


def _check_setting(config: type, name: str, value: Any) -> None:
    """Let the training config validate one setting (it raises ConfigError on a bad value)."""
    try:
        config(data=Path("plan.h5"), **{name: value}).resolve()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{value!r} is not a valid {name} ({exc})") from None


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
    """Check model and augmentation names with the modules that own them."""
    from gtsrb_kit.augment import check_preset
    from gtsrb_kit.train import TrainConfig

    for i, r in enumerate(runs):
        where.check(f"runs[{i}].model" if explicit else "models", _check_setting, TrainConfig, "model", r.model)
        where.check(f"runs[{i}].augment" if explicit else "augment", check_preset, r.augment)


def freeze_plan(plan: Plan, run_dir: str | os.PathLike[str]) -> Path:
    """Write the plan in its explicit form to ``RUN_DIR/plan.json`` (only when its content changed).

    Array tasks and reports read this frozen copy, so editing the original plan file later does
    not shift the array indices of a submitted job.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / PLAN_FILE
    text = dump_json(plan.to_dict())
    try:
        if target.read_text(encoding="utf-8") == text:
            return target
    except OSError:
        pass
    write_text_atomic(target, text)
    return target
