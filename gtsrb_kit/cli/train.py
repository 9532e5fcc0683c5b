"""`gtsrb-kit train`, `evaluate`, `predict`, `models` and `augment-preview`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gtsrb_kit.cli._app import app, console, is_interactive

DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="A cooked set-*.h5 file. Default: <data dir>/set-48x48-RGB.h5 "
                 "($GTSRB_KIT_DATA or ./data).", show_default=False),
]


def _parse_options(items: list[str]) -> dict[str, int | float | str]:
    from gtsrb_kit.errors import ConfigError

    out: dict[str, int | float | str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-option {item!r}: use KEY=VALUE, e.g. width=16")
        value: int | float | str = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        out[key.strip()] = value
    return out


@app.command("train")
def train_command(
    data: DataOption = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name (see `gtsrb-kit models`). "
                                              "Default: vgg-bn.", show_default=False)] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="Measured settings to start from: quick (12 "
                                               "epochs) or accurate (20 epochs), both vgg-bn, strong augmentation, "
                                               "--ema 0.999, --select val_loss; options given beside it win.",
                                               show_default=False)] = None,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment", help="Augment the training images "
                                                 "(preset: --preset). Default: no, or the recipe's.",
                                                 show_default=False)] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Augmentation preset: none, fidle or strong; "
                                               "implies --augment. Default with --augment: strong.",
                                               show_default=False)] = None,
    augment_path: Annotated[str, typer.Option("--augment-path", help="How to augment: tf (in-graph, the "
                                              "default; auto and batch are other names for it) or albumentations "
                                              "(the presets rendered by albumentations).")] = "auto",
    epochs: Annotated[int | None, typer.Option("--epochs", help="Total epochs (also when resuming). Default: 10, "
                                               "or the recipe's.", min=1, show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Global batch size.", min=1)] = 64,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Output folder. Default: <runs dir>/<model>-"
                                                 "<data stem> ($GTSRB_KIT_RUNS or ./runs).",
                                                 show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights, shuffles and augmentation.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --run-dir from its "
                                         "last completed epoch.")] = False,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Peak AdamW learning rate. Default: 3e-3 "
                                                        "for batch-norm models, 1e-3 otherwise.",
                                                        show_default=False)] = None,
    lr_schedule: Annotated[str | None, typer.Option("--lr-schedule", help="constant, cosine (default) or "
                                                    "onecycle.", show_default=False)] = None,
    select: Annotated[str | None, typer.Option("--select", help="The validation score that picks best.keras: "
                                               "val_accuracy (default), val_loss (smoother; the recipes') or last "
                                               "(the last epoch).",
                                               show_default=False)] = None,
    early_stopping: Annotated[int | None, typer.Option("--early-stopping", help="Stop after this many epochs "
                                                       "without a better validation accuracy.",
                                                       show_default=False)] = None,
    devices: Annotated[str | None, typer.Option("--devices", help="auto (all GPUs, else CPU), cpu, gpu, "
                                                "gpu:0,1 ...", show_default=False)] = None,
    mixed_precision: Annotated[str, typer.Option("--mixed-precision", help="auto (float16 on GPUs, bfloat16 on "
                                                 "CPUs where it is faster: AMX, or AMD with AVX512-BF16), on, off.")] = "auto",
    pipeline: Annotated[str, typer.Option("--pipeline", help="Where batches are made: host (tf.data), device "
                                          "(the split kept on the device, batches made in the training step) or "
                                          "auto (device on GPUs).")] = "auto",
    ema: Annotated[float | None, typer.Option("--ema", help="Validate, keep and test a moving average of the "
                                              "weights with this momentum (e.g. 0.999).", show_default=False)] = None,
    refit: Annotated[bool, typer.Option("--refit", help="Also train on the validation images, for a schedule "
                                        "chosen on validation before (e.g. --recipe accurate): no validation, "
                                        "best.keras is the last epoch.")] = False,
    class_balance: Annotated[float, typer.Option("--class-balance", help="Draw each epoch's images towards "
                                                 "equal class frequencies: 0 (the split's, a plain shuffle) to 1 "
                                                 "(every class equally often).")] = 0.0,
    model_option: Annotated[list[str] | None, typer.Option("--model-option", help="Builder option KEY=VALUE of "
                                                           "the model (e.g. width=16 for vgg-bn); repeatable.",
                                                           show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch output.")] = False,
) -> None:
    """Train a model on a cooked file; best checkpoint on validation accuracy, test once at the end.

    Writes best.keras, last.keras, history.csv/json, learning_curves.png, metrics.json,
    config.json and TensorBoard logs (tb/) into the run folder. A killed run continues with
    --resume (same options).
    """
    from gtsrb_kit.augment import DEFAULT_PRESET
    from gtsrb_kit.models import DEFAULT_MODEL
    from gtsrb_kit.train import default_data_file, train
    from gtsrb_kit.train import recipe as find_recipe

    base = find_recipe(recipe) if recipe is not None else None
    settings = base.settings() if base is not None else {}
    settings.update({k: v for k, v in (("epochs", epochs), ("select", select), ("ema", ema)) if v is not None})
    if preset is None and augment is None:
        chosen = base.augment if base is not None else "none"
    else:
        chosen = preset if preset is not None else (DEFAULT_PRESET if augment else "none")
    metrics = train(
        data if data is not None else default_data_file(), model=model or (base.model if base else DEFAULT_MODEL),
        augment=chosen, batch_size=batch_size, run_dir=run_dir, seed=seed, resume=resume,
        learning_rate=learning_rate, early_stopping=early_stopping, lr_schedule=lr_schedule, devices=devices,
        pipeline=pipeline, refit=refit, class_balance=class_balance, **settings,
        mixed_precision=mixed_precision, verbose=0 if quiet else (1 if is_interactive() else 2),
        augment_path=augment_path, model_options=_parse_options(model_option or []),
    )
    val = metrics["best_val_accuracy"]
    kept = f"best validation accuracy {val:.4f}" if val is not None else "trained on train+val, kept"
    console.print(
        f"train: {metrics['model']} ({metrics['model_params']:,} parameters), augment {metrics['augment']}: "
        f"{kept} at epoch {metrics['best_epoch']}/{metrics['epochs_completed']}; test accuracy {metrics['test_accuracy']:.4f} "
        f"({metrics['test_errors']} errors / {metrics['test_count']}); {metrics['duration_s']:.0f} s",
        highlight=False, soft_wrap=True,
    )
    console.print(f"train: wrote {metrics['run_dir']} (metrics.json, best.keras, learning_curves.png)",
                  highlight=False, soft_wrap=True)
    if _from_synth(Path(metrics["data"])):
        for line in _REAL_DATA_NEXT:
            console.print(line, highlight=False, soft_wrap=True)


# What to run after the offline demo: the README's real-data recipe, in a root of its own (a
# download into the synthetic data/raw would mix the two trees).
_REAL_DATA_NEXT = (
    "next: the real benchmark (about 300 MB), kept apart from the synthetic data/raw:",
    "  gtsrb-kit download --root data/gtsrb && gtsrb-kit cook --root data/gtsrb --out data/real "
    "--size 32 --mode RGB-HE --roi-crop",
    "  gtsrb-kit train --data data/real/set-32x32-RGB-HE-roi.h5 --recipe accurate"
    "   (README: 99.60 % on the official test set, mean of 3 seeds)",
)


def _from_synth(data: Path) -> bool:
    """Whether ``data`` was cooked from a ``gtsrb-kit synth`` tree (its ``source_synthetic`` attribute)."""
    import h5py

    try:
        with h5py.File(data, "r") as handle:
            return bool(handle.attrs.get("source_synthetic", False))
    except OSError:
        return False


@app.command("evaluate")
def evaluate_command(
    model: Annotated[list[Path], typer.Option("--model", help="A .keras file (e.g. runs/x/best.keras); repeat it "
                                              "for a committee (the mean of the models' probabilities).",
                                              show_default=False)],
    data: Annotated[list[Path] | None, typer.Option("--data", help="A cooked set-*.h5 file (one, or one per --model). "
                                                    "Default: each run's own data file (config.json beside the "
                                                    "model), else <data dir>/set-48x48-RGB.h5.",
                                                    show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder. Default: <model folder>/eval-<data "
                                             "stem>-<split>.", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="test, val, train or meta.")] = "test",
    worst: Annotated[int, typer.Option("--worst", help="Misclassified images to show.")] = 24,
    tta: Annotated[bool, typer.Option("--tta", help="Average over small shifts and scales of every image "
                                      "(never flips).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Accuracy, per-class table, confusion matrix PNG and worst mistakes PNG of a model or committee."""
    from gtsrb_kit.evaluate import evaluate
    from gtsrb_kit.runs import run_data
    from gtsrb_kit.train import default_data_file

    if not data:
        data = [run_data(m.parent) or default_data_file() for m in model]
    result = evaluate(model, data, out_dir=out, split=split, worst=worst, tta=tta)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{result['split']} set of {Path(result['data']).name}", title_justify="left")
    for column in ("class", "name", "precision", "recall", "support"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for row in result["per_class"]:
        table.add_row(str(row["class_id"]), row["name"], f"{row['precision']:.4f}", f"{row['recall']:.4f}",
                      str(row["support"]))
    console.print(table)
    who = f" committee of {len(result['models'])}" if len(result["models"]) > 1 else ""
    who += " with TTA" if tta else ""
    console.print(f"evaluate{':' + who if who else ''}: accuracy {result['accuracy']:.4f} "
                  f"({result['errors']} errors / {result['count']}); "
                  f"files in {Path(result['files']['evaluation']).parent}", highlight=False, soft_wrap=True)


@app.command("predict")
def predict_command(
    images: Annotated[list[Path], typer.Argument(help="Image files (PPM, PNG, JPEG), each a crop around one sign.",
                                                 show_default=False)],
    model: Annotated[Path, typer.Option("--model", help="A .keras file written by gtsrb-kit train, or a .onnx/.tflite "
                                        "file written by gtsrb-kit export.", show_default=False)],
    top: Annotated[int, typer.Option("--top", help="Classes to show per image.", min=1)] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one list) for scripts.")] = False,
) -> None:
    """Classify images with the preprocessing recorded with the model (size, mode, ROI crop)."""
    from gtsrb_kit.evaluate import predict

    results = predict(model, images, top_k=top)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    for r in results:
        extra = "".join(f"; {t['class_id']} {t['name']} {t['probability']:.3f}" for t in r["top"][1:])
        typer.echo(f"{r['path']}: {r['class_id']} {r['name']} ({r['probability']:.3f}){extra}")


