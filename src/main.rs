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
    after_help = "Examples:\n  \
                  elbo train                                   # the built-in `shapes` set\n  \
                  elbo train --data mnist --data-dir ../shared/data/mnist\n  \
                  elbo train --beta 4 --warmup 2 --latent 6    # a beta-VAE on shapes\n  \
                  elbo train --iw-samples 5                    # the importance-weighted bound\n  \
                  elbo eval runs/shapes/model.safetensors      # log p(x) by importance sampling\n  \
                  elbo identities                              # the ELBO three ways, with numbers\n  \
                  elbo gradcheck --hidden 16 --latent 3        # analytic vs numerical gradients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a VAE; prints each epoch's train and test ELBO and writes a checkpoint, a JSON
    /// report, training curves and pictures into the output folder.
    #[command(after_help = "Examples:\n  \
        elbo train                                             # shapes, 10 epochs, into runs/shapes\n  \
        elbo train --data mnist --data-dir ../shared/data/mnist --epochs 20\n  \
        elbo train --data file --data-path points.npy --likelihood gaussian-learned --latent 2\n  \
        elbo train --resume runs/mnist --epochs 30             # continue, bit-identically\n  \
        elbo train --json > epochs.jsonl                       # machine-readable output")]
    Train(TrainArgs),
    /// Evaluate a saved model on a test set: the ELBO with its two terms, importance-sampled
    /// log p(x) for several k, the gap, per-dimension KL and active units.
    #[command(
        after_help = "Example:\n  elbo eval runs/mnist/model.safetensors --data mnist --data-dir ../shared/data/mnist --limit 1000"
    )]
    Eval(EvalArgs),
    /// Show the ELBO derived three ways (Jensen, KL to the posterior, Bayes with ln x <= x - 1)
    /// on an exact linear-Gaussian model, each identity with its numbers.
    #[command(after_help = "Example:\n  elbo identities --seed 3 --draws 1000000")]
    Identities(IdentitiesArgs),
    /// Decode samples z ~ N(0, I) of a saved model into a PNG grid (and .npy files of z and
    /// of the decoded means, for checking the model elsewhere).
    #[command(
        after_help = "Example:\n  elbo sample runs/mnist/model.safetensors --n 64 --out samples.png"
    )]
    Sample(SampleArgs),
    /// Test inputs above their reconstructions (decoded posterior means), as a PNG.
    #[command(
        after_help = "Example:\n  elbo reconstruct runs/shapes/model.safetensors --out recon.png"
    )]
    Reconstruct(ModelFileArgs),
    /// The posterior means and variances of the test set, to .npy or .csv (columns mu_j, then
    /// var_j).
    #[command(
        after_help = "Example:\n  elbo encode runs/shapes/model.safetensors --output latents.csv"
    )]
    Encode(EncodeArgs),
    /// Every picture of a saved model: samples, reconstructions, an interpolation, latent
    /// traversals, and for 2-D latents the manifold and a scatter of the means.
    #[command(
        after_help = "Example:\n  elbo pictures runs/mnist/model.safetensors --out pictures/"
    )]
    Pictures(ModelFileArgs),
    /// Compare each parameter tensor's hand-written gradient of -ELBO with central finite
    /// differences (f64) for a model described with the same options as `train`.
    #[command(
        after_help = "Example:\n  elbo gradcheck --hidden 32,16 --latent 4 --activation tanh --likelihood gaussian-learned"
    )]
    Gradcheck(GradcheckArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum DataKind {
    /// The procedural dSprites-like set (no files needed).
    Shapes,
    /// MNIST from IDX files (raw or gzipped) in --data-dir.
    Mnist,
    /// Your own matrix, one row an example: --data-path X.npy or X.csv (--test-path, or the
    /// last tenth is held out for testing).
    File,
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

/// Which data, shared by every subcommand.
#[derive(clap::Args, Debug, Clone, Serialize, serde::Deserialize)]
struct DataArgs {
    /// Dataset [default: shapes; for eval, the one the model was trained on].
    #[arg(long, value_enum)]
    data: Option<DataKind>,
    /// Folder of the MNIST IDX files (for --data mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Examples generated for `shapes` training (the test set is a tenth of it).
    #[arg(long, default_value_t = 20_000)]
    shapes_size: usize,
    /// Seed of the `shapes` images.
    #[arg(long, default_value_t = 0)]
    data_seed: u64,
    /// Training matrix for --data file (.npy of f32/f64, or .csv).
    #[arg(long)]
    data_path: Option<PathBuf>,
    /// Test matrix for --data file [default: the last tenth of --data-path].
    #[arg(long)]
    test_path: Option<PathBuf>,
}

/// The model's shape, shared by `train` and `gradcheck`.
#[derive(clap::Args, Debug, Clone)]
struct ModelArgs {
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
    /// Clamp the encoder's log-variances to [-C, C] (keeps e^logvar finite).
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    logvar_clamp: Option<f64>,
}

impl ModelArgs {
    fn config(&self, input_dim: usize, data: DataKind) -> Result<VaeConfig> {
        let mut likelihood: Likelihood = self.likelihood.parse()?;
        if let Likelihood::Gaussian { variance } = &mut likelihood {
            *variance = self.variance;
        }
        Ok(VaeConfig {
            input_dim,
            encoder_hidden: self.hidden.clone(),
            latent_dim: self.latent.unwrap_or(match data {
                DataKind::Mnist => 20,
                DataKind::Shapes => 10,
                DataKind::File => 2,
            }),
            decoder_hidden: self.hidden.iter().rev().copied().collect(),
            activation: self.activation.parse::<Activation>()?,
            likelihood,
            logvar_clamp: self.logvar_clamp,
        })
    }
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Use only the first N training examples.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Weight of the KL term (1 is the ELBO).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    beta: f64,
    /// Epochs of linear KL warm-up from 0 to beta.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    warmup: f64,
    /// Train the importance-weighted bound with K samples per example instead of the ELBO.
    #[arg(long, value_name = "K")]
    iw_samples: Option<usize>,
    /// Use dense products in the first layer even for mostly-zero inputs such as MNIST (the
    /// default skips zero pixels; both agree to rounding). For timing at equal arithmetic.
    #[arg(long)]
    dense_input: bool,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerKind,
    /// Learning rate [default: 1e-3]; with --resume, replaces the saved one.
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Momentum (SGD).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f64,
    /// Clip the gradient's norm to this value; with --resume, replaces the saved setting.
    #[arg(long, allow_negative_numbers = true)]
    clip: Option<f64>,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Passes over the training set (with --resume: the new total) [default: 10].
    #[arg(long)]
    epochs: Option<usize>,
    /// Continue a run from its output folder (or model file): model, settings and data come
    /// from the checkpoint, and the result is bit-identical to a run never stopped.
    #[arg(long, value_name = "DIR|FILE")]
    resume: Option<PathBuf>,
    /// Print one JSON object per epoch (and one at the end) instead of text.
    #[arg(long)]
    json: bool,
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

#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// The model file (model.safetensors from `elbo train`).
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Importance samples per point, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000,5000")]
    k: Vec<usize>,
    /// Use only the first N test examples (k = 5000 costs 5000 decoder passes per example).
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of the importance samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ModelFileArgs {
    /// The model file (model.safetensors from `elbo train`).
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Output file (PNG) or folder (for `pictures`) [default: beside the model].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args, Debug)]
struct SampleArgs {
    #[command(flatten)]
    common: ModelFileArgs,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Also write the decoded means as a .npy matrix.
    #[arg(long)]
    npy: Option<PathBuf>,
    /// Also write the z used as a .npy matrix.
    #[arg(long)]
    z_npy: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct EncodeArgs {
    #[command(flatten)]
    common: ModelFileArgs,
    /// Where to write: a .npy or .csv file.
    #[arg(long)]
    output: PathBuf,
    /// Use only the first N test examples.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(clap::Args, Debug)]
struct IdentitiesArgs {
    /// Seed of the model, the point and the draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Monte-Carlo draws.
    #[arg(long, default_value_t = 100_000)]
    draws: usize,
}

#[derive(clap::Args, Debug)]
struct GradcheckArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Examples in the batch.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// z samples per example (or K of the importance-weighted bound with --iw).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Check the importance-weighted bound instead of the ELBO.
    #[arg(long)]
    iw: bool,
    /// KL weight.
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// Entries checked per tensor (evenly spaced); each costs two forward passes.
    #[arg(long, default_value_t = 50)]
    per_tensor: usize,
    /// Finite-difference step.
    #[arg(long, default_value_t = 1e-5)]
    step: f64,
    /// Seed of the parameters and the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Serialize)]
struct Report<'a> {
    data: &'a DataArgs,
    train_examples: usize,
    test_examples: usize,
    precision: Precision,
    threads: usize,
    model: &'a VaeConfig,
    training: &'a TrainConfig,
    epochs: &'a [EpochReport],
}

fn load_data(args: &DataArgs, train_limit: Option<usize>) -> Result<(Dataset, Dataset)> {
    let (train, test) = match args.data.unwrap_or(DataKind::Shapes) {
        DataKind::Shapes => {
            if args.shapes_size == 0 {
                return Err(Error::config("shapes size", 0, "must be at least 1"));
            }
            let n = args.shapes_size;
            let test_n = (n / 10).max(1);
            (
                shapes::generate(args.data_seed, 0, n)?,
                shapes::generate(args.data_seed, n as u64, test_n)?,
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
        DataKind::File => {
            let path = args.data_path.clone().ok_or_else(|| {
                Error::config(
                    "data-path",
                    "(none)",
                    "--data file needs --data-path with a .npy or .csv matrix",
                )
            })?;
            let all = elbo::files::read_matrix(&path)?;
            match &args.test_path {
                Some(t) => (all, elbo::files::read_matrix(t)?),
                None => {
                    if all.len() < 2 {
                        return Err(Error::InvalidData(format!(
                            "{}: {} row(s); give --test-path or at least 2 rows",
                            path.display(),
                            all.len()
                        )));
                    }
                    let n_test = (all.len() / 10).max(1);
                    all.split_at(all.len() - n_test)
                }
            }
        }
    };
    let train = match train_limit {
        Some(0) => return Err(Error::config("limit", 0, "must be at least 1")),
        Some(n) => train.head(n),
        None => train,
    };
    Ok((train, test))
}

fn default_threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What a training run needs besides the trainer.
struct RunContext<'a> {
    data: DataArgs,
    train_limit: Option<usize>,
    precision: Precision,
    threads: usize,
    out: PathBuf,
    json: bool,
    dense_input: bool,
    train: &'a Dataset,
    test: &'a Dataset,
}

fn train(args: TrainArgs) -> Result<()> {
    let threads = default_threads(args.threads);
    if let Some(resume) = &args.resume {
        let path = if resume.is_dir() {
            resume.join("model.safetensors")
        } else {
            resume.clone()
        };
        let meta = checkpoint::metadata(&path)?;
        let data = data_for_model(&meta, &args.data, &path)?;
        let train_limit = meta
            .get("elbo.train_limit")
            .and_then(|s| s.parse().ok())
            .or(args.train_limit);
        let (train, test) = load_data(&data, train_limit)?;
        let ctx = RunContext {
            data,
            train_limit,
            precision: if meta.get("elbo.precision").map(String::as_str) == Some("f64") {
                Precision::F64
            } else {
                Precision::F32
            },
            threads,
            out: args
                .out
                .clone()
                .unwrap_or_else(|| path.parent().map(PathBuf::from).unwrap_or_default()),
            json: args.json,
            dense_input: args.dense_input,
            train: &train,
            test: &test,
        };
        let overrides = (args.lr, args.clip);
        return match ctx.precision {
            Precision::F32 => run(
                &ctx,
                Trainer::<f32>::resume(&path, threads, args.epochs)?.with_overrides(overrides)?,
            ),
            Precision::F64 => run(
                &ctx,
                Trainer::<f64>::resume(&path, threads, args.epochs)?.with_overrides(overrides)?,
            ),
        };
    }
    let (train, test) = load_data(&args.data, args.train_limit)?;
    let vae = Vae::new(
        args.model
            .config(train.dim(), args.data.data.unwrap_or(DataKind::Shapes))?,
    )?;
    let config = TrainConfig {
        epochs: args.epochs.unwrap_or(10),
        batch_size: args.batch_size,
        samples: args.samples,
        beta: args.beta,
        warmup_epochs: args.warmup,
        optimizer: match args.optimizer {
            OptimizerKind::Adam => OptimizerConfig::adam(args.lr.unwrap_or(1e-3)),
            OptimizerKind::Sgd => OptimizerConfig::sgd(args.lr.unwrap_or(1e-3), args.momentum),
        },
        clip_norm: args.clip,
        seed: args.seed,
        binarize: args.binarize,
        iw_samples: args.iw_samples,
    };
    let ctx = RunContext {
        data: args.data.clone(),
        train_limit: args.train_limit,
        precision: args.precision,
        threads,
        out: args.out.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(match args.data.data.unwrap_or(DataKind::Shapes) {
                DataKind::Shapes => "shapes",
                DataKind::Mnist => "mnist",
                DataKind::File => "file",
            })
        }),
        json: args.json,
        dense_input: args.dense_input,
        train: &train,
        test: &test,
    };
    match args.precision {
        Precision::F32 => run(&ctx, Trainer::<f32>::new(vae, config, threads)?),
        Precision::F64 => run(&ctx, Trainer::<f64>::new(vae, config, threads)?),
    }
}

fn run<T: Float>(ctx: &RunContext<'_>, mut trainer: Trainer<T>) -> Result<()> {
    trainer.set_sparse_input(!ctx.dense_input);
    let (train, test, out) = (ctx.train, ctx.test, &ctx.out);
    std::fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let report_path = out.join("report.json");
    let model_path = out.join("model.safetensors");
    // A resumed run keeps the report of the epochs before it.
    let mut epochs: Vec<EpochReport> = if trainer.epochs_done() > 0 {
        std::fs::read(&report_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| serde_json::from_value::<Vec<EpochReport>>(v["epochs"].clone()).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.epoch <= trainer.epochs_done())
            .collect()
    } else {
        Vec::new()
    };
    let write_report = |epochs: &[EpochReport], trainer: &Trainer<T>| -> Result<()> {
        let report = Report {
            data: &ctx.data,
            train_examples: train.len(),
            test_examples: test.len(),
            precision: ctx.precision,
            threads: ctx.threads,
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
        "elbo: {} train / {} test examples of width {}; model {}-{:?}-{}, {} parameters, {} likelihood; {} thread(s), {:?}{}",
        train.len(),
        test.len(),
        train.dim(),
        v.input_dim(),
        v.config().encoder_hidden,
        v.latent_dim(),
        v.num_params(),
        v.config().likelihood,
        ctx.threads,
        ctx.precision,
        if trainer.epochs_done() > 0 {
            format!("; resuming after epoch {}", trainer.epochs_done())
        } else {
            String::new()
        }
    );
    let total_epochs = trainer.config().epochs;
    let bar = if ctx.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(train.len() as u64)
    };
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
    bar.set_prefix(format!(
        "epoch {}/{total_epochs}",
        trainer.epochs_done() + 1
    ));
    let mut extra = vec![
        (
            "elbo.data",
            serde_json::to_string(&ctx.data).expect("serialises"),
        ),
        (
            "elbo.precision",
            serde_json::to_string(&ctx.precision)
                .expect("serialises")
                .trim_matches('"')
                .to_string(),
        ),
    ];
    if let Some(n) = ctx.train_limit {
        extra.push(("elbo.train_limit", n.to_string()));
    }
    let mut on_epoch = |r: &EpochReport, t: &Trainer<T>| -> Result<()> {
        bar.finish_and_clear();
        if ctx.json {
            println!("{}", serde_json::to_string(r).expect("serialises"));
        } else {
            println!("{}", epoch_line(r, total_epochs));
        }
        t.save_checkpoint(&model_path, &extra)?;
        epochs.push(r.clone());
        write_report(&epochs, t)?;
        elbo::pictures::write_curves(&out.join("curves.svg"), &epochs)?;
        if r.epoch < total_epochs {
            bar.reset();
            bar.set_prefix(format!("epoch {}/{total_epochs}", r.epoch + 1));
        }
        Ok(())
    };
    // Ctrl-C: finish the step under way, write a checkpoint, exit; a second Ctrl-C exits now.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    trainer.set_stop_flag(stop);
    match trainer.fit(train, Some(test), &mut progress, &mut on_epoch) {
        Err(Error::Interrupted {
            epoch,
            step,
            batch,
            batches,
        }) => {
            bar.finish_and_clear();
            trainer.save_checkpoint(&model_path, &extra)?;
            eprintln!(
                "interrupted after step {step} (epoch {epoch}, batch {batch} of {batches}); wrote {}. \
                 Continue with: elbo train --resume {}",
                model_path.display(),
                out.display()
            );
            std::process::exit(130);
        }
        Err(e @ Error::Diverged { .. }) => {
            bar.finish_and_clear();
            let kept = match trainer.epochs_done() {
                0 => "no epoch finished, so nothing was saved".to_string(),
                n => format!(
                    "the checkpoint of epoch {n} in {} is kept; continue from it with: \
                     elbo train --resume {} --lr <smaller>",
                    out.display(),
                    out.display()
                ),
            };
            eprintln!("error: {e}. {kept}");
            std::process::exit(1);
        }
        other => other?,
    };
    bar.finish_and_clear();
    let pool = pool(ctx.threads)?;
    let pictures = pool.install(|| {
        elbo::pictures::write_gallery(
            trainer.vae(),
            trainer.params(),
            test,
            out,
            trainer.config().seed,
            ctx.threads,
        )
    });
    if let Err(e) = &pictures {
        eprintln!("note: no pictures: {e}");
    }
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"model": model_path, "report": report_path})
        );
    } else {
        println!(
            "wrote {} and {}",
            model_path.display(),
            report_path.display()
        );
    }
    Ok(())
}

