//! Each fast kernel against its plain reference, and the session team's protocol. Unit tests,
//! because the kernels are crate-private.

use super::fast::{
    AdamStep, adam_body, adam_f32, bernoulli_row, bernoulli_row_reference, exp_nonpositive,
    instruction_set, ln_1p_row, ln_1p_row_reference, ln_1p_unit, ln_normal,
};
use super::matmul_reference;
use super::pool::ThreadPool;
use super::{Op, SparseRows, matmul, par, sparse_matmul, sparse_matmul_reference};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use proptest::test_runner::RngSeed;

/// e^t on [-87, 0] and ln(1 + y) on [0, 1] to 2.5e-7 relative (about 2 f32 ulps), on a fine
/// grid and at the ends.
#[test]
fn fast_exp_and_log1p_are_accurate() {
    let mut worst = (0.0f64, 0.0f64);
    for i in 0..=200_000 {
        let t = -87.0 * i as f64 / 200_000.0;
        let fast = exp_nonpositive(t as f32) as f64;
        let exact = (t as f32 as f64).exp();
        worst.0 = worst.0.max((fast - exact).abs() / exact);
        let y = i as f64 / 200_000.0;
        let fast = ln_1p_unit(y as f32) as f64;
        let exact = (y as f32 as f64).ln_1p();
        if exact > 0.0 {
            worst.1 = worst.1.max((fast - exact).abs() / exact);
        }
    }
    assert!(
        worst.0 < 2.5e-7 && worst.1 < 2.5e-7,
        "worst relative errors: exp {:e}, log1p {:e}",
        worst.0,
        worst.1
    );
    assert_eq!(exp_nonpositive(0.0), 1.0);
    assert_eq!(exp_nonpositive(-1e4), 0.0);
    assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    assert_eq!(ln_1p_unit(0.0), 0.0);
    assert!((ln_1p_unit(1e-30) - 1e-30).abs() < 1e-36);
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(1592590338),
        ..ProptestConfig::default()
    })]

    /// The Bernoulli row kernel: row sums within 1e-6 relative (plus 1e-4 absolute), sigmoids
    /// within 3e-7, for logits up to +-1e4 and grey-level targets.
    #[test]
    fn bernoulli_row_matches_reference(n in 1usize..300, scale in prop_oneof![Just(1.0f32), Just(30.0), Just(1e4)],
                                       seed in any::<u64>()) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0) * scale).collect();
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
        let (mut s1, mut s2) = (vec![0.0; n], vec![0.0; n]);
        let fast = bernoulli_row(&x, &a, &mut s1) as f64;
        let slow = bernoulli_row_reference(&x, &a, &mut s2) as f64;
        prop_assert!(fast.is_finite());
        prop_assert!((fast - slow).abs() <= 1e-4 + 1e-6 * slow.abs(), "{} vs {}", fast, slow);
        for (p, q) in s1.iter().zip(&s2) {
            prop_assert!((p - q).abs() <= 3e-7, "{} vs {}", p, q);
        }
    }

    /// The dispatched Adam update is bit-identical to the plain loop.
    #[test]
    fn adam_f32_is_bit_identical_to_the_plain_loop(n in 1usize..200, seed in any::<u64>()) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut r = |k: usize| -> Vec<f32> { (0..k).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let (p0, g) = (r(n), r(n));
        let m0 = r(n);
        let v0: Vec<f32> = r(n).iter().map(|x| x * x).collect();
        let c = AdamStep { step_size: 1e-3f32, inv_sqrt_bc2: 3.0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        let (mut p1, mut m1, mut v1) = (p0.clone(), m0.clone(), v0.clone());
        let (mut p2, mut m2, mut v2) = (p0.clone(), m0.clone(), v0.clone());
        adam_f32(&mut p1, &g, &mut m1, &mut v1, c);
        adam_body(&mut p2, &g, &mut m2, &mut v2, c);
        prop_assert_eq!(p1, p2);
        prop_assert_eq!(m1, m2);
        prop_assert_eq!(v1, v2);
    }
}

/// Moments that decay below the smallest normal f32 become zero (subnormal arithmetic costs a
/// microcode assist on x86), in the vectorised kernel and the plain loop alike; normal ones are
/// untouched.
#[test]
fn adam_flushes_subnormal_moments_to_zero() {
    let c = AdamStep {
        step_size: 1e-3f32,
        inv_sqrt_bc2: 3.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    // 0.9 x 2e-38 = 1.8e-38 stays normal; 0.9 x 1.2e-38 and 0.999 x 1.1e-38 would be
    // subnormal.
    let m0 = [2e-38f32, 1.2e-38, 0.5, 0.0];
    let v0 = [1.0f32, 1.1e-38, 0.25, 1e-3];
    let g = [0.0f32; 4];
    for fast in [true, false] {
        let (mut p, mut m, mut v) = ([1.0f32; 4], m0, v0);
        if fast {
            adam_f32(&mut p, &g, &mut m, &mut v, c);
        } else {
            adam_body(&mut p, &g, &mut m, &mut v, c);
        }
        assert!(
            m.iter().chain(&v).all(|x| *x == 0.0 || x.is_normal()),
            "{m:?} {v:?}"
        );
        assert_eq!((m[0], m[1], v[1]), (0.9 * 2e-38, 0.0, 0.0));
        assert_eq!((m[2], v[2]), (0.9 * 0.5, 0.999 * 0.25));
    }
}

/// The dispatch picks the widest instruction set the CPU has, by the CPU's own flags.
#[test]
fn picks_the_widest_instruction_set_the_cpu_has() {
    #[cfg(target_arch = "x86_64")]
    let expected = if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
        "avx512"
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        "avx2"
    } else {
        "portable"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let expected = "portable";
    assert_eq!(instruction_set(), expected);
}

/// Runs `f` on its own thread and fails the test if it has not finished within `secs`: a lost
/// wake-up or a deadlock then fails instead of hanging the suite.
fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("did not finish within {secs} s: a lost wake-up or a deadlock"),
    }
}

