"""The HDF5 store: schema, numpy and tf.data loaders, and the errors for files it cannot read."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from gtsrb_kit.catalog import read_catalog
from gtsrb_kit.classes import CLASS_NAMES
from gtsrb_kit.cook import cook_dataset
from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.store import (
    ENHANCED_FILE_PATTERN,
    class_names,
    enhanced_filename,
    load_split,
    open_enhanced,
    read_info,
    tf_dataset,
)


@pytest.fixture(scope="module")
def cooked(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("store")
    results = cook_dataset(synth_root, out, sizes=(16,), modes=("RGB", "L", "L-HE"), workers=1)
    return {r.mode: r.path for r in results}


def test_file_names() -> None:
    assert ENHANCED_FILE_PATTERN == "set-{size}x{size}-{mode}{roi}.h5"
    assert enhanced_filename(48, "RGB") == "set-48x48-RGB.h5"
    assert enhanced_filename(24, "L-LHE", roi=True) == "set-24x24-L-LHE-roi.h5"


@pytest.mark.parametrize("n", [*range(1, 600, 7), 2526, 12630, 25733])
def test_chunks_are_balanced(n: int) -> None:
    """At most CHUNK_IMAGES rows per chunk, no more chunks than needed, and the last one barely padded."""
    from gtsrb_kit.store import CHUNK_IMAGES, chunk_rows

    rows = chunk_rows(n)
    chunks = -(-n // rows)
    assert rows <= CHUNK_IMAGES and chunks == -(-n // CHUNK_IMAGES) and chunks * rows - n < chunks


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_writer_round_trip(tmp_path: Path, mode: str) -> None:
    """Chunks encoded anywhere (deflated for L, stored raw otherwise) read back as written."""
    from gtsrb_kit.store import SPLITS, SplitColumns, VariantWriter, chunk_rows, encode_chunk, stored_recipe

    channels = 3 if mode == "RGB" else 1
    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8, channels), dtype=np.uint8)
    columns = {s: SplitColumns(y=np.arange(5 if s == "train" else 0), path=[f"{s}/{i}.ppm" for i in range(5 if s == "train" else 0)],
                               track=np.zeros(5 if s == "train" else 0, np.int64) if s in ("train", "val") else None)
               for s in SPLITS}
    path = tmp_path / enhanced_filename(8, mode)
    with VariantWriter(path, size=8, mode=mode, columns=columns,
                       attrs={"size": np.int64(8), "mode": mode, "class_names": CLASS_NAMES, "recipe": {"mode": mode}}) as writer:
        assert not path.exists()  # written under a temporary name until complete
        rows = chunk_rows(5)
        padded = np.zeros((rows, 8, 8, channels), np.uint8)
        padded[:5] = pixels
        writer.write_chunk("train", 0, encode_chunk(padded, mode))
    x, y = load_split(path, "train")
    np.testing.assert_array_equal(x, pixels)
    np.testing.assert_array_equal(y, np.arange(5))
    assert stored_recipe(path) == {"mode": mode} and read_info(path)["splits"]["val"]["count"] == 0


def test_read_info_schema(cooked: dict[str, Path], synth_root: Path) -> None:
    info = read_info(cooked["RGB"])
    assert info["schema_version"] == 1 and info["created_by"] == "gtsrb-kit"
    assert info["size"] == 16 and info["mode"] == "RGB" and info["roi"] is False
    assert info["scale"] == 1.0 and info["seed"] == 0 and info["val_fraction"] == 0.2
    assert info["class_names"] == list(CLASS_NAMES)
    assert info["recipe"]["mode"] == "RGB" and info["recipe"]["source_fingerprint"] == info["source_fingerprint"]
    splits = info["splits"]
    assert set(splits) == {"train", "val", "test", "meta"}
    catalog = read_catalog(synth_root, verify="none")
    n_train = int((catalog["split"] == "train").sum())
    assert splits["train"]["count"] + splits["val"]["count"] == n_train
    assert splits["test"]["count"] == int((catalog["split"] == "test").sum())
    assert splits["meta"]["count"] == 43 and splits["meta"]["classes"] == 43
    assert splits["train"]["shape"][1:] == (16, 16, 3) and splits["train"]["dtype"] == "uint8"
    assert read_info(cooked["L"])["splits"]["test"]["shape"][1:] == (16, 16, 1)
    assert info["bytes"] == cooked["RGB"].stat().st_size
    assert class_names(cooked["L"]) == list(CLASS_NAMES)
    with h5py.File(cooked["RGB"]) as handle:
        n, rows = splits["train"]["count"], handle["x_train"].chunks[0]
        chunks = -(-n // rows)  # equal chunks of at most 256 rows: the last one is barely padded
        assert rows <= 256 and chunks == -(-n // 256) and chunks * rows - n < chunks
        assert handle["x_train"].compression == "gzip"
        assert handle["y_train"].dtype == np.int16
        assert len(handle["track_train"]) == splits["train"]["count"]
        assert handle["path_test"][0].decode().startswith("GTSRB/Final_Test/Images/")


def test_raw_and_compressed_chunks_read_back(cooked: dict[str, Path], synth_root: Path) -> None:
    from gtsrb_kit.catalog import load_image
    from gtsrb_kit.enhance import enhance

    with h5py.File(cooked["L-HE"]) as handle:
        ds = handle["x_train"]
        assert ds.shape[0] > 256 and ds.compression == "gzip"
        rows = ds.chunks[0]
        last = ds.id.get_num_chunks() - 1
        assert ds.id.get_chunk_info(0).filter_mask == 1  # chunk of an equalized mode: stored raw
        assert ds.id.get_chunk_info(last).filter_mask == 1  # so is the (barely padded) last one
        assert ds.id.get_chunk_info(last).size == rows * 16 * 16
        paths = [p.decode() for p in handle["path_train"][...]]
    x, _ = load_split(cooked["L-HE"], "train")
    for i in (0, rows - 1, rows, len(paths) - 1):
        np.testing.assert_array_equal(x[i], enhance(load_image(synth_root / paths[i]), 16, "L-HE"))
    with h5py.File(cooked["L"]) as handle:  # L chunks are deflated (keeps files under 1/8 of float64)
        assert handle["x_train"].id.get_chunk_info(0).filter_mask == 0
    with h5py.File(cooked["RGB"]) as handle:  # RGB barely compresses: stored raw, as equalized modes
        assert handle["x_train"].id.get_chunk_info(0).filter_mask == 1


def test_load_split_numpy(cooked: dict[str, Path]) -> None:
    x, y = load_split(cooked["RGB"], "train")
    assert x.dtype == np.uint8 and x.shape[1:] == (16, 16, 3) and y.dtype == np.int64 and len(x) == len(y)
    xn, yn = load_split(cooked["RGB"], "train", normalize=True)
    assert xn.dtype == np.float32 and 0.0 <= xn.min() and xn.max() <= 1.0
    np.testing.assert_allclose(xn, x / 255.0, atol=1e-7)
    np.testing.assert_array_equal(yn, y)
    pick = [5, 0, 5, -1]
    xi, yi = load_split(cooked["RGB"], "train", indices=pick)
    np.testing.assert_array_equal(xi, x[[5, 0, 5, len(x) - 1]])
    np.testing.assert_array_equal(yi, y[[5, 0, 5, len(y) - 1]])
    assert load_split(cooked["RGB"], "train", indices=[])[0].shape == (0, 16, 16, 3)
    with pytest.raises(ConfigError, match="out of range"):
        load_split(cooked["RGB"], "train", indices=[len(x)])
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        load_split(cooked["RGB"], "dev")
    with open_enhanced(cooked["L"]) as ef:
        assert ef.x("test")[:3].shape == (3, 16, 16, 1)
        np.testing.assert_array_equal(ef.y("test"), load_split(cooked["L"], "test")[1])
        assert ef.info["mode"] == "L" and len(ef) == sum(read_info(cooked["L"])["splits"][s]["count"]
                                                          for s in ("train", "val", "test", "meta"))


def test_unreadable_files_say_what_to_do(cooked: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file; run 'gtsrb-kit cook'"):
        read_info(tmp_path / "set-48x48-RGB.h5")
    with pytest.raises(DataError, match="is a folder"):
        load_split(tmp_path, "train")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x_train"] = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(DataError, match=r"foreign\.h5: not a gtsrb-kit dataset.*gtsrb-kit cook"):
        load_split(foreign, "train")
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(cooked["RGB"].read_bytes()[:3000])
    with pytest.raises(DataError, match=r"corrupt\.h5: not a readable HDF5 file.*--force"):
        read_info(corrupt)
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        class_names(tmp_path / "text.h5")
    newer = tmp_path / "newer.h5"
    shutil.copy(cooked["RGB"], newer)
    with h5py.File(newer, "r+") as handle:
        handle.attrs["schema_version"] = 2
    with pytest.raises(DataError, match=r"newer\.h5: written by a newer gtsrb-kit \(schema 2.*upgrade gtsrb-kit"):
        load_split(newer, "train")
    partial = tmp_path / "partial.h5"
    shutil.copy(cooked["RGB"], partial)
    with h5py.File(partial, "r+") as handle:
        del handle["x_val"]
    with pytest.raises(DataError, match=r"has no split 'val' \(it has: train, test, meta\)"):
        load_split(partial, "val")
    assert load_split(partial, "test")[0].shape[1:] == (16, 16, 3)


def _epoch(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for xb, yb in ds:
        xs.append(xb.numpy())
        ys.append(yb.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_tf_dataset_shapes_dtypes_and_shuffle_determinism(cooked: dict[str, Path]) -> None:
    pytest.importorskip("tensorflow")
    path = cooked["RGB"]
    x, y = load_split(path, "train")
    plain = tf_dataset(path, "train", batch_size=32)
    first = next(iter(plain))
    assert first[0].shape == (32, 16, 16, 3) and first[0].dtype.name == "float32"
    assert first[1].dtype.name == "int64"
    px, py = _epoch(plain)
    np.testing.assert_allclose(px, x / 255.0, atol=1e-7)
    np.testing.assert_array_equal(py, y)

    shuffled = tf_dataset(path, "train", batch_size=32, shuffle=True, seed=3, normalize=False)
    e1x, e1y = _epoch(shuffled)
    e2x, e2y = _epoch(shuffled)
    assert e1x.dtype == np.uint8 and not np.array_equal(e1y, y)
    assert sorted(e1y.tolist()) == sorted(y.tolist())
    assert not np.array_equal(e1x, e2x)  # each epoch has its own order
    again = tf_dataset(path, "train", batch_size=32, shuffle=True, seed=3, normalize=False)
    np.testing.assert_array_equal(_epoch(again)[0], e1x)  # same seed, same order
    other = tf_dataset(path, "train", batch_size=32, shuffle=True, seed=4, normalize=False)
    assert not np.array_equal(_epoch(other)[0], e1x)
    cached = tf_dataset(path, "train", batch_size=32, shuffle=True, seed=3, cache=True, normalize=False)
    cx, cy = _epoch(cached)
    assert sorted(cy.tolist()) == sorted(y.tolist()) and cx.shape == x.shape

    dropped = tf_dataset(path, "test", batch_size=50, drop_remainder=True, prefetch=False)
    assert dropped.element_spec[0].shape.as_list() == [50, 16, 16, 3]
    n_test = len(load_split(path, "test")[1])
    assert sum(int(b[1].shape[0]) for b in dropped) == n_test // 50 * 50
    with pytest.raises(DataError, match="no such file"):
        tf_dataset(path.with_name("missing.h5"), "train")


def test_class_balanced_epochs_draw_every_class_equally_often() -> None:
    """A 10:1 split: balance 1 evens the classes out, 0.5 draws them sqrt(10):1; an epoch keeps its length."""
    pytest.importorskip("tensorflow")
    from gtsrb_kit.store import array_dataset

    labels = np.array([0] * 1000 + [1] * 100)
    images = np.zeros((len(labels), 1, 1, 1), np.uint8)

    def epoch_labels(balance: float, seed: int = 0) -> np.ndarray:
        ds = array_dataset(images, labels, batch_size=100, shuffle=True, seed=seed, normalize=False,
                           class_balance=balance)
        return np.concatenate([yb.numpy() for _, yb in ds])

    natural, half, even = (epoch_labels(b) for b in (0.0, 0.5, 1.0))
    assert len(even) == len(labels) and sorted(natural.tolist()) == sorted(labels.tolist())
    assert 0.45 < even.mean() < 0.55  # class 1 is half the epoch instead of 1/11
    assert 0.18 < half.mean() < 0.30  # sqrt(10):1 -> 0.24
    np.testing.assert_array_equal(epoch_labels(1.0), even)  # same seed, same draws
    assert not np.array_equal(epoch_labels(1.0, seed=1), even)


def test_class_balance_is_checked() -> None:
    pytest.importorskip("tensorflow")
    from gtsrb_kit.store import array_dataset, check_class_balance

    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="not between 0 and 1; use 0"):
            check_class_balance(bad)
    with pytest.raises(ConfigError, match="pass shuffle=True"):
        array_dataset(np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 0, 0, 1]), class_balance=1.0)