fn epoch_line(r: &EpochReport, total_epochs: usize) -> String {
    let test = r.test.map_or(String::new(), |e| {
        format!(
            "  test -ELBO {:.3} (recon {:.3}, KL {:.3})",
            e.neg_elbo, -e.recon, e.kl
        )
    });
    let active = r.test_latent.as_ref().map_or(String::new(), |l| {
        format!("  active units {}/{}", l.active_units, l.kl_per_dim.len())
    });
    let iw = r
        .train
        .iw_bound
        .map_or(String::new(), |b| format!("  train IW bound {b:.3}"));
    format!(
        "epoch {:>3}/{total_epochs}  train -ELBO {:.3} (recon {:.3}, KL {:.3}){iw}{test}{active}  beta {:.3}  {:.2} s, {:.0} img/s",
        r.epoch,
        r.train.neg_elbo,
        -r.train.recon,
        r.train.kl,
        r.beta,
        r.train_seconds,
        r.images_per_sec
    )
}

fn pool(threads: usize) -> Result<elbo::kernels::pool::ThreadPool> {
    elbo::kernels::pool::ThreadPool::new(threads.max(1))
}

/// The data a saved model goes with: the options' if they name a dataset, else the one in the
/// file's metadata, else the default.
fn data_for_model(
    meta: &std::collections::HashMap<String, String>,
    given: &DataArgs,
    path: &std::path::Path,
) -> Result<DataArgs> {
    match (given.data, meta.get("elbo.data")) {
        (None, Some(s)) => serde_json::from_str(s)
            .map_err(|e| Error::malformed(path, format!("bad data settings ({e})"))),
        _ => Ok(given.clone()),
    }
}

