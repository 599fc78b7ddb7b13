//! `elbo train`: a run, its progress, report, checkpoints and pictures.

use std::path::PathBuf;

use elbo::data::Dataset;
use elbo::train::checkpoint;
use elbo::{
    EpochReport, Error, Float, OptimizerConfig, Result, TrainConfig, Trainer, Vae, VaeConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::args::*;
use crate::saved_model::*;

#[derive(clap::Args, Debug)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Use only the first N training examples.
    #[arg(long)]
    pub(crate) train_limit: Option<usize>,
    /// Weight of the KL term (1 is the ELBO) [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) beta: Option<f64>,
    /// Epochs of linear KL warm-up from 0 to beta [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) warmup: Option<f64>,
    /// Train the importance-weighted bound with K samples per example instead of the ELBO.
    #[arg(long, value_name = "K")]
    pub(crate) iw_samples: Option<usize>,
    /// Use dense products in the first layer even for mostly-zero inputs such as MNIST (the
    /// default skips zero pixels; both agree to rounding). For timing at equal arithmetic.
    #[arg(long)]
    pub(crate) dense_input: bool,
    /// Optimizer [default: adam].
    #[arg(long, value_enum)]
    pub(crate) optimizer: Option<OptimizerKind>,
    /// Learning rate [default: 1e-3]; with --resume, replaces the saved one.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) lr: Option<f64>,
    /// Momentum (SGD only) [default: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) momentum: Option<f64>,
    /// Adam's epsilon, added to the denominator [default: 1e-8; scVI uses 0.01].
    #[arg(long)]
    pub(crate) adam_eps: Option<f64>,
    /// Coupled L2 weight decay added to every gradient [default: 0; scVI uses 1e-6].
    #[arg(long)]
    pub(crate) weight_decay: Option<f64>,
    /// Clip the gradient's norm to this value; with --resume, replaces the saved setting.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) clip: Option<f64>,
    /// Examples per step [default: 128, or the whole training set when it is smaller].
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Passes over the training set (with --resume: the new total) [default: 10].
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Continue a run from its output folder (or model file): model, settings and data come
    /// from the checkpoint, and the result is bit-identical to a run never stopped.
    #[arg(long, value_name = "DIR|FILE")]
    pub(crate) resume: Option<PathBuf>,
    /// Print one JSON object per epoch (and one at the end) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// z samples per example [default: 1].
    #[arg(long)]
    pub(crate) samples: Option<usize>,
    /// Seed for initialisation, order and noise [default: 0].
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Threads [default: all cores; under mpirun, this machine's cores shared among its
    /// processes].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Cut each batch into S shards whose gradients are computed alone and added in a fixed
    /// tree: the run is then bit-identical on any number of processes P (under mpirun, with
    /// the `mpi` feature) for which S / P is a power of two. Needed when P > 1 [default:
    /// unsharded].
    #[arg(long, value_name = "S")]
    pub(crate) shards: Option<usize>,
    /// Resample binary pixels from grey levels at every step.
    #[arg(long)]
    pub(crate) binarize: bool,
    /// Arithmetic: f32 (fast), f64, or bf16: an f32 model whose dense layers' products take
    /// bf16 operands with f32 sums in training steps (AMX or AVX512-BF16 when the CPU has
    /// them; evaluation stays f32) [default: f32].
    #[arg(long, value_enum)]
    pub(crate) precision: Option<Precision>,
    /// Output folder for model.safetensors and report.json [default: runs/<data>].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Serialize)]
pub(crate) struct Report<'a> {
    pub(crate) data: &'a DataArgs,
    pub(crate) train_examples: usize,
    pub(crate) test_examples: usize,
    pub(crate) precision: Precision,
    pub(crate) threads: usize,
    pub(crate) processes: usize,
    pub(crate) model: &'a VaeConfig,
    pub(crate) training: &'a TrainConfig,
    pub(crate) epochs: &'a [EpochReport],
}

/// What a training run needs besides the trainer.
pub(crate) struct RunContext<'a> {
    pub(crate) data: DataArgs,
    pub(crate) train_limit: Option<usize>,
    pub(crate) precision: Precision,
    pub(crate) threads: usize,
    pub(crate) out: PathBuf,
    pub(crate) json: bool,
    pub(crate) dense_input: bool,
    pub(crate) train: &'a Dataset,
    pub(crate) test: &'a Dataset,
}

