//! The bottom layer: matrix products, parallel loops (on a [`team`] session or the current rayon
//! pool) and vectorised elementwise kernels. Nothing here knows what a layer or a VAE is.

pub mod bf16;
pub mod fast;
pub mod matmul;
pub mod par;
pub mod pool;
#[cfg(feature = "loop-profile")]
pub mod profile;
pub mod scalar;
pub mod sparse;
pub mod special;
pub mod team;

#[cfg(any(test, feature = "internals"))]
pub use matmul::matmul_reference;
pub use matmul::{Op, Precision, matmul, matmul_in};
#[cfg(any(test, feature = "internals"))]
pub use sparse::sparse_matmul_reference;
pub use sparse::{SparseRows, sparse_matmul, sparse_matmul_beside};

#[cfg(test)]
mod tests;
