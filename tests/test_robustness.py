"""GTSRB-C corruptions, the robustness benchmark and Grad-CAM explanations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gtsrb_kit.corrupt import CHALLENGES, LEVELS, NUM_LEVELS, check_challenge, check_level, corrupt, image_key
from gtsrb_kit.errors import ConfigError


def _signs() -> list[np.ndarray]:
    """A few synthetic sign crops of different sizes (a red disc with a grey glyph on a textured background)."""
    rng = np.random.default_rng(0)
    images = []
    for h, w in ((31, 30), (54, 53), (120, 110)):
        yy, xx = np.mgrid[:h, :w]
        base = rng.integers(60, 160, (h, w, 3)).astype(np.float32)
        disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) * 0.4) ** 2
        base[disc] = (200, 30, 40)
        base[disc & (np.abs(xx - w / 2) < w * 0.1)] = (230, 230, 230)
        images.append(base.astype(np.uint8))
    return images


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_every_challenge_changes_the_image_and_keeps_shape_and_dtype(challenge: str) -> None:
    for image in _signs():
        for level in range(1, NUM_LEVELS + 1):
            out = corrupt(image, challenge, level, seed=0, key=3)
            assert out.shape == image.shape and out.dtype == np.uint8 and out.flags.c_contiguous
            assert np.any(out != image)


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_level_5_is_harsher_than_level_1(challenge: str) -> None:
    def distance(level: int) -> float:
        return float(np.mean([np.abs(corrupt(im, challenge, level, key=k).astype(float) - im).mean()
                              for k, im in enumerate(_signs())]))

    assert distance(5) > 1.3 * distance(1)


@pytest.mark.parametrize("challenge", CHALLENGES)
def test_same_seed_same_pixels(challenge: str) -> None:
    image = _signs()[1]
    first = corrupt(image, challenge, 3, seed=7, key=image_key("00042.ppm"))
    assert np.array_equal(first, corrupt(image.copy(), challenge, 3, seed=7, key=image_key("00042.ppm")))


def test_random_challenges_depend_on_seed_and_image() -> None:
    image = _signs()[1]
    for challenge in ("noise", "rain", "snow", "shadow", "dirty_lens", "haze"):
        a = corrupt(image, challenge, 3, seed=0, key=1)
        assert not np.array_equal(a, corrupt(image, challenge, 3, seed=1, key=1)), challenge
        assert not np.array_equal(a, corrupt(image, challenge, 3, seed=0, key=2)), challenge
    assert image_key("GTSRB/Final_Test/Images/00000.ppm") == image_key("GTSRB/Final_Test/Images/00000.ppm")


@pytest.mark.parametrize("bad", ["fog", "", "Rain"])
def test_unknown_challenge(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a challenge"):
        check_challenge(bad)


@pytest.mark.parametrize("bad", [0, 6, 2.5, True, "3"])
def test_bad_level(bad: object) -> None:
    with pytest.raises(ConfigError, match="severity level"):
        check_level(bad)  # type: ignore[arg-type]


def test_every_challenge_has_five_levels() -> None:
    assert set(LEVELS) == set(CHALLENGES) and len(CHALLENGES) == 12
    assert all(len(v) == NUM_LEVELS for v in LEVELS.values())


# --------------------------------------------------------------------------- with a model

@pytest.fixture(scope="module")
def trained(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained one epoch on a 24x24 RGB cook of the synthetic tree, and its data file."""
    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.train import train

    out = tmp_path_factory.mktemp("rob")
    data = cook_dataset(synth_root, out / "data", sizes=(24,), modes=("RGB",), workers=1)[0].path
    train(data, model="vgg-bn", epochs=1, batch_size=64, run_dir=out / "run", seed=0, verbose=0,
          model_options={"width": 8})
    return out / "run" / "best.keras", data


