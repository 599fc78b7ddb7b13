#!/usr/bin/env bash
# Interleaved A/B of two `elbo` binaries on the MNIST reference run: ROUNDS rounds, each runs
# A then B for 2 epochs on THREADS threads (default 2) and prints both runs' seconds per epoch
# (from report.json). Quote the median of the per-round ratios B / A.
#
#   [THREADS=1] scripts/ab_epochs.sh OLD_BINARY NEW_BINARY [ROUNDS] [MNIST_DIR]
set -euo pipefail
a=$1; b=$2; rounds=${3:-4}; mnist=${4:-../shared/data/mnist}
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  for which in A B; do
    if [ "$which" = A ]; then bin=$a; else bin=$b; fi
    "$bin" train --data mnist --data-dir "$mnist" --epochs 2 --threads "${THREADS:-2}" --out "$out/$which-$r" --json > /dev/null
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], [round(e['train_seconds'], 3) for e in d['epochs']])" \
      "$out/$which-$r/report.json" "$which" "$r"
  done
done
