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
    tb/                  TensorBoard logs

Every module that reads or writes these files does it through this one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gtsrb_kit.fileio import atomic_path, write_text_atomic

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
REPORT_JSON = "report.json"
CURVES_FILE = "learning_curves.png"
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
        ``"done"`` (metrics.json), ``"running"`` (a process holds its lock), ``"failed"``
        (failed.json), ``"interrupted"`` (a checkpoint but no metrics), ``"started"`` (the folder
        exists but holds no checkpoint yet) or ``"pending"`` (no folder).
    """
    folder = Path(folder)
    if (folder / METRICS_FILE).is_file():
        return "done"
    if not folder.is_dir():
        return "pending"
    if is_locked(folder / LOCK_FILE):
        return "running"
    if (folder / FAILED_FILE).is_file():
        return "failed"
    if (folder / CHECKPOINT_FILE).is_file():
        return "interrupted"
    return "started"


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object from a file, or ``None`` when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    return str(obj)


def dump_json(data: Any) -> str:
    """``data`` as indented JSON text (numpy values as numbers, paths as strings)."""
    return json.dumps(data, indent=2, default=_json_default) + "\n"


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; the one JSON writer of the package."""
    write_text_atomic(path, dump_json(data))
    return Path(path)


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
