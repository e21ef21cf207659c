#!/usr/bin/env bash
# On the GPU machine, from the repository root, once per device call (bench/gpu/README.md):
#
#   bash bench/gpu/run.sh OUTDIR [RESULTS_DIR]
#
# 1. No GPU here (nvidia-smi absent or failing; once all pieces are there, also when torch sees no
#    CUDA device): one line, exit 0.
# 2. Stashes the pieces present in OUTDIR (each checked against OUTDIR/INDEX.json) under
#    $LMREC_GPU_ROOT (default /tmp/lmrec-gpu), which lasts while the machine stays warm. Pieces
#    still missing: one line naming them, exit 0.
# 3. All there: checks every sha256, unpacks the payload, installs (install.py), runs the checks
#    (checks.py) and writes RESULTS_DIR/results.json (default RESULTS_DIR: $LMREC_GPU_RESULTS, else
#    OUTDIR) with setup.json, setup.log and the training logs. Exit 0 when every check passed,
#    1 when one failed or setup broke.
#
# Environment: PYTHON (default python3), LMREC_GPU_ROOT, LMREC_GPU_BUDGET (seconds for the checks,
# default 210), LMREC_GPU_DEVICE (cuda), LMREC_GPU_CHECK_ARGS (extra checks.py arguments, e.g.
# "--dry-run"), LMREC_GPU_UNTIL=stash|unpack|install|checks (stop after that stage), and for tests
# on a CPU machine LMREC_GPU_ASSUME_GPU=1 (skip step 1) and LMREC_GPU_HOST_PACKAGES=1 (use this
# Python's onnxruntime, grpc and transformers instead of the carried cp312 ones);
# LMREC_GPU_LMREC_SRC installs lmrec from another source tree than this checkout.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
OUTDIR=${1:?usage: bash bench/gpu/run.sh OUTDIR [RESULTS_DIR]}
RESULTS=${2:-${LMREC_GPU_RESULTS:-$OUTDIR}}
PY=${PYTHON:-python3}
ROOT=${LMREC_GPU_ROOT:-/tmp/lmrec-gpu}
UNTIL=${LMREC_GPU_UNTIL:-checks}
DEVICE=${LMREC_GPU_DEVICE:-cuda}
BUDGET=${LMREC_GPU_BUDGET:-210}

if [[ ${LMREC_GPU_ASSUME_GPU:-0} != 1 ]]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "lmrec-gpu: no GPU here (nvidia-smi absent or failing); nothing done"
    exit 0
  fi
fi

mkdir -p "$ROOT"
"$PY" "$here/pieces.py" stash "$OUTDIR" "$ROOT"
rc=$?
[[ $rc -eq 3 ]] && exit 0  # pieces missing: the line above says which
[[ $rc -ne 0 ]] && exit 1  # the line above says why
[[ $UNTIL == stash ]] && exit 0

# all pieces are there: now the slower question (a piece call stays a few seconds long)
if [[ ${LMREC_GPU_ASSUME_GPU:-0} != 1 ]] \
   && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "lmrec-gpu: no GPU here (torch missing or it sees no CUDA device); nothing done"
  exit 0
fi

mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
started=$(date +%s)
"$PY" "$here/pieces.py" unpack "$ROOT" "$ROOT/payload" || { echo "lmrec-gpu: unpacking failed"; exit 1; }
[[ $UNTIL == unpack ]] && exit 0

host=()
[[ ${LMREC_GPU_HOST_PACKAGES:-0} == 1 ]] && host=(--host-packages)
"$PY" "$here/install.py" --payload "$ROOT/payload" --root "$ROOT" --repo "${LMREC_GPU_LMREC_SRC:-$repo}" --results "$RESULTS" \
  --device "$DEVICE" "${host[@]}"
setup_rc=$?
# shellcheck disable=SC1091
source "$ROOT/env.sh"
[[ $UNTIL == install ]] && exit $setup_rc
echo "lmrec-gpu: setup took $(( $(date +%s) - started )) s; running the checks (budget ${BUDGET} s)"

# shellcheck disable=SC2086
timeout -k 15 $((BUDGET + 90)) "$PY" "$here/checks.py" --payload "$ROOT/payload" --work "$ROOT/work" \
  --results "$RESULTS" --device "$DEVICE" --budget "$BUDGET" ${LMREC_GPU_CHECK_ARGS:-}
checks_rc=$?
[[ $checks_rc -eq 124 || $checks_rc -eq 137 ]] && echo "lmrec-gpu: the checks ran past their time limit; $RESULTS/results.json has what finished"
echo "lmrec-gpu: done in $(( $(date +%s) - started )) s after the last piece"
[[ $setup_rc -ne 0 ]] && exit 1
exit $checks_rc
