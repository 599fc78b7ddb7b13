//! Options shared by several subcommands, and loading the data they name.

use std::path::PathBuf;

use clap::ValueEnum;
use elbo::data::{Dataset, mnist, shapes};
use elbo::{Activation, Error, Likelihood, Result, VaeConfig};
use serde::Serialize;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DataKind {
    /// The procedural dSprites-like set (no files needed).
    Shapes,
    /// MNIST from IDX files (raw or gzipped) in --data-dir.
    Mnist,
    /// Your own matrix, one row an example: --data-path X.npy or X.csv (--test-path, or the
    /// last tenth is held out for testing).
    File,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub(crate) enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Precision {
    F32,
    F64,
}

/// Which data, shared by every subcommand.
#[derive(clap::Args, Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct DataArgs {
    /// Dataset [default: shapes; for eval, the one the model was trained on].
    #[arg(long, value_enum)]
    pub(crate) data: Option<DataKind>,
    /// Folder of the MNIST IDX files (for --data mnist).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Examples generated for `shapes` training (the test set is a tenth of it).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) shapes_size: usize,
    /// Seed of the `shapes` images.
    #[arg(long, default_value_t = 0)]
    pub(crate) data_seed: u64,
    /// Training matrix for --data file (.npy of f32/f64, or .csv).
    #[arg(long)]
    pub(crate) data_path: Option<PathBuf>,
    /// Test matrix for --data file [default: the last tenth of --data-path].
    #[arg(long)]
    pub(crate) test_path: Option<PathBuf>,
}

/// The model's shape, shared by `train` and `gradcheck`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ModelArgs {
    /// Hidden widths of the encoder, comma-separated; the decoder mirrors them. "" gives no
    /// hidden layer: the linear VAE (probabilistic PCA's case).
    #[arg(long, default_value = "400", value_parser = parse_widths)]
    pub(crate) hidden: Widths,
    /// Latent size Z [default: 20 for mnist, 10 for shapes].
    #[arg(long)]
    pub(crate) latent: Option<usize>,
    /// Hidden activation: relu, leaky-relu, tanh, sigmoid or softplus.
    #[arg(long, default_value = "relu")]
    pub(crate) activation: String,
    /// p(x|z): bernoulli, gaussian (fixed --variance) or gaussian-learned.
    #[arg(long, default_value = "bernoulli")]
    pub(crate) likelihood: String,
    /// Variance of the fixed Gaussian likelihood.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) variance: f64,
    /// Clamp the encoder's log-variances to [-C, C] (keeps e^logvar finite).
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    pub(crate) logvar_clamp: Option<f64>,
}

impl ModelArgs {
    pub(crate) fn config(&self, input_dim: usize, data: DataKind) -> Result<VaeConfig> {
        let mut likelihood: Likelihood = self.likelihood.parse()?;
        if let Likelihood::Gaussian { variance } = &mut likelihood {
            *variance = self.variance;
        }
        Ok(VaeConfig::mnist()
            .input_dim(input_dim)
            .encoder_hidden(self.hidden.0.clone())
            .latent_dim(self.latent.unwrap_or(match data {
                DataKind::Mnist => 20,
                DataKind::Shapes => 10,
                DataKind::File => 2,
            }))
            .decoder_hidden(self.hidden.0.iter().rev().copied().collect())
            .activation(self.activation.parse::<Activation>()?)
            .likelihood(likelihood)
            .logvar_clamp(self.logvar_clamp))
    }
}

pub(crate) fn load_data(args: &DataArgs, train_limit: Option<usize>) -> Result<(Dataset, Dataset)> {
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

pub(crate) fn default_threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The threads a command runs on.
pub(crate) fn pool(threads: usize) -> Result<elbo::Parallelism> {
    elbo::Parallelism::threads(threads.max(1))
}

/// How a command fails: with an error for `main` to print, or after reporting the failure
/// itself, with the exit code to end with.
pub(crate) enum Failure {
    /// An error not yet printed.
    Error(elbo::Error),
    /// Already explained on stderr; exit with this code.
    Reported(u8),
}

impl From<elbo::Error> for Failure {
    fn from(e: elbo::Error) -> Self {
        Failure::Error(e)
    }
}

/// Hidden widths as given on the command line.
#[derive(Clone, Debug)]
pub(crate) struct Widths(pub(crate) Vec<usize>);

/// "400", "512,256", or "" (no hidden layer).
fn parse_widths(s: &str) -> std::result::Result<Widths, String> {
    if s.trim().is_empty() {
        return Ok(Widths(Vec::new()));
    }
    s.split(',')
        .map(|w| {
            w.trim().parse::<usize>().map_err(|_| {
                format!("'{w}' is not a width (expected e.g. 400 or 512,256, or \"\" for none)")
            })
        })
        .collect::<std::result::Result<_, _>>()
        .map(Widths)
}