/// A dense `rows x cols` matrix with about `density` of its entries nonzero, from `seed`.
fn sparse_matrix(rows: usize, cols: usize, density: f64, seed: u64) -> Vec<f64> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| {
            if rng.random::<f64>() < density {
                rng.random_range(-2.0..2.0)
            } else {
                0.0
            }
        })
        .collect()
}

fn dense_of<T: super::scalar::Float>(s: &SparseRows<T>) -> Vec<T> {
    let mut d = vec![T::zero(); s.rows() * s.cols()];
    for r in 0..s.rows() {
        let (idx, vals) = s.row(r);
        assert!(idx.windows(2).all(|p| p[0] < p[1]), "columns increase");
        for (&j, &v) in idx.iter().zip(vals) {
            d[r * s.cols() + j as usize] = v;
        }
    }
    d
}

/// How a kernel is run in these tests: threads, and whether inside a session (see
/// `super::team`) or as plain rayon jobs.
const RUNS: [(usize, bool); 3] = [(1, false), (2, false), (2, true)];

/// Runs `f` on a pool of `threads`, inside a session or not.
fn on_pool<R: Send>(threads: usize, session: bool, f: impl FnOnce() -> R + Send) -> R {
    let pool = ThreadPool::new(threads).unwrap();
    if session {
        pool.install_session(f)
    } else {
        pool.install(f)
    }
}

