//! Data: the MNIST reader, the procedural `shapes` set, and batch order.

pub mod dataset;
pub mod idx;
pub mod mnist;
pub mod shapes;

pub use dataset::{Dataset, Factors, Pixels, Row, RowsView, ValueDomain, epoch_order};