@app.command("models")
def models_command(
    shape: Annotated[str, typer.Option("--shape", help="Input shape HxWxC for the parameter counts.")] = "48x48x3",
) -> None:
    """List the bundled models with their parameter counts."""
    from gtsrb_kit.errors import ConfigError
    from gtsrb_kit.models import DEFAULT_MODEL, count_params, list_models

    try:
        dims = tuple(int(v) for v in shape.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--shape {shape!r}: use HxWxC, e.g. 48x48x3") from None
    if len(dims) != 3:
        raise ConfigError(f"--shape {shape!r}: use HxWxC, e.g. 48x48x3")
    table = Table(title=f"bundled models (parameters for {shape} inputs)", title_justify="left")
    for column in ("name", "parameters", "description"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for name, description in list_models():
        label = f"{name} (default)" if name == DEFAULT_MODEL else name
        table.add_row(label, f"{count_params(name, dims):,}", description)  # type: ignore[arg-type]
    console.print(table)


@app.command("augment-preview")
def augment_preview_command(
    data: DataOption = None,
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("augment-preview.png"),
    preset: Annotated[str, typer.Option("--preset", help="none, fidle or strong.")] = "strong",
    augment_path: Annotated[str, typer.Option("--augment-path", help="tf (auto, batch: the same) or albumentations.")] = "auto",
    draws: Annotated[int, typer.Option("--draws", help="Augmented versions per original.")] = 6,
    classes: Annotated[str | None, typer.Option("--classes", help="Comma-separated class ids. Default: all.",
                                                show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="Split to take originals from.")] = "train",
    seed: Annotated[int, typer.Option("--seed", help="Augmentation seed.")] = 0,
) -> None:
    """Write a PNG grid: per class an original and several augmented draws of it."""
    from gtsrb_kit.augment import preview_grid
    from gtsrb_kit.errors import ConfigError
    from gtsrb_kit.store import class_names, load_split
    from gtsrb_kit.train import default_data_file

    path = data if data is not None else default_data_file()
    try:
        chosen = [int(c) for c in classes.split(",")] if classes else None
    except ValueError:
        raise ConfigError(f"--classes {classes!r}: use comma-separated class ids, e.g. 0,14,17") from None
    x, y = load_split(path, split)
    written = preview_grid(x, y, out, augment=preset, draws=draws, classes=chosen, seed=seed, path=augment_path,
                           class_names=class_names(path))
    console.print(f"augment-preview: wrote {written}", highlight=False, soft_wrap=True)


__all__ = ["train_command", "evaluate_command", "predict_command", "models_command", "augment_preview_command"]