/// Runs `sparse_matmul` on a pool of `threads`, and `sparse_matmul_beside` too: it must give
/// the same bits and run its side task exactly once.
fn sparse_product<T: super::scalar::Float>(
    x: &SparseRows<T>,
    w: &[T],
    n: usize,
    (threads, session): (usize, bool),
) -> Vec<T> {
    let mut y = vec![T::of(f64::NAN); x.rows() * n];
    on_pool(threads, session, || sparse_matmul(x, w, n, &mut y, threads));
    let (mut beside, mut sides) = (vec![T::of(f64::NAN); x.rows() * n], 0);
    on_pool(threads, session, || {
        super::sparse_matmul_beside(x, w, n, &mut beside, threads, || sides += 1)
    });
    let bits = |v: &[T]| v.iter().map(|e| e.as_f64().to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&beside), bits(&y), "sparse_matmul_beside's product");
    assert_eq!(sides, 1, "sparse_matmul_beside's side task");
    y
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(1592590339),
        ..ProptestConfig::default()
    })]

    /// The sparse form round-trips, its transpose is the dense transpose, and the sparse
    /// product (X W, and X^T G through the transpose) is bit-identical to the plain dense loop
    /// in f32 and f64 on 1 and 2 threads: the kernel only skips terms that add exactly 0.
    #[test]
    fn sparse_matmul_is_bit_identical_to_the_plain_loop(
        m in 1usize..40, k in 1usize..90, n in 1usize..150,
        density in prop_oneof![Just(0.0), 0.0f64..1.0, Just(1.0)], seed in any::<u64>()
    ) {
        let x64 = sparse_matrix(m, k, density, seed);
        let w64 = sparse_matrix(k, n, 1.0, seed ^ 1);
        let g64 = sparse_matrix(m, n, 1.0, seed ^ 2);
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let w32: Vec<f32> = w64.iter().map(|&v| v as f32).collect();
        let g32: Vec<f32> = g64.iter().map(|&v| v as f32).collect();

        let mut xs = SparseRows::<f64>::with_capacity(m, k);
        xs.fill_from_dense(&x64, m, k);
        prop_assert_eq!(dense_of(&xs), x64.clone());
        prop_assert_eq!(xs.nonzeros(), x64.iter().filter(|&&v| v != 0.0).count());
        let mut xt = SparseRows::<f64>::with_capacity(k, m);
        xs.transpose_into(&mut xt);
        let mut x64_t = vec![0.0; k * m];
        for i in 0..m {
            for p in 0..k {
                x64_t[p * m + i] = x64[i * k + p];
            }
        }
        prop_assert_eq!(dense_of(&xt), x64_t.clone());

        let mut want = vec![0.0f64; m * n];
        sparse_matmul_reference(m, n, k, &x64, &w64, &mut want);
        let mut want_t = vec![0.0f64; k * n];
        sparse_matmul_reference(k, n, m, &x64_t, &g64, &mut want_t);
        for run in RUNS {
            prop_assert_eq!(&sparse_product(&xs, &w64, n, run), &want);
            prop_assert_eq!(&sparse_product(&xt, &g64, n, run), &want_t);
        }

        let mut xs32 = SparseRows::<f32>::with_capacity(1, 1);
        xs32.fill_from_dense(&x32, m, k);
        let mut want32 = vec![0.0f32; m * n];
        sparse_matmul_reference(m, n, k, &x32, &w32, &mut want32);
        let mut xt32 = SparseRows::<f32>::with_capacity(1, 1);
        xs32.transpose_into(&mut xt32);
        let x32_t: Vec<f32> = x64_t.iter().map(|&v| v as f32).collect();
        let mut want32_t = vec![0.0f32; k * n];
        sparse_matmul_reference(k, n, m, &x32_t, &g32, &mut want32_t);
        for run in RUNS {
            prop_assert_eq!(&sparse_product(&xs32, &w32, n, run), &want32);
            prop_assert_eq!(&sparse_product(&xt32, &g32, n, run), &want32_t);
        }

        // And the reference itself is the product: against the f64 dot products.
        let mut exact = vec![0.0f64; m * n];
        matmul_reference(m, n, k, &x64, Op::N, &w64, Op::N, &mut exact, false);
        for (a, b) in want.iter().zip(&exact) {
            prop_assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(1592590341),
        ..ProptestConfig::default()
    })]

    /// Wide enough and dense enough, `X W` takes `W` in several passes over chunks of rows
    /// (and up to two full blocks of 128 columns, then 16s, then ones),
    /// storing and reloading the running sums: still bit-identical to the plain loop, in f32
    /// and f64, on 1 and 2 threads.
    #[test]
    fn sparse_matmul_in_several_passes_is_bit_identical_to_the_plain_loop(
        m in 60usize..150, k in 200usize..420, n in 1usize..290,
        density in 0.2f64..1.0, seed in any::<u64>()
    ) {
        let x64 = sparse_matrix(m, k, density, seed);
        let w64 = sparse_matrix(k, n, 1.0, seed ^ 1);
        let mut xs = SparseRows::<f64>::with_capacity(m, k);
        xs.fill_from_dense(&x64, m, k);
        prop_assert!(super::sparse::passes(&xs) > 1, "the case must take several passes");
        let mut want = vec![0.0f64; m * n];
        sparse_matmul_reference(m, n, k, &x64, &w64, &mut want);
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let w32: Vec<f32> = w64.iter().map(|&v| v as f32).collect();
        let mut xs32 = SparseRows::<f32>::with_capacity(m, k);
        xs32.fill_from_dense(&x32, m, k);
        let mut want32 = vec![0.0f32; m * n];
        sparse_matmul_reference(m, n, k, &x32, &w32, &mut want32);
        for run in RUNS {
            prop_assert_eq!(&sparse_product(&xs, &w64, n, run), &want);
            prop_assert_eq!(&sparse_product(&xs32, &w32, n, run), &want32);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(1592590340),
        ..ProptestConfig::default()
    })]

    /// The vectorised compaction keeps exactly the reference's entries (NaN kept, -0 dropped)
    /// for every row length, including the partial last vector.
    #[test]
    fn compact_nonzeros_matches_reference(
        row in prop::collection::vec(prop_oneof![
            4 => Just(0.0f32), 1 => Just(-0.0f32), 1 => Just(f32::NAN), 4 => -3.0f32..3.0
        ], 0..100),
        base in 0u32..1000,
    ) {
        use super::fast::{COMPACT_SLACK, compact_nonzeros_f32, compact_nonzeros_reference};
        let cap = row.len() + COMPACT_SLACK;
        let (mut i1, mut v1) = (vec![0u32; cap], vec![0.0f32; cap]);
        let (mut i2, mut v2) = (vec![0u32; cap], vec![0.0f32; cap]);
        let n1 = compact_nonzeros_f32(&row, base, &mut i1, &mut v1);
        let n2 = compact_nonzeros_reference(&row, base, &mut i2, &mut v2);
        prop_assert_eq!(n1, n2);
        prop_assert_eq!(&i1[..n1], &i2[..n2]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&v1[..n1]), bits(&v2[..n2]));
    }
}

/// A product on `run`, in `T`, from f64 inputs.
#[allow(clippy::too_many_arguments)]
fn product<T: super::scalar::Float>(
    (m, n, k): (usize, usize, usize),
    a: &[f64],
    op_a: Op,
    b: &[f64],
    op_b: Op,
    c0: &[f64],
    acc: bool,
    (threads, session): (usize, bool),
) -> Vec<T> {
    let conv = |v: &[f64]| v.iter().map(|&x| T::of(x)).collect::<Vec<T>>();
    let (a, b, mut c) = (conv(a), conv(b), conv(c0));
    on_pool(threads, session, || {
        matmul(m, n, k, &a, op_a, &b, op_b, &mut c, acc, threads)
    });
    c
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(1592590341),
        ..ProptestConfig::default()
    })]

    /// In a session a product is cut into one tile per thread, each a separate `gemm` call.
    /// That must not change a single bit, in f32 or f64, for any transposes and with or
    /// without accumulation. The shapes are large enough to be cut (2^19 multiply-adds).
    #[test]
    fn matmul_is_bit_identical_on_any_threads_in_or_out_of_a_session(
        m in 1usize..300, n in 1usize..300, k in 1usize..120,
        ta in any::<bool>(), tb in any::<bool>(), acc in any::<bool>(), seed in any::<u64>()
    ) {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (op_a, op_b) = (if ta { Op::T } else { Op::N }, if tb { Op::T } else { Op::N });
        let mut draw = |len: usize| (0..len).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f64>>();
        let (a, b, c0) = (draw(m * k), draw(k * n), draw(m * n));
        let one64 = product::<f64>((m, n, k), &a, op_a, &b, op_b, &c0, acc, RUNS[0]);
        let one32 = product::<f32>((m, n, k), &a, op_a, &b, op_b, &c0, acc, RUNS[0]);
        for run in &RUNS[1..] {
            prop_assert_eq!(&product::<f64>((m, n, k), &a, op_a, &b, op_b, &c0, acc, *run), &one64);
            prop_assert_eq!(&product::<f32>((m, n, k), &a, op_a, &b, op_b, &c0, acc, *run), &one32);
        }
        let mut exact = c0.clone();
        matmul_reference(m, n, k, &a, op_a, &b, op_b, &mut exact, acc);
        for (f, s) in one64.iter().zip(&exact) {
            prop_assert!((f - s).abs() <= 1e-12 * (1.0 + s.abs()), "{} vs {}", f, s);
        }
    }
}

