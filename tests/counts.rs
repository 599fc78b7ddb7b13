//! The count likelihoods (Poisson, NB, ZINB with the softmax-times-library mean): values
//! against independent formulas and sums, finite-difference checks of every gradient (each
//! likelihood alone and the whole -ELBO and IW bound with it), stability at the edges the
//! issue names, and a mutant that the checks must catch.
//!
//! Tolerance: `Tolerance::DEFAULT` (|analytic - numerical| <= 1e-7 + 1e-5 |numerical|, h = 1e-5)
//! as in `tests/gradients.rs`, except where a test says otherwise and why.

use elbo::gradcheck::{Tolerance, check, check_likelihood, format_table};
use elbo::model::counts::{self, CountTerms, negative_binomial, poisson, zero_inflate};
use elbo::model::{Dispersion, Layout, LikelihoodChoice, LikelihoodHead};
use elbo::objective::{Elbo, Iwae, Workspace};
use elbo::{DecoderLikelihood, Float, Likelihood, LikelihoodInfo, Vae, VaeConfig};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const H: f64 = 1e-5;
const TOL: Tolerance = Tolerance::DEFAULT;

const ALL: [Likelihood; 5] = [
    Likelihood::Poisson,
    Likelihood::NegativeBinomial {
        dispersion: Dispersion::Gene,
    },
    Likelihood::NegativeBinomial {
        dispersion: Dispersion::GeneCell,
    },
    Likelihood::ZeroInflatedNegativeBinomial {
        dispersion: Dispersion::Gene,
    },
    Likelihood::ZeroInflatedNegativeBinomial {
        dispersion: Dispersion::GeneCell,
    },
];

fn assert_all_pass(checks: &[elbo::gradcheck::TensorCheck]) {
    assert!(
        checks.iter().all(|c| c.passed),
        "gradient check failed:\n{}",
        format_table(checks)
    );
}

fn count_likelihood() -> impl Strategy<Value = Likelihood> {
    (0..ALL.len()).prop_map(|i| ALL[i])
}

/// Counts with many zeros (about `zeros` of them), the rest spread over 1..=max.
fn counts(rng: &mut ChaCha8Rng, n: usize, zeros: f64, max: u32) -> Vec<f64> {
    (0..n)
        .map(|_| {
            if rng.random::<f64>() < zeros {
                0.0
            } else {
                rng.random_range(1..=max) as f64
            }
        })
        .collect()
}

/// The textbook NB log-pmf, naive but exact enough at moderate theta in f64.
fn nb_textbook(x: f64, mu: f64, theta: f64) -> f64 {
    let lg = |v: f64| statrs_free_lgamma(v);
    lg(x + theta) - lg(theta) - lg(x + 1.0)
        + theta * (theta / (theta + mu)).ln()
        + x * (mu / (theta + mu)).ln()
}

/// ln Gamma by Lanczos (g = 7, n = 9), independent of the crate's Stirling-series version.
fn statrs_free_lgamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln()
            - statrs_free_lgamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[test]
fn values_agree_with_the_textbook_formulas() {
    for &(x, mu, theta) in &[
        (0.0, 2.5, 0.7),
        (3.0, 2.5, 0.7),
        (17.0, 4.0, 12.0),
        (1.0, 0.01, 3.0),
    ] {
        let got = negative_binomial(x, f64::ln(mu), f64::ln(theta)).log_p;
        let want = nb_textbook(x, mu, theta);
        assert!(
            (got - want).abs() < 1e-10,
            "NB({x}; {mu}, {theta}) = {got}, textbook {want}"
        );
        let p = poisson(x, f64::ln(mu)).log_p;
        let want_p = x * mu.ln() - mu - statrs_free_lgamma(x + 1.0);
        assert!(
            (p - want_p).abs() < 1e-10,
            "Poisson({x}; {mu}) = {p}, textbook {want_p}"
        );
    }
}

