"""Hostile inputs to catalog, stats, cook and info: one case per row.

Every case builds its broken input in ``tmp_path`` and runs the CLI. An error case asserts exit
code 1, exactly one stderr line starting with ``error: `` that names the file (or folder), and
the state of the output folder (nothing half-written). A skip case asserts that the command
succeeds and reports the skip. The faults (full disk, SIGKILL mid-cook, two cooks at once)
follow the table.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gtsrb_kit.cli import app
from gtsrb_kit.store import read_info

REPO = Path(__file__).resolve().parents[1]
W, H = 12, 11  # every source image (ROI 1,1 .. 9,8)
TRAIN_CSV = "GTSRB/Final_Training/Images/{c:05d}/GT-{c:05d}.csv"


# --------------------------------------------------------------------------- tiny trees

def _pixels(seed: int, w: int = W, h: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ppm(seed: int) -> bytes:
    return b"P6\n%d %d\n255\n" % (W, H) + _pixels(seed).tobytes()


def _encoded(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def official(root: Path, classes: tuple[int, ...] = (0, 1)) -> Path:
    """2 tracks x 2 frames per class, 2 test images per class, 12x11 PPMs."""
    seed = 0
    for c in classes:
        folder = root / f"GTSRB/Final_Training/Images/{c:05d}"
        folder.mkdir(parents=True)
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for track in range(2):
            for frame in range(2):
                name = f"{track:05d}_{frame:05d}.ppm"
                (folder / name).write_bytes(_ppm(seed := seed + 1))
                rows.append(f"{name};{W};{H};1;1;9;8;{c}")
        (folder / f"GT-{c:05d}.csv").write_text("\n".join(rows) + "\n")
    test = root / "GTSRB/Final_Test/Images"
    test.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, c in enumerate(c for c in classes for _ in range(2)):
        (test / f"{i:05d}.ppm").write_bytes(_ppm(1000 + i))
        rows.append(f"{i:05d}.ppm;{W};{H};1;1;9;8;{c}")
    (root / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return root


def kaggle(root: Path, classes: tuple[int, ...] = (0, 1)) -> Path:
    """The Kaggle layout of the same tree (PNG files, Train.csv/Test.csv)."""
    header = "Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path"
    train, test, seed = [header], [header], 0
    for c in classes:
        (root / f"Train/{c}").mkdir(parents=True)
        for track in range(2):
            for frame in range(2):
                rel = f"Train/{c}/{c:05d}_{track:05d}_{frame:05d}.png"
                (root / rel).write_bytes(_encoded(Image.fromarray(_pixels(seed := seed + 1)), "PNG"))
                train.append(f"{W},{H},1,1,9,8,{c},{rel}")
    (root / "Test").mkdir()
    for i, c in enumerate(c for c in classes for _ in range(2)):
        (root / f"Test/{i:05d}.png").write_bytes(_encoded(Image.fromarray(_pixels(1000 + i)), "PNG"))
        test.append(f"{W},{H},1,1,9,8,{c},Test/{i:05d}.png")
    (root / "Train.csv").write_text("\n".join(train) + "\n")
    (root / "Test.csv").write_text("\n".join(test) + "\n")
    return root


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


def _append_line(path: Path, line_no: int) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[line_no]]) + "\n")


# --------------------------------------------------------------------------- broken images

FIRST_IMAGE = "GTSRB/Final_Training/Images/00000/00000_00000.ppm"


def _png_bad_crc() -> bytes:
    data = bytearray(_encoded(Image.fromarray(_pixels(1)), "PNG"))
    data[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(data)


BROKEN_IMAGES: dict[str, Callable[[], bytes]] = {
    "truncated-ppm": lambda: _ppm(1)[:60],
    "ppm-header-huge": lambda: b"P6\n100000 100000\n255\n" + bytes(64),
    "zero-bytes": lambda: b"",
    "ppm-maxval-0": lambda: b"P6\n%d %d\n0\n" % (W, H) + bytes(W * H * 3),
    "ppm-zero-width": lambda: b"P6\n0 %d\n255\n" % H,
    "png-bad-crc": _png_bad_crc,
    "truncated-png": lambda: _encoded(Image.fromarray(_pixels(1)), "PNG")[:80],
    "truncated-jpeg": lambda: _encoded(Image.fromarray(_pixels(1)), "JPEG")[:300],
    "decompression-bomb": lambda: _encoded(Image.new("1", (20000, 20000)), "PNG"),
    "size-disagrees-with-csv": lambda: _encoded(Image.fromarray(_pixels(1, w=W + 3)), "PNG"),
    "text-file": lambda: b"not an image at all\n",
}

# Unusual but valid images: decoded to RGB, nothing skipped.
ODD_IMAGES: dict[str, Callable[[], bytes]] = {
    "png-16-bit": lambda: _encoded(Image.fromarray((_pixels(1)[..., 0].astype(np.uint16) * 257)), "PNG"),
    "png-palette": lambda: _encoded(Image.fromarray(_pixels(1)).convert("P"), "PNG"),
    "png-la": lambda: _encoded(Image.fromarray(_pixels(1)).convert("LA"), "PNG"),
    "jpeg-cmyk": lambda: _encoded(Image.fromarray(_pixels(1)).convert("CMYK"), "JPEG"),
    "ppm-maxval-65535": lambda: b"P6\n%d %d\n65535\n" % (W, H) + bytes(W * H * 6),
}


# --------------------------------------------------------------------------- cooked files

def _cook_tiny(tmp_path: Path, mode: str = "L") -> Path:
    root = official(tmp_path / "tree")
    result = CliRunner().invoke(app, ["cook", "--root", str(root), "--out", str(tmp_path / "data"),
                                      "--size", "8", "--mode", mode, "--workers", "1"])
    assert result.exit_code == 0, result.output
    return tmp_path / "data" / f"set-8x8-{mode}.h5"


def _damage_chunk(path: Path) -> None:
    with h5py.File(path, "r") as handle:
        info = handle["x_train"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xff" * 8)


def _h5_edit(action: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        with h5py.File(path, "r+") as handle:
            action(handle)
    return edit


def _set_attr(name: str, value: object) -> Callable[[Path], None]:
    return _h5_edit(lambda h: h.attrs.__setitem__(name, value))


def _labels_out_of_range(handle: h5py.File) -> None:
    y = handle["y_train"][...]
    y[0] = 99
    del handle["y_train"]
    handle["y_train"] = y


COOKED_DAMAGE: dict[str, Callable[[Path], None]] = {
    "damaged-compressed-chunk": _damage_chunk,
    "missing-y_train": _h5_edit(lambda h: h.__delitem__("y_train")),
    "missing-path_test": _h5_edit(lambda h: h.__delitem__("path_test")),
    "labels-out-of-range": _h5_edit(_labels_out_of_range),
    "attr-size-is-string": _set_attr("size", "8"),
    "attr-class_names-not-json": _set_attr("class_names", "[not json"),
    "attr-recipe-not-json": _set_attr("recipe", "{oops"),
    "truncated-file": lambda p: p.write_bytes(p.read_bytes()[:4000]),
    "not-hdf5": lambda p: p.write_text("hello, I am not HDF5\n"),
}


# --------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], list[str]]  # makes the input under tmp_path, returns the CLI arguments
    exit_code: int = 1
    names: str = ""  # what the error line must name ('' = a skip case: must succeed and report it)
    skip_word: str = "skipped"


def _stats(root: Path, tmp: Path, *extra: str) -> list[str]:
    return ["stats", "--root", str(root), "--out", str(tmp / "out"), "--no-plots", "--workers", "1", *extra]


def _cook(root: Path, tmp: Path, *extra: str) -> list[str]:
    return ["cook", "--root", str(root), "--out", str(tmp / "out"), "--size", "8", "--mode", "RGB",
            "--workers", "1", *extra]


def _catalog_case(layout: str, damage: Callable[[Path], None], *, strict: bool = True) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        root = (official if layout == "official" else kaggle)(tmp / "tree")
        damage(root)
        return _stats(root, tmp, *(["--strict"] if strict else []))
    return build


def _image_case(data: Callable[[], bytes], *, strict: bool = False) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        root = official(tmp / "tree")
        (root / FIRST_IMAGE).write_bytes(data())
        return _cook(root, tmp, *(["--strict"] if strict else []))
    return build


def _info_case(damage: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = _cook_tiny(tmp)
        damage(path)
        return ["info", str(path)]
    return build


def _no_csv(root: Path) -> None:
    (root / TRAIN_CSV.format(c=0)).unlink()


def _kaggle_no_train_csv(tmp: Path) -> list[str]:
    root = kaggle(tmp / "tree")
    (root / "Train.csv").unlink()
    return _cook(root, tmp)


def _roi_outside(root: Path) -> None:
    _edit(root / TRAIN_CSV.format(c=0), f"00000_00000.ppm;{W};{H};1;1;9;8", f"00000_00000.ppm;{W};{H};1;1;40;8")


def _image_is_folder(root: Path) -> None:
    (root / FIRST_IMAGE).unlink()
    (root / FIRST_IMAGE).mkdir()


def _out_is_file(tmp: Path) -> list[str]:
    root = official(tmp / "tree")
    (tmp / "out").write_text("a file")
    return _cook(root, tmp)


def _info_empty_folder(tmp: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return ["info", str(tmp / "empty")]


CASES: list[Case] = [
    # catalog, official layout (read by stats --strict)
    Case("catalog-official-missing-class-csv", _catalog_case("official", _no_csv), names="GT-00000.csv"),
    Case("catalog-official-missing-column", _catalog_case(
        "official", lambda r: _edit(r / TRAIN_CSV.format(c=0), ";ClassId", ";Klass")), names="GT-00000.csv"),
    Case("catalog-official-non-numeric-width", _catalog_case(
        "official", lambda r: _edit(r / TRAIN_CSV.format(c=1), f";{W};", ";abc;")), names="00001/00000_00000.ppm"),
    Case("catalog-official-class-out-of-range", _catalog_case(
        "official", lambda r: _edit(r / "GT-final_test.csv", ";9;8;0", ";9;8;99")), names="Final_Test"),
    Case("catalog-official-duplicate-row", _catalog_case(
        "official", lambda r: _append_line(r / TRAIN_CSV.format(c=0), 1)), names="00000_00000.ppm"),
    Case("catalog-official-missing-image", _catalog_case(
        "official", lambda r: (r / FIRST_IMAGE).unlink()), names="00000_00000.ppm"),
    Case("catalog-official-missing-test-labels", _catalog_case(
        "official", lambda r: (r / "GT-final_test.csv").unlink()), names="GT-final_test.csv"),
    Case("catalog-official-class-disagrees-with-folder", _catalog_case(
        "official", lambda r: _edit(r / TRAIN_CSV.format(c=1), ";9;8;1", ";9;8;0")), names="00001/00000_00000.ppm"),
    Case("catalog-official-binary-csv", _catalog_case(
        "official", lambda r: (r / TRAIN_CSV.format(c=0)).write_bytes(b"\xff\xfe\x00\x81" * 50)),
        names="GT-00000.csv"),
    Case("catalog-official-roi-outside-image", _catalog_case("official", _roi_outside), names="00000_00000.ppm"),
    Case("catalog-official-missing-image-skipped", _catalog_case(
        "official", lambda r: (r / FIRST_IMAGE).unlink(), strict=False), exit_code=0),
    # catalog, Kaggle layout
    Case("catalog-kaggle-missing-train-csv", _kaggle_no_train_csv, names="tree"),
    Case("catalog-kaggle-missing-column", _catalog_case(
        "kaggle", lambda r: _edit(r / "Train.csv", ",Path", ",Where")), names="Train.csv"),
    Case("catalog-kaggle-non-numeric-roi", _catalog_case(
        "kaggle", lambda r: _edit(r / "Train.csv", f"{W},{H},1,1,9", f"{W},{H},x,1,9")), names="Train.csv"),
    Case("catalog-kaggle-class-out-of-range", _catalog_case(
        "kaggle", lambda r: _edit(r / "Test.csv", ",9,8,1,", ",9,8,43,")), names="Test/"),
    Case("catalog-kaggle-duplicate-row", _catalog_case(
        "kaggle", lambda r: _append_line(r / "Train.csv", 2)), names="Train/"),
    Case("catalog-kaggle-missing-image", _catalog_case(
        "kaggle", lambda r: (r / "Train/0/00000_00000_00000.png").unlink()), names="00000_00000_00000.png"),
    Case("catalog-kaggle-empty-csv", _catalog_case(
        "kaggle", lambda r: (r / "Test.csv").write_bytes(b"")), names="Test.csv"),
    # stats: broken images
    Case("stats-truncated-image-strict", _catalog_case(
        "official", lambda r: (r / FIRST_IMAGE).write_bytes(_ppm(1)[:50])), names="00000_00000.ppm"),
    Case("stats-image-is-a-folder-strict", _catalog_case("official", _image_is_folder), names="00000_00000.ppm"),
    Case("stats-zero-byte-image-skipped", _catalog_case(
        "official", lambda r: (r / FIRST_IMAGE).write_bytes(b""), strict=False), exit_code=0),
    # cook: broken images are skipped (one warning), odd ones decoded
    *[Case(f"cook-skips-{name}", _image_case(data), exit_code=0) for name, data in BROKEN_IMAGES.items()],
    *[Case(f"cook-decodes-{name}", _image_case(data), exit_code=0, skip_word="") for name, data in ODD_IMAGES.items()],
    Case("cook-strict-truncated-ppm", _image_case(BROKEN_IMAGES["truncated-ppm"], strict=True), names="00000_00000.ppm"),
    Case("cook-strict-png-bad-crc", _image_case(_png_bad_crc, strict=True), names="00000_00000.ppm"),
    Case("cook-out-is-a-file", _out_is_file, names="out"),
    # info: malformed cooked files
    *[Case(f"info-{name}", _info_case(damage), names="set-8x8-L.h5") for name, damage in COOKED_DAMAGE.items()],
    Case("info-folder-without-files", _info_empty_folder, names="empty"),
    Case("info-missing-file", lambda tmp: ["info", str(tmp / "set-8x8-L.h5")], names="set-8x8-L.h5"),
]


def _h5_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    args = case.build(tmp_path)
    before = _h5_files(tmp_path / "out")
    result = CliRunner().invoke(app, args)
    stderr = result.stderr.strip().splitlines()
    assert result.exit_code == case.exit_code, (result.output, result.exception)
    assert "Traceback" not in result.output and "BytesIO" not in result.output
    out = tmp_path / "out"
    if case.names:  # one error line naming the file; nothing new in the output folder
        assert len(stderr) == 1 and stderr[0].startswith("error: "), stderr
        assert case.names in stderr[0], stderr
        assert _h5_files(out) == before if out.is_dir() else True
        return
    if args[0] == "cook":  # the file is complete; skips are reported in one warning line
        files = sorted(out.glob("*.h5"))
        assert [f.name for f in files] == ["set-8x8-RGB.h5"] and not list(out.glob(".*.tmp"))
        read_info(files[0])
        if case.skip_word:
            assert len(stderr) == 1 and stderr[0].startswith("warning: skipped 1 image") and FIRST_IMAGE in stderr[0]
        else:
            assert stderr == []
    else:
        assert case.skip_word in result.stdout and (out / "stats.json").is_file()


# --------------------------------------------------------------------------- faults

def _tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_cook_full_disk_one_line_and_no_partial_file(tmp_path: Path) -> None:
    root = official(tmp_path / "tree", classes=tuple(range(8)))
    out = tmp_path / "small"
    if not _tmpfs(out, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        result = CliRunner().invoke(app, ["cook", "--root", str(root), "--out", str(out), "--size", "48",
                                          "--mode", "RGB", "--workers", "1"])
        stderr = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(stderr) == 1, result.output
        assert stderr[0].startswith(f"error: {out}: no space left on device") and "--out" in stderr[0]
        assert os.listdir(out) == []
    finally:
        subprocess.run(["umount", str(out)], check=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gtsrb_kit", *args]


def _children(pid: int) -> set[int]:
    """Live descendants of ``pid`` (from /proc), also once they are reparented: by session id."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[3]) == pid and stat[0] != "Z":  # field 6: session id
                found.add(int(entry))
    return found - {pid}


