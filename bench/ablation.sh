#!/usr/bin/env bash
# Issue 12's ablation: what each piece of the default pipeline adds, on one dataset and seed.
# Every row trains with the settings the default run chose (bench/configs/<dataset>-<split>-s<seed>.json,
# written by bench/quality.sh; no search) and switches pieces off:
#   user         the user model over the frozen base encoder, no borrowed residuals, no bonus
#   +text        + objective text (the encoder's top layers fine-tuned on co-occurrence)
#   +borrow      + items without a residual borrow their text neighbours' (in training and scoring)
#   +bonus       + the new-item bonus chosen on validation (= the default pipeline)
# The +borrow row is not trained apart: the bonus is chosen after training, so +borrow is the
# +bonus bundle at bonus 0, a row of the calibration grid its manifest records.
# on the mixed split (validation: every user, so warm and new targets are both measured), and
# user / +text on the warm split. Validation NDCG@10 (all, warm targets, new targets) and minutes
# come from each bundle's manifest; `python bench/ablation.py out/ablation` prints the table.
#
# Usage: bash bench/ablation.sh [DATASET] [SEED]   (default: amazon-office 0)
#   THREADS=N   torch threads (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
ds=${1:-amazon-office}
seed=${2:-0}
threads=${THREADS:-1}
case $ds in
  amazon-office) spec=amazon:../shared/data/$ds ;;
  movielens-latest-small) spec=movielens:../shared/data/$ds ;;
  *) echo "unknown dataset $ds" >&2; exit 2 ;;
esac
mkdir -p out/ablation
for split in mixed warm; do
  chosen=bench/configs/$ds-$([ "$split" = mixed ] && echo cold || echo warm)-s$seed.json
  [ -f "$chosen" ] || { echo "$chosen: run bench/quality.sh first (it records what the search chose)" >&2; exit 2; }
  user_objectives=$(python -c "import json,sys; print(','.join(o for o in json.load(open(sys.argv[1]))['objectives'] if o != 'text') or 'none')" "$chosen")
  rows="user text"; [ "$split" = mixed ] && rows="user text bonus"
  for row in $rows; do
    out=out/ablation/$ds-$split-s$seed-$row
    [ -f "$out/manifest.json" ] && continue
    case $row in
      user) set=(--objectives "$user_objectives" --set borrow_k=0 --set new_item_bonus=0) ;;
      text) set=(--objectives "text,$user_objectives" --set borrow_k=0 --set new_item_bonus=0) ;;
      bonus) set=(--objectives "text,$user_objectives") ;;
    esac
    set=("${set[@]/%,none/}")
    lmrec train --data "$spec" --split "$split" --seed "$seed" --config "$chosen" "${set[@]}" --threads "$threads" \
      --out "$out" --quiet 2> "$out.log"
  done
done
python bench/ablation.py out/ablation
