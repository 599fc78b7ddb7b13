//! Training: optimizers, the loop, checkpoints and reports.

pub mod checkpoint;
pub mod optim;
pub mod trainer;

pub use optim::{Optimizer, OptimizerConfig, clip_grad_norm};
pub use trainer::{
    ACTIVE_UNIT_THRESHOLD, EpochProgress, EpochReport, EpochTerms, Evaluation, LatentStats,
    StepResult, TrainConfig, Trainer, evaluate,
};
