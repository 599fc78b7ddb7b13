//! Batch normalisation and dropout: finite-difference checks of their backward passes (alone
//! and inside the whole -ELBO), running averages for evaluation kept in the model file, masks
//! from the (seed, step) streams, and bit-identical results whatever the thread count and
//! across a resume.
//!
//! Tolerance: `Tolerance::DEFAULT`, h = 1e-5, as in `tests/gradients.rs`.

use elbo::gradcheck::{Tolerance, check, format_table};
use elbo::model::{Activation, Dropout, Layout, Mlp};
use elbo::objective::{Elbo, Workspace};
use elbo::{FitOptions, Likelihood, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const H: f64 = 1e-5;
const TOL: Tolerance = Tolerance::DEFAULT;

fn assert_all_pass(checks: &[elbo::gradcheck::TensorCheck]) {
    assert!(
        checks.iter().all(|c| c.passed),
        "gradient check failed:\n{}",
        format_table(checks)
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/norm.txt"))),
        rng_seed: RngSeed::Fixed(20_260_122),
        ..ProptestConfig::default()
    })]

    /// An MLP with batch normalisation and dropout on its hidden layers, in training mode with
    /// fixed masks: d(sum_r c . output_r) for every tensor and the input.
    #[test]
    fn mlp_with_batch_norm_and_dropout(widths in prop::collection::vec(1usize..6, 2..5),
            rows in 2usize..6, rate in 0.0f64..0.6, act in 0usize..3, seed in any::<u64>()) {
        let act = [Activation::Relu, Activation::Tanh, Activation::Softplus][act];
        let mut layout = Layout::new();
        let mlp = Mlp::with_norm(&mut layout, "m", &widths, act, Activation::Identity, true,
            Some(Dropout { rate }), false);
        let xt = layout.push("x", &[rows, widths[0]]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut theta: Vec<f64> = (0..layout.len()).map(|_| rng.random_range(-1.5..1.5)).collect();
        // gamma away from zero, as initialised; the running averages play no part in training.
        for l in &mlp.layers {
            if let Some(n) = &l.norm {
                for v in n.gamma.get_mut(&mut theta).unwrap() { *v = rng.random_range(0.5..2.0); }
            }
        }
        let out_w = *widths.last().unwrap();
        let c: Vec<f64> = (0..rows * out_w).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut buf = mlp.buffers::<f64>(rows).unwrap();
        buf.set_training(true);
        let mut mrng = ChaCha8Rng::seed_from_u64(seed ^ 1);
        for (l, m) in mlp.layers.iter().zip(buf.masks_mut()) {
            if let Some(d) = l.dropout { d.draw_mask(&mut mrng, &mut m[..rows * l.dense.n_out]); }
        }
        let mut buf2 = buf.clone();
        let loss = |t: &[f64]| {
            mlp.forward(t, xt.get(t).unwrap(), &mut buf2, rows, 1).unwrap();
            buf2.outputs.last().unwrap()[..rows * out_w].iter().zip(&c).map(|(o, c)| o * c).sum::<f64>()
        };
        mlp.forward(&theta, xt.get(&theta).unwrap(), &mut buf, rows, 1).unwrap();
        let widest = widths.iter().max().unwrap() * rows;
        let (mut ga, mut gb) = (vec![0.0; widest], vec![0.0; widest]);
        ga[..rows * out_w].copy_from_slice(&c);
        let mut grads = vec![0.0; layout.len()];
        let mut dx = vec![0.0; rows * widths[0]];
        mlp.backward(&theta, xt.get(&theta).unwrap(), &mut buf, &mut ga, &mut gb, &mut grads, Some(&mut dx), rows, 1).unwrap();
        xt.get_mut(&mut grads).unwrap().copy_from_slice(&dx);
        assert_all_pass(&check(&layout, &theta, &grads, loss, H, TOL).unwrap());
    }

    /// The whole -ELBO of a VAE with batch normalisation and dropout, training mode, eps and
    /// masks fixed, with a count likelihood or a Bernoulli.
    #[test]
    fn whole_negative_elbo_with_batch_norm_and_dropout(input in 2usize..6, hidden in 1usize..5,
            latent in 1usize..3, rows in 2usize..5, rate in 0.0f64..0.5, counts in any::<bool>(),
            seed in any::<u64>()) {
        let lik = if counts { "nb".parse::<Likelihood>().unwrap() } else { Likelihood::Bernoulli };
        let vae = Vae::new(VaeConfig::mnist().input_dim(input).hidden(&[hidden]).latent_dim(latent)
            .likelihood(lik).batch_norm(true).dropout(rate).log1p_input(counts)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params: Vec<f64> = vae.init_params(seed);
        let mut ws = Workspace::<f64>::new(&vae, rows, 1, 1).unwrap();
        ws.set_training(true);
        ws.draw_dropout_masks(&vae, seed, 1);
        for v in &mut ws.x[..rows * input] {
            *v = if counts { rng.random_range(0..6) as f64 } else { rng.random_range(0.0..1.0) };
        }
        for v in &mut ws.eps { *v = rng.random_range(-2.0..2.0); }
        let elbo = Elbo::new(&vae);
        let mut grads = vec![0.0; vae.num_params()];
        elbo.forward(&params, &mut ws, rows).unwrap();
        elbo.backward(&params, &mut ws, rows, 1.0, &mut grads).unwrap();
        let mut ws2 = ws.clone();
        let loss = |t: &[f64]| elbo.forward(t, &mut ws2, rows).unwrap().loss(1.0);
        assert_all_pass(&check(vae.layout(), &params, &grads, loss, H, TOL).unwrap());
    }
}

/// A mask drops about a share `rate` of the values and scales the rest by 1/(1 - rate).
#[test]
fn dropout_masks_drop_about_the_rate_and_scale_the_rest() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut mask = vec![0f32; 100_000];
    Dropout { rate: 0.1 }.draw_mask(&mut rng, &mut mask);
    let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / mask.len() as f64;
    assert!((dropped - 0.1).abs() < 0.005, "{dropped}");
    assert!(
        mask.iter()
            .all(|&m| m == 0.0 || (m - 1.0 / 0.9).abs() < 1e-6)
    );
}

