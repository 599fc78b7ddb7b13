//! Parallel loops over tasks: on the session this thread leads (see [`super::team`]), else on
//! the current rayon pool, else inline.
//!
//! Work is cut into tasks whose extent depends only on the shape, never on the thread count,
//! and each element is computed independently, so results do not depend on how many threads
//! run.

use std::marker::PhantomData;

use rayon::prelude::*;

use super::team;

/// About this many elements per task: below it, splitting costs more than it saves.
const GRAIN: usize = 1 << 14;

fn rows_per_block(cols: usize) -> usize {
    (GRAIN / cols.max(1)).max(1)
}

/// Calls `f(t)` for each `t` in `0..tasks`, in parallel when it can.
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn for_each_task<F: Fn(usize) + Sync>(tasks: usize, f: F) {
    #[cfg(feature = "loop-profile")]
    let (_timer, f) = (
        super::profile::Timer::start(std::panic::Location::caller()),
        super::profile::in_task(f),
    );
    if tasks <= 1 || team::inside_task() {
        (0..tasks).for_each(f);
    } else if !team::for_each_task(tasks, &f) {
        (0..tasks).into_par_iter().for_each(&f);
    }
}

/// A mutable slice handed out to tasks in disjoint pieces.
pub struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `Disjoint` only gives out non-overlapping pieces (the caller's promise in `piece`),
// so sharing it between threads is sharing `&mut` borrows of distinct elements.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    /// Takes the whole slice for the lifetime of the borrow.
    pub fn new(slice: &'a mut [T]) -> Self {
        Disjoint {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: PhantomData,
        }
    }

    /// Elements `start..end` (clamped to the slice).
    ///
    /// # Safety
    /// No two live pieces may overlap.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn piece(&self, start: usize, end: usize) -> &'a mut [T] {
        let end = end.min(self.len);
        let start = start.min(end);
        // SAFETY: in bounds by the clamps; exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

/// Calls `f(first_index, chunk)` on consecutive `chunk`-long pieces of `out` (the last may be
/// shorter), in parallel.
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn for_each_piece<T, F>(out: &mut [T], chunk: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    let chunk = chunk.max(1);
    let tasks = out.len().div_ceil(chunk);
    let out = Disjoint::new(out);
    for_each_task(tasks, |t| {
        // SAFETY: task t alone takes elements t*chunk..(t+1)*chunk.
        f(t * chunk, unsafe { out.piece(t * chunk, (t + 1) * chunk) })
    });
}

/// Calls `f(row_index, row)` for each `cols`-wide row of `out`.
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn for_each_row<T, F>(out: &mut [T], cols: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    for_each_row_in_blocks(out, cols, rows_per_block(cols), f);
}

/// [`for_each_row`] with `rows_per_task` rows a task, for rows whose elements cost far more
/// than the plain arithmetic [`GRAIN`] is sized for (a libm call each, say).
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn for_each_row_in_blocks<T, F>(out: &mut [T], cols: usize, rows_per_task: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    if cols == 0 {
        return;
    }
    let rows = out.len() / cols;
    for_each_piece(
        &mut out[..rows * cols],
        rows_per_task.max(1) * cols,
        |at, piece| {
            for (i, row) in piece.chunks_mut(cols).enumerate() {
                f(at / cols + i, row);
            }
        },
    );
}

/// Calls `f(row_index, row, scalar)` for each `cols`-wide row of `out` with the matching
/// element of `scalars` (one value per row).
#[cfg_attr(feature = "loop-profile", track_caller)]
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
    let rpb = rows_per_block(cols);
    let (out, scalars) = (
        Disjoint::new(&mut out[..rows * cols]),
        Disjoint::new(&mut scalars[..rows]),
    );
    for_each_task(rows.div_ceil(rpb), |blk| {
        let r0 = blk * rpb;
        // SAFETY: block blk alone takes rows r0..r0 + rpb and their scalars.
        let (po, ps) = unsafe {
            (
                out.piece(r0 * cols, (r0 + rpb) * cols),
                scalars.piece(r0, r0 + rpb),
            )
        };
        for (i, (row, s)) in po.chunks_mut(cols).zip(ps.iter_mut()).enumerate() {
            f(r0 + i, row, s);
        }
    });
}
