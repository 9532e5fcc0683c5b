"""Downloads against local HTTP servers on 127.0.0.1 (started by the tests), offline imports, CLI."""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gtsrb_kit.catalog import read_catalog
from gtsrb_kit.cli import app
from gtsrb_kit.download import (
    RetryPolicy,
    download_gtsrb,
    fetch_archive,
    official_archives,
    official_base_url,
    read_checksums,
)
from gtsrb_kit.errors import ConfigError, DownloadError

TRAIN, TEST, GT = "GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip"
FAST = RetryPolicy(retries=3, delay=0.001, max_delay=0.01, timeout=5)
HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\r\n"


# --------------------------------------------------------------------------- synthetic archives


def _ppm(rng: np.random.Generator, w: int, h: int) -> bytes:
    return f"P6\n{w} {h}\n255\n".encode() + rng.integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes()


def build_archives(seed: int = 0) -> dict[str, bytes]:
    """Three small archives with the official names and internal layout (2 classes, 3 frames, 4 test)."""
    rng = np.random.default_rng(seed)
    train, test, gt = io.BytesIO(), io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(train, "w", zipfile.ZIP_DEFLATED) as z:
        for cls in range(2):
            rows = []
            for frame in range(3):
                name = f"00000_{frame:05d}.ppm"
                z.writestr(f"GTSRB/Final_Training/Images/{cls:05d}/{name}", _ppm(rng, 40, 36))
                rows.append(f"{name};40;36;5;5;34;30;{cls}\r\n")
            z.writestr(f"GTSRB/Final_Training/Images/{cls:05d}/GT-{cls:05d}.csv", HEADER + "".join(rows))
        z.writestr("GTSRB/Readme-Images.txt", "synthetic\r\n")
    labels = []
    with zipfile.ZipFile(test, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(4):
            z.writestr(f"GTSRB/Final_Test/Images/{i:05d}.ppm", _ppm(rng, 32, 32))
            labels.append(f"{i:05d}.ppm;32;32;5;5;26;26;{i % 2}\r\n")
        unlabeled = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2\r\n"
        z.writestr("GTSRB/Final_Test/Images/GT-final_test.test.csv", unlabeled)
    with zipfile.ZipFile(gt, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("GT-final_test.csv", HEADER + "".join(labels))
    return {TRAIN: train.getvalue(), TEST: test.getvalue(), GT: gt.getvalue()}


ARCHIVES = build_archives()
SUMS = {name: hashlib.sha256(data).hexdigest() for name, data in ARCHIVES.items()}


def write_sums(path: Path, sums: dict[str, str] = SUMS) -> Path:
    path.write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    return path


# --------------------------------------------------------------------------- the test server


class Server:
    """A tiny HTTP server: ``/<mirror>/<name>`` serves ``files[name]`` with per-file misbehaviours.

    ``behave[(mirror, name)]`` (or ``behave[name]``) is a set of: ``404``, ``html`` (text/html
    page), ``html_body`` (octet-stream starting with '<'), ``drop`` (close the connection
    half-way, every time), ``drop_once``, ``ignore_range`` (always 200), ``503_once``.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.behave: dict[object, set[str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.done: set[tuple[str, str]] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.requests.append((self.path, self.headers.get("Range")))
                mirror, _, name = self.path.strip("/").rpartition("/")
                flags = server.behave.get((mirror, name), set()) | server.behave.get(name, set())
                if name not in server.files or "404" in flags:
                    self.send_error(404, "Not Found")
                    return
                if "503_once" in flags and (name, "503") not in server.done:
                    server.done.add((name, "503"))
                    self.send_error(503, "Busy")
                    return
                if "html" in flags:
                    body = b"<html><body>Please log in</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = b"\n<!DOCTYPE html><p>moved</p>" if "html_body" in flags else server.files[name]
                start = 0
                rng = self.headers.get("Range")
                if rng and "ignore_range" not in flags:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                drop = "drop" in flags or ("drop_once" in flags and (name, "drop") not in server.done)
                if drop:
                    server.done.add((name, "drop"))
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, mirror: str = "m") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mirror}/"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(ARCHIVES)
    yield srv
    srv.stop()


def _get(srv: Server, root: Path, **kw: object) -> list:
    kw.setdefault("mirrors", [srv.url()])
    kw.setdefault("official", False)
    kw.setdefault("checksums", SUMS)
    kw.setdefault("policy", FAST)
    return download_gtsrb(root, **kw)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- the data table


def test_archive_table_is_data_and_training_checksum_is_not_invented() -> None:
    specs = {s.name: s for s in official_archives()}
    assert list(specs) == [TRAIN, TEST, GT]
    assert specs[TRAIN].sha256 is None and specs[TRAIN].md5 is None
    assert "NOT known" in specs[TRAIN].checksum_note
    assert specs[TEST].sha256 == "48ba6fab7e877eb64eaf8de99035b0aaecfbc279bee23e35deca4ac1d0a837fa"
    assert specs[TEST].md5 == "c7e4e6327067d32654124b0fe9e82185"
    assert specs[GT].sha256 == "f94e5a7614d75845c74c04ddb26b8796b9e483f43541dd95dd5b726504e16d6d"
    assert specs[GT].md5 == "fe31e9c9270bbcd7b84b7f21a9d9d9e5"
    assert official_base_url() == "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
    assert [s.name for s in official_archives(["train"])] == [TRAIN]
    with pytest.raises(ConfigError, match="unknown part 'meta'"):
        official_archives(["meta"])


def test_read_checksums_parses_sha256sum_format_and_rejects_garbage(tmp_path: Path) -> None:
    good = tmp_path / "SHA256SUMS"
    good.write_text(f"# comment\n\n{'A' * 64}  sub/{TRAIN}\n{'b' * 64} *{TEST}\n")
    assert read_checksums(good) == {TRAIN: "a" * 64, TEST: "b" * 64}
    bad = tmp_path / "BAD"
    bad.write_text(f"{'a' * 64}  {TRAIN}\nnot a checksum line\n")
    with pytest.raises(ConfigError, match=r"BAD:2: expected 'SHA256HEX  NAME'"):
        read_checksums(bad)


# --------------------------------------------------------------------------- happy path, idempotence


def test_download_extract_read_catalog_then_second_run_makes_no_request(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "root"
    calls: list[tuple[str, int, int | None]] = []
    results = _get(server, root, progress=lambda d, c, t: calls.append((d, c, t)))
    assert [(r.name, r.action, r.extracted) for r in results] == [(TRAIN, "downloaded", True), (TEST, "downloaded", True), (GT, "downloaded", True)]
    assert all(r.checksum_verified and r.sha256 == SUMS[r.name] for r in results)
    assert results[0].source == server.url() + TRAIN
    assert len(server.requests) == 3
    for name, data in ARCHIVES.items():
        assert (root / "archives" / name).read_bytes() == data
    assert not list((root / "archives").glob("*.part"))
    assert not list(root.glob(".extract-*"))
    assert (f"download {TRAIN}", len(ARCHIVES[TRAIN]), len(ARCHIVES[TRAIN])) in calls

    catalog = read_catalog(root, strict=True)
    assert catalog["split"].value_counts().to_dict() == {"train": 6, "test": 4}
    assert sorted(catalog.loc[catalog.split == "test", "class_id"]) == [0, 0, 1, 1]

    again = _get(server, root)
    assert [r.action for r in again] == ["up to date"] * 3
    assert len(server.requests) == 3  # nothing fetched the second time
    server.stop()
    assert [r.action for r in _get(server, root)] == ["up to date"] * 3


def test_only_train_and_no_keep_archives(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "root"
    results = _get(server, root, parts=["train"], keep_archives=False)
    assert [(r.name, r.archive) for r in results] == [(TRAIN, None)]
    assert [p for p, _ in server.requests] == [f"/m/{TRAIN}"]
    assert _leftovers(root / "archives") == []
    assert (root / "GTSRB/Final_Training/Images/00001/GT-00001.csv").is_file()
    assert not (root / "GTSRB/Final_Test").exists()
    assert [r.action for r in _get(server, root, parts=["train"], keep_archives=False)] == ["up to date"]
    assert len(server.requests) == 1


def test_no_extract_keeps_verified_archives_and_reuses_them_offline(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert [r.action for r in _get(server, root, extract=False)] == ["downloaded"] * 3
    assert not (root / "GTSRB").exists()
    server.stop()
    results = _get(server, root)  # server gone: the kept archives are verified and extracted
    assert [(r.action, r.extracted) for r in results] == [("verified", True)] * 3
    assert len(read_catalog(root)) == 10


def test_training_archive_without_checksum_is_checked_by_zip_integrity(server: Server, tmp_path: Path) -> None:
    results = _get(server, tmp_path / "r", parts=["train"], checksums=None)
    assert results[0].checksum_verified is False
    assert results[0].sha256 == SUMS[TRAIN]


# --------------------------------------------------------------------------- resume, retries


def test_dropped_connection_is_resumed_with_range(server: Server, tmp_path: Path) -> None:
    server.behave[TRAIN] = {"drop_once"}
    root = tmp_path / "root"
    _get(server, root, parts=["train"])
    half = len(ARCHIVES[TRAIN]) // 2
    assert server.requests == [(f"/m/{TRAIN}", None), (f"/m/{TRAIN}", f"bytes={half}-")]
    assert (root / "archives" / TRAIN).read_bytes() == ARCHIVES[TRAIN]


def test_server_ignoring_range_restarts_the_file_cleanly(server: Server, tmp_path: Path) -> None:
    server.behave[TRAIN] = {"drop_once", "ignore_range"}
    root = tmp_path / "root"
    results = _get(server, root, parts=["train"])
    assert server.requests[1][1] is not None  # a resume was asked for and answered with 200
    assert results[0].sha256 == SUMS[TRAIN]
    assert (root / "archives" / TRAIN).read_bytes() == ARCHIVES[TRAIN]


def test_killed_download_leaves_only_a_part_file_and_a_later_run_resumes_it(server: Server, tmp_path: Path) -> None:
    server.behave[TEST] = {"drop"}
    root = tmp_path / "root"
    with pytest.raises(DownloadError) as info:
        _get(server, root, parts=["test"], policy=RetryPolicy(retries=1, delay=0.001, timeout=5))
    message = str(info.value)
    assert "\n" not in message
    assert f"all mirrors failed for {TEST}" in message and "gave up after 2 attempts" in message
    assert "--mirror" in message and "--from" in message
    assert _leftovers(root / "archives") == [f"{TEST}.part"]  # never a complete-looking name
    assert not (root / "GTSRB").exists()
    part_size = (root / "archives" / f"{TEST}.part").stat().st_size
    assert 0 < part_size < len(ARCHIVES[TEST])

    server.behave.clear()
    server.requests.clear()
    _get(server, root, parts=["test"])
    assert server.requests[0] == (f"/m/{TEST}", f"bytes={part_size}-")
    assert (root / "archives" / TEST).read_bytes() == ARCHIVES[TEST]
    assert len(read_catalog(root)) == 4


def test_transient_server_error_is_retried(server: Server, tmp_path: Path) -> None:
    server.behave[GT] = {"503_once"}
    _get(server, tmp_path / "r", parts=["test"])
    assert [p for p, _ in server.requests].count(f"/m/{GT}") == 2


def test_bad_partial_data_is_refetched_from_scratch_once(server: Server, tmp_path: Path) -> None:
    archives = tmp_path / "root" / "archives"
    archives.mkdir(parents=True)
    (archives / f"{GT}.part").write_bytes(b"garbage that is not the start of the zip")
    _get(server, tmp_path / "root", parts=["test"])
    gt_requests = [r for p, r in server.requests if p.endswith(GT)]
    assert gt_requests[0] is not None and gt_requests[1] is None
    assert (archives / GT).read_bytes() == ARCHIVES[GT]


# --------------------------------------------------------------------------- wrong content, mirrors


@pytest.mark.parametrize("flag", ["html", "html_body"])
def test_html_page_instead_of_archive_is_rejected(server: Server, tmp_path: Path, flag: str) -> None:
    server.behave[GT] = {flag}
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match=rf"all mirrors failed for {GT}: http://127\.0\.0\.1:\d+/m/{GT}: served an HTML page"):
        _get(server, root, parts=["test"])
    assert _leftovers(root / "archives") == [TEST]
    assert len([p for p, _ in server.requests if p.endswith(GT)]) == 1  # not retried: it is not transient


def test_wrong_bytes_fail_the_checksum_and_leave_no_file(server: Server, tmp_path: Path) -> None:
    server.files[GT] = ARCHIVES[GT][:-1] + b"X"
    root = tmp_path / "root"
    with pytest.raises(DownloadError) as info:
        _get(server, root, parts=["test"])
    assert f"sha256 {hashlib.sha256(server.files[GT]).hexdigest()} does not match the expected {SUMS[GT]}" in str(info.value)
    assert "--checksums" in str(info.value)
    assert _leftovers(root / "archives") == [TEST]
    assert not (root / "GT-final_test.csv").exists()


def test_builtin_checksums_reject_repacked_archives(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=f"does not match the expected 48ba6fab.* for {TEST}"):
        _get(server, tmp_path / "r", parts=["test"], checksums=None)


def test_404_on_first_mirror_then_second_mirror_is_used(server: Server, tmp_path: Path) -> None:
    server.behave[("a", TRAIN)] = {"404"}
    results = _get(server, tmp_path / "r", parts=["train"], mirrors=[server.url("a"), server.url("b")])
    assert results[0].source == server.url("b") + TRAIN
    assert [p for p, _ in server.requests] == [f"/a/{TRAIN}", f"/b/{TRAIN}"]


def test_truncated_archive_without_checksum_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    server.files[TRAIN] = ARCHIVES[TRAIN][: len(ARCHIVES[TRAIN]) * 2 // 3]
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match=rf"failed for {TRAIN}: .*not a valid zip archive \(truncated or damaged"):
        _get(server, root, parts=["train"], checksums=None)
    assert _leftovers(root / "archives") == []


def test_unreachable_mirror_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}/x/"
    spec = official_archives(["test"])[1]
    with pytest.raises(DownloadError, match=rf"all mirrors failed for {GT}: {url}{GT}: .*refused.*gave up after 2 attempts"):
        fetch_archive(spec, [url + GT], tmp_path / GT, policy=RetryPolicy(retries=1, delay=0.001, timeout=2))
    assert not (tmp_path / GT).exists()


def test_file_url_mirror_works(tmp_path: Path) -> None:
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / GT).write_bytes(ARCHIVES[GT])
    spec = official_archives(["test"])[1]
    url, sha, verified = fetch_archive(
        spec.__class__(**{**spec.__dict__, "sha256": SUMS[GT]}), [folder.as_uri() + "/" + GT], tmp_path / GT, policy=FAST
    )
    assert sha == SUMS[GT] and verified and (tmp_path / GT).read_bytes() == ARCHIVES[GT]
    with pytest.raises(DownloadError, match="No such file or directory") as info:
        fetch_archive(spec, [folder.as_uri() + "/missing.zip"], tmp_path / "missing.zip", policy=FAST)
    assert "gave up" not in str(info.value)  # a missing file is not retried


# --------------------------------------------------------------------------- offline imports


def _archive_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, data in ARCHIVES.items():
        (path / name).write_bytes(data)
    write_sums(path / "SHA256SUMS")
    return path


def test_from_folder_of_archives_and_from_extracted_tree(tmp_path: Path) -> None:
    folder = _archive_folder(tmp_path / "dl" / "archives")
    root = tmp_path / "root"
    results = download_gtsrb(root, source=folder.parent, checksums=folder / "SHA256SUMS", policy=FAST)
    assert [(r.action, r.source) for r in results] == [("imported", str(folder / n)) for n in ARCHIVES]
    assert sorted(p.name for p in (root / "archives").iterdir()) == sorted(ARCHIVES)
    assert len(read_catalog(root)) == 10

    tree_copy = tmp_path / "copy"
    results = download_gtsrb(tree_copy, source=root, checksums=SUMS)  # root holds archives/: they win
    assert all(r.action == "imported" for r in results)

    tree = tmp_path / "tree-only"  # an extracted tree without archives
    shutil.copytree(root / "GTSRB", tree / "GTSRB")
    shutil.copyfile(root / "GT-final_test.csv", tree / "GT-final_test.csv")
    target = tmp_path / "from-tree"
    results = download_gtsrb(target, source=tree)
    assert [(r.action, r.extracted, r.archive) for r in results] == [("imported", True, None)] * 3
    assert len(read_catalog(target, strict=True)) == 10
    assert not list(target.glob(".extract-*"))
    assert [r.action for r in download_gtsrb(target, source=tree)] == ["up to date"] * 3


def test_from_folder_missing_an_archive_says_what_to_do(tmp_path: Path) -> None:
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / TRAIN).write_bytes(ARCHIVES[TRAIN])
    with pytest.raises(DownloadError, match=f"--from {folder}: neither {TEST} .* found; add it, or choose the part with --only"):
        download_gtsrb(tmp_path / "root", source=folder, checksums=SUMS)
    assert (tmp_path / "root" / "archives" / TRAIN).is_file()  # what was there was imported before the error
    assert [r.action for r in download_gtsrb(tmp_path / "other", source=folder / TRAIN, parts=["train"])] == ["imported"]


def test_damaged_kept_archive_is_replaced(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "archives").mkdir(parents=True)
    (root / "archives" / GT).write_bytes(b"PK\x03\x04 not really")
    results = _get(server, root, parts=["test"])
    assert results[1].action == "downloaded" and results[1].notes and "removed a bad" in results[1].notes[0]
    assert (root / "archives" / GT).read_bytes() == ARCHIVES[GT]


# --------------------------------------------------------------------------- CLI


runner = CliRunner()


def _failure(result) -> tuple[int, str]:
    """Exit code and one-line message (without the newline) of a failed command."""
    assert result.exit_code != 0, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.exit_code, result.stderr.rstrip("\n")


def test_cli_download_with_checksums_override_then_up_to_date(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "root"
    sums = write_sums(tmp_path / "SHA256SUMS")
    args = ["download", "--root", str(root), "--mirror", server.url(), "--no-official", "--retry-delay", "0.001", "--no-progress"]
    code, message = _failure(runner.invoke(app, [*args, "--only", "test"]))
    assert code == 1
    assert f"all mirrors failed for {TEST}" in message and "--checksums" in message
    assert not (root / "archives" / TEST).exists()

    ok = runner.invoke(app, [*args, "--checksums", str(sums)])
    assert ok.exit_code == 0, ok.output
    assert f"{TRAIN}: downloaded from {server.url()}{TRAIN}, sha256 {SUMS[TRAIN]}, extracted" in ok.stdout
    assert f"{root}: official GTSRB layout ready" in ok.stdout
    assert len(read_catalog(root)) == 10
    before = len(server.requests)
    again = runner.invoke(app, [*args, "--checksums", str(sums)])
    assert again.exit_code == 0 and again.stdout.count(": up to date") == 3
    assert len(server.requests) == before


def test_cli_from_folder_is_offline_and_root_env_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _archive_folder(tmp_path / "dl")
    root = tmp_path / "envroot"
    monkeypatch.setenv("GTSRB_KIT_ROOT", str(root))
    result = runner.invoke(app, ["download", "--from", str(folder), "--checksums", str(folder / "SHA256SUMS"), "--no-keep-archives"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("imported from") == 3
    assert _leftovers(root / "archives") == []
    assert len(read_catalog(root)) == 10


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--no-official"], 2, "--no-official needs at least one --mirror URL"),
        (["--mirror", "ftp://example.org/x/"], 2, "is not an http://, https:// or file:// URL"),
        (["--from", "/nonexistent/folder"], 2, "/nonexistent/folder: no such file or folder"),
        (["--checksums", "/nonexistent/SUMS"], 2, "checksum file not found"),
    ],
)
def test_cli_bad_options_give_one_line_errors(tmp_path: Path, args: list[str], code: int, text: str) -> None:
    got_code, message = _failure(runner.invoke(app, ["download", "--root", str(tmp_path / "r"), *args]))
    assert got_code == code
    assert text in message and "\n" not in message
    assert not (tmp_path / "r").exists()
