//! Row-major matrix products `C (+)= op(A) op(B)`.
//!
//! [`matmul`] is the fast kernel (the `gemm` crate: runtime-detected AVX-512/AVX2/FMA/NEON with a
//! portable fallback). [`matmul_reference`] is the plain triple loop the tests hold it to.
//!
//! Determinism: a product is cut into tiles by its shape alone ([`tiles`]), and each tile is
//! one single-threaded `gemm` call, so every element of `C` is summed in one order and the
//! result is bit-identical for 1 or N threads (`kernels::tests`, `tests/reproducible.rs`).

use crate::kernels::scalar::Float;

/// The arithmetic of the dense layers' matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// f32 (or f64) operands and sums: the default, and what every check uses.
    #[default]
    F32,
    /// Operands rounded to bfloat16, products summed in f32 (AMX or AVX512-BF16 when the CPU
    /// has them, see [`Bf16Path`](super::bf16::Bf16Path)): f32 models
    /// only (an f64 model's products stay f64; the trainer refuses the combination).
    Bf16,
}

/// [`matmul`] in the given precision: `Bf16` runs [`super::bf16::matmul_bf16`] for f32 and
/// [`matmul`] for f64.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn matmul_in<T: Float>(
    precision: Precision,
    (m, n, k): (usize, usize, usize),
    (a, op_a): (&[T], Op),
    (b, op_b): (&[T], Op),
    c: &mut [T],
    accumulate: bool,
    threads: usize,
) {
    match precision {
        Precision::F32 => matmul(m, n, k, a, op_a, b, op_b, c, accumulate, threads),
        Precision::Bf16 => T::matmul_bf16((m, n, k), (a, op_a), (b, op_b), c, accumulate, threads),
    }
}

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

/// The guard the `unsafe` below relies on: every product of sizes is computed with overflow
/// checks, so no wrapped size can pass (m = n = k = 2^32 wraps to 0 in release builds). Callers
/// size their buffers from validated shapes, so a failure here is a bug in this crate and
/// panics rather than touching memory outside the slices.
pub(super) fn check_sizes<T>(m: usize, n: usize, k: usize, a: &[T], b: &[T], c: &[T]) {
    let fits =
        |rows: usize, cols: usize, len: usize| rows.checked_mul(cols).is_some_and(|p| p <= len);
    assert!(
        fits(m, k, a.len()) && fits(k, n, b.len()) && fits(m, n, c.len()),
        "matmul buffers too small for {m} x {k} times {k} x {n}"
    );
}

/// `C = op(A) op(B)` (or `C += ...` when `accumulate`), where `op(A)` is `m x k`, `op(B)` is
/// `k x n` and `C` is `m x n`, all row-major. `threads` is the number of threads to use: those of
/// the session this thread leads (see [`super::team`]), else of the current rayon pool; 1 runs
/// on the calling thread.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(feature = "loop-profile", track_caller)]
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
    // The cut depends on the shape alone: `gemm` blocks k differently for different tile
    // shapes (seen for 128 x 64 x 784), so a cut chosen by thread count would change bits.
    let (row_tiles, col_tiles) = tiles(m, n, k, op_b);
    if row_tiles * col_tiles > 1 {
        let (tm, tn) = (m.div_ceil(row_tiles), n.div_ceil(col_tiles));
        let c = SharedOut(c.as_mut_ptr());
        let tile = |t: usize| {
            let (i0, j0) = ((t / col_tiles) * tm, (t % col_tiles) * tn);
            let (mt, nt) = (tm.min(m - i0), tn.min(n - j0));
            // SAFETY: tile t covers rows i0..i0+mt and columns j0..j0+nt of C, inside it and
            // disjoint from every other tile; A and B are only read, at offsets inside them.
            unsafe {
                gemm_tile::<T>(
                    (mt, nt, k),
                    c.at(i0 * n + j0),
                    n,
                    accumulate,
                    (a.as_ptr().offset(i0 as isize * a_rs), a_rs, a_cs),
                    (b.as_ptr().offset(j0 as isize * b_cs), b_rs, b_cs),
                    gemm::Parallelism::None,
                );
            }
        };
        if threads > 1 {
            super::par::for_each_task(row_tiles * col_tiles, tile);
        } else {
            (0..row_tiles * col_tiles).for_each(tile);
        }
        return;
    }
    let parallelism = gemm::Parallelism::None;
    // SAFETY: the asserts above guarantee every index the strides reach lies inside the slices;
    // `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    unsafe {
        gemm_tile::<T>(
            (m, n, k),
            c.as_mut_ptr(),
            n,
            accumulate,
            (a.as_ptr(), a_rs, a_cs),
            (b.as_ptr(), b_rs, b_cs),
            parallelism,
        );
    }
}

/// The output of a tiled product, written by tasks at disjoint tiles.
pub(super) struct SharedOut<T>(pub(super) *mut T);
// SAFETY: tasks write disjoint tiles only (see `matmul`).
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// # Safety
    /// `offset` must lie inside the output.
    pub(super) unsafe fn at(&self, offset: usize) -> *mut T {
        // SAFETY: the caller's promise.
        unsafe { self.0.add(offset) }
    }
}

/// Products smaller than this many multiply-adds run as one task: below it, a second thread
/// saves less than it costs.
const MIN_MACS_TO_SPLIT: usize = 1 << 19;

/// Tiles a product of this size is cut into, whatever the thread count.
const TILES: usize = 2;

/// How to cut an `m x n` output: (row tiles, column tiles). The larger side is cut into
/// [`TILES`] near-equal tiles (no more than it has 16-wide blocks, the kernels' register
/// tile), by shape alone. When the sides are equal, the columns are cut if `B` is used
/// transposed: `gemm` packs a transposed `B` one element at a time, and a row tile would pack
/// all of it, a column tile only its own share (the count models' input gradient
/// `G W^T`, 128 x 128 x 2,000: a tile took 228 us cut by columns and 272 us by rows, medians
/// of 400 on one thread; both cuts give the bits of one uncut call at that shape).
///
/// The cut must not depend on the thread count: `gemm` chooses its k-blocking from the whole
/// tile's shape, so a 128 x 64 x 784 product summed as one tile and as two row tiles differ in
/// the last bits. With a fixed cut, one thread runs the tiles in turn and two run one each,
/// and both give the same bits. More threads do not split a product further; changing `TILES`
/// changes results, so it is a deliberate choice, not a tuning knob.
pub(super) fn tiles(m: usize, n: usize, k: usize, op_b: Op) -> (usize, usize) {
    if m.saturating_mul(n).saturating_mul(k) < MIN_MACS_TO_SPLIT {
        return (1, 1);
    }
    let cut = |len: usize| TILES.min(len.div_ceil(16)).max(1);
    if m > n || (m == n && op_b == Op::N) {
        (cut(m), 1)
    } else {
        (1, cut(n))
    }
}

/// One `gemm` call: `C (+)= A B` with `A` `m x k` at `(ptr, row stride, col stride)`, `B`
/// `k x n` likewise, and `C` row-major with row stride `ldc`.
///
/// # Safety
/// Every element the shapes and strides reach must lie inside live buffers, and `C` must alias
/// neither `A` nor `B` nor another thread's output.
unsafe fn gemm_tile<T: Float>(
    (m, n, k): (usize, usize, usize),
    c: *mut T,
    ldc: usize,
    accumulate: bool,
    (a, a_rs, a_cs): (*const T, isize, isize),
    (b, b_rs, b_cs): (*const T, isize, isize),
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a,
            a_cs,
            a_rs,
            b,
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
#[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
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
