"""Safe, atomic extraction of zip archives.

Every member is checked before anything is written (no absolute paths, ``..``, symlinks or
special files, encrypted or duplicate members, and no zip bomb); members are written into a
hidden staging folder beside the target and moved into place with renames.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gtsrb_kit.errors import DownloadError
from gtsrb_kit.progress import ProgressCallback, report

_CHUNK = 1 << 20
STAGING_PREFIX = ".extract-"
_DRIVE = re.compile(r"^[A-Za-z]:")
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


@dataclass(frozen=True)
class ExtractLimits:
    """Caps that reject archives which would unpack to absurd sizes.

    The official training archive unpacks to about 330 MB, the test archive to about 120 MB.

    Attributes:
        max_total_bytes: Most bytes all members may declare together.
        max_members: Most members an archive may hold.
        max_ratio: Highest uncompressed/compressed ratio of a member (and of the whole archive).
        ratio_min_bytes: Members (and archives) smaller than this are never rejected for their ratio.
    """

    max_total_bytes: int = 4 * 1024**3
    max_members: int = 200_000
    max_ratio: float = 100.0
    ratio_min_bytes: int = 1 << 20


def open_zip(path: str | os.PathLike[str]) -> zipfile.ZipFile:
    """Open a zip archive, turning "not a zip" into a one-line :class:`DownloadError`."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise DownloadError(
            f"{path}: not a valid zip archive (truncated or damaged: {exc}); delete it and download it again"
        ) from None


def _refuse(archive: object, name: str, problem: str) -> DownloadError:
    return DownloadError(f"{archive}: member {name!r} {problem}; refusing to extract this archive")


def safe_member_name(name: str, archive: str | os.PathLike[str] = "<zip>") -> str:
    """Return a member's name as a clean relative POSIX path, or raise if it could escape.

    Raises:
        DownloadError: the name is empty, absolute, has a drive letter, a NUL or a ``..`` part.
    """
    text = name.replace("\\", "/")
    if "\x00" in text:
        raise _refuse(archive, name, "has a NUL byte in its name")
    if text.startswith("/") or _DRIVE.match(text):
        raise _refuse(archive, name, "has an absolute path")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, name, "points outside the target folder ('..')")
    if not parts:
        raise _refuse(archive, name, "has an empty name")
    return "/".join(parts)


def _check_ratio(size: int, compressed: int, limits: ExtractLimits, what: str) -> None:
    ratio = size / max(compressed, 1)
    if size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
        raise DownloadError(
            f"{what} would expand {ratio:.0f}-fold (more than {limits.max_ratio:g}); "
            "refusing to extract a possible zip bomb"
        )


