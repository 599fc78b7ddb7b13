//! The matrix products of one training step, and the median the timings use; shared by
//! `benches/scaling.rs` and `examples/kernel_floors.rs`.

use elbo::kernels::Op;

/// A product `C (m x n) = op(A) (m x k) op(B) (k x n)`: (name, m, k, n, op_a, op_b).
pub type Product = (&'static str, usize, usize, usize, Op, Op);

/// The products of one step of a `d`-h-z-h-`d` VAE at batch `b`: the forward pass first (the
/// encoder's input layer, the heads with mean and log-variance together, the decoder's input
/// and output layers), then the backward pass's weight gradients `X^T G` and input gradients
/// `G W^T`. The encoder's input layer has no input gradient.
pub fn step_products(b: usize, d: usize, h: usize, z: usize) -> Vec<Product> {
    vec![
        ("forward, encoder input", b, d, h, Op::N, Op::N),
        ("forward, heads", b, h, 2 * z, Op::N, Op::N),
        ("forward, decoder input", b, z, h, Op::N, Op::N),
        ("forward, decoder output", b, h, d, Op::N, Op::N),
        ("X^T G, decoder output", h, b, d, Op::T, Op::N),
        ("G W^T, decoder output", b, d, h, Op::N, Op::T),
        ("X^T G, decoder input", z, b, h, Op::T, Op::N),
        ("G W^T, decoder input", b, h, z, Op::N, Op::T),
        ("X^T G, heads", h, b, 2 * z, Op::T, Op::N),
        ("G W^T, heads", b, 2 * z, h, Op::N, Op::T),
        ("X^T G, encoder input", d, b, h, Op::T, Op::N),
    ]
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