/// Every task of a session's loop runs exactly once: loops of 0, 1, a few and more than one
/// published loop holds (2^20 tasks are grouped), one after another, with loops started inside
/// a task running inline.
#[test]
fn a_session_runs_every_task_exactly_once() {
    within(120, || {
        use std::sync::atomic::{AtomicU32, Ordering};
        let pool = ThreadPool::new(2).unwrap();
        pool.install_session(|| {
            for tasks in [0usize, 1, 2, 3, 17, 1000, (1 << 20) + 3] {
                let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                par::for_each_task(tasks, |t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{tasks} tasks"
                );
            }
            let inner: Vec<AtomicU32> = (0..8 * 50).map(|_| AtomicU32::new(0)).collect();
            par::for_each_task(8, |outer| {
                par::for_each_task(50, |t| {
                    inner[outer * 50 + t].fetch_add(1, Ordering::Relaxed);
                })
            });
            assert!(inner.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            // The helper takes part: each of two tasks waits for the other to have started, which
            // only two threads running at once can satisfy. One thread alone would wait out the
            // deadline and fail, not hang.
            let started = [AtomicU32::new(0), AtomicU32::new(0)];
            let met = [AtomicU32::new(0), AtomicU32::new(0)];
            par::for_each_task(2, |t| {
                started[t].store(1, Ordering::SeqCst);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while started[1 - t].load(Ordering::SeqCst) == 0
                    && std::time::Instant::now() < deadline
                {
                    std::hint::spin_loop();
                }
                met[t].store(started[1 - t].load(Ordering::SeqCst), Ordering::SeqCst);
            });
            assert!(
                met.iter().all(|m| m.load(Ordering::SeqCst) == 1),
                "the helper never ran a task"
            );
            let mut rows = vec![0usize; 3000 * 7];
            par::for_each_row(&mut rows, 7, |r, row| row.fill(r + 1));
            assert!(
                rows.chunks(7)
                    .enumerate()
                    .all(|(r, row)| row.iter().all(|&v| v == r + 1))
            );
        });
    })
}

/// A task that panics (wherever it runs) makes the session's caller panic after the loop's
/// other tasks finish, and the pool stays usable.
#[test]
fn a_panicking_task_reaches_the_caller() {
    within(120, || {
        let pool = ThreadPool::new(2).unwrap();
        for bad in [0usize, 5, 63] {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.install_session(|| {
                    par::for_each_task(64, |t| {
                        if t == bad {
                            panic!("task {t}");
                        }
                    })
                })
            }));
            assert!(caught.is_err(), "task {bad} panicked");
        }
        let sum = std::sync::atomic::AtomicUsize::new(0);
        pool.install_session(|| {
            par::for_each_task(100, |t| {
                sum.fetch_add(t, std::sync::atomic::Ordering::Relaxed);
            })
        });
        assert_eq!(sum.into_inner(), 4950);
    })
}

/// Loops separated by serial work longer than the helpers' spin, so that they park between
/// loops and the leader parks waiting for a slow task: every loop still completes, with every
/// task run once. A lost wake-up would hang here.
#[test]
fn parked_threads_are_woken_for_every_loop() {
    within(120, || {
        use std::sync::atomic::{AtomicU32, Ordering};
        let pool = ThreadPool::new(2).unwrap();
        pool.install_session(|| {
            for round in 0..300 {
                if round % 2 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                let hits: Vec<AtomicU32> = (0..2).map(|_| AtomicU32::new(0)).collect();
                par::for_each_task(2, |t| {
                    if (round + t) % 3 == 0 {
                        std::thread::sleep(std::time::Duration::from_micros(300));
                    }
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "round {round}"
                );
            }
        });
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
        rng_seed: RngSeed::Fixed(0x6d61_746d),
        ..ProptestConfig::default()
    })]

    /// The fast matrix product agrees with the plain triple loop for every transpose
    /// combination, with and without accumulation: f64 to 1e-12 relative, f32 to 1e-4.
    #[test]
    fn matmul_matches_reference(m in 1usize..40, n in 1usize..40, k in 0usize..70,
                                ta in any::<bool>(), tb in any::<bool>(), acc in any::<bool>(),
                                threads in 1usize..3, seed in any::<u64>()) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (op_a, op_b) = (if ta { Op::T } else { Op::N }, if tb { Op::T } else { Op::N });
        let a: Vec<f64> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f64> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let c0: Vec<f64> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut fast = c0.clone();
        let mut slow = c0.clone();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| matmul(m, n, k, &a, op_a, &b, op_b, &mut fast, acc, threads));
        matmul_reference(m, n, k, &a, op_a, &b, op_b, &mut slow, acc);
        for (f, s) in fast.iter().zip(&slow) {
            prop_assert!((f - s).abs() <= 1e-12 * (1.0 + s.abs()), "{} vs {}", f, s);
        }
        let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        let mut fast32: Vec<f32> = c0.iter().map(|&v| v as f32).collect();
        let mut slow32 = fast32.clone();
        pool.install(|| matmul(m, n, k, &a32, op_a, &b32, op_b, &mut fast32, acc, threads));
        matmul_reference(m, n, k, &a32, op_a, &b32, op_b, &mut slow32, acc);
        for (f, s) in fast32.iter().zip(&slow32) {
            prop_assert!((f - s).abs() <= 1e-4 * (1.0 + s.abs()), "{} vs {}", f, s);
        }
    }
}

