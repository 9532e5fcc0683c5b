"""Hostile input to the CLI: one ``error:`` line on stderr, the right exit code, nothing half-written.

One row per case (the pytest id names it). Each builds its broken input in ``tmp_path``, runs the
command in-process (typer's CliRunner) and checks the exit code (1 bad data, 2 bad options), that
stderr is exactly one line starting with ``error: `` and naming the file or value, and that the
output it names was not created and no temporary file was left. Subprocesses only where they are
the point: TensorFlow's start-up logging and a second process holding a run folder.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gtsrb_kit.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
TINY = ["--model-option", "width=4", "--epochs", "1", "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def cooked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two variants of a tiny synthetic set (16x16 RGB and L), and a 1-epoch vgg-bn run on the RGB one."""
    from gtsrb_kit.cook import cook_dataset
    from gtsrb_kit.synth import generate_dataset
    from gtsrb_kit.train import train

    base = tmp_path_factory.mktemp("hostile")
    root = generate_dataset(base / "raw", tracks_per_class=1, frames_per_track=3, test_per_class=1, seed=0)
    rgb, grey = (r.path for r in cook_dataset(root, base / "data", sizes=(16,), modes=("RGB", "L"),
                                               val_fraction=0.5, workers=1))
    train(rgb, model="vgg-bn", epochs=1, run_dir=base / "run", verbose=0, model_options={"width": 4})
    return {"raw": root, "rgb": rgb, "grey": grey, "model": base / "run" / "best.keras"}


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    """``folder`` made unwritable: chmod, and for root (who ignores modes) a mkdir that is refused there."""
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_mkdir = pathlib.Path.mkdir

        def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
            if folder in self.parents:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    return folder


PLAN_OK = "models = ['v1']\ndatasets = ['a.h5']\n"

