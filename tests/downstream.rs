//! A downstream crate's view: everything here uses only elbo's public API, as a dependent
//! would. It plugs in a likelihood of its own, trains, encodes, decodes, samples, evaluates,
//! saves and loads.

use std::sync::Arc;

use elbo::gradcheck::{Tolerance, check_likelihood};
use elbo::{
    Dataset, DecoderLikelihood, Error, FitOptions, Float, LikelihoodInfo, Parallelism, TrainConfig,
    TrainedVae, Trainer, Vae, VaeConfig,
};

/// Laplace-like but smooth: p(x|a) ∝ exp(-sqrt(1 + (x - a)^2)) per dimension, normalised by a
/// constant, with an optional deliberate error in its gradient (a mutant).
#[derive(Debug)]
struct SmoothAbs {
    grad_error: f64,
}

/// ln of the normaliser: the integral of exp(-sqrt(1 + t^2)) over the line is 2 K_1(1).
const LN_Z: f64 = -0.16561597698087658; // ln(2 * 0.6019072301972346)

impl LikelihoodInfo for SmoothAbs {
    fn name(&self) -> String {
        "smooth-abs".into()
    }
}

impl<T: Float> DecoderLikelihood<T> for SmoothAbs {
    fn log_prob(&self, _p: &[T], x: &[T], a: &[T], cache: &mut [T]) -> T {
        let mut lp = T::zero();
        for j in 0..x.len() {
            let e = x[j] - a[j];
            cache[j] = (T::one() + e * e).sqrt();
            lp -= cache[j] + T::of(LN_Z);
        }
        lp
    }
    /// d(-log p)/da = -(x - a) / sqrt(1 + (x - a)^2)
    fn grad_output(&self, _p: &[T], x: &[T], a: &[T], cache: &[T], scale: T, da: &mut [T]) {
        for j in 0..x.len() {
            da[j] = -scale * (x[j] - a[j]) / cache[j] * T::of(1.0 + self.grad_error);
        }
    }
    fn mean(&self, _p: &[T], a: &[T], out: &mut [T]) {
        out.copy_from_slice(a);
    }
}

fn clusters(n: usize) -> Dataset {
    let values: Vec<f32> = (0..n * 4)
        .map(|i| {
            let sign = if (i / 4) % 2 == 0 { 1.0 } else { -1.0 };
            sign * 2.0 + 0.2 * (((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        })
        .collect();
    Dataset::from_f32(n, 4, values).unwrap()
}

fn config() -> VaeConfig {
    VaeConfig::mnist()
        .input_dim(4)
        .encoder_hidden(vec![16])
        .latent_dim(1)
        .decoder_hidden(vec![16])
}

#[test]
fn gradcheck_passes_for_the_likelihood_and_catches_a_one_percent_mutant() {
    let (x, a) = ([0.3, -1.2, 2.0, 0.0], [0.1, 0.4, 2.5, -3.0]);
    let good = check_likelihood(
        &SmoothAbs { grad_error: 0.0 },
        &[],
        &x,
        &a,
        1e-5,
        Tolerance::DEFAULT,
    )
    .unwrap();
    assert!(good.iter().all(|c| c.passed), "{good:?}");
    let bad = check_likelihood(
        &SmoothAbs { grad_error: 0.01 },
        &[],
        &x,
        &a,
        1e-5,
        Tolerance::DEFAULT,
    )
    .unwrap();
    assert!(
        !bad[0].passed,
        "a 1% error in the gradient must fail: {bad:?}"
    );
}

#[test]
fn a_custom_likelihood_trains_encodes_decodes_samples_and_round_trips() {
    let data = clusters(400);
    let (train, test) = data.split_at(320);
    let lik = Arc::new(SmoothAbs { grad_error: 0.0 });
    let vae = Vae::with_likelihood(config(), lik.clone()).unwrap();
    let tc = TrainConfig::default().epochs(100).batch_size(20).seed(3);
    let mut trainer = Trainer::<f32>::new(vae, tc, &Parallelism::threads(2).unwrap()).unwrap();
    let reports = trainer.fit(&train, FitOptions::new().test(&test)).unwrap();
    let (first, last) = (
        reports[0].test.unwrap().neg_elbo,
        reports.last().unwrap().test.unwrap().neg_elbo,
    );
    assert!(
        last < first - 1.0,
        "training must lower the test -ELBO: {first} -> {last}"
    );
    let model = trainer.into_model().unwrap();

    // The two clusters land on opposite sides of the 1-D latent.
    let q = model
        .encode(&[2.0f32, 2.0, 2.0, 2.0, -2.0, -2.0, -2.0, -2.0][..])
        .unwrap();
    let (m0, m1) = (q.means[[0, 0]], q.means[[1, 0]]);
    assert!(
        m0 * m1 < 0.0 && (m0 - m1).abs() > 1.0,
        "means {m0} and {m1}"
    );
    assert!(q.variances.iter().all(|&v| v > 0.0));
    // Reconstructions come back near the inputs.
    let back = model.decode(q.means.view()).unwrap();
    for (row, target) in back.rows().into_iter().zip([2.0f32, -2.0]) {
        assert!(
            row.iter().all(|v| (v - target).abs() < 0.5),
            "{row} vs {target}"
        );
    }
    assert_eq!(model.sample(5, 1).unwrap().means.dim(), (5, 4));
    // The bounds are ordered: log p(x) >= ELBO (k = 500 against a 1-sample ELBO on average).
    let x = test.to_array::<f32>();
    let lp = model.log_px(&x, 500, 0).unwrap();
    let elbo: f64 = model
        .elbo(&x, 50, 0)
        .unwrap()
        .iter()
        .map(|t| t.elbo())
        .sum::<f64>();
    assert!(lp.sum() >= elbo, "{} < {elbo}", lp.sum());

    // Saved and loaded with the same likelihood, the model encodes the same.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    model.save(&path).unwrap();
    let par = Parallelism::threads(1).unwrap();
    let again = TrainedVae::<f32>::load_with_likelihood(&path, lik, &par).unwrap();
    assert_eq!(again.encode(&x).unwrap(), model.encode(&x).unwrap());
    // Without it, loading says what is missing.
    match TrainedVae::<f32>::load(&path, &par) {
        Err(Error::Malformed { reason, .. }) => assert!(reason.contains("smooth-abs"), "{reason}"),
        other => panic!("expected a clear refusal, got {other:?}"),
    }
}

#[test]
fn the_built_in_path_needs_only_the_training_data() {
    let data = clusters(64);
    let model: TrainedVae<f64> = elbo::fit(
        config().likelihood(elbo::Likelihood::Gaussian { variance: 0.1 }),
        TrainConfig::default().epochs(2).batch_size(16),
        &data,
    )
    .unwrap();
    assert_eq!(
        model.reconstruct(&data.to_array::<f64>()).unwrap().dim(),
        (64, 4)
    );
}
