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
//! zero in increasing `p` with one fused multiply-add per term, `s <- fma(x_ip, w_pj, s)`,
//! rounded once. Skipping a zero term changes nothing, since `fma(0, w, s) = s` exactly for
//! finite `w`. So the result is bit-identical to [`sparse_matmul_reference`], the plain dense
//! loop in the same order, for any thread count (each output row is computed whole by one
//! thread) and on every instruction set: `mul_add` is correctly rounded everywhere. The AVX-512
//! and AVX2 builds issue it as one instruction; a CPU without FMA gets the same bits from
//! libm's `fma`, slowly.
//!
//! Why fused: a separate multiply and add take two vector instructions per term on the same
//! two ports, so the kernel was bound by them; one FMA per term made MNIST's two sparse
//! products (building the sparse rows included) 1.12x and 1.13x faster on one thread
//! (`cargo bench --features internals --bench kernels -- sparse_1t`).

use crate::kernels::fast::{COMPACT_SLACK, instruction_set};
use crate::kernels::par::{self, Disjoint};
use crate::kernels::scalar::Float;

/// Rows of a matrix in sparse row form: row `r`'s nonzeros are at columns
/// `index[start[r]..][..len[r]]` (increasing) with values `values[start[r]..][..len[r]]`.
/// Filled from dense rows, each row has its own fixed region (`start[r] = r * stride`), so
/// rows are filled in parallel without a prefix sum. A transpose is packed instead (each row
/// starts where the one before ends; see [`SparseRows::transpose_into`]). Buffers are sized
/// once for the largest shape and reused, so refilling allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct SparseRows<T> {
    rows: usize,
    cols: usize,
    /// Room per row: `cols` plus what the compress kernel may write past its last entry.
    stride: usize,
    /// Where each row's entries begin.
    start: Vec<usize>,
    len: Vec<usize>,
    nonzeros: usize,
    index: Vec<u32>,
    values: Vec<T>,
}

/// Rows filled per parallel task.
const FILL_ROWS_PER_TASK: usize = 8;

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
        let at = self.start[r];
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
            self.start.resize(rows, 0);
        }
        let cap = rows * self.stride;
        if self.index.len() < cap {
            self.index.resize(cap, 0);
            self.values.resize(cap, T::zero());
        }
    }

    /// Refills from the dense row-major `rows x cols` matrix `x`, keeping entries `!= 0`
    /// (NaN included). Rows are compacted in parallel (`kernels::par`).
    #[cfg_attr(feature = "loop-profile", track_caller)]
    pub fn fill_from_dense(&mut self, x: &[T], rows: usize, cols: usize) {
        assert!(
            rows.checked_mul(cols).is_some_and(|n| n <= x.len()),
            "fill_from_dense: buffer too small"
        );
        self.ensure(rows, cols);
        let stride = self.stride;
        for (r, start) in self.start[..rows].iter_mut().enumerate() {
            *start = r * stride;
        }
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

    /// Replaces each row's stored values by `f` of them (`f` gets one row's values at a time),
    /// rows in parallel (`kernels::par`). The pattern of nonzeros is kept as it is, so `f`
    /// should map nonzeros to nonzeros (it is for ln(1 + x) of counts).
    #[cfg_attr(feature = "loop-profile", track_caller)]
    pub fn map_values(&mut self, f: impl Fn(&mut [T]) + Sync) {
        let rows = self.rows;
        let (start, values) = (&self.start, Disjoint::new(&mut self.values[..]));
        par::for_each_piece(&mut self.len[..rows], FILL_ROWS_PER_TASK, |r0, lens| {
            for (i, &len) in lens.iter().enumerate() {
                let at = start[r0 + i];
                // SAFETY: row r0 + i's region belongs to the task that holds its length.
                f(unsafe { values.piece(at, at + len) });
            }
        });
    }

    /// Writes the transpose (`cols x rows`, also in sparse row form) into `out`. Each of its
    /// rows lists the original rows in increasing order, and its rows are packed one after
    /// the other: a counting sort, one pass to count each column's entries and one to place
    /// them, on the calling thread.
    ///
    /// Why so: the transpose was built in parallel over ranges of columns, into fixed regions
    /// of `rows` entries. Each task searched every source row for its range, and every entry
    /// written was on a cache line of its own, 2.3 MB of them for a 128 x 2,000 batch, out of
    /// the cache again by the next step. In a training step of the pbmc count model (one
    /// thread, 29,000 entries) it took 0.57 ms of 7.7.
    pub fn transpose_into(&self, out: &mut SparseRows<T>) {
        let (rows, cols) = (self.rows, self.cols);
        out.ensure(cols, rows);
        out.nonzeros = self.nonzeros;
        let (start, len) = (&mut out.start[..cols], &mut out.len[..cols]);
        len.fill(0);
        for r in 0..rows {
            for &j in self.row(r).0 {
                len[j as usize] += 1;
            }
        }
        let mut at = 0;
        for (start, len) in start.iter_mut().zip(len.iter_mut()) {
            *start = at;
            at += *len;
            *len = 0;
        }
        let (index, values) = (&mut out.index[..], &mut out.values[..]);
        for r in 0..rows {
            let (idx, vals) = self.row(r);
            for (&j, &v) in idx.iter().zip(vals) {
                let j = j as usize;
                let at = start[j] + len[j];
                index[at] = r as u32;
                values[at] = v;
                len[j] += 1;
            }
        }
    }
}