/// A saved model and the test set it was trained beside (or the one the options name).
fn load_model(args: &ModelFileArgs) -> Result<(checkpoint::Loaded<f32>, Dataset)> {
    let loaded = checkpoint::load::<f32>(&args.model)?;
    let data = data_for_model(&loaded.metadata, &args.data, &args.model)?;
    let (_, test) = load_data(&data, None)?;
    test.check_for(loaded.vae.input_dim(), loaded.vae.config().likelihood)?;
    Ok((loaded, test))
}

fn beside_model(args: &ModelFileArgs, name: &str) -> PathBuf {
    args.out.clone().unwrap_or_else(|| {
        args.model
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(name)
    })
}

fn sample(args: SampleArgs) -> Result<()> {
    let loaded = checkpoint::load::<f32>(&args.common.model)?;
    if args.n == 0 {
        return Err(Error::config("n", 0, "must be at least 1"));
    }
    let threads = default_threads(args.common.threads);
    let zd = loaded.vae.latent_dim();
    let mut z = vec![0f32; args.n * zd];
    elbo::rng::fill_normal(
        &mut elbo::rng::stream(args.common.seed, elbo::rng::Purpose::Eval, u64::MAX - 1),
        &mut z,
    );
    let means = pool(threads)?.install(|| loaded.vae.decode_mean(&loaded.params, &z, threads))?;
    let d = loaded.vae.input_dim();
    let s = (d as f64).sqrt().round() as usize;
    let out = beside_model(&args.common, "samples.png");
    if s * s == d {
        let images: Vec<Vec<f32>> = means.chunks(d).map(|c| c.to_vec()).collect();
        elbo::pictures::write_grid(&out, &images, (s, s), 8, 2)?;
        println!("wrote {}", out.display());
    }
    if let Some(p) = &args.npy {
        elbo::files::write_matrix(p, args.n, d, &means, &[])?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &args.z_npy {
        elbo::files::write_matrix(p, args.n, zd, &z, &[])?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn reconstruct(args: ModelFileArgs) -> Result<()> {
    let (loaded, test) = load_model(&args)?;
    let threads = default_threads(args.threads);
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating", "a temporary folder", e))?;
    let files = pool(threads)?.install(|| {
        elbo::pictures::write_gallery(
            &loaded.vae,
            &loaded.params,
            &test,
            dir.path(),
            args.seed,
            threads,
        )
    })?;
    let src = files
        .iter()
        .find(|f| f.ends_with("reconstructions.png"))
        .expect("always written");
    let out = beside_model(&args, "reconstructions.png");
    std::fs::copy(src, &out).map_err(|e| Error::io("writing", &out, e))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn pictures(args: ModelFileArgs) -> Result<()> {
    let (loaded, test) = load_model(&args)?;
    let threads = default_threads(args.threads);
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| args.model.parent().map(PathBuf::from).unwrap_or_default());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    let files = pool(threads)?.install(|| {
        elbo::pictures::write_gallery(&loaded.vae, &loaded.params, &test, &dir, args.seed, threads)
    })?;
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn encode(args: EncodeArgs) -> Result<()> {
    let (loaded, test) = load_model(&args.common)?;
    let test = match args.limit {
        Some(0) => return Err(Error::config("limit", 0, "must be at least 1")),
        Some(n) => test.head(n),
        None => test,
    };
    let threads = default_threads(args.common.threads);
    let x = test.to_array::<f32>().into_raw_vec_and_offset().0;
    let (mu, lv) = pool(threads)?.install(|| loaded.vae.encode(&loaded.params, &x, threads))?;
    let zd = loaded.vae.latent_dim();
    let mut out = Vec::with_capacity(test.len() * 2 * zd);
    for (m, l) in mu.chunks(zd).zip(lv.chunks(zd)) {
        out.extend_from_slice(m);
        out.extend(l.iter().map(|v| v.exp()));
    }
    let header: Vec<String> = (0..zd)
        .map(|j| format!("mu_{j}"))
        .chain((0..zd).map(|j| format!("var_{j}")))
        .collect();
    elbo::files::write_matrix(&args.output, test.len(), 2 * zd, &out, &header)?;
    println!(
        "wrote {} ({} rows: {zd} means then {zd} variances)",
        args.output.display(),
        test.len()
    );
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let loaded = checkpoint::load::<f32>(&args.model)?;
    let data_args = data_for_model(&loaded.metadata, &args.data, &args.model)?;
    let (_, test) = load_data(&data_args, None)?;
    let test = match args.limit {
        Some(0) => return Err(Error::config("limit", 0, "must be at least 1")),
        Some(n) => test.head(n),
        None => test,
    };
    let threads = default_threads(args.threads);
    let evaluation = elbo::train::evaluate(
        &loaded.vae,
        &loaded.params,
        &test,
        256,
        1,
        args.seed,
        threads,
    )?;
    let marginal = elbo::objective::estimate_log_marginal(
        &loaded.vae,
        &loaded.params,
        &test,
        &args.k,
        args.seed,
        threads,
    )?;
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "points": test.len(),
            "elbo": { "elbo": marginal.elbo, "recon": marginal.recon, "kl": marginal.kl },
            "log_px": marginal.estimates,
            "gap": marginal.gap,
            "latent": evaluation.latent,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialises")
        );
        return Ok(());
    }
    println!(
        "{} test examples, model {}",
        test.len(),
        args.model.display()
    );
    println!(
        "ELBO            {:>10.3}  (recon {:.3}, KL {:.3}; recon averaged over {} draws per example)",
        marginal.elbo,
        marginal.recon,
        marginal.kl,
        args.k.iter().max().copied().unwrap_or(0)
    );
    for e in &marginal.estimates {
        println!(
            "log p(x), k={:<5}{:>10.3}  +- {:.3} (standard error over examples)",
            e.k, e.log_px, e.std_err
        );
    }
    println!(
        "gap log p(x) - ELBO = KL(q(z|x) || p(z|x)) ~ {:.3}",
        marginal.gap
    );
    let l = &evaluation.latent;
    println!(
        "active units {}/{} (Var_x E_q[z_j] > {}); KL per dimension: {}",
        l.active_units,
        l.kl_per_dim.len(),
        elbo::train::ACTIVE_UNIT_THRESHOLD,
        l.kl_per_dim
            .iter()
            .map(|k| format!("{k:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

fn gradcheck(args: GradcheckArgs) -> Result<()> {
    use elbo::objective::{Elbo, Iwae, Workspace};
    let (train, _) = load_data(&args.data, None)?;
    let config = args
        .model
        .config(train.dim(), args.data.data.unwrap_or(DataKind::Shapes))?;
    let vae = Vae::new(config)?;
    if args.batch_size == 0 || args.batch_size > train.len() {
        return Err(Error::config(
            "batch size",
            args.batch_size,
            "must be between 1 and the size of the data",
        ));
    }
    if !(args.step.is_finite() && args.step > 0.0) {
        return Err(Error::config("step", args.step, "must be finite and > 0"));
    }
    let rows = args.batch_size;
    let mut params: Vec<f64> = vae.init_params(args.seed);
    if let Some(t) = vae.layout().get("likelihood.log_variance") {
        params[t.range()]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = 0.1 * ((i % 7) as f64 - 3.0));
    }
    let mut ws = Workspace::<f64>::new(&vae, rows, args.samples, 1)?;
    train.gather(
        &(0..rows).collect::<Vec<_>>(),
        &mut ws.x[..rows * train.dim()],
    );
    elbo::rng::fill_normal(
        &mut elbo::rng::stream(args.seed, elbo::rng::Purpose::Noise, 0),
        &mut ws.eps,
    );
    let mut grads = vec![0.0; vae.num_params()];
    let objective = if args.iw {
        "-(importance-weighted bound)"
    } else {
        "-ELBO (batch mean, beta-weighted KL)"
    };
    if args.iw {
        let iwae = Iwae::new(&vae);
        iwae.forward(&params, &mut ws, rows);
        iwae.backward(&params, &mut ws, rows, &mut grads);
    } else {
        let elbo = Elbo::new(&vae);
        elbo.forward(&params, &mut ws, rows);
        elbo.backward(&params, &mut ws, rows, args.beta, &mut grads);
    }
    let mut ws2 = ws.clone();
    let (iw, beta) = (args.iw, args.beta);
    let loss = |t: &[f64]| {
        if iw {
            -Iwae::new(&vae).forward(t, &mut ws2, rows).bound
        } else {
            Elbo::new(&vae).forward(t, &mut ws2, rows).loss(beta)
        }
    };
    let tol = elbo::gradcheck::Tolerance::DEFAULT;
    let checks = elbo::gradcheck::check_entries(
        vae.layout(),
        &params,
        &grads,
        loss,
        args.step,
        tol,
        args.per_tensor,
    );
    println!(
        "gradient of {objective} for {} examples x {} samples, eps held fixed; f64;\n\
         numerical = (f(p + h) - f(p - h)) / 2h with h = {}; pass when |analytic - numerical| <= {} + {} |numerical|\n",
        rows, args.samples, args.step, tol.atol, tol.rtol
    );
    print!("{}", elbo::gradcheck::format_table(&checks));
    let failed = checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        return Err(Error::InvalidData(format!(
            "{failed} tensor(s) failed the gradient check"
        )));
    }
    println!("\nall {} tensors agree", checks.len());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Identities(args) => {
            elbo::objective::linear_gaussian::IdentitiesReport::compute(args.seed, args.draws)
                .map(|r| print!("{r}"))
        }
        Command::Gradcheck(args) => gradcheck(args),
        Command::Sample(args) => sample(args),
        Command::Reconstruct(args) => reconstruct(args),
        Command::Encode(args) => encode(args),
        Command::Pictures(args) => pictures(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
