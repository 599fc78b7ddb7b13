//! The command line's heap: the C library's allocator, with every block of 4 KiB or more
//! starting on a 64-byte cache line.
//!
//! Why: glibc hands out large blocks 16 bytes past a page boundary, so every row of a big
//! `Vec<f32>` (the parameters, the gradients, the optimizer's moments, the batch's
//! activations) starts mid-way through a cache line, and every 64-byte vector load of it
//! touches two lines. That costs MNIST training about 6% and the count models about 3%
//! (BENCHMARKS.md, "Rows on cache lines"). Results are unchanged: alignment moves data, never
//! the order of any sum.
//!
//! How: a large block is taken from `malloc`, `calloc` or `realloc` with [`SLACK`] bytes to
//! spare, and handed out from the first cache line at least 8 bytes in; those 8 bytes hold
//! where the C block starts, for `free` and `realloc`. So zeroed blocks still come from
//! `calloc`, whose fresh pages the kernel zeroes and which cost no memory until written, and a
//! growing block is still moved by `realloc` (`mremap` for a large one, without a copy). The
//! standard library's over-aligned path does neither: it writes every zeroed byte and copies
//! every block it grows, which raised the peak memory of an MNIST run by 8 MiB when tried.
//!
//! The library leaves the choice of allocator to the program that embeds it; a program can
//! copy this one, or use any allocator that aligns large blocks.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large start on a [`LINE`].
const LARGE: usize = 4096;
/// A cache line, and the width of an AVX-512 vector.
const LINE: usize = 64;
/// The header: the C block's start, just before the block handed out.
const HEADER: usize = std::mem::size_of::<usize>();
/// Bytes a large block asks the C library for beyond its size: room for the header and then
/// the next line, whatever the C block's own alignment.
const SLACK: usize = LINE + HEADER;

/// The C allocator; blocks of [`LARGE`] bytes or more start on a [`LINE`].
pub struct LineAligned;

/// Whether a block of this layout goes through the header scheme: large, and asking no more
/// than a line of alignment (a larger alignment goes to `System`, which honours it).
fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= LINE
}

/// The first line boundary at least [`HEADER`] bytes into the C block at `raw`: at most
/// `HEADER + LINE - 1 < SLACK` bytes in, so the block's size still fits before the C block's
/// end.
fn user_start(raw: usize) -> usize {
    (raw + HEADER).next_multiple_of(LINE)
}

/// Hands out the C block `raw` (null passes through): writes the header and returns the
/// aligned start.
///
/// # Safety
/// `raw` is null or a C block of at least `size + SLACK` bytes, for the block's `size`.
unsafe fn hand_out(raw: *mut u8) -> *mut u8 {
    if raw.is_null() {
        return raw;
    }
    let start = user_start(raw as usize);
    // SAFETY: `start - HEADER .. start` lies inside the C block (start >= raw + HEADER), and
    // is 8-aligned (start is 64-aligned).
    unsafe {
        let user = raw.add(start - raw as usize);
        user.sub(HEADER).cast::<usize>().write(raw as usize);
        user
    }
}

/// The C block behind a block handed out by [`hand_out`].
///
/// # Safety
/// `user` came from [`hand_out`] and is live.
unsafe fn c_block(user: *mut u8) -> *mut u8 {
    // SAFETY: the header written by `hand_out` sits just before `user`.
    let raw = unsafe { user.sub(HEADER).cast::<usize>().read() };
    // Same provenance as `user`: the C block contains it.
    user.wrapping_sub(user as usize - raw)
}

/// A large block of `size` bytes from the C function `take` (malloc or calloc), asked for
/// `size + SLACK` bytes and handed out from its first line; null if either fails.
///
/// # Safety
/// `take(bytes)` returns null or a C block of `bytes` bytes.
unsafe fn large_block(size: usize, take: impl FnOnce(usize) -> *mut libc::c_void) -> *mut u8 {
    match size.checked_add(SLACK) {
        // SAFETY: the caller's promise about `take`.
        Some(bytes) => unsafe { hand_out(take(bytes).cast()) },
        None => std::ptr::null_mut(),
    }
}

