#!/usr/bin/env python3
"""elbo against scvi-tools on count data, with matched settings, timed in interleaved rounds.

    python3 benches/frameworks/scvi_compare.py [--rounds 3] [--threads 2,1] [--quality-epochs pbmc=200,cells=30]

For each dataset (the real 10x folder's 2,000 most variable genes, and the procedural `cells`):
1. `elbo export` writes the split and the kept genes once, so both tools see the same cells,
   genes and split (scvi-tools gets the training file whole, train_size 1.0).
2. Speed: rounds of (elbo, scvi-tools) training runs in turn, each its own process pinned with
   taskset to the same cores; per round the ratio of their median seconds per epoch; reported:
   every round's ratio, their median and spread. Peak RSS is each process's maximum resident
   set.
3. Quality: one longer run each on 2 threads, then the test ELBO, log p(x) with k = 1000
   importance samples (on the first --logpx-cells test cells for both), and with labels the
   15-NN accuracy of the test cells' latent means (fitted on the training cells).

Settings for both: one hidden layer of 128, latent 10, NB with gene-wise dispersion, log1p
input, observed library size, Adam lr 1e-3 eps 0.01 weight decay 1e-6, batch 128, no KL
warm-up, no batch normalisation or dropout (--batch-norm turns both on for both). Prints a
Markdown table for BENCHMARKS.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(HERE, ".venv")
PY = os.path.join(VENV, "bin", "python")
ELBO = os.path.join(ROOT, "target", "release", "elbo")
PBMC = os.path.join(os.path.dirname(ROOT), "shared", "data", "pbmc-celltypist")


def ensure_venv():
    if not os.path.exists(PY):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    try:
        subprocess.run([PY, "-c", "import scvi"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        # scvi-tools 1.4 imports only with flax when jax is in the same venv.
        subprocess.run([PY, "-m", "pip", "install", "-q", "scvi-tools", "flax"], check=True)


def pinned(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "sys.stderr.write('\\nPEAK_RSS_KB %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(r.returncode)")
    full = ["taskset", "-c", ",".join(str(c) for c in range(threads)), sys.executable, "-c", wrapper] + cmd
    p = subprocess.run(full, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{p.stderr[-3000:]}")
    kb = int([l for l in p.stderr.splitlines() if l.startswith("PEAK_RSS_KB")][-1].split()[1])
    return p.stdout, kb / 1024.0


def elbo_args(data, bn):
    extra = ["--batch-norm", "--dropout", "0.1"] if bn else []
    return data + ["--likelihood", "nb", "--hidden", "128", "--latent", "10", "--adam-eps", "0.01",
                   "--weight-decay", "1e-6", "--batch-size", "128", "--warmup", "0"] + extra


def elbo_train(data, epochs, threads, bn, out):
    cmd = [ELBO, "train"] + elbo_args(data, bn) + ["--epochs", str(epochs), "--threads", str(threads),
                                                   "--out", out, "--json"]
    _, rss = pinned(cmd, threads)
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    secs = [e["train_seconds"] for e in rep["epochs"]]
    return statistics.median(secs), rss, rep


def scvi_train(folder, epochs, threads, bn, extra=()):
    cmd = [PY, os.path.join(HERE, "scvi_vae.py"), folder, "--epochs", str(epochs), "--threads", str(threads)]
    if bn:
        cmd += ["--batch-norm", "--dropout", "0.1"]
    out, rss = pinned(cmd + list(extra), threads)
    r = json.loads(out.strip().splitlines()[-1])
    # The first epoch holds scvi-tools' and torch's warm-up, as JAX's compile is left out in run.py.
    return statistics.median(r["s_per_epoch"][1:] or r["s_per_epoch"]), rss, r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", default="2,1")
    p.add_argument("--speed-epochs", default="pbmc=20,cells=4")
    p.add_argument("--quality-epochs", default="pbmc=200,cells=30")
    p.add_argument("--logpx-cells", type=int, default=200)
    p.add_argument("--batch-norm", action="store_true")
    p.add_argument("--datasets", default="pbmc,cells")
    a = p.parse_args()
    ensure_venv()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "elbo-cli"], check=True, cwd=ROOT)
    speed_epochs = dict(kv.split("=") for kv in a.speed_epochs.split(","))
    quality_epochs = dict(kv.split("=") for kv in a.quality_epochs.split(","))
    datasets = {
        "pbmc": ["--data", "counts", "--data-path", PBMC, "--top-genes", "2000"],
        "cells": ["--data", "cells"],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.datasets.split(","):
            data = datasets[name]
            folder = os.path.join(tmp, name)
            subprocess.run([ELBO, "export"] + data + ["--out", folder], check=True, capture_output=True)
            for threads in [int(t) for t in a.threads.split(",")]:
                ratios, ours, theirs, rss_o, rss_t = [], [], [], [], []
                for r in range(a.rounds):
                    o, ro, _ = elbo_train(data, int(speed_epochs[name]), threads, a.batch_norm,
                                          os.path.join(tmp, f"run-{name}-{threads}-{r}"))
                    t, rt, _ = scvi_train(folder, int(speed_epochs[name]), threads, a.batch_norm,
                                          ["--no-eval"])
                    ours.append(o), theirs.append(t), rss_o.append(ro), rss_t.append(rt)
                    ratios.append(t / o)
                    print(f"{name} {threads}t round {r + 1}: elbo {o:.4f} s/epoch, scvi-tools {t:.4f}: {t / o:.2f}x",
                          file=sys.stderr)
                rows.append({"data": name, "threads": threads, "elbo_s": statistics.median(ours),
                             "scvi_s": statistics.median(theirs), "ratios": ratios,
                             "median_ratio": statistics.median(ratios), "elbo_rss": max(rss_o),
                             "scvi_rss": max(rss_t)})
            # Quality, 2 threads, one run each.
            q = int(quality_epochs[name])
            out = os.path.join(tmp, f"quality-{name}")
            _, _, rep = elbo_train(data, q, 2, a.batch_norm, out)
            ev = subprocess.run([ELBO, "eval", os.path.join(out, "model.safetensors"), "--k", "1000",
                                 "--limit", str(a.logpx_cells), "--json", "--threads", "2"],
                                check=True, capture_output=True, text=True, cwd=ROOT)
            e = json.loads(ev.stdout)
            full = subprocess.run([ELBO, "eval", os.path.join(out, "model.safetensors"), "--k", "1",
                                   "--json", "--threads", "2"], check=True, capture_output=True, text=True)
            ef = json.loads(full.stdout)
            _, _, s = scvi_train(folder, q, 2, a.batch_norm, ["--k", "1000", "--logpx-limit", str(a.logpx_cells)])
            rows.append({"data": name, "quality": True, "epochs": q,
                         "elbo_test_elbo": ef["elbo"]["elbo"], "scvi_test_elbo": s["test_elbo"],
                         "elbo_log_px": e["log_px"][-1]["log_px"], "scvi_log_px": s["test_log_px"],
                         "log_px_cells": min(a.logpx_cells, e["points"]),
                         "elbo_knn": ef.get("knn15_accuracy"), "scvi_knn": s.get("knn15_accuracy")})
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps(rows, indent=1))
    print()
    print("| data | threads | elbo s/epoch | scvi-tools s/epoch | per-round ratios | median ratio | peak RSS elbo / scvi-tools (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "quality" in r:
            continue
        print(f"| {r['data']} | {r['threads']} | {r['elbo_s']:.4f} | {r['scvi_s']:.4f} | "
              f"{', '.join(f'{x:.2f}' for x in r['ratios'])} | {r['median_ratio']:.2f}x | "
              f"{r['elbo_rss']:.0f} / {r['scvi_rss']:.0f} |")
    print()
    print("| data | epochs | test ELBO elbo / scvi-tools | test log p(x), k = 1000 (cells) | 15-NN accuracy |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "quality" not in r:
            continue
        knn = "n/a (no labels)" if r["elbo_knn"] is None else f"{100 * r['elbo_knn']:.1f}% / {100 * r['scvi_knn']:.1f}%"
        print(f"| {r['data']} | {r['epochs']} | {r['elbo_test_elbo']:.1f} / {r['scvi_test_elbo']:.1f} | "
              f"{r['elbo_log_px']:.1f} / {r['scvi_log_px']:.1f} ({r['log_px_cells']}) | {knn} |")


if __name__ == "__main__":
    main()
