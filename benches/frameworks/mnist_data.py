"""MNIST from the gzipped IDX files, as float32 grey levels in [0, 1] (shared by the scripts)."""
import gzip
import os
import struct

import numpy as np


def _idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir):
    train = _idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz")).reshape(-1, 784)
    test = _idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784)
    return train.astype(np.float32) / 255.0, test.astype(np.float32) / 255.0
