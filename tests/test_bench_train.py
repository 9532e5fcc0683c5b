"""benchmarks/bench_train.py end to end on a tiny cooked file: per-epoch test accuracy, summary, JSON."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# ImageDataGenerator (Keras 3 legacy code) calls a deprecated scipy namespace on every image
pytestmark = pytest.mark.filterwarnings("ignore:Please import `affine_transform`:DeprecationWarning")


@pytest.fixture(scope="module")
def tiny(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gtsrb_kit.cook import cook_dataset

    out = tmp_path_factory.mktemp("bench-cooked")
    return cook_dataset(synth_root, out, sizes=(24,), modes=("RGB",), val_fraction=0.5, workers=1)[0].path


def test_bench_train_both_recipes(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script
    bench = importlib.import_module("bench_train")
    out = tmp_path / "results.json"
    bench.main([str(tiny), "--epochs", "1", "--model-option", "width=8", "--batch-size", "64", "--out", str(out),
                "--keep", str(tmp_path / "kept")])
    assert (tmp_path / "kept" / "best.keras").is_file() and (tmp_path / "kept" / "metrics.json").is_file()
    printed = capsys.readouterr().out
    assert "### Summary" in printed and "ratio course / gtsrb-kit" in printed and "TensorFlow" in printed
    results = json.loads(out.read_text())
    assert "nothing is chosen" in results["note"]
    assert {"cpu", "gpus", "tensorflow", "cores", "load_average", "load_average_end"} <= set(results["environment"])
    for name in ("gtsrb-kit", "course"):
        recipe = results["recipes"][name]
        (row,) = recipe["epochs"]
        assert row["epoch"] == 1 and 0.0 <= row["test_accuracy"] <= 1.0 and row["train_seconds"] > 0
        assert row["images_per_s"] > 0 and row["val_accuracy"] is not None
        summary = recipe["summary"]
        assert set(summary["time_to"]) == {"0.99", "0.995"}
        assert summary["best_test_accuracy"] == row["test_accuracy"] and summary["images_per_s"] > 0
    assert results["recipes"]["gtsrb-kit"]["settings"]["model_options"] == {"width": 8}
    assert results["recipes"]["course"]["settings"]["model"] == "v2"
    assert {"accuracy", "course_seconds", "gtsrb_kit_seconds", "ratio"} <= set(results["comparison"])


def test_bench_train_time_limit_and_targets(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-minutes stops after the epoch that passes it; a reached target records that epoch's time."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench_train")
    results = bench.main([str(tiny), "--recipes", "course", "--epochs", "3", "--max-minutes", "1e-6",
                          "--targets", "0,1.01"])
    recipe = results["recipes"]["course"]
    assert len(recipe["epochs"]) == 1 and results["comparison"] is None
    assert recipe["summary"]["time_to"] == {"0": recipe["epochs"][0]["train_seconds"], "1.01": None}


def test_bench_levers(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture) -> None:
    """Each lever in its own process, images/s and the ratio to base, printed and in JSON."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench_levers")
    out = tmp_path / "levers.json"
    bench.main([str(tiny), "--levers", "base,bfloat16", "--images", "128", "--warmup", "1",
                "--model-option", "width=8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| base | batch 64, float32, host pipeline |" in printed and "| 1.00x |" in printed
    assert all(len(r["rounds"]) == 1 for r in json.loads(out.read_text()))
    rows = json.loads(out.read_text())
    assert [r["lever"] for r in rows] == ["base", "bfloat16"]  # each lever a fresh process: two keep it short
    assert all(r["images_per_s"] > 0 for r in rows)
    assert rows[1]["settings"]["mixed_precision"] == "mixed_bfloat16"
    assert rows[0]["settings"]["model_options"] == {"width": 8}
    with pytest.raises(SystemExit):
        bench.main([str(tiny), "--levers", "base,warp"])
