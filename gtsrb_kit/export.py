"""Export a trained model for deployment (ONNX, LiteRT, SavedModel), and predict with the result.

Every exported model takes what the Keras model takes: ``float32`` NHWC images
``(batch, size, size, channels)`` with pixels in ``[0, 1]`` (``uint8`` pixels divided by 255),
after the model's own preprocessing (size, mode, ROI crop). It returns softmax probabilities
over the class names. The recipe is written beside the export as ``<file name>.json``
(``best.onnx.json``, ``best.tflite.json``, ``best.saved_model.json``), so nothing about the
input is left to guess.

Predicting through ONNX needs only ``onnxruntime`` (``pip install gtsrb-kit[onnx]``): this
module imports TensorFlow only for Keras models, SavedModels and export itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gtsrb_kit.errors import ConfigError, DataError
from gtsrb_kit.fileio import atomic_path, write_json

#: Export format -> suffix of the exported file (a SavedModel is a folder).
FORMATS: dict[str, str] = {"onnx": ".onnx", "litert": ".tflite", "saved_model": ".saved_model"}
QUANTIZE = ("int8",)
EXPORT_FORMAT = "gtsrb-kit-export/1"
Runner = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, C) -> float probabilities (N, classes)


def check_format(fmt: str, quantize: str | None = None) -> str:
    """Return ``fmt`` if it is a known export format (and ``quantize`` fits it).

    Raises:
        ConfigError: unknown format, unknown quantization or quantization outside LiteRT.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantization {quantize!r}; use {', '.join(QUANTIZE)}")
    if quantize is not None and fmt != "litert":
        raise ConfigError(f"--quantize {quantize} works with --format litert only, not {fmt}")
    return fmt


def default_output(model_path: str | Path, fmt: str, quantize: str | None = None) -> Path:
    """``run/x/best.keras`` -> ``run/x/best.onnx`` (``best.int8.tflite`` when quantized)."""
    model_path = Path(model_path)
    stem = f"{model_path.stem}.{quantize}" if quantize else model_path.stem
    return model_path.with_name(stem + FORMATS[check_format(fmt, quantize)])


def recipe_path(exported: str | Path) -> Path:
    """The preprocessing JSON of an exported model: its file name plus ``.json``."""
    exported = Path(exported)
    return exported.with_name(exported.name + ".json")


def input_spec(input_shape: Sequence[int]) -> dict[str, Any]:
    """What an exported model takes and returns, in words and numbers."""
    return {
        "name": "image", "shape": [None, *(int(v) for v in input_shape)], "layout": "NHWC", "dtype": "float32",
        "range": [0.0, 1.0], "scale": "uint8 pixels / 255, after the preprocessing (size, mode, roi)",
        "output": "float32 softmax probabilities (batch, len(class_names))",
    }


