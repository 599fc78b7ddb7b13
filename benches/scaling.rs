//! Training throughput against batch size, hidden width and threads, each beside its roofline:
//! the same step's matrix products alone, timed in isolation on the same threads. Writes the
//! table into BENCHMARKS.md (between the `scaling` markers) and prints it.
//!
//! `cargo bench --bench scaling`

use std::path::Path;
use std::time::Instant;

use elbo::data::mnist;
use elbo::kernels::pool::ThreadPool;
use elbo::kernels::{Op, matmul};
use elbo::{TrainConfig, Trainer, Vae, VaeConfig};

#[path = "common/step_products.rs"]
mod step;
#[path = "common/varied.rs"]
mod varied;
use step::median;
use varied::varied;

/// The matrix products of one step for batch b, hidden h, latent z (m, k, n, op_a, op_b).
fn step_products(b: usize, h: usize, z: usize) -> Vec<(usize, usize, usize, Op, Op)> {
    step::step_products(b, 784, h, z)
        .into_iter()
        .map(|(_, m, k, n, oa, ob)| (m, k, n, oa, ob))
        .collect()
}

/// The matrix products of evaluating one batch of b: the forward half of [`step_products`].
fn eval_products(b: usize, h: usize, z: usize) -> Vec<(usize, usize, usize, Op, Op)> {
    step_products(b, h, z).into_iter().take(4).collect()
}

/// Rounds per configuration. Each round times the dense-input step, the sparse-input step and
/// the products alone back to back, so a slow spell of the shared machine lands on all three
/// and the per-round ratios stay fair.
const ROUNDS: usize = 5;

/// The step's products alone, on buffers made once.
struct Products {
    prods: Vec<(usize, usize, usize, Op, Op)>,
    bufs: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    flops: f64,
    threads: usize,
    pool: ThreadPool,
}

impl Products {
    fn new(prods: Vec<(usize, usize, usize, Op, Op)>, threads: usize) -> Self {
        let bufs = prods
            .iter()
            .map(|&(m, k, n, _, _)| (varied(m * k, 1), varied(k * n, 2), vec![0.0; m * n]))
            .collect();
        let flops = prods
            .iter()
            .map(|&(m, k, n, _, _)| 2.0 * (m * k * n) as f64)
            .sum();
        let pool = ThreadPool::new(threads).unwrap();
        Products {
            prods,
            bufs,
            flops,
            threads,
            pool,
        }
    }

    /// Seconds per step: the faster of the products as rayon jobs (the `gemm` crate's own
    /// threading) and in a session (one tile per thread), each the median of 3 timings.
    fn time(&mut self) -> f64 {
        let reps = (1e9 / self.flops).clamp(5.0, 200.0) as usize;
        let (prods, bufs, threads) = (&self.prods, &mut self.bufs, self.threads);
        let mut time = || {
            let mut run = || {
                for (&(m, k, n, oa, ob), (a, bb, c)) in prods.iter().zip(bufs.iter_mut()) {
                    matmul(m, n, k, a, oa, bb, ob, c, false, threads);
                }
            };
            run();
            let times: Vec<f64> = (0..3)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        run();
                    }
                    t.elapsed().as_secs_f64() / reps as f64
                })
                .collect();
            median(times)
        };
        let as_jobs = self.pool.install(&mut time);
        let in_session = self.pool.install_session(&mut time);
        as_jobs.min(in_session)
    }
}

/// A trainer for batch b and hidden width h; `epoch` times one epoch over the first 20 000
/// images (or 20 batches), as `elbo train` runs it, in seconds per step.
struct Steps {
    trainer: Trainer<f32>,
    part: elbo::Dataset,
    steps: usize,
}

impl Steps {
    fn new(data: &elbo::Dataset, b: usize, h: usize, threads: usize, sparse: bool) -> Self {
        let cfg = VaeConfig::mnist()
            .encoder_hidden(vec![h])
            .decoder_hidden(vec![h]);
        let config = TrainConfig::default().batch_size(b);
        let mut trainer = Trainer::<f32>::new(
            Vae::new(cfg).unwrap(),
            config,
            &elbo::Parallelism::threads(threads).unwrap(),
        )
        .unwrap();
        trainer.set_sparse_input(sparse);
        trainer
            .train_epoch(&data.head(5 * b), &mut |_, _| {})
            .unwrap();
        let steps = (20_000 / b).max(20);
        Steps {
            trainer,
            part: data.head(steps * b),
            steps,
        }
    }

    fn epoch(&mut self) -> f64 {
        let s = Instant::now();
        self.trainer
            .train_epoch(&self.part, &mut |_, _| {})
            .unwrap();
        s.elapsed().as_secs_f64() / self.steps as f64
    }
}

