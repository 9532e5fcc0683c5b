"""Device selection for training: CPUs, GPUs, mixed precision and distribution strategies.

``devices`` strings (the ``--devices`` option):

* ``None`` / ``"auto"``: every visible GPU (a ``MirroredStrategy`` when there are several), else the CPU;
* ``"cpu"``: the CPU only, even when GPUs are visible;
* ``"gpu:0,1"`` / ``"cpu:0,1"``: those devices (several -> ``MirroredStrategy``; ``cpu:0,1`` needs
  logical CPU devices, see :func:`split_cpu`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtsrb_kit.errors import ConfigError


@dataclass
class DeviceSetup:
    """What :func:`setup_devices` chose."""

    strategy: Any
    devices: list[str]
    gpu: bool
    mixed_precision: bool
    jit_compile: bool

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)


def split_cpu(count: int = 2) -> None:
    """Split the physical CPU into ``count`` logical devices (before TensorFlow initialises them).

    Used to exercise the multi-device path on machines without GPUs (in a fresh process).
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def _parse(devices: str | None, gpus: list[str], cpus: list[str]) -> list[str]:
    spec = (devices or "auto").strip().lower()
    if spec == "auto":
        return gpus or cpus[:1]
    if spec in ("cpu", "gpu"):
        chosen = gpus if spec == "gpu" else cpus[:1]
        if not chosen:
            raise ConfigError(f"--devices {devices!r}: no {spec.upper()} is visible; use --devices cpu or auto")
        return chosen
    kind, _, ids = spec.partition(":")
    pool = {"gpu": gpus, "cpu": cpus}.get(kind)
    if pool is None or not ids:
        raise ConfigError(f"--devices {devices!r} not understood; use auto, cpu, gpu, gpu:0,1 or cpu:0,1")
    chosen = []
    for part in ids.split(","):
        try:
            index = int(part)
        except ValueError:
            raise ConfigError(f"--devices {devices!r}: {part!r} is not a device number") from None
        if not 0 <= index < len(pool):
            raise ConfigError(f"--devices {devices!r}: {kind}:{index} does not exist ({len(pool)} visible)")
        chosen.append(pool[index])
    return chosen


def cpu_prefers_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether mixed bfloat16 trains faster than float32 on this CPU (``cpuinfo``: ``/proc/cpuinfo``'s text).

    True with AMX (oneDNN's bfloat16 matrix units) and on AMD CPUs with AVX512-BF16, where
    ``benchmarks/bench_levers.py`` measured 1.12-1.21x; False elsewhere, Intel CPUs with AVX512-BF16
    but no AMX included (0.74x there): bfloat16 is emulated or not worth its casts.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False

    def field(name: str) -> str:
        line = next((ln for ln in cpuinfo.splitlines() if ln.split(":", 1)[0].strip() == name), "")
        return line.partition(":")[2]

    flags = set(field("flags").split())
    return "amx_bf16" in flags or ("avx512_bf16" in flags and field("vendor_id").strip() == "AuthenticAMD")


def setup_devices(devices: str | None = None, mixed_precision: str = "auto") -> DeviceSetup:
    """Choose devices and a distribution strategy; set the Keras dtype policy.

    Args:
        devices: See the module docstring.
        mixed_precision: ``auto`` (mixed ``float16`` on GPUs, mixed ``bfloat16`` on CPUs for which
            :func:`cpu_prefers_bfloat16`, else ``float32``), ``on``/``off``,
            or a Keras policy name (``mixed_float16``, ``mixed_bfloat16``, ``float32``).

    Returns:
        A :class:`DeviceSetup`. The global Keras dtype policy is set accordingly; call
        :func:`reset_policy` when done.
    """
    import keras
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    chosen = _parse(devices, gpus, cpus)
    on_gpu = any("GPU" in d.upper() for d in chosen)
    mp = (mixed_precision or "auto").lower()
    if mp == "auto":
        policy = "mixed_float16" if on_gpu else ("mixed_bfloat16" if cpu_prefers_bfloat16() else "float32")
    elif mp in ("on", "true", "yes"):
        policy = "mixed_float16" if on_gpu else "mixed_bfloat16"
    elif mp in ("off", "false", "no"):
        policy = "float32"
    elif mp in ("mixed_float16", "mixed_bfloat16", "float32"):
        policy = mp
    else:
        raise ConfigError(f"--mixed-precision {mixed_precision!r}: use auto, on, off, mixed_float16, "
                          "mixed_bfloat16 or float32")
    keras.mixed_precision.set_global_policy(policy)
    if len(chosen) > 1:
        strategy = tf.distribute.MirroredStrategy(devices=chosen)
    else:
        strategy = tf.distribute.OneDeviceStrategy(chosen[0]) if devices not in (None, "auto") or on_gpu \
            else tf.distribute.get_strategy()
    return DeviceSetup(strategy=strategy, devices=chosen, gpu=on_gpu, mixed_precision=policy != "float32",
                       jit_compile=on_gpu)


def reset_policy() -> None:
    """Back to the ``float32`` Keras dtype policy."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