def _representative(data: Path, count: int = 256) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration images for int8 quantization: the first ``count`` training images of ``data``."""
    from gtsrb_kit.store import SplitSource

    source = SplitSource(data, "train", normalize=True)

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(min(count, len(source))):
            yield [source[i][0][None]]

    return gen


def export_keras(model: Any, fmt: str, target: Path, *, quantize: str | None = None,
                 calibration: Path | None = None) -> None:
    """Write ``model`` in ``fmt`` to ``target`` with Keras' ``model.export`` (no checks, not atomic).

    Args:
        model: A ``keras.Model``.
        fmt: A key of :data:`FORMATS`.
        target: The file (folder for ``saved_model``) to write.
        quantize: ``"int8"`` for post-training integer quantization (LiteRT; float32 input/output).
        calibration: A cooked file whose training images calibrate the quantization.
    """
    shape = tuple(int(v) for v in model.input_shape[1:])
    model(np.zeros((1, *shape), np.float32), training=False)  # Keras exports only models that were called
    kwargs: dict[str, Any] = {}
    if quantize == "int8":
        import tensorflow as tf

        if calibration is None:
            raise ConfigError("int8 quantization needs calibration images; pass --data FILE (a cooked file)")
        kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": _representative(calibration)}
    keras_format = "tf_saved_model" if fmt == "saved_model" else fmt
    with _quiet():
        model.export(str(target), format=keras_format, verbose=False, **kwargs)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converters' chatter on stdout (tf2onnx and the LiteRT converter print a lot)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


@contextlib.contextmanager
def _atomic_folder(final: Path) -> Iterator[Path]:
    """Like :func:`gtsrb_kit.fileio.atomic_path` for a folder: a temporary folder renamed on success."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    try:
        export_into = tmp / final.name
        yield export_into
        if final.exists():
            os.replace(final, old)
        os.replace(export_into, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _atomic_export(final: Path) -> Iterator[Path]:
    """A temporary path with ``final``'s suffix (the exporters check it), renamed to ``final`` on success."""
    if final.suffix not in (FORMATS["onnx"], FORMATS["litert"]):  # a SavedModel folder
        with _atomic_folder(final) as tmp:
            yield tmp
        return
    with atomic_path(final) as tmp:
        named = tmp.with_name(tmp.name + final.suffix)
        try:
            yield named
            os.replace(named, tmp)
        finally:
            named.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Runtimes: one function per format, float32 images in [0, 1] -> probabilities


def _onnx_runtime(path: Path) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(f"{path}: predicting with ONNX needs onnxruntime; pip install 'gtsrb-kit[onnx]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DataError(f"{path}: not a loadable ONNX model ({type(exc).__name__}); export it with gtsrb-kit export") \
            from None
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _interpreter_class() -> Any:
    """The LiteRT interpreter (``ai-edge-litert``), else TensorFlow's ``tf.lite.Interpreter``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


def _litert_runtime(path: Path) -> Runner:
    try:
        interpreter = _interpreter_class()(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: not a loadable LiteRT model ({type(exc).__name__}); export it with gtsrb-kit "
                        "export") from None
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    allocated: list[tuple[int, ...]] = []

    def run(x: np.ndarray) -> np.ndarray:
        if allocated[-1:] != [x.shape]:  # the batch size is part of the allocation
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            allocated[:] = [x.shape]
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return run


def _saved_model_runtime(path: Path) -> Runner:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))  # keep it referenced: its variables die with it
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a loadable SavedModel ({type(exc).__name__})") from None
    return lambda x: loaded.serve(tf.constant(x)).numpy()


def exported_kind(path: str | Path) -> str | None:
    """``"onnx"``, ``"litert"`` or ``"saved_model"`` for an exported model's path, else ``None``."""
    path = Path(path)
    if path.suffix == FORMATS["onnx"]:
        return "onnx"
    if path.suffix == FORMATS["litert"]:
        return "litert"
    return "saved_model" if (path / "saved_model.pb").is_file() else None


def open_runtime(path: str | Path) -> Runner:
    """A function running an exported model on one ``float32`` batch in ``[0, 1]`` (NHWC).

    Raises:
        DataError: missing or unreadable model file.
        ConfigError: the runtime for it is not installed.
    """
    path = Path(path)
    kind = exported_kind(path)
    if kind is None or not path.exists():
        raise DataError(f"{path}: no such exported model; pass a .onnx or .tflite file written by gtsrb-kit export")
    return {"onnx": _onnx_runtime, "litert": _litert_runtime, "saved_model": _saved_model_runtime}[kind](path)


def exported_probs(runtime: Runner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities of ``uint8`` images (``(N, H, W, C)``) through ``runtime``, batch by batch."""
    outs = [runtime(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32) / np.float32(255.0))
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float64) if outs else np.empty((0, 0))


# ----------------------------------------------------------------------------------------------
# Export with verification


def compare(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Agreement of two probability tables over the same images (reference: the Keras model)."""
    ref, got = reference.argmax(axis=1), exported.argmax(axis=1)
    n = int(len(labels))
    return {
        "images": n, "same_class": int(np.sum(ref == got)),
        "max_prob_diff": float(np.max(np.abs(reference - exported))) if n else 0.0,
        "keras_accuracy": round(float(np.mean(ref == labels)), 6) if n else None,
        "exported_accuracy": round(float(np.mean(got == labels)), 6) if n else None,
    }


def check_parity(parity: dict[str, Any], where: str, max_accuracy_drop: float | None = None) -> None:
    """Raise when an export disagrees with its Keras model.

    Args:
        parity: A :func:`compare` result.
        where: What to name in the message (the export and the data file).
        max_accuracy_drop: ``None``: every image must get the same class (float exports). Else
            the largest accepted test-accuracy loss (quantized exports).

    Raises:
        DataError: the export disagrees.
    """
    if max_accuracy_drop is None:
        if parity["same_class"] != parity["images"]:
            raise DataError(f"{where}: the export disagrees with the Keras model on "
                            f"{parity['images'] - parity['same_class']} of {parity['images']} test images "
                            f"(max probability difference {parity['max_prob_diff']:.3g}); nothing written")
        return
    drop = (parity["keras_accuracy"] or 0.0) - (parity["exported_accuracy"] or 0.0)
    if drop > max_accuracy_drop:
        raise DataError(f"{where}: quantization costs {drop:.4f} test accuracy ({parity['keras_accuracy']:.4f} -> "
                        f"{parity['exported_accuracy']:.4f}), more than {max_accuracy_drop}; nothing written")


def _output_path(model_path: Path, fmt: str, out: str | Path | None, quantize: str | None) -> Path:
    """Where to write: ``out`` (a file, or an existing folder for the default name), else beside the model."""
    default = default_output(model_path, fmt, quantize)
    if out is None:
        return default
    out = Path(out)
    if fmt != "saved_model" and out.is_dir():
        return out / default.name
    if fmt != "saved_model" and out.suffix != FORMATS[fmt]:
        raise ConfigError(f"--out {out}: a {fmt} export must end in {FORMATS[fmt]}")
    return out


def export_model(
    model_path: str | Path,
    format: str,  # noqa: A002 - the CLI's word
    out: str | Path | None = None,
    verify_data: str | Path | None = None,
    *,
    quantize: str | None = None,
    max_accuracy_drop: float = 0.01,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Export a ``.keras`` model, verify it on a test split, write it and its preprocessing JSON.

    Args:
        model_path: A ``.keras`` file written by gtsrb-kit train (e.g. ``runs/x/best.keras``).
        format: ``onnx``, ``litert`` or ``saved_model``.
        out: The exported file (folder for ``saved_model``). Default: beside the model
            (``best.onnx``, ``best.tflite``, ``best.saved_model``).
        verify_data: A cooked file whose test split checks the export. Default: the run's own.
        quantize: ``"int8"``: post-training integer quantization (LiteRT only).
        max_accuracy_drop: Largest accepted test-accuracy loss of a quantized export.
        batch_size: Inference batch size of the check.

    Returns:
        ``{"path", "recipe", "format", "bytes", "data", "parity": {images, same_class,
        max_prob_diff, keras_accuracy, exported_accuracy}}``.

    Raises:
        ConfigError: unknown format or quantization, or an ``out`` with the wrong suffix.
        DataError: missing model or data, or an export that disagrees with the model.
    """
    from gtsrb_kit.evaluate import load_model, read_preprocessing, split_scores
    from gtsrb_kit.runs import run_data

    fmt = check_format(format, quantize)
    model_path = Path(model_path)
    pre = read_preprocessing(model_path)
    data = Path(verify_data) if verify_data is not None else run_data(model_path.parent)
    if data is None:
        raise DataError(f"{model_path}: no cooked file recorded beside it to verify the export on; pass --data FILE")
    final = _output_path(model_path, fmt, out, quantize)
    final.parent.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    x, y, reference, _ = split_scores(model, data, "test", batch_size)
    with _atomic_export(final) as tmp:
        export_keras(model, fmt, tmp, quantize=quantize, calibration=data)
        parity = compare(reference, exported_probs(open_runtime(tmp), x, batch_size), y)
        check_parity(parity, f"{final} on {data.name}", max_accuracy_drop if quantize else None)
        write_json(recipe_path(final), {
            "format": EXPORT_FORMAT, "runtime": fmt, "quantize": quantize, "source": str(model_path), **pre,
            "input": input_spec(model.input_shape[1:]), "parity": {"data": str(data), **parity},
        })
    return {"path": str(final), "recipe": str(recipe_path(final)), "format": fmt, "bytes": _size(final),
            "data": str(data), "parity": parity}


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# Predict with an exported model


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The preprocessing JSON written beside an exported model.

    Raises:
        DataError: the JSON is missing or not one gtsrb-kit export wrote.
    """
    from gtsrb_kit.runs import read_json

    recipe = read_json(recipe_path(path))
    if not recipe or recipe.get("format") != EXPORT_FORMAT or not recipe.get("size") or not recipe.get("mode"):
        raise DataError(f"{path}: no preprocessing record {recipe_path(path).name} beside it; export the model with "
                        "gtsrb-kit export (which writes both)")
    return recipe


def predict_exported(
    path: str | Path,
    images: Sequence[str | Path],
    *,
    top_k: int = 1,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Classify image files with an exported model (``.onnx``: onnxruntime, no TensorFlow).

    Args:
        path: A ``.onnx``, ``.tflite`` or SavedModel folder written by :func:`export_model`.
        images: Image files (PPM, PNG, JPEG), each a crop around one sign.
        top_k: How many classes to return per image (best first).
        batch_size: Inference batch size.

    Returns:
        What :func:`gtsrb_kit.evaluate.predict` returns: per image ``path``, ``class_id``,
        ``name``, ``probability`` and ``top``.

    Raises:
        DataError: unreadable model, recipe or image files.
        ConfigError: ``top_k`` < 1, no images, or the runtime is not installed.
    """
    from gtsrb_kit.evaluate import check_request, read_inputs, top_classes

    check_request(images, top_k)
    runtime = open_runtime(path)
    recipe = read_recipe(path)
    x = read_inputs(images, recipe)
    expected = [int(v) for v in (recipe.get("input") or {}).get("shape", [None, *x.shape[1:]])[1:]]
    if list(x.shape[1:]) != expected:
        raise DataError(f"{path}: expects {tuple(expected)} inputs but its recipe gives {tuple(x.shape[1:])}")
    return top_classes(images, exported_probs(runtime, x, batch_size), recipe.get("class_names") or [], top_k)
