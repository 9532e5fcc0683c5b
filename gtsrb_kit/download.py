"""Fetch, verify and unpack the official GTSRB archives.

The archives, their official URL and their checksums are data (``resources/archives.json``),
not code. :func:`download_gtsrb` brings a root folder to the official layout that
:func:`gtsrb_kit.catalog.read_catalog` reads::

    ROOT/archives/GTSRB_Final_*.zip          verified archives (unless keep_archives=False)
    ROOT/GTSRB/Final_Training/Images/...     from GTSRB_Final_Training_Images.zip
    ROOT/GTSRB/Final_Test/Images/...         from GTSRB_Final_Test_Images.zip
    ROOT/GT-final_test.csv                   from GTSRB_Final_Test_GT.zip
    ROOT/.gtsrb-kit/NAME.extracted.json      completion markers (written last)

Downloads use only :mod:`urllib.request`. Partial data lives under ``NAME.part`` and is resumed
with an HTTP ``Range`` request (a server that ignores it and answers 200 restarts the file
cleanly); transient failures are retried with exponential backoff; each mirror is tried in
order; an HTML page served in place of an archive is recognised. An archive reaches its final
name only after its size, its checksum (when one is known) and its zip structure have been
verified. A second run with everything in place does no network I/O at all.

The training archive's checksum is **not known for certain** (no trustworthy published value
for this exact file); for it only zip integrity (the CRC of every member) and the expected
internal layout are verified, unless a checksum file (``checksums=``) pins one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import os
import re
import shutil
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from gtsrb_kit.errors import ConfigError, DownloadError
from gtsrb_kit.extract import (
    ExtractLimits, check_layout, check_members, extract_zip, merge_tree, open_zip, staging_dir, verify_zip,
)
from gtsrb_kit.fileio import atomic_path, write_json
from gtsrb_kit.paths import default_root
from gtsrb_kit.progress import ProgressCallback, report

Part = Literal["train", "test"]
PARTS: tuple[Part, ...] = ("train", "test")
ARCHIVES_DIR = "archives"
MARKER_DIR = ".gtsrb-kit"
_CHUNK = 1 << 20
_USER_AGENT = "gtsrb-kit (Python urllib)"
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TABLE_PATH = Path(__file__).resolve().parent / "resources" / "archives.json"


@dataclass(frozen=True)
class ArchiveSpec:
    """One archive of the data set, as listed in ``resources/archives.json``.

    Attributes:
        name: File name, also the last part of its URL.
        part: ``"train"`` or ``"test"`` (what ``--only`` selects).
        sha256: Expected hex SHA-256, or ``None`` when not known.
        md5: Expected hex MD5 (checked only when ``sha256`` is unknown), or ``None``.
        checksum_note: Why a checksum is missing or where it comes from.
        required: Glob patterns that member names must match (the expected internal layout).
        provides: Paths (relative to the root) that exist once the archive is extracted.
    """

    name: str
    part: Part
    sha256: str | None
    md5: str | None
    checksum_note: str = ""
    required: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one URL before moving to the next mirror.

    Attributes:
        retries: Extra attempts after the first one for transient failures (dropped
            connections, timeouts, HTTP 5xx/429); each resumes the partial file.
        delay: Seconds before the first retry; doubled on every further retry.
        max_delay: Cap on one delay.
        timeout: Socket timeout in seconds for connecting and for each read.
    """

    retries: int = 4
    delay: float = 1.0
    max_delay: float = 30.0
    timeout: float = 60.0


@dataclass
class ArchiveResult:
    """What :func:`download_gtsrb` did for one archive.

    Attributes:
        name: Archive file name.
        action: ``"up to date"``, ``"downloaded"``, ``"imported"`` (from ``source``) or
            ``"verified"`` (an archive already under ``ROOT/archives``).
        source: The URL or local path it came from (``None`` when up to date).
        archive: Where the verified archive now is, or ``None`` when not kept.
        sha256: Its SHA-256 as computed here (``None`` when nothing was read).
        checksum_verified: True when the SHA-256/MD5 matched a known value; False when only
            zip integrity and layout could be checked.
        extracted: True when the tree was (re)extracted by this call.
        notes: Things worth telling the user (e.g. a damaged kept archive that was replaced).
    """

    name: str
    action: str
    source: str | None = None
    archive: Path | None = None
    sha256: str | None = None
    checksum_verified: bool = False
    extracted: bool = False
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the data table


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(_TABLE_PATH.read_text(encoding="utf-8"))


