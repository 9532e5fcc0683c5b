"""Write the walkthrough notebooks (``python notebooks/_build.py``), without outputs.

The notebooks are generated so they stay short, consistent and reviewable as code. Each one
starts with a parameters cell: edit it, or set ``GTSRB_KIT_NB_<NAME>`` in the environment (the
test suite runs every notebook that way, at a tiny scale, in a temporary folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMS = '''\
import os
from pathlib import Path


def param(name, default):
    """A parameter of this notebook: GTSRB_KIT_NB_<NAME> in the environment overrides the default."""
    value = os.environ.get(f"GTSRB_KIT_NB_{name.upper()}")
    if value is None:
        return default
    if isinstance(default, list):
        return [v.strip() for v in value.split(",") if v.strip()]
    return type(default)(value)


scale = param("scale", 0.5)                 # fraction of the tracks (and test images) to cook
work_dir = param("work_dir", Path("data"))  # everything this notebook writes goes under here
root = param("root", Path(os.environ.get("GTSRB_KIT_ROOT") or work_dir / "raw"))  # raw GTSRB tree
synth_tracks = param("synth_tracks", 4)     # size of the synthetic dataset made when root is empty
epochs = param("epochs", 5)
'''

GET_DATA = '''\
from gtsrb_kit.catalog import detect_layout
from gtsrb_kit.cook import cook_dataset
from gtsrb_kit.errors import DataError
from gtsrb_kit.synth import generate_dataset

try:
    print(f"{root}: {detect_layout(root)} layout")
except DataError:  # no data yet: the offline synthetic GTSRB (same layout, 43 classes)
    print(f"no GTSRB tree at {root}: generating the synthetic one")
    generate_dataset(root, tracks_per_class=synth_tracks)
# Cooked once; later calls find the file up to date and skip it.
data = cook_dataset(root, work_dir, sizes=(24,), modes=("RGB",), scale=scale)[0].path
print(data)
'''

SH = '''\
import subprocess
import sys


def sh(*args, env=None):
    """Run a command like a batch job would, print its output, fail the cell on a non-zero exit."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    print(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"exit code {proc.returncode}"


gtsrb_kit = [sys.executable, "-m", "gtsrb_kit"]  # the `gtsrb-kit` command of this Python
'''

PLAN = '''\
import json

models = param("models", ["v1", "v2"])
modes = param("modes", ["RGB", "L-LHE"])  # enhancement modes of the 24x24 datasets
plan_file = work_dir / "gtsrb5.toml"
run_dir = work_dir / "runs" / "gtsrb5"
plan_file.parent.mkdir(parents=True, exist_ok=True)
plan_file.write_text(f"""\\
name = "gtsrb5"
datasets = [{{ size = 24, mode = {json.dumps(modes)} }}]   # recipes: cooked on the fly
models = {json.dumps(models)}
augment = ["none"]

[cook]
root = {json.dumps(str(root.resolve()))}
out = {json.dumps(str(work_dir.resolve()))}
scale = {scale}

[train]
epochs = {epochs}
batch_size = 64
seed = 0
""")
print(plan_file.read_text())
'''


def notebook(title: str, intro: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells.append(new_markdown_cell(f"# {title}\n\n{intro}"))
    nb.cells.append(new_code_cell(PARAMS, metadata={"tags": ["parameters"]}))
    for kind, text in cells:
        text = text.strip("\n")
        nb.cells.append(new_markdown_cell(text) if kind == "md" else new_code_cell(text))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


NOTEBOOKS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {}

NOTEBOOKS["01-data-and-cooking"] = (
    "1. The data: catalog, statistics, enhancement, cooking",
    "The course's GTSRB1 step: look at the images, then turn them into small HDF5 files a model "
    "can train on. Without real data (``gtsrb-kit download``), the offline synthetic GTSRB is used.",
    [
        ("code", '''
from gtsrb_kit.catalog import detect_layout, read_catalog
from gtsrb_kit.errors import DataError
from gtsrb_kit.synth import generate_dataset

try:
    print(f"{root}: {detect_layout(root)} layout")
except DataError:
    print(f"no GTSRB tree at {root}: generating the synthetic one")
    generate_dataset(root, tracks_per_class=synth_tracks)
'''),
        ("md", "## The catalog: one row per image\n\nEvery other step starts from this table."),
        ("code", '''
catalog = read_catalog(root)
print(catalog["split"].value_counts().to_dict())
catalog[["split", "rel_path", "class_id", "class_name", "width", "height", "track"]].head()
'''),
        ("md", "## Statistics\n\nClass balance, sizes, brightness, blur, and images shared by the training and test sets "
               "(CLI: `gtsrb-kit stats`)."),
        ("code", '''
