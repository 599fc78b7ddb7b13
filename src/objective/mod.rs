//! Objectives built on the model: the ELBO and the importance-weighted bound.

pub mod elbo;
pub mod iwae;

pub use elbo::{BatchElbo, Elbo, Workspace};
pub use iwae::{IwBatch, Iwae, MarginalReport, estimate_log_marginal};
