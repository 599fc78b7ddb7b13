//! What a training step's largest kernels take alone: every dense product of the step and the
//! Adam pass, each timed on its own (warm, inputs whose pages all differ), on THREADS threads
//! inside one session as training runs them. The sum is a floor for the step: in training the
//! same kernels took 19-33% longer (stop 32), since their inputs were last written by other
//! loops, often on the other core (BENCHMARKS.md, "What the targets need").
//!
//! cargo run --release --features internals --example kernel_floors -- [mnist|counts] [THREADS]
//!
//! `mnist` is the reference VAE (784-400-20-400-784; its first layer is the sparse product,
//! timed by `cargo bench --features internals --bench kernels -- sparse`); `counts` is the count
//! model of the scvi-tools comparison (2,000 genes, 128 hidden units, 10 latent dimensions;
//! the NB likelihood is `--bench kernels -- nb_forward`).
use elbo::kernels::fast::adam_f32;
use elbo::kernels::pool::ThreadPool;
use elbo::kernels::{Op, matmul, par};
use std::time::Instant;

#[path = "../benches/common/adam_step.rs"]
mod adam_step;
#[path = "../benches/common/varied.rs"]
mod varied;
use adam_step::adam_step;
use varied::varied;

/// A product `C (m x n) = op(A) (m x k) op(B) (k x n)` of a training step.
struct Product {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    op_a: Op,
    op_b: Op,
}

const fn p(name: &'static str, m: usize, k: usize, n: usize, op_a: Op, op_b: Op) -> Product {
    Product {
        name,
        m,
        k,
        n,
        op_a,
        op_b,
    }
}

/// The dense products of a step at batch 128: forward, weight gradient `X^T G`, input gradient
/// `G W^T`, for the heads (mean and log-variance together), the decoder's input and output
/// layers. The encoder's first layer is sparse and not among them.
fn products(counts: bool) -> Vec<Product> {
    let (d, h, z) = if counts {
        (2000, 128, 10)
    } else {
        (784, 400, 20)
    };
    vec![
        p("forward, heads", 128, h, 2 * z, Op::N, Op::N),
        p("forward, decoder input", 128, z, h, Op::N, Op::N),
        p("forward, decoder output", 128, h, d, Op::N, Op::N),
        p("X^T G, heads", h, 128, 2 * z, Op::T, Op::N),
        p("X^T G, decoder input", z, 128, h, Op::T, Op::N),
        p("X^T G, decoder output", h, 128, d, Op::T, Op::N),
        p("G W^T, heads", 128, 2 * z, h, Op::N, Op::T),
        p("G W^T, decoder input", 128, h, z, Op::N, Op::T),
        p("G W^T, decoder output", 128, d, h, Op::N, Op::T),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median µs of `reps` calls of `f`.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..reps / 10 {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}

fn main() -> elbo::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let counts = match args.first().map(String::as_str) {
        None | Some("mnist") => false,
        Some("counts") => true,
        Some(other) => {
            return Err(elbo::Error::config("workload", other, "is mnist or counts"));
        }
    };
    let threads: usize = args.get(1).map_or(Ok(2), |s| {
        s.parse()
            .map_err(|_| elbo::Error::config("threads", s, "must be a whole number"))
    })?;
    let pool = ThreadPool::new(threads)?;
    println!(
        "{}, {threads} thread(s), one session, median of 2,000 calls",
        if counts { "count model" } else { "MNIST" }
    );
    println!("| kernel | shape (m x k x n) | µs | GFLOP/s |");
    println!("|---|---|---|---|");
    let (mut total, mut flops) = (0.0, 0.0);
    for q in products(counts) {
        let (a, b) = (varied(q.m * q.k, 1), varied(q.k * q.n, 2));
        let mut c = vec![0.0f32; q.m * q.n];
        let us = pool.install_session(|| {
            time(2000, || {
                matmul(
                    q.m, q.n, q.k, &a, q.op_a, &b, q.op_b, &mut c, false, threads,
                )
            })
        });
        let f = 2.0 * (q.m * q.n * q.k) as f64;
        (total, flops) = (total + us, flops + f);
        println!(
            "| {} | {} x {} x {} | {us:.1} | {:.0} |",
            q.name,
            q.m,
            q.k,
            q.n,
            f / us / 1e3
        );
    }
    println!(
        "| all dense products | | {total:.1} | {:.0} |",
        flops / total / 1e3
    );
    // Parameters: MNIST 652,824; the count model 520,116 (its layers, and a dispersion per
    // gene).
    let n = if counts { 520_116 } else { 652_824 };
    let (mut params, grads) = (varied(n, 6), varied(n, 7));
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let step = adam_step();
    let us = pool.install_session(|| {
        time(500, || {
            let (m, v) = (
                par::Disjoint::new(&mut m[..]),
                par::Disjoint::new(&mut v[..]),
            );
            // Tasks of 2^14 parameters, as the optimizer cuts them.
            par::for_each_piece(&mut params[..], 1 << 14, |at, p| {
                let end = at + p.len();
                // SAFETY: each piece of `params` is one task's; m and v follow it.
                let (m, v) = unsafe { (m.piece(at, end), v.piece(at, end)) };
                adam_f32(p, &grads[at..end], m, v, step);
            })
        })
    });
    println!("| Adam over {n} parameters | | {us:.1} | |");
    Ok(())
}