def official_base_url() -> str:
    """The official download folder (ends with ``/``)."""
    return _table()["official_base_url"]


def official_archives(parts: Iterable[str] = PARTS) -> list[ArchiveSpec]:
    """The official archives for the given parts (``"train"``, ``"test"``), in table order.

    Raises:
        ConfigError: a part is neither ``train`` nor ``test``.
    """
    parts = tuple(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"unknown part {unknown[0]!r}; use one of: {', '.join(PARTS)}")
    return [
        ArchiveSpec(
            name=row["name"], part=row["part"], sha256=row.get("sha256"), md5=row.get("md5"),
            checksum_note=row.get("checksum_note", ""), required=tuple(row.get("required", ())),
            provides=tuple(row.get("provides", ())),
        )
        for row in _table()["archives"]
        if row["part"] in parts
    ]


_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def read_checksums(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``SHA256SUMS`` file (``HEX  NAME`` per line, as written by ``sha256sum``).

    Blank lines and lines starting with ``#`` are ignored; a name's folder part is dropped.

    Raises:
        ConfigError: the file is missing or a line is not in that format.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: checksum file not found; pass an existing SHA256SUMS file to --checksums") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: checksum file unreadable ({exc}); pass a SHA256SUMS text file") from None
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SUM_LINE.match(line)
        if not match:
            raise ConfigError(
                f"{path}:{number}: expected 'SHA256HEX  NAME' (64 hex digits, two spaces, file name); fix the line"
            )
        sums[match.group(2).strip().replace("\\", "/").rsplit("/", 1)[-1]] = match.group(1).lower()
    return sums


def with_checksums(specs: Sequence[ArchiveSpec], sums: Mapping[str, str], origin: str = "checksum file") -> list[ArchiveSpec]:
    """Replace the built-in checksums of the archives named in ``sums`` (others keep theirs)."""
    return [
        replace(s, sha256=sums[s.name].lower(), md5=None, checksum_note=f"sha256 from {origin}") if s.name in sums else s
        for s in specs
    ]


# --------------------------------------------------------------------------- HTTP


class _Transient(Exception):
    """A failure worth retrying on the same URL (resuming the partial file)."""


