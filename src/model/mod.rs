//! The model: layers, the Gaussian posterior head, likelihoods and the VAE that joins them.
//! Each differentiable piece has `forward` and `backward` side by side.

pub mod activation;
pub mod counts;
pub mod dense;
pub mod gaussian;
pub mod likelihood;
pub mod mlp;
pub mod norm;
pub mod params;
mod shape;
pub mod vae;

pub use activation::Activation;
pub use counts::{CountModel, Dispersion};
pub use dense::Dense;
pub use gaussian::{KlToStandardNormal, LogvarClamp, Reparameterize};
pub use likelihood::{
    CustomLikelihood, DecoderLikelihood, Likelihood, LikelihoodChoice, LikelihoodHead,
    LikelihoodInfo,
};
pub use mlp::{Layer, Mlp, MlpBuffers, SPARSE_INPUT_DENSITY};
pub use norm::{BatchNorm, Dropout};
pub use params::{Layout, TensorId, TensorSpec};
pub use vae::{Vae, VaeConfig};
