"""Hostile inputs and faults for `gtsrb-kit download`, one row per case.

Every row runs the real command against a local HTTP server on 127.0.0.1 (or a local
``--from`` folder) and checks the contract: the exit code, exactly one stderr line
``error: ...`` naming the URL, file or folder, and what is left in ROOT (nothing, or only a
resumable ``NAME.part``). Rows marked ``rerun`` then remove the fault and check that a second
run completes, resuming the partial file with HTTP ``Range``. The wording of messages is
left to the command; only what the contract promises is asserted.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gtsrb_kit.cli import app
from test_download import ARCHIVES, TRAIN

REPO = Path(__file__).resolve().parents[1]
GOOD = ARCHIVES[TRAIN]
MEMBERS = "GTSRB/Final_Training/Images/00000/"


# --------------------------------------------------------------------------- the server


class Server:
    """Serves ``files[name]`` under ``/m/NAME``, misbehaving as ``flags`` say (cleared to fix it).

    Flags: ``drop`` (half the body, then close), ``stall`` (half, then silence), ``html``,
    ``404``/``500``/``416`` (that status on every request), ``short``/``long`` (a Content-Length
    100 bytes below/above the truth). Ranges are honoured (416 past the end).
    """

    def __init__(self) -> None:
        self.files = {TRAIN: GOOD}
        self.flags: set[str] = set()
        self.requests: list[str | None] = []
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/m/"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.requests.append(self.headers.get("Range"))
                server.answer(self)

        return Handler

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        data, flags = self.files.get(h.path.rsplit("/", 1)[-1]), self.flags
        start = int(h.headers["Range"].split("=")[1].split("-")[0]) if h.headers.get("Range") else 0
        status = next((int(f) for f in ("404", "500", "416") if f in flags), None)
        if data is None or status or start >= len(data or b"x"):
            code = 404 if data is None else status or 416
            h.send_response(code)
            h.send_header("Content-Range", f"bytes */{len(data or b'')}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = b"<html><body>Please log in</body></html>" if "html" in flags else data[start:]
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Type", "text/html" if "html" in flags else "application/zip")
        lie = 100 if "long" in flags else -100 if "short" in flags else 0
        h.send_header("Content-Length", str(len(body) + lie))
        h.end_headers()
        half = "drop" in flags or "stall" in flags
        h.wfile.write(body[: len(body) // 2] if half else body)
        h.wfile.flush()
        if "stall" in flags:
            self.release.wait(20)
        h.close_connection = True

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- the cases


@dataclass
class Ctx:
    """One case's world: ``tmp`` (scratch), ``root`` (the target), the server, cleanups."""

    tmp: Path
    server: Server
    root: Path = Path()
    cleanup: list[Callable[[], object]] = field(default_factory=list)
    fix: Callable[[], object] | None = None


@dataclass(frozen=True)
class Case:
    setup: Callable[[Ctx], list[str]]  # prepares the fault; returns extra options
    names: Callable[[Ctx], str]  # what the error line must name
    code: int = 1  # exit code of the first run
    part: bool = False  # ROOT keeps a resumable archives/NAME.part (and nothing else)
    rerun: bool = False  # after ctx.fix (default: clear the server's flags) a rerun completes
    kill: bool = False  # the first run is SIGKILLed mid-download instead (no exit code, no message)


def _url(ctx: Ctx) -> str:
    return ctx.server.url + TRAIN


def _root(ctx: Ctx) -> str:
    return str(ctx.root)


def _serve(data: bytes | None = None, *flags: str, options: tuple[str, ...] = ()) -> Callable[[Ctx], list[str]]:
    """Serve ``data`` (default: the good archive) with ``flags``; the run gets ``options``."""

    def setup(ctx: Ctx) -> list[str]:
        if data is not None:
            ctx.server.files[TRAIN] = data
        ctx.server.flags.update(flags)
        return list(options)

    return setup


def _zip(*members: tuple[str | zipfile.ZipInfo, bytes], layout: bool = True) -> bytes:
    """A zip of ``members``, after those of the official layout (one image, one CSV) unless not ``layout``."""
    official = [(MEMBERS + "00000_00000.ppm", b"P6\n1 1\n255\n\0\0\0"), (MEMBERS + "GT-00000.csv", b"Filename\r\n")]
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        warnings.simplefilter("ignore")  # duplicate names are the point of one case
        for name, data in (official if layout else []) + list(members):
            z.writestr(name, data)
    return buf.getvalue()


def _symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(MEMBERS + "link.ppm")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _checksum(ctx: Ctx) -> list[str]:
    sums = ctx.tmp / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  {TRAIN}\n")
    return ["--checksums", str(sums)]


def _stale_part(ctx: Ctx) -> list[str]:
    (ctx.root / "archives").mkdir(parents=True)
    (ctx.root / "archives" / f"{TRAIN}.part").write_bytes(bytes(len(GOOD) + 10))
    ctx.server.flags.add("416")
    return ["--retries", "1"]


def _from(make: Callable[[Path], object]) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        make(ctx.tmp / "src")
        return ["--from", str(ctx.tmp / "src")]

    return setup


def _source(ctx: Ctx) -> str:
    return str(ctx.tmp / "src")


def _mount(ctx: Ctx, options: str) -> Path:
    """A tmpfs with ``options`` at ``tmp/fs`` (skips where it cannot be mounted)."""
    where = ctx.tmp / "fs"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    ctx.cleanup.append(lambda: subprocess.run(["umount", "-l", str(where)], check=False))
    ctx.root = where / "root"
    return where


