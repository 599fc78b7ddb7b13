//! Where a training step's time goes: every parallel loop of the step, by the line of the
//! library that started it, with its wall time and the time its thread spent alone before it
//! (`elbo::loop_profile`). The workloads are those of BENCHMARKS.md: the MNIST reference VAE,
//! and the count model of the scvi-tools comparison on pbmc's 2,000 most variable genes or on
//! the procedural `cells`.
//!
//! cargo run --release --features loop-profile --example step_profile -- [mnist|pbmc|cells] [THREADS] [EPOCHS] [BATCH] [f32|bf16]
//!
//! One epoch warms up; the next EPOCHS are measured (defaults: cells, 2 threads, 3 epochs,
//! batches of 128, f32 products; bf16 is `--precision bf16`).
//! MNIST and pbmc are read from `../shared/data/` unless `ELBO_MNIST_DIR` or `ELBO_PBMC_DIR`
//! says otherwise. A product too small to split runs on the calling thread and shows as the
//! time before the next loop, as does whatever runs between steps.
use elbo::data::Dataset;
use elbo::{FitOptions, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};

#[path = "../benches/common/count_model.rs"]
mod count_model;

fn main() -> elbo::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("cells", |s| s.as_str());
    let number = |i: usize, default: usize| -> elbo::Result<usize> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse()
                .map_err(|_| elbo::Error::config("argument", s, "must be a whole number"))
        })
    };
    let (threads, epochs, batch) = (number(1, 2)?, number(2, 3)?.max(1), number(3, 128)?);
    let precision = match args.get(4).map(String::as_str) {
        None | Some("f32") => elbo::Precision::F32,
        Some("bf16") => elbo::Precision::Bf16,
        Some(other) => return Err(elbo::Error::config("precision", other, "is f32 or bf16")),
    };
    let (data, vae, config) = workload(which)?;
    let config = config
        .epochs(epochs + 1)
        .batch_size(batch)
        .precision(precision);
    let steps = (epochs * data.len().div_ceil(config.batch_size)) as f64;
    let mut trainer = Trainer::<f32>::new(vae, config, &Parallelism::threads(threads)?)?;
    let mut seconds = 0.0;
    let options = FitOptions::new().on_epoch(|report, _| {
        if report.epoch == 1 {
            elbo::loop_profile::take(); // the warm-up epoch
        } else {
            seconds += report.train_seconds;
        }
        Ok(())
    });
    trainer.fit(&data, options)?;
    let loops = elbo::loop_profile::take();
    let per_step = |s: f64| s / steps * 1e6;
    println!(
        "{which}, {threads} thread(s), batch {batch}, {precision:?} products: {:.0} µs a step over {steps} steps",
        per_step(seconds)
    );
    println!("| line | loops a step | µs a step | µs alone before them |");
    println!("|---|---|---|---|");
    for l in &loops {
        println!(
            "| {}:{} | {:.1} | {:.1} | {:.1} |",
            l.file,
            l.line,
            l.calls as f64 / steps,
            per_step(l.loop_secs),
            per_step(l.gap_secs)
        );
    }
    let (inside, alone): (f64, f64) = loops
        .iter()
        .fold((0.0, 0.0), |(a, b), l| (a + l.loop_secs, b + l.gap_secs));
    println!(
        "| all | | {:.1} | {:.1} |",
        per_step(inside),
        per_step(alone)
    );
    Ok(())
}

/// The data, model and training settings of one of BENCHMARKS.md's workloads.
fn workload(which: &str) -> elbo::Result<(Dataset, Vae, TrainConfig)> {
    let shared = |var: &str, dir: &str| {
        std::env::var(var).unwrap_or_else(|_| format!("../shared/data/{dir}"))
    };
    if which == "mnist" {
        let dir = shared("ELBO_MNIST_DIR", "mnist");
        let data = elbo::data::mnist::load(dir, elbo::data::mnist::Split::Train)?;
        return Ok((data, Vae::new(VaeConfig::mnist())?, TrainConfig::default()));
    }
    let data = match which {
        "pbmc" => count_model::pbmc_top_genes(shared("ELBO_PBMC_DIR", "pbmc-celltypist"))?,
        "cells" => {
            let config = elbo::data::cells::CellsConfig::default();
            elbo::data::cells::generate(&config, 0, 0, 9000)?
        }
        other => {
            return Err(elbo::Error::config(
                "workload",
                other,
                "is one of mnist, pbmc, cells",
            ));
        }
    };
    let vae = count_model::count_vae(data.dim())?;
    Ok((data, vae, count_model::count_training()))
}
