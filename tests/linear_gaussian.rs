//! The exact test-bed: on the linear-Gaussian model every identity of the ELBO is checked to
//! Monte-Carlo precision, with the library's own forward passes against closed forms.

use elbo::objective::{Iwae, Workspace, estimate_log_marginal};
use elbo::testbed::linear_gaussian::{
    LinearGaussian, ppca_max_log_likelihood, symmetric_eigenvalues,
};
use elbo::{Dataset, TrainConfig, Trainer, Vae, VaeConfig};

/// Draws `n` samples of q for point `x` through the library: returns (log p(x|z), log w, z).
fn draws(
    vae: &Vae,
    params: &[f64],
    x: &[f64],
    n: usize,
    seed: u64,
) -> (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
    let mut ws = Workspace::<f64>::new(vae, 1, n, 1).unwrap();
    ws.x.copy_from_slice(x);
    elbo::rng::fill_normal(
        &mut elbo::rng::stream(seed, elbo::rng::Purpose::Eval, 0),
        &mut ws.eps,
    );
    Iwae::new(vae).forward(params, &mut ws, 1).unwrap();
    let zd = vae.latent_dim();
    (
        ws.log_px_z.clone(),
        ws.log_w.clone(),
        ws.z.chunks(zd).map(|c| c.to_vec()).collect(),
    )
}

/// Sets the encoder so that q(z|x) = N(mu, diag(exp(logvar))) whatever x (zero weights).
fn fixed_q(vae: &Vae, params: &mut [f64], mu: &[f64], logvar: &[f64]) {
    params[vae.head.weight.range()].fill(0.0);
    let bias = &mut params[vae.head.bias.range()];
    bias[..mu.len()].copy_from_slice(mu);
    bias[mu.len()..].copy_from_slice(logvar);
}

fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

fn setup() -> (LinearGaussian, Vec<f64>, Vae, Vec<f64>) {
    let model = LinearGaussian::random(5, 2, 0.3, 11, false).unwrap();
    let x = model.sample(1, 3);
    let (vae, params) = model.to_vae().unwrap();
    (model, x, vae, params)
}

/// (a) Jensen: the ELBO of any q is below log p(x); the library's Monte-Carlo ELBO agrees with
/// the closed form to within 4 standard errors.
#[test]
fn a_elbo_is_below_log_px() {
    let (model, x, vae, mut params) = setup();
    let lpx = model.log_marginal(&x);
    for (mu, lv) in [
        (vec![0.3, -0.2], vec![-0.5, -1.0]),
        (vec![1.0, 1.0], vec![0.0, 0.0]),
        (vec![-2.0, 0.5], vec![-3.0, 1.0]),
    ] {
        let (recon, kl) = model.elbo_terms(&x, &mu, &lv);
        assert!(
            recon - kl < lpx,
            "closed-form ELBO {} vs log p(x) {lpx}",
            recon - kl
        );
        fixed_q(&vae, &mut params, &mu, &lv);
        let (lpxz, _, _) = draws(&vae, &params, &x, 20_000, 1);
        let (m, se) = mean_se(&lpxz);
        assert!(
            (m - recon).abs() < 4.0 * se,
            "MC recon {m} +- {se} vs closed form {recon}"
        );
    }
}

/// (b) log p(x) - ELBO = KL(q || p(z|x)): exactly in closed form, and E_q[log p(x) - log w]
/// from the library's log weights agrees to Monte-Carlo precision.
#[test]
fn b_gap_is_kl_to_the_posterior() {
    let (model, x, vae, mut params) = setup();
    let lpx = model.log_marginal(&x);
    let (mu, lv) = (vec![0.3, -0.2], vec![-0.5, -1.0]);
    let (recon, kl) = model.elbo_terms(&x, &mu, &lv);
    let gap = model.kl_to_posterior(&x, &mu, &lv);
    assert!(
        (lpx - (recon - kl) - gap).abs() < 1e-10,
        "{} vs {gap}",
        lpx - (recon - kl)
    );
    assert!(gap > 0.0);
    fixed_q(&vae, &mut params, &mu, &lv);
    let (_, log_w, _) = draws(&vae, &params, &x, 20_000, 2);
    let diffs: Vec<f64> = log_w.iter().map(|w| lpx - w).collect();
    let (m, se) = mean_se(&diffs);
    assert!((m - gap).abs() < 4.0 * se, "MC gap {m} +- {se} vs KL {gap}");
}

