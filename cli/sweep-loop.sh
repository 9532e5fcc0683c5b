#!/usr/bin/env bash
# Run a gtsrb-kit sweep without a scheduler: one process per run, in a plain shell loop.
#
#   bash cli/sweep-loop.sh cli/gtsrb5.toml runs/gtsrb5
#   JOBS=2 bash cli/sweep-loop.sh cli/gtsrb5.toml runs/gtsrb5   # two runs at a time (e.g. 2 GPUs)
#
# `gtsrb-kit sweep PLAN --run-dir DIR` alone also runs every run, in one process. A process per
# run frees all memory between runs and lets you run several at once. Both are resumable: rerun
# the same command after an interruption and only unfinished runs are trained.
set -uo pipefail

PLAN="${1:?usage: sweep-loop.sh PLAN RUN_DIR}"
RUN_DIR="${2:?usage: sweep-loop.sh PLAN RUN_DIR}"
JOBS="${JOBS:-1}"
GTSRB_KIT="${GTSRB_KIT:-gtsrb-kit}"      # or: python -m gtsrb_kit

N=$($GTSRB_KIT sweep "$PLAN" --run-dir "$RUN_DIR" --count) || exit 2
# Cook the plan's datasets once, before runs start in parallel.
$GTSRB_KIT sweep "$PLAN" --run-dir "$RUN_DIR" --prepare || exit 2
mkdir -p "$RUN_DIR/logs"

run_task() {
  echo "task $1/$N: started"
  if $GTSRB_KIT sweep "$PLAN" --run-dir "$RUN_DIR" --verbose 2 --task-id "$1" > "$RUN_DIR/logs/task_$1.out" 2>&1; then
    echo "task $1/$N: ok"
  else
    echo "task $1/$N: FAILED (see $RUN_DIR/logs/task_$1.out)"
    return 1
  fi
}
export -f run_task
export PLAN RUN_DIR N GTSRB_KIT

status=0
seq 0 $((N - 1)) | xargs -P "$JOBS" -I{} bash -c 'run_task {}' || status=1
$GTSRB_KIT report "$RUN_DIR" > /dev/null && echo "report: $RUN_DIR/report.html"
exit $status
