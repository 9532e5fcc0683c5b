"""Export: round trip per format with parity, predict through the runtimes, ONNX without TensorFlow, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gtsrb_kit.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("onnx", "litert", "saved_model")


@pytest.fixture(scope="module")
def run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a tiny vgg-bn (width 8) trained 1 epoch on a 24x24 RGB cook of the synthetic set."""
    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.train import train

    tmp = tmp_path_factory.mktemp("export")
    cooked = cook_dataset(synth_root, tmp / "data", sizes=(24,), modes=("RGB",), val_fraction=0.5, workers=1)[0].path
    train(cooked, model="vgg-bn", epochs=1, batch_size=64, run_dir=tmp / "run", seed=0, verbose=0,
          model_options={"width": 8})
    return tmp / "run"


@pytest.fixture(scope="module")
def exports(run: Path) -> dict[str, dict]:
    from gtsrb_kit.export import export_model

    return {fmt: export_model(run / "best.keras", fmt) for fmt in FORMATS}


@pytest.fixture(scope="module")
def images(synth_root: Path) -> list[Path]:
    return sorted(synth_root.rglob("*.ppm"))[:5]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(exports: dict[str, dict], run: Path, images: list[Path], fmt: str) -> None:
    from gtsrb_kit.evaluate import predict
    from gtsrb_kit.export import predict_exported, read_recipe

    result = exports[fmt]
    path = Path(result["path"])
    assert path.name == {"onnx": "best.onnx", "litert": "best.tflite", "saved_model": "best.saved_model"}[fmt]
    assert path.exists() and result["bytes"] > 10_000
    parity = result["parity"]
    assert parity["images"] > 100 and parity["same_class"] == parity["images"]
    assert parity["max_prob_diff"] < 1e-4 and parity["keras_accuracy"] == parity["exported_accuracy"]
    recipe = read_recipe(path)
    assert Path(result["recipe"]) == path.with_name(path.name + ".json")
    assert (recipe["size"], recipe["mode"], recipe["roi"], len(recipe["class_names"])) == (24, "RGB", False, 43)
    assert recipe["input"]["shape"] == [None, 24, 24, 3] and recipe["input"]["dtype"] == "float32"
    assert recipe["parity"]["same_class"] == parity["images"]
    assert not list(run.glob(".*.tmp")), "temporary files left behind"
    keras_out = predict(run / "best.keras", images, top_k=3)
    exported = predict_exported(path, images, top_k=3)
    assert [r["class_id"] for r in exported] == [r["class_id"] for r in keras_out]
    assert [[t["class_id"] for t in r["top"]] for r in exported] == [[t["class_id"] for t in r["top"]] for r in keras_out]
    assert np.allclose([r["probability"] for r in exported], [r["probability"] for r in keras_out], atol=1e-5)
    assert exported[0]["path"] == str(images[0]) and exported[0]["name"] == recipe["class_names"][exported[0]["class_id"]]