/// The two routes to undefined behaviour the review found are closed: `exp_nonpositive` is
/// total (+inf, huge, NaN), and a size check that wrapped (m = n = k = 2^32, whose products are
/// 0 mod 2^64) now refuses before any pointer is formed.
#[test]
fn exp_nonpositive_is_total_and_matmul_sizes_cannot_wrap() {
    assert_eq!(exp_nonpositive(f32::INFINITY), 1.0);
    assert_eq!(exp_nonpositive(1.5e9), 1.0);
    assert_eq!(exp_nonpositive(f32::NAN), exp_nonpositive(-87.0));
    assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    #[cfg(target_pointer_width = "64")]
    {
        let huge = 1usize << 32;
        let r = std::panic::catch_unwind(|| {
            let mut c = [0f32; 1];
            matmul(
                huge,
                huge,
                huge,
                &[0f32; 1],
                Op::N,
                &[0f32; 1],
                Op::N,
                &mut c,
                false,
                1,
            )
        });
        assert!(r.is_err(), "a wrapped size must be refused");
    }
}

/// Products of the shapes a VAE step runs (batch 128, a 784-64-3 model among them) are
/// bit-identical on 1 thread, 2 as rayon jobs and 2 in a session. 128 x 64 x 784 differed when
/// the cut followed the thread count: `gemm` blocks k by the tile's whole shape.
#[test]
fn vae_step_products_are_bit_identical_on_any_threads() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let shapes = [
        (128usize, 784usize, 64usize),
        (128, 64, 784),
        (64, 784, 128),
        (784, 64, 128),
        (128, 400, 784),
        (784, 400, 128),
        (128, 784, 400),
        (1000, 400, 784),
    ];
    for &(m, n, k) in &shapes {
        for (oa, ob) in [(Op::N, Op::N), (Op::T, Op::N), (Op::N, Op::T)] {
            let a: Vec<f64> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f64> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let c0 = vec![0.0; m * n];
            let one = product::<f32>((m, n, k), &a, oa, &b, ob, &c0, false, (1, false));
            for run in [(2, false), (2, true)] {
                let other = product::<f32>((m, n, k), &a, oa, &b, ob, &c0, false, run);
                assert!(
                    one.iter()
                        .zip(&other)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m} x {n} x {k} {oa:?}{ob:?} differs on {run:?}"
                );
            }
        }
    }
}

/// Reference values from mpmath at 50 digits (`mp.loggamma`, `mp.digamma`; the script is in
/// the commit that added them: lgamma(t + x) - lgamma(t) - x ln t and
/// psi(t + x) - psi(t) - log1p(x/t) in mpmath arithmetic).
#[allow(clippy::excessive_precision)] // mpmath's digits, as printed
mod special_functions {
    use crate::kernels::special::{
        digamma, digamma_difference_remainder, lgamma, log_rising_over_power, nb_count_differences,
    };

