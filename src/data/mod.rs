//! Data: the MNIST reader, the procedural `shapes` set, and batch order.

pub mod dataset;
pub mod idx;
pub mod mnist;
pub mod shapes;

pub use dataset::{Dataset, Pixels, epoch_order};
