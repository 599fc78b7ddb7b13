#!/usr/bin/env python3
"""2 processes x 1 thread (mpirun, --shards 2) against 1 process x 2 threads, in interleaved
rounds: each round runs every variant once, in turn, for EPOCHS epochs, and takes its median
training seconds per epoch from report.json (epoch 1 left out when there are more). Prints each
round's ratios and their median.

    python3 benches/mpi/throughput.py --data mnist --rounds 5 [--elbo target/release/elbo]

The binary must be built with `cargo build --release -p elbo-cli --features mpi`.
"""
import argparse, json, statistics, subprocess, tempfile, os

p = argparse.ArgumentParser()
p.add_argument("--data", default="mnist", choices=["mnist", "cells"])
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--elbo", default="target/release/elbo")
p.add_argument("--mnist", default="../shared/data/mnist")
p.add_argument("--batch-size", type=int, default=128)
a = p.parse_args()

data = ["--data", "mnist", "--data-dir", a.mnist] if a.data == "mnist" else ["--data", "cells"]
common = data + ["--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--json"]
MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "core", "-n"]
variants = {
    "1p x 2t": [a.elbo, "train", "--threads", "2"],
    "1p x 2t, 2 shards": [a.elbo, "train", "--threads", "2", "--shards", "2"],
    "2p x 1t, 2 shards": MPI + ["2", a.elbo, "train", "--threads", "1", "--shards", "2"],
}
tmp = tempfile.mkdtemp()
rows = []
for r in range(a.rounds):
    secs = {}
    for name, cmd in variants.items():
        out = os.path.join(tmp, f"{r}-{name.replace(' ', '')}")
        subprocess.run(cmd + common + ["--out", out], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ep = [e["train_seconds"] for e in json.load(open(os.path.join(out, "report.json")))["epochs"]]
        secs[name] = statistics.median(ep[1:] if len(ep) > 1 else ep)
    base = secs["1p x 2t"]
    ratios = {k: base / v for k, v in secs.items()}
    rows.append(ratios)
    print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3f} s/epoch (x{ratios[k]:.2f})" for k, v in secs.items()), flush=True)
print("median throughput relative to 1 process x 2 threads:")
for k in variants:
    vals = [row[k] for row in rows]
    print(f"  {k}: {statistics.median(vals):.3f} (range {min(vals):.3f}-{max(vals):.3f})")
