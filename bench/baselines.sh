#!/usr/bin/env bash
# Baselines on both shared datasets, warm and cold: bench/results/baselines-<dataset>-<split>.json
# Usage: bash bench/baselines.sh [SEED]   (2-core CPU: ~1 h for SASRec on each dataset when the host is busy)
# SASRec settings were chosen on validation NDCG@10 (see bench/RESULTS.md, "Baselines").
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-0}
office=amazon:../shared/data/amazon-office
ml=movielens:../shared/data/movielens-latest-small
lmrec eval --data $office --split warm --seed "$seed" --methods pop,itemknn,zeroshot,sasrec \
  --set sasrec.dropout=0.5 --set sasrec.lr=0.002 --set sasrec.patience=10 --set sasrec.max_epochs=100 \
  --json bench/results/baselines-amazon-office-warm.json --quiet
lmrec eval --data $ml --split warm --seed "$seed" --methods pop,itemknn,zeroshot,sasrec \
  --set sasrec.max_len=200 --set sasrec.lr=0.002 --set sasrec.patience=5 --set sasrec.max_epochs=40 \
  --json bench/results/baselines-movielens-latest-small-warm.json --quiet
# Cold: the ID-only methods cannot score an item absent from training (they rank it last), so only
# the text method is informative; SASRec is left out of the cold runs for that reason.
lmrec eval --data $office --split cold --seed "$seed" --methods pop,itemknn,zeroshot \
  --json bench/results/baselines-amazon-office-cold.json --quiet
lmrec eval --data $ml --split cold --seed "$seed" --methods pop,itemknn,zeroshot \
  --json bench/results/baselines-movielens-latest-small-cold.json --quiet
python bench/tables.py bench/results/baselines-*.json