/// Test-set evaluation against its roofline, on 1 and 2 threads: the table's rows.
fn evaluation(root: &Path, train: &elbo::Dataset) -> Vec<String> {
    let test = mnist::load(root.join("../shared/data/mnist"), mnist::Split::Test)
        .expect("MNIST in ../shared/data/mnist");
    let (b, h, z) = (128, 400, 20);
    let mut rows = vec![
        "| threads | evaluation (ms) | forward products alone (ms) | share of roofline | images/s |"
            .to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    for threads in [1usize, 2] {
        let mut trainer = Trainer::<f32>::new(
            Vae::new(VaeConfig::mnist()).unwrap(),
            TrainConfig::default().batch_size(b).epochs(3),
            &elbo::Parallelism::threads(threads).unwrap(),
        )
        .unwrap();
        trainer.fit(train, elbo::FitOptions::new()).unwrap();
        let batches = test.len().div_ceil(b);
        let mut gemm = Products::new(eval_products(b, h, z), threads);
        let (mut te, mut tg, mut share) = (vec![], vec![], vec![]);
        trainer.evaluate(&test).unwrap();
        for _ in 0..ROUNDS {
            let s = Instant::now();
            trainer.evaluate(&test).unwrap();
            let e = s.elapsed().as_secs_f64();
            let g = gemm.time() * batches as f64;
            te.push(e);
            tg.push(g);
            share.push(g / e);
        }
        let (e, g) = (median(te), median(tg));
        let row = format!(
            "| {threads} | {:.1} | {:.1} | {:.0}% | {:.0} |",
            e * 1e3,
            g * 1e3,
            100.0 * median(share),
            test.len() as f64 / e
        );
        println!("{row}");
        rows.push(row);
    }
    rows
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = mnist::load(root.join("../shared/data/mnist"), mnist::Split::Train)
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
    if let Ok(only) = std::env::var("ONLY") {
        configs.retain(|&(b, h)| format!("{b}x{h}") == only);
    }
    for &(b, h) in &configs {
        for threads in [1usize, 2] {
            let mut dense = Steps::new(&data, b, h, threads, false);
            let mut sparse = Steps::new(&data, b, h, threads, true);
            let mut gemm = Products::new(step_products(b, h, 20), threads);
            let (mut td, mut ts, mut tg) = (vec![], vec![], vec![]);
            let (mut share, mut share_sparse) = (vec![], vec![]);
            for _ in 0..ROUNDS {
                let (d, s, g) = (dense.epoch(), sparse.epoch(), gemm.time());
                share.push(g / d);
                share_sparse.push(g / s);
                td.push(d);
                ts.push(s);
                tg.push(g);
            }
            let (d, s, g) = (median(td), median(ts), median(tg));
            let flops = gemm.flops;
            let row = format!(
                "| {b} | {h} | {threads} | {:.2} | {:.1} | {:.1} | {:.0}% | {:.2} | {:.0} | {:.0}% |",
                d * 1e3,
                flops / d / 1e9,
                flops / g / 1e9,
                100.0 * median(share),
                s * 1e3,
                b as f64 / s,
                100.0 * median(share_sparse)
            );
            println!("{row}");
            rows.push(row);
        }
    }
    let eval_rows = if std::env::var("ONLY").is_ok_and(|o| o != "eval") {
        Vec::new()
    } else {
        evaluation(root, &data)
    };
    let block = format!(
        "Measured with `cargo bench --bench scaling` (f32, MNIST, latent 20, Adam). Each configuration runs {ROUNDS} \
         rounds of: an epoch of 20 000 images (or 20 batches) with dense input, the same with sparse input, and the \
         step's dense products alone on the same threads (the roofline: the faster of the `gemm` crate's own \
         threading and one tile per thread). Times are medians over the rounds; the shares are medians of each \
         round's ratio. GFLOP/s counts the step's matrix products (2 m n k each), so \"share of roofline\" is the \
         share of the dense-input step that is matrix products. The sparse-input \
         step (the default; MNIST batches are about 19% nonzero) skips the zero terms of the two products that touch \
         the images, so it does less arithmetic than the roofline counts and its last column can pass 100%.\n\n{}\n\n\
         Evaluation, as a training run evaluates its test set after each epoch (`Trainer::evaluate`: the ELBO \
         of the 10 000 MNIST test images, one z each, in batches of 128, sparse input), beside its roofline: \
         the forward products of the same batches alone, with dense input. Model: a 3-epoch MNIST model, so \
         that the layers' activations are those of a trained one. Medians of {ROUNDS} interleaved rounds.\n\n{}",
        rows.join("\n"),
        eval_rows.join("\n")
    );
    if std::env::var_os("ONLY").is_some() {
        // A partial run prints its rows and leaves the table alone.
        return;
    }
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = ("<!-- scaling:begin -->", "<!-- scaling:end -->");
    let new = match (text.find(begin), text.find(end)) {
        (Some(i), Some(j)) if i < j => format!("{}{begin}\n{block}\n{}", &text[..i], &text[j..]),
        _ => format!("{text}\n## Scaling\n\n{begin}\n{block}\n{end}\n"),
    };
    elbo::io::write_atomic(&path, new.as_bytes()).expect("BENCHMARKS.md is writable");
}
