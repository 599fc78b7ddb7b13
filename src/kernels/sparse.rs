//! Products with a sparse left operand: `Y = X W` where most of `X` is zero.
//!
//! Why: a layer's input is often mostly zeros. About 81% of MNIST's pixels are exactly 0, and
//! a ReLU zeroes about half of a hidden layer. A dense product multiplies all those zeros; in
//! the MNIST VAE the two products that touch the images (the encoder's `X W` and its weight
//! gradient `X^T G`) are 38% of a training step's arithmetic. [`sparse_matmul`] does only the
//! nonzero terms. The weight gradient uses the same kernel on the transpose, since
//! `X^T G` is (sparse `X^T`) times (dense `G`); [`SparseRows::transpose_into`] builds it.
//!
//! Exactness: element `(i, j)` of the result is `sum over p of x_ip w_pj`, accumulated from
//! zero in increasing `p` with one rounded multiply and one rounded add per term (no fused
//! multiply-add). Skipping a zero term changes nothing, since `s + 0 w = s` exactly for finite
//! `w`. So the result is bit-identical to [`sparse_matmul_reference`], the plain dense loop in
//! the same order, on every instruction set and for any thread count (each output row is
//! computed whole by one thread).

use crate::kernels::fast::{COMPACT_SLACK, instruction_set};
use crate::kernels::par::{self, Disjoint};
use crate::kernels::scalar::Float;

/// Rows of a matrix in sparse row form: row `r`'s nonzeros are at columns
/// `index[r * stride..][..len[r]]` (increasing) with values `values[r * stride..][..len[r]]`.
/// Each row has its own fixed region, so rows are filled in parallel without a prefix sum.
/// Buffers are sized once for the largest shape and reused, so refilling allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct SparseRows<T> {
    rows: usize,
    cols: usize,
    /// Room per row: `cols` plus what the compress kernel may write past its last entry.
    stride: usize,
    len: Vec<usize>,
    nonzeros: usize,
    index: Vec<u32>,
    values: Vec<T>,
}

/// Rows filled per parallel task.
const FILL_ROWS_PER_TASK: usize = 8;
/// Columns of the source (rows of the transpose) gathered per parallel task.
const TRANSPOSE_COLS_PER_TASK: usize = 64;

