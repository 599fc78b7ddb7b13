//! Each kernel alone. Matrix products report throughput in elements = floating-point
//! operations (2 m n k), so criterion's "Gelem/s" reads as GFLOP/s.

use criterion::{Bencher, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use elbo::kernels::bf16::matmul_bf16;
use elbo::kernels::fast::{adam_body, adam_f32, bernoulli_row, bernoulli_row_reference};
use elbo::kernels::pool::ThreadPool;
use elbo::kernels::{Op, SparseRows, matmul, sparse_matmul};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "common/adam_step.rs"]
mod adam_step;
#[path = "common/varied.rs"]
mod varied;
use adam_step::adam_step;
use varied::varied;

/// The training step's matrix products for the MNIST model at batch 128 (m x k x n), and the
/// 1024^3 square from the reference measurements.
pub const SHAPES: [(&str, usize, usize, usize, Op, Op); 8] = [
    ("encoder x W (128x784x400)", 128, 784, 400, Op::N, Op::N),
    ("heads (128x400x40)", 128, 400, 40, Op::N, Op::N),
    ("decoder input (128x20x400)", 128, 20, 400, Op::N, Op::N),
    ("decoder output (128x400x784)", 128, 400, 784, Op::N, Op::N),
    (
        "weight gradient X^T G (400x128x784)",
        400,
        128,
        784,
        Op::T,
        Op::N,
    ),
    (
        "weight gradient X^T G (784x128x400)",
        784,
        128,
        400,
        Op::T,
        Op::N,
    ),
    (
        "input gradient G W^T (128x784x400)",
        128,
        784,
        400,
        Op::N,
        Op::T,
    ),
    ("square 1024^3", 1024, 1024, 1024, Op::N, Op::N),
];

/// How each product or sparse kernel is run: threads, inside a session or not (as training
/// runs it on 2 threads), and the group suffix.
const RUNS: [(usize, bool, &str); 3] =
    [(1, false, "1t"), (2, false, "2t"), (2, true, "2t_session")];

/// Runs `f` `iters` times on `pool`, as plain rayon jobs or inside one session, and returns the
/// time taken (the pool is entered once per sample, not per iteration).
fn timed<F: FnMut() + Send>(pool: &ThreadPool, session: bool, iters: u64, mut f: F) -> Duration {
    let run = move || {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed()
    };
    if session {
        pool.install_session(run)
    } else {
        pool.install(run)
    }
}

/// `bench` times `f` with [`timed`].
fn bench_on<F: FnMut() + Send>(bench: &mut Bencher, pool: &ThreadPool, session: bool, mut f: F) {
    bench.iter_custom(|iters| timed(pool, session, iters, &mut f));
}

/// A product of the kernels' signature: (m, n, k, a, op_a, b, op_b, c, accumulate, threads).
type Product = fn(usize, usize, usize, &[f32], Op, &[f32], Op, &mut [f32], bool, usize);

/// Times `product` on every shape of [`SHAPES`], for each of [`RUNS`], in groups `{prefix}_{run}`.
fn products(c: &mut Criterion, prefix: &str, product: Product) {
    for (threads, session, label) in RUNS {
        let pool = ThreadPool::new(threads).unwrap();
        let mut g = c.benchmark_group(format!("{prefix}_{label}"));
        for (name, m, k, n, oa, ob) in SHAPES {
            let (a, b) = (varied(m * k, 1), varied(k * n, 2));
            let mut out = vec![0.0f32; m * n];
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            g.bench_function(BenchmarkId::from_parameter(name), |bench| {
                bench_on(bench, &pool, session, || {
                    product(m, n, k, &a, oa, &b, ob, &mut out, false, threads)
                })
            });
        }
        g.finish();
    }
}

fn gemm(c: &mut Criterion) {
    products(c, "sgemm", matmul::<f32>);
}

