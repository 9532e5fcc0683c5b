"""Sweep reports: rows from disk, partial sweeps, concurrent writers, Markdown/HTML/PNG, `report` command."""

from __future__ import annotations

import base64
import json
import multiprocessing
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from gtsrb_kit.cli import app
from gtsrb_kit.errors import DataError
from gtsrb_kit.report import build_report, collect_runs, read_history, runs_frame, update_report_json, write_report
from gtsrb_kit.sweep import freeze_plan, plan_from_dict

runner = CliRunner()


def make_sweep(tmp: Path, accuracies: dict[str, float | None], *, models=("v1", "v2"),
               vals: dict[str, float] | None = None, seeds: tuple[int, ...] | None = None) -> Path:
    """A sweep folder: 2 datasets x models; runs given an accuracy are finished, None = interrupted.

    ``vals``: validation accuracies (default: test + 0.01); ``seeds``: explicit runs, one per seed.
    """
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    for stem in ("set-24x24-L", "set-24x24-RGB"):
        (data / f"{stem}.h5").write_bytes(b"x" * 250_000)
    spec = {"name": "tiny", "datasets": [str(data / "set-24x24-*.h5")], "train": {"epochs": 3, "batch_size": 8}}
    if seeds is None:
        spec["models"] = list(models)
    else:
        spec["runs"] = [{"dataset": d, "model": m, "seed": s, "name": f"{d}__{m}__s{s}"}
                        for d in ("set-24x24-L", "set-24x24-RGB") for m in models for s in seeds]
    plan = plan_from_dict(spec)
    run_dir = tmp / "runs"
    freeze_plan(plan, run_dir)
    for run in plan.runs:
        if run.name not in accuracies:
            continue
        folder = run_dir / run.name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"name": run.name, "dataset_path": str(run.dataset.path),
                                                     "identity": run.identity()}))
        (folder / "last.keras").write_bytes(b"ckpt")
        acc = accuracies[run.name]
        (folder / "history.csv").write_text(
            "epoch,accuracy,loss,val_accuracy,val_loss\n1,0.2,2.0,0.3,1.9\n2,0.5,1.0,0.55,1.1\n")
        if acc is None:
            continue
        (folder / "best.keras").write_bytes(b"m" * 500_000)
        (folder / "metrics.json").write_text(json.dumps({
            "test_accuracy": acc, "best_val_accuracy": (vals or {}).get(run.name, acc + 0.01), "best_epoch": 2,
            "epochs_completed": 3, "duration_s": 12.5, "model": run.model, "data": str(run.dataset.path),
            "model_params": 123456, "seed": run.settings.get("seed", 0), "augment": "none", "batch_size": 8,
            "per_class": [{"class_id": 0, "recall": acc, "support": 5}, {"class_id": 1, "recall": 1.0, "support": 5},
                          {"class_id": 2, "recall": 0.0, "support": 0}],
        }))
    return run_dir


ACC = {
    "set-24x24-L__v1__none": 0.81, "set-24x24-L__v2__none": 0.92,
    "set-24x24-RGB__v1__none": 0.88, "set-24x24-RGB__v2__none": None,
}


def test_rows_and_partial_sweep(tmp_path: Path) -> None:
    run_dir = make_sweep(tmp_path, {k: v for k, v in ACC.items() if k != "set-24x24-RGB__v1__none"})
    (run_dir / "set-24x24-RGB__v1__none").mkdir()
    (run_dir / "set-24x24-RGB__v1__none" / "failed.json").write_text(json.dumps({"error": "ValueError: nan loss"}))
    rows = {r["run"]: r for r in collect_runs(run_dir)}
    assert list(rows) == list(ACC)  # plan order
    assert [rows[k]["status"] for k in ACC] == ["done", "done", "failed", "interrupted"]
    r = rows["set-24x24-L__v2__none"]
    assert (r["dataset"], r["model"], r["augment"], r["test_accuracy"], r["epochs"]) == \
        ("set-24x24-L", "v2", "none", 0.92, 3)
    assert r["dataset_mb"] == 0.25 and r["model_mb"] == 0.5 and r["duration_s"] == 12.5
    assert rows["set-24x24-RGB__v1__none"]["error"] == "ValueError: nan loss"
    assert rows["set-24x24-RGB__v2__none"]["test_accuracy"] is None

    report = build_report(run_dir)
    assert report["counts"] == {"done": 2, "failed": 1, "interrupted": 1}
    assert report["best"] == "set-24x24-L__v2__none" and not report["complete"]
    assert report["best_per_dataset"] == {"set-24x24-L": "set-24x24-L__v2__none"}
    assert build_report(run_dir) == report  # deterministic


