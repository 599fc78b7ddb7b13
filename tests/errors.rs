//! Bad input gets a typed error, never a panic.

use elbo::data::shapes;
use elbo::objective::Elbo;
use elbo::train::checkpoint;
use elbo::{Dataset, Error, Likelihood, OptimizerConfig, TrainConfig, Trainer, Vae, VaeConfig};

fn small() -> VaeConfig {
    VaeConfig::mnist()
        .input_dim(784)
        .encoder_hidden(vec![16])
        .latent_dim(3)
        .decoder_hidden(vec![16])
}

fn config_error(r: elbo::Result<impl std::fmt::Debug>, name: &str) {
    match r {
        Err(Error::InvalidConfig { name: n, .. }) => assert_eq!(n, name),
        other => panic!("expected an invalid-setting error for {name}, got {other:?}"),
    }
}

#[test]
fn impossible_sizes_and_rates_are_refused() {
    config_error(Vae::new(small().latent_dim(0)), "latent size");
    config_error(Vae::new(small().input_dim(0)), "input width");
    config_error(Vae::new(small().encoder_hidden(vec![0])), "hidden widths");
    config_error(
        Vae::new(small().likelihood(Likelihood::Gaussian { variance: -1.0 })),
        "gaussian variance",
    );
    let vae = Vae::new(small()).unwrap();
    let t = |c: TrainConfig| {
        Trainer::<f32>::new(vae.clone(), c, &elbo::Parallelism::threads(1).unwrap()).map(|_| ())
    };
    config_error(t(TrainConfig::default().batch_size(0)), "batch size");
    config_error(t(TrainConfig::default().samples(0)), "samples");
    config_error(t(TrainConfig::default().epochs(0)), "epochs");
    config_error(
        t(TrainConfig::default().optimizer(OptimizerConfig::adam(-1e-3))),
        "learning rate",
    );
    config_error(
        t(TrainConfig::default().optimizer(OptimizerConfig::sgd(0.1, 1.5))),
        "momentum",
    );
    config_error(t(TrainConfig::default().beta(f64::NAN)), "beta");
    config_error(t(TrainConfig::default().beta(-1.0)), "beta");
    config_error(
        t(TrainConfig::default().warmup_epochs(-2.0)),
        "warm-up epochs",
    );
    config_error(
        t(TrainConfig::default().clip_norm(Some(0.0))),
        "gradient clip norm",
    );
    config_error(elbo::Parallelism::threads(0).map(|_| ()), "threads");
    config_error("swish".parse::<elbo::Activation>(), "activation");
    config_error("gamma".parse::<Likelihood>(), "likelihood");
}

#[test]
fn data_of_the_wrong_width_is_refused() {
    let vae = Vae::new(small().input_dim(10)).unwrap();
    let mut t = Trainer::<f32>::new(
        vae,
        TrainConfig::default().batch_size(8),
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    let data = shapes::generate(0, 0, 32).unwrap();
    let before = t.params().to_vec();
    let err = t.fit(&data, elbo::FitOptions::new()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("784"), "{err}");
    assert_eq!(
        t.params(),
        &before[..],
        "nothing may change on refused input"
    );
}

#[test]
fn nan_infinite_and_out_of_range_values_are_refused() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = Dataset::from_f32(2, 2, vec![0.0, 0.5, bad, 1.0]).unwrap_err();
        assert!(
            matches!(err, Error::InvalidData(_)) && err.to_string().contains("row 1, column 0"),
            "{err}"
        );
    }
    // 1.5 is fine for a Gaussian, not for a Bernoulli.
    let data = Dataset::from_f32(4, 2, vec![0.0, 0.5, 1.5, 1.0, 0.1, 0.2, 0.3, 0.4]).unwrap();
    let cfg = VaeConfig::mnist()
        .input_dim(2)
        .encoder_hidden(vec![4])
        .latent_dim(1)
        .decoder_hidden(vec![4]);
    let tc = TrainConfig::default().batch_size(2).epochs(1);
    let mut t = Trainer::<f64>::new(
        Vae::new(cfg.clone()).unwrap(),
        tc.clone(),
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    let err = t.fit(&data, elbo::FitOptions::new()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidData(_)) && err.to_string().contains("[0, 1]"),
        "{err}"
    );
    let gauss = cfg
        .clone()
        .likelihood(Likelihood::Gaussian { variance: 1.0 });
    let mut t = Trainer::<f64>::new(
        Vae::new(gauss).unwrap(),
        tc,
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    t.fit(&data, elbo::FitOptions::new()).unwrap();
}

