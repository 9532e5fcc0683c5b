"""CPU inference of exported models: Keras vs ONNX Runtime vs LiteRT, latency, throughput, sizes.

Usage::

    python benchmarks/bench_export.py [--model runs/x/best.keras ...] [--models vgg-bn,resnet-small]
                                      [--shapes 32x32x3,48x48x3] [--repeats 50] [--rounds 3]
                                      [--batch-size 256] [--out table.md]

For each model (the bundled ones built untrained at each ``--shapes`` unless ``--model`` gives
trained ``.keras`` files), the model is exported with :func:`gtsrb_kit.export.export_keras`
(what ``gtsrb-kit export`` runs) to ONNX and LiteRT in a temporary folder, then on random
images in ``[0, 1]``:

* latency: median milliseconds of one image (batch 1) over ``--repeats`` calls after a warm-up;
* throughput: images per second at ``--batch-size`` (median of ``--rounds`` batches);
* file sizes of the ``.keras``, ``.onnx`` and ``.tflite`` files;
* the largest probability difference of each export against Keras on the throughput batch.

Keras runs through ``model.predict_on_batch`` (its compiled predict function), ONNX through
``onnxruntime`` (CPU provider), LiteRT through ``ai_edge_litert`` (XNNPACK). Every runtime uses
the cores it sees; run under ``taskset -c 0,1`` to pin. The machine may be shared: the load
average at the start and the end is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _runners(model: Any, folder: Path) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], dict[str, int]]:
    """Keras, ONNX and LiteRT runners of one model, and the bytes of each file."""
    from gtsrb_kit.export import export_keras, open_runtime

    files = {"keras": folder / "m.keras", "onnx": folder / "m.onnx", "litert": folder / "m.tflite"}
    model.save(files["keras"])
    export_keras(model, "onnx", files["onnx"])
    export_keras(model, "litert", files["litert"])
    runners = {"keras": lambda x: np.asarray(model.predict_on_batch(x)),
               "onnx": open_runtime(files["onnx"]), "litert": open_runtime(files["litert"])}
    return runners, {k: p.stat().st_size for k, p in files.items()}


def bench_model(model: Any, label: str, repeats: int, rounds: int, batch_size: int) -> dict[str, Any]:
    """One table row: latency, throughput, sizes and parity of one model."""
    shape = tuple(int(v) for v in model.input_shape[1:])
    rng = np.random.default_rng(0)
    one = rng.random((1, *shape), dtype=np.float32)
    batch = rng.random((batch_size, *shape), dtype=np.float32)
    row: dict[str, Any] = {"model": label, "input": "x".join(map(str, shape)), "params": model.count_params()}
    with tempfile.TemporaryDirectory() as tmp:
        runners, sizes = _runners(model, Path(tmp))
        reference = runners["keras"](batch)
        for name, run in runners.items():
            row[f"{name}_ms"] = 1e3 * _median_seconds(lambda: run(one), repeats)
            row[f"{name}_ips"] = batch_size / _median_seconds(lambda: run(batch), rounds, warmup=1)
            row[f"{name}_mb"] = sizes[name] / 1e6
            if name != "keras":
                row[f"{name}_diff"] = float(np.max(np.abs(run(batch) - reference)))
    return row


def markdown(rows: list[dict[str, Any]], batch_size: int) -> str:
    """The rows as a Markdown table."""
    head = ["model", "input", "params", "latency ms (Keras / ONNX / LiteRT)",
            f"images/s at batch {batch_size} (Keras / ONNX / LiteRT)", "MB (.keras / .onnx / .tflite)",
            "max probability difference vs Keras (ONNX / LiteRT)"]
    lines = ["| " + " | ".join(head) + " |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['params']:,} | {r['keras_ms']:.2f} / {r['onnx_ms']:.2f} / "
            f"{r['litert_ms']:.2f} | {r['keras_ips']:,.0f} / {r['onnx_ips']:,.0f} / {r['litert_ips']:,.0f} | "
            f"{r['keras_mb']:.2f} / {r['onnx_mb']:.2f} / {r['litert_mb']:.2f} | "
            f"{r['onnx_diff']:.1e} / {r['litert_diff']:.1e} |")
    return "\n".join(lines)


def _models(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(label, model) pairs: the given ``.keras`` files, else the bundled models at each shape."""
    if args.model:
        from gtsrb_kit.evaluate import load_model

        return [(str(p), load_model(p)) for p in args.model]
    from gtsrb_kit.models import build_model, list_models

    names = args.models.split(",") if args.models else [n for n, _ in list_models()]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    return [(name, build_model(name, shape)) for shape in shapes for name in names]  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="a trained .keras file (repeatable)")
    parser.add_argument("--models", default="", help="bundled models, comma-separated (default: all)")
    parser.add_argument("--shapes", default="32x32x3,48x48x3")
    parser.add_argument("--repeats", type=int, default=50, help="batch-1 calls per runtime")
    parser.add_argument("--rounds", type=int, default=3, help="full batches per runtime")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    load_start = os.getloadavg()
    rows = []
    for label, model in _models(args):
        rows.append(bench_model(model, label, args.repeats, args.rounds, args.batch_size))
        print(f"  {label} {rows[-1]['input']}: done", flush=True)
    table = markdown(rows, args.batch_size)
    load_end = os.getloadavg()
    footer = (f"\n\n{os.cpu_count()} CPUs; load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the "
              f"end{'' if args.model else '; bundled models with untrained weights'}")
    print(table + footer)
    if args.out:
        args.out.write_text(table + footer + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