from IPython.display import Image, display
from gtsrb_kit.stats import compute_stats, write_stats

stats = compute_stats(catalog)
written = write_stats(stats, work_dir / "stats")
stats.per_class[["class_name", "train", "test", "tracks", "brightness_mean"]].head(10)
'''),
        ("code", '''
for name in ("class_counts.png", "samples.png", "darkest.png"):
    display(Image(filename=str(work_dir / "stats" / name), width=700))
'''),
        ("md", "## Enhancement modes\n\nThe course compared colour and grey images, with and without "
               "(local) histogram equalization. One image in every mode, at 48x48:"),
        ("code", '''
import matplotlib.pyplot as plt
from gtsrb_kit.catalog import load_image
from gtsrb_kit.enhance import MODES, enhance

image = load_image(catalog[catalog["split"] == "train"].iloc[3]["path"])
fig, axes = plt.subplots(1, len(MODES) + 1, figsize=(2 * (len(MODES) + 1), 2.3))
axes[0].imshow(image); axes[0].set_title("original")
for ax, mode in zip(axes[1:], MODES):
    out = enhance(image, 48, mode)
    ax.imshow(out.squeeze(), cmap="gray" if out.shape[-1] == 1 else None); ax.set_title(mode)
for ax in axes:
    ax.axis("off")
plt.show()
'''),
        ("md", "## Cooking\n\nOne HDF5 file per size and mode, with a track-wise train/validation split "
               "(CLI: `gtsrb-kit cook --sizes 24 --modes RGB L-LHE --scale 0.5`). "
               "Cooking again with the same recipe skips the file."),
        ("code", '''
from gtsrb_kit.cook import cook_dataset

results = cook_dataset(root, work_dir, sizes=(24,), modes=("RGB", "L-LHE"), scale=scale)
for r in results:
    print(f"{r.path.name}: {r.counts}, {r.bytes / 1e6:.2f} MB, {'up to date' if r.skipped else 'cooked'}")
'''),
        ("code", '''
from gtsrb_kit.store import load_split, read_info

info = read_info(results[0].path)
print({k: info[k] for k in ("size", "mode", "scale", "seed", "val_fraction")})
x, y = load_split(results[0].path, "train")
print(x.shape, x.dtype, y[:10])
'''),
    ],
)

NOTEBOOKS["02-first-cnn"] = (
    "2. A first convolutional network",
    "The course's GTSRB2 step: train one of the bundled models on a cooked file and look at what "
    "it learned.",
    [
        ("code", GET_DATA),
        ("md", "## The bundled models\n\nAll are built for any input size; `v1`..`v3` are the course's."),
        ("code", '''
from gtsrb_kit.models import build_model, list_models

for name, description in list_models():
    print(f"{name:14} {description}")
build_model("v1", (24, 24, 3)).summary()
'''),
        ("md", "## Training\n\nThe best checkpoint is chosen on the validation split; the test set is used "
               "once, at the end (CLI: `gtsrb-kit train --data ... --model v1 --epochs 5`)."),
        ("code", '''
import shutil
from gtsrb_kit.train import train

run_dir = work_dir / "runs" / "02-first-cnn"
shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run every time this notebook runs
metrics = train(data, model="v1", epochs=epochs, batch_size=64, run_dir=run_dir, verbose=2)
print(f"test accuracy {metrics['test_accuracy']:.4f}, best epoch {metrics['best_epoch']}, "
      f"{metrics['duration_s']:.1f} s")
'''),
        ("code", '''
from IPython.display import Image
Image(filename=str(run_dir / "learning_curves.png"), width=800)
'''),
        ("code", '''
import pandas as pd
pd.DataFrame(metrics["per_class"]).sort_values("recall").head(8)
'''),
    ],
)

NOTEBOOKS["03-monitoring-and-checkpoints"] = (
    "3. Monitoring, checkpoints and resuming",
    "The course's GTSRB3 step. A run folder holds everything: history, curves, TensorBoard logs, "
    "the best and the last checkpoint. An interrupted run continues from its last epoch.",
    [
        ("code", GET_DATA),
        ("md", "## Interrupting a run\n\nA progress callback that stops after the first epoch plays the part of "
               "Ctrl-C, a crash or a cluster time limit."),
        ("code", '''
import shutil
from gtsrb_kit.sweep import run_status
from gtsrb_kit.train import train

run_dir = work_dir / "runs" / "03-checkpoints"
shutil.rmtree(run_dir, ignore_errors=True)


def stop_after_first_epoch(description, done, total):
    if description == "train" and done >= 1:
        raise KeyboardInterrupt


try:
    train(data, model="v1", epochs=epochs, run_dir=run_dir, verbose=2, progress=stop_after_first_epoch)
