//! Row-major matrix products `C (+)= op(A) op(B)`.
//!
//! [`matmul`] is the fast kernel (the `gemm` crate: runtime-detected AVX-512/AVX2/FMA/NEON with a
//! portable fallback). [`matmul_reference`] is the plain triple loop the tests hold it to.
//!
//! Determinism: `gemm` blocks the inner dimension the same way whatever the thread count and
//! splits only the output among threads, so every element of `C` is summed in one order and the
//! result is bit-identical for 1 or N threads (checked by `tests/reproducible.rs`).

use crate::float::Float;

/// Whether an operand is used as stored (`N`) or transposed (`T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// As stored.
    N,
    /// Transposed.
    T,
}

/// Strides (row, column) of a row-major `rows x cols` matrix used through `op`.
fn strides(op: Op, stored_cols: usize) -> (isize, isize) {
    match op {
        Op::N => (stored_cols as isize, 1),
        Op::T => (1, stored_cols as isize),
    }
}

fn check_sizes<T>(m: usize, n: usize, k: usize, a: &[T], b: &[T], c: &[T]) {
    // Internal invariant: callers size their buffers from validated shapes.
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul buffers too small"
    );
}

/// `C = op(A) op(B)` (or `C += ...` when `accumulate`), where `op(A)` is `m x k`, `op(B)` is
/// `k x n` and `C` is `m x n`, all row-major. `threads` is the number of threads of the current
/// rayon pool to use (1 runs on the calling thread).
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    op_a: Op,
    b: &[T],
    op_b: Op,
    c: &mut [T],
    accumulate: bool,
    threads: usize,
) {
    check_sizes(m, n, k, a, b, c);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::zero());
        }
        return;
    }
    // A stored as m x k (N) or k x m (T); B stored as k x n (N) or n x k (T).
    let (a_rs, a_cs) = strides(op_a, if op_a == Op::N { k } else { m });
    let (b_rs, b_cs) = strides(op_b, if op_b == Op::N { n } else { k });
    let parallelism = if threads <= 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: the asserts above guarantee every index the strides reach lies inside the slices;
    // `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The plain version of [`matmul`]: one dot product per output element, summed in `f64`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_reference<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    op_a: Op,
    b: &[T],
    op_b: Op,
    c: &mut [T],
    accumulate: bool,
) {
    check_sizes(m, n, k, a, b, c);
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let aip = match op_a {
                    Op::N => a[i * k + p],
                    Op::T => a[p * m + i],
                };
                let bpj = match op_b {
                    Op::N => b[p * n + j],
                    Op::T => b[j * k + p],
                };
                s += aip.as_f64() * bpj.as_f64();
            }
            let cij = &mut c[i * n + j];
            *cij = if accumulate {
                T::of(cij.as_f64() + s)
            } else {
                T::of(s)
            };
        }
    }
}