/// Fully normalised: the probabilities of 0, 1, 2, ... sum to 1 (to the truncated tail).
#[test]
fn the_pmfs_sum_to_one() {
    for &(mu, theta, h) in &[(3.0, 0.5, -1.0), (40.0, 2.0, 0.5), (0.2, 1e6, 2.0)] {
        let (ln_mu, ln_theta) = (f64::ln(mu), f64::ln(theta));
        let sum = |f: &dyn Fn(f64) -> f64| (0..20_000).map(|x| f(x as f64).exp()).sum::<f64>();
        let nb = sum(&|x| negative_binomial(x, ln_mu, ln_theta).log_p);
        let zinb = sum(&|x| zero_inflate(x, negative_binomial(x, ln_mu, ln_theta), h).log_p);
        let pois = sum(&|x| poisson(x, ln_mu).log_p);
        for (name, s) in [("NB", nb), ("ZINB", zinb), ("Poisson", pois)] {
            assert!(
                (s - 1.0).abs() < 1e-9,
                "{name}(mu {mu}, theta {theta}) sums to {s}"
            );
        }
    }
}

/// theta = 1e8 is the Poisson limit: the NB's log p and its mu-gradient match the Poisson's
/// to about mu^2/theta, with counts up to 1e5.
#[test]
fn large_theta_is_the_poisson_limit() {
    for &(x, mu) in &[(0.0, 3.0), (5.0, 3.0), (1e5, 1e5), (120.0, 100.5)] {
        let nb = negative_binomial(x, f64::ln(mu), f64::ln(1e8));
        let p = poisson(x, f64::ln(mu));
        let allowed = 1e-6 * (1.0 + (x - mu).abs() + mu * mu / 1e8 * 10.0);
        assert!(
            (nb.log_p - p.log_p).abs() < allowed.max(1e-6),
            "x {x} mu {mu}: NB {} Poisson {}",
            nb.log_p,
            p.log_p
        );
        assert!(
            (nb.d_ln_mu - p.d_ln_mu).abs() < 1e-4 * (1.0 + x),
            "x {x} mu {mu}"
        );
        assert!(
            nb.d_ln_theta.abs() < 1e-3,
            "d/d ln theta at the limit is ~ (x - mu)^2/theta: {}",
            nb.d_ln_theta
        );
    }
}

/// d log p / d ln theta at every edge the issue names, against a central difference in
/// ln theta (log p is smooth in it, so h = 1e-4 leaves a truncation error near 1e-8 of the
/// value's scale).
#[test]
fn theta_gradient_is_accurate_from_1e_minus_4_to_1e8() {
    for &ln_theta in &[f64::ln(1e-4), -2.0, 0.0, 3.0, f64::ln(1e4), f64::ln(1e8)] {
        for &x in &[0.0, 1.0, 7.0, 1e3, 1e5] {
            for &ln_mu in &[f64::ln(1e-10), -1.0, 2.0, f64::ln(1e5)] {
                let t = negative_binomial(x, ln_mu, ln_theta);
                assert!(t.log_p.is_finite() && t.d_ln_mu.is_finite() && t.d_ln_theta.is_finite());
                let h = 1e-4;
                let fd = (negative_binomial(x, ln_mu, ln_theta + h).log_p
                    - negative_binomial(x, ln_mu, ln_theta - h).log_p)
                    / (2.0 * h);
                // log p is a sum of terms as large as x (|ln mu| + |ln theta| + ln x), which
                // cancel to |log p|; their difference at +-h loses that size times eps / h.
                let terms = t.log_p.abs() + x * (ln_mu.abs() + ln_theta.abs() + 20.0);
                // And the central difference's truncation error, f''' h^2/6, with f''' of size
                // x + mu in ln mu (the curvature of x ln mu - mu).
                let noise = 1e-15 * terms / h + 1e-7 + (x + ln_mu.exp()) * h * h;
                let err = (t.d_ln_theta - fd).abs();
                assert!(
                    err <= 1e-5 * fd.abs() + noise,
                    "x {x}, ln mu {ln_mu}, ln theta {ln_theta}: analytic {} vs FD {fd}",
                    t.d_ln_theta
                );
                let fd_mu = (negative_binomial(x, ln_mu + h, ln_theta).log_p
                    - negative_binomial(x, ln_mu - h, ln_theta).log_p)
                    / (2.0 * h);
                assert!(
                    (t.d_ln_mu - fd_mu).abs() <= 1e-5 * fd_mu.abs() + noise,
                    "x {x}, ln mu {ln_mu}, ln theta {ln_theta}: d ln mu {} vs FD {fd_mu}",
                    t.d_ln_mu
                );
            }
        }
    }
}

