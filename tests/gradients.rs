//! Every hand-written backward pass against central finite differences, in f64, over random
//! shapes and values (proptest).
//!
//! Tolerance (stated once, used everywhere): `Tolerance::DEFAULT`, i.e. for every element
//! |analytic - numerical| <= 1e-7 + 1e-5 |numerical|, with step h = 1e-5. The central
//! difference's own error is about 1e-9 here, so a correct gradient passes with a wide margin
//! and a wrong factor, sign or missing term fails.

use elbo::gradcheck::{Tolerance, check, format_table};
use elbo::model::{
    Activation, Dense, KlToStandardNormal, Layout, Likelihood, LikelihoodHead, Mlp, Reparameterize,
    SPARSE_INPUT_DENSITY,
};
use elbo::objective::{Elbo, Iwae, Workspace};
use elbo::{Vae, VaeConfig};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use proptest::test_runner::RngSeed;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const H: f64 = 1e-5;
const TOL: Tolerance = Tolerance::DEFAULT;

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn assert_all_pass(checks: &[elbo::gradcheck::TensorCheck]) {
    assert!(
        checks.iter().all(|c| c.passed),
        "gradient check failed:\n{}",
        format_table(checks)
    );
}

fn activation_strategy() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::LeakyRelu { slope: 0.01 }),
        Just(Activation::Tanh),
        Just(Activation::Sigmoid),
        Just(Activation::Softplus),
    ]
}

