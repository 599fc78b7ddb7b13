"""The reference MNIST VAE in PyTorch, as in pytorch/examples: 784-400-20-400-784, ReLU,
Bernoulli (binary cross-entropy on grey levels, summed) + analytic KL, Adam 1e-3, batch 128,
last partial batch kept. Prints one JSON line per epoch: training seconds and mean losses.

--compile runs the forward pass and loss through torch.compile (Inductor, C++ on the CPU; the
backward is compiled with it by AOTAutograd); the first epoch pays for compiling, and the
last partial batch for one more shape."""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mnist_data import load

p = argparse.ArgumentParser()
p.add_argument("--data-dir", required=True)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--compile", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

train, test = load(a.data_dir)
train, test = torch.from_numpy(train), torch.from_numpy(test)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.fc4(F.relu(self.fc3(z))), mu, logvar


def loss_fn(logits, x, mu, logvar):
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


model = VAE()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)


def forward_loss(x):
    logits, mu, logvar = model(x)
    return loss_fn(logits, x, mu, logvar)


if a.compile:
    forward_loss = torch.compile(forward_loss)
for epoch in range(1, a.epochs + 1):
    model.train()
    perm = torch.randperm(len(train))
    total, t0 = 0.0, time.perf_counter()
    for i in range(0, len(train), 128):
        x = train[perm[i : i + 128]]
        opt.zero_grad()
        loss = forward_loss(x)
        loss.backward()
        opt.step()
        total += loss.item()
    secs = time.perf_counter() - t0
    model.eval()
    t1 = time.perf_counter()
    with torch.no_grad():
        tl = sum(loss_fn(*(lambda r: (r[0], test[j : j + 1000], r[1], r[2]))(model(test[j : j + 1000]))).item()
                 for j in range(0, len(test), 1000))
    eval_secs = time.perf_counter() - t1
    print(json.dumps({"epoch": epoch, "seconds": secs, "eval_seconds": eval_secs, "train_loss": total / len(train), "test_loss": tl / len(test)}), flush=True)