/// Zero-inflation logits of +-1e4 and mu of 1e-10: finite values and gradients, the right
/// limits (h = +1e4: every zero is structural, log p(0) = 0 and a positive count costs 1e4).
#[test]
fn extreme_zero_inflation_logits_stay_finite() {
    let nb0 = negative_binomial(0.0, f64::ln(1e-10), 0.0);
    let nb5 = negative_binomial(5.0, f64::ln(1e-10), 0.0);
    for h in [-1e4, -30.0, 0.0, 30.0, 1e4] {
        for (x, nb) in [(0.0, nb0), (5.0, nb5)] {
            let t: CountTerms = zero_inflate(x, nb, h);
            assert!(
                t.log_p.is_finite() && t.d_h.is_finite() && t.d_ln_mu.is_finite(),
                "h {h} x {x}: {t:?}"
            );
        }
    }
    assert!(zero_inflate(0.0, nb0, 1e4).log_p.abs() < 1e-12);
    assert!((zero_inflate(5.0, nb5, 1e4).log_p - (nb5.log_p - 1e4)).abs() < 1e-6);
    assert!((zero_inflate(0.0, nb0, -1e4).log_p - nb0.log_p).abs() < 1e-12);
}

/// The whole row with mu down to 1e-10 (a logit 30 below the others) and counts up to 1e5.
#[test]
fn whole_rows_at_the_edges_pass_the_gradient_check() {
    let d = 4;
    let x = [0.0, 1e5, 3.0, 0.0];
    for lik in ALL {
        let w = lik.outputs_per_dim() * d;
        let mut a = vec![0.0; w];
        a[..d].copy_from_slice(&[-30.0, 2.0, 0.0, -5.0]);
        if w > d {
            // h of +-20 (zero inflation) and ln theta in the wide range (per-cell dispersion).
            for (i, v) in a[d..].iter_mut().enumerate() {
                *v = [20.0, -20.0, 3.0, -3.0][i % 4];
            }
        }
        let params: Vec<f64> = (0..lik.num_params(d))
            .map(|g| [-9.0, 18.0, 0.0, 2.0][g])
            .collect();
        // h = 1e-4: with a count of 1e5, log p's terms are of size 2e6 and cancel, so a smaller
        // step drowns the difference in rounding (2e6 eps / h); the truncation error at 1e-4
        // is far below the tolerance.
        let checks = check_likelihood(
            &lik,
            &params,
            &x,
            &a,
            1e-4,
            Tolerance {
                atol: 1e-5,
                rtol: 1e-5,
            },
        )
        .unwrap();
        assert_all_pass(&checks);
    }
}

/// A likelihood whose d/d ln theta is 1% too large: the gradient check must catch it.
#[derive(Debug)]
struct OffByOnePercent(Likelihood);
impl LikelihoodInfo for OffByOnePercent {
    fn name(&self) -> String {
        "nb with a 1% error in d/dtheta".into()
    }
    fn outputs_per_dim(&self) -> usize {
        self.0.outputs_per_dim()
    }
    fn cache_per_dim(&self) -> usize {
        self.0.cache_per_dim()
    }
    fn num_params(&self, d: usize) -> usize {
        self.0.num_params(d)
    }
}
impl<T: Float> DecoderLikelihood<T> for OffByOnePercent {
    fn log_prob(&self, p: &[T], x: &[T], a: &[T], c: &mut [T]) -> T {
        self.0.log_prob(p, x, a, c)
    }
    fn grad_output(&self, p: &[T], x: &[T], a: &[T], c: &[T], s: T, da: &mut [T]) {
        self.0.grad_output(p, x, a, c, s, da);
        if self.0.num_params(x.len()) == 0 {
            // Per-cell dispersion: ln theta's gradient is the decoder output's last D.
            let d = x.len();
            let n = da.len();
            for v in &mut da[n - d..] {
                *v *= T::of(1.01);
            }
        }
    }
    fn grad_params(&self, p: &[T], x: &[T], a: &[T], c: &[T], s: T, dp: &mut [T]) {
        let mut own = vec![T::zero(); dp.len()];
        self.0.grad_params(p, x, a, c, s, &mut own);
        for (d, o) in dp.iter_mut().zip(own) {
            *d += o * T::of(1.01);
        }
    }
    fn mean(&self, p: &[T], a: &[T], out: &mut [T]) {
        self.0.mean(p, a, out)
    }
}