@pytest.mark.slow
def test_robustness_benchmark(trained: tuple[Path, Path], synth_root: Path, tmp_path: Path) -> None:
    from gtsrb_kit.evaluate import evaluate
    from gtsrb_kit.robustness import run_robustness
    from gtsrb_kit.store import load_split

    model, data = trained
    kwargs = {"challenges": ("snow", "noise"), "workers": 2, "seed": 3}
    result = run_robustness(model, synth_root, out=tmp_path / "a", write=tmp_path / "sets", baseline=model, **kwargs)
    # the clean set is the test split as cook makes it: the same accuracy as evaluate
    assert result["clean_accuracy"] == pytest.approx(evaluate(model, data, out_dir=tmp_path / "ev")["accuracy"])
    assert set(result["challenges"]) == {"snow", "noise"} and result["images"] == 172
    assert all(len(e["accuracy"]) == 5 for e in result["challenges"].values())
    assert result["baseline"]["mce"] == pytest.approx(1.0)  # against itself
    on_disk = json.loads((tmp_path / "a" / "robustness.json").read_text())
    assert on_disk["mean_corruption_accuracy"] == result["mean_corruption_accuracy"]
    for png in ("robustness.png", "challenges.png"):
        assert (tmp_path / "a" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved sets load as cooked files; the same seed gives the same pixels, in or out of a pool
    x_clean, y = load_split(tmp_path / "sets" / "clean" / "set-24x24-RGB.h5", "test")
    assert np.array_equal(x_clean, load_split(data, "test")[0]) and np.array_equal(y, load_split(data, "test")[1])
    x_snow, _ = load_split(tmp_path / "sets" / "snow-5" / "set-24x24-RGB.h5", "test")
    assert x_snow.shape == x_clean.shape and not np.array_equal(x_snow, x_clean)
    run_robustness(model, synth_root, out=tmp_path / "b", write=tmp_path / "again", **{**kwargs, "workers": 0})
    again, _ = load_split(tmp_path / "again" / "snow-5" / "set-24x24-RGB.h5", "test")
    assert np.array_equal(again, x_snow)


def test_robustness_rejects_unknown_challenge(trained: tuple[Path, Path], synth_root: Path, tmp_path: Path) -> None:
    from gtsrb_kit.robustness import run_robustness

    with pytest.raises(ConfigError, match="'fog': not a challenge"):
        run_robustness(trained[0], synth_root, out=tmp_path, challenges=("fog",))
    assert not any(tmp_path.iterdir())


def test_grad_cam_maps(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from gtsrb_kit.evaluate import load_model
    from gtsrb_kit.explain import explain, grad_cam, last_conv_layer
    from gtsrb_kit.store import load_split

    model_path, data = trained
    model = load_model(model_path)
    x, _ = load_split(data, "test")
    maps = grad_cam(model, x[:10])
    assert maps.shape == (10, 24, 24) and maps.dtype == np.float32
    assert 0 <= maps.min() and maps.max() <= 1
    assert all(m.max() > m.min() for m in maps if m.max() > 0) and any(m.max() > 0 for m in maps)
    result = explain(model_path, data, out=tmp_path, count=6)
    for png in result["files"].values():
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "explain.json").read_text())["errors"] == result["errors"]


@pytest.mark.parametrize("name", ["v1", "v2", "v3", "v3-bn", "vgg-bn", "stn-vgg", "resnet-small"])
def test_grad_cam_finds_the_last_convolution_of_every_bundled_model(name: str) -> None:
    from gtsrb_kit.explain import grad_cam, last_conv_layer
    from gtsrb_kit.models import build_model

    import keras

    model = build_model(name, input_shape=(32, 32, 3))
    names = [layer.name for layer in model.layers]
    chosen = names.index(last_conv_layer(model))
    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]
    assert convs and chosen >= convs[-1] and len(model.layers[chosen].output.shape) == 4
    maps = grad_cam(model, np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8))
    assert maps.shape == (2, 32, 32)


def test_grad_cam_of_a_spatial_transformer_is_mapped_back_to_the_input() -> None:
    from gtsrb_kit.explain import unwarp
    from gtsrb_kit.models import spatial_transform

    ys, xs = np.meshgrid(np.linspace(-1, 1, 21), np.linspace(-1, 1, 21), indexing="ij")
    heat = np.exp(-((xs - 0.2) ** 2 + ys ** 2) * 4)[None].astype(np.float32)  # a blob in input coordinates
    zoom = np.float32([[0.5, 0, 0.2, 0, 0.5, 0]])  # the view: the centre half of the input, around x = 0.2
    view = np.asarray(spatial_transform(heat[..., None], zoom))[..., 0]
    assert np.unravel_index(view[0].argmax(), (21, 21)) == (10, 10)  # the view is centred on the blob
    back = unwarp(view, zoom)
    seen = (np.abs(xs - 0.2) <= 0.5 + 1e-6) & (np.abs(ys) <= 0.5 + 1e-6)
    assert np.allclose(back[0][seen], heat[0][seen], atol=0.02) and not back[0][~seen].any()
