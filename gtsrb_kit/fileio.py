"""Small file helpers: atomic writes and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


# Read once: os.umask can only be read by setting it, which would race with threads writing files.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only on success.

    A crash or exception leaves no file under the final name (and removes the temporary one),
    so a file that exists under its final name is always complete.

    Args:
        final: Where the finished file must end up. Its folder must exist.
    """
    final = Path(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.{_owner()}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; finished files get the usual mode
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _host() -> str:
    """This host's name, reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _owner() -> str:
    """``host~pid`` of this process, for temporary names (host: folders may be shared by nodes)."""
    return f"{_host()}~{os.getpid()}"


def remove_stale_temporaries(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that killed writers of ``final`` left behind.

    A temporary file (see :func:`atomic_path`) is stale when it was made on this host by a
    process that no longer runs. Files of live processes and of other hosts (a folder shared by
    cluster nodes) are left alone.

    Returns:
        The paths removed.
    """
    final = Path(final)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.{re.escape(_host())}~(\d+)\..*\.tmp$")
    removed: list[Path] = []
    try:
        names = os.listdir(final.parent)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match is None or _process_alive(int(match[1])):
            continue
        with contextlib.suppress(FileNotFoundError):
            (final.parent / name).unlink()
            removed.append(final.parent / name)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    return str(obj)


def dump_json(data: Any, *, sort_keys: bool = False) -> str:
    """``data`` as indented JSON text (numpy values as numbers, paths as strings)."""
    return json.dumps(data, indent=2, sort_keys=sort_keys, default=_json_default) + "\n"


def write_json(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; the one JSON writer of the package."""
    write_text_atomic(path, dump_json(data, sort_keys=sort_keys))
    return Path(path)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
