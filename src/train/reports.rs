//! What training and evaluation report: per-epoch figures, the ELBO's terms and the latent
//! diagnostics.

use serde::{Deserialize, Serialize};

use crate::objective::BatchElbo;

/// A latent dimension counts as active when the variance over the data of its posterior mean
/// exceeds this (Burda et al., 2015).
pub const ACTIVE_UNIT_THRESHOLD: f64 = 1e-2;

/// Posterior-collapse diagnostics over a dataset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LatentStats {
    /// Mean over the data of each dimension's KL(q(z_j|x) || N(0, 1)).
    pub kl_per_dim: Vec<f64>,
    /// Variance over the data of each dimension's posterior mean, `Cov_x(E_q[z_j])`.
    pub mean_variance: Vec<f64>,
    /// Dimensions whose `mean_variance` exceeds [`ACTIVE_UNIT_THRESHOLD`].
    pub active_units: usize,
}

/// The ELBO's terms and the latent diagnostics over a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Evaluation {
    /// Means of the ELBO's terms.
    pub terms: EpochTerms,
    /// Per-dimension KL and active units.
    pub latent: LatentStats,
}

/// Means over a pass of the loss and the ELBO's terms, per example (nats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EpochTerms {
    /// -ELBO: what the reference PyTorch example prints as its loss when beta = 1.
    pub neg_elbo: f64,
    /// E_q[log p(x|z)].
    pub recon: f64,
    /// KL(q(z|x) || p(z)).
    pub kl: f64,
    /// The importance-weighted bound, when that is what was trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iw_bound: Option<f64>,
}

impl From<BatchElbo> for EpochTerms {
    fn from(b: BatchElbo) -> Self {
        EpochTerms {
            neg_elbo: -b.elbo(),
            recon: b.recon,
            kl: b.kl,
            iw_bound: None,
        }
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// KL weight at the end of the epoch.
    pub beta: f64,
    /// Means over the epoch's training batches, as they were trained on.
    pub train: EpochTerms,
    /// On the test set after the epoch, if one was given.
    pub test: Option<EpochTerms>,
    /// Per-dimension KL and active units on the test set, if one was given.
    pub test_latent: Option<LatentStats>,
    /// Wall time of the training pass.
    pub train_seconds: f64,
    /// Training examples per second.
    pub images_per_sec: f64,
    /// Wall time of the test-set evaluation (0 without a test set).
    #[serde(default)]
    pub test_seconds: f64,
}

/// Running sums over the batches of an unfinished epoch, kept so that an epoch interrupted
/// and resumed reports exactly what an uninterrupted one would.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EpochProgress {
    /// Batches done.
    pub batches: usize,
    /// Examples seen.
    pub seen: usize,
    /// Sum over examples of the reconstruction term.
    pub recon: f64,
    /// Sum over examples of the KL.
    pub kl: f64,
    /// Sum over examples of the loss.
    pub loss: f64,
    /// Sum over examples of the importance-weighted bound.
    pub bound: f64,
}

/// What one training step saw.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepResult {
    /// The batch means of the ELBO's terms.
    pub elbo: BatchElbo,
    /// The loss that was minimised.
    pub loss: f64,
    /// The importance-weighted bound, when that is the objective.
    pub iw_bound: Option<f64>,
}
