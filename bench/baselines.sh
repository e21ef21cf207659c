#!/usr/bin/env bash
# Baselines on both shared datasets, warm and cold splits: bench/results/baselines-<dataset>-<split>.json
# Usage: bash bench/baselines.sh [SEED]   (about 1.5 h on a 2-core CPU, most of it SASRec)
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-0}
for ds in amazon-office movielens-latest-small; do
  case $ds in amazon-office) spec=amazon:../shared/data/$ds ;; *) spec=movielens:../shared/data/$ds ;; esac
  for split in warm cold; do
    lmrec eval --data "$spec" --split "$split" --seed "$seed" --methods pop,itemknn,zeroshot,sasrec \
      --json "bench/results/baselines-$ds-$split.json" --quiet
  done
done
python bench/tables.py bench/results/baselines-*.json