def check_members(
    archive: zipfile.ZipFile, path: str | os.PathLike[str], *, limits: ExtractLimits = ExtractLimits()
) -> list[tuple[zipfile.ZipInfo, str]]:
    """Check every member of an open archive (``path`` names it in messages) without extracting.

    Returns:
        ``(info, clean relative name)`` for every member, in archive order.

    Raises:
        DownloadError: a member is unsafe (see :func:`safe_member_name`), a symlink or other
            special file, encrypted, duplicated, or the archive exceeds ``limits``.
    """
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise DownloadError(
            f"{path}: {len(infos)} members, more than the {limits.max_members} allowed; refusing to extract this archive"
        )
    seen: set[str] = set()
    members = []
    for info in infos:
        clean = safe_member_name(info.filename, path)
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver stored no file type
        if kind == stat.S_IFLNK:
            raise _refuse(path, info.filename, "is a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(path, info.filename, "is a special file")
        if info.flag_bits & 0x1:
            raise DownloadError(f"{path}: member {info.filename!r} is encrypted; this is not the official archive")
        key = clean + ("/" if info.is_dir() else "")
        if key in seen:
            raise _refuse(path, info.filename, "appears twice")
        seen.add(key)
        _check_ratio(info.file_size, info.compress_size, limits, f"{path}: member {info.filename!r}")
        members.append((info, clean))
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise DownloadError(
            f"{path}: members declare {total} bytes, more than the {limits.max_total_bytes} allowed; "
            "refusing to extract a possible zip bomb"
        )
    _check_ratio(total, sum(info.compress_size for info in infos), limits, str(path))
    return members


def check_layout(names: Iterable[str], required: Iterable[str], path: str | os.PathLike[str]) -> None:
    """Check that some member matches each of the ``required`` glob patterns.

    Raises:
        DownloadError: a pattern matches no member (the file is not the expected archive).
    """
    names = list(names)
    for pattern in required:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise DownloadError(
                f"{path}: no member matches {pattern!r}; this is not the expected GTSRB archive "
                "(wrong file on the mirror?) - delete it and download it again"
            )


@contextlib.contextmanager
def _checked_zip(
    path: str | os.PathLike[str], limits: ExtractLimits, required: Iterable[str]
) -> Iterator[tuple[zipfile.ZipFile, list[tuple[zipfile.ZipInfo, str]]]]:
    """Open ``path`` and check its members and layout; yield the archive and its members."""
    with open_zip(path) as archive:
        members = check_members(archive, path, limits=limits)
        check_layout([clean for _, clean in members], required, path)
        yield archive, members


@contextlib.contextmanager
def _reading_member(path: str | os.PathLike[str], info: zipfile.ZipInfo, errors: tuple = _DAMAGED) -> Iterator[None]:
    """Turn the errors of reading a damaged member into a one-line :class:`DownloadError`."""
    try:
        yield
    except errors as exc:
        raise DownloadError(
            f"{path}: member {info.filename!r} is damaged ({exc}); delete the archive and download it again"
        ) from None


def verify_zip(
    path: str | os.PathLike[str],
    *,
    limits: ExtractLimits = ExtractLimits(),
    required: Iterable[str] = (),
    progress: ProgressCallback | None = None,
    description: str | None = None,
    read_data: bool = True,
) -> int:
    """Check a zip archive's members (see :func:`check_members`) and layout; return their number.

    Args:
        required: Glob patterns that must each match a member name.
        progress: Optional callback, called with bytes of member data checked.
        description: Progress description (default ``"check NAME"``).
        read_data: Read every member to check its CRC (else only names and sizes are checked).

    Raises:
        DownloadError: the archive is damaged, truncated, unsafe or not the expected one.
    """
    description = description or f"check {Path(path).name}"
    with _checked_zip(path, limits, required) as (archive, members):
        if not read_data:
            return len(members)
        total = sum(info.file_size for info, _ in members)
        done = 0
        for info, _ in members:
            with _reading_member(path, info, _DAMAGED + (OSError,)), archive.open(info) as src:
                while chunk := src.read(_CHUNK):
                    done += len(chunk)
                    report(progress, description, done, total)
        report(progress, description, total, total)
        return len(members)


def merge_tree(src: Path, dst: Path) -> None:
    """Move everything under ``src`` into ``dst`` with renames (same file system).

    Folders new to ``dst`` move in one rename; existing folders are merged and existing files
    replaced, so each file appears under its final name complete or not at all.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        target_is_dir = target.is_dir() and not target.is_symlink()
        if entry.is_dir() and not entry.is_symlink():
            if target_is_dir:
                merge_tree(entry, target)
                continue
            if target.is_symlink() or target.exists():
                target.unlink()
        elif target_is_dir:
            shutil.rmtree(target)
        os.replace(entry, target)


def staging_dir(dest: Path, label: str) -> Path:
    """Create a hidden staging folder inside ``dest``, removing leftovers of a killed run first."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(f"{STAGING_PREFIX}{label}.*"):
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{label}.", dir=dest))


def extract_zip(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    limits: ExtractLimits = ExtractLimits(),
    required: Iterable[str] = (),
    progress: ProgressCallback | None = None,
) -> list[str]:
    """Extract a zip archive into ``dest`` safely and atomically.

    Nothing is written unless every member passes :func:`check_members` and :func:`check_layout`;
    members go to a staging folder inside ``dest`` (CRCs checked while reading), then into place.

    Args:
        dest: Target folder (created if needed).
        required: Glob patterns that must each match a member name.
        progress: Optional callback, called as ``("extract NAME", members done, members)``.

    Returns:
        The clean relative names of the files written (folders excluded).

    Raises:
        DownloadError: the archive is damaged, truncated, unsafe or not the expected one.
    """
    path, dest = Path(path), Path(dest)
    description = f"extract {path.name}"
    with _checked_zip(path, limits, required) as (archive, members):
        staging = staging_dir(dest, path.name)
        written: list[str] = []
        try:
            for i, (info, clean) in enumerate(members):
                if i % 200 == 0:
                    report(progress, description, i, len(members))
                target = staging / clean
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with _reading_member(path, info), archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                written.append(clean)
            merge_tree(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        report(progress, description, len(members), len(members))
        return written