impl<T: Float> SparseRows<T> {
    /// Room for any `rows x cols` matrix with `rows <= max_rows`.
    pub fn with_capacity(max_rows: usize, cols: usize) -> Self {
        let mut s = SparseRows::default();
        s.ensure(max_rows, cols);
        s
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns held.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Stored (nonzero) entries.
    pub fn nonzeros(&self) -> usize {
        self.nonzeros
    }

    /// Row `r`'s column indices and values.
    pub fn row(&self, r: usize) -> (&[u32], &[T]) {
        let at = r * self.stride;
        let end = at + self.len[r];
        (&self.index[at..end], &self.values[at..end])
    }

    /// Sets the shape; grows the buffers only if asked for more than they hold.
    fn ensure(&mut self, rows: usize, cols: usize) {
        self.rows = rows;
        self.cols = cols;
        self.stride = cols + COMPACT_SLACK;
        if self.len.len() < rows {
            self.len.resize(rows, 0);
        }
        let cap = rows * self.stride;
        if self.index.len() < cap {
            self.index.resize(cap, 0);
            self.values.resize(cap, T::zero());
        }
    }

    /// Refills from the dense row-major `rows x cols` matrix `x`, keeping entries `!= 0`
    /// (NaN included). Rows are compacted in parallel (`kernels::par`).
    pub fn fill_from_dense(&mut self, x: &[T], rows: usize, cols: usize) {
        assert!(
            rows.checked_mul(cols).is_some_and(|n| n <= x.len()),
            "fill_from_dense: buffer too small"
        );
        self.ensure(rows, cols);
        let stride = self.stride;
        let (index, values) = (
            Disjoint::new(&mut self.index[..]),
            Disjoint::new(&mut self.values[..]),
        );
        par::for_each_piece(&mut self.len[..rows], FILL_ROWS_PER_TASK, |r0, lens| {
            for (i, len) in lens.iter_mut().enumerate() {
                let r = r0 + i;
                let (a, b) = (r * stride, (r + 1) * stride);
                // SAFETY: row r's region belongs to the task that holds len[r].
                let (idx, vals) = unsafe { (index.piece(a, b), values.piece(a, b)) };
                *len = T::compact_nonzeros(&x[r * cols..(r + 1) * cols], 0, idx, vals);
            }
        });
        self.nonzeros = self.len[..rows].iter().sum();
    }

    /// Writes the transpose (`cols x rows`, also in sparse row form) into `out`. Each of its
    /// rows lists the original rows in increasing order. Built in parallel over ranges of
    /// columns: each task walks every row's entries that fall in its range.
    pub fn transpose_into(&self, out: &mut SparseRows<T>) {
        let (rows, cols) = (self.rows, self.cols);
        out.ensure(cols, rows);
        out.nonzeros = self.nonzeros;
        let stride = out.stride;
        let (index, values) = (
            Disjoint::new(&mut out.index[..]),
            Disjoint::new(&mut out.values[..]),
        );
        par::for_each_piece(&mut out.len[..cols], TRANSPOSE_COLS_PER_TASK, |c0, lens| {
            let c1 = c0 + lens.len();
            // SAFETY: the regions of rows c0..c1 of the transpose belong to this task.
            let (idx_out, val_out) = unsafe {
                (
                    index.piece(c0 * stride, c1 * stride),
                    values.piece(c0 * stride, c1 * stride),
                )
            };
            lens.fill(0);
            for r in 0..rows {
                let (idx, vals) = self.row(r);
                let from = idx.partition_point(|&j| (j as usize) < c0);
                for (&j, &v) in idx[from..].iter().zip(&vals[from..]) {
                    let j = j as usize;
                    if j >= c1 {
                        break;
                    }
                    let len = &mut lens[j - c0];
                    let at = (j - c0) * stride + *len;
                    idx_out[at] = r as u32;
                    val_out[at] = v;
                    *len += 1;
                }
            }
        });
    }
}

/// Output columns kept in registers at a time: 4 AVX-512 vectors of f32.
const BLOCK: usize = 64;
/// Then 16 at a time, then one.
const SMALL_BLOCK: usize = 16;
/// Output rows per task: enough work to be worth a task, few enough to share two threads.
const ROWS_PER_TASK: usize = 8;

/// Columns `j0..j0 + B` of one output row: sum over the row's nonzeros `(p, v)` of
/// `v * W[p, j0..j0 + B]`, accumulated in registers.
#[inline(always)]
fn row_block<T: Float, const B: usize>(
    idx: &[u32],
    vals: &[T],
    w: &[T],
    n: usize,
    j0: usize,
    out: &mut [T],
) {
    let mut acc = [T::zero(); B];
    for (&p, &v) in idx.iter().zip(vals) {
        let at = p as usize * n + j0;
        let wrow: &[T; B] = w[at..at + B].try_into().expect("B columns");
        for t in 0..B {
            acc[t] += v * wrow[t];
        }
    }
    out[j0..j0 + B].copy_from_slice(&acc);
}

/// Output rows `r0..r0 + out.len() / n`, column block by column block, so that one block of
/// `W` stays in cache across the rows.
#[inline(always)]
fn rows_body<T: Float>(x: &SparseRows<T>, w: &[T], n: usize, r0: usize, out: &mut [T]) {
    let rows = out.len() / n;
    let mut j0 = 0;
    while j0 + BLOCK <= n {
        for i in 0..rows {
            let (idx, vals) = x.row(r0 + i);
            row_block::<T, BLOCK>(idx, vals, w, n, j0, &mut out[i * n..(i + 1) * n]);
        }
        j0 += BLOCK;
    }
    while j0 + SMALL_BLOCK <= n {
        for i in 0..rows {
            let (idx, vals) = x.row(r0 + i);
            row_block::<T, SMALL_BLOCK>(idx, vals, w, n, j0, &mut out[i * n..(i + 1) * n]);
        }
        j0 += SMALL_BLOCK;
    }
    while j0 < n {
        for i in 0..rows {
            let (idx, vals) = x.row(r0 + i);
            row_block::<T, 1>(idx, vals, w, n, j0, &mut out[i * n..(i + 1) * n]);
        }
        j0 += 1;
    }
}

/// `Y = X W`, where `X` is sparse `m x k` (`m = x.rows()`, `k = x.cols()`), `W` dense row-major
/// `k x n`, and `Y` dense row-major `m x n`, overwritten. Runs in parallel (`kernels::par`)
/// when `threads > 1`.
pub fn sparse_matmul<T: Float>(x: &SparseRows<T>, w: &[T], n: usize, y: &mut [T], threads: usize) {
    let (m, k) = (x.rows(), x.cols());
    // Internal invariant: callers size their buffers from validated shapes. Products are
    // overflow-checked so that no wrapped size passes.
    let fits = |a: usize, b: usize, len: usize| a.checked_mul(b).is_some_and(|p| p <= len);
    assert!(
        fits(k, n, w.len()) && fits(m, n, y.len()),
        "sparse_matmul buffers too small"
    );
    let y = &mut y[..m * n];
    if n == 0 || m == 0 {
        return;
    }
    let task = ROWS_PER_TASK * n;
    if threads <= 1 || m <= ROWS_PER_TASK {
        for (t, out) in y.chunks_mut(task).enumerate() {
            rows(x, w, n, t * ROWS_PER_TASK, out);
        }
    } else {
        super::par::for_each_piece(y, task, |at, out| rows(x, w, n, at / n, out));
    }
}

/// [`rows_body`] compiled for the widest vector instructions this CPU has.
fn rows<T: Float>(x: &SparseRows<T>, w: &[T], n: usize, r0: usize, out: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    {
        match instruction_set() {
            // SAFETY: the CPU has the features each function is compiled for.
            "avx512" => return unsafe { rows_avx512(x, w, n, r0, out) },
            "avx2" => return unsafe { rows_avx2(x, w, n, r0, out) },
            _ => {}
        }
    }
    rows_body(x, w, n, r0, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn rows_avx512<T: Float>(x: &SparseRows<T>, w: &[T], n: usize, r0: usize, out: &mut [T]) {
    rows_body(x, w, n, r0, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<T: Float>(x: &SparseRows<T>, w: &[T], n: usize, r0: usize, out: &mut [T]) {
    rows_body(x, w, n, r0, out)
}

/// The plain version of [`sparse_matmul`] on the dense `m x k` matrix `x`: every term,
/// zeros included, summed from zero in increasing `p` in `T`. [`sparse_matmul`] must match it
/// bit for bit.
#[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
pub fn sparse_matmul_reference<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    x: &[T],
    w: &[T],
    y: &mut [T],
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = T::zero();
            for p in 0..k {
                s += x[i * k + p] * w[p * n + j];
            }
            y[i * n + j] = s;
        }
    }
}
