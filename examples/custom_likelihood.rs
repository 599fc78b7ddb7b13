//! A likelihood of your own: the logistic distribution with a learned scale per dimension,
//! plugged into a VAE through elbo's public API only, its gradients checked against finite
//! differences, then trained, and used to encode, decode and sample.
//!
//! cargo run --release --example custom_likelihood

use std::sync::Arc;

use elbo::gradcheck::{Tolerance, check_likelihood};
use elbo::{
    Dataset, DecoderLikelihood, FitOptions, Float, LikelihoodInfo, Parallelism, TrainConfig,
    Trainer, Vae, VaeConfig,
};

/// p(x|a) = logistic(x; mean a, scale s = e^r) per dimension, with r learned:
/// with u = (x - a) / s, log p = -u - 2 softplus(-u) - r.
#[derive(Debug)]
struct Logistic;

impl LikelihoodInfo for Logistic {
    fn name(&self) -> String {
        "logistic".into()
    }
    fn num_params(&self, dim: usize) -> usize {
        dim // one log-scale r_j per dimension
    }
    fn param_name(&self) -> &str {
        "likelihood.log_scale"
    }
}

fn softplus<T: Float>(v: T) -> T {
    v.max(T::zero()) + (-v.abs()).exp().ln_1p()
}

impl<T: Float> DecoderLikelihood<T> for Logistic {
    fn log_prob(&self, r: &[T], x: &[T], a: &[T], _cache: &mut [T]) -> T {
        let mut lp = T::zero();
        for j in 0..x.len() {
            let u = (x[j] - a[j]) * (-r[j]).exp();
            lp += -u - T::of(2.0) * softplus(-u) - r[j];
        }
        lp
    }

    /// -log p = u + 2 softplus(-u) + r, so d(-log p)/du = 1 - 2 sigmoid(-u) = tanh(u / 2),
    /// and du/da = -1/s: d(-log p)/da = -tanh(u/2) / s.
    fn grad_output(&self, r: &[T], x: &[T], a: &[T], _c: &[T], scale: T, da: &mut [T]) {
        for j in 0..x.len() {
            let inv_s = (-r[j]).exp();
            let u = (x[j] - a[j]) * inv_s;
            da[j] = -scale * (u * T::of(0.5)).tanh() * inv_s;
        }
    }

    /// du/dr = -u: d(-log p)/dr = 1 - u tanh(u/2).
    fn grad_params(&self, r: &[T], x: &[T], a: &[T], _c: &[T], scale: T, dr: &mut [T]) {
        for j in 0..x.len() {
            let u = (x[j] - a[j]) * (-r[j]).exp();
            dr[j] += scale * (T::one() - u * (u * T::of(0.5)).tanh());
        }
    }

    fn mean(&self, _r: &[T], a: &[T], out: &mut [T]) {
        out.copy_from_slice(a);
    }
}

fn main() -> elbo::Result<()> {
    // 1. The hand-written gradients against central differences, in f64.
    let (x, a, r) = ([0.3, -1.2, 2.0], [0.1, 0.4, 2.5], [0.2, -0.5, 0.0]);
    for c in check_likelihood(&Logistic, &r, &x, &a, 1e-5, Tolerance::DEFAULT)? {
        println!(
            "gradient check {:<7} max rel err {:.1e}  {}",
            c.name,
            c.max_rel_err,
            if c.passed { "ok" } else { "FAILED" }
        );
        assert!(c.passed);
    }

    // 2. Data: two noisy clusters in 3 dimensions.
    let n = 600;
    let values: Vec<f32> = (0..n * 3)
        .map(|i| {
            let (row, col) = (i / 3, i % 3);
            let centre = if row % 2 == 0 { 1.0 } else { -1.0 } * (col as f32 + 1.0);
            centre + 0.3 * (((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        })
        .collect();
    let data = Dataset::from_f32(n, 3, values)?;
    let (train, test) = data.split_at(500);

    // 3. A VAE with it, trained.
    let config = VaeConfig::mnist()
        .input_dim(3)
        .encoder_hidden(vec![16])
        .latent_dim(1)
        .decoder_hidden(vec![16]);
    let vae = Vae::with_likelihood(config, Arc::new(Logistic))?;
    let train_config = TrainConfig::default().epochs(30).batch_size(50);
    let mut trainer = Trainer::<f32>::new(vae, train_config, &Parallelism::threads(2)?)?;
    let reports = trainer.fit(&train, FitOptions::new().test(&test))?;
    let (first, last) = (
        reports[0].test.unwrap(),
        reports.last().unwrap().test.unwrap(),
    );
    println!(
        "test -ELBO: epoch 1 {:.3}, epoch 30 {:.3}",
        first.neg_elbo, last.neg_elbo
    );

    // 4. The trained model.
    let model = trainer.into_model()?;
    let q = model.encode(&[1.0f32, 2.0, 3.0, -1.0, -2.0, -3.0][..])?;
    println!(
        "latent means of the two cluster centres: {:?}",
        q.means.column(0).to_vec()
    );
    let back = model.decode(q.means.view())?;
    println!(
        "decoded: {:?}",
        back.rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect::<Vec<_>>()
    );
    let drawn = model.sample(4, 0)?;
    println!(
        "4 draws from the model: {:?}",
        drawn.means.column(0).to_vec()
    );
    Ok(())
}