    const LGAMMA: [(f64, f64); 18] = [
        (1e-10, 23.025850929882735237),
        (0.0001, 9.2102826586339622105),
        (0.1, 2.252712651734205902),
        (0.5, 0.57236494292470008707),
        (1.0, 0.0),
        (1.5, -0.12078223763524522235),
        (2.0, 0.0),
        (2.5, 0.28468287047291915963),
        (3.7, 1.4280723266653881292),
        (9.99, 12.77931521435019336),
        (10.0, 12.801827480081469611),
        (10.5, 13.940625219403763633),
        (33.3, 82.603723581654943008),
        (100.0, 359.13420536957539878),
        (1234.5, 7550.5509010778948957),
        (100000.0, 1051287.7089736568949),
        (100000000.0, 1742068066.1038347093),
        (1000000000000.0, 26631021115915.651636),
    ];
    const DIGAMMA: [(f64, f64); 18] = [
        (1e-10, -10000000000.5772153),
        (0.0001, -10000.577051183513856),
        (0.1, -10.423754940411076232),
        (0.5, -1.9635100260214234794),
        (1.0, -0.57721566490153286061),
        (1.5, 0.036489973978576520559),
        (2.0, 0.42278433509846713939),
        (2.5, 0.70315664064524318723),
        (3.7, 1.1671535393615114409),
        (9.99, 2.250700372831201122),
        (10.0, 2.2517525890667211076),
        (10.5, 2.3030010342976863753),
        (33.3, 3.4904672385202427773),
        (100.0, 4.6001618527380874002),
        (1234.5, 7.1180162318279978433),
        (100000.0, 11.512920464961895087),
        (100000000.0, 18.420680738952365464),
        (1000000000000.0, 27.631021115928048208),
    ];
    /// (theta, x, lgamma(theta + x) - lgamma(theta) - x ln theta,
    ///  psi(theta + x) - psi(theta) - ln(1 + x/theta)).
    const RISING: [(f64, f64, f64, f64); 10] = [
        (0.0001, 1.0, 0.0, 9990.7895596330230048),
        (
            0.0001,
            100000.0,
            1972312.5370399085763,
            9991.3667058115293446,
        ),
        (0.5, 3.0, 2.708050201102210066, 1.1207565176113533616),
        (9.9, 7.0, 1.7668891201911880096, 0.021476970541915201608),
        (10.0, 7.0, 1.7519369750408834044, 0.021132488198568864508),
        (37.5, 1.0, 0.0, 0.00034935834929325809613),
        (
            10000.0,
            100000.0,
            163767.28105260860309,
            0.000045455371900825613005,
        ),
        (
            100000000.0,
            100000.0,
            49.982841911502623353,
            4.9950050116466949634e-12,
        ),
        (100000000.0, 1.0, 0.0, 4.9999999666666669167e-17),
        (
            1000000.0,
            3.0,
            2.9999975000029999958e-6,
            1.4999960000112499684e-12,
        ),
    ];

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs().max(1.0)
    }

    #[test]
    fn lgamma_and_digamma_match_mpmath_to_2e_14() {
        for (y, want) in LGAMMA {
            let got = lgamma(y);
            assert!(
                close(got, want, 2e-14),
                "lgamma({y}) = {got}, mpmath {want}"
            );
        }
        for (y, want) in DIGAMMA {
            let got = digamma(y);
            assert!(
                close(got, want, 2e-14),
                "digamma({y}) = {got}, mpmath {want}"
            );
        }
        assert!(lgamma(0.0).is_nan() && lgamma(-1.0).is_nan() && digamma(f64::NAN).is_nan());
    }

    /// The differences the negative binomial needs stay accurate where the naive
    /// lgamma(theta + x) - lgamma(theta) loses everything (theta = 1e8: the two lgammas are
    /// 1.7e9, the difference 1.8e6 and the part past x ln theta only 50).
    #[test]
    fn rising_factorial_and_digamma_difference_do_not_cancel() {
        for (t, x, r, d) in RISING {
            let got_r = log_rising_over_power(t, x);
            assert!(close(got_r, r, 1e-12), "R({t}, {x}) = {got_r}, mpmath {r}");
            let got_d = digamma_difference_remainder(t, x);
            // An absolute tolerance relative to the digamma difference itself (about x/t).
            let scale = (x / t).ln_1p().max(d.abs());
            assert!(
                (got_d - d).abs() <= 1e-13 * scale.max(1e-300) + 1e-300,
                "psi remainder({t}, {x}) = {got_d}, mpmath {d}"
            );
        }
        // The fused pair the negative binomial's row loop takes, to the same tolerances.
        for (t, x, r, d) in RISING {
            let (got_r, got_psi) = nb_count_differences(t, x);
            assert!(
                close(got_r, r, 1e-12),
                "fused R({t}, {x}) = {got_r}, mpmath {r}"
            );
            let want = (x / t).ln_1p() + d;
            let scale = (x / t).ln_1p().max(d.abs());
            assert!(
                (got_psi - want).abs() <= 1e-13 * scale.max(1e-300) + 1e-300,
                "fused psi difference({t}, {x}) = {got_psi}, mpmath {want}"
            );
        }
        // And the separate functions on a grid over every branch (small counts below SHIFT,
        // large counts, fractional x, large theta).
        for t in [1e-4, 0.3, 1.0, 9.99, 10.0, 37.0, 1e4, 1e8] {
            for x in [1.0, 2.0, 7.0, 32.0, 33.0, 250.0, 2.5, 1e5] {
                let (r, psi) = nb_count_differences(t, x);
                let (r0, psi0) = (
                    log_rising_over_power(t, x),
                    (x / t).ln_1p() + digamma_difference_remainder(t, x),
                );
                assert!(close(r, r0, 1e-13), "R({t}, {x}): fused {r}, separate {r0}");
                assert!(
                    close(psi, psi0, 1e-13),
                    "psi({t}, {x}): fused {psi}, separate {psi0}"
                );
            }
        }
        assert_eq!(nb_count_differences(3.0, 0.0), (0.0, 0.0));
        // The naive difference is off by far more at theta = 1e8 in f32, the failure of
        // scvi-tools issue 2965; ours is not.
        let naive32 = lgamma(1e8 + 1e5) as f32 - lgamma(1e8) as f32 - 1e5f32 * (1e8f32).ln();
        assert!(
            (naive32 as f64 - 49.98).abs() > 10.0,
            "naive f32: {naive32}"
        );
    }
}

