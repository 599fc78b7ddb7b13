//! Options shared by several subcommands, and loading the data they name.

use std::path::PathBuf;

use clap::ValueEnum;
use elbo::data::{Dataset, cells, genes, mnist, shapes};
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
    /// The procedural single-cell count set (no files needed): --cells cells x 2,000 genes.
    Cells,
    /// Your own counts, one row a cell: --data-path a 10x folder (matrix.mtx[.gz],
    /// features.tsv[.gz] or genes.tsv, barcodes.tsv[.gz]), a .npy or a .csv, or a .elbo file
    /// from `elbo convert` (read memory-mapped). Every tenth cell (index 9, 19, ...) is held
    /// out for testing.
    Counts,
}

impl DataKind {
    /// Whether its values are counts (and the count-model defaults apply).
    pub(crate) fn is_counts(self) -> bool {
        matches!(self, DataKind::Cells | DataKind::Counts)
    }
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
    /// An f32 model whose dense layers' products take bf16 operands with f32 sums.
    Bf16,
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
    /// Seed of the `shapes` images or the `cells` counts [default: 0].
    #[arg(long)]
    pub(crate) data_seed: Option<u64>,
    /// Training matrix for --data file (.npy of f32/f64, or .csv); the counts for --data
    /// counts (a 10x folder, .npy or .csv).
    #[arg(long)]
    pub(crate) data_path: Option<PathBuf>,
    /// Test matrix for --data file [default: the last tenth of --data-path].
    #[arg(long)]
    pub(crate) test_path: Option<PathBuf>,
    /// Cells generated for --data cells, a tenth of them held out for testing [default: 10000].
    #[arg(long)]
    #[serde(default)]
    pub(crate) cells: Option<usize>,
    /// Largest per-gene zero-inflation probability of the `cells` counts (each gene's is drawn
    /// uniformly below it) [default: 0, none].
    #[arg(long, value_name = "P")]
    #[serde(default)]
    pub(crate) zero_inflation: Option<f64>,
    /// Keep only the N most variable genes of the training cells (dispersion of
    /// log1p-normalised counts), for --data cells or counts.
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub(crate) top_genes: Option<usize>,
    /// One label per cell (a CSV of labels, or of cell name and label), for --data counts.
    #[arg(long)]
    #[serde(default)]
    pub(crate) labels: Option<PathBuf>,
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
    /// Feed the encoder ln(1 + x) [default: true for count data, false otherwise].
    #[arg(long, value_name = "BOOL")]
    pub(crate) log1p_input: Option<bool>,
    /// Batch normalisation after every hidden layer, as scVI (running averages for evaluation,
    /// kept in the model file).
    #[arg(long)]
    pub(crate) batch_norm: bool,
    /// Dropout rate after the encoder's hidden layers while training (scVI: 0.1) [default: 0].
    #[arg(long, value_name = "P")]
    pub(crate) dropout: Option<f64>,
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
            ("log1p-input", self.log1p_input.is_some()),
            ("batch-norm", self.batch_norm),
            ("dropout", self.dropout.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }

    pub(crate) fn config(&self, input_dim: usize, data: DataKind) -> Result<VaeConfig> {
        let default_likelihood = if data.is_counts() { "nb" } else { "bernoulli" };
        let mut likelihood: Likelihood = self
            .likelihood
            .as_deref()
            .unwrap_or(default_likelihood)
            .parse()?;
        if let Likelihood::Gaussian { variance } = &mut likelihood {
            *variance = self.variance.unwrap_or(1.0);
        } else if self.variance.is_some() {
            return Err(Error::config(
                "variance",
                self.variance.unwrap_or_default(),
                "applies only to --likelihood gaussian",
            ));
        }
        // Count data get scVI's defaults: one hidden layer of 128, 10 latent dimensions.
        let default_hidden = if data.is_counts() { 128 } else { 400 };
        let hidden = self.hidden.clone().map_or(vec![default_hidden], |w| w.0);
        Ok(VaeConfig::mnist()
            .input_dim(input_dim)
            .encoder_hidden(hidden.clone())
            .log1p_input(self.log1p_input.unwrap_or(data.is_counts()))
            .batch_norm(self.batch_norm)
            .dropout(self.dropout.unwrap_or(0.0))
            .latent_dim(self.latent.unwrap_or(match data {
                DataKind::Mnist => 20,
                DataKind::Shapes | DataKind::Cells | DataKind::Counts => 10,
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
            cells: self.cells.or(stored.cells),
            zero_inflation: self.zero_inflation.or(stored.zero_inflation),
            top_genes: self.top_genes.or(stored.top_genes),
            labels: self.labels.clone().or_else(|| stored.labels.clone()),
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
            labels: abs(&self.labels)?,
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
            data_seed: self
                .data_seed
                .filter(|_| matches!(kind, DataKind::Shapes | DataKind::Cells)),
            data_path: self
                .data_path
                .clone()
                .filter(|_| matches!(kind, DataKind::File | DataKind::Counts)),
            test_path: self.test_path.clone().filter(|_| kind == DataKind::File),
            cells: self.cells.filter(|_| kind == DataKind::Cells),
            zero_inflation: self.zero_inflation.filter(|_| kind == DataKind::Cells),
            top_genes: self.top_genes.filter(|_| kind.is_counts()),
            labels: self.labels.clone().filter(|_| kind == DataKind::Counts),
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
        if kind != DataKind::Shapes && self.shapes_size.is_some() {
            return Err(Error::config(
                "shapes-size",
                data,
                "applies only to --data shapes",
            ));
        }
        if !matches!(kind, DataKind::Shapes | DataKind::Cells) && self.data_seed.is_some() {
            return Err(Error::config(
                "data-seed",
                data,
                "applies only to --data shapes or cells",
            ));
        }
        if !matches!(kind, DataKind::File | DataKind::Counts) && self.data_path.is_some() {
            return Err(Error::config(
                "data-path",
                data,
                "applies only to --data file or counts",
            ));
        }
        if kind != DataKind::File && self.test_path.is_some() {
            return Err(Error::config(
                "test-path",
                data,
                "applies only to --data file",
            ));
        }
        if kind != DataKind::Cells && (self.cells.is_some() || self.zero_inflation.is_some()) {
            return Err(Error::config(
                "cells / zero-inflation",
                data,
                "apply only to --data cells",
            ));
        }
        if !kind.is_counts() && self.top_genes.is_some() {
            return Err(Error::config(
                "top-genes",
                data,
                "applies only to --data cells or counts",
            ));
        }
        if kind != DataKind::Counts && self.labels.is_some() {
            return Err(Error::config(
                "labels",
                data,
                "applies only to --data counts",
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
        // The genes kept are chosen on the training cells, so those are read too.
        DataKind::Cells | DataKind::Counts => Ok(load_data(args, None)?.1),
    }
}

/// The `cells` sizes: (training cells, test cells).
fn cells_sizes(args: &DataArgs) -> Result<(usize, usize)> {
    match args.cells.unwrap_or(10_000) {
        n if n < 2 => Err(Error::config(
            "cells",
            n,
            "must be at least 2 (a tenth is held out)",
        )),
        n => {
            let test = (n / 10).max(1);
            Ok((n - test, test))
        }
    }
}

/// Every tenth index (9, 19, ...) for testing, the rest for training.
fn holdout_indices(n: usize) -> (Vec<usize>, Vec<usize>) {
    (0..n).partition(|i| i % 10 != 9)
}

/// Every cell of --data counts, with labels if given, and only the most variable genes of the
/// training cells (every cell but each tenth) if asked: what `elbo convert` writes, and what
/// training splits.
pub(crate) fn read_all_counts(args: &DataArgs) -> Result<Dataset> {
    let path = args.data_path.clone().ok_or_else(|| {
        Error::config(
            "data-path",
            "(none)",
            "--data counts needs --data-path with a 10x folder, a .npy, a .csv or a .elbo file of counts",
        )
    })?;
    // elbo's own matrix file is read memory-mapped: nothing is loaded.
    let is_store = path.extension().is_some_and(|e| e == "elbo");
    let mut all = if is_store {
        Dataset::from_store(elbo::data::store::MappedStore::open(&path)?)?
    } else {
        elbo::files::read_counts(&path)?
    };
    if let Some(l) = &args.labels {
        let (labels, names) = elbo::files::read_labels(l, all.len())?;
        all.labels = Some(labels);
        all.label_names = Some(names);
    }
    if all.len() < 10 {
        return Err(Error::InvalidData(format!(
            "{}: {} cell(s); count data need at least 10 (every tenth is held out)",
            path.display(),
            all.len()
        )));
    }
    match args.top_genes {
        Some(n) => {
            let (train_idx, _) = holdout_indices(all.len());
            let keep = genes::most_variable(&all.select(&train_idx)?, n)?;
            all.select_columns(&keep)
        }
        None => Ok(all),
    }
}

/// Count data: (training cells, test cells), every tenth cell held out, with labels if given,
/// then only the most variable genes of the training cells if asked.
fn load_counts(args: &DataArgs) -> Result<(Dataset, Dataset)> {
    let (train, test) = match args.data.unwrap_or(DataKind::Shapes) {
        DataKind::Cells => {
            let (n, test_n) = cells_sizes(args)?;
            let config = cells::CellsConfig {
                zero_inflation: args.zero_inflation.unwrap_or(0.0),
                ..cells::CellsConfig::default()
            };
            let seed = args.data_seed.unwrap_or(0);
            (
                cells::generate(&config, seed, 0, n)?,
                cells::generate(&config, seed, n as u64, test_n)?,
            )
        }
        _ => {
            let all = read_all_counts(args)?;
            return Ok(match all.mapped_holdout() {
                // The same split as below, as views of the file.
                Some(split) => split,
                None => {
                    let (train_idx, test_idx) = holdout_indices(all.len());
                    (all.select(&train_idx)?, all.select(&test_idx)?)
                }
            });
        }
    };
    match args.top_genes {
        Some(n) => {
            let keep = genes::most_variable(&train, n)?;
            Ok((train.select_columns(&keep)?, test.select_columns(&keep)?))
        }
        None => Ok((train, test)),
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
        DataKind::Cells | DataKind::Counts => load_counts(args)?,
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