except KeyboardInterrupt:
    print("interrupted;", run_status(run_dir), sorted(p.name for p in run_dir.iterdir()))
'''),
        ("md", "## Resuming\n\n`resume=True` (CLI: `gtsrb-kit train ... --resume`) continues from `last.keras`, "
               "with the optimizer state and the same data order."),
        ("code", '''
metrics = train(data, model="v1", epochs=epochs, run_dir=run_dir, verbose=2, resume=True)
print(run_status(run_dir), f"test accuracy {metrics['test_accuracy']:.4f}",
      f"resumed from epoch {metrics['resumed_from_epoch']}")
'''),
        ("md", "## Monitoring\n\n`history.csv` has one row per epoch; `tb/` is for TensorBoard "
               "(`tensorboard --logdir data/runs`)."),
        ("code", '''
import pandas as pd
pd.read_csv(run_dir / "history.csv")
'''),
        ("md", "## Evaluating the best checkpoint\n\nConfusion matrix and worst mistakes (CLI: `gtsrb-kit evaluate`)."),
        ("code", '''
from IPython.display import Image, display
from gtsrb_kit.evaluate import evaluate

result = evaluate(run_dir / "best.keras", data, worst=12)
print(f"accuracy {result['accuracy']:.4f} on {result['count']} test images")
display(Image(filename=result["files"]["confusion_matrix"], width=600))
display(Image(filename=result["files"]["worst_errors"], width=600))
'''),
    ],
)

NOTEBOOKS["04-augmentation"] = (
    "4. Data augmentation",
    "The course's GTSRB4 step: more varied training images (rotations, shifts, zooms; never flips, "
    "a mirrored sign is another sign).",
    [
        ("code", GET_DATA),
        ("md", "## What the presets do\n\nEach row: an original, then random draws."),
        ("code", '''
from IPython.display import Image, display
from gtsrb_kit.augment import PRESETS, preview_grid
from gtsrb_kit.store import class_names, load_split

print("presets:", PRESETS)
x, y = load_split(data, "train")
for preset in ("fidle", "strong"):
    png = preview_grid(x, y, work_dir / f"augment-{preset}.png", augment=preset, classes=[1, 14, 25, 33],
                       draws=6, class_names=class_names(data))
    display(Image(filename=str(png), width=600))
'''),
        ("md", "## Training with augmentation\n\nSame model and data as notebook 2, with the course's preset "
               "(CLI: `gtsrb-kit train --augment fidle`). Augmentation pays off with more epochs and data."),
        ("code", '''
import json
import shutil
from gtsrb_kit.train import train

run_dir = work_dir / "runs" / "04-augmented"
shutil.rmtree(run_dir, ignore_errors=True)
metrics = train(data, model="v1", augment="fidle", epochs=epochs, run_dir=run_dir, verbose=2)
print(f"with augmentation:    test accuracy {metrics['test_accuracy']:.4f}")
plain = work_dir / "runs" / "02-first-cnn" / "metrics.json"
if plain.is_file():
    print(f"without (notebook 2): test accuracy {json.loads(plain.read_text())['test_accuracy']:.4f}")
'''),
    ],
)

NOTEBOOKS["05-models-x-datasets"] = (
    "5. Many models x many datasets: a sweep",
    "The course's GTSRB5 step, without nested loops in a notebook: a **plan** lists datasets, models "
    "and settings; `run_sweep` trains every combination, each in its own folder, and can be "
    "interrupted and rerun at any time (finished runs are skipped).",
    [
        ("code", PLAN),
        ("code", '''
from gtsrb_kit.sweep import load_plan

plan = load_plan(plan_file, run_dir=run_dir)
for i, run in enumerate(plan.runs):
    print(i, run.name)
'''),
        ("md", "Datasets given as recipes are cooked when first needed (here they were cooked in notebook 1 "
               "with the same recipe, so they are reused)."),
        ("code", '''
from gtsrb_kit.sweep import run_sweep

result = run_sweep(plan, run_dir, log=print, verbose=2)
assert result.ok
'''),
        ("code", '''
from gtsrb_kit.report import runs_frame

frame = runs_frame(run_dir)
frame.pivot_table(index="dataset", columns="model", values="test_accuracy")
'''),
        ("md", "Running it again does nothing: every run is done (CLI: `gtsrb-kit sweep gtsrb5.toml --run-dir ...`)."),
        ("code", '''
again = run_sweep(plan, run_dir)
print([o.action for o in again.outcomes])
'''),
    ],
)

NOTEBOOKS["06-batch-jobs"] = (
    "6. Batch jobs and SLURM",
    "The course's GTSRB6 step. The CLI *is* the batch job: every command runs without questions, "
    "writes logs and returns an exit code. A sweep becomes a SLURM job array: task *i* runs run *i* "
    "of the plan. See `cli/README.md` (\"from notebook to HPC\") for the full story.",
    [
        ("code", PLAN),
        ("code", SH),
        ("md", "## What would run"),
        ("code", '''
