"""The offline synthetic dataset: format, determinism, layouts, archives, CLI."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gtsrb_kit.catalog import detect_layout, read_catalog
from gtsrb_kit.classes import NUM_CLASSES
from gtsrb_kit.cli import app
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.synth import ARCHIVE_NAMES, MARKER, draw_pictogram, generate_dataset

TINY = {"tracks_per_class": 1, "frames_per_track": 2, "test_per_class": 1}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny official trees with archives from the same seed."""
    base = tmp_path_factory.mktemp("twins")
    return (generate_dataset(base / "a", seed=3, archives=True, **TINY),
            generate_dataset(base / "b", seed=3, archives=True, **TINY))


@pytest.fixture(scope="module")
def synth_catalog(synth_root: Path):
    return read_catalog(synth_root, verify="full")


def test_same_seed_same_bytes_other_seed_differs(twins: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = _tree(twins[0]), _tree(twins[1])
    assert a == b  # images, CSVs, zips (fixed timestamps) and SHA256SUMS
    assert len(a) > 150 and sum(k.startswith("archives/") for k in a) == 4
    c = _tree(generate_dataset(tmp_path / "c", seed=4, **TINY))
    common = [k for k in a if k.endswith(".ppm") and k in c]
    assert common and sum(a[k] != c[k] for k in common) > 0.9 * len(common)


def test_official_layout_files_and_catalog(synth_root: Path, synth_catalog) -> None:
    train_csv = synth_root / "GTSRB/Final_Training/Images/00014/GT-00014.csv"
    raw = train_csv.read_bytes()
    assert raw.startswith(b"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\r\n")
    assert raw.count(b"\r\n") == raw.count(b"\n")
    test_csv = (synth_root / "GTSRB/Final_Test/Images/GT-final_test.test.csv").read_bytes()
    assert test_csv.startswith(b"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2\r\n")
    labels = (synth_root / "GT-final_test.csv").read_bytes()
    assert labels.startswith(b"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\r\n")
    assert (synth_root / "GTSRB/Final_Training/Images/00000/00000_00000.ppm").read_bytes().startswith(b"P6")

    cat = synth_catalog
    assert cat.attrs["layout"] == "official" and cat.attrs["problems"] == []
    train, test = cat[cat["split"] == "train"], cat[cat["split"] == "test"]
    assert set(train["class_id"]) == set(range(NUM_CLASSES)) == set(test["class_id"])
    # Every track has frames_per_track frames; test rows match the label file.
    assert (train.groupby("track_id").size() == 5).all()
    assert len(test) == labels.count(b"\r\n") - 1 == test_csv.count(b"\r\n") - 1
    # Unbalanced on purpose: tracks and test images per class vary around the mean, at least 1.
    tracks = train.groupby("class_id")["track_id"].nunique()
    assert tracks.min() >= 1 and tracks.nunique() > 1 and 1.5 <= tracks.mean() <= 2.5
    per_test = test.groupby("class_id").size()
    assert per_test.min() >= 1 and per_test.nunique() > 1


def test_roi_border_and_growing_tracks(synth_catalog) -> None:
    cat = synth_catalog
    assert (cat["roi_x1"] >= 5).all() and (cat["roi_y1"] >= 5).all()
    assert (cat["width"] - 1 - cat["roi_x2"] >= 5).all() and (cat["height"] - 1 - cat["roi_y2"] >= 5).all()
    sign = cat["roi_x2"] - cat["roi_x1"] + 1
    assert sign.min() >= 15 and sign.max() <= 100
    assert cat["width"].nunique() > 20 and cat["height"].nunique() > 20
    for _, track in cat[cat["split"] == "train"].groupby("track_id"):
        widths = (track.sort_values("frame")["roi_x2"] - track.sort_values("frame")["roi_x1"]).to_numpy()
        assert (np.diff(widths) > 0).all(), widths
        assert widths[-1] >= 1.6 * widths[0]


def test_sign_lies_inside_the_roi(synth_catalog) -> None:
    """The saturated sign colours sit inside the ROI; its border is mostly background."""
    cat = synth_catalog
    row = cat[(cat["split"] == "train") & (cat["class_id"] == 17)].iloc[-1]  # "No entry": a red disc
    image = np.asarray(Image.open(row["path"]).convert("RGB"), dtype=np.int32)
    red = (image[..., 0] - np.maximum(image[..., 1], image[..., 2])) > 40
    ys, xs = np.nonzero(red)
    assert len(xs) > 100
    assert xs.min() >= row["roi_x1"] - 1 and xs.max() <= row["roi_x2"] + 1
    assert ys.min() >= row["roi_y1"] - 1 and ys.max() <= row["roi_y2"] + 1


def test_kaggle_layout_and_progress(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int | None]] = []
    root = generate_dataset(tmp_path / "k", layout="kaggle", seed=1, progress=lambda *a: calls.append(a), **TINY)
    assert (root / "Train.csv").read_text().splitlines()[0] == "Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path"
    assert (root / "Meta.csv").read_text().splitlines()[0] == "Path,ClassId,ShapeId,ColorId,SignId"
    cat = read_catalog(root, verify="full")
    assert cat.attrs["layout"] == "kaggle" and cat.attrs["problems"] == []
    counts = cat["split"].value_counts()
    assert counts["meta"] == NUM_CLASSES
    train = cat[cat["split"] == "train"]
    assert set(train["class_id"]) == set(range(NUM_CLASSES))
    assert (train.groupby("track_id").size() == 2).all()
    first = train.iloc[0]
    assert first["rel_path"] == "Train/0/00000_00000_00000.png"
    assert Image.open(first["path"]).format == "PNG"
    assert (cat[cat["split"] == "test"]["rel_path"].str.match(r"^Test/\d{5}\.png$")).all()
    meta = Image.open(root / "Meta/14.png")
    assert meta.mode == "RGBA" and meta.size == draw_pictogram(14).size
    n_images = int((cat["split"] != "meta").sum())
    drawing = [c for c in calls if c[0] == "drawing images"]
    assert drawing[0][1] == 0 and drawing[-1][1:] == (n_images, n_images)
    assert [c[1] for c in drawing] == sorted(c[1] for c in drawing)