fn likelihood_strategy() -> impl Strategy<Value = Likelihood> {
    prop_oneof![
        Just(Likelihood::Bernoulli),
        (0.1f64..4.0).prop_map(|variance| Likelihood::Gaussian { variance }),
        Just(Likelihood::GaussianLearnedVariance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/gradients.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(1592590342),
        ..ProptestConfig::default()
    })]

    /// Dense layer: dW = x^T G, db = sum_rows G, dx = G W^T.
    #[test]
    fn dense_layer(rows in 1usize..6, n_in in 1usize..7, n_out in 1usize..7, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layout = Layout::new();
        let x = layout.push("x", &[rows, n_in]);
        let dense = Dense::new(&mut layout, "dense", n_in, n_out);
        let theta = uniform(&mut rng, layout.len(), -1.5, 1.5);
        let c = uniform(&mut rng, rows * n_out, -1.0, 1.0);
        let loss = |t: &[f64]| {
            let mut y = vec![0.0; rows * n_out];
            dense.forward(t, x.get(t).unwrap(), &mut y, rows, 1).unwrap();
            y.iter().zip(&c).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut g = vec![0.0; layout.len()];
        let mut dx = vec![0.0; rows * n_in];
        dense.backward(&theta, x.get(&theta).unwrap(), &c, &mut g, Some(&mut dx), rows, 1).unwrap();
        x.get_mut(&mut g).unwrap().copy_from_slice(&dx);
        assert_all_pass(&check(&layout, &theta, &g, loss, H, TOL).unwrap());
    }

    /// Each activation: dL/da = dL/dy f'(a), with f' written through y.
    #[test]
    fn activations(act in activation_strategy(), rows in 1usize..5, cols in 1usize..9, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layout = Layout::new();
        let a = layout.push("a", &[rows, cols]);
        let theta = uniform(&mut rng, layout.len(), -4.0, 4.0);
        let c = uniform(&mut rng, rows * cols, -1.0, 1.0);
        let loss = |t: &[f64]| {
            let mut y = a.get(t).unwrap().to_vec();
            act.forward(&mut y, cols).unwrap();
            y.iter().zip(&c).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut y = theta.clone();
        act.forward(&mut y, cols).unwrap();
        let mut g = c.clone();
        act.backward(&y, &mut g, cols).unwrap();
        assert_all_pass(&check(&layout, &theta, &g, loss, H, TOL).unwrap());
    }

    /// A multi-layer perceptron of random depth, widths and activations. A random share of the
    /// input is zero, so that both the dense and the sparse first-layer paths are checked.
    #[test]
    fn mlp(widths in prop::collection::vec(1usize..6, 2..5), hidden in activation_strategy(),
           last in activation_strategy(), rows in 1usize..5, zeros in 0.0f64..1.0,
           seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layout = Layout::new();
        let x = layout.push("x", &[rows, widths[0]]);
        let mlp = Mlp::new(&mut layout, "mlp", &widths, hidden, last);
        let out_w = *widths.last().unwrap();
        let mut theta = uniform(&mut rng, layout.len(), -1.0, 1.0);
        for v in x.get_mut(&mut theta).unwrap() {
            if rng.random::<f64>() < zeros { *v = 0.0; }
        }
        let xs = x.get(&theta).unwrap();
        let sparse = xs.iter().filter(|v| **v != 0.0).count() as f64 / xs.len() as f64 <= SPARSE_INPUT_DENSITY;
        let c = uniform(&mut rng, rows * out_w, -1.0, 1.0);
        let loss = |t: &[f64]| {
            let mut buf = mlp.buffers::<f64>(rows).unwrap();
            mlp.forward(t, x.get(t).unwrap(), &mut buf, rows, 1).unwrap();
            buf.outputs.last().unwrap().iter().zip(&c).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut buf = mlp.buffers::<f64>(rows).unwrap();
        mlp.forward(&theta, x.get(&theta).unwrap(), &mut buf, rows, 1).unwrap();
        let widest = *widths.iter().max().unwrap();
        let (mut ga, mut gb) = (vec![0.0; rows * widest], vec![0.0; rows * widest]);
        ga[..c.len()].copy_from_slice(&c);
        let mut g = vec![0.0; layout.len()];
        let mut dx = vec![0.0; rows * widths[0]];
        prop_assert_eq!(buf.input_was_sparse(), sparse);
        mlp.backward(&theta, x.get(&theta).unwrap(), &mut buf, &mut ga, &mut gb, &mut g, Some(&mut dx), rows, 1).unwrap();
        x.get_mut(&mut g).unwrap().copy_from_slice(&dx);
        assert_all_pass(&check(&layout, &theta, &g, loss, H, TOL).unwrap());
    }

    /// Reparameterisation: dz/dmu = 1, dz/dlogvar = eps exp(logvar/2) / 2, summed over samples.
    #[test]
    fn reparameterisation(rows in 1usize..5, latent in 1usize..5, samples in 1usize..4, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layout = Layout::new();
        let stats = layout.push("stats", &[rows, 2 * latent]);
        let rp = Reparameterize { latent, samples };
        let theta = uniform(&mut rng, layout.len(), -2.0, 2.0);
        let eps = uniform(&mut rng, rows * samples * latent, -2.0, 2.0);
        let c = uniform(&mut rng, rows * samples * latent, -1.0, 1.0);
        let loss = |t: &[f64]| {
            let mut z = vec![0.0; rows * samples * latent];
            rp.forward(stats.get(t).unwrap(), &eps, &mut z, rows).unwrap();
            z.iter().zip(&c).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut g = vec![0.0; layout.len()];
        rp.backward(stats.get(&theta).unwrap(), &eps, &c, &mut g, rows).unwrap();
        assert_all_pass(&check(&layout, &theta, &g, loss, H, TOL).unwrap());
    }

    /// KL to N(0, I): dKL/dmu = mu, dKL/dlogvar = (exp(logvar) - 1) / 2.
    #[test]
    fn kl_divergence(rows in 1usize..5, latent in 1usize..6, scale in 0.1f64..3.0, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layout = Layout::new();
        let stats = layout.push("stats", &[rows, 2 * latent]);
        let kl = KlToStandardNormal { latent };
        let theta = uniform(&mut rng, layout.len(), -3.0, 3.0);
        let loss = |t: &[f64]| {
            let mut k = vec![0.0; rows];
            kl.forward(stats.get(t).unwrap(), &mut k, rows).unwrap();
            scale * k.iter().sum::<f64>()
        };
        let mut g = vec![0.0; layout.len()];
        kl.backward(stats.get(&theta).unwrap(), scale, &mut g, rows).unwrap();
        assert_all_pass(&check(&layout, &theta, &g, loss, H, TOL).unwrap());
    }

    /// Each likelihood: the gradient of -scale * sum_r c_r log p_r (random row weights c_r) with
    /// respect to the decoder output
    /// and (learned variance) the log-variance.
    #[test]
    fn likelihoods(kind in likelihood_strategy(), rows in 1usize..4, samples in 1usize..3,
                   dim in 1usize..7, scale in 0.1f64..2.0, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layout = Layout::new();
        let a = layout.push("a", &[rows * samples, dim]);
        let log_variance = (kind == Likelihood::GaussianLearnedVariance)
            .then(|| layout.push("likelihood.log_variance", &[dim]));
        let head = LikelihoodHead { choice: elbo::model::LikelihoodChoice::Builtin(kind), params: log_variance, dim };
        let theta = uniform(&mut rng, layout.len(), -3.0, 3.0);
        let x = uniform(&mut rng, rows * dim, 0.0, 1.0);
        let dec = rows * samples;
        let w = uniform(&mut rng, dec, 0.0, 1.0);
        let loss = |t: &[f64]| {
            let mut lp = vec![0.0; dec];
            let mut cache = vec![0.0; dec * dim];
            head.forward(t, &x, a.get(t).unwrap(), samples, &mut lp, &mut cache, dec).unwrap();
            -scale * lp.iter().zip(&w).map(|(l, w)| l * w).sum::<f64>()
        };
        let mut g = vec![0.0; layout.len()];
        let mut da = vec![0.0; dec * dim];
        let (mut lp, mut cache) = (vec![0.0; dec], vec![0.0; dec * dim]);
        head.forward(&theta, &x, a.get(&theta).unwrap(), samples, &mut lp, &mut cache, dec).unwrap();
        head.backward(&theta, &x, a.get(&theta).unwrap(), &cache, samples, scale, Some(&w), &mut da, &mut g, dec).unwrap();
        a.get_mut(&mut g).unwrap().copy_from_slice(&da);
        assert_all_pass(&check(&layout, &theta, &g, loss, H, TOL).unwrap());
    }

    /// The whole -ELBO (batch mean, beta-weighted KL) with eps held fixed, for random
    /// architectures, likelihoods, sample counts and values: every parameter tensor.
    #[test]
    fn whole_negative_elbo(
        input in 1usize..7, enc in prop::collection::vec(1usize..6, 0..3), latent in 1usize..4,
        dec in prop::collection::vec(1usize..6, 0..3), act in activation_strategy(),
        lik in likelihood_strategy(), rows in 1usize..5, samples in 1usize..3,
        beta in 0.0f64..3.0, clamp in prop::option::of(0.05f64..1.0), zeros in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        // With a clamp of 0.05 to 1, many log-variances sit beyond it, so both sides of the
        // clamp's derivative are checked.
        let vae = Vae::new(VaeConfig::mnist().input_dim(input).encoder_hidden(enc).latent_dim(latent).decoder_hidden(dec).activation(act).likelihood(lik).logvar_clamp(clamp)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params: Vec<f64> = vae.init_params(seed);
        if let Some(t) = vae.layout().get("likelihood.log_variance") {
            for v in &mut params[t.range()] { *v = rng.random_range(-1.0..1.0); }
        }
        let mut ws = Workspace::<f64>::new(&vae, rows, samples, 1).unwrap();
        // A random share of zeros: sparse inputs take the sparse first-layer path.
        for v in &mut ws.x[..rows * input] {
            *v = if rng.random::<f64>() < zeros { 0.0 } else { rng.random_range(0.0..1.0) };
        }
        for v in &mut ws.eps { *v = rng.random_range(-2.0..2.0); }
        let elbo = Elbo::new(&vae);
        let mut grads = vec![0.0; vae.num_params()];
        elbo.forward(&params, &mut ws, rows).unwrap();
        elbo.backward(&params, &mut ws, rows, beta, &mut grads).unwrap();
        let mut ws2 = ws.clone();
        let loss = |t: &[f64]| elbo.forward(t, &mut ws2, rows).unwrap().loss(beta);
        assert_all_pass(&check(vae.layout(), &params, &grads, loss, H, TOL).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/gradients_iwae.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(1592590343),
        ..ProptestConfig::default()
    })]

    /// The importance-weighted bound -(1/B) sum_b log (1/k) sum_i w_bi, eps fixed: the
    /// self-normalised-weight gradient for every parameter tensor.
    #[test]
    fn whole_negative_iw_bound(
        input in 1usize..7, enc in prop::collection::vec(1usize..6, 0..3), latent in 1usize..4,
        dec in prop::collection::vec(1usize..6, 0..3), act in activation_strategy(),
        lik in likelihood_strategy(), rows in 1usize..4, k in 1usize..6, seed in any::<u64>(),
    ) {
        let vae = Vae::new(VaeConfig::mnist().input_dim(input).encoder_hidden(enc).latent_dim(latent).decoder_hidden(dec).activation(act).likelihood(lik).logvar_clamp(None)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params: Vec<f64> = vae.init_params(seed);
        if let Some(t) = vae.layout().get("likelihood.log_variance") {
            for v in &mut params[t.range()] { *v = rng.random_range(-1.0..1.0); }
        }
        let mut ws = Workspace::<f64>::new(&vae, rows, k, 1).unwrap();
        for v in &mut ws.x[..rows * input] { *v = rng.random_range(0.0..1.0); }
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

/// The check itself must catch a wrong gradient: a KL gradient missing its factor 1/2 fails.
#[test]
fn gradcheck_detects_a_wrong_derivative() {
    let mut layout = Layout::new();
    let stats = layout.push("stats", &[1, 2]);
    let kl = KlToStandardNormal { latent: 1 };
    let theta = vec![0.3, 0.7];
    let loss = |t: &[f64]| {
        let mut k = vec![0.0];
        kl.forward(stats.get(t).unwrap(), &mut k, 1).unwrap();
        k[0]
    };
    let mut g = vec![0.0; 2];
    kl.backward(&theta, 1.0, &mut g, 1).unwrap();
    assert!(
        check(&layout, &theta, &g, loss, H, TOL)
            .unwrap()
            .iter()
            .all(|c| c.passed)
    );
    g[1] *= 2.0;
    let checks = check(&layout, &theta, &g, loss, H, TOL).unwrap();
    assert!(
        !checks[0].passed,
        "a doubled derivative must fail:\n{}",
        format_table(&checks)
    );
}
