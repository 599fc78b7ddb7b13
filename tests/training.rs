//! Training does what it should: on MNIST the test ELBO improves; beta and warm-up act as
//! they claim; every likelihood trains.

mod common;

use elbo::data::{mnist, shapes};
use elbo::train::evaluate;
use elbo::{Likelihood, TrainConfig, Trainer, Vae, VaeConfig};

/// One epoch over 10 000 MNIST images (78 steps of the reference model and optimizer) lifts
/// the test ELBO on 2 000 test images from its initial value (about -545 nats) to about -189
/// (measured); we require better than -210.
#[test]
fn mnist_training_improves_the_test_elbo() {
    let Some(dir) = common::mnist_dir() else {
        return;
    };
    let train = mnist::load(&dir, mnist::Split::Train).unwrap().head(10_000);
    let test = mnist::load(&dir, mnist::Split::Test).unwrap().head(2_000);
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let mut t = Trainer::<f32>::new(
        vae,
        TrainConfig::default().epochs(1),
        &elbo::Parallelism::threads(2).unwrap(),
    )
    .unwrap();
    let before = t.evaluate(&test).unwrap().terms;
    let reports = t.fit(&train, elbo::FitOptions::new().test(&test)).unwrap();
    let after = reports[0].test.unwrap();
    assert!(before.neg_elbo > 400.0, "initial -ELBO {}", before.neg_elbo);
    assert!(
        after.neg_elbo < 210.0,
        "after one epoch: {}",
        after.neg_elbo
    );
    assert!(
        after.kl > 1.0,
        "the posterior must carry information (KL {})",
        after.kl
    );
}

/// The full reference run: 784-400-20-400-784, ReLU, Bernoulli on grey levels, Adam 1e-3,
/// batch 128, one z sample, 10 epochs on 60 000 images. PyTorch reaches 105.26-106.01 nats
/// on the test set; we must land within 1 nat of that band. Takes about half a minute on two
/// cores; run by CI with `--ignored`.
#[test]
#[ignore]
fn mnist_reference_run_matches_pytorch() {
    let Some(dir) = common::mnist_dir() else {
        return;
    };
    let train = mnist::load(&dir, mnist::Split::Train).unwrap();
    let test = mnist::load(&dir, mnist::Split::Test).unwrap();
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let mut t = Trainer::<f32>::new(
        vae,
        TrainConfig::default(),
        &elbo::Parallelism::threads(2).unwrap(),
    )
    .unwrap();
    let reports = t.fit(&train, elbo::FitOptions::new().test(&test)).unwrap();
    for r in &reports {
        let e = r.test.unwrap();
        println!(
            "epoch {:>2}: train {:.2}  test {:.2} (recon {:.2}, KL {:.2})",
            r.epoch, r.train.neg_elbo, e.neg_elbo, -e.recon, e.kl
        );
    }
    let first = reports[0].train.neg_elbo;
    assert!(
        (160.0..170.0).contains(&first),
        "epoch-1 train loss {first} (PyTorch: 163.7-165.2)"
    );
    let last = reports.last().unwrap().test.unwrap().neg_elbo;
    assert!(
        (104.26..107.01).contains(&last),
        "test -ELBO after 10 epochs: {last}"
    );
}

fn shapes_run(cfg: VaeConfig, tc: TrainConfig) -> Vec<elbo::EpochReport> {
    let train = shapes::generate(1, 0, 2000).unwrap();
    let test = shapes::generate(1, 2000, 400).unwrap();
    let mut t = Trainer::<f32>::new(
        Vae::new(cfg).unwrap(),
        tc,
        &elbo::Parallelism::threads(2).unwrap(),
    )
    .unwrap();
    t.fit(&train, elbo::FitOptions::new().test(&test)).unwrap()
}

fn shapes_model(likelihood: Likelihood) -> VaeConfig {
    VaeConfig::mnist()
        .input_dim(784)
        .encoder_hidden(vec![128])
        .latent_dim(6)
        .decoder_hidden(vec![128])
        .likelihood(likelihood)
}

#[test]
fn every_likelihood_trains_on_shapes() {
    for lik in [
        Likelihood::Bernoulli,
        Likelihood::Gaussian { variance: 0.1 },
        Likelihood::GaussianLearnedVariance,
    ] {
        let r = shapes_run(
            shapes_model(lik),
            TrainConfig::default().epochs(4).batch_size(64),
        );
        let (first, last) = (
            r[0].test.unwrap().neg_elbo,
            r.last().unwrap().test.unwrap().neg_elbo,
        );
        assert!(last < first - 1.0, "{lik}: test -ELBO {first} -> {last}");
    }
}

