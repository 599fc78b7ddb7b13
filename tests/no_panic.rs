//! Wrong sizes, indices and row counts given to the public API come back as typed errors
//! (`Error::Shape`, `Error::InvalidConfig`, `Error::InvalidData`), never as a panic. A property
//! test draws the sizes; each call runs under `catch_unwind`, so a panic fails the case.

use std::panic::{AssertUnwindSafe, catch_unwind};

use elbo::model::{Dense, KlToStandardNormal, Layout, LogvarClamp, Mlp, Reparameterize};
use elbo::objective::{Iwae, Workspace};
use elbo::train::{Optimizer, OptimizerConfig};
use elbo::{
    Activation, Dataset, Elbo, Error, FitOptions, Parallelism, TrainConfig, TrainedVae, Trainer,
    Vae, VaeConfig,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// Runs `f`; fails if it panics, or if it errs with anything but a caller-input error.
fn no_panic<R>(what: &str, f: impl FnOnce() -> elbo::Result<R>) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{what} panicked"),
        Ok(Ok(r)) => Some(r),
        Ok(Err(Error::Shape { .. } | Error::InvalidConfig { .. } | Error::InvalidData(_))) => None,
        Ok(Err(e)) => panic!("{what}: unexpected kind of error: {e}"),
    }
}

fn small_vae() -> Vae {
    Vae::new(
        VaeConfig::mnist()
            .input_dim(5)
            .encoder_hidden(vec![4])
            .latent_dim(2)
            .decoder_hidden(vec![3])
            .logvar_clamp(Some(5.0)),
    )
    .unwrap()
}

