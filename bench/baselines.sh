#!/usr/bin/env bash
# Baselines on both shared datasets, warm and cold: bench/results/baselines-<dataset>-<split>.json
# Usage: bash bench/baselines.sh [SEED]   (2-core CPU: ~1 h for SASRec on each dataset when the host is busy)
# SASRec's settings (chosen on validation NDCG@10) are in bench/sasrec_settings.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/sasrec_settings.sh
seed=${1:-0}
office=amazon:../shared/data/amazon-office
ml=movielens:../shared/data/movielens-latest-small
sasrec_settings amazon-office
lmrec eval --data $office --split warm --seed "$seed" --methods pop,itemknn,zeroshot,sasrec "${sasrec[@]}" \
  --json bench/results/baselines-amazon-office-warm.json --quiet
sasrec_settings movielens-latest-small
lmrec eval --data $ml --split warm --seed "$seed" --methods pop,itemknn,zeroshot,sasrec "${sasrec[@]}" \
  --json bench/results/baselines-movielens-latest-small-warm.json --quiet
# Cold: the ID-only methods cannot score an item absent from training (they rank it last), so only
# the text method is informative; SASRec is left out of the cold runs for that reason.
lmrec eval --data $office --split cold --seed "$seed" --methods pop,itemknn,zeroshot \
  --json bench/results/baselines-amazon-office-cold.json --quiet
lmrec eval --data $ml --split cold --seed "$seed" --methods pop,itemknn,zeroshot \
  --json bench/results/baselines-movielens-latest-small-cold.json --quiet
python bench/tables.py bench/results/baselines-*.json
