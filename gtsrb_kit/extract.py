"""Safe, atomic extraction of zip archives.

Every member is checked before anything is written: no absolute paths, no ``..``, no symlinks
or other special files, no encrypted members, no duplicates, and no "zip bomb" (a cap on the
total uncompressed size, on the number of members and on the compression ratio). Members are
then written into a hidden staging folder beside the target and moved into place with renames,
so a killed extraction never leaves a half-written file under its final name.
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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gtsrb_kit.errors import DownloadError
from gtsrb_kit.progress import ProgressCallback, report

_CHUNK = 1 << 20
STAGING_PREFIX = ".extract-"


@dataclass(frozen=True)
class ExtractLimits:
    """Caps that reject archives which would unpack to absurd sizes.

    The full official training archive unpacks to about 330 MB (39,209 PPM files) and the test
    archive to about 120 MB, so the defaults leave a wide margin.

    Attributes:
        max_total_bytes: Most bytes all members may declare together.
        max_members: Most members an archive may hold.
        max_ratio: Highest uncompressed/compressed ratio allowed for a member (and for the
            archive as a whole); checked on members of at least ``ratio_min_bytes``.
        ratio_min_bytes: Members smaller than this are never rejected for their ratio.
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


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_member_name(name: str, archive: str | os.PathLike[str] = "<zip>") -> str:
    """Return a member's name as a clean relative POSIX path, or raise if it could escape.

    Raises:
        DownloadError: the name is empty, absolute, has a drive letter, a NUL or a ``..`` part.
    """
    text = name.replace("\\", "/")
    if "\x00" in text:
        raise DownloadError(f"{archive}: member {name!r} has a NUL byte in its name; refusing to extract this archive")
    if text.startswith("/") or _DRIVE.match(text):
        raise DownloadError(f"{archive}: member {name!r} has an absolute path; refusing to extract this archive")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(
            f"{archive}: member {name!r} points outside the target folder ('..'); refusing to extract this archive"
        )
    if not parts:
        raise DownloadError(f"{archive}: member {name!r} has an empty name; refusing to extract this archive")
    return "/".join(parts)


def check_members(
    archive: zipfile.ZipFile,
    path: str | os.PathLike[str],
    *,
    limits: ExtractLimits = ExtractLimits(),
) -> list[tuple[zipfile.ZipInfo, str]]:
    """Check every member of an open archive without extracting anything.

    Args:
        archive: The open archive.
        path: Its file name (for messages).
        limits: Size, count and ratio caps.

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
    out: list[tuple[zipfile.ZipInfo, str]] = []
    total = 0
    total_compressed = 0
    for info in infos:
        clean = safe_member_name(info.filename, path)
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver stored no file type
        if kind == stat.S_IFLNK:
            raise DownloadError(f"{path}: member {info.filename!r} is a symbolic link; refusing to extract this archive")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise DownloadError(f"{path}: member {info.filename!r} is a special file; refusing to extract this archive")
        if info.flag_bits & 0x1:
            raise DownloadError(f"{path}: member {info.filename!r} is encrypted; this is not the official archive")
        key = clean + ("/" if info.is_dir() else "")
        if key in seen:
            raise DownloadError(f"{path}: member {info.filename!r} appears twice; refusing to extract this archive")
        seen.add(key)
        size = info.file_size
        if size >= limits.ratio_min_bytes and size > limits.max_ratio * max(info.compress_size, 1):
            raise DownloadError(
                f"{path}: member {info.filename!r} would expand {size / max(info.compress_size, 1):.0f}-fold "
                f"(more than {limits.max_ratio:g}); refusing to extract a possible zip bomb"
            )
        total += size
        total_compressed += info.compress_size
        out.append((info, clean))
    if total > limits.max_total_bytes:
        raise DownloadError(
            f"{path}: members declare {total} bytes, more than the {limits.max_total_bytes} allowed; "
            "refusing to extract a possible zip bomb"
        )
    if total >= limits.ratio_min_bytes and total > limits.max_ratio * max(total_compressed, 1):
        raise DownloadError(
            f"{path}: would expand {total / max(total_compressed, 1):.0f}-fold (more than {limits.max_ratio:g}); "
            "refusing to extract a possible zip bomb"
        )
    return out


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


def verify_zip(
    path: str | os.PathLike[str],
    *,
    limits: ExtractLimits = ExtractLimits(),
    required: Iterable[str] = (),
    progress: ProgressCallback | None = None,
    description: str | None = None,
) -> int:
    """Check a zip archive completely: safe members, expected layout and the CRC of every member.

    Args:
        path: The archive.
        limits: Caps checked before reading any data.
        required: Glob patterns that must each match a member name.
        progress: Optional callback, called with bytes of member data checked.
        description: Progress description (default ``"check NAME"``).

    Returns:
        The number of members.

    Raises:
        DownloadError: the archive is damaged, truncated, unsafe or not the expected one.
    """
    description = description or f"check {Path(path).name}"
    with open_zip(path) as archive:
        members = check_members(archive, path, limits=limits)
        check_layout([clean for _, clean in members], required, path)
        total = sum(info.file_size for info, _ in members)
        done = 0
        for info, _ in members:
            if info.is_dir():
                continue
            try:
                with archive.open(info) as src:
                    while chunk := src.read(_CHUNK):
                        done += len(chunk)
                        report(progress, description, done, total)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
                raise DownloadError(
                    f"{path}: member {info.filename!r} is damaged ({exc}); delete the archive and download it again"
                ) from None
        report(progress, description, total, total)
        return len(members)


def merge_tree(src: Path, dst: Path) -> None:
    """Move everything under ``src`` into ``dst`` with renames (same file system).

    A folder that does not exist yet in ``dst`` moves in one rename; existing folders are merged
    and existing files replaced. Each file appears under its final name complete or not at all.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.is_dir() and not target.is_symlink():
                merge_tree(entry, target)
                continue
            if target.is_symlink() or target.exists():
                target.unlink()
        elif target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def staging_dir(dest: Path, label: str) -> Path:
    """Create a hidden staging folder inside ``dest`` (same file system, so renames are atomic).

    Leftovers of an earlier killed run with the same label are removed first.
    """
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

    All members are checked first (see :func:`check_members` and :func:`check_layout`);
    nothing is written if any check fails. Members are written into a staging folder inside
    ``dest`` (CRCs are checked while reading) and then moved into place with renames.

    Args:
        path: The archive.
        dest: Target folder (created if needed).
        limits: Caps on total size, member count and compression ratio.
        required: Glob patterns that must each match a member name.
        progress: Optional callback, called as ``("extract NAME", members done, members)``.

    Returns:
        The clean relative names of the files written (folders excluded).

    Raises:
        DownloadError: the archive is damaged, truncated, unsafe or not the expected one.
    """
    path = Path(path)
    dest = Path(dest)
    description = f"extract {path.name}"
    with open_zip(path) as archive:
        members = check_members(archive, path, limits=limits)
        check_layout([clean for _, clean in members], required, path)
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
                try:
                    with archive.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                    raise DownloadError(
                        f"{path}: member {info.filename!r} is damaged ({exc}); delete the archive and download it again"
                    ) from None
                written.append(clean)
            merge_tree(staging, dest)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(staging)
        report(progress, description, len(members), len(members))
        return written