def test_pending_runs_and_plain_run_folders(tmp_path: Path) -> None:
    run_dir = make_sweep(tmp_path, {"set-24x24-L__v1__none": 0.7})
    # A stray training run (not in the plan) is listed after the planned ones.
    stray = run_dir / "my-own-run"
    stray.mkdir()
    (stray / "metrics.json").write_text(json.dumps({"test_accuracy": 0.99, "model": "v3",
                                                    "data": str(tmp_path / "data" / "set-24x24-L.h5")}))
    rows = collect_runs(run_dir)
    assert [r["status"] for r in rows] == ["done", "pending", "pending", "pending", "done"]
    assert rows[-1]["run"] == "my-own-run" and rows[-1]["dataset"] == "set-24x24-L" and rows[-1]["model"] == "v3"
    assert rows[1]["dataset_mb"] == 0.25  # planned dataset found through plan.json
    frame = runs_frame(run_dir)
    assert len(frame) == 5 and frame.loc[4, "test_accuracy"] == 0.99


def test_interrupted_training_run_is_described_by_its_config(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "v1-set-24x24-L"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"args": {"model": "v1", "augment": "fidle", "epochs": 4,
                                                          "batch_size": 32, "seed": 2, "data": "set-24x24-L.h5"}}))
    (run / "last.keras").write_bytes(b"")
    [row] = collect_runs(tmp_path / "runs")
    assert (row["status"], row["model"], row["augment"], row["epochs"], row["seed"]) == ("interrupted", "v1", "fidle", 4, 2)
    assert row["dataset"] == "set-24x24-L"


def test_history_reading(tmp_path: Path) -> None:
    (tmp_path / "history.json").write_text(json.dumps([{"epoch": 1, "accuracy": 0.1}, {"epoch": 2, "accuracy": 0.2}]))
    assert read_history(tmp_path) == {"epoch": [1.0, 2.0], "accuracy": [0.1, 0.2]}
    (tmp_path / "history.json").write_text(json.dumps({"accuracy": [0.1, 0.2], "val_accuracy": [0.15, 0.3]}))
    assert read_history(tmp_path) == {"accuracy": [0.1, 0.2], "val_accuracy": [0.15, 0.3]}
    (tmp_path / "history.csv").write_text("epoch,accuracy,val_accuracy\n0,0.5,0.4\n1,0.6,0.45\n")
    assert read_history(tmp_path)["val_accuracy"] == [0.4, 0.45]


def _update(run_dir: str) -> None:
    update_report_json(run_dir)


def test_concurrent_report_writers_never_lose_rows(tmp_path: Path) -> None:
    run_dir = make_sweep(tmp_path, {k: v for k, v in ACC.items() if v is not None})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_update, args=(str(run_dir),)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["counts"] == {"done": 3, "pending": 1}
    assert not list(run_dir.glob(".report.json.*"))  # no temporary files left behind


def test_write_report_files(tmp_path: Path) -> None:
    run_dir = make_sweep(tmp_path, ACC)
    files = write_report(run_dir)
    assert json.loads(files.json.read_text())["counts"] == {"done": 3, "interrupted": 1}
    md = files.markdown.read_text()
    assert "| **set-24x24-L__v2__none** | **done** |" in md  # best of its dataset in bold
    assert "| set-24x24-L__v1__none | done |" in md and "| set-24x24-RGB__v2__none | interrupted |" in md
    assert "![Test accuracy by dataset and model](charts/accuracy.png)" in md
    page = files.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert '<tr class="best"><td>set-24x24-RGB__v1__none</td>' in page
    assert "src=\"http" not in page and "<link" not in page  # self-contained
    images = [part.split('"')[0] for part in page.split('src="data:image/png;base64,')[1:]]
    assert len(images) == 2
    assert base64.b64decode(images[0]) == files.accuracy_chart.read_bytes()
    with Image.open(files.accuracy_chart) as im:
        assert im.format == "PNG" and im.width > 300
    with Image.open(files.curves_chart) as im:
        assert im.format == "PNG"


def test_report_of_a_sweep_with_nothing_finished(tmp_path: Path) -> None:
    run_dir = make_sweep(tmp_path, {})
    files = write_report(run_dir)
    assert files.accuracy_chart is None and files.curves_chart is None
    assert "4 runs: 4 pending." in files.markdown.read_text()


