#!/usr/bin/env bash
# Interleaved A/B of two `elbo` binaries on the count models of BENCHMARKS.md (the settings of
# benches/frameworks/scvi_compare.py, without batch normalisation): ROUNDS rounds, each runs A
# then B on pbmc (20 epochs) and on `cells` (4 epochs), pinned to cores 0-1 on 2 threads, and
# prints each run's median ms/epoch over epochs 2 and up, and its last test -ELBO (the same
# for A and B when a change keeps the bits). Quote the median of the per-round ratios A / B.
#
#   scripts/ab_counts.sh OLD_BINARY NEW_BINARY [ROUNDS] [PBMC_DIR]
set -euo pipefail
a=$1; b=$2; rounds=${3:-3}; pbmc=${4:-../shared/data/pbmc-celltypist}
common=(--likelihood nb --hidden 128 --latent 10 --adam-eps 0.01 --weight-decay 1e-6 --warmup 0
        --batch-size 128 --threads 2)
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  for data in pbmc cells; do
    if [ "$data" = pbmc ]; then
      args=(--data counts --data-path "$pbmc" --top-genes 2000 --epochs 20)
    else
      args=(--data cells --epochs 4)
    fi
    for which in A B; do
      if [ "$which" = A ]; then bin=$a; else bin=$b; fi
      taskset -c 0,1 "$bin" train "${args[@]}" "${common[@]}" --out "$out/$data-$which-$r" --json \
        > /dev/null 2> "$out/$data-$which-$r.log" || { cat "$out/$data-$which-$r.log" >&2; exit 1; }
      python3 -c "import json, statistics, sys; d = json.load(open(sys.argv[1])); s = [e['train_seconds'] for e in d['epochs']][1:]; print(sys.argv[2], sys.argv[3], sys.argv[4], 'ms/epoch', round(statistics.median(s) * 1000, 2), 'test -ELBO', round(d['epochs'][-1]['test']['neg_elbo'], 3))" \
        "$out/$data-$which-$r/report.json" "$data" "$which" "$r"
    done
  done
done
rm -rf "$out"
