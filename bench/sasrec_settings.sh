# SASRec's settings per shared dataset, chosen on validation NDCG@10 (bench/RESULTS.md, "Baselines").
# Sourced by baselines.sh, so its tables train the SASRec they record (round 2's: disjoint windows, window_overlap=0).
# Usage: sasrec_settings DATASET   -> sets the array `sasrec` of `lmrec eval --set` arguments
sasrec_settings() {
  case $1 in
    amazon-office) sasrec=(--set sasrec.dropout=0.5 --set sasrec.lr=0.002 --set sasrec.patience=10 --set sasrec.max_epochs=100 --set sasrec.window_overlap=0) ;;
    movielens-latest-small) sasrec=(--set sasrec.max_len=200 --set sasrec.lr=0.002 --set sasrec.patience=5 --set sasrec.max_epochs=40 --set sasrec.window_overlap=0) ;;
    *) echo "no SASRec settings for dataset $1" >&2; return 2 ;;
  esac
}