# Each case: (tmp_path, fixtures, monkeypatch) -> (argv, exit code, text stderr must contain, path that must not exist)
Case = Callable[[Path, dict[str, Path], pytest.MonkeyPatch], tuple[list[str], int, str, Path | None]]
CASES: dict[str, Case] = {
    # ---- options (click usage errors): exit 2
    "options-root-is-a-file": lambda t, c, m: (["stats", "--root", str(c["rgb"])], 2, "--root", None),
    "options-scale-not-a-number": lambda t, c, m: (["cook", "--scale", "abc", "--root", str(c["raw"]),
                                                    "--out", str(t / "o")], 2, "--scale 'abc'", t / "o"),
    "options-report-dir-is-a-file": lambda t, c, m: (["report", str(c["rgb"])], 2, str(c["rgb"]), None),
    "options-unknown-option": lambda t, c, m: (["train", "--bogus"], 2, "--bogus: no such option", None),
    "options-unknown-command": lambda t, c, m: (["trian"], 2, "trian", None),
    "options-missing-required": lambda t, c, m: (["evaluate"], 2, "--model: missing option", None),
    "options-int-given-float": lambda t, c, m: (["train", "--epochs", "1.5"], 2, "--epochs '1.5'", None),
    "options-out-of-range": lambda t, c, m: (["sweep", "p.toml", "--verbose", "5"], 2, "--verbose '5'", None),
    "options-model-option-not-key-value": lambda t, c, m: (["train", "--data", str(c["rgb"]), "--model-option",
                                                            "width", "--run-dir", str(t / "r")], 2, "'width'",
                                                           t / "r"),
    # ---- train: nothing is created before the run starts
    "train-model-option-rejected-by-keras": lambda t, c, m: (["train", "--data", str(c["rgb"]), "--model-option",
                                                              "width=0", "--run-dir", str(t / "r")], 2, "width=0",
                                                             t / "r"),
    "train-input-shape-rejected": lambda t, c, m: (["train", "--data", str(c["rgb"]), "--model", "v2",
                                                    "--run-dir", str(t / "r")], 2, "16x16x3", t / "r"),
    "train-unknown-model-option": lambda t, c, m: (["train", "--data", str(c["rgb"]), "--model-option",
                                                    "colour=1", "--run-dir", str(t / "r")], 2, "colour", t / "r"),
    "train-zero-epochs": lambda t, c, m: (["train", "--data", str(c["rgb"]), "--epochs", "0",
                                           "--run-dir", str(t / "r")], 2, "--epochs '0'", t / "r"),
    "train-run-dir-is-a-file": lambda t, c, m: (["train", "--data", str(c["rgb"]), *TINY,
                                                 "--run-dir", str(write(t / "f", "x"))], 2, str(t / "f"), None),
    "train-garbage-data-file": lambda t, c, m: (["train", "--data", str(write(t / "set-16x16-RGB.h5", b"junk" * 9)),
                                                 "--run-dir", str(t / "r")], 1, "set-16x16-RGB.h5", t / "r"),
    "train-read-only-run-parent": lambda t, c, m: (["train", "--data", str(c["rgb"]), *TINY, "--run-dir",
                                                    str(read_only(m, t / "ro") / "r")], 1, "Permission denied; fix its permissions",
                                                   t / "ro" / "r"),
    # ---- evaluate
    "evaluate-missing-model": lambda t, c, m: (["evaluate", "--model", str(t / "nope.keras"), "--data",
                                                str(c["rgb"])], 1, "nope.keras", t / "eval-set-16x16-RGB-test"),
    "evaluate-garbage-model": lambda t, c, m: (["evaluate", "--model", str(write(t / "m.keras", b"PK\x03\x04junk")),
                                                "--data", str(c["rgb"])], 1, "m.keras", t / "eval-set-16x16-RGB-test"),
    "evaluate-other-variant": lambda t, c, m: (["evaluate", "--model", str(c["model"]), "--data", str(c["grey"]),
                                                "--out", str(t / "e")], 1, "set-16x16-L.h5", t / "e"),
    "evaluate-unknown-split": lambda t, c, m: (["evaluate", "--model", str(c["model"]), "--data", str(c["rgb"]),
                                                "--split", "bogus", "--out", str(t / "e")], 2, "bogus", t / "e"),
    "evaluate-out-is-a-file": lambda t, c, m: (["evaluate", "--model", str(c["model"]), "--data", str(c["rgb"]),
                                                "--out", str(write(t / "e", "x"))], 1, str(t / "e"), None),
    # ---- predict
    "predict-not-an-image": lambda t, c, m: (["predict", "--model", str(c["model"]),
                                              str(write(t / "sign.png", b"\x89PNG\r\n\x1a\nnot really"))],
                                             1, "sign.png", None),
    "predict-missing-image": lambda t, c, m: (["predict", "--model", str(c["model"]), str(t / "gone.ppm")],
                                              1, "gone.ppm", None),
    "predict-no-images": lambda t, c, m: (["predict", "--model", str(c["model"])], 2, "IMAGES: missing", None),
    "predict-garbage-model": lambda t, c, m: (["predict", "--model", str(write(t / "m.keras", "{}")),
                                               str(t / "x.png")], 1, "m.keras", None),
    "predict-top-zero": lambda t, c, m: (["predict", "--model", str(c["model"]), "--top", "0", str(t / "x.png")],
                                         2, "--top '0'", None),
    # ---- sweep plans: exit 2, nothing created in the run folder
    "plan-toml-syntax-error": lambda t, c, m: (["sweep", str(write(t / "p.toml", "models = ['v1'\n")),
                                                "--run-dir", str(t / "r")], 2, "p.toml", t / "r"),
    "plan-yaml-syntax-error": lambda t, c, m: (["sweep", str(write(t / "p.yaml", "models: [v1\n  - : :")),
                                                "--run-dir", str(t / "r")], 2, "p.yaml", t / "r"),
    "plan-json-wrong-type": lambda t, c, m: (["sweep", str(write(t / "p.json", '{"models": 3, "datasets": ["a.h5"]}')),
                                              "--run-dir", str(t / "r")], 2, "models", t / "r"),
    "plan-unknown-key": lambda t, c, m: (["sweep", str(write(t / "p.toml", PLAN_OK + "epoch = 3\n")),
                                          "--run-dir", str(t / "r")], 2, "epoch", t / "r"),
    "plan-missing-file": lambda t, c, m: (["sweep", str(t / "none.toml"), "--run-dir", str(t / "r")], 2,
                                          "none.toml", t / "r"),
    "plan-not-an-object": lambda t, c, m: (["sweep", str(write(t / "p.json", "[1, 2]")), "--run-dir", str(t / "r")],
                                           2, "p.json", t / "r"),
    "sweep-run-dir-is-a-file": lambda t, c, m: (["sweep", str(write(t / "p.toml", PLAN_OK)), "--run-dir",
                                                 str(write(t / "f", "x"))], 2, str(t / "f"), None),
    # ---- report
    "report-missing-dir": lambda t, c, m: (["report", str(t / "nowhere")], 1, "nowhere", t / "nowhere"),
    "report-out-is-a-file": lambda t, c, m: (["report", str(t), "--out", str(write(t / "o", "x"))], 2, "--out",
                                             t / "report.json"),
}


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_one_line_error(case: str, cooked: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.h5", b"\x89HDF fake")  # the plans' dataset
    monkeypatch.chdir(tmp_path)
    argv, code, needle, absent = CASES[case](tmp_path, cooked, monkeypatch)
    result = runner.invoke(app, argv)
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert absent is None or not absent.exists(), f"{absent} was created"
    assert not _temporaries(tmp_path)


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "ABSL", "GTSRB_KIT"))}
    return {**env, "PYTHONPATH": str(REPO)}


