import json

import numpy as np
from safetensors import safe_open


def load_model(path):
    """Returns (config, tensors) of an elbo model file."""
    with safe_open(path, "np") as f:
        config = json.loads(f.metadata()["elbo.vae_config"])
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return config, tensors


ACTIVATIONS = {
    "relu": lambda a: np.maximum(a, 0),
    "leaky-relu": lambda a: np.where(a > 0, a, 0.01 * a),
    "tanh": np.tanh,
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "softplus": lambda a: np.logaddexp(0, a),
    "identity": lambda a: a,
}


def decode(config, tensors, z):
    """The decoder's mean of p(x|z) for each row of z. Weights are stored n_in x n_out."""
    act = config["activation"]
    act = ACTIVATIONS[act if isinstance(act, str) else next(iter(act))]
    h, n = z, len(config["decoder_hidden"]) + 1
    for i in range(n):
        h = h @ tensors[f"decoder.{i}.weight"] + tensors[f"decoder.{i}.bias"]
        if i < n - 1:
            h = act(h)
    return 1 / (1 + np.exp(-h)) if config["likelihood"] == "bernoulli" else h
