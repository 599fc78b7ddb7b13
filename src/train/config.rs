//! How to train: the settings of a run, checked before anything starts.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::matmul::Precision;
use crate::train::optim::OptimizerConfig;

/// How to train. Start from the [`Default`] (the reference MNIST run) and change what differs
/// with the chainable setters; [`validate`](Self::validate) (which every trainer runs) checks
/// the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// z draws per example.
    pub samples: usize,
    /// Weight of the KL term (1 gives the ELBO; beta-VAE uses more).
    pub beta: f64,
    /// Epochs over which the KL weight rises linearly from 0 to `beta` (0: no warm-up).
    pub warmup_epochs: f64,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// Clip the gradient's norm to this, if set.
    pub clip_norm: Option<f64>,
    /// Seed of every random draw: initialisation, order, noise.
    pub seed: u64,
    /// Resample binary pixels from the grey levels at each step.
    pub binarize: bool,
    /// Train the importance-weighted bound with this many samples per point instead of the
    /// ELBO (Burda et al., 2015); `samples` must then be 1 and beta 1 with no warm-up.
    #[serde(default)]
    pub iw_samples: Option<usize>,
    /// Coupled L2 weight decay, as `torch.optim.Adam(weight_decay=...)`: `weight_decay x p` is
    /// added to every parameter's gradient before the optimizer's update (scVI: 1e-6; 0: none).
    #[serde(default)]
    pub weight_decay: f64,
    /// Cut each batch into this many shards, each one's gradient computed alone and the
    /// shards added in a fixed tree: the results are then bit-identical on any number of
    /// processes that divides it into a power of two a process (see
    /// [`distributed`](super::distributed)). `None`: one batch, one gradient.
    #[serde(default)]
    pub shards: Option<usize>,
    /// The arithmetic of the dense layers' products in training steps: f32 (the default) or
    /// bf16 operands with f32 sums ([`Precision::Bf16`], f32 models only). Parameters,
    /// gradients and the optimizer stay f32, and evaluation runs in f32.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for TrainConfig {
    /// The reference MNIST training: Adam 1e-3, batch 128, 10 epochs, one sample.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 128,
            samples: 1,
            beta: 1.0,
            warmup_epochs: 0.0,
            optimizer: OptimizerConfig::adam(1e-3),
            clip_norm: None,
            seed: 0,
            binarize: false,
            iw_samples: None,
            weight_decay: 0.0,
            shards: None,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// Sets the number of passes over the training set.
    pub fn epochs(mut self, v: usize) -> Self {
        self.epochs = v;
        self
    }
    /// Sets the arithmetic of the dense layers' products in training steps.
    pub fn precision(mut self, v: Precision) -> Self {
        self.precision = v;
        self
    }
    /// Sets the examples per step.
    pub fn batch_size(mut self, v: usize) -> Self {
        self.batch_size = v;
        self
    }
    /// Sets the z draws per example.
    pub fn samples(mut self, v: usize) -> Self {
        self.samples = v;
        self
    }
    /// Sets the KL weight.
    pub fn beta(mut self, v: f64) -> Self {
        self.beta = v;
        self
    }
    /// Sets the epochs of linear KL warm-up.
    pub fn warmup_epochs(mut self, v: f64) -> Self {
        self.warmup_epochs = v;
        self
    }
    /// Sets the optimizer.
    pub fn optimizer(mut self, v: OptimizerConfig) -> Self {
        self.optimizer = v;
        self
    }
    /// Sets the gradient-norm clip (`None`: no clip).
    pub fn clip_norm(mut self, v: Option<f64>) -> Self {
        self.clip_norm = v;
        self
    }
    /// Sets the seed of every random draw.
    pub fn seed(mut self, v: u64) -> Self {
        self.seed = v;
        self
    }
    /// Sets dynamic binarisation on or off.
    pub fn binarize(mut self, v: bool) -> Self {
        self.binarize = v;
        self
    }
    /// Sets the coupled L2 weight decay (0: none).
    pub fn weight_decay(mut self, v: f64) -> Self {
        self.weight_decay = v;
        self
    }
    /// Sets the shards per batch (`None`: unsharded); see [`TrainConfig::shards`].
    pub fn shards(mut self, v: Option<usize>) -> Self {
        self.shards = v;
        self
    }
    /// Trains the importance-weighted bound with this many samples (`None`: the ELBO).
    pub fn iw_samples(mut self, v: Option<usize>) -> Self {
        self.iw_samples = v;
        self
    }

    /// Checks every setting.
    ///
    /// ```
    /// use elbo::TrainConfig;
    /// let config = TrainConfig::default().epochs(5).beta(4.0).warmup_epochs(2.0);
    /// config.validate()?;
    /// assert!(config.clone().batch_size(0).validate().is_err());
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("epochs", 0, "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch size", 0, "must be at least 1"));
        }
        if self.samples == 0 {
            return Err(Error::config("samples", 0, "must be at least 1"));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::config("beta", self.beta, "must be finite and >= 0"));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return Err(Error::config(
                "warm-up epochs",
                self.warmup_epochs,
                "must be finite and >= 0",
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config(
                "weight decay",
                self.weight_decay,
                "must be finite and >= 0",
            ));
        }
        if let Some(c) = self.clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::config(
                "gradient clip norm",
                c,
                "must be finite and > 0",
            ));
        }
        if let Some(s) = self.shards
            && (s == 0 || s > self.batch_size)
        {
            return Err(Error::config(
                "shards",
                s,
                "must be from 1 to the batch size",
            ));
        }
        if let Some(k) = self.iw_samples {
            if k == 0 {
                return Err(Error::config("importance samples", 0, "must be at least 1"));
            }
            if self.samples != 1 {
                return Err(Error::config(
                    "samples",
                    self.samples,
                    "the importance-weighted bound draws its own k samples; leave samples at 1",
                ));
            }
            if self.beta != 1.0 || self.warmup_epochs != 0.0 {
                return Err(Error::config(
                    "beta",
                    self.beta,
                    "beta and warm-up weight the ELBO's KL; the importance-weighted bound has none",
                ));
            }
        }
        self.optimizer.validate()
    }

    /// z draws per data point in each step.
    pub fn draws_per_point(&self) -> usize {
        self.iw_samples.unwrap_or(self.samples)
    }
}
