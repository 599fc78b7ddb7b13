#!/usr/bin/env python3
"""A model, on paper, of data-parallel training on many nodes, from measured step times.

Each node computes one batch of `rows` rows a step (weak scaling: the global batch grows with
the nodes; a fixed global batch of 128 cut over 512 nodes would leave each node less than one
row). A step then costs the compute time t_c, measured on one node of this machine, plus the
all-reduce of the gradient (G bytes), with nothing overlapped (as elbo does it today):

    ring (reduce-scatter + all-gather; elbo's all-to-all + all-gather sends the same bytes):
        T_ring(P) = 2 (P - 1) (alpha + G / (P B))
    tree (binary reduce, then broadcast, not pipelined):
        T_tree(P) = 2 ceil(log2 P) (alpha + G / B)

with B the link bandwidth and alpha the per-message latency. Efficiency is
E(P) = t_c / (t_c + T(P)); the script prints E for 8, 64 and 512 nodes and the first P (a power
of two) where E falls below 80%.

    python3 benches/mpi/scaling_model.py --mnist-step-ms 3.5 --scvi-step-ms 2.6
"""
import argparse, math

p = argparse.ArgumentParser()
p.add_argument("--mnist-step-ms", type=float, required=True, help="measured compute per step, one node")
p.add_argument("--scvi-step-ms", type=float, required=True)
p.add_argument("--mnist-params", type=int, default=652_824)
p.add_argument("--scvi-params", type=int, default=520_116)
p.add_argument("--alpha-us", type=float, default=10.0, help="per-message latency")
p.add_argument("--rows", default="128,1024",
               help="rows per node a step; compute is taken as proportional to rows (measured at 128)")
a = p.parse_args()

models = [
    ("MNIST 784-400-20", a.mnist_step_ms * 1e-3, a.mnist_params * 4),
    ("scVI-sized 2000-128-10 NB", a.scvi_step_ms * 1e-3, a.scvi_params * 4),
]
alpha = a.alpha_us * 1e-6
ps = [2 ** k for k in range(0, 13)]


def t_ring(P, G, B):
    return 0.0 if P == 1 else 2 * (P - 1) * (alpha + G / (P * B))


def t_tree(P, G, B):
    return 0.0 if P == 1 else 2 * math.ceil(math.log2(P)) * (alpha + G / B)


print(f"alpha = {a.alpha_us} us per message; gradient all-reduced in f32; no overlap\n")
print("| model | rows/node | t_c (ms) | G (MB) | link | algorithm | E(8) | E(64) | E(512) | E < 80% from |")
print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|")
for name, tc128, G in models:
  for rows in (int(r) for r in a.rows.split(",")):
    tc = tc128 * rows / 128
    for gbit in (10, 25, 100):
        B = gbit * 1e9 / 8
        for alg, f in (("ring", t_ring), ("tree", t_tree)):
            e = {P: tc / (tc + f(P, G, B)) for P in ps}
            first = next((P for P in ps if e[P] < 0.8), None)
            print(f"| {name} | {rows} | {tc * 1e3:.2f} | {G / 1e6:.2f} | {gbit} Gbit/s | {alg} | "
                  f"{e[8]:.2f} | {e[64]:.2f} | {e[512]:.2f} | {first if first else '> 4096'} nodes |")
