"""The run-folder contract: file names, locks, status, JSON files, ``.keras`` metadata, history.

A training run folder (``gtsrb-kit train``, or one run of a sweep) holds::

    config.json          every argument + the data's size/mode/roi/class names (for predict)
    best.keras           best validation accuracy so far (preprocessing embedded)
    last.keras           last completed epoch, with optimizer state and run state (for resume)
    state.json           epochs done, best epoch, history so far (human-readable copy)
    history.csv/.json    per-epoch loss, accuracy, val_loss, val_accuracy, learning rate, seconds
    learning_curves.png  loss and accuracy curves
    metrics.json         written last: test accuracy, per-class table, ... (finished runs)
    run.json, failed.json, .run.lock   a sweep's record, failure and lock of the run
    .train.lock          held while a training process works in the folder
    tb/                  TensorBoard logs

Every module that reads or writes these files does it through this one.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import atomic_path, dump_json, write_json, write_text_atomic  # noqa: F401 - re-exported

try:  # POSIX only; elsewhere locks are no-ops (one process at a time is then up to the user)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PLAN_FILE = "plan.json"
RUN_FILE = "run.json"
FAILED_FILE = "failed.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "last.keras"
BEST_FILE = "best.keras"
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
LOCK_FILE = ".run.lock"
TRAIN_LOCK = ".train.lock"  # held by gtsrb_kit.train while it trains in the folder
REPORT_JSON = "report.json"
CURVES_FILE = "learning_curves.png"
ROBUSTNESS_FILE = "robustness/robustness.json"  # gtsrb-kit robustness's default output in a run folder
COMMITTEES_DIR = "committees"  # RUN_DIR/committees/<recipe or all>/{plain,tta}/evaluation.json
REPORT_FORMAT = "gtsrb-kit-report/1"
_REPORT_LOCK = ".report.lock"
METADATA_NAME = "gtsrb_kit.json"  # extra member of the .keras zip: preprocessing + run state


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` while the block runs.

    Works between processes on one machine and, where the file system supports it (NFS v4,
    Lustre with ``flock``), between cluster nodes. Yields ``True`` when the lock is held;
    with ``blocking=False`` yields ``False`` at once when another process holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        if fcntl is None:  # pragma: no cover - Windows
            yield True
            return
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh.fileno(), flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Create ``folder`` and hold its :data:`TRAIN_LOCK`; a second process gets a one-line error at once.

    Raises:
        ConfigError: another process holds the lock.
    """
    folder = Path(folder)
    with file_lock(folder / TRAIN_LOCK, blocking=False) as held:
        if not held:
            raise ConfigError(f"{folder}: another gtsrb-kit train is running in it; wait for it to end "
                              "or choose another --run-dir")
        yield


