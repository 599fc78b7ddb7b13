"""The training step's largest dense products in PyTorch's CPU matrix product (MKL here), to set
beside `cargo run --release --features internals --example kernel_floors`: is `gemm` as fast as
the frameworks' own kernels on these shapes?

    taskset -c 0,1 .venv/bin/python mkl_products.py 2
    taskset -c 0 .venv/bin/python mkl_products.py 1

Each product is timed 2,000 times after 200 warm-up calls, on fixed random inputs; the median
is printed with its rate (2 m n k flops).
"""

import sys
import time

import numpy as np
import torch

# (name, m, k, n, A stored transposed, B stored transposed): C (m x n) = op(A) (m x k) op(B).
SHAPES = [
    ("MNIST forward, decoder output", 128, 400, 784, False, False),
    ("MNIST X^T G, decoder output", 400, 128, 784, True, False),
    ("MNIST G W^T, decoder output", 128, 784, 400, False, True),
    ("count model forward, decoder output", 128, 128, 2000, False, False),
    ("count model X^T G, decoder output", 128, 128, 2000, True, False),
    ("count model G W^T, decoder output", 128, 2000, 128, False, True),
]


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {threads} thread(s)")
    print("| product | shape (m x k x n) | µs | GFLOP/s |")
    print("|---|---|---|---|")
    for name, m, k, n, ta, tb in SHAPES:
        a = torch.from_numpy(rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32))
        b = torch.from_numpy(rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32))
        lhs, rhs = (a.t() if ta else a), (b.t() if tb else b)
        out = torch.empty(m, n)
        for _ in range(200):
            torch.mm(lhs, rhs, out=out)
        times = []
        for _ in range(2000):
            t = time.perf_counter()
            torch.mm(lhs, rhs, out=out)
            times.append(time.perf_counter() - t)
        us = sorted(times)[len(times) // 2] * 1e6
        print(f"| {name} | {m} x {k} x {n} | {us:.1f} | {2 * m * n * k / us / 1e3:.0f} |")


if __name__ == "__main__":
    main()