class _Permanent(Exception):
    """A failure that makes this URL useless: move on to the next mirror."""


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` or ``bytes */TOTAL`` (missing parts are ``None``)."""
    match = re.match(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", value or "")
    if not match:
        return None, None, None
    start, end, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(end) if end is not None else None,
        int(total) if total not in (None, "*") else None,
    )


def _looks_like_html(head: bytes) -> bool:
    return head.lstrip()[:1] == b"<"


_HTML_HINT = "the URL is probably wrong or behind a login/error page"


def _fetch_once(url: str, part: Path, *, timeout: float, progress: ProgressCallback | None, description: str) -> int:
    """One HTTP request: resume ``part`` if it has data; return its size once complete."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked by caller
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            if exc.code == 416 and offset:
                _, _, total = _content_range(exc.headers.get("Content-Range"))
                if total == offset:
                    return offset
                part.unlink()
                raise _Transient("server refused to resume the partial file; restarting it") from None
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
            raise _Permanent(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        text = str(reason) or type(reason).__name__
        if isinstance(reason, (FileNotFoundError, PermissionError, ssl.SSLCertVerificationError)):
            raise _Permanent(text) from None  # waiting will not fix these
        raise _Transient(text) from None
    with response:
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type in _HTML_TYPES:
            raise _Permanent(f"served an HTML page (Content-Type {content_type}) instead of the archive; {_HTML_HINT}")
        status = getattr(response, "status", 200) or 200
        length = response.headers.get("Content-Length")
        if status == 206:
            start, _, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Transient(f"server resumed at byte {start} instead of {offset}; restarting the file")
            mode = "ab"
        elif status == 200:
            offset = 0  # the server ignored Range (or none was sent): start the file over
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise _Permanent(f"unexpected HTTP status {status}")
        done = offset
        html = False
        with open(part, mode) as out:  # write errors (disk full) propagate as they are
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise _Transient(f"connection lost after {done} bytes ({type(exc).__name__})") from None
                if not chunk:
                    break
                if done == 0 and _looks_like_html(chunk[:512]):
                    html = True
                    break
                out.write(chunk)
                done += len(chunk)
                report(progress, description, done, total)
    if html:
        part.unlink()
        raise _Permanent(f"served an HTML page instead of the archive; {_HTML_HINT}")
    if total is not None and done != total:
        raise _Transient(f"connection closed after {done} of {total} bytes")
    return done


def _digest(path: Path, algorithm: str, progress: ProgressCallback | None, description: str) -> str:
    digest = hashlib.new(algorithm)
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            report(progress, description, done, total)
    return digest.hexdigest()


def verify_archive(
    path: str | os.PathLike[str],
    spec: ArchiveSpec,
    *,
    limits: ExtractLimits = ExtractLimits(),
    progress: ProgressCallback | None = None,
) -> tuple[str, bool]:
    """Check one archive file against its spec.

    The SHA-256 (or, failing that, the MD5) is compared when the spec has one; the zip is then
    checked for unsafe members and the expected layout, and, when no checksum is known, the
    CRC of every member is checked too.

    Args:
        path: The archive file (may have a temporary name).
        spec: What it should be.
        limits: Zip-bomb caps.
        progress: Optional callback (``"verify NAME"``, bytes, total).

    Returns:
        ``(sha256 hex, checksum_verified)``.

    Raises:
        DownloadError: the file is an HTML page, its checksum differs, or the zip is damaged,
            unsafe or not laid out like the official archive.
    """
    path = Path(path)
    description = f"verify {spec.name}"
    with open(path, "rb") as fh:
        if _looks_like_html(fh.read(512)):
            raise DownloadError(f"{path}: is an HTML page, not {spec.name}; {_HTML_HINT} - delete it and download again")
    sha256 = _digest(path, "sha256", progress, description)
    if spec.sha256:
        if sha256 != spec.sha256.lower():
            raise DownloadError(
                f"{path}: sha256 {sha256} does not match the expected {spec.sha256} for {spec.name} "
                "(a mirror with re-packed archives needs --checksums SHA256SUMS); "
                "the file is damaged or not the expected one - delete it and download it again"
            )
    elif spec.md5:
        md5 = _digest(path, "md5", progress, description)
        if md5 != spec.md5.lower():
            raise DownloadError(
                f"{path}: md5 {md5} does not match the expected {spec.md5} for {spec.name} "
                "(a mirror with re-packed archives needs --checksums SHA256SUMS); "
                "the file is damaged or not the expected one - delete it and download it again"
            )
    verified = bool(spec.sha256 or spec.md5)
    if verified:
        with open_zip(path) as archive:
            members = check_members(archive, path, limits=limits)
            check_layout([clean for _, clean in members], spec.required, path)
    else:
        verify_zip(path, limits=limits, required=spec.required, progress=progress)
    return sha256, verified


def fetch_archive(
    spec: ArchiveSpec,
    urls: Sequence[str],
    dest: str | os.PathLike[str],
    *,
    policy: RetryPolicy = RetryPolicy(),
    limits: ExtractLimits = ExtractLimits(),
    progress: ProgressCallback | None = None,
) -> tuple[str, str, bool]:
    """Download one archive to ``dest``, trying ``urls`` in order, and verify it.

    Data goes to ``dest + ".part"`` first; an existing ``.part`` is resumed. ``dest`` appears
    only once the file is complete and verified (see :func:`verify_archive`); a file that fails
    verification is deleted.

    Args:
        spec: The archive.
        urls: Full URLs to try in order (``http``, ``https`` or ``file``).
        dest: Final path of the archive.
        policy: Retries, backoff and timeout per URL.
        limits: Zip-bomb caps used while verifying.
        progress: Optional callback (``"download NAME"``, bytes, total or ``None``).

    Returns:
        ``(url used, sha256, checksum_verified)``.

    Raises:
        DownloadError: every URL failed; the message lists each URL with its reason.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    for url in urls:
        try:
            sha256, verified = _fetch_verified(url, spec, part, policy=policy, limits=limits, progress=progress)
        except _Permanent as exc:
            failures.append(f"{url}: {exc}")
            continue
        os.replace(part, dest)
        return url, sha256, verified
    raise DownloadError(
        f"all mirrors failed for {spec.name}: {'; '.join(failures) or 'no URL to try'}; "
        "check the network, or pass --mirror URL or --from FOLDER"
    )


def _fetch_verified(
    url: str, spec: ArchiveSpec, part: Path, *, policy: RetryPolicy, limits: ExtractLimits,
    progress: ProgressCallback | None,
) -> tuple[str, bool]:
    """Fetch ``url`` into ``part`` with retries and verify it; a resumed file that fails is refetched once."""
    restarted = False
    while True:
        resumed = part.exists() and part.stat().st_size > 0
        _fetch_with_retries(url, part, policy=policy, progress=progress, description=f"download {spec.name}")
        try:
            return verify_archive(part, spec, limits=limits, progress=progress)
        except DownloadError as exc:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            if resumed and not restarted:
                restarted = True  # the old partial data may be what is wrong: fetch the whole file once
                continue
            raise _Permanent(str(exc).split("; ")[0].replace(f"{part}: ", "")) from None


def _fetch_with_retries(
    url: str, part: Path, *, policy: RetryPolicy, progress: ProgressCallback | None, description: str
) -> int:
    attempt = 0
    while True:
        try:
            return _fetch_once(url, part, timeout=policy.timeout, progress=progress, description=description)
        except _Transient as exc:
            attempt += 1
            if attempt > policy.retries:
                raise _Permanent(f"{exc} (gave up after {attempt} attempts)") from None
            time.sleep(min(policy.delay * 2 ** (attempt - 1), policy.max_delay))


def archive_urls(name: str, mirrors: Sequence[str] = (), *, official: bool = True) -> list[str]:
    """The URLs to try for one archive: each mirror folder in order, then the official one.

    Raises:
        ConfigError: a mirror is not an http(s)/file URL, or there is nothing to try.
    """
    bases = list(mirrors) + ([official_base_url()] if official else [])
    if not bases:
        raise ConfigError("no source to download from: --no-official needs at least one --mirror URL (or use --from)")
    urls = []
    for base in bases:
        scheme = urllib.parse.urlsplit(base).scheme.lower()
        if scheme not in ("http", "https", "file"):
            raise ConfigError(f"mirror {base!r} is not an http://, https:// or file:// URL; fix --mirror")
        urls.append(base.rstrip("/") + "/" + urllib.parse.quote(name))
    return urls


# --------------------------------------------------------------------------- markers


def _marker_path(root: Path, name: str) -> Path:
    return root / MARKER_DIR / f"{name}.extracted.json"


def is_extracted(root: str | os.PathLike[str], spec: ArchiveSpec) -> bool:
    """True when ``spec`` was extracted under ``root`` (marker present, its paths still there)."""
    root = Path(root)
    marker = _marker_path(root, spec.name)
    try:
        json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all((root / p).exists() for p in spec.provides)


def _write_marker(root: Path, spec: ArchiveSpec, **info: object) -> None:
    marker = _marker_path(root, spec.name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"archive": spec.name, **info})


# --------------------------------------------------------------------------- the whole job


def _find_in_source(source: Path, name: str) -> Path | None:
    if source.is_file():
        return source if source.name == name else None
    for candidate in (source / name, source / ARCHIVES_DIR / name):
        if candidate.is_file():
            return candidate
    return None


def _import_tree(source: Path, root: Path, spec: ArchiveSpec) -> None:
    """Copy the paths ``spec`` provides from an extracted tree into ``root`` atomically."""
    if source.resolve() == root.resolve():
        return
    staging = staging_dir(root, f"import-{spec.name}")
    try:
        for rel in spec.provides:
            src, dst = source / rel, staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
        merge_tree(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_gtsrb(
    root: str | os.PathLike[str] | None = None,
    *,
    parts: Iterable[str] = PARTS,
    mirrors: Sequence[str] = (),
    official: bool = True,
    checksums: str | os.PathLike[str] | Mapping[str, str] | None = None,
    source: str | os.PathLike[str] | None = None,
    keep_archives: bool = True,
    extract: bool = True,
    policy: RetryPolicy = RetryPolicy(),
    limits: ExtractLimits = ExtractLimits(),
    progress: ProgressCallback | None = None,
) -> list[ArchiveResult]:
    """Bring ``root`` to the official GTSRB layout: fetch, verify and extract the archives.

    Idempotent: an archive whose completion marker is present (and whose paths exist) is
    skipped without any network I/O; a verified archive under ``ROOT/archives`` is reused.

    Args:
        root: Target folder (default: :func:`gtsrb_kit.paths.default_root`).
        parts: ``"train"`` and/or ``"test"`` (the test part is the images and the labels).
        mirrors: Folder URLs tried in order before the official one (``http``, ``https``,
            ``file``); the archive name is appended.
        official: Also try the official URL (after the mirrors).
        checksums: A ``SHA256SUMS`` file (or a ``{name: sha256}`` mapping) whose entries
            replace the built-in checksums, e.g. for a private mirror with re-packed archives.
        source: Work offline from a local folder holding the archives (directly or in an
            ``archives/`` subfolder), a single archive file, or an already-extracted tree.
        keep_archives: Keep verified archives under ``ROOT/archives`` (else delete the ones
            there after extraction; files in ``source`` are never deleted).
        extract: Extract the archives (else only fetch and verify them).
        policy: Retries, backoff and timeouts.
        limits: Zip-bomb caps for verification and extraction.
        progress: Optional ``progress(description, completed, total)`` callback.

    Returns:
        One :class:`ArchiveResult` per archive, in table order.

    Raises:
        DownloadError: an archive could not be fetched, verified or extracted.
        ConfigError: bad parts, mirrors or checksum file.
    """
    root = Path(root) if root is not None else default_root()
    specs = official_archives(parts)
    if checksums is not None:
        if isinstance(checksums, Mapping):
            specs = with_checksums(specs, checksums, "the given checksums")
        else:
            specs = with_checksums(specs, read_checksums(checksums), str(checksums))
    source_path = Path(source) if source is not None else None
    if source_path is not None and not source_path.exists():
        raise ConfigError(f"{source_path}: no such file or folder; pass --from a folder of archives or an extracted tree")
    if source_path is None:
        for spec in specs:  # validate mirrors before any work
            archive_urls(spec.name, mirrors, official=official)
    archives = root / ARCHIVES_DIR
    results = []
    for spec in specs:
        results.append(
            _one(spec, root, archives, mirrors=mirrors, official=official, source=source_path,
                 keep_archives=keep_archives, extract=extract, policy=policy, limits=limits, progress=progress)
        )
    return results


def _one(
    spec: ArchiveSpec, root: Path, archives: Path, *, mirrors: Sequence[str], official: bool,
    source: Path | None, keep_archives: bool, extract: bool, policy: RetryPolicy, limits: ExtractLimits,
    progress: ProgressCallback | None,
) -> ArchiveResult:
    kept = archives / spec.name
    if extract and is_extracted(root, spec):
        result = ArchiveResult(spec.name, "up to date", archive=kept if kept.is_file() else None)
        if not keep_archives and kept.is_file():
            kept.unlink()
            result.archive = None
        return result

    result: ArchiveResult | None = None
    if kept.is_file():
        try:
            sha256, verified = verify_archive(kept, spec, limits=limits, progress=progress)
            result = ArchiveResult(spec.name, "verified", str(kept), kept, sha256, verified)
        except DownloadError as exc:
            kept.unlink()  # damaged or wrong: fetch it again below
            note = f"removed a bad {kept}: {exc}"
        else:
            note = ""
    else:
        note = ""

    if result is None and source is not None:
        found = _find_in_source(source, spec.name)
        if found is not None:
            sha256, verified = verify_archive(found, spec, limits=limits, progress=progress)
            path = found
            if keep_archives:
                archives.mkdir(parents=True, exist_ok=True)
                with atomic_path(kept) as tmp:
                    shutil.copyfile(found, tmp)
                path = kept
            result = ArchiveResult(spec.name, "imported", str(found), path if keep_archives else None, sha256, verified)
            if extract:
                _extract(spec, path, root, result, limits=limits, progress=progress)
            return result
        if spec.provides and all((source / p).exists() for p in spec.provides):
            result = ArchiveResult(spec.name, "imported", str(source))
            if extract:
                _import_tree(source, root, spec)
                _write_marker(root, spec, source=str(source), sha256=None, tree=True)
                result.extracted = True
            else:
                result.notes.append(f"{source} holds an extracted tree, not {spec.name}; nothing to keep without extraction")
            return result
        raise DownloadError(
            f"--from {source}: neither {spec.name} (there or in {ARCHIVES_DIR}/) nor its extracted files "
            f"({', '.join(spec.provides)}) found; add it, or choose the part with --only"
        )

    if result is None:
        urls = archive_urls(spec.name, mirrors, official=official)
        url, sha256, verified = fetch_archive(spec, urls, kept, policy=policy, limits=limits, progress=progress)
        result = ArchiveResult(spec.name, "downloaded", url, kept, sha256, verified)
    if note:
        result.notes.append(note)
    if extract:
        _extract(spec, kept, root, result, limits=limits, progress=progress)
        if not keep_archives:
            kept.unlink()
            result.archive = None
    return result


def _extract(
    spec: ArchiveSpec, path: Path, root: Path, result: ArchiveResult, *, limits: ExtractLimits,
    progress: ProgressCallback | None,
) -> None:
    files = extract_zip(path, root, limits=limits, required=spec.required, progress=progress)
    _write_marker(root, spec, source=result.source, sha256=result.sha256,
                  checksum_verified=result.checksum_verified, files=len(files))
    result.extracted = True