/// (c) For every z: ln p(x) >= ln p(x, z) - ln q(z) + 1 - p(z|x) / q(z), from ln y <= y - 1;
/// and its expectation under q is the ELBO (the correction term has mean 0).
#[test]
fn c_log_inequality_holds_for_every_z() {
    let (model, x, vae, mut params) = setup();
    let lpx = model.log_marginal(&x);
    let (mu, lv) = (vec![0.3, -0.2], vec![-0.5, -1.0]);
    fixed_q(&vae, &mut params, &mu, &lv);
    let (_, log_w, zs) = draws(&vae, &params, &x, 20_000, 3);
    let mut corrections = Vec::new();
    for (lw, z) in log_w.iter().zip(&zs) {
        let log_q = model.log_joint(&x, z) - lw; // log w = log p(x,z) - log q(z)
        let ratio = (model.log_posterior(&x, z) - log_q).exp();
        let bound = lw + 1.0 - ratio;
        assert!(bound <= lpx + 1e-9, "z = {z:?}: {bound} > {lpx}");
        corrections.push(1.0 - ratio);
    }
    let (m, se) = mean_se(&corrections);
    assert!(
        m.abs() < 4.0 * se,
        "E_q[1 - p(z|x)/q(z)] = {m} +- {se}, expected 0"
    );
}