pub(crate) fn train(args: TrainArgs) -> std::result::Result<(), Failure> {
    let (membership, member) = match crate::group::join()? {
        Some((m, c)) => (Some(m), Some(c)),
        None => (None, None),
    };
    let result = train_in(args, member);
    if let (Some(m), Err(f)) = (&membership, &result)
        && m.size() > 1
    {
        match f {
            // Every process reached the same verdict and ends by itself.
            Failure::Error(Error::Distributed(_) | Error::Diverged { .. })
            | Failure::Reported(_) => {}
            Failure::Error(e) => {
                // This process alone: the others would wait for it forever.
                eprintln!("error: {e}; ending every process of the job");
                m.abort(1)
            }
        }
    }
    result
}

fn train_in(
    args: TrainArgs,
    member: Option<Box<dyn elbo::Collective>>,
) -> std::result::Result<(), Failure> {
    let threads = match (args.threads, &member) {
        (None, Some(_)) => {
            default_threads(None).div_ceil(crate::group::processes_on_this_machine())
        }
        (t, _) => default_threads(t),
    };
    args.data.check_applicable()?;
    if let Some(resume) = &args.resume {
        if let Some(name) = args.model.first_given() {
            return Err(Error::config(
                name,
                "given with --resume",
                "cannot change a resumed run's model, which is the checkpoint's; \
                 train a new run instead",
            )
            .into());
        }
        let path = if resume.is_dir() {
            resume.join("model.safetensors")
        } else {
            resume.clone()
        };
        let meta = checkpoint::metadata(&path)?;
        let data = data_for_model(&meta, &args.data, &path)?;
        let stored_limit: Option<usize> = meta.get("elbo.train_limit").and_then(|s| s.parse().ok());
        if args.train_limit.is_some() && args.train_limit != stored_limit {
            return Err(Error::config(
                "train-limit",
                args.train_limit.unwrap_or_default(),
                "cannot change the training set of a resumed run",
            )
            .into());
        }
        // The run's settings are the checkpoint's; only --epochs, --lr and --clip may change.
        let fixed = [
            ("beta", args.beta.is_some()),
            ("warmup", args.warmup.is_some()),
            ("iw-samples", args.iw_samples.is_some()),
            ("optimizer", args.optimizer.is_some()),
            ("momentum", args.momentum.is_some()),
            ("adam-eps", args.adam_eps.is_some()),
            ("weight-decay", args.weight_decay.is_some()),
            ("batch-size", args.batch_size.is_some()),
            ("samples", args.samples.is_some()),
            ("seed", args.seed.is_some()),
            ("binarize", args.binarize),
            ("precision", args.precision.is_some()),
            ("shards", args.shards.is_some()),
        ];
        if let Some((name, _)) = fixed.iter().find(|(_, given)| *given) {
            return Err(Error::config(
                name,
                "given with --resume",
                "is the checkpoint's and cannot change on resume (only --epochs, --lr and --clip can)",
            )
            .into());
        }
        let train_limit = stored_limit;
        let (mut train, test) = load_data(&data, train_limit)?;
        // Training never reads labels; a file of millions of cells would keep a byte each.
        train.labels = None;
        let ctx = RunContext {
            data: data.absolute()?,
            train_limit,
            precision: match meta.get("elbo.precision").map(String::as_str) {
                Some("f64") => Precision::F64,
                Some("bf16") => Precision::Bf16,
                _ => Precision::F32,
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
        let par = elbo::Parallelism::threads(threads)?;
        return match ctx.precision {
            Precision::F32 | Precision::Bf16 => run(
                &ctx,
                something_to_do(Trainer::<f32>::resume(&path, &par, args.epochs)?)?
                    .with_overrides(overrides)?,
                member,
            ),
            Precision::F64 => run(
                &ctx,
                something_to_do(Trainer::<f64>::resume(&path, &par, args.epochs)?)?
                    .with_overrides(overrides)?,
                member,
            ),
        };
    }
    let optimizer = args.optimizer.unwrap_or(OptimizerKind::Adam);
    if args.adam_eps.is_some() && optimizer != OptimizerKind::Adam {
        return Err(Error::config(
            "adam-eps",
            args.adam_eps.unwrap_or_default(),
            "applies only to --optimizer adam",
        )
        .into());
    }
    if args.momentum.is_some() && optimizer != OptimizerKind::Sgd {
        return Err(Error::config(
            "momentum",
            args.momentum.unwrap_or_default(),
            "applies only to --optimizer sgd",
        )
        .into());
    }
    let (mut train, test) = load_data(&args.data, args.train_limit)?;
    // Training never reads labels; a file of millions of cells would keep a byte each.
    train.labels = None;
    let vae = Vae::new(
        args.model
            .config(train.dim(), args.data.data.unwrap_or(DataKind::Shapes))?,
    )?;
    let batch_size = match args.batch_size {
        Some(b) => b,
        None if train.len() < 128 => {
            eprintln!(
                "note: the training set has {} examples, fewer than the default batch of 128; \
                 using batches of {}",
                train.len(),
                train.len()
            );
            train.len()
        }
        None => 128,
    };
    let config = TrainConfig::default()
        .epochs(args.epochs.unwrap_or(10))
        .batch_size(batch_size)
        .samples(args.samples.unwrap_or(1))
        .beta(args.beta.unwrap_or(1.0))
        .warmup_epochs(args.warmup.unwrap_or(0.0))
        .optimizer(match optimizer {
            OptimizerKind::Adam => match OptimizerConfig::adam(args.lr.unwrap_or(1e-3)) {
                OptimizerConfig::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => OptimizerConfig::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps: args.adam_eps.unwrap_or(eps),
                },
                other => other,
            },
            OptimizerKind::Sgd => {
                OptimizerConfig::sgd(args.lr.unwrap_or(1e-3), args.momentum.unwrap_or(0.9))
            }
        })
        .clip_norm(args.clip)
        .weight_decay(args.weight_decay.unwrap_or(0.0))
        .seed(args.seed.unwrap_or(0))
        .binarize(args.binarize)
        .iw_samples(args.iw_samples)
        .shards(args.shards);
    let ctx = RunContext {
        data: args.data.absolute()?,
        train_limit: args.train_limit,
        precision: args.precision.unwrap_or(Precision::F32),
        threads,
        out: args.out.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(match args.data.data.unwrap_or(DataKind::Shapes) {
                DataKind::Shapes => "shapes",
                DataKind::Mnist => "mnist",
                DataKind::File => "file",
                DataKind::Cells => "cells",
                DataKind::Counts => "counts",
            })
        }),
        json: args.json,
        dense_input: args.dense_input,
        train: &train,
        test: &test,
    };
    match args.precision.unwrap_or(Precision::F32) {
        Precision::F32 => run(
            &ctx,
            Trainer::<f32>::new(vae, config, &elbo::Parallelism::threads(threads)?)?,
            member,
        ),
        Precision::Bf16 => run(
            &ctx,
            Trainer::<f32>::new(
                vae,
                config.precision(elbo::Precision::Bf16),
                &elbo::Parallelism::threads(threads)?,
            )?,
            member,
        ),
        Precision::F64 => run(
            &ctx,
            Trainer::<f64>::new(vae, config, &elbo::Parallelism::threads(threads)?)?,
            member,
        ),
    }
}