/// A larger beta buys a smaller KL; warm-up raises the weight linearly.
#[test]
fn beta_and_warm_up_act_on_the_kl() {
    let tc = |beta| TrainConfig::default().epochs(3).batch_size(64).beta(beta);
    let low = shapes_run(shapes_model(Likelihood::Bernoulli), tc(0.5));
    let high = shapes_run(shapes_model(Likelihood::Bernoulli), tc(4.0));
    let (kl_low, kl_high) = (low[2].test.unwrap().kl, high[2].test.unwrap().kl);
    assert!(
        kl_high < 0.7 * kl_low,
        "KL with beta 4: {kl_high}, with beta 0.5: {kl_low}"
    );

    let warm = TrainConfig::default()
        .epochs(3)
        .batch_size(100)
        .beta(2.0)
        .warmup_epochs(2.0);
    let r = shapes_run(shapes_model(Likelihood::Bernoulli), warm.clone());
    let betas: Vec<f64> = r.iter().map(|e| e.beta).collect();
    assert_eq!(betas, vec![1.0, 2.0, 2.0]);
    let t = Trainer::<f32>::new(
        Vae::new(shapes_model(Likelihood::Bernoulli)).unwrap(),
        warm,
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    assert_eq!(t.beta_at(5, 20), 0.25);
}

/// More z samples per point give the same expected ELBO with less noise, and train.
#[test]
fn several_samples_per_point() {
    let r = shapes_run(
        shapes_model(Likelihood::Bernoulli),
        TrainConfig::default().epochs(2).batch_size(64).samples(4),
    );
    assert!(r[1].test.unwrap().neg_elbo < r[0].test.unwrap().neg_elbo);
}

/// f32 and f64 compute the same thing: evaluating one set of parameters gives the same ELBO to
/// f32 precision.
#[test]
fn f32_and_f64_agree() {
    let vae = Vae::new(shapes_model(Likelihood::Bernoulli)).unwrap();
    let data = shapes::generate(2, 0, 500).unwrap();
    let p64: Vec<f64> = vae.init_params(9);
    let p32: Vec<f32> = p64.iter().map(|&v| v as f32).collect();
    let a = evaluate(
        &vae,
        &p64,
        &data,
        100,
        1,
        3,
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap()
    .terms;
    let b = evaluate(
        &vae,
        &p32,
        &data,
        100,
        1,
        3,
        &elbo::Parallelism::threads(2).unwrap(),
    )
    .unwrap()
    .terms;
    assert!(
        (a.neg_elbo - b.neg_elbo).abs() < 1e-4 * a.neg_elbo,
        "{a:?} vs {b:?}"
    );
}

/// Training the importance-weighted bound works end to end, reports the bound, and refuses
/// settings that do not apply to it.
#[test]
fn importance_weighted_training() {
    let r = shapes_run(
        shapes_model(Likelihood::Bernoulli),
        TrainConfig::default()
            .epochs(2)
            .batch_size(64)
            .iw_samples(Some(4)),
    );
    let (b1, b2) = (r[0].train.iw_bound.unwrap(), r[1].train.iw_bound.unwrap());
    assert!(b2 > b1, "IW bound {b1} -> {b2}");
    // The k-sample bound is at least the ELBO on the same draws.
    assert!(b2 >= -r[1].train.neg_elbo);
    let vae = Vae::new(shapes_model(Likelihood::Bernoulli)).unwrap();
    for bad in [
        TrainConfig::default().iw_samples(Some(0)),
        TrainConfig::default().iw_samples(Some(3)).beta(2.0),
        TrainConfig::default().iw_samples(Some(3)).samples(2),
    ] {
        assert!(matches!(
            Trainer::<f32>::new(vae.clone(), bad, &elbo::Parallelism::threads(1).unwrap()),
            Err(elbo::Error::InvalidConfig { .. })
        ));
    }
}

/// Posterior-collapse diagnostics: with a strong KL weight most latent dimensions collapse
/// (no variance in their means, near-zero KL), and the counts say so.
#[test]
fn active_units_see_posterior_collapse() {
    let wide = shapes_model(Likelihood::Bernoulli).latent_dim(12);
    let normal = shapes_run(
        wide.clone(),
        TrainConfig::default().epochs(3).batch_size(64),
    );
    let collapsed = shapes_run(
        wide,
        TrainConfig::default().epochs(3).batch_size(64).beta(20.0),
    );
    let (a, b) = (
        normal[2].test_latent.clone().unwrap(),
        collapsed[2].test_latent.clone().unwrap(),
    );
    assert_eq!(a.kl_per_dim.len(), 12);
    assert!(
        b.active_units < a.active_units,
        "beta 1: {} active, beta 20: {}",
        a.active_units,
        b.active_units
    );
    let total: f64 = a.kl_per_dim.iter().sum();
    assert!(
        (total - normal[2].test.unwrap().kl).abs() < 1e-6 * total.max(1.0),
        "per-dimension KLs must add up to the KL"
    );
    for (kl, var) in b.kl_per_dim.iter().zip(&b.mean_variance) {
        if *var <= elbo::train::ACTIVE_UNIT_THRESHOLD {
            assert!(*kl < 0.1, "an inactive unit with KL {kl}");
        }
    }
}
