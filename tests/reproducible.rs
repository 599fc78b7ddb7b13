//! The same seed gives bit-identical parameters after training, with 1 thread or 2.

mod common;

use elbo::data::shapes;
use elbo::{TrainConfig, Trainer, Vae, VaeConfig};

fn train(threads: usize, seed: u64) -> (Vec<f32>, elbo::EpochTerms) {
    train_with(threads, seed, true)
}

/// `sparse`: whether the first layer may take its (mostly zero) input in sparse form.
fn train_with(threads: usize, seed: u64, sparse: bool) -> (Vec<f32>, elbo::EpochTerms) {
    // Full MNIST-sized layers, so that the matrix products and elementwise kernels really do
    // split across threads.
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let config = TrainConfig::default()
        .epochs(2)
        .seed(seed)
        .samples(2)
        .warmup_epochs(1.0)
        .binarize(true);
    let mut t =
        Trainer::<f32>::new(vae, config, &elbo::Parallelism::threads(threads).unwrap()).unwrap();
    t.set_sparse_input(sparse);
    let train = shapes::generate(5, 0, 1500).unwrap();
    let test = shapes::generate(5, 1500, 300).unwrap();
    let reports = t.fit(&train, elbo::FitOptions::new().test(&test)).unwrap();
    (t.params().to_vec(), reports.last().unwrap().test.unwrap())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn same_seed_same_bits_with_one_or_two_threads() {
    let (p1, e1) = train(1, 42);
    let (p2, e2) = train(2, 42);
    let (p1b, _) = train(1, 42);
    assert_eq!(bits(&p1), bits(&p1b), "same seed, same thread count");
    assert_eq!(bits(&p1), bits(&p2), "1 thread vs 2 threads");
    assert_eq!(e1, e2);
    let (p3, _) = train(2, 43);
    assert_ne!(
        bits(&p1),
        bits(&p3),
        "a different seed must give different parameters"
    );
}

/// The dense first-layer path is thread-count independent too.
#[test]
fn dense_input_path_same_bits_with_one_or_two_threads() {
    let (p1, e1) = train_with(1, 7, false);
    let (p2, e2) = train_with(2, 7, false);
    assert_eq!(bits(&p1), bits(&p2));
    assert_eq!(e1, e2);
}

/// On a real MNIST batch (about 19% of pixels nonzero) the sparse and the dense first-layer
/// products give the same -ELBO and gradient up to f32 rounding: relative 1e-6 on the loss,
/// and every gradient entry within 1e-5 of the largest.
#[test]
fn sparse_and_dense_first_layer_agree_on_mnist() {
    use elbo::objective::{Elbo, Workspace};
    let Some(dir) = common::mnist_dir() else {
        return;
    };
    let train = elbo::data::mnist::load(&dir, elbo::data::mnist::Split::Train).unwrap();
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let params: Vec<f32> = vae.init_params(3);
    let rows = 128;
    let run = |sparse: bool| {
        let mut ws = Workspace::<f32>::new(&vae, rows, 1, 2).unwrap();
        ws.set_sparse_input(sparse);
        train
            .gather(&(1000..1000 + rows).collect::<Vec<_>>(), &mut ws.x)
            .unwrap();
        for (i, e) in ws.eps.iter_mut().enumerate() {
            *e = ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        }
        let elbo = Elbo::new(&vae);
        let loss = elbo.forward(&params, &mut ws, rows).unwrap().loss(1.0);
        let mut grads = vec![0.0f32; vae.num_params()];
        elbo.backward(&params, &mut ws, rows, 1.0, &mut grads)
            .unwrap();
        (loss, grads)
    };
    let (ls, gs) = run(true);
    let (ld, gd) = run(false);
    assert!((ls - ld).abs() <= 1e-6 * ld.abs(), "loss {ls} vs {ld}");
    let scale = gd.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    let worst = gs
        .iter()
        .zip(&gd)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-5 * scale,
        "gradient differs by {worst} (largest {scale})"
    );
    assert_ne!(
        gs, gd,
        "the two paths should round differently (else one was not taken)"
    );
}

/// A small model (784-64-3), whose 128 x 64 x 784 products `gemm` blocks differently when cut
/// in two: before the cut followed the shape alone, 1 and 2 threads parted in the last bits.
#[test]
fn small_model_same_bits_with_one_or_two_threads() {
    let run = |threads: usize| {
        let vae = Vae::new(VaeConfig::mnist().hidden(&[64]).latent_dim(3)).unwrap();
        let config = TrainConfig::default().epochs(1).seed(9);
        let par = elbo::Parallelism::threads(threads).unwrap();
        let mut t = Trainer::<f32>::new(vae, config, &par).unwrap();
        let data = shapes::generate(2, 0, 640).unwrap();
        t.fit(&data, elbo::FitOptions::new()).unwrap();
        bits(t.params())
    };
    assert_eq!(run(1), run(2));
}