def _read_only(ctx: Ctx) -> list[str]:
    if os.geteuid() != 0:  # a plain user is stopped by the mode bits
        ctx.root = ctx.tmp / "ro" / "root"
        ctx.root.parent.mkdir()
        ctx.root.parent.chmod(0o555)
        ctx.cleanup.append(lambda: ctx.root.parent.chmod(0o755))
        return []
    _mount(ctx, "ro,size=64k")
    return []


def _fill(where: Path, leave: int) -> Path:
    """Fill the file system of ``where`` up to ``leave`` bytes free."""
    fs = os.statvfs(where)
    filler = where / "filler"
    filler.write_bytes(bytes(max(fs.f_bavail * fs.f_frsize - leave, 0)))
    return filler


def _full_disk_download(ctx: Ctx) -> list[str]:
    filler = _fill(_mount(ctx, "size=300k"), 3 * 4096)
    ctx.fix = filler.unlink
    return []


def _full_disk_import(ctx: Ctx) -> list[str]:
    _fill(_mount(ctx, "size=300k"), 3 * 4096)
    return _from(lambda src: (src.mkdir(), (src / TRAIN).write_bytes(GOOD)))(ctx)


CASES = {
    "server-drops-mid-transfer-then-rerun-resumes": Case(_serve(None, "drop"), _url, part=True, rerun=True),
    "server-stalls-timeout-keeps-bytes-then-resumes": Case(
        _serve(None, "stall", options=("--timeout", "0.5")), _url, part=True, rerun=True),
    "sigkill-mid-download-then-rerun-completes": Case(_serve(None, "stall"), _url, part=True, rerun=True, kill=True),
    "wrong-checksum": Case(_checksum, _url),
    "html-page-instead-of-zip": Case(_serve(None, "html"), _url),
    "http-404": Case(_serve(None, "404"), _url),
    "http-500-every-retry": Case(_serve(None, "500", options=("--retries", "1")), _url),
    "http-416-for-a-stale-part": Case(_stale_part, _url),
    "content-length-too-short": Case(_serve(None, "short"), _url),
    "content-length-too-long-then-rerun-completes": Case(_serve(None, "long"), _url, part=True, rerun=True),
    "zip-path-traversal": Case(_serve(_zip(("../x", b"evil"))), _url),
    "zip-absolute-member": Case(_serve(_zip(("/tmp/gtsrb-kit-hostile-abs.txt", b"evil"))), _url),
    "zip-symlink-member": Case(_serve(_zip((_symlink(), b"/etc/passwd"))), _url),
    "zip-bomb": Case(_serve(_zip((MEMBERS + "bomb.ppm", bytes(2 << 20)))), _url),
    "zip-duplicate-members": Case(_serve(_zip((MEMBERS + "GT-00000.csv", b"again"))), _url),
    "zip-truncated": Case(_serve(GOOD[: len(GOOD) * 2 // 3]), _url),
    "not-a-zip": Case(_serve(b"\x00 this is no archive " * 64), _url),
    "zip-wrong-layout": Case(_serve(_zip(("readme.txt", b"not GTSRB"), layout=False)), _url),
    "from-missing-folder": Case(_from(lambda src: None), _source, code=2),
    "from-folder-without-archives": Case(_from(Path.mkdir), _source),
    "read-only-destination": Case(_read_only, _root),
    "full-disk-during-download-then-rerun-resumes": Case(_full_disk_download, _root, part=True, rerun=True),
    "full-disk-importing-from-folder": Case(_full_disk_import, _root),
}


# --------------------------------------------------------------------------- the runner


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Ctx]:
    world = Ctx(tmp_path, Server(), tmp_path / "root")
    yield world
    world.server.stop()
    for undo in reversed(world.cleanup):
        undo()


def _args(ctx: Ctx, extra: list[str]) -> list[str]:
    return ["download", "--root", str(ctx.root), "--mirror", ctx.server.url, "--no-official", "--only", "train",
            "--retries", "0", "--retry-delay", "0", "--timeout", "5", "--no-progress", *extra]


def _killed(ctx: Ctx, args: list[str]) -> None:
    """Run the command in a child, SIGKILL it once part of the archive is on disk."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-m", "gtsrb_kit", *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    part, deadline = ctx.root / "archives" / f"{TRAIN}.part", time.monotonic() + 15
    while not (part.is_file() and part.stat().st_size) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL


def _error_line(result: object, code: int, name: str) -> str:
    lines = result.stderr.splitlines()  # type: ignore[attr-defined]
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr  # type: ignore[attr-defined]
    assert name in lines[0], lines[0]
    return lines[0]


def _beside(ctx: Ctx) -> list[str]:
    return sorted(p.name for p in ctx.tmp.iterdir() if p != ctx.root)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()) if folder.is_dir() else []


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_hostile_download(ctx: Ctx, case: Case) -> None:
    extra = case.setup(ctx)
    outside = _beside(ctx)
    args = _args(ctx, extra)
    if case.kill:
        _killed(ctx, args)
    else:
        _error_line(CliRunner().invoke(app, args), case.code, case.names(ctx))
    assert _beside(ctx) == outside  # nothing written outside ROOT
    assert not Path("/tmp/gtsrb-kit-hostile-abs.txt").exists()
    part = ctx.root / "archives" / f"{TRAIN}.part"
    assert [f for f in _files(ctx.root) if f != "filler"] == ([f"archives/{TRAIN}.part"] if case.part else [])
    if not case.rerun:
        return
    kept = part.stat().st_size
    assert 0 < kept <= len(GOOD)
    (ctx.fix or ctx.server.flags.clear)()
    ctx.server.requests.clear()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert ctx.server.requests[0] == f"bytes={kept}-"  # resumed, not started over
    assert (ctx.root / "archives" / TRAIN).read_bytes() == GOOD
    assert (ctx.root / MEMBERS / "GT-00000.csv").is_file()
