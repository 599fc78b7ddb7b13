//! Row-parallel elementwise loops on the current rayon pool.
//!
//! Work is cut into blocks of whole rows whose size depends only on the shape, never on the
//! thread count, and each element is computed independently, so results do not depend on how
//! many threads run.

use rayon::prelude::*;

/// About this many elements per task: below it, splitting costs more than it saves.
const GRAIN: usize = 1 << 14;

fn rows_per_block(cols: usize) -> usize {
    (GRAIN / cols.max(1)).max(1)
}

/// Calls `f(row_index, row)` for each `cols`-wide row of `out`.
pub fn for_each_row<T, F>(out: &mut [T], cols: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    if cols == 0 {
        return;
    }
    let rpb = rows_per_block(cols);
    if out.len() <= GRAIN {
        out.chunks_mut(cols)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
        return;
    }
    out.par_chunks_mut(rpb * cols)
        .enumerate()
        .for_each(|(blk, rows)| {
            for (i, row) in rows.chunks_mut(cols).enumerate() {
                f(blk * rpb + i, row);
            }
        });
}

/// Calls `f(row_index, a_row, b_row)` on matching `cols`-wide rows of two buffers.
pub fn for_each_row2<A, B, F>(a: &mut [A], b: &mut [B], cols: usize, f: F)
where
    A: Send,
    B: Send,
    F: Fn(usize, &mut [A], &mut [B]) + Sync,
{
    if cols == 0 {
        return;
    }
    let rpb = rows_per_block(cols);
    let n = a.len().min(b.len());
    let (a, b) = (&mut a[..n], &mut b[..n]);
    if n <= GRAIN {
        for (r, (ar, br)) in a.chunks_mut(cols).zip(b.chunks_mut(cols)).enumerate() {
            f(r, ar, br);
        }
        return;
    }
    a.par_chunks_mut(rpb * cols)
        .zip(b.par_chunks_mut(rpb * cols))
        .enumerate()
        .for_each(|(blk, (ar, br))| {
            for (i, (x, y)) in ar.chunks_mut(cols).zip(br.chunks_mut(cols)).enumerate() {
                f(blk * rpb + i, x, y);
            }
        });
}

/// Elementwise over equal-length chunks of a flat buffer, for loops without rows (optimizers).
pub fn for_each_chunk<T, F>(out: &mut [T], f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    if out.len() <= GRAIN {
        f(0, out);
        return;
    }
    out.par_chunks_mut(GRAIN)
        .enumerate()
        .for_each(|(blk, chunk)| f(blk * GRAIN, chunk));
}

/// Calls `f(row_index, row, scalar)` for each `cols`-wide row of `out` with the matching
/// element of `scalars` (one value per row).
pub fn for_each_row_with_scalar<T, S, F>(out: &mut [T], cols: usize, scalars: &mut [S], f: F)
where
    T: Send,
    S: Send,
    F: Fn(usize, &mut [T], &mut S) + Sync,
{
    if cols == 0 {
        return;
    }
    let rows = (out.len() / cols).min(scalars.len());
    let (out, scalars) = (&mut out[..rows * cols], &mut scalars[..rows]);
    let rpb = rows_per_block(cols);
    if out.len() <= GRAIN {
        for (r, (row, s)) in out.chunks_mut(cols).zip(scalars.iter_mut()).enumerate() {
            f(r, row, s);
        }
        return;
    }
    out.par_chunks_mut(rpb * cols)
        .zip(scalars.par_chunks_mut(rpb))
        .enumerate()
        .for_each(|(blk, (rows, ss))| {
            for (i, (row, s)) in rows.chunks_mut(cols).zip(ss.iter_mut()).enumerate() {
                f(blk * rpb + i, row, s);
            }
        });
}
