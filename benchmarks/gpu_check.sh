#!/usr/bin/env bash
# Time to test accuracy on a GPU machine: benchmarks/bench_train.py, gtsrb-kit's recipe beside the
# course's, on DATA (a cooked file) or on synthetic data cooked at 32x32 RGB; prints the figures.
#
#   bash benchmarks/gpu_check.sh [DATA.h5] [EPOCHS] [MAX_MINUTES]     (defaults: synthetic, 3 epochs, 5 min)
#
# Needs: pip install -e '.[gpu]' (tensorflow[and-cuda]). RESULTS=path.json keeps the JSON (else it is
# written to the temporary folder and removed).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-}"
EPOCHS="${2:-3}"
MINUTES="${3:-5}"
WORK="$(mktemp -d -t gtsrb-gpu-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ -z "$DATA" ]; then
  echo "== no data given: synthetic images, cooked at 32x32 RGB (figures of speed only; accuracies mean little)"
  python -m gtsrb_kit synth --root "$WORK/raw" >/dev/null
  python -m gtsrb_kit cook --root "$WORK/raw" --out "$WORK" --size 32 --mode RGB >/dev/null
  DATA="$WORK/set-32x32-RGB.h5"
fi
if command -v nvidia-smi >/dev/null; then  # how busy the GPU is while the benchmark runs
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 250 > "$WORK/busy.txt" &
  SAMPLER=$!
fi
python benchmarks/bench_train.py "$DATA" --epochs "$EPOCHS" --max-minutes "$MINUTES" \
  --out "${RESULTS:-$WORK/results.json}" 2> >(grep -v "node_def_util" >&2)
if [ -n "${SAMPLER:-}" ]; then
  kill "$SAMPLER"
  # samples above 0 are the training part (start-up and data loading leave the GPU idle)
  awk '$1 > 0 { n++; s += $1 } END { if (n) printf "GPU busy: %.0f %% of the time while training (%d samples of 250 ms)\n", s / n, n }' "$WORK/busy.txt"
fi