#[test]
fn caller_batches_are_checked() {
    let vae = Vae::new(small().input_dim(3)).unwrap();
    let params: Vec<f64> = vae.init_params(0);
    let elbo = Elbo::new(&vae);
    assert!(matches!(
        elbo.per_point(&params, &[0.5; 4], 1, 0, 1),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        elbo.per_point(&params, &[], 1, 0, 1),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        elbo.per_point(&params, &[0.5, f64::NAN, 0.1], 1, 0, 1),
        Err(Error::InvalidData(_))
    ));
    assert!(matches!(
        elbo.per_point(&params[1..], &[0.5; 3], 1, 0, 1),
        Err(Error::Shape { .. })
    ));
    config_error(
        elbo.per_point(&params, &[0.5; 3], 0, 0, 1),
        "samples per data point",
    );
    let ok = elbo.per_point(&params, &[0.5; 6], 2, 0, 1).unwrap();
    assert_eq!(ok.len(), 2);
}

#[test]
fn a_batch_larger_than_the_data_is_refused() {
    let vae = Vae::new(small()).unwrap();
    let mut t = Trainer::<f32>::new(
        vae,
        TrainConfig::default().batch_size(64),
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    let data = shapes::generate(0, 0, 10).unwrap();
    config_error(t.fit(&data, elbo::FitOptions::new()), "batch size");
}

/// A learning rate far too high makes the loss overflow: the run stops with an error naming
/// the step, and the parameters are those of the last good step (still finite).
#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    let cfg = small().likelihood(Likelihood::Gaussian { variance: 1.0 });
    let tc = TrainConfig::default()
        .batch_size(32)
        .epochs(50)
        .optimizer(OptimizerConfig::sgd(50.0, 0.9));
    let mut t = Trainer::<f32>::new(
        Vae::new(cfg).unwrap(),
        tc,
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    let data = shapes::generate(0, 0, 256).unwrap();
    let err = t.fit(&data, elbo::FitOptions::new()).unwrap_err();
    match err {
        Error::Diverged { step, loss, .. } => {
            assert!(!loss.is_finite());
            assert_eq!(
                step,
                t.steps_done() + 1,
                "the failing step is the one after the last good one"
            );
        }
        other => panic!("expected divergence, got {other}"),
    }
}

#[test]
fn broken_model_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vae = Vae::new(small()).unwrap();
    let params: Vec<f32> = vae.init_params(1);
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&path, &vae, &params, &[]).unwrap();
    let back = checkpoint::load::<f32>(&path).unwrap();
    assert_eq!(back.params, params);
    assert_eq!(back.vae.config(), vae.config());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        checkpoint::load::<f32>(&path),
        Err(Error::Malformed { .. })
    ));
    std::fs::write(&path, b"not a model").unwrap();
    assert!(matches!(
        checkpoint::load::<f32>(&path),
        Err(Error::Malformed { .. })
    ));
}

/// The ndarray interface: a dataset round-trips through `Array2`, and the per-point ELBO takes
/// an array view (checked like a slice).
#[test]
fn ndarray_interface() {
    let a = ndarray::Array2::from_shape_fn((5, 3), |(i, j)| (i * 3 + j) as f32 / 15.0);
    let ds = Dataset::from_array(a.view()).unwrap();
    assert_eq!(ds.to_array::<f32>(), a);
    let bad = ndarray::Array2::from_elem((2, 3), f32::NAN);
    assert!(matches!(
        Dataset::from_array(bad.view()),
        Err(Error::InvalidData(_))
    ));
    let vae = Vae::new(small().input_dim(3)).unwrap();
    let params: Vec<f32> = vae.init_params(0);
    let elbo = Elbo::new(&vae);
    let per = elbo.per_point_array(&params, a.view(), 2, 0, 1).unwrap();
    let flat: Vec<f32> = a.iter().copied().collect();
    assert_eq!(per, elbo.per_point(&params, &flat, 2, 0, 1).unwrap());
    // Column-major views read the same values.
    let t = a.t().to_owned();
    assert_eq!(elbo.per_point_array(&params, t.t(), 2, 0, 1).unwrap(), per);
    let wide = ndarray::Array2::<f32>::zeros((2, 4));
    assert!(matches!(
        elbo.per_point_array(&params, wide.view(), 1, 0, 1),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn a_model_file_of_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let vae = Vae::new(small()).unwrap();
    checkpoint::save(&path, &vae, &vae.init_params::<f32>(0), &[]).unwrap();
    assert!(checkpoint::load_expecting::<f32>(&path, &small()).is_ok());
    let wider = small().encoder_hidden(vec![32]);
    let err = checkpoint::load_expecting::<f32>(&path, &wider).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(
        err.to_string().contains("784-[32]-3") && err.to_string().contains("784-[16]-3"),
        "{err}"
    );
}
