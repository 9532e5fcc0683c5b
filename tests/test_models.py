"""Bundled models: every one builds for several input shapes; registry and CLI listing."""

from __future__ import annotations

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
