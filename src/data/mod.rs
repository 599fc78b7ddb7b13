//! Data: the MNIST reader, the procedural `shapes` set, and batch order.

pub mod cells;
pub mod csr;
pub mod dataset;
pub mod genes;
pub mod idx;
pub mod mnist;
pub mod shapes;
pub mod store;
pub mod tenx;

pub use csr::CsrMatrix;
pub use dataset::{Dataset, EpochOrder, Factors, Pixels, Row, RowsView, ValueDomain, epoch_order};
