#!/usr/bin/env python3
"""Runs the MNIST reference VAE in elbo, JAX and PyTorch (and candle, with --candle) side by
side on this machine, each pinned to the same cores, and writes the table into BENCHMARKS.md.

    python3 benches/frameworks/run.py [--epochs 10] [--threads 2,1] [--rounds 5] [--candle] [--skip-dense] [--bf16]

Timed in interleaved rounds: each round runs every implementation once, in turn (elbo, then the
others), so that a slow minute of this machine slows all of them alike; each framework's speed
is given against elbo's in the same round, and the table shows every round's ratio, their
median and their spread.

The Python packages are installed with pip into benches/frameworks/.venv on first use.
`elbo --dense-input` is elbo with the first layer's products dense, as the frameworks do them
(by default elbo skips the zero pixels, about 81% of MNIST's): it shows how much of the lead
is the kernels and how much is doing less arithmetic. `--bf16` adds `elbo --precision bf16` (the
dense layers' products from bf16 operands with f32 sums) to every round, and a table of its own
speed-ups, apart from the f32 figures. Timings are per training epoch (evaluation excluded) and per evaluation of the 10 000 test
images (the ELBO with one z sample, in batches); medians over epochs are reported, so JAX's
compile time in epoch 1 does not count. Peak memory is the process's maximum resident
set size."""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(HERE, ".venv")
PY = os.path.join(VENV, "bin", "python")
BF16 = "elbo --precision bf16"


