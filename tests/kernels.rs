//! Each fast kernel against its plain reference.

use elbo::kernels::fast::{
    AdamStep, adam_body, adam_f32, bernoulli_row, bernoulli_row_reference, exp_nonpositive,
    instruction_set, ln_1p_unit,
};
use elbo::kernels::{Op, SparseRows, sparse_matmul, sparse_matmul_reference};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

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
        let c = AdamStep { step_size: 1e-3f32, inv_sqrt_bc2: 3.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let (mut p1, mut m1, mut v1) = (p0.clone(), m0.clone(), v0.clone());
        let (mut p2, mut m2, mut v2) = (p0.clone(), m0.clone(), v0.clone());
        adam_f32(&mut p1, &g, &mut m1, &mut v1, c);
        adam_body(&mut p2, &g, &mut m2, &mut v2, c);
        prop_assert_eq!(p1, p2);
        prop_assert_eq!(m1, m2);
        prop_assert_eq!(v1, v2);
    }
}

#[test]
fn reports_the_instruction_set() {
    assert!(["avx512", "avx2", "portable"].contains(&instruction_set()));
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

fn dense_of<T: elbo::Float>(s: &SparseRows<T>) -> Vec<T> {
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

/// Runs `sparse_matmul` on a pool of `threads`.
fn sparse_product<T: elbo::Float>(x: &SparseRows<T>, w: &[T], n: usize, threads: usize) -> Vec<T> {
    let mut y = vec![T::of(f64::NAN); x.rows() * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| sparse_matmul(x, w, n, &mut y, threads));
    y
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
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
        for threads in [1, 2] {
            prop_assert_eq!(&sparse_product(&xs, &w64, n, threads), &want);
            prop_assert_eq!(&sparse_product(&xt, &g64, n, threads), &want_t);
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
        for threads in [1, 2] {
            prop_assert_eq!(&sparse_product(&xs32, &w32, n, threads), &want32);
            prop_assert_eq!(&sparse_product(&xt32, &g32, n, threads), &want32_t);
        }

        // And the reference itself is the product: against the f64 dot products.
        let mut exact = vec![0.0f64; m * n];
        elbo::kernels::matmul_reference(m, n, k, &x64, Op::N, &w64, Op::N, &mut exact, false);
        for (a, b) in want.iter().zip(&exact) {
            prop_assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/kernels.txt"))),
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
        use elbo::kernels::fast::{COMPACT_SLACK, compact_nonzeros_f32, compact_nonzeros_reference};
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
