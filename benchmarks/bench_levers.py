"""Training throughput of the speed levers: batch size, pipeline, bfloat16, EMA, XLA, oneDNN, augmentation.

Usage::

    python benchmarks/bench_levers.py DATA.h5 [--levers base,device,batch128,...] [--images 7680]
        [--warmup 15] [--rounds 1] [--model vgg-bn] [--preset strong] [--model-option KEY=VALUE]
        [--out results.json]

Each lever is :func:`gtsrb_kit.train.train` as ``gtsrb-kit train`` runs it (``--preset``
augmentation, AdamW, the cosine schedule) in float32 with the host pipeline (``base``), changed in
one setting, in a fresh process of its own (environment variables such as ``TF_ENABLE_ONEDNN_OPTS``
act at TensorFlow's start). The time of the training steps of ``--images`` images after ``--warmup``
steps (tracing, first allocations) gives images/s; the run then stops. ``--rounds`` passes over the
levers, one after the other, spread the machine's drift over all of them. Printed (Markdown) and
written to ``--out`` (JSON): per lever the median images/s over the rounds, their range and the
ratio to ``base``, all measured in this one run. Accuracy is not measured here: a lever that is
faster must still hold accuracy (``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: lever name -> (changes to the ``train`` arguments, environment variables, XLA on the CPU)
LEVERS: dict[str, tuple[dict[str, Any], dict[str, str], bool]] = {
    "base": ({}, {}, False),
    "device": ({"pipeline": "device"}, {}, False),
    "batch128": ({"batch_size": 128}, {}, False),
    "batch256": ({"batch_size": 256}, {}, False),
    "bfloat16": ({"mixed_precision": "mixed_bfloat16"}, {}, False),
    "bfloat16-ema": ({"mixed_precision": "mixed_bfloat16", "ema": 0.999}, {}, False),
    "xla": ({}, {}, True),
    "xla-device": ({"pipeline": "device"}, {}, True),
    "no-onednn": ({}, {"TF_ENABLE_ONEDNN_OPTS": "0"}, False),
    "no-augment": ({"augment": "none"}, {}, False),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="a cooked set-*.h5 file")
    p.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated, of: {', '.join(LEVERS)}")
    p.add_argument("--images", type=int, default=7680, help="images of the timed training steps per lever")
    p.add_argument("--warmup", type=int, default=15, help="steps before the timing starts")
    p.add_argument("--rounds", type=int, default=1, help="passes over the levers, interleaved (median kept)")
    p.add_argument("--model", default="vgg-bn")
    p.add_argument("--preset", default="strong")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one lever in this process
    args = p.parse_args(argv)
    args.levers = [name.strip() for name in args.levers.split(",") if name.strip()]
    unknown = sorted(set(args.levers) - set(LEVERS))
    if unknown:
        p.error(f"unknown lever(s) {', '.join(unknown)}; use {', '.join(LEVERS)}")
    return args


def make_timer(warmup: int, steps: int) -> Any:
    """A Keras callback that times ``steps`` training steps after ``warmup`` and then stops the run."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: float | None = None
            self._done = 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._done += 1
            if self._done == warmup:
                self._start = time.perf_counter()
            elif self._done == warmup + steps:
                self.seconds = time.perf_counter() - self._start
                self.model.stop_training = True

    return StepTimer()


def run_one(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Train with lever ``name`` in this process until the timer stops it; its images/s."""
    import gtsrb_kit.devices as devices
    from gtsrb_kit.cli.train import _parse_options
    from gtsrb_kit.train import train

    changes, _, xla = LEVERS[name]
    if xla:  # not a user option: this measures whether it should become one
        setup = devices.setup_devices
        devices.setup_devices = lambda *a, **kw: dataclasses.replace(setup(*a, **kw), jit_compile=True)
    settings = {"model": args.model, "augment": args.preset, "batch_size": 64, "epochs": 1, "verbose": 0,
                "mixed_precision": "off", "pipeline": "host", "model_options": _parse_options(args.model_option),
                **changes}
    steps = max(1, args.images // int(settings["batch_size"]))
    timer = make_timer(args.warmup, steps)
    with tempfile.TemporaryDirectory() as tmp:
        train(args.data, run_dir=Path(tmp) / "run", callbacks=[timer], **settings)
    if timer.seconds is None:
        raise SystemExit(f"error: {args.data}: an epoch has fewer than {args.warmup + steps} steps; "
                         "use a larger file or fewer --images")
    images = steps * int(settings["batch_size"])
    return {"lever": name, "images_per_s": round(images / timer.seconds, 1), "seconds": round(timer.seconds, 2),
            "settings": {k: v for k, v in settings.items() if k != "verbose"}, "xla": xla}


def run_lever(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One lever in a fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **LEVERS[name][1]}
    cmd = [sys.executable, __file__, str(args.data), "--one", name, "--images", str(args.images),
           "--warmup", str(args.warmup), "--model", args.model, "--preset", args.preset,
           *(f"--model-option={option}" for option in args.model_option)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: lever {name} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name}: {row['images_per_s']:,.0f} images/s", file=sys.stderr, flush=True)
    return row


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every lever once per round, the rounds one after the other; per lever the median round and the range."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.levers}
    for _ in range(max(1, args.rounds)):
        for name in args.levers:
            runs[name].append(run_lever(args, name))
    rows = []
    for name, results in runs.items():
        speeds = sorted(r["images_per_s"] for r in results)
        rows.append({**results[0], "images_per_s": float(np.median(speeds)), "rounds": speeds})
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args, args.one)))
        return
    rows = run_all(args)
    base = next((r["images_per_s"] for r in rows if r["lever"] == "base"), None)
    print(f"\n{args.data.name}, model {args.model}, preset {args.preset}; {args.images} images after {args.warmup} steps; "
          f"{len(os.sched_getaffinity(0))} cores\n")
    print("| lever | settings | images/s | rounds | vs base |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        changed = {**LEVERS[r["lever"]][0], **({"xla": True} if r["xla"] else {}), **LEVERS[r["lever"]][1]}
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else "-"
        spread = "-".join(f"{v:,.0f}" for v in (r["rounds"][0], r["rounds"][-1]))
        print(f"| {r['lever']} | {changed or 'batch 64, float32, host pipeline'} | {r['images_per_s']:,.0f} | {spread} "
              f"| {ratio} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