def ensure_venv():
    if not os.path.exists(PY):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    try:
        subprocess.run([PY, "-c", "import torch, jax, optax, numpy"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run([PY, "-m", "pip", "install", "-q", "torch", "jax[cpu]", "optax", "numpy"], check=True)


def run(cmd, cores, env=None):
    """Runs cmd pinned to `cores`; returns (stdout, peak RSS in MiB)."""
    full = ["taskset", "-c", ",".join(str(c) for c in range(cores))] + cmd
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{err[-2000:]}")
    return out, err


def peak_rss_mib(cmd, cores, env=None):
    """Runs cmd under a tiny wrapper that reports the child's peak RSS."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "sys.stderr.write('\\nPEAK_RSS_KB %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(r.returncode)")
    out, err = run([sys.executable, "-c", wrapper] + cmd, cores, env)
    kb = int([l for l in err.splitlines() if l.startswith("PEAK_RSS_KB")][-1].split()[1])
    return out, kb / 1024.0


def elbo(args, threads, dense_input=False, precision="f32"):
    with tempfile.TemporaryDirectory() as d:
        cmd = [os.path.join(ROOT, "target/release/elbo"), "train", "--data", "mnist", "--data-dir", args.data_dir,
               "--epochs", str(args.epochs), "--threads", str(threads), "--out", d, "--precision", precision] + (["--dense-input"] if dense_input else [])
        _, rss = peak_rss_mib(cmd, threads)
        rep = json.load(open(os.path.join(d, "report.json")))
    return [{"seconds": e["train_seconds"], "eval_seconds": e["test_seconds"], "train_loss": e["train"]["neg_elbo"],
             "test_loss": e["test"]["neg_elbo"]} for e in rep["epochs"]], rss


def python_impl(script, *flags):
    def go(args, threads):
        env = dict(os.environ)
        env["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
        env["OMP_NUM_THREADS"] = str(threads)
        cmd = [PY, os.path.join(HERE, script), "--data-dir", args.data_dir, "--epochs", str(args.epochs), *flags]
        if script.startswith("pytorch"):
            cmd += ["--threads", str(threads)]
        out, rss = peak_rss_mib(cmd, threads, env)
        return [json.loads(l) for l in out.splitlines() if l.startswith("{")], rss
    return go


def candle(args, threads):
    cmd = [os.path.join(ROOT, "target/release/candle_vae"), "--data-dir", args.data_dir, "--epochs", str(args.epochs),
           "--threads", str(threads)]
    out, rss = peak_rss_mib(cmd, threads)
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")], rss


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", default="2,1")
    p.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist"))
    p.add_argument("--candle", action="store_true", help="also build and run the candle version")
    p.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per thread count")
    p.add_argument("--skip-dense", action="store_true", help="leave out elbo --dense-input")
    p.add_argument("--bf16", action="store_true", help="also run elbo --precision bf16, reported apart")
    args = p.parse_args()
    args.data_dir = os.path.abspath(args.data_dir)
    ensure_venv()
    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=ROOT)
    impls = [("elbo", elbo)]
    if not args.skip_dense:
        impls.append(("elbo --dense-input", lambda a, t: elbo(a, t, dense_input=True)))
    if args.bf16:
        impls.append((BF16, lambda a, t: elbo(a, t, precision="bf16")))
    impls += [("JAX (jit + optax)", python_impl("jax_vae.py")),
              ("JAX (data on device, gather in the step, donated)", python_impl("jax_vae.py", "--on-device")),
              ("PyTorch", python_impl("pytorch_vae.py")),
              ("PyTorch (torch.compile)", python_impl("pytorch_vae.py", "--compile"))]
    if args.candle:
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "elbo-cli", "--features", "candle-bench", "--bin", "candle_vae"], check=True, cwd=ROOT)
        impls.append(("candle", candle))
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        rounds = {name: [] for name, _ in impls}
        for r in range(args.rounds):
            for name, fn in impls:
                print(f"round {r + 1}: {name} on {threads} thread(s)...", file=sys.stderr, flush=True)
                epochs, rss = fn(args, threads)
                med = statistics.median(e["seconds"] for e in epochs)
                ev = statistics.median(e["eval_seconds"] for e in epochs)
                rounds[name].append({"median": med, "eval": ev, "rss": rss, "epochs": epochs})
                print(f"  median {med:.3f} s/epoch, peak {rss:.0f} MiB, test loss {epochs[-1]['test_loss']:.2f}", file=sys.stderr)
        ours = rounds["elbo"]
        for name, _ in impls:
            runs = rounds[name]
            ratios = [x["median"] / o["median"] for x, o in zip(runs, ours)]
            eval_ratios = [x["eval"] / o["eval"] for x, o in zip(runs, ours)]
            bf16 = rounds.get(BF16)
            bf16_ratios = [x["median"] / o["median"] for x, o in zip(runs, bf16)] if bf16 else None
            results.append({"impl": name, "threads": threads,
                            "median": statistics.median(x["median"] for x in runs),
                            "eval": statistics.median(x["eval"] for x in runs),
                            "rss": max(x["rss"] for x in runs), "epochs": runs[-1]["epochs"],
                            "ratios": ratios, "eval_ratios": eval_ratios, "bf16_ratios": bf16_ratios,
                            "per_round": [x["median"] for x in runs]})
    write(args, results)


def write(args, results):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [f"Measured {datetime.date.today()} on {cpu} ({os.cpu_count()} cores), each run pinned with taskset to as many",
             f"cores as threads, in {args.rounds} interleaved rounds (every implementation once per round, in turn) of"
             f" `python3 benches/frameworks/run.py --epochs {args.epochs} --threads {args.threads} --rounds {args.rounds}"
             f"{' --candle' if args.candle else ''}{' --skip-dense' if args.skip_dense else ''}{' --bf16' if args.bf16 else ''}`. Speed-ups are medians of the per-round ratios (spread: their"
             " lowest and highest); seconds are medians over rounds of each run's median epoch.", "",
             "| implementation | threads | median s/epoch | images/s | elbo's speed-up (per round) | median (spread) | test-set evaluation (s) | elbo's speed-up | peak RSS (MiB) | test loss after each epoch (last round) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        losses = " ".join(f"{e['test_loss']:.2f}" for e in r["epochs"])
        rr = r["ratios"]
        lines.append(f"| {r['impl']} | {r['threads']} | {r['median']:.3f} | {60000 / r['median']:.0f} | "
                     f"{', '.join(f'{x:.2f}' for x in rr)} | {statistics.median(rr):.2f}x ({min(rr):.2f}-{max(rr):.2f}) | "
                     f"{r['eval']:.3f} | {statistics.median(r['eval_ratios']):.2f}x | {r['rss']:.0f} | {losses} |")
    if args.bf16:
        lines += ["", f"`{BF16}`, reported apart from the f32 figures above: each implementation's median epoch"
                  " over bf16 elbo's in the same round, and the test loss after the last epoch beside f32 elbo's.", "",
                  "| implementation | threads | bf16 elbo's speed-up (per round) | median (spread) | test loss, last epoch |",
                  "|---|---|---|---|---|"]
        for r in results:
            rr = r["bf16_ratios"]
            lines.append(f"| {r['impl']} | {r['threads']} | {', '.join(f'{x:.2f}' for x in rr)} | "
                         f"{statistics.median(rr):.2f}x ({min(rr):.2f}-{max(rr):.2f}) | {r['epochs'][-1]['test_loss']:.3f} |")
    lines += ["", "Rounds slow for everyone (every implementation at least 15% slower than its own median"
              " over the rounds):", ""]
    for threads in sorted({r["threads"] for r in results}, reverse=True):
        rs = [r for r in results if r["threads"] == threads]
        slow = []
        for k in range(len(rs[0]["per_round"])):
            rel = [r["per_round"][k] / statistics.median(r["per_round"]) for r in rs]
            if min(rel) >= 1.15:
                slow.append(f"round {k + 1} ({min(rel):.2f}-{max(rel):.2f}x their medians)")
        lines.append(f"- {threads} thread(s): " + (", ".join(slow) if slow else "none"))
    lines += ["", "Train loss after each epoch (mean -ELBO over the epoch's batches):", ""]
    for r in results:
        lines.append(f"- {r['impl']}, {r['threads']} thread(s): " + " ".join(f"{e['train_loss']:.2f}" for e in r["epochs"]))
    block = "\n".join(lines)
    text = open(args.output).read() if os.path.exists(args.output) else "# Benchmarks\n\n<!-- frameworks:begin -->\n<!-- frameworks:end -->\n"
    begin, end = "<!-- frameworks:begin -->", "<!-- frameworks:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(args.output, "w") as f:
        f.write(head + begin + "\n" + block + "\n" + end + tail)
    print(block)


if __name__ == "__main__":
    main()
