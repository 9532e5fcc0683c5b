"""read_catalog / load_image: both layouts, every kind of damage, and the real benchmark."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from gtsrb_kit.catalog import (
    CATALOG_COLUMNS,
    catalog_problems,
    decode_image_bytes,
    detect_layout,
    load_image,
    read_catalog,
)
from gtsrb_kit.classes import NUM_CLASSES, class_name
from gtsrb_kit.errors import DataError
from gtsrb_kit.synth import generate_dataset

TINY = {"tracks_per_class": 1, "frames_per_track": 2, "test_per_class": 1}
HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
TRAIN = Path("GTSRB/Final_Training/Images")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("catalog") / "official", seed=9, **TINY)


KEEP = {f"{c:05d}" for c in (1, 2, 3, 7, 11, 20, 30)}


@pytest.fixture()
def tree(pristine: Path, tmp_path: Path) -> Path:
    """A fresh, writable copy of a tiny official tree, with training classes KEEP only
    (reading 43 class CSVs costs more than these tests need). Damage it at will."""

    def skip(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n.isdigit() and n not in KEEP} if folder.endswith("Images") else set()

    return Path(shutil.copytree(pristine, tmp_path / "tree", ignore=skip))


def _csv_rows(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\r\n")[1:-1]


def _rewrite(path: Path, edit) -> None:
    """Rewrite an official CSV (CRLF) with ``edit(list_of_row_strings) -> list``."""
    rows = edit(_csv_rows(path))
    path.write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode())


def _problems(cat) -> dict[str, str]:
    return {Path(p["path"]).name: p["problem"] for p in cat.attrs["problems"]}


def test_official_layout(pristine: Path) -> None:
    cat = read_catalog(pristine)
    assert list(cat.columns) == list(CATALOG_COLUMNS)
    assert cat.attrs["layout"] == "official" and cat.attrs["problems"] == []
    assert cat.attrs["root"] == str(pristine.resolve())
    train, test = cat[cat["split"] == "train"], cat[cat["split"] == "test"]
    csv_rows = sum(len(_csv_rows(p)) for p in (pristine / TRAIN).glob("*/GT-*.csv"))
    assert len(train) == csv_rows
    assert len(test) == len(_csv_rows(pristine / "GT-final_test.csv"))
    assert set(train["class_id"]) == set(range(NUM_CLASSES))
    first = train.iloc[0]
    assert first["rel_path"] == "GTSRB/Final_Training/Images/00000/00000_00000.ppm"
    assert Path(first["path"]).is_absolute() and Path(first["path"]).is_file()
    assert (first["track"], first["frame"], first["track_id"]) == (0, 0, 0)
    assert (train["track_id"] == train["class_id"] * 100_000 + train["track"]).all()
    assert (test[["track", "frame", "track_id"]] == -1).all().all()
    assert all(cat["class_name"] == [class_name(c) for c in cat["class_id"]])
    # Sorted by split, then class, then path.
    assert list(cat["split"]) == sorted(cat["split"], key=["train", "test"].index)
    assert list(train["class_id"]) == sorted(train["class_id"])
    image = load_image(first["path"])
    assert image.dtype == np.uint8 and image.shape == (first["height"], first["width"], 3)


def test_kaggle_layout(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "k", layout="kaggle", seed=9, **TINY)
    assert detect_layout(root) == "kaggle"
    cat = read_catalog(root)
    assert cat.attrs["layout"] == "kaggle" and cat.attrs["problems"] == []
    counts = cat["split"].value_counts()
    assert counts["train"] == len((root / "Train.csv").read_text().splitlines()) - 1
    assert counts["test"] == len((root / "Test.csv").read_text().splitlines()) - 1
    assert counts["meta"] == NUM_CLASSES
    meta = cat[cat["split"] == "meta"]
    assert (meta["width"] > 0).all() and (meta["track"] == -1).all()
    train = cat[cat["split"] == "train"]
    row = train[train["rel_path"] == "Train/5/00005_00000_00001.png"].iloc[0]
    assert (row["class_id"], row["track"], row["frame"]) == (5, 0, 1)
    assert set(cat[cat["split"] == "test"]["track_id"]) == {-1}
    assert read_catalog(root, splits=("test",))["split"].unique().tolist() == ["test"]


def test_missing_file(tree: Path) -> None:
    gone = tree / TRAIN / "00003" / "00000_00001.ppm"
    gone.unlink()
    for verify in ("none", "header"):
        cat = read_catalog(tree, verify=verify)
        assert _problems(cat) == {"00000_00001.ppm": "file missing"}
        assert str(gone) not in set(cat["path"])
        assert len(catalog_problems(cat)) == 1
    with pytest.raises(DataError, match=re.escape(str(gone)) + ": file missing"):
        read_catalog(tree, strict=True)


def test_size_disagrees_with_csv(tree: Path) -> None:
    csv = tree / TRAIN / "00007" / "GT-00007.csv"
    _rewrite(csv, lambda rows: [rows[0].replace(";", ";9", 1), *rows[1:]])  # width "37" -> "937"
    cat = read_catalog(tree)
    (name, problem), = _problems(cat).items()
    assert name == "00000_00000.ppm" and re.fullmatch(r"image is \d+x\d+ but the CSV says 9\d+x\d+", problem)
    assert ((cat["class_id"] == 7) & (cat["split"] == "train")).sum() == len(_csv_rows(csv)) - 1


def test_class_id_outside_range(tree: Path) -> None:
    labels = tree / "GT-final_test.csv"
    _rewrite(labels, lambda rows: [re.sub(r";\d+$", ";43", rows[0]), re.sub(r";\d+$", ";-1", rows[1]), *rows[2:]])
    cat = read_catalog(tree)
    assert _problems(cat) == {"00000.ppm": "class id 43 is outside 0..42", "00001.ppm": "class id -1 is outside 0..42"}
    assert not {"00000.ppm", "00001.ppm"} & {Path(p).name for p in cat.loc[cat["split"] == "test", "path"]}
    with pytest.raises(DataError, match=r"00000\.ppm: class id 43 is outside 0\.\.42 \(2 problem"):
        read_catalog(tree, strict=True)


def test_class_id_disagrees_with_folder(tree: Path) -> None:
    _rewrite(tree / TRAIN / "00002" / "GT-00002.csv", lambda rows: [re.sub(r";2$", ";3", rows[0]), *rows[1:]])
    cat = read_catalog(tree)
    assert _problems(cat) == {"00000_00000.ppm": "ClassId disagrees with its folder 00002"}


def test_duplicate_rows(tree: Path) -> None:
    csv = tree / TRAIN / "00011" / "GT-00011.csv"
    _rewrite(csv, lambda rows: [*rows, rows[0]])
    cat = read_catalog(tree)
    assert _problems(cat) == {"00000_00000.ppm": "duplicate row in the annotation CSV (first kept)"}
    assert (cat["path"] == str(tree.resolve() / TRAIN / "00011" / "00000_00000.ppm")).sum() == 1


def test_truncated_and_garbage_images(tree: Path) -> None:
    truncated = tree / TRAIN / "00001" / "00000_00001.ppm"
    truncated.write_bytes(truncated.read_bytes()[:-200])
    garbage = tree / TRAIN / "00001" / "00000_00000.ppm"
    garbage.write_bytes(b"\x00garbage, not an image" * 10)
    header = _problems(read_catalog(tree))
    assert set(header) == {"00000_00000.ppm"} and header["00000_00000.ppm"].startswith("unreadable image")
    full = _problems(read_catalog(tree, verify="full"))
    assert set(full) == {"00000_00000.ppm", "00000_00001.ppm"}
    assert full["00000_00001.ppm"].startswith("unreadable image")
    with pytest.raises(DataError, match="00000_00001.ppm: unreadable image"):
        load_image(truncated)
    with pytest.raises(DataError, match="00000_00000.ppm: unreadable image"):
        load_image(garbage)
    with pytest.raises(DataError, match="nothing.ppm: file missing"):
        load_image(tree / "nothing.ppm")
    with pytest.raises(DataError, match="blob: unreadable image"):
        decode_image_bytes(b"junk", "blob")


def test_non_numeric_values(tree: Path) -> None:
    _rewrite(tree / TRAIN / "00020" / "GT-00020.csv", lambda rows: [rows[0].replace(";", ";x", 2), *rows[1:]])
    cat = read_catalog(tree)
    assert _problems(cat) == {"00000_00000.ppm": "non-numeric value in GT-00020.csv"}
    assert (cat["class_id"] == 20).sum() >= 1
    with pytest.raises(DataError, match="non-numeric value in GT-00020.csv"):
        read_catalog(tree, strict=True)


def test_blank_csv_lines_are_not_rows(tree: Path) -> None:
    _rewrite(tree / TRAIN / "00007" / "GT-00007.csv", lambda rows: [*rows, ""])
    catalog = read_catalog(tree, verify="none")
    assert catalog.attrs["problems"] == []
    rows = sum(len([r for r in _csv_rows(tree / TRAIN / c / f"GT-{c}.csv") if r]) for c in KEEP)
    assert (catalog["split"] == "train").sum() == rows
    assert (catalog["split"] == "test").sum() == len(_csv_rows(tree / "GT-final_test.csv"))
    assert catalog["track"].dtype == "int64" and catalog["class_id"].dtype == "int64"


def test_csv_missing_column_names_it(tree: Path) -> None:
    labels = tree / "GT-final_test.csv"
    text = labels.read_text().replace("Roi.X1;", "")
    labels.write_text(text)
    with pytest.raises(DataError, match=r"GT-final_test\.csv: missing column\(s\) Roi\.X1"):
        read_catalog(tree)


def test_missing_annotation_csv_and_labels(tree: Path) -> None:
    (tree / TRAIN / "00030" / "GT-00030.csv").unlink()
    (tree / "GT-final_test.csv").unlink()
    cat = read_catalog(tree)
    problems = _problems(cat)
    assert problems["GT-00030.csv"].startswith("annotation CSV missing")
    assert problems["GT-final_test.csv"].startswith("test labels missing")
    assert 30 not in set(cat["class_id"]) and (cat["split"] == "train").all()


def test_not_a_gtsrb_tree(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        read_catalog(tmp_path / "absent")
    with pytest.raises(DataError, match="no GTSRB tree found"):
        read_catalog(tmp_path)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_catalog(real_full_root: Path):
    return read_catalog(real_full_root)


@pytest.mark.real
def test_real_counts(real_catalog) -> None:
    cat = real_catalog
    assert cat.attrs["problems"] == []
    counts = cat["split"].value_counts().to_dict()
    assert counts == {"train": 13_070, "test": 12_630}
    train = cat[cat["split"] == "train"]
    assert train["class_id"].nunique() == NUM_CLASSES
    assert train["track_id"].nunique() == 1_307
    assert cat.loc[cat["split"] == "test", "class_id"].nunique() == NUM_CLASSES


def _parse_ppm(data: bytes) -> tuple[int, int, np.ndarray]:
    """A deliberately naive P6 parser: tokens separated by whitespace, '#' comments to end of line."""
    tokens, pos = [], 2
    while len(tokens) < 3:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        tokens.append(int(data[pos:end]))
        pos = end
    width, height, _ = tokens
    pixels = np.frombuffer(data, np.uint8, width * height * 3, pos + 1).reshape(height, width, 3)
    return width, height, pixels


@pytest.mark.real
def test_real_ppms_with_header_comments(real_catalog) -> None:
    commented = []
    for path in real_catalog["path"]:
        with open(path, "rb") as fh:
            head = fh.read(64)
        if b"#" in head.split(b"\n255", 1)[0]:
            commented.append(path)
    assert len(commented) == 10
    rows = real_catalog.set_index("path").loc[commented]
    for path, row in rows.iterrows():
        width, height, pixels = _parse_ppm(Path(path).read_bytes())
        image = load_image(path)
        assert (width, height) == (row["width"], row["height"])
        assert image.shape == (row["height"], row["width"], 3)
        assert np.array_equal(image, pixels)


@pytest.mark.parametrize("data", [
    b"P6\n5 7\n255\n",
    b"P6\n# made by a camera\n5 # width\n7\n# depth next\n255\n",
    b"P6 5\t7 255 ",
])
def test_decoder_reads_binary_ppm_headers_like_pillow(tmp_path: Path, data: bytes) -> None:
    from PIL import Image

    from gtsrb_kit.catalog import decode_image_bytes, load_image

    pixels = np.random.default_rng(3).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    (tmp_path / "a.ppm").write_bytes(data + pixels.tobytes())
    np.testing.assert_array_equal(decode_image_bytes(data + pixels.tobytes()), pixels)
    np.testing.assert_array_equal(load_image(tmp_path / "a.ppm"), pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.ppm").convert("RGB")), pixels)


def test_decoder_reads_other_formats_and_names_broken_files(tmp_path: Path) -> None:
    from PIL import Image

    from gtsrb_kit.catalog import load_image

    pixels = np.random.default_rng(4).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    np.testing.assert_array_equal(load_image(tmp_path / "image.png"), pixels)
    (tmp_path / "short.ppm").write_bytes(b"P6\n5 7\n255\n" + pixels.tobytes()[:-1])
    with pytest.raises(DataError, match=r"short\.ppm: unreadable image \(.*\); re-download or remove it"):
        load_image(tmp_path / "short.ppm")
    with pytest.raises(DataError, match="absent.ppm: file missing"):
        load_image(tmp_path / "absent.ppm")


def test_shared_digests_ignore_unreadable_images() -> None:
    from gtsrb_kit.catalog import image_digest, shared_digests

    a, b = image_digest(b"a"), image_digest(b"b")
    assert a != b and len(a) == 64
    assert shared_digests([a, b, None, ""], [b, None, ""]) == {b}