def test_tensorflow_start_up_logging_is_silenced(cooked: dict[str, Path], tmp_path: Path) -> None:
    """A real process (no TF_CPP_MIN_LOG_LEVEL in its environment): only the one error line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "gtsrb_kit", "train", "--data", str(cooked["rgb"]),
                           "--model-option", "width=0", "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, env=_cli_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: "), proc.stderr
    assert "width=0" in proc.stderr and not (tmp_path / "r").exists()


def test_second_train_on_a_busy_run_dir_gets_one_line(cooked: dict[str, Path], tmp_path: Path) -> None:
    """Another process holds the run folder's training lock: refused at once, its files untouched."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gtsrb_kit.runs import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True, env=_cli_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run_dir.iterdir())
        result = runner.invoke(app, ["train", "--data", str(cooked["rgb"]), *TINY, "--run-dir", str(run_dir)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"error: {run_dir}: another gtsrb-kit train is running in it")
        assert sorted(p.name for p in run_dir.iterdir()) == before
    finally:
        holder.kill()
        holder.wait()


def test_failed_start_does_not_block_the_corrected_command(cooked: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    bad = runner.invoke(app, ["train", "--data", str(cooked["rgb"]), *TINY, "--model-option", "width=0",
                              "--run-dir", str(run_dir)])
    assert bad.exit_code == 2 and not run_dir.exists()
    good = runner.invoke(app, ["train", "--data", str(cooked["rgb"]), *TINY, "--run-dir", str(run_dir)])
    assert good.exit_code == 0, good.output
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 1


@pytest.mark.parametrize("content", ["{not json", '{"test_accuracy": 0.9', "[0.9]", '{"test_accuracy": "high"}', ""],
                         ids=["garbage", "truncated", "wrong-type", "wrong-value-type", "empty"])
def test_unreadable_metrics_is_not_done(tmp_path: Path, content: str) -> None:
    from gtsrb_kit.runs import build_report, run_status

    run = tmp_path / "sweep" / "a"
    write(run / "config.json", json.dumps({"args": {"model": "v1", "epochs": 1}}))
    write(run / "metrics.json", content)
    assert run_status(run) == "failed"
    row = build_report(tmp_path / "sweep")["runs"][0]
    assert row["status"] == "failed" and "metrics.json: unreadable" in row["error"]
    result = runner.invoke(app, ["report", str(tmp_path / "sweep")])
    assert result.exit_code == 0 and "failed" in result.stdout and not result.stderr


def test_sweep_retrains_a_run_with_unreadable_metrics(tmp_path: Path) -> None:
    from gtsrb_kit.plans import load_plan
    from gtsrb_kit.sweep import run_sweep

    write(tmp_path / "a.h5", b"\x89HDF fake")
    plan = load_plan(write(tmp_path / "p.toml", PLAN_OK))
    calls: list[bool] = []

    def fake_train(data: Any, *, run_dir: Path, resume: bool, **kw: Any) -> dict[str, Any]:
        calls.append(resume)
        metrics = {"test_accuracy": 0.5, "model": kw["model"]}
        write(Path(run_dir) / "metrics.json", json.dumps(metrics))
        return metrics

    run_sweep(plan, tmp_path / "r", train_fn=fake_train, log=lambda line: None)
    write(tmp_path / "r" / plan.runs[0].name / "metrics.json", '{"test_accuracy": 0.')  # truncated by a crash
    result = run_sweep(plan, tmp_path / "r", train_fn=fake_train, log=lambda line: None)
    assert len(calls) == 2 and [o.action for o in result.outcomes] != ["skipped"]
    assert json.loads((tmp_path / "r" / plan.runs[0].name / "metrics.json").read_text())["test_accuracy"] == 0.5


def test_battery_is_big_enough() -> None:
    assert len(CASES) >= 25