/// A resumed run with epochs left to train; one that has done them all would train nothing and
/// rewrite its files, so it is refused with what to do instead.
fn something_to_do<T: Float>(trainer: Trainer<T>) -> Result<Trainer<T>> {
    let (done, total) = (trainer.epochs_done(), trainer.config().epochs);
    if done >= total {
        return Err(Error::config(
            "epochs",
            format!("{total} (the run has done {done})"),
            "is no more than the epochs this run has done; give --epochs with a larger total \
             to train further",
        ));
    }
    Ok(trainer)
}

pub(crate) fn run<T: Float>(
    ctx: &RunContext<'_>,
    mut trainer: Trainer<T>,
    member: Option<Box<dyn elbo::Collective>>,
) -> std::result::Result<(), Failure> {
    trainer.set_sparse_input(!ctx.dense_input);
    if let Some(m) = member {
        trainer.set_group(m)?;
    }
    // Under MPI, process 0 alone writes files and prints; the others train in silence.
    let (root, processes) = (trainer.rank() == 0, trainer.group_size());
    let (train, test, out) = (ctx.train, ctx.test, &ctx.out);
    if root {
        std::fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    }
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
        if !root {
            return Ok(());
        }
        let report = Report {
            processes,
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
    let procs = if processes > 1 {
        format!("{processes} processes x ")
    } else {
        String::new()
    };
    let shards = trainer
        .config()
        .shards
        .map_or(String::new(), |s| format!(", {s} shards a batch"));
    if root {
        eprintln!(
            "elbo: {} train / {} test examples of width {}; model {}-{:?}-{}, {} parameters, {} likelihood; {procs}{} thread(s){shards}, {}{}",
            train.len(),
            test.len(),
            train.dim(),
            v.input_dim(),
            v.config().encoder_hidden,
            v.latent_dim(),
            v.num_params(),
            v.config().likelihood,
            ctx.threads,
            match ctx.precision {
                Precision::Bf16 => format!("Bf16 products on {:?}", elbo::Bf16Path::best()),
                other => format!("{other:?}"),
            },
            if trainer.epochs_done() > 0 {
                format!("; resuming after epoch {}", trainer.epochs_done())
            } else {
                String::new()
            }
        );
    }
    let total_epochs = trainer.config().epochs;
    let bar = if ctx.json || !root {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(train.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let progress = {
        let bar = bar.clone();
        move |done: usize, loss: f64| {
            bar.set_position(done as u64);
            // Our own rate: indicatif's {per_sec} prints four decimals ("6,024.2992/s").
            let rate = done as f64 / bar.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{rate:.0} examples/s  loss {loss:.2}"));
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
    if let Some(genes) = &train.feature_names {
        // The genes the model reads, in its input order: what --top-genes kept.
        extra.push((
            "elbo.genes",
            serde_json::to_string(genes).expect("serialises"),
        ));
    }
    let on_epoch = |r: &EpochReport, t: &Trainer<T>| -> Result<()> {
        if !root {
            return Ok(());
        }
        bar.finish_and_clear();
        if ctx.json {
            println!("{}", serde_json::to_string(r).expect("serialises"));
        } else {
            println!("{}", epoch_line(r, total_epochs));
        }
        t.save_checkpoint(&model_path, &extra)?;
        epochs.push(r.clone());
        write_report(&epochs, t)?;
        elbo::pictures::write_curves(out.join("curves.svg"), &epochs)?;
        if r.epoch < total_epochs {
            bar.reset();
            bar.set_prefix(format!("epoch {}/{total_epochs}", r.epoch + 1));
        }
        Ok(())
    };
    // Ctrl-C: finish the step under way, write a checkpoint, exit; a second Ctrl-C exits now.
    // Not under MPI with others: each process would see its own Ctrl-C at its own step, and
    // the rest would wait for it; mpirun ends them all, and the last epoch's checkpoint stays.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if processes == 1 {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // A second Ctrl-C means "now": nothing is left to save or join.
                std::process::exit(130);
            }
        });
    }
    let options = elbo::FitOptions::new()
        .test(test)
        .progress(progress)
        .on_epoch(on_epoch)
        .stop_flag(stop);
    match trainer.fit(train, options) {
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
            // Returned, not exited: the trainer and its threads are dropped on the way out.
            return Err(Failure::Reported(130));
        }
        Err(e @ (Error::Diverged { .. } | Error::Distributed(_))) if !root => {
            // Every process says it: mpirun ends the job when the first one exits, which may
            // be before process 0 has printed anything.
            eprintln!("error (process {}): {e}", trainer.rank());
            return Err(Failure::Reported(1));
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
            return Err(Failure::Reported(1));
        }
        other => other?,
    };
    bar.finish_and_clear();
    if !root {
        return Ok(());
    }
    let pool = pool(ctx.threads)?;
    // The model alone crosses to the pool's threads, not the trainer (whose process group is
    // not to be shared between threads).
    let (vae, params, seed) = (trainer.vae(), trainer.params(), trainer.config().seed);
    let pictures =
        pool.run(|| elbo::pictures::write_gallery(vae, params, test, out, seed, ctx.threads));
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

/// One epoch on the terminal, in the one sign convention of the whole crate: the ELBO's terms
/// as they are, E log p(x|z) (a log-likelihood, negative for pixels) and KL >= 0; a cost is
/// always written with its minus sign, −ELBO = KL − E log p(x|z), and −IW for the
/// importance-weighted bound.
pub(crate) fn epoch_line(r: &EpochReport, total_epochs: usize) -> String {
    let test = r.test.map_or(String::new(), |e| {
        format!(
            "  test −ELBO {:.3} (E log p(x|z) {:.3}, KL {:.3})",
            e.neg_elbo, e.recon, e.kl
        )
    });
    let active = r.test_latent.as_ref().map_or(String::new(), |l| {
        format!("  active units {}/{}", l.active_units, l.kl_per_dim.len())
    });
    let iw = r
        .train
        .iw_bound
        .map_or(String::new(), |b| format!("  train −IW {:.3}", -b));
    format!(
        "epoch {:>3}/{total_epochs}  train −ELBO {:.3} (E log p(x|z) {:.3}, KL {:.3}){iw}{test}{active}  beta {:.3}  {:.2} s, {:.0} examples/s",
        r.epoch,
        r.train.neg_elbo,
        r.train.recon,
        r.train.kl,
        r.beta,
        r.train_seconds,
        r.images_per_sec
    )
}
