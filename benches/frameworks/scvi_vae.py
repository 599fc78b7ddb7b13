"""scvi-tools' SCVI on a folder written by `elbo export` (train.npy, test.npy, labels), with
settings matched to elbo's: prints one JSON line of results.

    python scvi_vae.py DIR --epochs 200 --threads 2 [--batch-norm --dropout 0.1] [--likelihood nb]

Matched settings: one hidden layer of 128, 10 latent dimensions, log1p input, observed library
size, gene-wise dispersion, Adam (lr 1e-3, eps 0.01, weight decay 1e-6), batch 128, no KL
warm-up (weight 1 from the start, as elbo's --warmup 0), the whole training file for training
(train_size 1.0: elbo's split is already made) and the test file for the figures. Batch
normalisation and dropout are on for both or off for both (scvi-tools' own default is on).
Runs on the CPU with a fixed seed.
"""
import argparse
import json
import os
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-norm", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--likelihood", default="nb")
    p.add_argument("--k", type=int, default=1000, help="importance samples for log p(x)")
    p.add_argument("--logpx-limit", type=int, default=0, help="test cells for log p(x) (0: all)")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    import anndata
    import scipy.sparse as sp
    import scvi
    from lightning.pytorch.callbacks import Callback

    scvi.settings.seed = a.seed
    scvi.settings.dl_num_workers = 0
    scvi.settings.progress_bar_style = "tqdm"

    def load(name):
        x = np.load(os.path.join(a.dir, f"{name}.npy")).astype(np.float32)
        ad = anndata.AnnData(sp.csr_matrix(x))
        ad.var_names = [f"g{i}" for i in range(x.shape[1])]
        lab = os.path.join(a.dir, f"{name}_labels.csv")
        if os.path.exists(lab):
            with open(lab) as f:
                ad.obs["label"] = [l.strip() for l in f.readlines()[1:]]
        return ad

    train, test = load("train"), load("test")
    scvi.model.SCVI.setup_anndata(train)
    model = scvi.model.SCVI(
        train,
        n_hidden=128,
        n_latent=10,
        n_layers=1,
        dropout_rate=a.dropout,
        dispersion="gene",
        gene_likelihood=a.likelihood,
        use_observed_lib_size=True,
        use_batch_norm="both" if a.batch_norm else "none",
        use_layer_norm="none",
        log_variational=True,
    )

    class EpochTimes(Callback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_train_epoch_start(self, trainer, module):
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.times.append(time.perf_counter() - self.t0)

    times = EpochTimes()
    t0 = time.perf_counter()
    model.train(
        max_epochs=a.epochs,
        accelerator="cpu",
        devices=1,
        train_size=1.0,
        batch_size=128,
        early_stopping=False,
        check_val_every_n_epoch=None,
        enable_progress_bar=False,
        callbacks=[times],
        plan_kwargs={"lr": 1e-3, "weight_decay": 1e-6, "eps": 0.01, "n_epochs_kl_warmup": None,
                     "n_steps_kl_warmup": None},
    )
    total = time.perf_counter() - t0
    out = {
        "epochs": a.epochs,
        "threads": a.threads,
        "s_per_epoch_median": sorted(times.times)[len(times.times) // 2],
        "s_per_epoch": times.times,
        "train_seconds": total,
    }
    if not a.no_eval:
        out["test_elbo"] = float(model.get_elbo(test))
        n = test.n_obs if a.logpx_limit == 0 else min(a.logpx_limit, test.n_obs)
        t1 = time.perf_counter()
        out["test_log_px"] = float(model.get_marginal_ll(test, indices=list(range(n)), n_mc_samples=a.k))
        out["log_px_cells"] = n
        out["log_px_seconds"] = time.perf_counter() - t1
        if "label" in train.obs:
            zt = model.get_latent_representation(train)
            zs = model.get_latent_representation(test)
            lt = np.array(train.obs["label"])
            ls = np.array(test.obs["label"])
            out["knn15_accuracy"] = knn_accuracy(zt, lt, zs, ls, 15)
    print(json.dumps(out))


def knn_accuracy(train, train_labels, test, test_labels, k):
    """elbo's rule (`elbo::train::knn_accuracy`): the majority label of the k nearest training
    points, a tie going to the tied label whose nearest member is nearest."""
    import numpy as np

    correct = 0
    for q, want in zip(test, test_labels):
        d = ((train - q) ** 2).sum(axis=1)
        order = np.lexsort((np.arange(len(d)), d))[:k]
        votes = {}
        for i in order:
            votes[train_labels[i]] = votes.get(train_labels[i], 0) + 1
        best = max(votes.values())
        pred = next(train_labels[i] for i in order if votes[train_labels[i]] == best)
        correct += pred == want
    return correct / len(test_labels)


if __name__ == "__main__":
    sys.exit(main())
