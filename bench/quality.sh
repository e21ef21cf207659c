#!/usr/bin/env bash
# Quality of trained bundles against the baselines, on both shared datasets, warm and cold, 3 seeds.
# For each (dataset, split, seed): `lmrec train` on the split's training part, then `lmrec eval` of
# the bundle (lmrec = int8 through the SDK, lmrec-fp32) next to the baselines, same split and seed.
# Raw reports: bench/results/quality/<dataset>-<split>-s<seed>.json; then bench/quality.py copies the
# median seed's report to bench/results/quality-<dataset>-<split>.json and prints the tables.
#
# Usage: bash bench/quality.sh [SEEDS] [WARM_METHODS] [COLD_METHODS]
#   SEEDS         default "0 1 2"
#   WARM_METHODS  default "zeroshot,itemknn,sasrec,lmrec-fp32,lmrec" (sasrec is most of the time)
#   COLD_METHODS  default "zeroshot,itemknn,lmrec-fp32,lmrec" (an ID model cannot score cold items:
#                 sasrec's cold numbers are in bench/results/baselines-*-cold.json)
# Bundles go to out/quality/ (not committed). Each step is skipped when its output exists, so an
# interrupted run continues where it stopped. Several hours on a 2-core CPU, most of it SASRec.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
warm_methods=${2:-"zeroshot,itemknn,sasrec,lmrec-fp32,lmrec"}
cold_methods=${3:-"zeroshot,itemknn,lmrec-fp32,lmrec"}
lmrec=${LMREC:-lmrec}
mkdir -p bench/results/quality out/quality
for ds in amazon-office movielens-latest-small; do
  case $ds in amazon-office) spec=amazon:../shared/data/$ds ;; *) spec=movielens:../shared/data/$ds ;; esac
  for split in warm cold; do
    for seed in $seeds; do
      bundle=out/quality/$ds-$split-s$seed
      report=bench/results/quality/$ds-$split-s$seed.json
      if [ ! -f "$bundle/manifest.json" ]; then
        resume=(); [ -f "$bundle.ckpt/state.pt" ] && resume=(--resume)
        $lmrec train --data "$spec" --split "$split" --seed "$seed" --out "$bundle" "${resume[@]}" \
          --plot "out/quality/$ds-$split-s$seed.png" --quiet
      fi
      if [ ! -f "$report" ]; then
        if [ "$split" = warm ]; then methods=$warm_methods; else methods=$cold_methods; fi
        $lmrec eval --data "$spec" --split "$split" --seed "$seed" --bundle "$bundle" --methods "$methods" \
          --json "$report" --quiet
      fi
    done
  done
done
python bench/quality.py summary bench/results/quality
