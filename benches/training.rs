//! A whole training step and a whole evaluation of the MNIST reference model (784-400-20-400-
//! 784, ReLU, Bernoulli, Adam, batch 128, f32) on the real data from ../shared/data/mnist.
//! Throughput of the step is in images; its effective GFLOP/s is 3.28 MFLOP per image.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use elbo::data::mnist;
use elbo::train::evaluate;
use elbo::{TrainConfig, Trainer, Vae, VaeConfig};
use std::path::Path;

#[path = "common/count_model.rs"]
mod count_model;

fn data() -> (elbo::Dataset, elbo::Dataset) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    (
        mnist::load(&dir, mnist::Split::Train).expect("MNIST in ../shared/data/mnist"),
        mnist::load(&dir, mnist::Split::Test).unwrap(),
    )
}

fn step(c: &mut Criterion) {
    let (train, _) = data();
    let mut g = c.benchmark_group("train_step_batch128");
    g.throughput(Throughput::Elements(128));
    for threads in [1usize, 2] {
        let vae = Vae::new(VaeConfig::mnist()).unwrap();
        bench_steps(
            &mut g,
            &format!("{threads}t"),
            vae,
            TrainConfig::default(),
            threads,
            &train,
        );
    }
    g.finish();
}

/// Times `Trainer::step` on batches of 128 consecutive rows of `data`, batch after batch.
fn bench_steps(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    vae: Vae,
    config: TrainConfig,
    threads: usize,
    data: &elbo::Dataset,
) {
    let parallelism = elbo::Parallelism::threads(threads).unwrap();
    let mut t = Trainer::<f32>::new(vae, config, &parallelism).unwrap();
    let mut start = 0usize;
    g.bench_function(name, |b| {
        b.iter(|| {
            let idx: Vec<usize> = (start..start + 128).collect();
            start = (start + 128) % (data.len() - 128);
            t.step(data, &idx).unwrap()
        })
    });
}

fn eval(c: &mut Criterion) {
    let (_, test) = data();
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let params: Vec<f32> = vae.init_params(0);
    let mut g = c.benchmark_group("evaluate_10000");
    g.sample_size(10);
    g.throughput(Throughput::Elements(test.len() as u64));
    for threads in [1usize, 2] {
        g.bench_function(format!("{threads}t"), |b| {
            b.iter(|| {
                evaluate(
                    &vae,
                    &params,
                    &test,
                    1000,
                    1,
                    0,
                    &elbo::Parallelism::threads(threads).unwrap(),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

/// A training step of the count model of BENCHMARKS.md's scvi-tools table
/// ([`count_model`], batch 128, f32): on the real pbmc folder's 2,000 most variable genes
/// (about 11% nonzero) and on the procedural `cells` set (5%).
fn count_step(c: &mut Criterion) {
    use elbo::data::cells::{CellsConfig, generate};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pbmc = count_model::pbmc_top_genes(root.join("../shared/data/pbmc-celltypist"))
        .expect("the pbmc folder in ../shared/data");
    let cells = generate(&CellsConfig::default(), 1, 0, 2048).expect("cells");
    let mut g = c.benchmark_group("count_step_batch128");
    g.throughput(Throughput::Elements(128));
    for (name, data) in [("pbmc", &pbmc), ("cells", &cells)] {
        for threads in [1usize, 2] {
            let vae = count_model::count_vae(2000).unwrap();
            let config = count_model::count_training();
            bench_steps(
                &mut g,
                &format!("{name}/{threads}t"),
                vae,
                config,
                threads,
                data,
            );
        }
    }
    g.finish();
}

criterion_group!(benches, step, eval, count_step);
criterion_main!(benches);
