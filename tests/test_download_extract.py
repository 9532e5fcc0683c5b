"""Safe extraction (zip-slip, symlinks, zip bombs, damaged members) and the real-archive round trip."""

from __future__ import annotations

import functools
import stat
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gtsrb_kit.catalog import read_catalog
from gtsrb_kit.cli import app
from gtsrb_kit.errors import DownloadError
from gtsrb_kit.extract import ExtractLimits, check_layout, extract_zip, safe_member_name, verify_zip


def _zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return path


def _all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """``tmp_path/box/dest`` is the target; anything written outside ``dest`` lands in ``box``."""
    (tmp_path / "box" / "dest").mkdir(parents=True)
    return tmp_path / "box"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.txt", "points outside the target folder"),
        ("GTSRB/../../evil.txt", "points outside the target folder"),
        ("..\\evil.txt", "points outside the target folder"),
        ("/tmp/abs-evil.txt", "has an absolute path"),
        ("C:/evil.txt", "has an absolute path"),
    ],
)
def test_zip_slip_is_rejected_before_anything_is_written(box: Path, name: str, reason: str) -> None:
    archive = _zip(box.parent / "evil.zip", [("GTSRB/good.txt", b"fine"), (name, b"evil")])
    with pytest.raises(DownloadError, match=reason) as info:
        extract_zip(archive, box / "dest")
    assert str(archive) in str(info.value) and "refusing to extract" in str(info.value)
    assert _all_files(box) == ["dest"]  # not even the good member
    assert not Path("/tmp/abs-evil.txt").exists()


def test_symlink_and_special_members_are_rejected(box: Path) -> None:
    link = zipfile.ZipInfo("GTSRB/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(box.parent / "link.zip", [("GTSRB/a.txt", b"a"), (link, b"/etc/passwd")])
    with pytest.raises(DownloadError, match="'GTSRB/link' is a symbolic link"):
        extract_zip(archive, box / "dest")
    fifo = zipfile.ZipInfo("GTSRB/fifo")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    with pytest.raises(DownloadError, match="'GTSRB/fifo' is a special file"):
        extract_zip(_zip(box.parent / "fifo.zip", [(fifo, b"")]), box / "dest")
    assert _all_files(box) == ["dest"]


def test_zip_bombs_are_rejected_by_ratio_and_total_size(box: Path) -> None:
    bomb = _zip(box.parent / "bomb.zip", [("GTSRB/zeros.ppm", bytes(8 << 20))])
    with pytest.raises(DownloadError, match=r"'GTSRB/zeros.ppm' would expand \d+-fold \(more than 100\); .*zip bomb"):
        extract_zip(bomb, box / "dest")
    big = _zip(box.parent / "big.zip", [("a.bin", b"x" * 3000), ("b.bin", b"y" * 3000)], zipfile.ZIP_STORED)
    with pytest.raises(DownloadError, match="members declare 6000 bytes, more than the 5000 allowed"):
        extract_zip(big, box / "dest", limits=ExtractLimits(max_total_bytes=5000))
    with pytest.raises(DownloadError, match="2 members, more than the 1 allowed"):
        verify_zip(big, limits=ExtractLimits(max_members=1))
    assert _all_files(box) == ["dest"]


def test_duplicate_and_encrypted_members_are_rejected(box: Path) -> None:
    dup = _zip(box.parent / "dup.zip", [("GTSRB/a.txt", b"1"), ("GTSRB/./a.txt", b"2")])  # same file once cleaned
    with pytest.raises(DownloadError, match="appears twice"):
        extract_zip(dup, box / "dest")
    archive = _zip(box.parent / "enc.zip", [("GTSRB/secret.txt", b"x")], zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())  # zipfile cannot write encrypted members: set the flag bit by hand
    raw[raw.index(b"PK\x03\x04") + 6] |= 0x1
    raw[raw.index(b"PK\x01\x02") + 8] |= 0x1
    archive.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match="is encrypted"):
        extract_zip(archive, box / "dest")
    assert _all_files(box) == ["dest"]