@pytest.fixture(scope="module")
def mid_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gtsrb_kit.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("mid"), tracks_per_class=3, frames_per_track=6,
                            test_per_class=6, seed=1)


def test_sigkill_mid_cook_ends_workers_and_rerun_completes(mid_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["cook", "--root", str(mid_tree), "--out", str(out), "--size", "32", "--size", "48",
            "--mode", "RGB", "--mode", "L-LHE", "--mode", "RGB-HE", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob(".set-*.tmp")):
        time.sleep(0.05)  # cooking has started: temporaries exist
    assert list(out.glob(".set-*.tmp")), "cook never started writing"
    assert len(_children(proc.pid)) >= 2
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5  # not reaped yet: the killed cook is a zombie that kill(pid, 0) still finds
    while _children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children(proc.pid) == set(), "worker processes outlived the killed cook"
    proc.wait()
    rerun = subprocess.run(_cli(*args), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out.glob(".*.tmp"))
    files = sorted(out.glob("set-*.h5"))
    assert len(files) == 6
    for path in files:  # complete and readable throughout (cooked bytes are deterministic: test_cook)
        info = read_info(path)
        assert info["splits"]["train"]["count"] > 0 and info["skipped_images"] == 0


def test_two_cooks_on_one_folder_both_succeed_with_complete_files(tmp_path: Path) -> None:
    root = official(tmp_path / "tree", classes=tuple(range(6)))
    out = tmp_path / "out"
    args = _cli("cook", "--root", str(root), "--out", str(out), "--size", "16", "--mode", "RGB",
                "--mode", "L", "--workers", "1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert errors == ["", ""]
    assert sorted(p.name for p in out.iterdir()) == ["set-16x16-L.h5", "set-16x16-RGB.h5"]
    for path in out.iterdir():
        read_info(path)


def test_cook_stderr_has_no_opencv_log_or_object_reprs(tmp_path: Path) -> None:
    """Workers (forkserver) decode broken files: one warning line, nothing from OpenCV or Pillow."""
    root = official(tmp_path / "tree")
    for i, data in enumerate(list(BROKEN_IMAGES.values())[:4]):
        (root / f"GTSRB/Final_Training/Images/00001/00000_0000{i % 2}.ppm").write_bytes(data())
    (root / FIRST_IMAGE).write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(_cli("cook", "--root", str(root), "--out", str(tmp_path / "out"), "--size", "8",
                              "--mode", "L-LHE", "--mode", "L-CLAHE", "--workers", "2"),
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: skipped 3 image(s)"), lines  # once, not per file
    assert "[ERROR" not in run.stderr and "object at 0x" not in run.stderr


def test_cook_rebuilds_a_damaged_file_with_the_same_recipe(tmp_path: Path) -> None:
    """A file that claims the recipe but cannot be read whole is cooked again, not reported up to date."""
    path = _cook_tiny(tmp_path)
    good = path.read_bytes()
    _damage_chunk(path)
    result = CliRunner().invoke(app, ["cook", "--root", str(tmp_path / "tree"), "--out", str(path.parent),
                                      "--size", "8", "--mode", "L", "--workers", "1"])
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert path.read_bytes() == good
