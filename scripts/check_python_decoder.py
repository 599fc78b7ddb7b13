"""CI check: the README's Python loader reproduces elbo's decoder output.

    python check_python_decoder.py MODEL z.npy means.npy
"""
import sys

import numpy as np

from load_model import decode, load_model

model, z_path, means_path = sys.argv[1:4]
config, tensors = load_model(model)
ours = decode(config, tensors, np.load(z_path))
theirs = np.load(means_path)
err = float(np.max(np.abs(ours - theirs)))
print(f"max |numpy - elbo| = {err:.2e} over {theirs.size} values")
assert ours.shape == theirs.shape and err < 1e-5, err
