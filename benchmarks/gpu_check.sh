#!/usr/bin/env bash
# Short training on a GPU machine: cooks synthetic data, trains the default model a few epochs
# with and without augmentation, prints images/s and seconds per epoch, and checks the GPU was used.
#
#   bash benchmarks/gpu_check.sh [EPOCHS] [SIZE]      (defaults: 3 epochs, 48x48)
#
# Needs: pip install -e '.[gpu]' (tensorflow[and-cuda]); runs in a temporary folder.
set -euo pipefail
EPOCHS="${1:-3}"
SIZE="${2:-48}"
WORK="$(mktemp -d -t gtsrb-gpu-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2

python - <<PY
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"tensorflow {tf.__version__}; GPUs: {[g.name for g in gpus] or 'none (this check is meant for a GPU machine)'}")
PY

echo "== synthetic data and cook ($SIZE x $SIZE RGB)"
gtsrb-kit synth --root "$WORK/raw" --tracks-per-class 6 --frames-per-track 10 --test-per-class 20 >/dev/null
gtsrb-kit cook --root "$WORK/raw" --out "$WORK/data" --size "$SIZE" --mode RGB >/dev/null

for PRESET in none strong; do
  echo "== train default model, --preset $PRESET, $EPOCHS epochs, batch 256"
  gtsrb-kit train --data "$WORK/data/set-${SIZE}x${SIZE}-RGB.h5" --preset "$PRESET" --epochs "$EPOCHS" \
    --batch-size 256 --run-dir "$WORK/run-$PRESET" --quiet
  python - "$WORK/run-$PRESET" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
history = json.loads((run / "history.json").read_text())
config = json.loads((run / "config.json").read_text())
n = config["counts"]["train"]
for h in history:
    print(f"  epoch {h['epoch']}: {h['seconds']:.2f} s, {n / h['seconds']:,.0f} images/s, val_accuracy {h['val_accuracy']:.3f}")
steady = history[1:] or history
mean = sum(h["seconds"] for h in steady) / len(steady)
print(f"  steady state: {mean:.2f} s/epoch, {n / mean:,.0f} training images/s; devices {config['runtime']['devices']}, "
      f"policy {config['runtime']['policy']}, XLA {config['runtime']['jit_compile']}")
PY
done