// SAFETY: large blocks (see `is_large`) come from `malloc`/`calloc`/`realloc` with SLACK
// bytes to spare and are handed out from a 64-byte boundary inside them, so they have every
// alignment up to a line and `size` bytes from there; `free` and `realloc` receive the C
// block recorded in the header. Every other block goes to `System` with its own layout. The
// layout a block is freed or resized with is the one it was allocated with (Rust's promise),
// so `is_large` routes it back the same way.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: the caller's promise (a non-zero size).
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: malloc's result is null or a block of the bytes asked for.
        unsafe { large_block(layout.size(), |bytes| libc::malloc(bytes)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: the caller's promise.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: as for `alloc`; calloc's bytes are all zero, the header write aside, which
        // lies before the block handed out.
        unsafe { large_block(layout.size(), |bytes| libc::calloc(1, bytes)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) {
            // SAFETY: a large block's header names its C block.
            unsafe { libc::free(c_block(ptr).cast()) }
        } else {
            // SAFETY: `ptr` came from `System` with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller promises that this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_large(layout), is_large(new_layout)) {
            // SAFETY: a small block is `System`'s, with `layout`.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                let Some(bytes) = new_size.checked_add(SLACK) else {
                    return std::ptr::null_mut();
                };
                // SAFETY: `raw` is the live C block behind `ptr`; on failure realloc leaves it
                // as it was, and so is `ptr`. On success the C block holds the old contents at
                // the old offset (the first min(old, new) + offset bytes are kept); if the new
                // aligned start is elsewhere in it, the contents move there (memmove: the
                // ranges may overlap), both ranges inside the new block of `bytes`.
                unsafe {
                    let raw = c_block(ptr);
                    let offset = ptr as usize - raw as usize;
                    let moved: *mut u8 = libc::realloc(raw.cast(), bytes).cast();
                    if moved.is_null() {
                        return moved;
                    }
                    let new_offset = user_start(moved as usize) - moved as usize;
                    if new_offset != offset {
                        let keep = layout.size().min(new_size);
                        std::ptr::copy(moved.add(offset), moved.add(new_offset), keep);
                    }
                    hand_out(moved)
                }
            }
            _ => {
                // Across the threshold: a block of the other kind, the contents copied.
                // SAFETY: `new_layout` is valid and non-zero (the caller's promise); the copy
                // stays inside both blocks; `ptr` is freed by the route it came from.
                unsafe {
                    let fresh = self.alloc(new_layout);
                    if !fresh.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    fresh
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_start_on_a_cache_line_and_zeroed_ones_are_zero() {
        for n in [1024usize, 2000, 100_000, 1 << 20, 1 << 24] {
            let v = vec![0f32; n];
            assert_eq!(v.as_ptr() as usize % LINE, 0, "{n} floats");
            assert!(v.iter().all(|&x| x == 0.0));
            let w = vec![1u8; 4 * n];
            assert_eq!(w.as_ptr() as usize % LINE, 0, "{n} bytes");
            assert!(w.iter().all(|&x| x == 1));
        }
    }

    #[test]
    fn growing_and_shrinking_keep_the_contents_and_the_line() {
        let mut v: Vec<u32> = (0..100).collect();
        for i in 100..3_000_000 {
            v.push(i);
            if v.len() >= 1024 {
                assert_eq!(v.as_ptr() as usize % LINE, 0, "{} entries", v.len());
            }
        }
        assert!(v.iter().enumerate().all(|(i, &x)| i as u32 == x));
        v.truncate(5000);
        v.shrink_to_fit();
        assert_eq!(v.as_ptr() as usize % LINE, 0);
        assert!(v.iter().enumerate().all(|(i, &x)| i as u32 == x));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<u32>>());
    }

    /// Many blocks resized in turn, so that `realloc` both extends in place and moves them
    /// (and the aligned start moves within the C block): each keeps its own contents.
    #[test]
    fn interleaved_resizes_keep_every_block() {
        let mut blocks: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; 5000 + 37 * i]).collect();
        for round in 0..40usize {
            for (i, b) in blocks.iter_mut().enumerate() {
                let len = 4096 + (round * 7919 + i * 104_729) % 300_000;
                b.resize(len, i as u8);
                b.shrink_to_fit();
                assert_eq!(b.as_ptr() as usize % LINE, 0);
                assert!(b.iter().all(|&x| x == i as u8), "block {i}, round {round}");
            }
        }
    }

    /// A type that asks for more than a cache line keeps its alignment through growth.
    #[test]
    fn alignments_above_a_line_are_kept() {
        #[derive(Clone, Copy)]
        #[repr(align(128))]
        struct Wide(u8);
        let mut v = vec![Wide(1); 3];
        for _ in 0..200 {
            v.push(Wide(2));
            assert_eq!(v.as_ptr() as usize % 128, 0);
        }
        v.truncate(2);
        v.shrink_to_fit();
        assert_eq!(v.as_ptr() as usize % 128, 0);
        assert_eq!(v[0].0 + v[1].0, 2);
    }
}