/// The same shapes with bf16 operands and f32 sums (`--precision bf16`).
fn gemm_bf16(c: &mut Criterion) {
    products(c, "bf16gemm", matmul_bf16);
}

fn bernoulli(c: &mut Criterion) {
    let (rows, d) = (128, 784);
    let a: Vec<f32> = (0..rows * d)
        .map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0)
        .collect();
    let x: Vec<f32> = (0..rows * d)
        .map(|i| ((i * 31) % 256) as f32 / 255.0)
        .collect();
    let mut sig = vec![0.0f32; rows * d];
    let mut g = c.benchmark_group("bernoulli_128x784");
    g.throughput(Throughput::Elements((rows * d) as u64));
    g.bench_function("fast", |b| {
        b.iter(|| {
            let mut s = 0.0;
            for r in 0..rows {
                s += bernoulli_row(
                    &x[r * d..(r + 1) * d],
                    &a[r * d..(r + 1) * d],
                    &mut sig[r * d..(r + 1) * d],
                );
            }
            black_box(s)
        })
    });
    g.bench_function("reference", |b| {
        b.iter(|| {
            let mut s = 0.0;
            for r in 0..rows {
                s += bernoulli_row_reference(
                    &x[r * d..(r + 1) * d],
                    &a[r * d..(r + 1) * d],
                    &mut sig[r * d..(r + 1) * d],
                );
            }
            black_box(s)
        })
    });
    g.finish();
}

fn adam(c: &mut Criterion) {
    let n = 652_824; // parameters of the MNIST model
    let (mut p, grad, mut m, mut v) = (
        varied(n, 6),
        varied(n, 7).iter().map(|v| v * 0.01).collect::<Vec<f32>>(),
        vec![0.0f32; n],
        vec![0.0f32; n],
    );
    let step = adam_step();
    let mut g = c.benchmark_group("adam_652824");
    // Bytes moved: read p, g, m, v and write p, m, v.
    g.throughput(Throughput::Bytes((7 * 4 * n) as u64));
    g.bench_function("dispatched", |b| {
        b.iter(|| adam_f32(&mut p, &grad, &mut m, &mut v, step))
    });
    g.bench_function("plain", |b| {
        b.iter(|| adam_body(&mut p, &grad, &mut m, &mut v, step))
    });
    g.finish();
}

/// The sparse product against the dense one on the two products that touch the images (a
/// real MNIST batch: 19% of pixels nonzero) and on a half-zero input like a ReLU layer's.
/// Throughput counts the dense product's 2 m n k, so the two read side by side; the sparse
/// figures include building the sparse form (and its transpose) from the dense batch.
fn sparse(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let train = elbo::data::mnist::load(&dir, elbo::data::mnist::Split::Train)
        .expect("MNIST in ../shared/data/mnist");
    let (m, k, n) = (128usize, 784usize, 400usize);
    let mut x = vec![0.0f32; m * k];
    train.gather(&(0..m).collect::<Vec<_>>(), &mut x).unwrap();
    let half: Vec<f32> = (0..m * n)
        .map(|i| {
            if (i * 7919) % 13 < 6 {
                0.0
            } else {
                0.3 + (i % 7) as f32 * 0.1
            }
        })
        .collect();
    let (w, w2, g_grad) = (varied(k * n, 3), varied(n * k, 4), varied(m * n, 5));
    for (threads, session, label) in RUNS {
        let pool = ThreadPool::new(threads).unwrap();
        let mut g = c.benchmark_group(format!("sparse_{label}"));
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let mut out = vec![0.0f32; m * n.max(k)];
        let mut dw = vec![0.0f32; k * n];
        let mut xs = SparseRows::<f32>::with_capacity(m, k);
        let mut xt = SparseRows::<f32>::with_capacity(k, m);
        g.bench_function("mnist X W dense (128x784x400)", |b| {
            bench_on(b, &pool, session, || {
                matmul(m, n, k, &x, Op::N, &w, Op::N, &mut out, false, threads)
            })
        });
        g.bench_function("mnist X W sparse (128x784x400)", |b| {
            bench_on(b, &pool, session, || {
                xs.fill_from_dense(&x, m, k);
                sparse_matmul(&xs, &w, n, &mut out, threads)
            })
        });
        g.bench_function("mnist X^T G dense (784x128x400)", |b| {
            bench_on(b, &pool, session, || {
                matmul(k, n, m, &x, Op::T, &g_grad, Op::N, &mut dw, false, threads)
            })
        });
        g.bench_function("mnist X^T G sparse (784x128x400)", |b| {
            bench_on(b, &pool, session, || {
                xs.fill_from_dense(&x, m, k);
                xs.transpose_into(&mut xt);
                sparse_matmul(&xt, &g_grad, n, &mut dw, threads)
            })
        });
        let mut hs = SparseRows::<f32>::with_capacity(m, n);
        g.bench_function("half-zero H W dense (128x400x784)", |b| {
            bench_on(b, &pool, session, || {
                matmul(m, k, n, &half, Op::N, &w2, Op::N, &mut out, false, threads)
            })
        });
        g.bench_function("half-zero H W sparse (128x400x784)", |b| {
            bench_on(b, &pool, session, || {
                hs.fill_from_dense(&half, m, n);
                sparse_matmul(&hs, &w2, k, &mut out, threads)
            })
        });
        g.finish();
    }
}