/// The same shape with a count likelihood (per-cell dispersion and zero inflation: three
/// decoder outputs per gene), batch normalisation, dropout and the log1p input.
fn count_vae() -> Vae {
    Vae::new(
        small_vae()
            .config()
            .clone()
            .likelihood("zinb-cell".parse().unwrap())
            .batch_norm(true)
            .dropout(0.1)
            .log1p_input(true),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        rng_seed: RngSeed::Fixed(0x6e6f_7061_6e69),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn datasets_refuse_wrong_shapes_and_indices(
        rows in 0usize..6, cols in 0usize..6, len_off in prop_oneof![Just(0i64), -2i64..3],
        idx in prop::collection::vec(0usize..8, 0..6), out_off in prop_oneof![Just(0i64), -3i64..3],
    ) {
        let len = ((rows * cols) as i64 + len_off).max(0) as usize;
        let out = ((idx.len() * cols) as i64 + out_off).max(0) as usize;
        let data = no_panic("from_bytes", || Dataset::from_bytes(rows, cols, vec![7; len]));
        no_panic("from_f32", || Dataset::from_f32(rows, cols, vec![0.5; len]));
        if let Some(d) = data {
            let mut buf = vec![0f32; out];
            let before = buf.clone();
            if no_panic("gather", || d.gather(&idx, &mut buf)).is_none() {
                prop_assert_eq!(&buf, &before, "a refused gather leaves its output alone");
            }
            let mut rng = elbo::rng::stream(0, elbo::rng::Purpose::Binarize, 0);
            no_panic("gather_binarized", || d.gather_binarized(&idx, &mut buf, &mut rng));
            for &i in &idx {
                let _ = d.value(i, i % 7);
                let _ = d.row(i);
            }
            let _ = d.split_at(idx.first().copied().unwrap_or(0));
        }
    }

    #[test]
    fn the_objective_refuses_wrong_sizes(
        params_off in prop_oneof![Just(0i64), -3i64..3], rows in 0usize..7, ws_rows in 0usize..5,
        samples in 0usize..3, grads_off in prop_oneof![Just(0i64), -2i64..2], x_len in 0usize..30,
        counts in any::<bool>(),
    ) {
        let vae = if counts { count_vae() } else { small_vae() };
        let n = (vae.num_params() as i64 + params_off).max(0) as usize;
        let params = vec![0.01f64; n];
        let mut grads = vec![0.0f64; (vae.num_params() as i64 + grads_off).max(0) as usize];
        if let Some(mut ws) = no_panic("Workspace::new", || Workspace::<f64>::new(&vae, ws_rows, samples, 1)) {
            no_panic("Elbo::backward before forward", || {
                Elbo::new(&vae).backward(&params, &mut ws, rows, 1.0, &mut grads)
            });
            no_panic("Elbo::forward", || Elbo::new(&vae).forward(&params, &mut ws, rows));
            no_panic("Elbo::backward", || Elbo::new(&vae).backward(&params, &mut ws, rows, 1.0, &mut grads));
            no_panic("Elbo::backward, other rows", || {
                Elbo::new(&vae).backward(&params, &mut ws, rows + 1, 1.0, &mut grads)
            });
            no_panic("Iwae::forward", || Iwae::new(&vae).forward(&params, &mut ws, rows));
            no_panic("Iwae::backward", || Iwae::new(&vae).backward(&params, &mut ws, rows, &mut grads));
            // A workspace of another model.
            let other = Vae::new(small_vae().config().clone().input_dim(6)).unwrap();
            let p2 = vec![0.0f64; other.num_params()];
            no_panic("Elbo::forward, another model's workspace", || Elbo::new(&other).forward(&p2, &mut ws, 1));
        }
        let x = vec![0.5f64; x_len];
        no_panic("Vae::encode", || vae.encode(&params, &x, 1));
        no_panic("Vae::decode_mean", || vae.decode_mean(&params, &x, 1));
        no_panic("Elbo::per_point", || Elbo::new(&vae).per_point(&params, &x, samples, 0, 1));
        let mut opt = no_panic("Optimizer::new", || Optimizer::<f64>::new(OptimizerConfig::adam(1e-3), vae.num_params())).unwrap();
        let mut p = params.clone();
        no_panic("Optimizer::step", || opt.step(&mut p, &grads));
        no_panic("gradcheck::check", || {
            elbo::gradcheck::check(vae.layout(), &params, &grads, |_| 0.0, 1e-5, elbo::gradcheck::Tolerance::DEFAULT)
        });
    }

    #[test]
    fn layers_refuse_wrong_sizes(
        rows in 0usize..5, n_in in 1usize..4, n_out in 1usize..4, x_len in 0usize..20,
        y_len in 0usize..20, p_off in prop_oneof![Just(0i64), -2i64..2], cols in 0usize..4,
        samples in 0usize..3,
    ) {
        let mut layout = Layout::new();
        let dense = Dense::new(&mut layout, "d", n_in, n_out);
        let mlp = Mlp::new(&mut layout, "m", &[n_in, n_out, 2], Activation::Relu, Activation::Identity);
        let params = vec![0.1f64; (layout.len() as i64 + p_off).max(0) as usize];
        let mut grads = params.clone();
        let x = vec![0.2f64; x_len];
        let mut y = vec![0.0f64; y_len];
        no_panic("Dense::forward", || dense.forward(&params, &x, &mut y, rows, 1));
        let dy = y.clone();
        let mut dx = vec![0.0; x_len];
        no_panic("Dense::backward", || dense.backward(&params, &x, &dy, &mut grads, Some(&mut dx), rows, 1));
        let mut rng = elbo::rng::stream(0, elbo::rng::Purpose::Init, 0);
        no_panic("Dense::init", || dense.init(&mut grads, &mut rng));
        no_panic("Activation::forward", || Activation::Tanh.forward(&mut y, cols));
        no_panic("Activation::forward_with_bias", || Activation::Relu.forward_with_bias(&mut y, Some(&x), cols));
        no_panic("Activation::backward", || Activation::Sigmoid.backward(&x, &mut y, cols));
        if let Some(mut buf) = no_panic("Mlp::buffers", || mlp.buffers::<f64>(rows)) {
            no_panic("Mlp::forward", || mlp.forward(&params, &x, &mut buf, rows + cols, 1));
            let (mut ga, mut gb) = (y.clone(), y.clone());
            no_panic("Mlp::backward", || mlp.backward(&params, &x, &mut buf, &mut ga, &mut gb, &mut grads, None, rows, 1));
        }
        no_panic("Mlp::buffers, huge", || mlp.buffers::<f32>(usize::MAX / 2));
        let rp = Reparameterize { latent: n_out, samples };
        let mut z = vec![0.0; y_len];
        no_panic("Reparameterize::forward", || rp.forward(&x, &dy, &mut z, rows));
        no_panic("Reparameterize::backward", || rp.backward(&x, &dy, &z, &mut y, rows));
        let kl = KlToStandardNormal { latent: n_out };
        no_panic("KL::forward", || kl.forward(&x, &mut y, rows));
        no_panic("KL::backward", || kl.backward(&x, 1.0, &mut y, rows));
        no_panic("LogvarClamp", || (LogvarClamp { latent: n_out, limit: 3.0 }).forward(&mut y, rows));
        let t = layout.push("extra", &[3]);
        no_panic("TensorId::get", || t.get(&params).map(|_| ()));
    }

    #[test]
    fn a_trained_model_refuses_wrong_widths(width in 0usize..12, k in 0usize..3, n in 0usize..3, z_len in 0usize..9) {
        let data = Dataset::from_bytes(8, 5, (0..40).map(|i| (i * 31 % 256) as u8).collect()).unwrap();
        let par = Parallelism::threads(1).unwrap();
        let mut trainer = Trainer::<f32>::new(
            small_vae(),
            TrainConfig::default().epochs(1).batch_size(4),
            &par,
        ).unwrap();
        trainer.fit(&data, FitOptions::new()).unwrap();
        no_panic("Trainer::step, bad indices", || trainer.step(&data, &[0, 99]));
        let model: TrainedVae<f32> = trainer.into_model().unwrap();
        let x = vec![0.5f32; width];
        no_panic("encode", || model.encode(&x));
        no_panic("reconstruct", || model.reconstruct(&x));
        no_panic("elbo", || model.elbo(&x, k, 0));
        no_panic("log_px", || model.log_px(&x, k, 0));
        no_panic("decode", || model.decode(&vec![0.1f32; z_len]));
        no_panic("sample", || model.sample(n, 0));
        no_panic("sample, huge", || model.sample(usize::MAX / 2, 0));
        let m = ndarray::Array2::<f32>::zeros((2, width));
        no_panic("encode, ndarray", || model.encode(&m));
        no_panic("TrainedVae::new, short", || TrainedVae::new(small_vae(), vec![0.0f32; width], &par));
    }
}
