//! Training: settings, optimizers, the loop, evaluation, reports and checkpoints, one job a file.

pub mod checkpoint;
pub mod config;
pub mod distributed;
pub mod evaluation;
pub mod optim;
pub mod reports;
mod resume;
pub mod trained;
pub mod trainer;

pub use config::TrainConfig;
pub use distributed::{Collective, InProcess, SingleProcess};
pub use evaluation::{evaluate, knn_accuracy, latent_means};
pub use optim::{Optimizer, OptimizerConfig, clip_grad_norm};
pub use reports::{
    ACTIVE_UNIT_THRESHOLD, EpochProgress, EpochReport, EpochTerms, Evaluation, LatentStats,
    StepResult,
};
pub use trainer::{FitOptions, Trainer, fit};