sh(*gtsrb_kit, "sweep", plan_file, "--run-dir", run_dir, "--dry-run")
'''),
        ("md", "## A SLURM job array\n\n`--slurm` writes `sweep.sbatch` into the run folder (add `--submit` to "
               "`sbatch` it at once). Options: `--partition`, `--gpus-per-task`, `--cpus-per-task`, `--mem`, "
               "`--time`, `--max-parallel`, `--setup 'module load ...'`."),
        ("code", '''
sh(*gtsrb_kit, "sweep", plan_file, "--run-dir", run_dir, "--slurm", "--time", "01:00:00", "--cpus-per-task", "4")
print((run_dir / "sweep.sbatch").read_text())
'''),
        ("md", "## One array task, by hand\n\nWhat SLURM runs for task 0: the script with `SLURM_ARRAY_TASK_ID` set. "
               "A finished run is skipped, so resubmitting an array after a time limit only redoes what is missing."),
        ("code", '''
sh("bash", run_dir / "sweep.sbatch", env={"SLURM_ARRAY_TASK_ID": "0"})
'''),
        ("md", "## Submitting\n\nOn a cluster: `sbatch data/runs/gtsrb5/sweep.sbatch`, then "
               "`gtsrb-kit report data/runs/gtsrb5` at any time. Without a scheduler, `cli/sweep-loop.sh` runs "
               "the same tasks in a shell loop."),
        ("code", '''
import shutil
submit = param("submit", 0)  # set to 1 on a SLURM login node
if submit and shutil.which("sbatch"):
    sh("sbatch", run_dir / "sweep.sbatch")
else:
    print("not submitting; sbatch is", shutil.which("sbatch") or "not installed here")
'''),
    ],
)

NOTEBOOKS["07-reports"] = (
    "7. Reports",
    "The course's GTSRB7 step: compare the runs. `write_report` (CLI: `gtsrb-kit report DIR`) writes "
    "`report.json`, `report.md`, a self-contained `report.html` and PNG charts, from the files on disk, "
    "so it also works while a sweep is still running.",
    [
        ("code", PLAN),
        ("code", '''
from gtsrb_kit.sweep import run_sweep

result = run_sweep(plan_file, run_dir, log=print, verbose=2)  # trains only what is missing
'''),
        ("code", '''
from IPython.display import Image, display
from gtsrb_kit.report import runs_frame, write_report

files = write_report(run_dir)
print("chosen by validation accuracy:", files.report["best"])
print("chosen per dataset:", files.report["best_per_dataset"])
runs_frame(run_dir)[["run", "status", "dataset", "model", "best_val_accuracy", "test_accuracy", "duration_s"]]
'''),
        ("code", '''
for png in (files.accuracy_chart, files.curves_chart):
    if png is not None:
        display(Image(filename=str(png), width=700))
print(f"open {files.html} in a browser (self-contained: it can be mailed as is)")
'''),
        ("md", "## Committees\n\nThe mean of several models' probabilities usually beats each of them. "
               "`evaluate_committees` (CLI: `gtsrb-kit report DIR --committee [--tta]`) evaluates the committee "
               "of each recipe's seeds and, as here where every run is its own recipe, of all finished runs; "
               "each model reads its own cooked variant. Nothing in it is chosen by test accuracy."),
        ("code", '''
from gtsrb_kit.report import build_report, committee_of_all_text, evaluate_committees

evaluate_committees(run_dir)
report = build_report(run_dir)
for row in report["runs"]:
    print(f"{row['run']:28} test {row['test_accuracy']}")
print(committee_of_all_text(report))
'''),
        ("md", "## Any folder of runs\n\nThe report also reads plain training runs, e.g. those of notebooks 2-4, "
               "and lists unfinished ones as pending, interrupted or failed."),
        ("code", '''
from gtsrb_kit.report import collect_runs

for row in collect_runs(work_dir / "runs"):
    print(f"{row['run']:24} {row['status']:12} {row['test_accuracy']}")
'''),
    ],
)


def build(out_dir: Path = HERE) -> list[Path]:
    """Write every notebook into ``out_dir``; returns their paths."""
    written = []
    for stem, (title, intro, cells) in NOTEBOOKS.items():
        nb = notebook(title, intro, cells)
        for i, cell in enumerate(nb.cells):  # stable ids: the files only change when the content does
            cell["id"] = f"{stem[:2]}-{i:02d}"
        path = out_dir / f"{stem}.ipynb"
        nbformat.validate(nb)
        path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