#[test]
fn ln_1p_fast_matches_libm_to_a_few_ulp() {
    use crate::kernels::special::ln_1p_fast;
    let mut x = 1e-300f64;
    while x < 1e300 {
        for m in [1.0, 1.37, 2.9, 7.77] {
            let v = x * m;
            let (got, want) = (ln_1p_fast(v), v.ln_1p());
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
                "ln_1p({v}) = {got}, libm {want}"
            );
        }
        x *= 10.0;
    }
    assert_eq!(ln_1p_fast(0.0), 0.0);
    assert_eq!(ln_1p_fast(f64::INFINITY), f64::INFINITY);
}

/// The log1p input transform against libm: within 2.5e-7 relative on counts (the table's and
/// beyond it) and fractions, zeros exactly zero, and a negative value, infinity or NaN passed
/// to libm (so they match it exactly).
#[test]
fn ln_1p_row_matches_libm() {
    let mut x: Vec<f32> = (0..1000)
        .map(|i| match i % 7 {
            0..=2 => 0.0,
            3 => (i * 37 % 100_000) as f32,
            4 => 1e-6 * i as f32,
            5 => 0.5 + i as f32 / 1000.0,
            _ => 3.0e38,
        })
        .collect();
    let (mut fast, mut plain) = (vec![7.0f32; x.len()], vec![7.0f32; x.len()]);
    ln_1p_row(&x, &mut fast);
    ln_1p_row_reference(&x, &mut plain);
    for (j, (&f, &p)) in fast.iter().zip(&plain).enumerate() {
        if x[j] == 0.0 {
            assert_eq!(f.to_bits(), 0, "ln(1 + 0) at {j} is {f}");
        }
        assert!(
            (f as f64 - p as f64).abs() <= 2.5e-7 * (p as f64).abs(),
            "x {} at {j}: fast {f}, libm {p}",
            x[j]
        );
    }
    // Bad values go to libm, bit for bit, NaN included; their neighbours are untouched.
    for bad in [-0.5f32, -0.0, f32::INFINITY, f32::NAN] {
        x[40] = bad;
        ln_1p_row(&x, &mut fast);
        ln_1p_row_reference(&x, &mut plain);
        for j in 32..48 {
            assert_eq!(fast[j].to_bits(), plain[j].to_bits(), "{bad} at {j}");
        }
    }
}

/// The log1p of a sparse row's values in place, by whole chunks of counts or entry by entry,
/// gives [`ln_1p_row`]'s bits for every entry: whole numbers below 256 and beyond, fractions,
/// zeros of both signs, negatives, infinity and NaN, in chunks of counts alone and mixed, and
/// a remainder past the last whole chunk. A chunk path that looked up a fraction's or a large
/// count's floor, or replaced -0.0, is caught.
#[test]
fn ln_1p_in_place_matches_the_row_transform() {
    let specials = [
        0.5f32,
        255.0,
        256.0,
        1e6,
        -0.0,
        -1.5,
        f32::INFINITY,
        f32::NAN,
        3.25,
    ];
    for n in [0usize, 5, 16, 47, 160] {
        for special in specials {
            let mut x: Vec<f32> = (0..n).map(|i| ((i * 37) % 300 % 256) as f32).collect();
            if n > 20 {
                x[20] = special;
            }
            if n > 3 {
                x[3] = 0.0;
            }
            let mut want = vec![0.0f32; n];
            ln_1p_row(&x, &mut want);
            let mut got = x.clone();
            super::fast::ln_1p_in_place(&mut got);
            for j in 0..n {
                assert_eq!(
                    got[j].to_bits(),
                    want[j].to_bits(),
                    "x {} at {j} of {n}",
                    x[j]
                );
            }
        }
    }
}

/// The division-free logarithm of the zero-count kernel: within 2.5e-7 relative of f64's ln
/// from 1 up to 1e30 on a fine grid (near 1, where ln v is small, included), and below 1 down
/// to the smallest normal f32.
#[test]
fn ln_normal_is_accurate() {
    let mut worst = 0.0f64;
    let mut v = f32::MIN_POSITIVE;
    while v < 1e30 {
        for k in 0..64 {
            let u = v * (1.0 + k as f32 / 64.0);
            let want = (u as f64).ln();
            if want != 0.0 {
                worst = worst.max((ln_normal(u) as f64 - want).abs() / want.abs());
            }
        }
        v *= 2.0;
    }
    for i in 1..200_000 {
        let u = 1.0f32 + i as f32 * 1e-6;
        let want = (u as f64).ln();
        worst = worst.max((ln_normal(u) as f64 - want).abs() / want);
    }
    assert_eq!(ln_normal(1.0), 0.0);
    assert!(worst < 2.5e-7, "worst relative error {worst:e}");
}

