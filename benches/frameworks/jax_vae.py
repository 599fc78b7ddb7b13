"""The reference MNIST VAE in JAX (jit-compiled step, optax Adam with PyTorch's defaults),
initialised as PyTorch does (uniform +-1/sqrt(fan_in)). Same data, batch and loss as
pytorch_vae.py; prints one JSON line per epoch.

--on-device is the strongest version JAX allows here: the training set is put on the device
once, each epoch's permutation too, and the jitted step gathers its own batch from them
(dynamic_slice + take) and derives its noise key from the step number, with the parameters and
optimizer state donated (donate_argnums), so nothing crosses from the host but a step number.
One compiled shape: the last partial batch of each epoch (96 of 60,000 images) is dropped."""
import functools
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_data import load

p = argparse.ArgumentParser()
p.add_argument("--data-dir", required=True)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--on-device", action="store_true")
a = p.parse_args()

train, test = load(a.data_dir)
rng = np.random.default_rng(a.seed)


def linear(n_in, n_out):
    b = 1.0 / np.sqrt(n_in)
    return (jnp.asarray(rng.uniform(-b, b, (n_in, n_out)), jnp.float32), jnp.asarray(rng.uniform(-b, b, n_out), jnp.float32))


params = {"fc1": linear(784, 400), "fc21": linear(400, 20), "fc22": linear(400, 20), "fc3": linear(20, 400), "fc4": linear(400, 784)}


def loss_fn(params, x, key):
    dense = lambda name, h: h @ params[name][0] + params[name][1]
    h = jax.nn.relu(dense("fc1", x))
    mu, logvar = dense("fc21", h), dense("fc22", h)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    logits = dense("fc4", jax.nn.relu(dense("fc3", z)))
    bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x))
    return bce - 0.5 * jnp.sum(1 + logvar - mu**2 - jnp.exp(logvar))


opt = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8)
state = opt.init(params)


@jax.jit
def step(params, state, x, key):
    loss, g = jax.value_and_grad(loss_fn)(params, x, key)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss


@functools.partial(jax.jit, donate_argnums=(0, 1))
def step_on_device(params, state, data, perm, i, key):
    idx = jax.lax.dynamic_slice(perm, (i * 128,), (128,))
    x = jnp.take(data, idx, axis=0)
    loss, g = jax.value_and_grad(loss_fn)(params, x, jax.random.fold_in(key, i))
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss


eval_loss = jax.jit(loss_fn)
key = jax.random.PRNGKey(a.seed)
train_dev = jax.device_put(train) if a.on_device else None
for epoch in range(1, a.epochs + 1):
    perm = rng.permutation(len(train))
    total, t0 = 0.0, time.perf_counter()
    losses = []
    if a.on_device:
        perm_dev = jax.device_put(perm.astype(np.int32))
        key, epoch_key = jax.random.split(key)
        steps = len(train) // 128
        for i in range(steps):
            params, state, loss = step_on_device(params, state, train_dev, perm_dev, jnp.int32(i), epoch_key)
            losses.append(loss)
        seen = steps * 128
    else:
        for i in range(0, len(train), 128):
            key, sub = jax.random.split(key)
            params, state, loss = step(params, state, train[perm[i : i + 128]], sub)
            losses.append(loss)
        seen = len(train)
    total = float(sum(float(l) for l in losses))
    secs = time.perf_counter() - t0
    tl, t1 = 0.0, time.perf_counter()
    for j in range(0, len(test), 1000):
        key, sub = jax.random.split(key)
        tl += float(eval_loss(params, test[j : j + 1000], sub))
    eval_secs = time.perf_counter() - t1
    print(json.dumps({"epoch": epoch, "seconds": secs, "eval_seconds": eval_secs, "train_loss": total / seen, "test_loss": tl / len(test)}), flush=True)
