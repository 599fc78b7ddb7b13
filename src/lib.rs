//! # elbo
//!
//! Variational autoencoders with hand-written gradients: every forward and backward formula of
//! the evidence lower bound is derived and coded here, and checked against finite differences.
//!
//! Data flows one way: [`data`] -> [`model`] (layers, the Gaussian head, likelihoods) ->
//! [`objective`] (the ELBO, the importance-weighted bound) -> [`testbed`] (the exact
//! linear-Gaussian model) and [`train`] (optimizers, the loop, checkpoints, the trained model).
//! The kernels (matrix products, parallel loops, the scalar trait) sit below everything, know
//! nothing above them, and are private to the crate. `tests/layers.rs` fails the build if a
//! lower layer imports a higher one. [`derivation`] derives every formula the code
//! uses, from log p(x) to Adam, naming the function and the test for each step.
//!
//! ```
//! use elbo::{Dataset, FitOptions, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};
//!
//! // 64 tiny 4-pixel "images" with grey levels in [0, 1].
//! let pixels: Vec<u8> = (0..64 * 4).map(|i| (i * 37 % 256) as u8).collect();
//! let data = Dataset::from_bytes(64, 4, pixels)?;
//! let (train, test) = data.split_at(48);
//! let vae = Vae::new(VaeConfig::mnist().input_dim(4).encoder_hidden(vec![8]).latent_dim(2).decoder_hidden(vec![8]))?;
//! let config = TrainConfig::default().epochs(2).batch_size(16);
//! let threads = Parallelism::threads(2)?;           // chosen once; results do not depend on it
//! let mut trainer = Trainer::<f32>::new(vae, config, &threads)?;
//! let reports = trainer.fit(&train, FitOptions::new().test(&test))?;
//! assert_eq!(reports.len(), 2);
//! let model = trainer.into_model()?;                // encode, decode, sample, elbo, log_px
//! let z = model.encode(&[0.0f32, 0.5, 1.0, 0.25][..])?.means;
//! assert_eq!(model.decode(z.view())?.dim(), (1, 4));
//! # Ok::<(), elbo::Error>(())
//! ```
//!
//! Your own likelihood plugs in through [`DecoderLikelihood`] and [`Vae::with_likelihood`];
//! `examples/custom_likelihood.rs` shows one, checked by [`gradcheck::check_likelihood`].
//!
//! Training may run the dense layers' matrix products from bf16 operands with f32 sums
//! ([`TrainConfig::precision`] with [`Precision::Bf16`]; [`Bf16Path::best`] says whether this
//! CPU runs them on AMX tiles, AVX512-BF16 vectors or by rounding). The model stays f32, and
//! evaluation runs in f32.

#![warn(missing_docs)]

pub mod data;
pub mod derivation;
pub mod error;
#[cfg(feature = "io")]
pub mod files;
pub mod gradcheck;
pub mod io;
/// Matrix products, parallel loops, the session team and the vectorised elementwise kernels.
/// Crate-private: users reach them only through the model. The `internals` feature exposes them
/// for this crate's own benchmarks.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod kernels;
#[cfg(not(feature = "internals"))]
mod kernels;
/// Where a training step's time goes, loop by loop: each parallel loop's wall time by the line
/// of this crate that started it, and the time its thread spent alone before it (the
/// `loop-profile` feature; `examples/step_profile.rs` prints a step's table).
#[cfg(feature = "loop-profile")]
pub mod loop_profile {
    pub use crate::kernels::profile::{LoopTime, take};
}
pub mod model;
pub mod objective;
#[cfg(feature = "io")]
pub mod pictures;
pub mod rng;
pub mod testbed;
pub mod train;

pub use data::Dataset;
pub use error::{Error, Result};
pub use kernels::bf16::Bf16Path;
pub use kernels::matmul::Precision;
pub use kernels::pool::Parallelism;
pub use kernels::scalar::Float;
pub use model::{
    Activation, CustomLikelihood, DecoderLikelihood, Dispersion, Likelihood, LikelihoodInfo, Vae,
    VaeConfig,
};
pub use objective::{BatchElbo, Elbo, Workspace};
pub use train::trained::{PointElbo, Posterior, Rows, Samples, TrainedVae};
pub use train::{
    Collective, EpochReport, EpochTerms, FitOptions, InProcess, OptimizerConfig, SingleProcess,
    TrainConfig, Trainer, fit,
};