fn bn_model() -> Vae {
    Vae::new(
        VaeConfig::mnist()
            .input_dim(300)
            .hidden(&[32])
            .latent_dim(4)
            .likelihood("nb".parse().unwrap())
            .log1p_input(true)
            .batch_norm(true)
            .dropout(0.1),
    )
    .unwrap()
}

fn cells() -> elbo::Dataset {
    let config = elbo::data::cells::CellsConfig {
        genes: 300,
        ..Default::default()
    };
    elbo::data::cells::generate(&config, 2, 0, 500).unwrap()
}

fn train(threads: usize, epochs: usize) -> Trainer<f32> {
    let config = TrainConfig::default()
        .epochs(epochs)
        .batch_size(50)
        .weight_decay(1e-6);
    let mut t =
        Trainer::<f32>::new(bn_model(), config, &Parallelism::threads(threads).unwrap()).unwrap();
    t.fit(&cells(), FitOptions::new()).unwrap();
    t
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Running averages move during training, weight decay leaves them alone, and the results are
/// the same bits on one thread and on two.
#[test]
fn batch_norm_and_dropout_train_bit_identically_on_any_thread_count() {
    let (one, two) = (train(1, 2), train(2, 2));
    assert_eq!(bits(one.params()), bits(two.params()));
    let vae = bn_model();
    let norm = vae.norms().next().unwrap();
    let rm = norm.running_mean.get(one.params()).unwrap();
    let rv = norm.running_var.get(one.params()).unwrap();
    assert!(
        rm.iter().any(|&v| v != 0.0) && rv.iter().any(|&v| v != 1.0),
        "running averages moved"
    );
    assert!(rv.iter().all(|&v| v > 0.0));
}

/// A checkpoint keeps the running averages (they are in the parameter buffer), so a resumed
/// run continues bit for bit, and evaluation after loading uses them.
#[test]
fn a_resumed_run_with_batch_norm_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let whole = train(2, 3);
    let half = train(2, 2);
    half.save_checkpoint(&path, &[]).unwrap();
    let mut resumed =
        Trainer::<f32>::resume(&path, &Parallelism::threads(1).unwrap(), Some(3)).unwrap();
    resumed.fit(&cells(), FitOptions::new()).unwrap();
    assert_eq!(bits(resumed.params()), bits(whole.params()));
    let loaded = elbo::train::checkpoint::load::<f32>(&path).unwrap();
    assert_eq!(bits(&loaded.params), bits(half.params()));
    // Evaluation mode: the encoder's means are a deterministic function of x and the running
    // averages; encoding one cell alone or among others gives the same values (no batch
    // statistics are used).
    let data = cells();
    let mut x = vec![0f32; 2 * 300];
    data.gather(&[0, 1], &mut x).unwrap();
    let (both, _) = loaded.vae.encode(&loaded.params, &x, 1).unwrap();
    let (alone, _) = loaded.vae.encode(&loaded.params, &x[..300], 1).unwrap();
    assert_eq!(bits(&both[..4]), bits(&alone));
}
