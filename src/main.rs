//! `elbo`: train variational autoencoders with hand-written gradients.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use elbo::data::{Dataset, mnist, shapes};
use elbo::train::checkpoint;
use elbo::{
    Activation, EpochReport, Error, Float, Likelihood, OptimizerConfig, Result, TrainConfig,
    Trainer, Vae, VaeConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "elbo",
    version,
    about = "Train and evaluate variational autoencoders whose gradients are written by hand",
    after_help = "Examples:\n  elbo train                                  # the built-in `shapes` set\n  \
                  elbo train --data mnist --data-dir ../shared/data/mnist\n  \
                  elbo train --beta 4 --warmup 2 --latent 6  # a beta-VAE on shapes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a VAE; prints each epoch's train and test ELBO and writes a checkpoint and a JSON
    /// report into the output folder.
    Train(TrainArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum DataKind {
    /// The procedural dSprites-like set (no files needed).
    Shapes,
    /// MNIST from IDX files (raw or gzipped) in --data-dir.
    Mnist,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Precision {
    F32,
    F64,
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Dataset.
    #[arg(long, value_enum, default_value = "shapes")]
    data: DataKind,
    /// Folder of the MNIST IDX files (for --data mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Use only the first N training examples.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Examples generated for `shapes` training (the test set is a tenth of it).
    #[arg(long, default_value_t = 20_000)]
    shapes_size: usize,
    /// Hidden widths of the encoder, comma-separated; the decoder mirrors them.
    #[arg(long, value_delimiter = ',', default_value = "400")]
    hidden: Vec<usize>,
    /// Latent size Z [default: 20 for mnist, 10 for shapes].
    #[arg(long)]
    latent: Option<usize>,
    /// Hidden activation: relu, leaky-relu, tanh, sigmoid or softplus.
    #[arg(long, default_value = "relu")]
    activation: String,
    /// p(x|z): bernoulli, gaussian (fixed --variance) or gaussian-learned.
    #[arg(long, default_value = "bernoulli")]
    likelihood: String,
    /// Variance of the fixed Gaussian likelihood.
    #[arg(long, default_value_t = 1.0)]
    variance: f64,
    /// Weight of the KL term (1 is the ELBO).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    beta: f64,
    /// Epochs of linear KL warm-up from 0 to beta.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    warmup: f64,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerKind,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    /// Momentum (SGD).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f64,
    /// Clip the gradient's norm to this value.
    #[arg(long, allow_negative_numbers = true)]
    clip: Option<f64>,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// z samples per example.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Seed for initialisation, order and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Resample binary pixels from grey levels at every step.
    #[arg(long)]
    binarize: bool,
    /// Arithmetic: f32 (fast) or f64.
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Output folder for model.safetensors and report.json [default: runs/<data>].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report<'a> {
    data: DataKind,
    train_examples: usize,
    test_examples: usize,
    precision: Precision,
    threads: usize,
    model: &'a VaeConfig,
    training: &'a TrainConfig,
    epochs: &'a [EpochReport],
}

fn load_data(args: &TrainArgs) -> Result<(Dataset, Dataset)> {
    let (train, test) = match args.data {
        DataKind::Shapes => {
            if args.shapes_size == 0 {
                return Err(Error::config("shapes size", 0, "must be at least 1"));
            }
            let n = args.shapes_size;
            let test_n = (n / 10).max(1);
            (
                shapes::generate(args.seed, 0, n)?,
                shapes::generate(args.seed, n as u64, test_n)?,
            )
        }
        DataKind::Mnist => {
            let dir = args.data_dir.clone().ok_or_else(|| {
                Error::config(
                    "data-dir",
                    "(none)",
                    "--data mnist needs --data-dir with the MNIST IDX files",
                )
            })?;
            (
                mnist::load(&dir, mnist::Split::Train)?,
                mnist::load(&dir, mnist::Split::Test)?,
            )
        }
    };
    let train = match args.train_limit {
        Some(0) => return Err(Error::config("train-limit", 0, "must be at least 1")),
        Some(n) => train.head(n),
        None => train,
    };
    Ok((train, test))
}

fn train(args: TrainArgs) -> Result<()> {
    let (train, test) = load_data(&args)?;
    let latent = args.latent.unwrap_or(match args.data {
        DataKind::Mnist => 20,
        DataKind::Shapes => 10,
    });
    let mut likelihood: Likelihood = args.likelihood.parse()?;
    if let Likelihood::Gaussian { variance } = &mut likelihood {
        *variance = args.variance;
    }
    let vae_config = VaeConfig {
        input_dim: train.dim(),
        encoder_hidden: args.hidden.clone(),
        latent_dim: latent,
        decoder_hidden: args.hidden.iter().rev().copied().collect(),
        activation: args.activation.parse::<Activation>()?,
        likelihood,
    };
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        samples: args.samples,
        beta: args.beta,
        warmup_epochs: args.warmup,
        optimizer: match args.optimizer {
            OptimizerKind::Adam => OptimizerConfig::adam(args.lr),
            OptimizerKind::Sgd => OptimizerConfig::sgd(args.lr, args.momentum),
        },
        clip_norm: args.clip,
        seed: args.seed,
        binarize: args.binarize,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    match args.precision {
        Precision::F32 => run::<f32>(&args, vae_config, config, threads, &train, &test),
        Precision::F64 => run::<f64>(&args, vae_config, config, threads, &train, &test),
    }
}

fn run<T: Float>(
    args: &TrainArgs,
    vae_config: VaeConfig,
    config: TrainConfig,
    threads: usize,
    train: &Dataset,
    test: &Dataset,
) -> Result<()> {
    let vae = Vae::new(vae_config)?;
    let mut trainer = Trainer::<T>::new(vae, config, threads)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(match args.data {
            DataKind::Shapes => "shapes",
            DataKind::Mnist => "mnist",
        })
    });
    std::fs::create_dir_all(&out).map_err(|e| Error::io("creating", &out, e))?;
    let report_path = out.join("report.json");
    let model_path = out.join("model.safetensors");
    let mut epochs: Vec<EpochReport> = Vec::new();
    let write_report = |epochs: &[EpochReport], trainer: &Trainer<T>| -> Result<()> {
        let report = Report {
            data: args.data,
            train_examples: train.len(),
            test_examples: test.len(),
            precision: args.precision,
            threads,
            model: trainer.vae().config(),
            training: trainer.config(),
            epochs,
        };
        let json = serde_json::to_vec_pretty(&report).expect("report serialises");
        elbo::io::write_atomic(&report_path, &json)
    };
    // Written before training so that an unwritable folder fails now, not after an epoch.
    write_report(&epochs, &trainer)?;
    let v = trainer.vae();
    eprintln!(
        "elbo: {} train / {} test examples of width {}; model {}-{:?}-{}, {} parameters, {} likelihood; {} thread(s), {:?}",
        train.len(),
        test.len(),
        train.dim(),
        v.input_dim(),
        v.config().encoder_hidden,
        v.latent_dim(),
        v.num_params(),
        v.config().likelihood,
        threads,
        args.precision
    );
    let total_epochs = trainer.config().epochs;
    let bar = ProgressBar::new(train.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {per_sec} loss {msg} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut progress = {
        let bar = bar.clone();
        move |done: usize, loss: f64| {
            bar.set_position(done as u64);
            bar.set_message(format!("{loss:.2}"));
        }
    };
    bar.set_prefix(format!("epoch 1/{total_epochs}"));
    let mut on_epoch = |r: &EpochReport, t: &Trainer<T>| -> Result<()> {
        bar.finish_and_clear();
        let test = r.test.map_or(String::new(), |e| {
            format!(
                "  test -ELBO {:.3} (recon {:.3}, KL {:.3})",
                e.neg_elbo, -e.recon, e.kl
            )
        });
        println!(
            "epoch {:>3}/{total_epochs}  train -ELBO {:.3} (recon {:.3}, KL {:.3}){test}  beta {:.3}  {:.2} s, {:.0} img/s",
            r.epoch,
            r.train.neg_elbo,
            -r.train.recon,
            r.train.kl,
            r.beta,
            r.train_seconds,
            r.images_per_sec
        );
        let meta = [
            (
                "elbo.training",
                serde_json::to_string(t.config()).expect("serialises"),
            ),
            ("elbo.epoch", r.epoch.to_string()),
        ];
        checkpoint::save(&model_path, t.vae(), t.params(), &meta)?;
        epochs.push(r.clone());
        write_report(&epochs, t)?;
        if r.epoch < total_epochs {
            bar.reset();
            bar.set_prefix(format!("epoch {}/{total_epochs}", r.epoch + 1));
        }
        Ok(())
    };
    trainer.fit(train, Some(test), &mut progress, &mut on_epoch)?;
    bar.finish_and_clear();
    println!(
        "wrote {} and {}",
        model_path.display(),
        report_path.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
