#!/usr/bin/env bash
# Quality of trained bundles against the baselines, on both shared datasets, warm and cold, 3 seeds.
# For each (dataset, split, seed): `lmrec train --config bench/configs/<dataset>-<split>.json` on the
# split's training part, then `lmrec eval` of the bundle (lmrec = int8 through the SDK, lmrec-fp32)
# next to the baselines, same split and seed. The configs and SASRec's settings were chosen on
# validation NDCG@10 (bench/RESULTS.md, "Quality" and "Baselines").
# Raw reports: bench/results/quality/<dataset>-<split>-s<seed>.json; then bench/quality.py copies the
# median seed's report to bench/results/quality-<dataset>-<split>.json and prints the tables.
#
# Usage: bash bench/quality.sh [DATASET ...]      (default: amazon-office movielens-latest-small)
#   SEEDS=...         default "0 1 2"
#   SPLITS=...        default "warm cold"
#   WARM_METHODS=...  default "zeroshot,itemknn,sasrec,lmrec-fp32,lmrec" (sasrec is most of the time)
#   COLD_METHODS=...  default "zeroshot,itemknn,lmrec-fp32,lmrec" (an ID model cannot score cold items:
#                     sasrec's cold numbers are in bench/results/baselines-*-cold.json)
#   THREADS=N         torch threads of `lmrec train` (1 lets two datasets run side by side on 2 cores)
# Bundles go to out/quality/ (not committed). Each step is skipped when its output exists, so an
# interrupted run continues where it stopped. Several hours on a 2-core CPU, most of it SASRec.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/sasrec_settings.sh
datasets=${*:-"amazon-office movielens-latest-small"}
seeds=${SEEDS:-"0 1 2"}
splits=${SPLITS:-"warm cold"}
warm_methods=${WARM_METHODS:-"zeroshot,itemknn,sasrec,lmrec-fp32,lmrec"}
cold_methods=${COLD_METHODS:-"zeroshot,itemknn,lmrec-fp32,lmrec"}
threads=(); [ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
lmrec=${LMREC:-lmrec}
mkdir -p bench/results/quality out/quality
for ds in $datasets; do
  force=()
  sasrec_settings "$ds"
  case $ds in
    amazon-office) spec=amazon:../shared/data/$ds ;;
    movielens-latest-small) spec=movielens:../shared/data/$ds
      # MiniLM int8 keeps mean cosine 0.993 on these texts, but their top-10 neighbour overlap is 0.87-0.88
      # (< the 0.9 gate) for every int8 variant tried: many near-duplicate "title (year) genres" texts, whose
      # neighbours swap on tiny differences. Exported anyway; the breach is recorded in the manifest.
      force=(--force) ;;
  esac
  for split in $splits; do
    for seed in $seeds; do
      bundle=out/quality/$ds-$split-s$seed
      report=bench/results/quality/$ds-$split-s$seed.json
      if [ ! -f "$bundle/manifest.json" ]; then
        resume=(); [ -f "$bundle.ckpt/state.pt" ] && resume=(--resume)
        $lmrec train --data "$spec" --split "$split" --seed "$seed" --out "$bundle" "${resume[@]}" "${threads[@]}" "${force[@]}" \
          --config "bench/configs/$ds-$split.json" --plot "out/quality/$ds-$split-s$seed.png" --quiet
      fi
      if [ ! -f "$report" ]; then
        if [ "$split" = warm ]; then methods=$warm_methods; else methods=$cold_methods; fi
        settings=(); [[ ,$methods, == *,sasrec,* ]] && settings=("${sasrec[@]}")
        $lmrec eval --data "$spec" --split "$split" --seed "$seed" --bundle "$bundle" --methods "$methods" \
          "${settings[@]}" --json "$report" --quiet
      fi
    done
  done
done
python bench/quality.py summary bench/results/quality
