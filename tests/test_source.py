"""The random-access source over a cooked split, read from several processes."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest

from gtsrb_kit.store import SplitSource, load_split


@pytest.fixture(scope="module")
def cooked(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gtsrb_kit.cook import cook_dataset

    out = tmp_path_factory.mktemp("source")
    return cook_dataset(synth_root, out, sizes=(24,), modes=("L",), workers=1)[0].path


def _read(source: SplitSource, indices: list[int]) -> list[tuple[np.ndarray, int]]:
    return [source[i] for i in indices]


def test_source_matches_load_split(cooked: Path) -> None:
    x, y = load_split(cooked, "test")
    source = SplitSource(cooked, "test")
    assert len(source) == len(x) and source.shape == x.shape
    for i in (0, 7, len(x) - 1, -1):
        image, label = source[i]
        assert np.array_equal(image, x[i]) and label == y[i] and isinstance(label, int)
    image, _ = SplitSource(cooked, "test", normalize=True)[3]
    assert image.dtype == np.float32 and np.allclose(image, x[3] / 255.0)
    with pytest.raises(IndexError, match="out of range"):
        source[len(x)]
    assert [label for _, label in source] == list(y)  # iterable through __getitem__, as a Dataset is


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_source_in_worker_processes(cooked: Path, method: str) -> None:
    source = SplitSource(cooked, "train")
    source[0]  # opened here first: workers must not inherit the handle
    x, y = load_split(cooked, "train")
    parts = [list(range(k, len(x), 3)) for k in range(3)]
    context = multiprocessing.get_context(method)
    with cf.ProcessPoolExecutor(2, mp_context=context) as pool:
        results = list(pool.map(_read, [source] * 3, parts))
    for indices, got in zip(parts, results):
        assert all(np.array_equal(img, x[i]) and lab == y[i] for i, (img, lab) in zip(indices, got))
    assert pickle.loads(pickle.dumps(source))._handle is None


def test_source_under_keras_pydataset(cooked: Path) -> None:
    import keras

    source = SplitSource(cooked, "val", normalize=True)

    class Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return -(-len(source) // 32)

        def __getitem__(self, k: int) -> np.ndarray:
            return np.stack([source[i][0] for i in range(32 * k, min(len(source), 32 * (k + 1)))])

    inputs = keras.Input(source.shape[1:])
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    got = model.predict(Batches(workers=2), verbose=0)
    x, _ = load_split(cooked, "val", normalize=True)
    assert np.allclose(got[:, 0], x.mean(axis=(1, 2, 3)), atol=1e-5)