/// (d) The k-sample bound rises with k towards log p(x) (5000 points, the library's
/// estimator). Per point, d_k = log p^_k(x) - log p(x) is compared with its Monte-Carlo
/// standard error: it must rise from k = 1 to 10 to 100 by more than 3 standard errors of
/// the paired rise, never exceed 0 by more than 3 standard errors, and at k = 1000 close at least 95% of
/// the k = 1 gap.
#[test]
fn d_k_sample_bound_rises_towards_log_px() {
    let model = LinearGaussian::random(5, 2, 0.3, 11, false).unwrap();
    let n = 5000;
    let ds =
        Dataset::from_f32(n, 5, model.sample(n, 5).iter().map(|&v| v as f32).collect()).unwrap();
    let x: Vec<f64> = (0..n * 5)
        .map(|i| ds.value(i / 5, i % 5).unwrap())
        .collect();
    let exact: Vec<f64> = (0..n)
        .map(|i| model.log_marginal(&x[i * 5..(i + 1) * 5]))
        .collect();
    let (vae, mut params) = model.to_vae().unwrap();
    // The exact posterior's means with variances inflated e^1.5 times: a deliberately loose q.
    for v in &mut params[vae.head.bias.range()][2..] {
        *v += 1.5;
    }
    let r = estimate_log_marginal(
        &vae,
        &params,
        &ds,
        &[1, 10, 100, 1000],
        0,
        &elbo::Parallelism::threads(2).unwrap(),
    )
    .unwrap();
    let stats: Vec<(f64, f64)> = (0..4)
        .map(|ki| {
            mean_se(
                &(0..n)
                    .map(|i| r.per_point[i][ki] - exact[i])
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    println!("log p^_k - log p(x), k = 1, 10, 100, 1000: {stats:?}");
    // The estimates share their draws (nested), so each rise is judged on the paired
    // per-point differences.
    for ki in 0..2 {
        let (rise, se) = mean_se(
            &(0..n)
                .map(|i| r.per_point[i][ki + 1] - r.per_point[i][ki])
                .collect::<Vec<_>>(),
        );
        assert!(
            rise > 3.0 * se,
            "k step {ki}: rise {rise} +- {se}; {stats:?}"
        );
    }
    for (m, se) in &stats {
        assert!(*m <= 3.0 * se, "estimate above log p(x): {stats:?}");
    }
    assert!(
        stats[3].0 > 0.05 * stats[0].0,
        "k = 1000 closes too little of the gap: {stats:?}"
    );
    // The k = 1 estimate is an unbiased estimate of the ELBO.
    let elbo_gap = r.elbo - exact.iter().sum::<f64>() / n as f64;
    assert!(
        (stats[0].0 - elbo_gap).abs() < 4.0 * stats[0].1,
        "{stats:?} vs ELBO gap {elbo_gap}"
    );
}

/// (e) With q equal to the true posterior (orthogonal W makes it diagonal), the ELBO equals
/// log p(x) and every importance weight equals p(x): zero variance.
#[test]
fn e_exact_posterior_makes_the_bound_tight() {
    let model = LinearGaussian::random(6, 3, 0.2, 4, true).unwrap();
    let x = model.sample(1, 9);
    let (vae, params) = model.to_vae().unwrap();
    let lpx = model.log_marginal(&x);
    let (m, s) = model.posterior(&x);
    let lv: Vec<f64> = (0..3).map(|j| s[j * 3 + j].ln()).collect();
    assert!(model.kl_to_posterior(&x, &m, &lv).abs() < 1e-10);
    let (recon, kl) = model.elbo_terms(&x, &m, &lv);
    assert!((recon - kl - lpx).abs() < 1e-10);
    let (_, log_w, _) = draws(&vae, &params, &x, 1000, 4);
    for lw in &log_w {
        assert!((lw - lpx).abs() < 1e-9, "log w = {lw}, log p(x) = {lpx}");
    }
}

/// (f) A linear VAE trained by the library's own code on data from a probabilistic-PCA model
/// reaches (to 0.02 nats per point) the maximum likelihood that PCA gives in closed form.
#[test]
fn f_trained_linear_vae_reaches_the_pca_maximum_likelihood() {
    let truth = LinearGaussian::random(6, 2, 0.1, 21, false).unwrap();
    let n = 4000;
    let data = truth.sample(n, 22);
    let ds = Dataset::from_f32(n, 6, data.iter().map(|&v| v as f32).collect()).unwrap();
    let data: Vec<f64> = (0..n * 6)
        .map(|i| ds.value(i / 6, i % 6).unwrap())
        .collect();
    let ml = ppca_max_log_likelihood(&data, n, 6, 2);
    let vae = Vae::new(
        VaeConfig::mnist()
            .input_dim(6)
            .encoder_hidden(vec![])
            .latent_dim(2)
            .decoder_hidden(vec![])
            .activation(elbo::Activation::Identity)
            .likelihood(elbo::Likelihood::GaussianLearnedVariance)
            .logvar_clamp(None),
    )
    .unwrap();
    let config = TrainConfig::default()
        .epochs(60)
        .batch_size(100)
        .optimizer(elbo::OptimizerConfig::adam(1e-2));
    let mut t = Trainer::<f64>::new(vae, config, &elbo::Parallelism::threads(1).unwrap()).unwrap();
    t.fit(&ds, elbo::FitOptions::new()).unwrap();
    let fit = LinearGaussian::from_vae(t.vae(), t.params()).unwrap();
    let ll = (0..n)
        .map(|i| fit.log_marginal(&data[i * 6..(i + 1) * 6]))
        .sum::<f64>()
        / n as f64;
    println!("trained log-likelihood {ll:.5} per point, PPCA maximum {ml:.5}");
    // Per-dimension noise (factor analysis) may exceed the isotropic maximum by a little.
    assert!(
        (ll - ml).abs() < 0.02,
        "trained {ll} vs PCA maximum likelihood {ml}"
    );
}

#[test]
fn eigenvalues_of_a_known_matrix() {
    // [[2, 1], [1, 2]] has eigenvalues 3 and 1; a diagonal matrix its diagonal.
    let ev = symmetric_eigenvalues(&[2.0, 1.0, 1.0, 2.0], 2);
    assert!((ev[0] - 3.0).abs() < 1e-12 && (ev[1] - 1.0).abs() < 1e-12);
    let ev = symmetric_eigenvalues(&[4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0], 3);
    assert_eq!(ev, vec![9.0, 4.0, 1.0]);
    // The trace and the sum of squares are kept on a random symmetric matrix.
    let m = [1.0, 0.5, -0.3, 0.5, 2.0, 0.7, -0.3, 0.7, -1.0];
    let ev = symmetric_eigenvalues(&m, 3);
    assert!((ev.iter().sum::<f64>() - 2.0).abs() < 1e-12);
    let fro: f64 = m.iter().map(|v| v * v).sum();
    assert!((ev.iter().map(|v| v * v).sum::<f64>() - fro).abs() < 1e-10);
}