#[test]
fn a_one_percent_error_in_the_theta_gradient_is_caught() {
    let x = [0.0, 4.0, 1.0, 12.0, 0.0];
    for lik in &ALL[1..] {
        let d = x.len();
        let a: Vec<f64> = (0..lik.outputs_per_dim() * d)
            .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.4)
            .collect();
        let params: Vec<f64> = (0..lik.num_params(d))
            .map(|g| g as f64 * 0.3 - 0.5)
            .collect();
        let honest = check_likelihood(lik, &params, &x, &a, H, TOL).unwrap();
        assert_all_pass(&honest);
        let mutant = check_likelihood(&OffByOnePercent(*lik), &params, &x, &a, H, TOL).unwrap();
        assert!(
            mutant.iter().any(|c| !c.passed),
            "{lik}: the 1% mutant passed:\n{}",
            format_table(&mutant)
        );
    }
}

/// The softmax-library mean's backward alone: mu's gradient must sum to zero over a (the
/// softmax is invariant to a shift of every logit), and a dropped `- rho sum g` term fails.
#[test]
fn softmax_library_backward_is_shift_invariant() {
    let a = [0.3f64, -1.0, 2.0, 0.0];
    let m = counts::SoftmaxLibrary::forward(&a, 50.0);
    let g = [1.0, -2.0, 0.5, 3.0];
    let (mut da, mut rho) = ([0.0; 4], [0.0; 4]);
    m.softmax(&a, &mut rho);
    counts::SoftmaxLibrary::backward(&rho, &g, 1.0, &mut da);
    assert!(da.iter().sum::<f64>().abs() < 1e-12);
    let mu_sum: f64 = a.iter().map(|&v| (v + m.offset).exp()).sum();
    assert!((mu_sum - 50.0).abs() < 1e-10, "mu sums to the library size");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/counts.txt"))),
        rng_seed: RngSeed::Fixed(2_965),
        ..ProptestConfig::default()
    })]

    /// Each count likelihood through the model's head: d(-scale sum_r c_r log p_r) with respect
    /// to the decoder output and ln theta, over random counts, shapes and weights.
    #[test]
    fn count_heads(lik in count_likelihood(), rows in 1usize..4, samples in 1usize..3,
                   dim in 1usize..7, zeros in 0.0f64..1.0, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layout = Layout::new();
        let w = lik.outputs_per_dim() * dim;
        let dec = rows * samples;
        let ta = layout.push("a", &[dec, w]);
        let own = (lik.num_params(dim) > 0).then(|| layout.push("likelihood.log_theta", &[dim]));
        let head = LikelihoodHead { choice: LikelihoodChoice::Builtin(lik), params: own, dim };
        let theta: Vec<f64> = (0..layout.len()).map(|_| rng.random_range(-3.0..3.0)).collect();
        let x = counts(&mut rng, rows * dim, zeros, 30);
        let weights: Vec<f64> = (0..dec).map(|_| rng.random_range(0.0..1.0)).collect();
        let cw = head.cache_width();
        let loss = |t: &[f64]| {
            let (mut lp, mut cache) = (vec![0.0; dec], vec![0.0; dec * cw]);
            head.forward(t, &x, ta.get(t).unwrap(), samples, &mut lp, &mut cache, dec).unwrap();
            -lp.iter().zip(&weights).map(|(l, w)| l * w).sum::<f64>()
        };
        let (mut lp, mut cache) = (vec![0.0; dec], vec![0.0; dec * cw]);
        head.forward(&theta, &x, ta.get(&theta).unwrap(), samples, &mut lp, &mut cache, dec).unwrap();
        let (mut g, mut da) = (vec![0.0; layout.len()], vec![0.0; dec * w]);
        head.backward(&theta, &x, ta.get(&theta).unwrap(), &cache, samples, 1.0, Some(&weights), &mut da, &mut g, dec).unwrap();
        ta.get_mut(&mut g).unwrap().copy_from_slice(&da);
        assert_all_pass(&check(&layout, &theta, &g, loss, H, TOL).unwrap());
    }

    /// The whole -ELBO with each count likelihood and the log1p input, eps fixed.
    #[test]
    fn whole_negative_elbo_with_counts(lik in count_likelihood(), input in 1usize..7,
            enc in prop::collection::vec(1usize..6, 0..2), latent in 1usize..4,
            rows in 1usize..4, samples in 1usize..3, beta in 0.0f64..2.0, zeros in 0.0f64..1.0,
            log1p in any::<bool>(), seed in any::<u64>()) {
        let config = VaeConfig::mnist().input_dim(input).hidden(&enc).latent_dim(latent).likelihood(lik)
            .log1p_input(log1p);
        let vae = Vae::new(config).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params: Vec<f64> = vae.init_params(seed);
        if let Some(t) = vae.layout().get("likelihood.log_theta") {
            for v in &mut params[t.range()] { *v = rng.random_range(-2.0..2.0); }
        }
        let mut ws = Workspace::<f64>::new(&vae, rows, samples, 1).unwrap();
        let x = counts(&mut rng, rows * input, zeros, 20);
        ws.x[..rows * input].copy_from_slice(&x);
        for v in &mut ws.eps { *v = rng.random_range(-2.0..2.0); }
        let elbo = Elbo::new(&vae);
        let mut grads = vec![0.0; vae.num_params()];
        elbo.forward(&params, &mut ws, rows).unwrap();
        elbo.backward(&params, &mut ws, rows, beta, &mut grads).unwrap();
        let mut ws2 = ws.clone();
        let loss = |t: &[f64]| elbo.forward(t, &mut ws2, rows).unwrap().loss(beta);
        assert_all_pass(&check(vae.layout(), &params, &grads, loss, H, TOL).unwrap());
    }

    /// The importance-weighted bound with each count likelihood.
    #[test]
    fn whole_negative_iw_bound_with_counts(lik in count_likelihood(), input in 1usize..6,
            latent in 1usize..3, rows in 1usize..3, k in 1usize..5, seed in any::<u64>()) {
        let vae = Vae::new(VaeConfig::mnist().input_dim(input).hidden(&[4]).latent_dim(latent)
            .likelihood(lik).log1p_input(true)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params: Vec<f64> = vae.init_params(seed);
        let mut ws = Workspace::<f64>::new(&vae, rows, k, 1).unwrap();
        let x = counts(&mut rng, rows * input, 0.5, 15);
        ws.x[..rows * input].copy_from_slice(&x);
        for v in &mut ws.eps { *v = rng.random_range(-2.0..2.0); }
        let iwae = Iwae::new(&vae);
        let mut grads = vec![0.0; vae.num_params()];
        iwae.forward(&params, &mut ws, rows).unwrap();
        iwae.backward(&params, &mut ws, rows, &mut grads).unwrap();
        let mut ws2 = ws.clone();
        let loss = |t: &[f64]| -iwae.forward(t, &mut ws2, rows).unwrap().bound;
        assert_all_pass(&check(vae.layout(), &params, &grads, loss, H, TOL).unwrap());
    }
}

