//! `elbo eval`: the ELBO, importance-sampled log p(x), the gap and the latent diagnostics of a
//! saved model on a test set.

use std::path::PathBuf;

use elbo::train::checkpoint;
use elbo::{Error, Result};

use crate::args::*;
use crate::saved_model::*;

#[derive(clap::Args, Debug)]
pub(crate) struct EvalArgs {
    /// The model file (model.safetensors from `elbo train`).
    pub(crate) model: PathBuf,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Importance samples per point, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000,5000")]
    pub(crate) k: Vec<usize>,
    /// Use only the first N test examples (k = 5000 costs 5000 decoder passes per example).
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Seed of the importance samples.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Threads [default: all cores].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn eval(args: EvalArgs) -> Result<()> {
    let loaded = checkpoint::load::<f32>(&args.model)?;
    let data_args = data_for_model(&loaded.metadata, &args.data, &args.model)?;
    let (train, test) = load_data(&data_args, None)?;
    let train = model_genes(&loaded.metadata, train, &args.model)?;
    let test = model_genes(&loaded.metadata, test, &args.model)?;
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
        &pool(threads)?,
    )?;
    // log p(x) with k up to 5000 takes minutes on a full test set: show that work goes on.
    let spinner = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    spinner.set_message(format!(
        "estimating log p(x) on {} examples with k up to {} ...",
        test.len(),
        args.k.iter().max().copied().unwrap_or(0)
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let marginal = elbo::objective::estimate_log_marginal(
        &loaded.vae,
        &loaded.params,
        &test,
        &args.k,
        args.seed,
        &pool(threads)?,
    )?;
    spinner.finish_and_clear();
    // With labels on rows that are not images (cell types): how well the latent means separate
    // them, as a 15-nearest-neighbour classifier fitted on the training cells' means.
    let knn = match (&train.labels, &test.labels, train.image_shape) {
        (Some(train_labels), Some(test_labels), None) if train.len() >= 15 => {
            let par = pool(threads)?;
            let fit = elbo::train::latent_means(&loaded.vae, &loaded.params, &train, &par)?;
            let held = elbo::train::latent_means(&loaded.vae, &loaded.params, &test, &par)?;
            Some(elbo::train::knn_accuracy(
                &fit,
                train_labels,
                &held,
                test_labels,
                loaded.vae.latent_dim(),
                15,
            )?)
        }
        _ => None,
    };
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "points": test.len(),
            "elbo": { "elbo": marginal.elbo, "recon": marginal.recon, "kl": marginal.kl },
            "log_px": marginal.estimates,
            "gap": marginal.gap,
            "latent": evaluation.latent,
            "knn15_accuracy": knn,
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
        "ELBO            {:>10.3}  (E log p(x|z) {:.3}, KL {:.3}; E log p(x|z) averaged over {} draws per example)",
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
    if let Some(acc) = knn {
        println!(
            "15-NN accuracy of the test cells' latent means (fitted on the training cells): {:.2}%",
            100.0 * acc
        );
    }
    Ok(())
}