/// The branch-free f64 logarithm of the count likelihoods' lane path: within 1 ulp of libm's
/// `ln` over every binade of the normal numbers (64 points each), on a fine grid around 1 and
/// sqrt(2) (where the reduction switches), and on seeded random mantissas; exactly 0 at 1 and
/// exact at powers of two.
#[test]
fn ln_normal_f64_is_within_an_ulp_of_libm() {
    use crate::kernels::special::ln_normal_f64;
    use rand::{RngExt, SeedableRng};
    let ulps = |x: f64| {
        let (got, want) = (ln_normal_f64(x), x.ln());
        let ulp = f64::from_bits(want.abs().to_bits() + 1) - want.abs();
        if want == 0.0 {
            got.abs()
        } else {
            (got - want).abs() / ulp
        }
    };
    let mut worst = (0.0f64, 0.0f64);
    let mut check = |x: f64| {
        let e = ulps(x);
        if e > worst.0 {
            worst = (e, x);
        }
    };
    let mut v = f64::MIN_POSITIVE;
    while v < f64::MAX / 2.0 {
        for k in 0..64 {
            check(v * (1.0 + k as f64 / 64.0));
        }
        v *= 2.0;
    }
    for i in 1..100_000 {
        check(1.0 + i as f64 * 1e-9);
        check(1.0 - i as f64 * 1e-9);
        check(std::f64::consts::SQRT_2 * (1.0 + (i as f64 - 50_000.0) * 1e-12));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for _ in 0..200_000 {
        check(rng.random_range(1.0..2.0) * 2f64.powi(rng.random_range(-1000..1000)));
    }
    assert_eq!(ln_normal_f64(1.0), 0.0);
    assert_eq!(ln_normal_f64(1024.0), 1024f64.ln());
    assert!(worst.0 <= 1.0, "{} ulp at {:e}", worst.0, worst.1);
}

/// Rounding to bf16 is to nearest with ties to even, keeps NaN a NaN and infinities infinite,
/// and is exact on values that are already bf16.
#[test]
fn bf16_rounding_is_to_nearest_ties_to_even() {
    use super::bf16::{bf16_bits, bf16_value, round_to_bf16};
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: the tie goes to 1 (even significand).
    assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
    // 1 + 3 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6: it goes up.
    assert_eq!(
        round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)),
        1.0 + 2f32.powi(-6)
    );
    // Just above a tie rounds up; just below rounds down.
    assert_eq!(
        round_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
        1.0 + 2f32.powi(-7)
    );
    assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8) - 2f32.powi(-20)), 1.0);
    assert_eq!(
        round_to_bf16(-1.0 - 2f32.powi(-8) - 2f32.powi(-20)),
        -1.0 - 2f32.powi(-7)
    );
    assert!(round_to_bf16(f32::NAN).is_nan());
    assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
    assert_eq!(round_to_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
    // The largest finite f32 lies past the largest bf16's halfway point: it overflows.
    assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
    for h in (0..=u16::MAX).step_by(7) {
        let v = bf16_value(h);
        if !v.is_nan() {
            assert_eq!(bf16_bits(v), h, "bf16 {h:#x} is not kept");
        }
    }
}

/// A bf16 product on `path`, on a pool of `threads`, inside a session or not.
#[allow(clippy::too_many_arguments)]
fn product_bf16(
    path: super::bf16::Bf16Path,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    c0: &[f32],
    acc: bool,
    (threads, session): (usize, bool),
) -> Vec<f32> {
    let mut c = c0.to_vec();
    on_pool(threads, session, || {
        super::bf16::matmul_bf16_on(path, (m, n, k), (a, op_a), (b, op_b), &mut c, acc, threads)
    });
    c
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(2718281828),
        ..ProptestConfig::default()
    })]

    /// The bf16 product agrees with its plain version (operands rounded to bf16, sums in f64)
    /// to f32 summation's error, for every transpose and with or without accumulation, on
    /// shapes with odd `k` and partial register tiles, and large ones cut into tiles. The bits
    /// are the same on 1 or 2 threads, in a session or not.
    #[test]
    fn matmul_bf16_matches_reference_on_any_threads(
        m in 1usize..150, n in 1usize..300, k in 0usize..90,
        ta in any::<bool>(), tb in any::<bool>(), acc in any::<bool>(), seed in any::<u64>()
    ) {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (op_a, op_b) = (if ta { Op::T } else { Op::N }, if tb { Op::T } else { Op::N });
        let mut draw = |len: usize| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<f32>>();
        let (a, b, c0) = (draw(m * k), draw(k * n), draw(m * n));
        let mut exact = c0.clone();
        super::bf16::matmul_bf16_reference(m, n, k, &a, op_a, &b, op_b, &mut exact, acc);
        // Sum of |a b| per element bounds f32's summation error: k + 1 roundings of 2^-24.
        let abs = |v: &[f32]| v.iter().map(|x| super::bf16::round_to_bf16(*x).abs()).collect::<Vec<f32>>();
        let mut scale = vec![0.0f32; m * n];
        super::matmul::matmul_reference(m, n, k, &abs(&a), op_a, &abs(&b), op_b, &mut scale, false);
        for path in super::bf16::Bf16Path::available() {
            let fast = product_bf16(path, (m, n, k), &a, op_a, &b, op_b, &c0, acc, RUNS[0]);
            for run in &RUNS[1..] {
                prop_assert_eq!(&product_bf16(path, (m, n, k), &a, op_a, &b, op_b, &c0, acc, *run), &fast);
            }
            for ((f, s), (w, c)) in fast.iter().zip(&exact).zip(scale.iter().zip(&c0)) {
                let bound = (k + 2) as f32 * 2f32.powi(-24) * (w + if acc { c.abs() } else { 0.0 }) * 2.0;
                prop_assert!((f - s).abs() <= bound + 1e-30, "{:?}: {} vs {} (bound {})", path, f, s, bound);
            }
        }
    }
}
