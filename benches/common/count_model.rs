//! The count model of BENCHMARKS.md's scvi-tools table, with the settings of
//! `benches/frameworks/scvi_compare.py`: log1p input, 2,000-128-10-128-2,000, ReLU, NB with a
//! dispersion per gene, Adam (lr 1e-3, eps 0.01) with weight decay 1e-6, batch 128. Shared by
//! `benches/training.rs` and `examples/step_profile.rs` (`#[path]`), so that both time the same
//! model.

use std::path::Path;

use elbo::data::Dataset;
use elbo::{Likelihood, OptimizerConfig, TrainConfig, Vae, VaeConfig};

/// The 10x folder at `dir` (pbmc-celltypist), its 2,000 most variable genes kept.
pub fn pbmc_top_genes(dir: impl AsRef<Path>) -> elbo::Result<Dataset> {
    let counts = elbo::data::tenx::read_10x(dir)?;
    let keep = elbo::data::genes::most_variable(&counts, 2000)?;
    counts.select_columns(&keep)
}

/// The model, for `genes` genes.
pub fn count_vae(genes: usize) -> elbo::Result<Vae> {
    Vae::new(
        VaeConfig::mnist()
            .input_dim(genes)
            .hidden(&[128])
            .latent_dim(10)
            .log1p_input(true)
            .likelihood(Likelihood::NegativeBinomial {
                dispersion: elbo::model::Dispersion::Gene,
            }),
    )
}

/// Its training settings.
pub fn count_training() -> TrainConfig {
    let adam = OptimizerConfig::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 0.01,
    };
    TrainConfig::default().optimizer(adam).weight_decay(1e-6)
}
