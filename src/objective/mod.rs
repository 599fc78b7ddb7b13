//! Objectives built on the model: the ELBO (and later the importance-weighted bound).

pub mod elbo;

pub use elbo::{BatchElbo, Elbo, Workspace};
