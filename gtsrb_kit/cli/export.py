"""`gtsrb-kit export`: a trained model as ONNX, LiteRT or SavedModel, verified against Keras."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gtsrb_kit.cli._app import app


def _human(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


@app.command("export")
def export_command(
    model: Annotated[Path, typer.Option("--model", help="A .keras file (e.g. runs/x/best.keras).",
                                        show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="onnx, litert or saved_model.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="The exported file (a folder for saved_model). Default: "
                                             "beside the model (best.onnx, best.tflite, best.saved_model).",
                                             show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", help="A cooked set-*.h5 file whose test split checks the "
                                              "export. Default: the run's own data file (config.json).",
                                              show_default=False)] = None,
    quantize: Annotated[str | None, typer.Option("--quantize", help="int8: post-training integer quantization "
                                                 "(litert only; fails if test accuracy drops by more than "
                                                 "--max-drop).", show_default=False)] = None,
    max_drop: Annotated[float, typer.Option("--max-drop", help="Largest accepted test-accuracy loss of a "
                                            "quantized export.")] = 0.01,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export a model for deployment, with its preprocessing JSON beside it; verified on the test split."""
    from gtsrb_kit.export import check_format, export_model

    check_format(fmt, quantize)  # before loading TensorFlow: a typo fails at once
    result = export_model(model, fmt, out, data, quantize=quantize, max_accuracy_drop=max_drop)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    p = result["parity"]
    check = (f"accuracy {p['keras_accuracy']:.4f} -> {p['exported_accuracy']:.4f}, same class {p['same_class']}/"
             f"{p['images']}" if quantize else f"same class {p['same_class']}/{p['images']}")
    typer.echo(f"export: {result['path']} ({_human(result['bytes'])}); parity on the test split of "
               f"{Path(result['data']).name}: {check}, max probability difference {p['max_prob_diff']:.2g}; "
               f"preprocessing in {Path(result['recipe']).name}")
