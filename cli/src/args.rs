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
    /// Examples generated for `shapes` training (the test set is a tenth of it) [default: 20000].
    #[arg(long)]
    pub(crate) shapes_size: Option<usize>,
    /// Seed of the `shapes` images [default: 0].
    #[arg(long)]
    pub(crate) data_seed: Option<u64>,
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
    /// hidden layer: the linear VAE (probabilistic PCA's case) [default: 400].
    #[arg(long, value_parser = parse_widths)]
    pub(crate) hidden: Option<Widths>,
    /// Latent size Z [default: 20 for mnist, 10 for shapes].
    #[arg(long)]
    pub(crate) latent: Option<usize>,
    /// Hidden activation: relu, leaky-relu, tanh, sigmoid, softplus or identity [default: relu].
    #[arg(long)]
    pub(crate) activation: Option<String>,
    /// p(x|z): bernoulli, gaussian (fixed --variance) or gaussian-learned [default: bernoulli].
    #[arg(long)]
    pub(crate) likelihood: Option<String>,
    /// Variance of the fixed Gaussian likelihood [default: 1].
    #[arg(long)]
    pub(crate) variance: Option<f64>,
    /// Clamp the encoder's log-variances to [-C, C] (keeps e^logvar finite).
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    pub(crate) logvar_clamp: Option<f64>,
}

impl ModelArgs {
    /// The first architecture option given, if any: a resumed run's model is the checkpoint's,
    /// so these are refused there rather than ignored.
    pub(crate) fn first_given(&self) -> Option<&'static str> {
        [
            ("hidden", self.hidden.is_some()),
            ("latent", self.latent.is_some()),
            ("activation", self.activation.is_some()),
            ("likelihood", self.likelihood.is_some()),
            ("variance", self.variance.is_some()),
            ("logvar-clamp", self.logvar_clamp.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }

    pub(crate) fn config(&self, input_dim: usize, data: DataKind) -> Result<VaeConfig> {
        let mut likelihood: Likelihood =
            self.likelihood.as_deref().unwrap_or("bernoulli").parse()?;
        if let Likelihood::Gaussian { variance } = &mut likelihood {
            *variance = self.variance.unwrap_or(1.0);
        } else if self.variance.is_some() {
            return Err(Error::config(
                "variance",
                self.variance.unwrap_or_default(),
                "applies only to --likelihood gaussian",
            ));
        }
        let hidden = self.hidden.clone().map_or(vec![400], |w| w.0);
        Ok(VaeConfig::mnist()
            .input_dim(input_dim)
            .encoder_hidden(hidden.clone())
            .latent_dim(self.latent.unwrap_or(match data {
                DataKind::Mnist => 20,
                DataKind::Shapes => 10,
                DataKind::File => 2,
            }))
            .decoder_hidden(hidden.iter().rev().copied().collect())
            .activation(
                self.activation
                    .as_deref()
                    .unwrap_or("relu")
                    .parse::<Activation>()?,
            )
            .likelihood(likelihood)
            .logvar_clamp(self.logvar_clamp))
    }
}

impl DataArgs {
    /// The `shapes` sizes: (training examples, test examples).
    fn shapes_sizes(&self) -> Result<(usize, usize)> {
        match self.shapes_size.unwrap_or(20_000) {
            0 => Err(Error::config("shapes size", 0, "must be at least 1")),
            n => Ok((n, (n / 10).max(1))),
        }
    }

    fn mnist_dir(&self) -> Result<PathBuf> {
        self.data_dir.clone().ok_or_else(|| {
            Error::config(
                "data-dir",
                "(none)",
                "--data mnist needs --data-dir with the MNIST IDX files",
            )
        })
    }

