//! Training throughput against batch size, hidden width and threads, each beside its roofline:
//! the same step's matrix products alone, timed in isolation on the same threads. Writes the
//! table into BENCHMARKS.md (between the `scaling` markers) and prints it.
//!
//! `cargo bench --bench scaling`

use std::path::Path;
use std::time::Instant;

use elbo::data::mnist;
use elbo::kernels::{Op, matmul};
use elbo::{TrainConfig, Trainer, Vae, VaeConfig};

/// The matrix products of one step for batch b, hidden h, latent z (m, k, n, op_a, op_b).
fn step_products(b: usize, h: usize, z: usize) -> Vec<(usize, usize, usize, Op, Op)> {
    let d = 784;
    vec![
        (b, d, h, Op::N, Op::N),     // encoder
        (b, h, 2 * z, Op::N, Op::N), // heads
        (b, z, h, Op::N, Op::N),     // decoder input
        (b, h, d, Op::N, Op::N),     // decoder output
        (h, b, d, Op::T, Op::N),     // dW decoder output
        (b, d, h, Op::N, Op::T),     // dX decoder output
        (z, b, h, Op::T, Op::N),     // dW decoder input
        (b, h, z, Op::N, Op::T),     // dX decoder input
        (h, b, 2 * z, Op::T, Op::N), // dW heads
        (b, 2 * z, h, Op::N, Op::T), // dX heads
        (d, b, h, Op::T, Op::N),     // dW encoder
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per step of the products alone.
fn gemm_only(b: usize, h: usize, z: usize, threads: usize) -> (f64, f64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let prods = step_products(b, h, z);
    let bufs: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = prods
        .iter()
        .map(|&(m, k, n, _, _)| (vec![0.5; m * k], vec![0.25; k * n], vec![0.0; m * n]))
        .collect();
    let flops: f64 = prods
        .iter()
        .map(|&(m, k, n, _, _)| 2.0 * (m * k * n) as f64)
        .sum();
    let mut bufs = bufs;
    let mut run = || {
        pool.install(|| {
            for (&(m, k, n, oa, ob), (a, bb, c)) in prods.iter().zip(bufs.iter_mut()) {
                matmul(m, n, k, a, oa, bb, ob, c, false, threads);
            }
        })
    };
    for _ in 0..5 {
        run();
    }
    let reps = (2e9 / flops).clamp(10.0, 400.0) as usize;
    let times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                run();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    (median(times), flops)
}

/// Seconds per training step, with or without the sparse first-layer products.
fn train_step(data: &elbo::Dataset, b: usize, h: usize, threads: usize, sparse: bool) -> f64 {
    let cfg = VaeConfig {
        encoder_hidden: vec![h],
        decoder_hidden: vec![h],
        ..VaeConfig::mnist()
    };
    let mut t = Trainer::<f32>::new(
        Vae::new(cfg).unwrap(),
        TrainConfig {
            batch_size: b,
            ..TrainConfig::default()
        },
        threads,
    )
    .unwrap();
    t.set_sparse_input(sparse);
    let steps = (20_000 / b).max(20);
    let mut start = 0;
    let mut go = |n: usize| {
        for _ in 0..n {
            let idx: Vec<usize> = (start..start + b).collect();
            start = (start + b) % (data.len() - b);
            t.step(data, &idx).unwrap();
        }
    };
    go(5);
    let times: Vec<f64> = (0..3)
        .map(|_| {
            let s = Instant::now();
            go(steps);
            s.elapsed().as_secs_f64() / steps as f64
        })
        .collect();
    median(times)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = mnist::load(&root.join("../shared/data/mnist"), mnist::Split::Train)
        .expect("MNIST in ../shared/data/mnist");
    let mut configs: Vec<(usize, usize)> = [32, 64, 128, 256, 512, 1024]
        .iter()
        .map(|&b| (b, 400))
        .collect();
    configs.extend([800, 1200, 2000].iter().map(|&h| (128, h)));
    let mut rows = vec![
        "| batch | hidden | threads | step, dense input (ms) | GFLOP/s | GEMM-only GFLOP/s (roofline) | share of roofline | step, sparse input (ms) | images/s | against the dense roofline |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for &(b, h) in &configs {
        for threads in [1usize, 2] {
            let dense = train_step(&data, b, h, threads, false);
            let sparse = train_step(&data, b, h, threads, true);
            let (g, flops) = gemm_only(b, h, 20, threads);
            let row = format!(
                "| {b} | {h} | {threads} | {:.2} | {:.1} | {:.1} | {:.0}% | {:.2} | {:.0} | {:.0}% |",
                dense * 1e3,
                flops / dense / 1e9,
                flops / g / 1e9,
                100.0 * g / dense,
                sparse * 1e3,
                b as f64 / sparse,
                100.0 * g / sparse
            );
            println!("{row}");
            rows.push(row);
        }
    }
    let block = format!(
        "Measured with `cargo bench --bench scaling` (f32, MNIST, latent 20, Adam; medians of 3 runs). GFLOP/s counts \
         the step's matrix products (2 m n k each); the roofline is the same dense products timed alone on the same \
         threads, so \"share of roofline\" is the share of the dense-input step that is matrix products. The sparse-input \
         step (the default; MNIST batches are about 19% nonzero) skips the zero terms of the two products that touch \
         the images, so it does less arithmetic than the roofline counts and its last column can pass 100%.\n\n{}",
        rows.join("\n")
    );
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = ("<!-- scaling:begin -->", "<!-- scaling:end -->");
    let new = match (text.find(begin), text.find(end)) {
        (Some(i), Some(j)) if i < j => format!("{}{begin}\n{block}\n{}", &text[..i], &text[j..]),
        _ => format!("{text}\n## Scaling\n\n{begin}\n{block}\n{end}\n"),
    };
    elbo::io::write_atomic(&path, new.as_bytes()).expect("BENCHMARKS.md is writable");
}
