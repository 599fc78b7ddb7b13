//! Each fast kernel against its plain reference.

use elbo::kernels::fast::{
    AdamStep, adam_body, adam_f32, bernoulli_row, bernoulli_row_reference, exp_nonpositive,
    instruction_set, ln_1p_unit,
};
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