def test_archives_round_trip(twins: tuple[Path, Path], tmp_path: Path) -> None:
    root = twins[0]
    arch = root / "archives"
    sums = dict(line.split("  ")[::-1] for line in (arch / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == sorted(ARCHIVE_NAMES)
    for name, digest in sums.items():
        assert hashlib.sha256((arch / name).read_bytes()).hexdigest() == digest
    unpacked = tmp_path / "unpacked"
    for name in ARCHIVE_NAMES:
        with zipfile.ZipFile(arch / name) as zf:
            assert zf.testzip() is None
            zf.extractall(unpacked)
    with zipfile.ZipFile(arch / "GTSRB_Final_Test_Images.zip") as zf:
        assert "GTSRB/Final_Test/Images/GT-final_test.test.csv" in zf.namelist()
    with zipfile.ZipFile(arch / "GTSRB_Final_Test_GT.zip") as zf:
        assert [n for n in zf.namelist() if not n.endswith("/")] == ["GT-final_test.csv"]
    original = {k: v for k, v in _tree(root).items() if not k.startswith("archives/") and k != MARKER}
    assert _tree(unpacked) == original


def test_refuses_foreign_folder_replaces_own_output(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty.*--force"):
        generate_dataset(foreign, **TINY)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    one = {"tracks_per_class": 1, "frames_per_track": 1, "test_per_class": 1}
    generate_dataset(foreign, force=True, **one)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert detect_layout(foreign) == "official" and (foreign / "GT-final_test.csv").is_file()
    # Rewriting an earlier output needs no --force and drops its old entries (layout switch).
    generate_dataset(foreign, layout="kaggle", **one)
    assert not (foreign / "GTSRB").exists() and not (foreign / "GT-final_test.csv").exists()
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert detect_layout(foreign) == "kaggle" and (foreign / "Meta.csv").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    with pytest.raises(DataError, match="not a folder"):
        generate_dataset(foreign / "notes.txt", **TINY)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tracks_per_class=0"):
        generate_dataset(tmp_path / "x", tracks_per_class=0)
    with pytest.raises(ConfigError, match="official layout"):
        generate_dataset(tmp_path / "x", layout="kaggle", archives=True)
    assert not (tmp_path / "x").exists()


def test_cli_synth(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "cli"
    args = ["synth", "--root", str(root), "--tracks-per-class", "1", "--frames-per-track", "2",
            "--test-per-class", "1", "--seed", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cat = read_catalog(root, verify="none")
    n_train, n_test = (cat["split"] == "train").sum(), (cat["split"] == "test").sum()
    assert f"wrote {n_train} training images" in result.stdout
    assert f"{n_test} test images" in result.stdout and "official layout" in result.stdout
    marker = json.loads((root / MARKER).read_text())
    settings = ("seed", "tracks_per_class", "frames_per_track", "test_per_class")
    assert [marker[k] for k in settings] == [5, 1, 2, 1]
    assert marker["counts"] == {"train": n_train, "test": n_test, "tracks": cat["track_id"].nunique() - 1}


def test_cli_synth_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    result = runner.invoke(app, ["synth", "--root", str(tmp_path / "busy")])
    assert result.exit_code == 1
    assert "error:" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.output

    result = runner.invoke(app, ["synth", "--root", str(tmp_path / "k"), "--layout", "kaggle", "--archives"])
    assert result.exit_code == 2 and "official layout" in result.stderr


def test_cli_defaults_match_the_library() -> None:
    # The CLI repeats the library's defaults (it imports numpy/PIL lazily): they must agree.
    import inspect

    from gtsrb_kit.cli.synth import synth

    library = inspect.signature(generate_dataset).parameters
    cli = inspect.signature(synth).parameters
    for name in ("tracks_per_class", "frames_per_track", "test_per_class", "seed"):
        assert cli[name].default == library[name].default, name
