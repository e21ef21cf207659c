#!/usr/bin/env bash
# Quality of `lmrec train` with its defaults against the baselines, on both shared datasets, 3 seeds.
# For each (dataset, seed): a default `lmrec train` (no --config: settings chosen on validation) on
# the warm split and one on the cold split (the mixed split trains exactly as cold, so the cold
# bundle serves both), then one `lmrec eval` per split with every method of that split on the same
# split and seed: warm and mixed with zeroshot, itemknn, sasrec (its settings chosen on validation)
# and lmrec (mixed also lmrec-plain: the same bundle with its new-item rules off); cold with
# zeroshot, itemknn and lmrec (an ID model scores every new item alike).
# Raw reports: bench/results/quality/<dataset>-<split>-s<seed>.json; what each training chose is
# recorded in bench/configs/<dataset>-<split>-s<seed>.json (a record, not an input). Then
# `python bench/quality.py summary bench/results/quality` prints the tables.
#
# Usage: bash bench/quality.sh [DATASET ...]      (default: amazon-office movielens-latest-small)
#   SEEDS=...   default "0 1 2"
#   SPLITS=...  default "warm cold mixed" (mixed needs the cold bundle: it trains it when missing)
#   THREADS=N   torch threads of `lmrec train` and `lmrec eval` (1 lets two datasets run side by side)
#   LMREC=...   the lmrec command (default: lmrec)
#   EVAL_ARGS=... extra `lmrec eval` arguments for the splits with SASRec (warm, mixed; the cold split's eval
#               has no SASRec, and `lmrec eval` refuses --set for a method it does not run); the MovieLens
#               rows of bench/RESULTS.md fixed SASRec with
#               EVAL_ARGS="--set sasrec.max_len=200 --set sasrec.lr=0.002 --set sasrec.dropout=0.2
#               --set sasrec.patience=5 --set sasrec.max_epochs=40 --set sasrec.adam_beta2=0.999
#               --set sasrec.window_overlap=0" (its own search there takes about an hour; they ran before
#               Adam's beta2 default became 0.98 and before windows overlapped; the Office rows: add
#               EVAL_ARGS="--set sasrec.window_overlap=0")
# Bundles go to out/quality/ (not committed). Each step is skipped when its output exists, so an
# interrupted run continues where it stopped (a training resumes from its checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
datasets=${*:-"amazon-office movielens-latest-small"}
seeds=${SEEDS:-"0 1 2"}
splits=${SPLITS:-"warm cold mixed"}
threads=(); [ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
lmrec=${LMREC:-lmrec}
read -r -a eval_args <<< "${EVAL_ARGS:-}"
mkdir -p bench/results/quality bench/configs out/quality
for ds in $datasets; do
  case $ds in
    amazon-office) spec=amazon:../shared/data/$ds ;;
    movielens-latest-small) spec=movielens:../shared/data/$ds ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  for seed in $seeds; do
    for split in $splits; do
      trained=$split; [ "$split" = mixed ] && trained=cold
      bundle=out/quality/$ds-$trained-s$seed
      if [ ! -f "$bundle/manifest.json" ]; then
        resume=(); [ -f "$bundle.ckpt/state.pt" ] && resume=(--resume)
        $lmrec train --data "$spec" --split "$trained" --seed "$seed" --out "$bundle" "${resume[@]}" "${threads[@]}" \
          --plot "out/quality/$ds-$trained-s$seed.png" --quiet 2> "out/quality/$ds-$trained-s$seed.log"
        python -c "import json,sys; m=json.load(open(sys.argv[1])); json.dump(m['training']['config'], open(sys.argv[2],'w'), indent=1)" \
          "$bundle/manifest.json" "bench/configs/$ds-$trained-s$seed.json"
      fi
      report=bench/results/quality/$ds-$split-s$seed.json
      if [ ! -f "$report" ]; then
        case $split in
          cold) methods=zeroshot,itemknn,lmrec; reference=(--reference zeroshot); extra=() ;;
          mixed) methods=zeroshot,itemknn,sasrec,lmrec,lmrec-plain; reference=(--reference sasrec); extra=("${eval_args[@]}") ;;
          *) methods=zeroshot,itemknn,sasrec,lmrec; reference=(--reference sasrec); extra=("${eval_args[@]}") ;;
        esac
        $lmrec eval --data "$spec" --split "$split" --seed "$seed" --bundle "$bundle" --methods "$methods" "${threads[@]}" \
          "${reference[@]}" "${extra[@]}" --json "$report" --quiet 2> "out/quality/eval-$ds-$split-s$seed.log"
      fi
    done
  done
done
python bench/quality.py summary bench/results/quality