/// Output columns kept in registers at a time: 8 AVX-512 vectors of f32, 8 independent sums per
/// term, so that the adds' latency does not bound the loop (with rows on cache lines: at 14%
/// density, 128 x 2,000 x 128, 1.1x forward and 1.2x for `X^T G` against 64 columns).
const BLOCK: usize = 128;
/// Output columns in registers at a time when all of `W` is taken in one pass and the rows
/// average at least [`NARROW_TERMS`] nonzeros: 64 columns of `W`'s 128 rows (a batch's
/// gradient, in `X^T G`) are 32 KiB and stay in L1 while the rows sweep them, where 128 columns
/// do not. Sparser rows do better with fewer, wider sweeps, whose start and end (loading and
/// storing the sums) their few terms do not pay for twice. One thread, `X^T G` with the
/// sparse rows built: MNIST's 784 x 128 x 400 at 19% (24 terms a row) 470 -> 415 µs with 64
/// columns; `cells`' 2,000 x 128 x 128 at 5% (6 terms a row) 97 -> 112 µs and at 13% (15
/// terms) 233 -> 265 µs with 64, so those keep [`BLOCK`]. The bits are the same either way.
const NARROW_BLOCK: usize = 64;
/// See [`NARROW_BLOCK`].
const NARROW_TERMS: usize = 20;
/// Then 16 at a time, then one.
const SMALL_BLOCK: usize = 16;
/// Rows of `W` per pass: a `K_BLOCK x BLOCK` block of f32 `W` is 48 KiB, the size of L1 on the
/// machines measured (half of it, 48 rows, measured the same). The first measurements ran on a
/// `W` of one repeated value, which the virtual machine's host had merged into a few physical
/// pages. Re-measured on a `W` whose pages all differ (`benches/common/varied.rs`), every
/// choice from 32 to 144 rows lies within 5% (MNIST's `X W`, 1 and 2 threads); `ROW_CHUNK`
/// 128 measured the same, and `BLOCK` 64 was 13% slower.
const K_BLOCK: usize = 96;
/// Output rows that sweep each block of `W` in turn. Each touches only its nonzeros' rows of
/// the block, so the block is reused from L1 only if many rows pass over it: at MNIST's 19%
/// density, 64 rows read each row of the block about 12 times.
const ROW_CHUNK: usize = 64;
/// Nonzeros a row should have in each pass over a block of `W`: fewer, and the passes' own
/// work (loading and storing the running sums) outweighs the reuse of the block.
const TERMS_PER_PASS: usize = 16;
/// Output rows per sweep when all of `W` is taken in one pass: as for [`ROW_CHUNK`], the more
/// rows sweep a column block, the more of it is read from L1 (MNIST's `X^T G`, 784 x 128 x 400
/// at 19%: 8 rows 1.03x, 32 rows 1.14x, 128 rows 1.20x the earlier 8-row kernel).
const ONE_PASS_ROWS: usize = 128;
/// Fewest output rows per parallel task.
const MIN_ROWS_PER_TASK: usize = 8;

/// Columns `j0..j0 + B` of one output row: its value so far (zero on the first pass) plus,
/// over the nonzeros `(p, v)` given, `v * W[p, j0..j0 + B]`, accumulated in registers.
/// Storing the running sums between passes and reloading them rounds nothing: the terms are
/// added in the same order with the same operations as in one pass.
#[inline(always)]
fn row_block<T: Float, const B: usize, const FIRST: bool>(
    (idx, vals): (&[u32], &[T]),
    w: &[T],
    n: usize,
    j0: usize,
    out: &mut [T],
) {
    let sums: &mut [T; B] = (&mut out[j0..j0 + B]).try_into().expect("B columns");
    let mut acc = if FIRST { [T::zero(); B] } else { *sums };
    for (&p, &v) in idx.iter().zip(vals) {
        let at = p as usize * n + j0;
        let wrow: &[T; B] = w[at..at + B].try_into().expect("B columns");
        for t in 0..B {
            acc[t] = v.mul_add(wrow[t], acc[t]);
        }
    }
    *sums = acc;
}