/// The f32 fast path (zero counts vectorised in f32, nonzero counts exact) against the f64
/// path (every gene exact), which the gradient checks above validate: log p per row to a
/// relative 2e-5, and every gradient entry to 2e-4 of the row's largest.
#[test]
fn the_f32_count_path_matches_the_exact_f64_path() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for lik in ALL {
        for &(d, zeros) in &[(37usize, 0.95), (2000, 0.95), (300, 0.5), (64, 1.0)] {
            let w = lik.outputs_per_dim() * d;
            let x64 = counts(&mut rng, d, zeros, 40);
            let a64: Vec<f64> = (0..w).map(|_| rng.random_range(-6.0..3.0)).collect();
            let p64: Vec<f64> = (0..lik.num_params(d))
                .map(|_| rng.random_range(-4.0..6.0))
                .collect();
            let to32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let (x32, a32, p32) = (to32(&x64), to32(&a64), to32(&p64));
            let cw = lik.cache_per_dim() * d;
            let (mut c64, mut c32) = (vec![0.0f64; cw], vec![0.0f32; cw]);
            let lp64 = DecoderLikelihood::<f64>::log_prob(&lik, &p64, &x64, &a64, &mut c64);
            let lp32 = DecoderLikelihood::<f32>::log_prob(&lik, &p32, &x32, &a32, &mut c32);
            assert!(
                ((lp32 as f64) - lp64).abs() <= 2e-5 * lp64.abs().max(1.0),
                "{lik} d {d}: {lp32} vs {lp64}"
            );
            let (mut g64, mut g32) = (vec![0.0f64; w], vec![0.0f32; w]);
            DecoderLikelihood::<f64>::grad_output(&lik, &p64, &x64, &a64, &c64, 1.0, &mut g64);
            DecoderLikelihood::<f32>::grad_output(&lik, &p32, &x32, &a32, &c32, 1.0, &mut g32);
            let (mut q64, mut q32) = (vec![0.0f64; p64.len()], vec![0.0f32; p64.len()]);
            DecoderLikelihood::<f64>::grad_params(&lik, &p64, &x64, &a64, &c64, 1.0, &mut q64);
            DecoderLikelihood::<f32>::grad_params(&lik, &p32, &x32, &a32, &c32, 1.0, &mut q32);
            for (name, exact, fast) in [("a", &g64, &g32), ("params", &q64, &q32)] {
                let scale = exact.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
                for (j, (&e, &f)) in exact.iter().zip(fast.iter()).enumerate() {
                    assert!(
                        (f as f64 - e).abs() <= 2e-4 * scale,
                        "{lik} d {d} {name}[{j}]: f32 {f} vs f64 {e} (scale {scale})"
                    );
                }
            }
        }
    }
}