    /// These options given on the command line over `stored` (a saved model's): each one
    /// given replaces the stored one. A different `--data` kind replaces them all.
    pub(crate) fn over(&self, stored: &DataArgs) -> DataArgs {
        if self.data.is_some() && self.data != stored.data {
            return self.clone();
        }
        DataArgs {
            data: self.data.or(stored.data),
            data_dir: self.data_dir.clone().or_else(|| stored.data_dir.clone()),
            shapes_size: self.shapes_size.or(stored.shapes_size),
            data_seed: self.data_seed.or(stored.data_seed),
            data_path: self.data_path.clone().or_else(|| stored.data_path.clone()),
            test_path: self.test_path.clone().or_else(|| stored.test_path.clone()),
        }
    }

    /// The same settings with every path made absolute, as a model file stores them, so that
    /// commands run from another folder find the data.
    pub(crate) fn absolute(&self) -> Result<DataArgs> {
        let abs = |p: &Option<PathBuf>| -> Result<Option<PathBuf>> {
            p.as_ref()
                .map(|p| std::path::absolute(p).map_err(|e| Error::io("resolving", p, e)))
                .transpose()
        };
        Ok(DataArgs {
            data_dir: abs(&self.data_dir)?,
            data_path: abs(&self.data_path)?,
            test_path: abs(&self.test_path)?,
            ..self.clone()
        })
    }

    /// Without the settings that do not apply to its dataset (files written before the
    /// settings were checked stored every one).
    pub(crate) fn only_applicable(&self) -> DataArgs {
        let kind = self.data.unwrap_or(DataKind::Shapes);
        DataArgs {
            data: self.data,
            data_dir: self.data_dir.clone().filter(|_| kind == DataKind::Mnist),
            shapes_size: self.shapes_size.filter(|_| kind == DataKind::Shapes),
            data_seed: self.data_seed.filter(|_| kind == DataKind::Shapes),
            data_path: self.data_path.clone().filter(|_| kind == DataKind::File),
            test_path: self.test_path.clone().filter(|_| kind == DataKind::File),
        }
    }

    /// Refuses options that cannot apply to the chosen dataset, rather than ignoring them.
    pub(crate) fn check_applicable(&self) -> Result<()> {
        let kind = self.data.unwrap_or(DataKind::Shapes);
        let data = format!("{kind:?}").to_lowercase();
        if kind != DataKind::Mnist && self.data_dir.is_some() {
            return Err(Error::config(
                "data-dir",
                data,
                "applies only to --data mnist",
            ));
        }
        if kind != DataKind::Shapes && (self.shapes_size.is_some() || self.data_seed.is_some()) {
            return Err(Error::config(
                "shapes-size / data-seed",
                data,
                "apply only to --data shapes",
            ));
        }
        if kind != DataKind::File && (self.data_path.is_some() || self.test_path.is_some()) {
            return Err(Error::config(
                "data-path / test-path",
                data,
                "apply only to --data file",
            ));
        }
        Ok(())
    }
}

/// Only the test set the options name: what commands on a saved model need. MNIST's training
/// files are not opened, nor a training matrix when a test matrix is given.
pub(crate) fn load_test_data(args: &DataArgs) -> Result<Dataset> {
    match args.data.unwrap_or(DataKind::Shapes) {
        DataKind::Shapes => {
            let (n, test_n) = args.shapes_sizes()?;
            shapes::generate(args.data_seed.unwrap_or(0), n as u64, test_n)
        }
        DataKind::Mnist => mnist::load(args.mnist_dir()?, mnist::Split::Test),
        DataKind::File => match &args.test_path {
            Some(t) => elbo::files::read_matrix(t),
            None => Ok(load_data(args, None)?.1),
        },
    }
}

pub(crate) fn load_data(args: &DataArgs, train_limit: Option<usize>) -> Result<(Dataset, Dataset)> {
    let (train, test) = match args.data.unwrap_or(DataKind::Shapes) {
        DataKind::Shapes => {
            let (n, test_n) = args.shapes_sizes()?;
            let seed = args.data_seed.unwrap_or(0);
            (
                shapes::generate(seed, 0, n)?,
                shapes::generate(seed, n as u64, test_n)?,
            )
        }
        DataKind::Mnist => {
            let dir = args.mnist_dir()?;
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