def test_onnx_predict_without_tensorflow(exports: dict[str, dict], images: list[Path]) -> None:
    """``gtsrb-kit predict --model best.onnx`` (the CLI, through evaluate.predict) works without TensorFlow:
    here TensorFlow, Keras and the other packages the light install leaves out cannot even be imported."""
    args = ["predict", "--model", exports["onnx"]["path"], *map(str, images), "--json"]
    code = (
        "import sys\n"
        "class NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'tensorboard', 'tf2onnx', 'albumentations',\n"
        "                                  'matplotlib', 'h5py', 'yaml'):\n"
        "            raise ImportError(name + ' is not installed')\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "from gtsrb_kit.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed, loaded = proc.stdout.strip().rsplit("\n", 1)
    assert loaded == "False False"
    from gtsrb_kit.export import predict_exported

    assert json.loads(printed) == predict_exported(exports["onnx"]["path"], images)


def test_cli_export(run: Path, tmp_path: Path) -> None:
    from gtsrb_kit.cli import app

    out = tmp_path / "deploy" / "sign.onnx"
    result = CliRunner().invoke(app, ["export", "--model", str(run / "best.keras"), "--format", "onnx",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"export: {out} (") and "same class" in lines[0], lines
    assert out.is_file() and (tmp_path / "deploy" / "sign.onnx.json").is_file()


def test_cli_errors(run: Path, tmp_path: Path) -> None:
    from gtsrb_kit.cli import app

    runner = CliRunner()
    unknown = runner.invoke(app, ["export", "--model", str(run / "best.keras"), "--format", "coreml"])
    assert unknown.exit_code == 2 and unknown.output.strip().splitlines() == [
        "error: unknown export format 'coreml'; use one of onnx, litert, saved_model"]
    missing = runner.invoke(app, ["export", "--model", str(tmp_path / "nope.keras"), "--format", "onnx"])
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1
    assert missing.output.startswith("error: ") and "no such model file" in missing.output
    quant = runner.invoke(app, ["export", "--model", str(run / "best.keras"), "--format", "onnx", "--quantize", "int8"])
    assert quant.exit_code == 2 and "litert only" in quant.output


def test_library_errors(run: Path, exports: dict[str, dict], tmp_path: Path, images: list[Path]) -> None:
    from gtsrb_kit.export import export_model, predict_exported

    with pytest.raises(ConfigError, match="must end in .onnx"):
        export_model(run / "best.keras", "onnx", tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="unknown quantization"):
        export_model(run / "best.keras", "litert", quantize="fp4")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(Path(exports["onnx"]["path"]).read_bytes())
    with pytest.raises(DataError, match="no preprocessing record lonely.onnx.json"):
        predict_exported(lonely, images)
    with pytest.raises(DataError, match="no such exported model"):
        predict_exported(tmp_path / "absent.tflite", images)
    with pytest.raises(DataError, match="no such image file"):
        predict_exported(exports["litert"]["path"], [tmp_path / "absent.png"])


def test_disagreement_writes_nothing(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gtsrb_kit.export as export

    real = export.exported_probs
    monkeypatch.setattr(export, "exported_probs", lambda *a, **k: np.roll(real(*a, **k), 1, axis=1))
    out = tmp_path / "broken.tflite"
    with pytest.raises(DataError, match=r"broken.tflite on set-24x24-RGB.h5: the export disagrees .* nothing written"):
        export.export_model(run / "best.keras", "litert", out)
    assert list(tmp_path.iterdir()) == []


def test_int8_quantization(run: Path, exports: dict[str, dict]) -> None:
    from gtsrb_kit.export import export_model

    result = export_model(run / "best.keras", "litert", quantize="int8", max_accuracy_drop=1.0)
    assert Path(result["path"]).name == "best.int8.tflite"
    assert result["bytes"] < exports["litert"]["bytes"] / 2
    assert result["parity"]["images"] == exports["litert"]["parity"]["images"]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_models_export(run: Path, tmp_path: Path, policy: str) -> None:
    """A model trained with mixed precision (bfloat16 on CPUs, float16 on GPUs) loads, evaluates and exports
    in float32; without that, ONNX rejects its graph and LiteRT its casts."""
    import keras

    from gtsrb_kit.evaluate import load_model
    from gtsrb_kit.export import export_model
    from gtsrb_kit.models import build_model

    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = build_model("vgg-bn", (24, 24, 3), 43, width=8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(load_model(run / "best.keras").get_weights())
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("config.json", "metrics.json"):
        (folder / name).write_bytes((run / name).read_bytes())
    mixed.save(folder / "best.keras")
    loaded = load_model(folder / "best.keras")
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    for fmt in ("onnx", "litert"):
        result = export_model(folder / "best.keras", fmt)
        assert result["parity"]["same_class"] == result["parity"]["images"], fmt


def test_spatial_transformer_exports(run: Path, tmp_path: Path) -> None:
    """stn-vgg's sampler (gathers at computed indices) converts to ONNX and LiteRT and agrees with Keras."""
    import keras

    from gtsrb_kit.export import export_model
    from gtsrb_kit.models import THETA_LAYER, build_model

    keras.utils.set_random_seed(0)
    model = build_model("stn-vgg", (24, 24, 3), 43, width=8, loc_width=8)
    model.get_layer(THETA_LAYER).bias.assign(np.float32([0.9, 0.1, 0.05, -0.1, 0.8, -0.05]))  # a real warp
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("config.json", "metrics.json"):
        (folder / name).write_bytes((run / name).read_bytes())
    model.save(folder / "best.keras")
    for fmt in ("onnx", "litert"):
        result = export_model(folder / "best.keras", fmt)
        assert result["parity"]["max_prob_diff"] < 1e-4, fmt
