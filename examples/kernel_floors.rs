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
use elbo::kernels::{matmul, par};
use std::time::Instant;

#[path = "../benches/common/adam_step.rs"]
mod adam_step;
#[path = "../benches/common/count_model.rs"]
#[allow(dead_code)]
mod count_model;
#[path = "../benches/common/step_products.rs"]
mod step;
#[path = "../benches/common/varied.rs"]
mod varied;
use adam_step::adam_step;
use step::{median, step_products};
use varied::varied;

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
    let (vae, (d, h, z)) = if counts {
        (count_model::count_vae(2000)?, (2000, 128, 10))
    } else {
        (elbo::Vae::new(elbo::VaeConfig::mnist())?, (784, 400, 20))
    };
    let (mut total, mut flops) = (0.0, 0.0);
    // The encoder's input layer is the sparse product in both models, timed by the kernel
    // benches.
    let dense = step_products(128, d, h, z)
        .into_iter()
        .filter(|q| !q.0.ends_with("encoder input"));
    for (name, m, k, n, op_a, op_b) in dense {
        let (a, b) = (varied(m * k, 1), varied(k * n, 2));
        let mut c = vec![0.0f32; m * n];
        let us = pool.install_session(|| {
            time(2000, || {
                matmul(m, n, k, &a, op_a, &b, op_b, &mut c, false, threads)
            })
        });
        let f = 2.0 * (m * n * k) as f64;
        (total, flops) = (total + us, flops + f);
        println!(
            "| {name} | {m} x {k} x {n} | {us:.1} | {:.0} |",
            f / us / 1e3
        );
    }
    println!(
        "| all dense products | | {total:.1} | {:.0} |",
        flops / total / 1e3
    );
    let n = vae.num_params();
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