def test_report_command(tmp_path: Path) -> None:
    run_dir = make_sweep(tmp_path, ACC)
    result = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "set-24x24-L__v2__none" in out and "0.9200" in out and "interrupted" in out
    assert "chosen by validation accuracy: set-24x24-L__v2__none" in out
    for name in ("report.md", "report.html", "charts/accuracy.png", "charts/learning_curves.png"):
        assert (tmp_path / "out" / name).is_file()
    assert (run_dir / "report.json").is_file()


def test_report_on_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such run folder"):
        write_report(tmp_path / "nope")
    result = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no such run folder" in result.stderr


def test_validation_chooses_never_test(tmp_path: Path) -> None:
    """v1 wins on test, v2 on validation: every choice in the report follows validation."""
    accs = {"set-24x24-L__v1__none": 0.95, "set-24x24-L__v2__none": 0.90,
            "set-24x24-RGB__v1__none": 0.97, "set-24x24-RGB__v2__none": 0.80}
    vals = {"set-24x24-L__v1__none": 0.91, "set-24x24-L__v2__none": 0.93,
            "set-24x24-RGB__v1__none": 0.85, "set-24x24-RGB__v2__none": 0.86}
    run_dir = make_sweep(tmp_path, accs, vals=vals)
    report = build_report(run_dir)
    assert report["best_per_dataset"] == {"set-24x24-L": "set-24x24-L__v2__none",
                                          "set-24x24-RGB": "set-24x24-RGB__v2__none"}
    assert report["best"] == "set-24x24-L__v2__none"
    files = write_report(run_dir)
    md = files.markdown.read_text()
    assert "| **set-24x24-L__v2__none** |" in md and "| **set-24x24-L__v1__none** |" not in md
    assert "Chosen by validation accuracy: **set-24x24-L__v2__none** (validation 0.9300, test 0.9000)" in md
    assert '<tr class="best"><td>set-24x24-RGB__v2__none</td>' in files.html.read_text()


def test_committee_text_keeps_two_decimals() -> None:
    """A lowest recall of 98.46 % must not read as a target of 98.5 % reached."""
    from gtsrb_kit.report import committee_text

    assert committee_text({"accuracy": 0.997704, "lowest_recall": 0.984615}) == "99.77 (98.46)"
    assert committee_text({"accuracy": 0.9975, "lowest_recall": None}) == "99.75"
    assert committee_text({}) == "-"


def test_seed_groups_mean_and_std(tmp_path: Path) -> None:
    accs = {"set-24x24-L__v1__s0": 0.90, "set-24x24-L__v1__s1": 0.92, "set-24x24-L__v1__s2": 0.97,
            "set-24x24-RGB__v1__s0": 0.80, "set-24x24-RGB__v1__s1": None}
    run_dir = make_sweep(tmp_path, accs, models=("v1",), seeds=(0, 1, 2))
    groups = {g["recipe"]["dataset"]: g for g in build_report(run_dir)["groups"]}
    g = groups["set-24x24-L"]
    assert g["runs"] == ["set-24x24-L__v1__s0", "set-24x24-L__v1__s1", "set-24x24-L__v1__s2"]
    assert g["seeds"] == [0, 1, 2] and g["done"] == 3
    assert g["test_accuracy_mean"] == pytest.approx(0.93) and g["test_accuracy_std"] == pytest.approx(0.036056, abs=1e-6)
    assert g["lowest_recall_mean"] == pytest.approx(0.93)  # the class without images does not count
    rgb = groups["set-24x24-RGB"]
    assert rgb["done"] == 1 and rgb["test_accuracy_std"] is None and len(rgb["runs"]) == 3
    md = write_report(run_dir).markdown.read_text()
    assert "| set-24x24-L v1 none, batch_size=8, epochs=3 | 3/3 | 0, 1, 2 | 94.00 ± 3.61 | 93.00 ± 3.61 |" in md
    assert "Committee of all 4 finished runs: -, with TTA -." in md  # not evaluated yet
    page = write_report(run_dir).html.read_text()
    assert "<h2>Over seeds</h2>" in page and '<td>set-24x24-L v1 none, batch_size=8, epochs=3</td><td class="num">3/3' in page
    out = runner.invoke(app, ["report", str(run_dir)]).stdout
    assert "set-24x24-L v1 none, batch_size=8, epochs=3: 3 seed(s) done, test accuracy 93.00 ± 3.61 %" in out