/// Output rows `r0..r0 + out.len() / n`, in chunks of [`ROW_CHUNK`] rows. For each chunk the
/// rows of `W` are taken [`K_BLOCK`] at a time, and within that, column block by column block,
/// every row of the chunk adds its nonzeros' terms: the block of `W` stays in L1 across the
/// rows. Each output element still sums its terms in increasing `p`.
#[inline(always)]
fn rows_body<T: Float>(x: &SparseRows<T>, w: &[T], n: usize, r0: usize, out: &mut [T]) {
    let (rows, k) = (out.len() / n, x.cols());
    if k == 0 {
        out.fill(T::zero());
        return;
    }
    let k_block = k_block(x);
    if k_block == k {
        return one_pass(x, w, n, r0, out);
    }
    for c0 in (0..rows).step_by(ROW_CHUNK) {
        let mut chunk = Chunk {
            x,
            first_row: r0 + c0,
            rows: ROW_CHUNK.min(rows - c0),
            lo: [0; ROW_CHUNK],
            hi: [0; ROW_CHUNK],
            first: true,
        };
        let out = &mut out[c0 * n..(c0 + chunk.rows) * n];
        for k0 in (0..k).step_by(k_block) {
            chunk.next_block(k0, (k0 + k_block).min(k));
            by_column_blocks::<T, _, BLOCK>(&chunk, w, n, out);
        }
    }
}

/// [`rows_body`] when all of `W` is taken in one pass: column block by column block over
/// [`ONE_PASS_ROWS`] rows at a time, so that the rows share what of the block stays in cache.
#[inline(always)]
fn one_pass<T: Float>(x: &SparseRows<T>, w: &[T], n: usize, r0: usize, out: &mut [T]) {
    let narrow = x.nonzeros >= NARROW_TERMS * x.rows;
    for (c, out) in out.chunks_mut(ONE_PASS_ROWS * n).enumerate() {
        let rows = WholeRows {
            x,
            first_row: r0 + c * ONE_PASS_ROWS,
        };
        if narrow {
            by_column_blocks::<T, _, NARROW_BLOCK>(&rows, w, n, out);
        } else {
            by_column_blocks::<T, _, BLOCK>(&rows, w, n, out);
        }
    }
}

/// Some output rows, each over some of its nonzeros, column block by column block.
trait Sweep<T> {
    /// Columns `j0..j0 + B` of every row in `out`.
    fn sweep<const B: usize>(&self, w: &[T], n: usize, j0: usize, out: &mut [T]);
}

/// `rows`'s sweeps over all `n` columns: `B` at a time, then [`SMALL_BLOCK`], then one.
#[inline(always)]
fn by_column_blocks<T, S: Sweep<T>, const B: usize>(rows: &S, w: &[T], n: usize, out: &mut [T]) {
    let mut j0 = 0;
    while j0 + B <= n {
        rows.sweep::<B>(w, n, j0, out);
        j0 += B;
    }
    while j0 + SMALL_BLOCK <= n {
        rows.sweep::<SMALL_BLOCK>(w, n, j0, out);
        j0 += SMALL_BLOCK;
    }
    while j0 < n {
        rows.sweep::<1>(w, n, j0, out);
        j0 += 1;
    }
}

/// Output rows from `first_row`, each over all its nonzeros.
struct WholeRows<'a, T> {
    x: &'a SparseRows<T>,
    first_row: usize,
}

impl<T: Float> Sweep<T> for WholeRows<'_, T> {
    #[inline(always)]
    fn sweep<const B: usize>(&self, w: &[T], n: usize, j0: usize, out: &mut [T]) {
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            row_block::<T, B, true>(self.x.row(self.first_row + i), w, n, j0, row);
        }
    }
}

/// Rows of `W` per pass: [`K_BLOCK`], or more when the rows are sparser, so that a row still
/// has about [`TERMS_PER_PASS`] nonzeros in each pass; all of `W` in one pass when it is short.
fn k_block<T>(x: &SparseRows<T>) -> usize {
    let k = x.cols;
    let per_pass = (TERMS_PER_PASS * k * x.rows)
        .checked_div(x.nonzeros)
        .unwrap_or(k);
    let block = per_pass.max(K_BLOCK);
    // A few rows of W more than one block: splitting them off costs more passes than it saves.
    if k <= 2 * block { k } else { block }
}

