"""Dataset statistics: library measures, shared-image detection, the CLI, the real benchmark."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gtsrb_kit.catalog import read_catalog
from gtsrb_kit.classes import NUM_CLASSES
from gtsrb_kit.cli import app
from gtsrb_kit.errors import DataError
from gtsrb_kit.stats import (
    DATA_FILES,
    PLOT_FILES,
    compute_stats,
    find_shared_images,
    measure_image,
    measure_images,
)
from gtsrb_kit.synth import generate_dataset

TINY = {"tracks_per_class": 1, "frames_per_track": 2, "test_per_class": 1}
TRAIN = Path("GTSRB/Final_Training/Images")


def test_measure_image_values(tmp_path: Path) -> None:
    flat = tmp_path / "flat.ppm"
    Image.new("RGB", (30, 20), (100, 100, 100)).save(flat)
    brightness, contrast, sharpness, width, height, digest = measure_image(flat)
    assert (brightness, contrast, sharpness, width, height) == (100.0, 0.0, 0.0, 30, 20)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)

    # Half black, half white: mean 127.5, std 127.5; a sharp edge has a large Laplacian variance.
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[:, 10:] = 255
    Image.fromarray(pixels).save(tmp_path / "edge.png")
    b, c, sharp, *_ = measure_image(tmp_path / "edge.png")
    assert b == pytest.approx(127.5) and c == pytest.approx(127.5)
    blurred = tmp_path / "blurred.png"
    Image.fromarray(pixels).resize((5, 5), Image.Resampling.BILINEAR).resize((20, 20)).save(blurred)
    assert measure_image(blurred)[2] < sharp / 4


def test_ppm_fast_path_matches_pil(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    plain = tmp_path / "plain.ppm"
    Image.fromarray(pixels).save(plain)
    commented = tmp_path / "commented.ppm"
    commented.write_bytes(b"P6\n# a comment\n9 7\n255\n" + pixels.tobytes())
    assert measure_image(plain)[:5] == measure_image(commented)[:5]
    assert measure_image(commented)[3:5] == (9, 7)
    truncated = tmp_path / "truncated.ppm"
    truncated.write_bytes(plain.read_bytes()[:-10])
    result = measure_images([str(plain), str(truncated), str(tmp_path / "absent.ppm")], workers=0)
    assert list(result["error"] == "") == [True, False, False]
    assert result.loc[1, "error"].startswith("unreadable image") and np.isnan(result.loc[1, "brightness"])


def test_find_shared_images_unit() -> None:
    import pandas as pd

    rows = pd.DataFrame({
        "split": ["train", "train", "test", "test", "test"],
        "rel_path": ["t/a", "t/b", "x/1", "x/2", "x/3"],
        "class_id": [4, 4, 4, 9, 4],
        "sha256": ["aa", "bb", "aa", "cc", "aa"],
    })
    assert find_shared_images(rows) == [
        {"sha256": "aa", "class_ids": [4], "train": ["t/a"], "test": ["x/1", "x/3"]},
    ]


@pytest.fixture()
def tiny_tree(tmp_path: Path) -> Path:
    return generate_dataset(tmp_path / "tiny", seed=4, **TINY)


def _copy_train_into_test(root: Path) -> tuple[str, str]:
    """Overwrite test image 00000 with a training image's bytes (CSV row updated to match)."""
    labels = root / "GT-final_test.csv"
    lines = labels.read_bytes().decode().split("\r\n")
    name, *_, class_id = lines[1].split(";")
    train_dir = root / TRAIN / f"{int(class_id):05d}"
    train_row = train_dir.joinpath(f"GT-{int(class_id):05d}.csv").read_bytes().decode().split("\r\n")[1].split(";")
    shutil.copyfile(train_dir / train_row[0], root / "GTSRB/Final_Test/Images" / name)
    lines[1] = ";".join([name, *train_row[1:]])
    labels.write_bytes("\r\n".join(lines).encode())
    return f"{TRAIN}/{int(class_id):05d}/{train_row[0]}", f"GTSRB/Final_Test/Images/{name}"


def test_shared_and_duplicate_images_are_found(tiny_tree: Path) -> None:
    assert compute_stats(read_catalog(tiny_tree), workers=0).shared == []
    train_rel, test_rel = _copy_train_into_test(tiny_tree)
    # A second copy inside the training set (another frame of the same track).
    folder = tiny_tree / Path(train_rel).parent
    frames = sorted(folder.glob("*.ppm"))
    shutil.copyfile(frames[0], frames[1])
    csv_path = next(folder.glob("GT-*.csv"))
    rows = csv_path.read_bytes().decode().split("\r\n")
    rows[2] = ";".join([frames[1].name, *rows[1].split(";")[1:]])
    csv_path.write_bytes("\r\n".join(rows).encode())

    result = compute_stats(read_catalog(tiny_tree, strict=True), workers=0)
    (group,) = result.shared
    assert group["train"] == sorted([train_rel, f"{Path(train_rel).parent}/{frames[1].name}"])
    assert group["test"] == [test_rel]
    shared = result.summary["shared_train_test"]
    assert (shared["groups"], shared["train_images"], shared["test_images"]) == (1, 2, 1)
    assert result.summary["duplicates_within_split"] == {"train": 1, "test": 0}


