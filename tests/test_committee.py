"""Committees (the mean of several models' probabilities) and test-time augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gtsrb_kit.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def members(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    """Three tiny models: two seeds on 24x24 RGB, one on 28x28 L (another variant), with their data files."""
    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.train import train

    out = tmp_path_factory.mktemp("committee")
    rgb = cook_dataset(synth_root, out / "data", sizes=(24,), modes=("RGB",), workers=1)[0].path
    gray = cook_dataset(synth_root, out / "data", sizes=(28,), modes=("L",), workers=1)[0].path
    found = []
    for name, data, seed in (("a", rgb, 0), ("b", rgb, 1), ("c", gray, 2)):
        train(data, model="vgg-bn", epochs=1, batch_size=64, run_dir=out / name, seed=seed, verbose=0,
              model_options={"width": 8})
        found.append((out / name / "best.keras", data))
    return found


def test_committee_is_the_mean_of_its_members(members: list[tuple[Path, Path]], tmp_path: Path) -> None:
    from gtsrb_kit.evaluate import committee_scores, evaluate, load_model, split_scores

    models, data = [m for m, _ in members], [d for _, d in members]
    singles = [split_scores(load_model(m), d)[2] for m, d in members]
    x, y, probs, names = committee_scores(models, data)
    assert np.allclose(probs, np.mean(singles, axis=0))
    assert x.shape[1:] == (24, 24, 3) and len(names) == 43
    result = evaluate(models, data, out_dir=tmp_path)
    assert result["accuracy"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == y)), abs=1e-6)
    assert result["models"] == [str(m) for m in models]
    on_disk = json.loads((tmp_path / "evaluation.json").read_text())
    assert on_disk["data_files"] == [str(d) for d in data]
    assert "model" not in on_disk and "data" not in on_disk  # no one member stands for the committee
    one = evaluate(models[0], data[0], out_dir=tmp_path / "one")
    assert (one["model"], one["models"], one["data"]) == (str(models[0]), [str(models[0])], str(data[0]))
    for name in ("confusion_matrix.png", "worst_errors.png", "per_class.csv"):
        assert (tmp_path / name).is_file()


def test_committees_sharing_members_predict_each_once(members: list[tuple[Path, Path]], tmp_path: Path) -> None:
    import shutil

    from gtsrb_kit.evaluate import committee_scores

    copies = []
    for model, data in members:  # copies, so the fixture's files stay
        (tmp_path / model.parent.name).mkdir()
        copies.append((Path(shutil.copy(model, tmp_path / model.parent.name / model.name)), data))
    (a, rgb), (b, _), (c, gray) = copies
    cache: dict = {}
    _, _, pair, _ = committee_scores([a, b], [rgb, rgb], cache=cache)
    _, y, every, _ = committee_scores([a, b, c], [rgb, rgb, gray], cache=cache)
    assert len(cache) == 3
    for model, _ in copies:
        model.unlink()  # what the cache holds is not read again
    _, y_again, every_again, _ = committee_scores([a, b, c], [rgb, rgb, gray], cache=cache)
    assert np.array_equal(every_again, every) and np.array_equal(y_again, y)
    assert np.array_equal(committee_scores([a, b], [rgb, rgb], cache=cache)[2], pair)
    with pytest.raises(DataError, match="no such model file"):
        committee_scores([a, b], [rgb, rgb], tta=True, cache=cache)  # other views: another entry


def test_committee_mismatches_are_one_line_errors(members: list[tuple[Path, Path]], synth_root: Path,
                                                  tmp_path: Path) -> None:
    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.evaluate import committee_scores

    (a, rgb), (b, _), (c, gray) = members
    with pytest.raises(ConfigError, match="2 models but 3 data files"):
        committee_scores([a, b], [rgb, rgb, rgb])
    with pytest.raises(DataError, match="the model expects"):
        committee_scores([a, c], [rgb, rgb])  # the L model needs its own file
    other = cook_dataset(synth_root, tmp_path, sizes=(24,), modes=("RGB",), scale=0.5, workers=1)[0].path
    with pytest.raises(DataError, match="other images"):
        committee_scores([a, b], [rgb, other])


def test_no_committee_of_all_across_sources(members: list[tuple[Path, Path]], synth_root: Path,
                                            tmp_path: Path) -> None:
    """Runs cooked from different sources have different test splits: no committee of all, no error."""
    import shutil

    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.report import build_report, evaluate_committees

    (a, _), _, (c, _) = members
    other = cook_dataset(synth_root, tmp_path / "data", sizes=(28,), modes=("L",), scale=0.5, workers=1)[0].path
    for model in (a, c):
        shutil.copytree(model.parent, tmp_path / "runs" / model.parent.name)
    metrics_file = tmp_path / "runs" / c.parent.name / "metrics.json"
    metrics_file.write_text(json.dumps({**json.loads(metrics_file.read_text()), "data": str(other)}))
    assert evaluate_committees(tmp_path / "runs") == []
    report = build_report(tmp_path / "runs")
    assert report["committee_of_all"]["runs"] == [a.parent.name, c.parent.name]
    assert report["committee_of_all"]["committee"] == {}


def test_tta_views_never_flip_and_start_with_the_image() -> None:
    from gtsrb_kit.evaluate import TTA_VIEWS, tta_view

    assert TTA_VIEWS[0] == (0, 0, 1.0)
    assert all(scale > 0 for _, _, scale in TTA_VIEWS)
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[0, 8:24, 4:12] = 200  # a bar on the left: a mirror would put it on the right
    assert np.array_equal(tta_view(x, *TTA_VIEWS[0]), x)
    for view in TTA_VIEWS[1:]:
        out = tta_view(x, *view).astype(float)
        assert out.shape == x.shape
        assert np.abs(out - x).mean() < np.abs(out - x[:, :, ::-1]).mean() / 3, view


def test_tta_averages_the_views(members: list[tuple[Path, Path]]) -> None:
    from gtsrb_kit.evaluate import TTA_VIEWS, load_model, predict_probs, split_scores, tta_view

    model_path, data = members[0]
    model = load_model(model_path)
    x, _, probs, _ = split_scores(model, data, tta=True)
    expected = np.mean([predict_probs(model, tta_view(x, *v)) for v in TTA_VIEWS], axis=0)
    assert np.allclose(probs, expected)


def test_report_committee_of_a_seed_group(members: list[tuple[Path, Path]], tmp_path: Path) -> None:
    from gtsrb_kit.evaluate import evaluate
    from gtsrb_kit.report import build_report, evaluate_committees

    run_dir = members[0][0].parent.parent  # the folder holding runs a, b (RGB, seeds 0 and 1) and c (L)
    written = evaluate_committees(run_dir)
    assert len(written) == 2  # a and b (they differ by seed alone), and all three
    report = build_report(run_dir)
    groups = {g["recipe"]["dataset"]: g for g in report["groups"]}
    rgb = groups["set-24x24-RGB"]
    assert sorted(rgb["seeds"]) == [0, 1] and rgb["committee_tta"] == {}
    expected = evaluate([members[0][0], members[1][0]], members[0][1], out_dir=tmp_path)
    assert rgb["committee"]["accuracy"] == expected["accuracy"] and rgb["committee"]["errors"] == expected["errors"]
    assert groups["set-28x28-L"]["committee"] == {}
    every = evaluate([m for m, _ in members], [d for _, d in members], out_dir=tmp_path / "all")  # each its own variant
    assert report["committee_of_all"]["committee"]["accuracy"] == every["accuracy"]
    assert report["committee_of_all"]["committee"]["errors"] == every["errors"]


def test_report_keeps_committees_that_are_current(members: list[tuple[Path, Path]], tmp_path: Path) -> None:
    """A second `report --committee` evaluates only the committees whose members changed since."""
    import os
    import shutil

    from gtsrb_kit.report import build_report, evaluate_committees

    run_dir = tmp_path / "runs"
    for model, _ in members:
        shutil.copytree(model.parent, run_dir / model.parent.name)
    told: list[tuple[str, int, int | None]] = []
    first = evaluate_committees(run_dir, progress=lambda *call: told.append(call))
    assert len(first) == 2 and told == [("committees", 0, 2), ("committees", 1, 2), ("committees", 2, 2)]
    stamps = {f: f.stat().st_mtime_ns for f in first}
    assert evaluate_committees(run_dir) == []
    assert {f: f.stat().st_mtime_ns for f in first} == stamps
    retrained = run_dir / members[2][0].parent.name / "best.keras"  # the L model: in the committee of all only
    later = max(stamps.values()) / 1e9 + 10
    os.utime(retrained, (later, later))
    stale = build_report(run_dir)  # a report shows no committee older than one of its members
    assert stale["committee_of_all"]["committee"] == {} and all(g["committee"] for g in stale["groups"] if g["done"] > 1)
    again = evaluate_committees(run_dir)
    assert len(again) == 1 and "all" in again[0].parts
    os.utime(again[0], (later + 1, later + 1))  # as if evaluated after the retraining, whose time is ahead
    assert build_report(run_dir)["committee_of_all"]["committee"]["accuracy"] is not None


def test_cli_report_committee_with_tta(members: list[tuple[Path, Path]], tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from gtsrb_kit.cli import app

    run_dir = tmp_path / "runs"
    for model, _ in members[:2]:  # two seeds of one recipe
        shutil.copytree(model.parent, run_dir / model.parent.name)
    result = CliRunner().invoke(app, ["report", str(run_dir), "--committee", "--tta"])
    assert result.exit_code == 0, result.output
    plain, tta = (json.loads((path / "evaluation.json").read_text())
                  for path in sorted((run_dir / "committees").glob("*/*")))
    assert (plain["tta"], tta["tta"], len(plain["models"])) == (False, True, 2)
    assert f"committee {plain['accuracy'] * 100:.2f}" in " ".join(result.stdout.split())
