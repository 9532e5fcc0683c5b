"""Evaluation and prediction: outputs, the recorded preprocessing, CLI output and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gtsrb_kit.errors import DataError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cooked_and_model(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A cooked 24x24 RGB file and an (untrained, seeded) model saved the way train() saves it."""
    import keras

    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.models import build_model
    from gtsrb_kit.store import read_info
    from gtsrb_kit.train import save_keras_atomic

    out = tmp_path_factory.mktemp("eval")
    data = cook_dataset(synth_root, out / "data", sizes=(24,), modes=("RGB",), workers=1)[0].path
    info = read_info(data)
    keras.utils.set_random_seed(0)
    model = build_model("vgg-bn", (24, 24, 3), width=8)
    # make it confident on something: bias the output towards the first classes a little
    run = out / "run"
    run.mkdir()
    meta = {"size": 24, "mode": "RGB", "roi": False, "input_shape": [24, 24, 3], "class_names": info["class_names"],
            "model": "vgg-bn"}
    save_keras_atomic(model, run / "best.keras", meta)
    return data, run / "best.keras", synth_root


def test_evaluate_outputs(cooked_and_model: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from gtsrb_kit.evaluate import evaluate, load_model
    from gtsrb_kit.store import load_split

    data, model_path, _ = cooked_and_model
    result = evaluate(model_path, data, out_dir=tmp_path / "ev", worst=5)
    x, y = load_split(data, "test")
    probs = load_model(model_path).predict(x.astype(np.float32) / 255.0, verbose=0)
    expected = float(np.mean(probs.argmax(1) == y))
    assert result["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert result["count"] == len(y) and result["errors"] == int(np.sum(probs.argmax(1) != y))
    for name in ("confusion_matrix.png", "worst_errors.png"):
        assert (tmp_path / "ev" / name).read_bytes()[:8] == PNG
    rows = (tmp_path / "ev" / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class_id,name,precision,recall,f1,support" and len(rows) == 44
    cm = np.loadtxt(tmp_path / "ev" / "confusion_matrix.csv", delimiter=",")
    assert cm.shape == (43, 43) and cm.sum() == len(y) and np.trace(cm) == len(y) - result["errors"]
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["accuracy"] == result["accuracy"]


def test_cli_evaluate(cooked_and_model: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from gtsrb_kit.cli import app

    data, model_path, _ = cooked_and_model
    result = CliRunner().invoke(app, ["evaluate", "--model", str(model_path), "--data", str(data),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "evaluate: accuracy" in result.output and "Speed limit (20km/h)" in result.output
    assert (tmp_path / "o" / "confusion_matrix.png").is_file()


def test_evaluate_errors(cooked_and_model: tuple[Path, Path, Path], tmp_path: Path, synth_root: Path) -> None:
    from gtsrb_kit.cli import app
    from gtsrb_kit.cook import cook_dataset

    data, model_path, _ = cooked_and_model
    runner = CliRunner()
    missing = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "none.keras"), "--data", str(data)])
    assert missing.exit_code == 1 and "none.keras: no such model file" in missing.output
    gray = cook_dataset(synth_root, tmp_path / "gray", sizes=(24,), modes=("L",), workers=1)[0].path
    wrong = runner.invoke(app, ["evaluate", "--model", str(model_path), "--data", str(gray)])
    assert wrong.exit_code == 1 and "expects (24, 24, 3)" in wrong.output
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    bad = runner.invoke(app, ["predict", "--model", str(junk), str(data)])
    assert bad.exit_code == 1 and "no preprocessing record" in bad.output


def test_predict_applies_the_recorded_preprocessing(cooked_and_model: tuple[Path, Path, Path],
                                                    tmp_path: Path) -> None:
    """Raw test images through predict == the cooked test pixels through the model."""
    from gtsrb_kit.catalog import read_catalog
    from gtsrb_kit.evaluate import load_model, predict
    from gtsrb_kit.store import load_split

    data, model_path, root = cooked_and_model
    catalog = read_catalog(root, splits=("test",))
    x, y = load_split(data, "test")
    with __import__("h5py").File(data) as f:
        rel = [p.decode() if isinstance(p, bytes) else str(p) for p in f["path_test"][:6]]
    paths = [catalog.set_index("rel_path").loc[r, "path"] for r in rel]
    results = predict(model_path, paths, top_k=3)
    expected = load_model(model_path).predict(x[:6].astype(np.float32) / 255.0, verbose=0)
    for r, p in zip(results, expected):
        assert r["class_id"] == int(p.argmax()) and r["probability"] == pytest.approx(float(p.max()), rel=1e-4)
        assert len(r["top"]) == 3 and r["top"][0]["probability"] >= r["top"][1]["probability"]
    # other formats and sizes work too; the same pixels give the same answer
    rgb = np.asarray(Image.open(paths[0]).convert("RGB"))
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).resize((97, 61)).save(tmp_path / "b.jpg", quality=92)
    again = predict(model_path, [tmp_path / "a.png", tmp_path / "b.jpg"])
    assert again[0]["class_id"] == results[0]["class_id"]
    assert 0 <= again[1]["class_id"] < 43


def test_cli_predict_json_and_text(cooked_and_model: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from gtsrb_kit.cli import app

    _, model_path, root = cooked_and_model
    image = next(Path(root).rglob("*.ppm"))
    runner = CliRunner()
    out = runner.invoke(app, ["predict", "--model", str(model_path), "--json", str(image)])
    assert out.exit_code == 0, out.output
    parsed = json.loads(out.stdout)
    assert parsed[0]["path"] == str(image) and set(parsed[0]) >= {"class_id", "name", "probability"}
    text = runner.invoke(app, ["predict", "--model", str(model_path), str(image)])
    assert text.exit_code == 0 and text.output.startswith(f"{image}: {parsed[0]['class_id']} {parsed[0]['name']}")
    missing = runner.invoke(app, ["predict", "--model", str(model_path), str(tmp_path / "nope.ppm")])
    assert missing.exit_code == 1 and "nope.ppm: no such image file" in missing.output
    not_image = tmp_path / "t.png"
    not_image.write_text("hello")
    broken = runner.invoke(app, ["predict", "--model", str(model_path), str(not_image)])
    assert broken.exit_code == 1 and "not a readable image" in broken.output


def test_preprocessing_from_config_json(cooked_and_model: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A .keras without embedded metadata falls back to the run's config.json."""
    import shutil
    import zipfile

    from gtsrb_kit.evaluate import read_preprocessing

    _, model_path, _ = cooked_and_model
    plain = tmp_path / "plain.keras"
    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(plain, "w") as dst:
        for item in src.namelist():
            if item != "gtsrb_kit.json":
                dst.writestr(item, src.read(item))
    with pytest.raises(DataError, match="no preprocessing record"):
        read_preprocessing(plain)
    (tmp_path / "config.json").write_text(json.dumps({"preprocessing": {"size": 24, "mode": "RGB", "roi": True}}))
    assert read_preprocessing(plain)["roi"] is True
    shutil.copy(model_path, tmp_path / "copy.keras")
    assert read_preprocessing(tmp_path / "copy.keras")["roi"] is False  # the embedded record wins


@pytest.mark.parametrize(("width", "height", "mx", "my"), [
    (40, 40, 5, 5),  # small: 5 px margin
    (120, 60, 10, 5),  # large side: 10 % of the sign
])
def test_roi_models_crop_the_gtsrb_margin(width: int, height: int, mx: int, my: int) -> None:
    from gtsrb_kit.evaluate import preprocess_image

    image = np.zeros((height, width, 3), np.uint8)
    image[my:height - my, mx:width - mx] = (0, 200, 0)  # the sign; the margin stays black
    out = preprocess_image(image, {"size": 16, "mode": "RGB", "roi": True})
    assert out.shape == (16, 16, 3) and (out == (0, 200, 0)).all()
    uncropped = preprocess_image(image, {"size": 16, "mode": "RGB", "roi": False})
    assert (uncropped[0, 0] == 0).all()