/// The negative binomial's forward (per-gene dispersion) over a batch of 128 cells of 2,000
/// genes, one thread, in blocks of 8 rows as the likelihood head runs it: the real pbmc folder's
/// first 128 cells on its 2,000 most variable genes (about 11% nonzero, counts mostly 1-4), and
/// a default `cells` batch (5%). Decoder outputs and ln theta are fixed pseudo-random values.
fn count_likelihood(c: &mut Criterion) {
    use elbo::data::cells::{CellsConfig, generate};
    use elbo::model::counts::{CountModel, log_prob_rows};
    let (rows, d, block) = (128usize, 2000usize, 8usize);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pbmc = elbo::data::tenx::read_10x(root.join("../shared/data/pbmc-celltypist"))
        .expect("the pbmc folder in ../shared/data");
    let keep = elbo::data::genes::most_variable(&pbmc, d).expect("top genes");
    let pbmc = pbmc.select_columns(&keep).expect("columns");
    let cells = generate(&CellsConfig::default(), 1, 0, rows).expect("cells");
    let mut state = 12345u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let a: Vec<f32> = (0..rows * d).map(|_| uniform() * 4.0 - 2.0).collect();
    let ln_theta: Vec<f32> = (0..d).map(|_| uniform() * 2.0).collect();
    let model = CountModel::NegativeBinomial(elbo::model::Dispersion::Gene);
    let cw = model.cache_per_dim() * d;
    let (mut cache, mut logp) = (vec![0.0f32; rows * cw], vec![0.0f32; rows]);
    let mut g = c.benchmark_group("nb_forward_128x2000");
    g.throughput(Throughput::Elements((rows * d) as u64));
    for (name, data) in [("pbmc", &pbmc), ("cells", &cells)] {
        let mut x = vec![0.0f32; rows * d];
        data.gather(&(0..rows).collect::<Vec<_>>(), &mut x)
            .expect("rows");
        g.bench_function(name, |b| {
            b.iter(|| {
                for b0 in (0..rows).step_by(block) {
                    log_prob_rows(
                        model,
                        &ln_theta,
                        |i| &x[(b0 + i) * d..(b0 + i + 1) * d],
                        &a[b0 * d..(b0 + block) * d],
                        &mut cache[b0 * cw..(b0 + block) * cw],
                        &mut logp[b0..b0 + block],
                    );
                }
                black_box(logp[0])
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    gemm,
    gemm_bf16,
    bernoulli,
    adam,
    sparse,
    count_likelihood
);
criterion_main!(benches);
