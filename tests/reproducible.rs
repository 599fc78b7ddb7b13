//! The same seed gives bit-identical parameters after training, with 1 thread or 2.

use elbo::data::shapes;
use elbo::{TrainConfig, Trainer, Vae, VaeConfig};

fn train(threads: usize, seed: u64) -> (Vec<f32>, elbo::EpochTerms) {
    // Full MNIST-sized layers, so that the matrix products and elementwise kernels really do
    // split across threads.
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let config = TrainConfig {
        epochs: 2,
        seed,
        samples: 2,
        warmup_epochs: 1.0,
        binarize: true,
        ..TrainConfig::default()
    };
    let mut t = Trainer::<f32>::new(vae, config, threads).unwrap();
    let train = shapes::generate(5, 0, 1500).unwrap();
    let test = shapes::generate(5, 1500, 300).unwrap();
    let reports = t
        .fit(&train, Some(&test), &mut |_, _| {}, &mut |_, _| Ok(()))
        .unwrap();
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
