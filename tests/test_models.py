"""Bundled models: every one builds for several input shapes; registry and CLI listing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gtsrb_kit.errors import ConfigError
from gtsrb_kit.models import DEFAULT_MODEL, MODELS, build_model, list_models


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_builds_for_several_shapes(name: str) -> None:
    for shape in [(24, 24, 1), (48, 48, 3), (40, 32, 1)]:
        model = build_model(name, shape, num_classes=43)
        assert model.input_shape == (None, *shape)
        assert model.output_shape == (None, 43)
        assert model.count_params() > 10_000
    out = np.asarray(build_model(name, (24, 24, 1), num_classes=7)(np.zeros((2, 24, 24, 1), np.float32)))
    assert out.shape == (2, 7) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_registry() -> None:
    names = [n for n, _ in list_models()]
    assert {"v1", "v2", "v3", "v3-bn"} <= set(names)
    assert DEFAULT_MODEL in names and DEFAULT_MODEL not in {"v1", "v2", "v3", "v3-bn"}
    default = build_model(DEFAULT_MODEL, (48, 48, 3))
    assert 200_000 <= default.count_params() <= 1_000_000  # small enough to train on a CPU
    kinds = {type(layer).__name__ for layer in default.layers}
    assert {"BatchNormalization", "GlobalAveragePooling2D"} <= kinds
    v3 = {type(layer).__name__ for layer in build_model("v3", (48, 48, 3)).layers}
    v3bn = {type(layer).__name__ for layer in build_model("v3-bn", (48, 48, 3)).layers}
    assert "BatchNormalization" not in v3 and "BatchNormalization" in v3bn


def test_build_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model 'vgg99'"):
        build_model("vgg99", (48, 48, 3))
    with pytest.raises(ConfigError, match="too small"):
        build_model("v1", (8, 8, 3))
    with pytest.raises(ConfigError, match=r"\(height, width, channels\)"):
        build_model("v1", (48, 48))
    with pytest.raises(ConfigError, match="does not accept options"):
        build_model("v1", (48, 48, 3), width=8)


def test_cli_models_lists_parameter_counts() -> None:
    from gtsrb_kit.cli import app
    from gtsrb_kit.models import count_params

    result = CliRunner().invoke(app, ["models", "--shape", "24x24x1"])
    assert result.exit_code == 0, result.output
    for name in MODELS:
        assert name in result.output
    assert f"{count_params('vgg-bn', (24, 24, 1)):,}" in result.output
    bad = CliRunner().invoke(app, ["models", "--shape", "48x48"])
    assert bad.exit_code == 2 and "error: --shape '48x48'" in bad.output


def test_spatial_transform_samples_the_affine_grid_and_passes_gradients() -> None:
    import tensorflow as tf

    from gtsrb_kit.models import spatial_transform

    images = np.random.default_rng(0).random((2, 20, 16, 3)).astype(np.float32)
    identity = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (2, 1))
    assert np.allclose(np.asarray(spatial_transform(images, identity)), images, atol=1e-5)
    # one pixel to the right in x (the grid spans [-1, 1] over 16 columns); the last column repeats the border
    shifted = np.asarray(spatial_transform(images, identity + np.float32([0, 0, 2 / 15, 0, 0, 0])))
    assert np.allclose(shifted[:, :, :-1], images[:, :, 1:], atol=1e-5)
    assert np.allclose(shifted[:, :, -1], images[:, :, -1], atol=1e-5)
    half = np.asarray(spatial_transform(images, identity + np.float32([0, 0, 0, 0, 0, 1 / 19])))  # half a row down
    assert np.allclose(half[:, :-1], (images[:, :-1] + images[:, 1:]) / 2, atol=1e-5)
    zoom = np.asarray(spatial_transform(images, np.tile(np.float32([0.5, 0, 0, 0, 0.5, 0]), (2, 1))))
    assert not np.allclose(zoom, images, atol=1e-2)
    theta = tf.Variable(identity + 0.01)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(spatial_transform(tf.constant(images), theta) * images)
    assert np.abs(tape.gradient(loss, theta).numpy()).min() > 0


def test_stn_vgg_localization_features_keep_varying() -> None:
    """However far the localization net's weights drift (what froze its map in the runs before batch
    norm: the features grew until every unit was dead or saturated), each feature stays on for some
    images and off for others, and theta's weights get a gradient: the map can differ per image."""
    import keras
    import tensorflow as tf

    from gtsrb_kit.models import LOCALIZATION_LAYER, THETA_LAYER

    model = build_model("stn-vgg", (24, 24, 3), num_classes=5)
    hidden = next(i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Dense))
    for layer in model.layers[:hidden]:  # the localization convolutions: a large offset for every image
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.beta.assign(layer.beta + 50.0)
    model.layers[hidden].kernel.assign(model.layers[hidden].kernel * 1000.0)
    images = tf.constant(np.random.default_rng(2).random((32, 24, 24, 3)).astype(np.float32))
    features = keras.Model(model.input, model.get_layer(LOCALIZATION_LAYER).output)(images, training=True)
    on = (np.asarray(features) > 0).mean(axis=0)
    assert ((on > 0.1) & (on < 0.9)).mean() > 0.5
    kernel = model.get_layer(THETA_LAYER).kernel
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.math.log(model(images, training=True)[:, 0]))
    assert np.abs(tape.gradient(loss, kernel).numpy()).sum() > 0


def test_stn_vgg_starts_from_the_unwarped_image_and_reloads_in_a_fresh_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    import keras

    from gtsrb_kit.models import THETA_LAYER

    model = build_model("stn-vgg", (24, 24, 3), num_classes=5)
    images = np.random.default_rng(1).random((3, 24, 24, 3)).astype(np.float32)
    warped = keras.Model(model.input, model.get_layer("warp").output)(images)
    assert np.allclose(np.asarray(warped), images, atol=1e-5)
    model.get_layer(THETA_LAYER).bias.assign(np.float32([0.8, 0.1, 0.05, -0.1, 0.9, 0.0]))
    model.save(tmp_path / "stn.keras")
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "expected.npy", np.asarray(model(images)))
    script = ("import sys, numpy as np\nfrom gtsrb_kit.evaluate import load_model\n"
              "d = sys.argv[1]\nm = load_model(d + '/stn.keras')\n"
              "assert np.allclose(np.asarray(m(np.load(d + '/x.npy'))), np.load(d + '/expected.npy'), atol=1e-5)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