/// How many passes [`sparse_matmul`] makes over `W` for `x`.
#[cfg(test)]
pub(super) fn passes<T>(x: &SparseRows<T>) -> usize {
    x.cols.div_ceil(k_block(x).max(1))
}

/// A chunk of output rows and, for each, where its nonzeros in the current block of `W`'s
/// rows begin (`lo`) and end (`hi`).
struct Chunk<'a, T> {
    x: &'a SparseRows<T>,
    first_row: usize,
    rows: usize,
    lo: [usize; ROW_CHUNK],
    hi: [usize; ROW_CHUNK],
    /// Whether the current block is the first, whose pass starts the sums from zero.
    first: bool,
}

impl<T: Float> Chunk<'_, T> {
    /// Moves to the block of `W`'s rows `k0..k1`; blocks come in increasing order.
    #[inline(always)]
    fn next_block(&mut self, k0: usize, k1: usize) {
        self.first = k0 == 0;
        for i in 0..self.rows {
            let (idx, _) = self.x.row(self.first_row + i);
            self.lo[i] = self.hi[i];
            self.hi[i] = if k1 == self.x.cols {
                idx.len()
            } else {
                self.lo[i] + idx[self.lo[i]..].partition_point(|&p| (p as usize) < k1)
            };
        }
    }
}

impl<T: Float> Sweep<T> for Chunk<'_, T> {
    /// Columns `j0..j0 + B` of every row of the chunk, over the current block's nonzeros.
    #[inline(always)]
    fn sweep<const B: usize>(&self, w: &[T], n: usize, j0: usize, out: &mut [T]) {
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            let (lo, hi) = (self.lo[i], self.hi[i]);
            let (idx, vals) = self.x.row(self.first_row + i);
            let terms = (&idx[lo..hi], &vals[lo..hi]);
            if self.first {
                row_block::<T, B, true>(terms, w, n, j0, row);
            } else if lo < hi {
                row_block::<T, B, false>(terms, w, n, j0, row);
            }
        }
    }
}

/// `Y = X W`, where `X` is sparse `m x k` (`m = x.rows()`, `k = x.cols()`), `W` dense row-major
/// `k x n`, and `Y` dense row-major `m x n`, overwritten. Runs in parallel (`kernels::par`)
/// when `threads > 1`, two tasks a thread (fewer for small `m`): the cut changes no result,
/// since each output element is summed whole, in one order, by one task.
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn sparse_matmul<T: Float>(x: &SparseRows<T>, w: &[T], n: usize, y: &mut [T], threads: usize) {
    sparse_matmul_beside(x, w, n, y, threads, || {});
}

/// [`sparse_matmul`], with `side` run once as one more parallel task beside the product's (on
/// one thread, before it). The product's results are the same: its tasks are cut as
/// [`sparse_matmul`] cuts them.
///
/// Why: the training forward pass builds the input's transpose for the backward pass
/// ([`SparseRows::transpose_into`], serial) while the input is in the cache. Run beside the
/// product, it no longer leaves the second thread waiting.
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn sparse_matmul_beside<T: Float>(
    x: &SparseRows<T>,
    w: &[T],
    n: usize,
    y: &mut [T],
    threads: usize,
    side: impl FnOnce() + Send,
) {
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
        return side();
    }
    let per_task = m.div_ceil(2 * threads.max(1)).max(MIN_ROWS_PER_TASK);
    if threads <= 1 || m <= per_task {
        side();
        rows(x, w, n, 0, y);
    } else {
        let side = std::sync::Mutex::new(Some(side));
        let tasks = m.div_ceil(per_task);
        let y = Disjoint::new(y);
        super::par::for_each_task(tasks + 1, |t| {
            if t == 0 {
                // The lock is taken once, by the one task that runs `side`.
                if let Some(f) = side.lock().ok().and_then(|mut f| f.take()) {
                    f();
                }
                return;
            }
            let r0 = (t - 1) * per_task;
            // SAFETY: task t alone takes rows r0..r0 + per_task of Y.
            let out = unsafe { y.piece(r0 * n, (r0 + per_task) * n) };
            rows(x, w, n, r0, out);
        });
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
/// zeros included, added from zero in increasing `p` by one fused multiply-add in `T`.
/// [`sparse_matmul`] must match it bit for bit.
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
                s = x[i * k + p].mul_add(w[p * n + j], s);
            }
            y[i * n + j] = s;
        }
    }
}
