//! The command line's heap: the system allocator, with every block of 4 KiB or more aligned
//! to a 64-byte cache line.
//!
//! Why: glibc hands out large blocks 16 bytes past a page boundary, so every row of a big
//! `Vec<f32>` (the parameters, the gradients, the optimizer's moments, the batch's
//! activations) starts mid-way through a cache line, and every 64-byte vector load of it
//! touches two lines. On the count model that costs the sparse first layer and the
//! element-wise passes a few percent of a step (BENCHMARKS.md, "Aligned rows"). Results are
//! unchanged: alignment moves data, never the order of any sum.
//!
//! The library leaves the choice of allocator to the program that embeds it; a program can
//! copy this one, or use any allocator that aligns large blocks.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are aligned to [`LINE`].
const LARGE: usize = 4096;
/// A cache line, and the width of an AVX-512 vector.
const LINE: usize = 64;

/// [`System`], asked for at least [`LINE`]-byte alignment for blocks of [`LARGE`] bytes or
/// more.
pub struct LineAligned;

/// The layout actually requested from [`System`] for `layout`. It depends on `layout` alone,
/// so a block is freed with the same layout it was allocated with.
fn raised(layout: Layout) -> Layout {
    if layout.size() >= LARGE && layout.align() < LINE {
        // Cannot fail: LINE is a power of two, and a size that fitted with a smaller
        // alignment still fits below isize::MAX once rounded up to 64 (LARGE is far from it).
        layout.align_to(LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every method forwards to `System` with `raised(layout)`, a layout of the same size
// and an alignment at least the one asked for. `raised` is a function of the layout alone,
// and Rust passes `dealloc` and `realloc` the layout the block was allocated with, so `System`
// always frees a block with the layout it allocated it with. `realloc` is `System`'s own only
// when neither the old nor the new size crosses into or out of the raised class; otherwise
// it allocates the new block, copies, and frees the old one, as `GlobalAlloc::realloc`'s
// default does.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promise (a non-zero size) holds for `raised(layout)` too.
        unsafe { System.alloc(raised(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(raised(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `layout`, so from `System` with `raised(layout)`.
        unsafe { System.dealloc(ptr, raised(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The caller promises that `new_size` with `layout.align()` is a valid layout.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let (old, new) = (raised(layout), raised(new_layout));
        if old.align() == new.align() {
            // SAFETY: `ptr` is `System`'s block of layout `old`; the new layout keeps its
            // alignment, as `System::realloc` requires.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // SAFETY: `new` has a non-zero size (the caller's promise); the copy reads the old
        // block's first min(old, new) bytes, all inside both blocks, which do not overlap.
        unsafe {
            let fresh = System.alloc(new);
            if !fresh.is_null() {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_start_on_a_cache_line_and_small_ones_keep_their_alignment() {
        for n in [1024usize, 2000, 100_000, 1 << 20] {
            let v = vec![0f32; n];
            assert_eq!(v.as_ptr() as usize % LINE, 0, "{n} floats");
        }
        assert_eq!(raised(Layout::new::<[u8; 100]>()).align(), 1);
        assert_eq!(raised(Layout::new::<[u64; 1024]>()).align(), LINE);
        let big = Layout::from_size_align(1 << 20, 4096).expect("layout");
        assert_eq!(raised(big).align(), 4096);
    }

    #[test]
    fn growing_across_the_threshold_keeps_the_contents() {
        let mut v: Vec<u32> = (0..100).collect();
        for i in 100..5000 {
            v.push(i);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| i as u32 == x));
        assert_eq!(v.as_ptr() as usize % LINE, 0);
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<u32>>());
    }
}
