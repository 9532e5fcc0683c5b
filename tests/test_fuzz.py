"""Seeded fuzzing of the two readers that take files from strangers: the image decoder and the
cooked-file (HDF5) reader.

Real small files (a PPM, a PNG and a JPEG; a tiny cooked file) are truncated at random lengths
and get random bytes flipped. The only outcomes allowed: a well-formed result, or one
:class:`DataError` line that names the file. Any other exception fails the test.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gtsrb_kit.catalog import decode_image_bytes
from gtsrb_kit.errors import DataError
from gtsrb_kit.store import load_split, read_info

SEED = 20240611


def _mutations(data: bytes, rng: np.random.Generator, count: int) -> list[tuple[str, bytes]]:
    """``count`` variants of ``data``: half truncations, half 1-8 flipped bytes."""
    out = []
    for i in range(count):
        if i % 2 == 0:
            cut = int(rng.integers(0, len(data)))
            out.append((f"truncated at {cut}", data[:cut]))
        else:
            buf = bytearray(data)
            at = rng.integers(0, len(buf), int(rng.integers(1, 9)))
            for pos in at.tolist():
                buf[pos] ^= int(rng.integers(1, 256))
            out.append((f"bytes flipped at {sorted(at.tolist())}", bytes(buf)))
    return out


def _assert_one_line(exc: DataError, name: str) -> None:
    text = str(exc)
    assert "\n" not in text and text.startswith(f"{name}: ") and text.count(name) == 1, text
    assert "object at 0x" not in text, text


def _images() -> dict[str, bytes]:
    pixels = np.random.default_rng(0).integers(0, 256, (21, 23, 3), dtype=np.uint8)
    files = {"sign.ppm": b"P6\n23 21\n255\n" + pixels.tobytes()}
    for name, fmt in (("sign.png", "PNG"), ("sign.jpg", "JPEG")):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        files[name] = buf.getvalue()
    return files


@pytest.mark.parametrize("name", ["sign.ppm", "sign.png", "sign.jpg"])
def test_image_decoder_survives_mutations(name: str) -> None:
    data = _images()[name]
    rng = np.random.default_rng([SEED, len(name), data[1]])
    for what, mutated in _mutations(data, rng, 100):
        try:
            image = decode_image_bytes(mutated, name)
        except DataError as exc:
            _assert_one_line(exc, name)
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name} {what}: {type(exc).__name__}: {exc}")
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, what


@pytest.fixture(scope="module")
def tiny_cooked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.synth import generate_dataset

    base = tmp_path_factory.mktemp("fuzz")
    root = generate_dataset(base / "tree", tracks_per_class=1, frames_per_track=2, test_per_class=1, seed=0)
    (result,) = cook_dataset(root, base / "data", sizes=(4,), modes=("L",), workers=1)
    return result.path


def test_hdf5_reader_survives_mutations(tiny_cooked: Path, tmp_path: Path) -> None:
    data = tiny_cooked.read_bytes()
    good = read_info(tiny_cooked)
    rng = np.random.default_rng(SEED)
    target = tmp_path / "set-4x4-L.h5"
    outcomes = {"ok": 0, "error": 0}
    for what, mutated in _mutations(data, rng, 200):
        target.write_bytes(mutated)
        try:
            info = read_info(target)
            x, y = load_split(target, "train")
        except DataError as exc:
            _assert_one_line(exc, str(target))
            outcomes["error"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{what}: {type(exc).__name__}: {exc}")
        assert {s: d["count"] for s, d in info["splits"].items()} == {s: d["count"] for s, d in good["splits"].items()}
        assert x.shape == good["splits"]["train"]["shape"] and x.dtype == np.uint8 and len(y) == len(x), what
        outcomes["ok"] += 1
    assert outcomes["error"] > 50, outcomes  # the mutations do damage: most truncations are caught