def test_damaged_member_leaves_nothing_under_a_final_name(box: Path) -> None:
    payload = b"A" * 5000
    archive = _zip(box.parent / "crc.zip", [("GTSRB/Final_Test/Images/ok.ppm", b"ok"), ("GTSRB/Final_Test/Images/bad.ppm", payload)], zipfile.ZIP_STORED)
    raw = archive.read_bytes()
    at = raw.index(payload) + 100
    archive.write_bytes(raw[:at] + b"B" + raw[at + 1:])  # same size, wrong CRC
    with pytest.raises(DownloadError, match=r"member 'GTSRB/Final_Test/Images/bad.ppm' is damaged \(Bad CRC-32"):
        verify_zip(archive)
    with pytest.raises(DownloadError, match="is damaged"):
        extract_zip(archive, box / "dest")
    assert _all_files(box) == ["dest"]  # 'ok.ppm' was staged, never moved into place


def test_truncated_archive_is_a_clear_error(box: Path) -> None:
    archive = _zip(box.parent / "t.zip", [("GTSRB/a.txt", b"a" * 1000)])
    archive.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(DownloadError, match=r"t\.zip: not a valid zip archive \(truncated or damaged: .*\); delete it and download it again"):
        extract_zip(archive, box / "dest")
    assert _all_files(box) == ["dest"]


def test_extraction_merges_into_existing_tree_and_layout_is_checked(box: Path) -> None:
    dest = box / "dest"
    a = _zip(box.parent / "a.zip", [("GTSRB/Final_Test/Images/00000.ppm", b"1"), ("GTSRB/Final_Test/Images/", b"")])
    b = _zip(box.parent / "b.zip", [("GTSRB/Final_Training/Images/00000/x.ppm", b"2"), ("GTSRB/Final_Test/Images/00000.ppm", b"new")])
    assert extract_zip(a, dest) == ["GTSRB/Final_Test/Images/00000.ppm"]
    extract_zip(b, dest, required=["GTSRB/Final_Training/Images/*/*.ppm"])
    assert (dest / "GTSRB/Final_Test/Images/00000.ppm").read_bytes() == b"new"
    assert (dest / "GTSRB/Final_Training/Images/00000/x.ppm").read_bytes() == b"2"
    assert [p.name for p in dest.iterdir()] == ["GTSRB"]  # staging folders are gone
    with pytest.raises(DownloadError, match=r"no member matches 'GT-final_test\.csv'; this is not the expected GTSRB archive"):
        check_layout(["GTSRB/x"], ["GT-final_test.csv"], "a.zip")
    assert safe_member_name("./GTSRB//Final_Test/x.ppm") == "GTSRB/Final_Test/x.ppm"


# --------------------------------------------------------------------------- real archives


@pytest.fixture(scope="module")
def real_mirror(shared_gtsrb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """Real GTSRB data (1 track per class, 50 test images) as the three official archives, served over HTTP."""
    folder = tmp_path_factory.mktemp("real-mirror")
    subprocess.run(
        [sys.executable, str(shared_gtsrb / "materialize.py"), str(folder), "--max-tracks", "1", "--max-test", "50", "--zips"],
        check=True, capture_output=True,
    )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder / "archives"))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder / "archives" / "SHA256SUMS", folder
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.real
def test_real_archives_download_extract_catalog_round_trip(real_mirror: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, sums, original = real_mirror
    root = tmp_path / "root"
    args = ["download", "--root", str(root), "--mirror", url, "--no-official", "--checksums", str(sums), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count(", extracted") == 3
    catalog = read_catalog(root, strict=True, verify="full")
    expected = read_catalog(original, strict=True, verify="none")
    assert catalog["split"].value_counts().to_dict() == {"train": 430, "test": 50}
    assert catalog["class_id"].nunique() == 43
    assert list(catalog["rel_path"]) == list(expected["rel_path"])
    assert list(catalog["class_id"]) == list(expected["class_id"])
    first = catalog["rel_path"].iloc[0]
    assert (root / first).read_bytes() == (original / first).read_bytes()

    dead = ["download", "--root", str(root), "--mirror", "http://127.0.0.1:9/", "--no-official", "--checksums", str(sums)]
    again = CliRunner().invoke(app, dead)  # nothing listens on port 9: the second run must not need it
    assert again.exit_code == 0, again.output
    assert again.stdout.count(": up to date") == 3