def test_recipes_that_differ_by_a_setting_are_told_apart(tmp_path: Path) -> None:
    data = tmp_path / "set-24x24-L.h5"
    data.write_bytes(b"x")
    plan = plan_from_dict({"name": "two", "train": {"batch_size": 8}, "runs": [
        {"dataset": str(data), "model": "v1", "epochs": e, "seed": s, "name": f"e{e}__s{s}"}
        for e in (2, 4) for s in (0, 1)]})
    run_dir = tmp_path / "runs"
    freeze_plan(plan, run_dir)
    for run, acc in zip(plan.runs, (0.90, 0.92, 0.95, 0.97)):
        (run_dir / run.name).mkdir(parents=True)
        (run_dir / run.name / "run.json").write_text(json.dumps({"name": run.name, "dataset_path": str(data),
                                                                 "identity": run.identity()}))
        (run_dir / run.name / "metrics.json").write_text(json.dumps({
            "test_accuracy": acc, "best_val_accuracy": acc, "epochs_completed": run.settings["epochs"],
            "model": "v1", "data": str(data), "seed": run.settings["seed"], "augment": "none", "batch_size": 8}))
    report = build_report(run_dir)
    assert [g["runs"] for g in report["groups"]] == [["e2__s0", "e2__s1"], ["e4__s0", "e4__s1"]]
    assert report["committee_of_all"]["runs"] == ["e2__s0", "e2__s1", "e4__s0", "e4__s1"]
    out = runner.invoke(app, ["report", str(run_dir)]).stdout
    assert "set-24x24-L v1 none, batch_size=8, epochs=2: 2 seed(s) done, test accuracy 91.00 ± 1.41 %" in out
    assert "set-24x24-L v1 none, batch_size=8, epochs=4: 2 seed(s) done, test accuracy 96.00 ± 1.41 %" in out


def test_refitted_runs_are_a_recipe_of_their_own_and_never_chosen(tmp_path: Path) -> None:
    """Runs trained on train+val have no validation score: grouped apart, shown as they train (their
    last epoch kept, whatever the plan's select says), never the chosen run."""
    data = tmp_path / "set-24x24-L.h5"
    data.write_bytes(b"x")
    plan = plan_from_dict({"name": "refit", "train": {"batch_size": 8, "epochs": 3, "select": "val_loss"}, "runs": [
        {"dataset": str(data), "model": "v1", "seed": s, "name": f"{'refit' if r else 'plain'}__s{s}",
         **({"refit": True} if r else {})} for r in (False, True) for s in (0, 1)]})
    run_dir = tmp_path / "runs"
    freeze_plan(plan, run_dir)
    for run, acc in zip(plan.runs, (0.90, 0.92, 0.97, 0.99)):
        refit = run.settings.get("refit", False)
        (run_dir / run.name).mkdir(parents=True)
        (run_dir / run.name / "run.json").write_text(json.dumps({"name": run.name, "dataset_path": str(data),
                                                                 "identity": run.identity()}))
        (run_dir / run.name / "metrics.json").write_text(json.dumps({
            "test_accuracy": acc, "best_val_accuracy": None if refit else acc, "epochs_completed": 3, "model": "v1",
            "data": str(data), "seed": run.settings["seed"], "augment": "none", "batch_size": 8, "refit": refit}))
    report = build_report(run_dir)
    assert report["best"] == "plain__s1" and report["best_per_dataset"] == {"set-24x24-L": "plain__s1"}
    refit = next(g for g in report["groups"] if g["recipe"].get("refit"))
    assert refit["runs"] == ["refit__s0", "refit__s1"] and refit["best_val_accuracy_mean"] is None
    assert refit["test_accuracy_mean"] == pytest.approx(0.98)
    md = write_report(run_dir).markdown.read_text()
    assert "| set-24x24-L v1 none, batch_size=8, epochs=3, refit=True, select=last | 2/2 | 0, 1 | - | 98.00 ± 1.41 |" in md
    assert "| set-24x24-L v1 none, batch_size=8, epochs=3, select=val_loss | 2/2 |" in md
    out = runner.invoke(app, ["report", str(run_dir)])
    assert out.exit_code == 0 and "refit=True, select=last: 2 seed(s) done, test accuracy 98.00 ± 1.41 %, validation -, lowest" in out.stdout


def test_corruption_accuracy_column(tmp_path: Path) -> None:
    run_dir = make_sweep(tmp_path, ACC)
    (run_dir / "set-24x24-L__v1__none" / "robustness").mkdir()
    (run_dir / "set-24x24-L__v1__none" / "robustness" / "robustness.json").write_text(
        json.dumps({"mean_corruption_accuracy": 0.7123}))
    rows = {r["run"]: r for r in collect_runs(run_dir)}
    assert rows["set-24x24-L__v1__none"]["corruption_accuracy"] == 0.7123
    assert rows["set-24x24-L__v2__none"]["corruption_accuracy"] is None
    assert "0.7123" in write_report(run_dir).markdown.read_text()
