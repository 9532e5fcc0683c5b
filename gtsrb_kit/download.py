"""Fetch, verify and unpack the official GTSRB archives.

The archives, their official URL and their checksums are data (``resources/archives.json``).
:func:`download_gtsrb` brings a root folder to the layout :func:`gtsrb_kit.catalog.read_catalog`
reads, keeping verified archives under ``ROOT/archives`` and writing completion markers (last)
under ``ROOT/.gtsrb-kit``. Partial downloads (``NAME.part``) resume with HTTP ``Range``; an
archive gets its final name only once its size, checksum and zip structure are verified. The
training archive has no trustworthy published checksum: for it every member's CRC and the
expected layout are checked, unless ``checksums=`` pins one.
"""

from __future__ import annotations

import contextlib
import errno
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from gtsrb_kit.errors import ConfigError, DownloadError
from gtsrb_kit.extract import ExtractLimits, extract_zip, merge_tree, staging_dir, verify_zip
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
_HTML_HINT = "the URL is probably wrong or behind a login/error page"
_TABLE_PATH = Path(__file__).resolve().parent / "resources" / "archives.json"
_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


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
        retries: Extra attempts for transient failures (dropped connections, timeouts, HTTP
            5xx/429); each resumes the partial file.
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


def read_checksums(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``SHA256SUMS`` file (``HEX  NAME`` lines, as ``sha256sum`` writes them).

    Blank lines and lines starting with ``#`` are ignored; a name's folder part is dropped.

    Raises:
        ConfigError: the file is missing or a line is not in that format.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: checksum file not found; pass an existing SHA256SUMS file to --checksums")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: checksum file unreadable ({exc}); pass a SHA256SUMS text file") from None
    sums: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SUM_LINE.match(line)
        if not match:
            raise ConfigError(
                f"{path}:{number}: expected 'SHA256HEX  NAME' (64 hex digits, two spaces, file name); fix the line"
            )
        sums[match[2].strip().replace("\\", "/").rsplit("/", 1)[-1]] = match[1].lower()
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


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` of ``bytes START-END/TOTAL`` or ``bytes */TOTAL`` (missing parts are ``None``)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    start, total = match.groups() if match else (None, None)
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _looks_like_html(head: bytes) -> bool:
    return head.lstrip()[:1] == b"<"


def _open(url: str, part: Path, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """Request ``url`` from byte ``offset`` on; ``None`` when the server says ``part`` is already complete."""
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            if exc.code == 416 and offset:
                if _content_range(exc.headers.get("Content-Range"))[1] == offset:
                    return None
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


def _read(response: http.client.HTTPResponse, done: int) -> bytes:
    """The bytes that have arrived (up to one chunk): a stall loses nothing already received."""
    try:
        return response.read1(_CHUNK)
    except (http.client.HTTPException, OSError) as exc:
        raise _Transient(f"connection lost after {done} bytes ({type(exc).__name__})") from None


def _fetch_once(url: str, part: Path, *, timeout: float, progress: ProgressCallback | None, description: str) -> None:
    """One HTTP request: resume ``part`` if it has data, or start it over when the server ignores the range."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, part, offset, timeout)
    if response is None:
        return
    with response:
        offset, total = _start(response, part, offset)
        done = _save(response, part, offset, total, progress=progress, description=description)
    if total is not None and done != total:
        raise _Transient(f"connection closed after {done} of {total} bytes")


def _start(response: http.client.HTTPResponse, part: Path, offset: int) -> tuple[int, int | None]:
    """Check the answer's type and status; return ``(offset the data starts at, total size or None)``."""
    content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in _HTML_TYPES:
        raise _Permanent(f"served an HTML page (Content-Type {content_type}) instead of the archive; {_HTML_HINT}")
    status = response.status or 200  # file:// answers have no status
    if status == 206:
        start, total = _content_range(response.headers.get("Content-Range"))
        if start != offset:
            part.unlink()
            raise _Transient(f"server resumed at byte {start} instead of {offset}; restarting the file")
        return offset, total
    if status == 200:
        length = response.headers.get("Content-Length")
        return 0, (int(length) if length and length.isdigit() else None)
    raise _Permanent(f"unexpected HTTP status {status}")


def _save(
    response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, *,
    progress: ProgressCallback | None, description: str,
) -> int:
    """Append the body to ``part`` from ``offset`` on, flushing every chunk (a kill or stall keeps it); return its size."""
    chunk, done = _read(response, offset), offset
    if not offset and _looks_like_html(chunk[:512]):
        part.unlink(missing_ok=True)
        raise _Permanent(f"served an HTML page instead of the archive; {_HTML_HINT}")
    if not chunk:
        return done
    with open(part, "ab" if offset else "wb") as out:  # write errors (disk full) propagate as they are
        while chunk:
            out.write(chunk)
            out.flush()
            done += len(chunk)
            report(progress, description, done, total)
            chunk = _read(response, done)
    return done


def _digests(path: Path, algorithms: Iterable[str], progress: ProgressCallback | None, description: str) -> dict[str, str]:
    hashes = {name: hashlib.new(name) for name in algorithms}
    total, done = path.stat().st_size, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            for digest in hashes.values():
                digest.update(chunk)
            done += len(chunk)
            report(progress, description, done, total)
    return {name: digest.hexdigest() for name, digest in hashes.items()}


def verify_archive(
    path: str | os.PathLike[str],
    spec: ArchiveSpec,
    *,
    limits: ExtractLimits = ExtractLimits(),
    progress: ProgressCallback | None = None,
) -> tuple[str, bool]:
    """Check one archive file against its spec and return ``(sha256 hex, checksum_verified)``.

    The SHA-256 (else the MD5) is compared when the spec has one, then the members are checked
    for safety and the expected layout; without a known checksum every member's CRC is checked.

    Raises:
        DownloadError: the file is an HTML page, its checksum differs, or the zip is damaged,
            unsafe or not laid out like the official archive.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        if _looks_like_html(fh.read(512)):
            raise DownloadError(f"{path}: is an HTML page, not {spec.name}; {_HTML_HINT} - delete it and download again")
    algorithm, expected = ("sha256", spec.sha256) if spec.sha256 else ("md5", spec.md5)
    digests = _digests(path, {"sha256", algorithm} if expected else {"sha256"}, progress, f"verify {spec.name}")
    if expected and digests[algorithm] != expected.lower():
        raise DownloadError(
            f"{path}: {algorithm} {digests[algorithm]} does not match the expected {expected} for {spec.name} "
            "(a mirror with re-packed archives needs --checksums SHA256SUMS); "
            "the file is damaged or not the expected one - delete it and download it again"
        )
    verify_zip(path, limits=limits, required=spec.required, progress=progress, read_data=not expected)
    return digests["sha256"], bool(expected)


def fetch_archive(
    spec: ArchiveSpec,
    urls: Sequence[str],
    dest: str | os.PathLike[str],
    *,
    policy: RetryPolicy = RetryPolicy(),
    limits: ExtractLimits = ExtractLimits(),
    progress: ProgressCallback | None = None,
) -> tuple[str, str, bool]:
    """Download one archive to ``dest``, trying ``urls`` (``http``, ``https``, ``file``) in order.

    Data goes to ``dest + ".part"`` first (an existing one is resumed); ``dest`` appears only
    once the file is complete and passes :func:`verify_archive`.

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
    kept = part.stat().st_size if part.exists() else 0
    resume = f"rerun to resume the {kept} bytes kept in {part.name}, " if kept else ""
    raise DownloadError(
        f"all mirrors failed for {spec.name}: {'; '.join(failures) or 'no URL to try'}; "
        f"check the network, {resume}or pass --mirror URL or --from FOLDER"
    )


def _fetch_verified(
    url: str, spec: ArchiveSpec, part: Path, *, policy: RetryPolicy, limits: ExtractLimits,
    progress: ProgressCallback | None,
) -> tuple[str, bool]:
    """Fetch ``url`` into ``part`` with retries and verify it; a resumed file that fails is refetched once."""
    while True:
        resumed = part.exists() and part.stat().st_size > 0
        _fetch_with_retries(url, part, policy=policy, progress=progress, description=f"download {spec.name}")
        try:
            return verify_archive(part, spec, limits=limits, progress=progress)
        except DownloadError as exc:
            part.unlink(missing_ok=True)  # the next round, if any, fetches the whole file
            if not resumed:
                raise _Permanent(str(exc).split("; ")[0].replace(f"{part}: ", "")) from None


def _fetch_with_retries(
    url: str, part: Path, *, policy: RetryPolicy, progress: ProgressCallback | None, description: str
) -> None:
    for attempt in range(1, policy.retries + 2):
        try:
            return _fetch_once(url, part, timeout=policy.timeout, progress=progress, description=description)
        except _Transient as exc:
            if attempt > policy.retries:
                raise _Permanent(f"{exc} (gave up after {attempt} attempt{'s' if attempt > 1 else ''})") from None
            time.sleep(min(policy.delay * 2 ** (attempt - 1), policy.max_delay))


def archive_urls(name: str, mirrors: Sequence[str] = (), *, official: bool = True) -> list[str]:
    """The URLs to try for one archive: each mirror folder in order, then the official one.

    Raises:
        ConfigError: a mirror is not an http(s)/file URL, or there is nothing to try.
    """
    bases = list(mirrors) + ([official_base_url()] if official else [])
    if not bases:
        raise ConfigError("no source to download from: --no-official needs at least one --mirror URL (or use --from)")
    for base in bases:
        if urllib.parse.urlsplit(base).scheme.lower() not in ("http", "https", "file"):
            raise ConfigError(f"mirror {base!r} is not an http://, https:// or file:// URL; fix --mirror")
    return [base.rstrip("/") + "/" + urllib.parse.quote(name) for base in bases]


# --------------------------------------------------------------------------- markers


def _marker_path(root: Path, name: str) -> Path:
    return root / MARKER_DIR / f"{name}.extracted.json"


def is_extracted(root: str | os.PathLike[str], spec: ArchiveSpec) -> bool:
    """True when ``spec`` was extracted under ``root`` (marker present, its paths still there)."""
    root = Path(root)
    try:
        json.loads(_marker_path(root, spec.name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all((root / p).exists() for p in spec.provides)


def _write_marker(root: Path, spec: ArchiveSpec, **info: object) -> None:
    marker = _marker_path(root, spec.name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"archive": spec.name, **info})


# --------------------------------------------------------------------------- the whole job


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

    Idempotent: an archive whose completion marker and paths exist is skipped without network
    I/O; a verified archive under ``ROOT/archives`` is reused.

    Args:
        root: Target folder (default: :func:`gtsrb_kit.paths.default_root`).
        parts: ``"train"`` and/or ``"test"`` (the test part is the images and the labels).
        mirrors: Folder URLs (``http``, ``https``, ``file``) tried in order before the official one.
        official: Also try the official URL (after the mirrors).
        checksums: A ``SHA256SUMS`` file or a ``{name: sha256}`` mapping overriding the built-in checksums.
        source: Work offline from a folder of archives (directly or in ``archives/``), one
            archive file, or an already-extracted tree.
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
    if isinstance(checksums, Mapping):
        specs = with_checksums(specs, checksums, "the given checksums")
    elif checksums is not None:
        specs = with_checksums(specs, read_checksums(checksums), str(checksums))
    source = Path(source) if source is not None else None
    if source is not None and not source.exists():
        raise ConfigError(f"{source}: no such file or folder; pass --from a folder of archives or an extracted tree")
    # validate the mirrors before any work; an offline run never downloads
    urls = {s.name: archive_urls(s.name, mirrors, official=official) for s in specs} if source is None else {}
    results = []
    for spec in specs:
        with _writing(root):
            results.append(_one(spec, root, urls=urls.get(spec.name, []), source=source, keep_archives=keep_archives,
                                extract=extract, policy=policy, limits=limits, progress=progress))
    return results


_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device; free space or pass another --root",
    errno.EDQUOT: "disk quota exceeded; free space or pass another --root",
    errno.EROFS: "read-only file system; pass a writable folder as --root",
}


@contextlib.contextmanager
def _writing(root: Path) -> Iterator[None]:
    """Name ``root`` (not the file being read) when writing under it fails for lack of space or a read-only disk.

    Whatever was being written is gone by then (temporary files and staging folders clean up
    after themselves); only a partial download (``NAME.part``) stays, to be resumed.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        raise DownloadError(f"{root}: {_WRITE_ERRORS[exc.errno]}") from None


def _one(
    spec: ArchiveSpec, root: Path, *, urls: Sequence[str], source: Path | None, keep_archives: bool,
    extract: bool, policy: RetryPolicy, limits: ExtractLimits, progress: ProgressCallback | None,
) -> ArchiveResult:
    kept = root / ARCHIVES_DIR / spec.name
    if extract and is_extracted(root, spec):
        result = ArchiveResult(spec.name, "up to date", archive=kept if kept.is_file() else None)
    else:
        result, path = _obtain(spec, kept, urls=urls, source=source, keep_archives=keep_archives,
                               policy=policy, limits=limits, progress=progress)
        if path is None and not extract:
            result.notes.append(f"{source} holds an extracted tree, not {spec.name}; nothing to keep without extraction")
        elif path is None:
            _import_tree(source, root, spec)
            _write_marker(root, spec, source=str(source), sha256=None, tree=True)
            result.extracted = True
        elif extract:
            files = extract_zip(path, root, limits=limits, required=spec.required, progress=progress)
            _write_marker(root, spec, source=result.source, sha256=result.sha256,
                          checksum_verified=result.checksum_verified, files=len(files))
            result.extracted = True
    if extract and not keep_archives and result.archive is not None:
        result.archive.unlink()
        result.archive = None
    return result


def _obtain(
    spec: ArchiveSpec, kept: Path, *, urls: Sequence[str], source: Path | None, keep_archives: bool,
    policy: RetryPolicy, limits: ExtractLimits, progress: ProgressCallback | None,
) -> tuple[ArchiveResult, Path | None]:
    """Reuse, import or download a verified archive; return the result and the archive to extract.

    The archive is ``None`` when ``source`` is an extracted tree instead.
    """
    notes = []
    if kept.is_file():
        try:
            sha256, verified = verify_archive(kept, spec, limits=limits, progress=progress)
            return ArchiveResult(spec.name, "verified", str(kept), kept, sha256, verified), kept
        except DownloadError as exc:
            kept.unlink()  # damaged or wrong: fetch it again below
            notes = [f"removed a bad {kept}: {exc}"]
    if source is None:
        url, sha256, verified = fetch_archive(spec, urls, kept, policy=policy, limits=limits, progress=progress)
        return ArchiveResult(spec.name, "downloaded", url, kept, sha256, verified, notes=notes), kept
    found = _find_in_source(source, spec.name)
    if found is not None:
        sha256, verified = verify_archive(found, spec, limits=limits, progress=progress)
        archive = kept if keep_archives else None
        if archive is not None:
            archive.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(archive) as tmp:
                shutil.copyfile(found, tmp)
        return ArchiveResult(spec.name, "imported", str(found), archive, sha256, verified), archive or found
    if spec.provides and all((source / p).exists() for p in spec.provides):
        return ArchiveResult(spec.name, "imported", str(source)), None
    raise DownloadError(
        f"--from {source}: neither {spec.name} (there or in {ARCHIVES_DIR}/) nor its extracted files "
        f"({', '.join(spec.provides)}) found; add it, or choose the part with --only"
    )


def _find_in_source(source: Path, name: str) -> Path | None:
    if source.is_file():
        return source if source.name == name else None
    return next((c for c in (source / name, source / ARCHIVES_DIR / name) if c.is_file()), None)


def _import_tree(source: Path, root: Path, spec: ArchiveSpec) -> None:
    """Copy the paths ``spec`` provides from an extracted tree into ``root`` atomically."""
    if source.resolve() == root.resolve():
        return
    staging = staging_dir(root, f"import-{spec.name}")
    try:
        for rel in spec.provides:
            src, dst = source / rel, staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            _copy(src, dst)
        merge_tree(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or a folder tree; unlike ``shutil.copytree``, the first failure (a full disk) stops it as it is."""
    if not src.is_dir():
        shutil.copyfile(src, dst)
        return
    dst.mkdir(exist_ok=True)
    for entry in sorted(src.iterdir()):
        _copy(entry, dst / entry.name)