/// The model's head computes f32 rows in blocks that share the dispersion's per-gene terms;
/// every row must come out as it does alone (cache and log p, bit for bit), whatever block it
/// falls in: 21 decoder rows (2 samples of 10 cells and a half block), 300 genes (two gene
/// chunks, a tail that is no multiple of 16), an empty cell among them.
#[test]
fn blocks_of_rows_give_each_row_its_own_values() {
    let (cells, samples, dim) = (11usize, 2usize, 300usize);
    let dec = cells * samples - 1;
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for lik in ALL {
        let mut layout = Layout::new();
        let w = lik.outputs_per_dim() * dim;
        let own = (lik.num_params(dim) > 0).then(|| layout.push("likelihood.log_theta", &[dim]));
        let head = LikelihoodHead {
            choice: LikelihoodChoice::Builtin(lik),
            params: own,
            dim,
        };
        let params: Vec<f32> = (0..layout.len())
            .map(|_| rng.random_range(-4.0..6.0))
            .collect();
        let mut x: Vec<f32> = counts(&mut rng, cells * dim, 0.95, 40)
            .iter()
            .map(|&v| v as f32)
            .collect();
        x[3 * dim..4 * dim].fill(0.0);
        let a: Vec<f32> = (0..dec * w).map(|_| rng.random_range(-6.0..3.0)).collect();
        let cw = head.cache_width();
        let (mut lp, mut cache) = (vec![0.0f32; dec], vec![0.0f32; dec * cw]);
        head.forward(&params, &x, &a, samples, &mut lp, &mut cache, dec)
            .unwrap();
        let own_params = own.map_or(&[][..], |t| t.get(&params).unwrap());
        for r in 0..dec {
            let xr = &x[(r / samples) * dim..(r / samples + 1) * dim];
            let mut c = vec![0.0f32; cw];
            let alone = DecoderLikelihood::<f32>::log_prob(
                &lik,
                own_params,
                xr,
                &a[r * w..(r + 1) * w],
                &mut c,
            );
            assert_eq!(
                alone.to_bits(),
                lp[r].to_bits(),
                "{lik} row {r}: {alone} alone, {} in a block",
                lp[r]
            );
            let same = c
                .iter()
                .zip(&cache[r * cw..(r + 1) * cw])
                .all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{lik} row {r}: the cache differs in a block");
        }
        assert_eq!(lp[6], 0.0, "{lik}: the empty cell");
        assert!(lp.iter().all(|v| v.is_finite()));
    }
}