def test_bad_images_are_listed_or_raise(tiny_tree: Path) -> None:
    victim = tiny_tree / TRAIN / "00005" / "00000_00001.ppm"
    victim.write_bytes(victim.read_bytes()[:-50])
    catalog = read_catalog(tiny_tree, verify="none")
    result = compute_stats(catalog, workers=0)
    assert [p["path"] for p in result.summary["image_problems"]] == [str(victim.resolve())]
    assert result.summary["images"]["train"] == (catalog["split"] == "train").sum() - 1
    assert str(victim.resolve()) not in set(result.per_image["path"])
    with pytest.raises(DataError, match=r"00000_00001\.ppm: unreadable image .*--strict"):
        compute_stats(catalog, workers=0, strict=True)


def test_cli_stats_on_synth(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "stats"
    result = CliRunner().invoke(app, ["stats", "--root", str(synth_root), "--out", str(out), "--top", "8",
                                      "--workers", "0"])
    assert result.exit_code == 0, result.output
    catalog = read_catalog(synth_root)
    train, test = catalog[catalog["split"] == "train"], catalog[catalog["split"] == "test"]

    assert sorted(p.name for p in out.iterdir()) == sorted(DATA_FILES + PLOT_FILES)
    for name in PLOT_FILES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 100

    summary = json.loads((out / "stats.json").read_text())
    assert {"images", "classes", "tracks", "class_balance", "image_width", "image_height", "roi_width",
            "aspect_ratio", "brightness", "contrast", "sharpness", "shared_train_test", "duplicates_within_split",
            "darkest", "smallest", "blurriest", "image_problems", "catalog_problems"} <= set(summary)
    assert summary["images"] == {"train": len(train), "test": len(test), "meta": 0}
    assert summary["classes"] == {"train": NUM_CLASSES, "test": NUM_CLASSES}
    assert summary["tracks"]["total"] == train["track_id"].nunique()
    assert summary["image_width"]["min"] == catalog["width"].min()
    assert summary["image_width"]["max"] == catalog["width"].max()
    assert summary["shared_train_test"]["groups"] == 0 and summary["image_problems"] == []
    assert len(summary["darkest"]) == 8
    darkest = [d["brightness"] for d in summary["darkest"]]
    assert darkest == sorted(darkest) and darkest[-1] <= summary["brightness"]["p5"]
    smallest = summary["smallest"][0]
    assert smallest["width"] * smallest["height"] == (catalog["width"] * catalog["height"]).min()

    with open(out / "classes.csv", newline="") as fh:
        classes = list(csv.DictReader(fh))
    assert [int(r["class_id"]) for r in classes] == list(range(NUM_CLASSES))
    expected = train.groupby("class_id").size()
    assert all(int(r["train"]) == expected[int(r["class_id"])] for r in classes)
    assert sum(int(r["test"]) for r in classes) == len(test)
    assert classes[14]["class_name"] == "Stop"
    assert all(float(r["brightness_mean"]) > 0 for r in classes)

    with open(out / "images.csv", newline="") as fh:
        images = list(csv.DictReader(fh))
    assert len(images) == len(train) + len(test)
    assert {r["rel_path"] for r in images} == set(catalog["rel_path"])

    assert "Stop" in result.stdout and f"{len(train)} train (43 classes" in result.stdout
    assert "train/test overlap: 0 identical" in result.stdout


def test_cli_stats_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stats", "--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "no such folder" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.real
def test_real_shared_images(real_full_root: Path, tmp_path: Path) -> None:
    """Class 14 ("Stop"), track 23 has frames that are byte-identical to test images."""
    # A view of the real tree with only class 14 for training (symlinks): reading 43 class
    # CSVs and hashing 13,000 training images would only find nothing more, slowly.
    view = tmp_path / "view"
    (view / TRAIN).mkdir(parents=True)
    (view / TRAIN / "00014").symlink_to(real_full_root / TRAIN / "00014")
    (view / "GTSRB/Final_Test").symlink_to(real_full_root / "GTSRB/Final_Test")
    (view / "GT-final_test.csv").symlink_to(real_full_root / "GT-final_test.csv")
    catalog = read_catalog(view, verify="none")
    subset = catalog[catalog["class_id"] == 14]
    subset.attrs = catalog.attrs
    assert (subset["split"] == "train").sum() == 260  # 26 tracks x 10 frames
    result = compute_stats(subset, workers=2)
    groups = result.shared
    assert len(groups) == 3
    assert all(g["class_ids"] == [14] and len(g["train"]) == len(g["test"]) == 1 for g in groups)
    assert [g["train"][0].rsplit("/", 1)[1] for g in groups] == [
        "00023_00000.ppm", "00023_00003.ppm", "00023_00006.ppm"]
