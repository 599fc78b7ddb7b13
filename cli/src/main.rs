//! `elbo`: train variational autoencoders with hand-written gradients.

mod alloc;
mod args;
mod commands;
mod group;
mod saved_model;

use std::process::ExitCode;

/// Large blocks on cache lines (see [`alloc`]).
#[global_allocator]
static HEAP: alloc::LineAligned = alloc::LineAligned;

use clap::{Parser, Subcommand};

use crate::commands::{
    encode::*, eval::*, gradcheck::*, identities::*, reconstruct::*, sample::*, train::*,
};

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

// Parsed once per process: the size of its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
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
    Reconstruct(saved_model::ModelFileArgs),
    /// The posterior means and variances of the test set, to .npy or .csv (columns mu_j, then
    /// var_j).
    #[command(
        after_help = "Example:\n  elbo encode runs/shapes/model.safetensors --out latents.csv"
    )]
    Encode(EncodeArgs),
    /// Every picture of a saved model: samples, reconstructions, an interpolation, latent
    /// traversals, and for 2-D latents the manifold and a scatter of the means.
    #[command(
        after_help = "Example:\n  elbo pictures runs/mnist/model.safetensors --out pictures/"
    )]
    Pictures(saved_model::ModelFileArgs),
    /// Compare each parameter tensor's hand-written gradient of -ELBO with central finite
    /// differences (f64) for a model described with the same options as `train`.
    #[command(
        after_help = "Example:\n  elbo gradcheck --hidden 32,16 --latent 4 --activation tanh --likelihood gaussian-learned"
    )]
    Gradcheck(GradcheckArgs),
    /// Write the training and test sets as `train` reads them (after the split and
    /// --top-genes) to .npy, with labels and gene names, to train the same data elsewhere.
    #[command(after_help = "Example:\n  elbo export --data cells --out cells-data/")]
    Export(commands::export::ExportArgs),
    /// Write data to elbo's own matrix file (a header, offsets, indices and values, read
    /// memory-mapped): counts and `cells` sparse, other data dense. `cells` is written straight
    /// from the generator in bounded memory, however many cells; count data whole, with the
    /// kept genes; data with a test set of their own as their training set (OUT) and test set
    /// (OUT with extension .test.elbo).
    #[command(
        after_help = "Examples:\n  elbo convert --data cells --cells 20000000 --out cells-20m.elbo\n  elbo convert --data counts --data-path ../shared/data/pbmc-celltypist --out pbmc.elbo"
    )]
    Convert(commands::convert::ConvertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => return finish(train(args)),
        Command::Eval(args) => eval(args),
        Command::Identities(args) => {
            elbo::testbed::linear_gaussian::IdentitiesReport::compute(args.seed, args.draws)
                .map(|r| print!("{r}"))
        }
        Command::Gradcheck(args) => gradcheck(args),
        Command::Sample(args) => sample(args),
        Command::Reconstruct(args) => reconstruct(args),
        Command::Encode(args) => encode(args),
        Command::Pictures(args) => commands::pictures::pictures(args),
        Command::Export(args) => commands::export::export(args),
        Command::Convert(args) => commands::convert::convert(args),
    };
    finish(result.map_err(args::Failure::from))
}

/// The exit code of a finished command, printing its error if it has one. Every command
/// returns here rather than exiting, so its thread pools are joined first.
fn finish(result: Result<(), args::Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(args::Failure::Error(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(args::Failure::Reported(code)) => ExitCode::from(code),
    }
}