def is_locked(path: str | os.PathLike[str]) -> bool:
    """True when another process holds :func:`file_lock` on ``path`` right now."""
    path = Path(path)
    if fcntl is None or not path.exists():
        return False
    try:
        # read-write: on NFS an exclusive lock needs a writable descriptor
        with open(path, "r+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:  # not ours to lock (read-only copy of a sweep): nobody is training there
        return False
    return False


def run_status(folder: str | os.PathLike[str]) -> str:
    """State of one run folder.

    Returns:
        ``"done"`` (a readable metrics.json), ``"running"`` (a process holds its lock), ``"failed"``
        (failed.json, or a metrics.json that cannot be read: see :func:`run_problem`),
        ``"interrupted"`` (a checkpoint but no metrics), ``"started"`` (the folder exists but holds
        no checkpoint yet) or ``"pending"`` (no folder).
    """
    folder = Path(folder)
    if read_metrics(folder) is not None:
        return "done"
    if not folder.is_dir():
        return "pending"
    if is_locked(folder / LOCK_FILE) or is_locked(folder / TRAIN_LOCK):
        return "running"
    if (folder / FAILED_FILE).is_file() or (folder / METRICS_FILE).exists():
        return "failed"
    if (folder / CHECKPOINT_FILE).is_file():
        return "interrupted"
    return "started"


def read_metrics(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A finished run's ``metrics.json``, or ``None`` when it is missing, unreadable or has no test accuracy."""
    metrics = read_json(Path(folder) / METRICS_FILE)
    if metrics is None or _num(metrics.get("test_accuracy")) is None:
        return None
    return metrics


def run_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why a run folder is ``failed``: its failed.json's error, or an unreadable metrics.json; else ``None``."""
    folder = Path(folder)
    if (folder / METRICS_FILE).exists() and read_metrics(folder) is None:
        return (f"{folder / METRICS_FILE}: unreadable or incomplete (no test accuracy); "
                "the run is trained again by the next sweep (or 'gtsrb-kit train --resume')")
    error = (read_json(folder / FAILED_FILE) or {}).get("error")
    return str(error) if error is not None else None


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object from a file, or ``None`` when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_data(folder: str | os.PathLike[str]) -> Path | None:
    """The data file recorded in a run folder's ``config.json``, if it still exists."""
    recorded = ((read_json(Path(folder) / CONFIG_FILE) or {}).get("args") or {}).get("data")
    return Path(recorded) if isinstance(recorded, str) and Path(recorded).is_file() else None


def save_keras_atomic(model: Any, path: str | os.PathLike[str], metadata: dict[str, Any]) -> None:
    """``model.save`` to a temporary ``.keras`` beside ``path``, embed ``metadata``, rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        keras_tmp = tmp.with_name(tmp.name + ".keras")  # Keras insists on the suffix
        try:
            model.save(keras_tmp)
            with zipfile.ZipFile(keras_tmp, "a") as zf:
                zf.writestr(METADATA_NAME, dump_json(metadata))
            os.replace(keras_tmp, tmp)
        finally:
            keras_tmp.unlink(missing_ok=True)


def read_keras_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The gtsrb-kit metadata embedded in a ``.keras`` file, or ``None`` if it has none."""
    try:
        with zipfile.ZipFile(path) as zf:
            if METADATA_NAME not in zf.namelist():
                return None
            return json.loads(zf.read(METADATA_NAME))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError):
        return None


def write_history(folder: str | os.PathLike[str], history: list[dict[str, Any]]) -> None:
    """Write the per-epoch rows as ``history.json`` and ``history.csv``."""
    folder = Path(folder)
    write_json(folder / "history.json", history)
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(folder / "history.csv", buf.getvalue())


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def read_history(folder: str | os.PathLike[str]) -> dict[str, list[float]]:
    """Per-epoch metrics of a run (``history.csv``, else ``history.json``) as column -> values."""
    folder = Path(folder)
    try:
        with open(folder / "history.csv", newline="", encoding="utf-8") as fh:
            rows: list[Any] = list(csv.DictReader(fh))
    except OSError:
        rows = []
    if not rows:
        try:
            data = json.loads((folder / "history.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):  # a Keras-style {"history": {column: values}}
            hist = data.get("history", data)
            data = [dict(zip(hist, values)) for values in zip(*hist.values())] if isinstance(hist, dict) else []
        rows = [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []
    keys = list(dict.fromkeys(k for row in rows for k in row if k is not None))
    return {k: [_number(row.get(k)) for row in rows] for k in keys}


# ----------------------------------------------------------------------------------------------
# The summary of a folder of runs (report.json)

#: Columns of a report row, in table order.
ROW_FIELDS: tuple[str, ...] = (
    "run", "status", "dataset", "model", "augment", "best_val_accuracy", "test_accuracy", "lowest_recall",
    "corruption_accuracy", "best_epoch", "epochs_completed", "epochs", "batch_size", "seed", "duration_s",
    "model_params", "dataset_mb", "model_mb", "dataset_path", "metrics", "recipe", "error",
)
_RUN_MARKERS = (METRICS_FILE, RUN_FILE, CHECKPOINT_FILE, FAILED_FILE, CONFIG_FILE, "history.csv")


def _mb(path: Path) -> float | None:
    try:
        return round(path.stat().st_size / 1e6, 3)
    except OSError:
        return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        return None
    return value


def _run_folders(run_dir: Path, plan: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """(run name, planned run entry or None), plan order first, then other run folders found on disk."""
    entries: list[tuple[str, dict[str, Any] | None]] = []
    seen: set[str] = set()
    if isinstance(plan.get("runs"), list):
        for entry in plan["runs"]:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"] not in seen:
                entries.append((entry["name"], entry))
                seen.add(entry["name"])
    extra = []
    if run_dir.is_dir():
        for child in run_dir.iterdir():
            if child.is_dir() and child.name not in seen and not child.name.startswith("."):
                if any((child / marker).exists() for marker in _RUN_MARKERS):
                    extra.append(child.name)
    entries.extend((name, None) for name in sorted(extra))
    return entries


def _planned_dataset_paths(plan: dict[str, Any]) -> dict[str, str]:
    out = {}
    for d in plan.get("datasets", []) if isinstance(plan.get("datasets"), list) else []:
        if not isinstance(d, dict):
            continue
        if "path" in d:
            out[Path(d["path"]).stem] = d["path"]
        elif {"size", "mode", "out"} <= set(d):
            from gtsrb_kit.store import enhanced_filename

            name = enhanced_filename(d["size"], d["mode"], bool(d.get("roi")))
            out[Path(name).stem] = str(Path(d["out"]) / name)
    return out


def collect_runs(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per run of a run folder (see :data:`ROW_FIELDS`), planned runs first in plan order.

    Raises:
        DataError: ``run_dir`` does not exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder; run 'gtsrb-kit sweep PLAN --run-dir {run_dir}' first")
    plan = read_json(run_dir / PLAN_FILE) or {}
    datasets = _planned_dataset_paths(plan)
    rows = []
    for name, planned in _run_folders(run_dir, plan):
        folder = run_dir / name
        metrics = read_metrics(folder) or {}
        record = read_json(folder / RUN_FILE) or {}
        config = (read_json(folder / CONFIG_FILE) or {}).get("args") or {}  # train's settings
        identity = record.get("identity", {})
        settings = dict(identity.get("settings", {}))
        if planned:
            settings.update({k: v for k, v in planned.items() if k not in ("name", "dataset", "model", "augment")})
        status = run_status(folder)

        def pick(key: str, *sources: dict[str, Any]) -> Any:
            for src in sources:
                if src.get(key) is not None:
                    return src[key]
            return None

        data_path = record.get("dataset_path") or metrics.get("data") or config.get("data")
        dataset = (planned or {}).get("dataset") or identity.get("dataset")
        if dataset is None and data_path:
            dataset = Path(str(data_path)).stem
        if data_path is None and dataset in datasets:
            data_path = datasets[dataset]
        model_file = folder / BEST_FILE
        rows.append({
            "run": name,
            "status": status,
            "dataset": dataset,
            "model": pick("model", planned or {}, identity, metrics, config),
            "augment": pick("augment", planned or {}, identity, metrics, config) or "none",
            "best_val_accuracy": _num(metrics.get("best_val_accuracy")),
            "test_accuracy": _num(metrics.get("test_accuracy")),
            "lowest_recall": _lowest_recall(metrics),
            "corruption_accuracy": _num((read_json(folder / ROBUSTNESS_FILE) or {}).get("mean_corruption_accuracy")),
            "best_epoch": metrics.get("best_epoch"),
            "epochs_completed": metrics.get("epochs_completed"),
            "epochs": pick("epochs", settings, config, metrics),
            "batch_size": pick("batch_size", settings, metrics, config),
            "seed": pick("seed", settings, metrics, config),
            "duration_s": _num(metrics.get("duration_s")),
            "model_params": metrics.get("model_params"),
            "dataset_mb": _mb(Path(data_path)) if data_path else None,
            "model_mb": _mb(model_file) if model_file.is_file() else None,
            "dataset_path": str(data_path) if data_path else None,
            "metrics": f"{name}/{METRICS_FILE}" if metrics else None,
            "recipe": None,
            "error": run_problem(folder) if status == "failed" else None,
        })
        rows[-1]["recipe"] = _recipe(rows[-1], settings)
    return rows


def _lowest_recall(metrics: dict[str, Any]) -> float | None:
    recalls = [_num(c.get("recall")) for c in metrics.get("per_class") or [] if isinstance(c, dict) and c.get("support")]
    return min((r for r in recalls if r is not None), default=None)


def _recipe(row: dict[str, Any], settings: dict[str, Any]) -> str:
    """What a run trained, except its seed: runs with the same recipe differ only by seed."""
    keys = ("dataset", "model", "augment", "epochs", "batch_size")
    recipe = {k: row[k] for k in keys}
    recipe.update({k: v for k, v in settings.items() if k not in ("seed", *keys)})
    return json.dumps(recipe, sort_keys=True, default=str)


def _chosen(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished run with the highest validation accuracy (ties: first in order). Never test accuracy."""
    done = [r for r in rows if r["status"] == "done" and r.get("best_val_accuracy") is not None]
    return max(done, key=lambda r: r["best_val_accuracy"]) if done else None


def best_per_dataset(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Dataset -> name of its finished run chosen by validation accuracy (ties: first in order)."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_dataset.setdefault(str(row.get("dataset")), []).append(row)
    chosen = {k: _chosen(v) for k, v in by_dataset.items()}
    return {k: v["run"] for k, v in chosen.items() if v is not None}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return round(mean, 6), None if std is None else round(std, 6)


def committee_folder(run_dir: str | os.PathLike[str], recipe: dict[str, Any] | None, tta: bool = False) -> Path:
    """Where ``gtsrb-kit report --committee`` evaluates a committee: of a seed group's finished runs,
    or with ``recipe=None`` of every finished run of the folder."""
    if recipe is None:
        name = "all"
    else:
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:8]
        name = "__".join(str(recipe.get(k)) for k in ("dataset", "model", "augment")) + f"-{digest}"
    return Path(run_dir) / COMMITTEES_DIR / name / ("tta" if tta else "plain")


def committee_files(run_dir: str | os.PathLike[str], rows: list[dict[str, Any]]) -> tuple[list[Path], list[Path]]:
    """The model and data files of the committee of these rows: their finished runs that name a data file."""
    done = [r for r in finished(rows) if r["dataset_path"]]
    return [Path(run_dir) / r["run"] / BEST_FILE for r in done], [Path(r["dataset_path"]) for r in done]


def current_committee(run_dir: str | os.PathLike[str], recipe: dict[str, Any] | None, models: list[Path],
                      data: list[Path], tta: bool = False) -> dict[str, Any] | None:
    """The evaluation of a committee (its files from :func:`committee_files`), if one was written of
    exactly these models and data files after each of them last changed; ``None`` otherwise."""
    evaluation = committee_folder(run_dir, recipe, tta) / "evaluation.json"
    found = read_json(evaluation) if len(models) >= 2 else None
    if not found:
        return None
    same = (sorted(Path(m).resolve() for m in found.get("models", [])) == sorted(m.resolve() for m in models)
            and sorted(Path(d).resolve() for d in found.get("data_files", [])) == sorted(d.resolve() for d in data))
    try:
        newer = all(evaluation.stat().st_mtime >= f.stat().st_mtime for f in (*models, *data))
    except OSError:
        return None
    return found if same and newer else None


def _committee(run_dir: Path | None, recipe: dict[str, Any] | None, rows: list[dict[str, Any]],
               tta: bool) -> dict[str, Any]:
    """Accuracy, errors and lowest recall of the current committee of these rows (``{}`` if none)."""
    found = None if run_dir is None else current_committee(run_dir, recipe, *committee_files(run_dir, rows), tta)
    if found is None:
        return {}
    recalls = [c["recall"] for c in found.get("per_class", []) if c.get("support")]
    return {"accuracy": found.get("accuracy"), "errors": found.get("errors"),
            "lowest_recall": min(recalls) if recalls else None}


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of finished runs that have a test accuracy (what means and committees are made of)."""
    return [r for r in rows if r["status"] == "done" and r["test_accuracy"] is not None]


def seed_groups(rows: list[dict[str, Any]], run_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Runs that differ only by seed, with the mean and sample standard deviation of their finished runs.

    With ``run_dir``, also the committee of the finished runs where ``gtsrb-kit report --committee``
    evaluated it (``committee`` and ``committee_tta``).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["recipe"], []).append(row)
    out = []
    for recipe, members in groups.items():
        done = finished(members)
        entry = {"recipe": json.loads(recipe), "runs": [r["run"] for r in members],
                 "seeds": [r["seed"] for r in done], "done": len(done)}
        for key in ("best_val_accuracy", "test_accuracy", "lowest_recall", "duration_s"):
            entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std([r[key] for r in done if r[key] is not None])
        for key, tta in (("committee", False), ("committee_tta", True)):
            entry[key] = _committee(None if run_dir is None else Path(run_dir), entry["recipe"], done, tta)
        out.append(entry)
    return out


def committee_of_all(rows: list[dict[str, Any]], run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The committee of every finished run, where they form more than one seed group.

    Keys ``runs``, ``committee`` and ``committee_tta`` (each ``{}`` until ``gtsrb-kit report
    --committee [--tta]`` evaluated it); ``{}`` when the finished runs are a single recipe.
    """
    done = finished(rows)
    if len({r["recipe"] for r in done}) < 2:
        return {}
    names = [r["run"] for r in done]
    return {"runs": names, **{key: _committee(Path(run_dir), None, done, tta)
                              for key, tta in (("committee", False), ("committee_tta", True))}}


def build_report(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The combined report of a run folder as a dict (what ``report.json`` holds).

    Keys: ``format``, ``name`` (the plan's), ``counts`` (runs per status), ``best_per_dataset`` and
    ``best`` (the finished runs chosen by validation accuracy, per dataset and overall; test
    accuracy never chooses), ``groups`` (runs that differ only by seed: :func:`seed_groups`),
    ``committee_of_all`` (:func:`committee_of_all`) and ``runs`` (the rows). No timestamps, so the
    same files on disk always give the same report.
    """
    run_dir = Path(run_dir)
    rows = collect_runs(run_dir)
    plan = read_json(run_dir / PLAN_FILE) or {}
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    best = _chosen(rows)
    return {
        "format": REPORT_FORMAT,
        "name": plan.get("name", run_dir.resolve().name),
        "total": len(rows),
        "complete": bool(rows) and counts.get("done", 0) == len(rows),
        "counts": dict(sorted(counts.items())),
        "best": best["run"] if best else None,
        "best_per_dataset": best_per_dataset(rows),
        "groups": seed_groups(rows, run_dir),
        "committee_of_all": committee_of_all(rows, run_dir),
        "runs": rows,
    }


def update_report_json(run_dir: str | os.PathLike[str]) -> Path:
    """Rebuild ``RUN_DIR/report.json`` from disk and write it atomically, under a lock.

    Every writer reads all runs' files after taking the lock, and each run writes its metrics
    before asking for the lock, so the last writer always sees every finished run: array tasks
    that finish at the same time cannot drop each other's rows.
    """
    run_dir = Path(run_dir)
    with file_lock(run_dir / _REPORT_LOCK):
        report = build_report(run_dir)
        return write_json(run_dir / REPORT_JSON, report)
