//! Matrix products with bf16 operands and f32 sums: `C (+)= op(A) op(B)` where every element
//! of `A` and `B` is first rounded to bfloat16 (8 bits of significand, f32's exponent range),
//! and the products are summed in f32. The training mode `--precision bf16` uses it for the
//! dense layers' products; parameters, gradients and Adam's moments stay f32.
//!
//! [`matmul_bf16`] packs both operands into bf16 pairs along `k` (the layout the hardware's dot
//! products read: two neighbours along `k` in one 32-bit word, the even one in the low half)
//! and runs the fastest of three paths this CPU has ([`Bf16Path`]):
//!
//! - **AMX** (Intel Sapphire Rapids and later): `tdpbf16ps` multiplies a 16 x 32 tile of A by
//!   a 32 x 16 tile of B into 16 x 16 f32 sums, 8,192 multiply-adds an instruction. Linux lends
//!   the tile registers to a process that asks ([`amx_permitted`]).
//! - **AVX512-BF16** (Zen 4, Cooper Lake and later): `vdpbf16ps` adds 16 pairs of products
//!   into 16 f32 sums; a 6 x 64 register tile of them.
//! - **Rounding** elsewhere: the operands rounded to bf16 into scratch, then the f32 product
//!   ([`super::matmul`]). The same arithmetic to f32 rounding, and no faster.
//!
//! [`matmul_bf16_reference`] is the plain version the tests hold every path to: the operands
//! rounded to bf16 (to nearest, ties to even, by a rule written apart from [`bf16_bits`]),
//! exact products summed in f64. Both hardware paths treat bf16 subnormals as zero.
//!
//! Determinism: on each path, each element of `C` is one running sum over `k` in order,
//! whatever the tiling, and tiles are cut by shape alone, as in [`super::matmul`]. So the bits
//! do not depend on the thread count. They may differ between the paths (the hardware rounds
//! inside a dot product in its own way), so between CPUs.

use std::cell::RefCell;
use std::sync::OnceLock;

use super::matmul::{Op, SharedOut, check_sizes, tiles};

/// `x` rounded to bfloat16 (the upper 16 bits of an f32): round to nearest, ties to even, as
/// `vcvtneps2bf16` does. A NaN stays a NaN (quieted), and infinities stay infinite.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let nan = (b >> 16) | 0x40;
    (if x.is_nan() { nan } else { rounded }) as u16
}

/// The f32 a bfloat16 stands for (exact).
#[inline(always)]
pub fn bf16_value(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to the nearest bfloat16, as an f32.
#[inline(always)]
pub fn round_to_bf16(x: f32) -> f32 {
    bf16_value(bf16_bits(x))
}

/// How the bf16 products (`--precision bf16`) run on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Path {
    /// AMX tiles (`tdpbf16ps`).
    Amx,
    /// AVX512-BF16 vectors (`vdpbf16ps`).
    Avx512,
    /// The operands rounded to bf16, then the f32 product.
    Rounding,
}

impl Bf16Path {
    /// The fastest path this CPU (and OS) allows; found once.
    pub fn best() -> Bf16Path {
        static BEST: OnceLock<Bf16Path> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Bf16Path::Amx, Bf16Path::Avx512]
                .into_iter()
                .find(|p| p.is_available())
                .unwrap_or(Bf16Path::Rounding)
        })
    }

    /// Whether this CPU (and OS) can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Bf16Path::Amx => amx_permitted() && has_avx512_bf16(),
            Bf16Path::Avx512 => has_avx512_bf16(),
            Bf16Path::Rounding => true,
        }
    }

    /// Every path this CPU can run, fastest first (the tests run each).
    pub fn available() -> Vec<Bf16Path> {
        [Bf16Path::Amx, Bf16Path::Avx512, Bf16Path::Rounding]
            .into_iter()
            .filter(|p| p.is_available())
            .collect()
    }
}

/// Whether the CPU has AVX512-BF16 (with AVX-512F).
fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this process may run AMX's bf16 instructions: the CPU reports AMX-TILE and
/// AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22), and Linux granted the tile data state
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; without it the first tile
/// instruction is a fatal fault). Asked once per process.
pub fn amx_permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            use std::arch::x86_64::{__cpuid, __cpuid_count};
            // SAFETY: CPUID exists on every x86-64 CPU (the intrinsics are safe functions on
            // recent Rust, unsafe on the 1.89 this crate supports).
            #[allow(unused_unsafe)]
            let (max_leaf, leaf7) = unsafe { (__cpuid(0).eax, __cpuid_count(7, 0)) };
            if max_leaf < 7 {
                return false;
            }
            let edx = leaf7.edx;
            let (amx_bf16, amx_tile) = (edx >> 22 & 1 == 1, edx >> 24 & 1 == 1);
            if !amx_bf16 || !amx_tile {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: arch_prctl with this request only changes which state components the
            // kernel lets this process use; it reads and writes no memory of ours.
            let granted = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            granted == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

thread_local! {
    /// Each thread's packed operands, grown to the largest product it has packed and then
    /// reused, so that a training step allocates nothing after its first.
    static PACKED: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// [`matmul`](super::matmul) with the operands rounded to bf16 and the products summed in f32:
/// `C = op(A) op(B)` (or `C += ...` when `accumulate`), `op(A)` `m x k`, `op(B)` `k x n`, `C`
/// `m x n`, all row-major f32. `threads` as for [`matmul`](super::matmul). Runs on
/// [`Bf16Path::best`].
#[allow(clippy::too_many_arguments)]
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn matmul_bf16(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    c: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    matmul_bf16_on(
        Bf16Path::best(),
        (m, n, k),
        (a, op_a),
        (b, op_b),
        c,
        accumulate,
        threads,
    );
}

/// [`matmul_bf16`] on a given path. A path the CPU cannot run falls back to
/// [`Bf16Path::best`].
#[cfg_attr(feature = "loop-profile", track_caller)]
pub fn matmul_bf16_on(
    path: Bf16Path,
    (m, n, k): (usize, usize, usize),
    (a, op_a): (&[f32], Op),
    (b, op_b): (&[f32], Op),
    c: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    check_sizes(m, n, k, a, b, c);
    let path = if path.is_available() {
        path
    } else {
        Bf16Path::best()
    };
    if path == Bf16Path::Rounding {
        return matmul_by_rounding((m, n, k), (a, op_a), (b, op_b), c, accumulate, threads);
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let a = Operand::new(a, op_a, m, k);
    let b = Operand::new(b, op_b, k, n);
    let (row_tiles, col_tiles) = tiles(m, n, k, op_b);
    let (tm, tn) = (m.div_ceil(row_tiles), n.div_ceil(col_tiles));
    let out = SharedOut(c.as_mut_ptr());
    // Padding: whole blocks of 16 x 16 pairs, and whole register tiles of C.
    let (row_step, col_step) = match path {
        Bf16Path::Amx => (AMX_ROWS, AMX_COLS),
        _ => (BLOCK, NR),
    };
    let tile = |t: usize| {
        let (i0, j0) = ((t / col_tiles) * tm, (t % col_tiles) * tn);
        let (mt, nt) = (tm.min(m - i0), tn.min(n - j0));
        let kp = k.div_ceil(2).next_multiple_of(BLOCK);
        let (m_pad, n_pad) = (mt.next_multiple_of(row_step), nt.next_multiple_of(col_step));
        PACKED.with_borrow_mut(|(pa, pb)| {
            let (a_len, b_len) = (m_pad * kp, kp * n_pad);
            if pa.len() < a_len {
                pa.resize(a_len, 0);
            }
            if pb.len() < b_len {
                pb.resize(b_len, 0);
            }
            let (pa, pb) = (&mut pa[..a_len], &mut pb[..b_len]);
            // SAFETY: `path` runs on this CPU, so it has AVX-512F, BW and BF16
            // (`has_avx512_bf16`, which AMX's path requires too).
            unsafe {
                pack_a(&a, i0, mt, kp, pa);
                pack_b(&b, j0, nt, kp, pb);
            }
            let packed = Packed {
                mt,
                nt,
                kp,
                a: pa,
                b: pb,
            };
            // SAFETY: the tile covers rows i0..i0+mt and columns j0..j0+nt of C (inside it,
            // by `check_sizes`), disjoint from every other tile; `path` is available on this
            // CPU (checked above); the packed operands have the shapes `Packed` states.
            unsafe {
                match path {
                    Bf16Path::Amx => tile_amx(&packed, out.at(i0 * n + j0), n, accumulate),
                    _ => tile_avx512(&packed, out.at(i0 * n + j0), n, accumulate),
                }
            }
        });
    };
    let count = row_tiles * col_tiles;
    if threads > 1 && count > 1 {
        super::par::for_each_task(count, tile);
    } else {
        (0..count).for_each(tile);
    }
}

/// A matrix used through `op`: element (i, j) of the `rows x cols` result is at
/// `i * rs + j * cs`.
struct Operand<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
    rows: usize,
    cols: usize,
}

impl<'a> Operand<'a> {
    fn new(data: &'a [f32], op: Op, rows: usize, cols: usize) -> Self {
        let (rs, cs) = match op {
            Op::N => (cols, 1),
            Op::T => (1, rows),
        };
        Operand {
            data,
            rs,
            cs,
            rows,
            cols,
        }
    }
}

/// One tile's operands in bf16 pairs, in blocks of [`BLOCK`] x [`BLOCK`] pairs (1 KiB, one AMX
/// tile), each block contiguous: `a` is `m_pad x kp` pairs (pair p of row i at [`at_a`]), `b`
/// is `kp x n_pad` (pair p of column j at [`at_b`]). Rows, columns and pairs past the tile's
/// are zero; `mt x nt` is the part of C to write.
struct Packed<'a> {
    mt: usize,
    nt: usize,
    kp: usize,
    a: &'a [u32],
    b: &'a [u32],
}

impl Packed<'_> {
    fn m_pad(&self) -> usize {
        self.a.len() / self.kp
    }
    fn n_pad(&self) -> usize {
        self.b.len() / self.kp
    }
}

/// Side of the packed blocks, in pairs: an AMX tile is 16 rows of 16 pairs (64 bytes).
const BLOCK: usize = 16;
/// Pairs in a packed block.
const BLOCK_LEN: usize = BLOCK * BLOCK;

/// Where pair `p` of row `i` of A lies when A is packed with `kp` pairs a row: A's blocks of
/// 16 rows follow each other, each as its `kp / 16` blocks along k, each row-major.
#[inline(always)]
fn at_a(i: usize, p: usize, kp: usize) -> usize {
    ((i / BLOCK) * (kp / BLOCK) + p / BLOCK) * BLOCK_LEN + (i % BLOCK) * BLOCK + p % BLOCK
}

/// Where pair `p` of column `j` of B lies: B's blocks of 16 columns follow each other, each as
/// its `kp / 16` blocks along k, each with 16 pairs of k as rows of 16 columns.
#[inline(always)]
fn at_b(p: usize, j: usize, kp: usize) -> usize {
    ((j / BLOCK) * (kp / BLOCK) + p / BLOCK) * BLOCK_LEN + (p % BLOCK) * BLOCK + j % BLOCK
}

/// Packs rows `i0..i0+mt` of `a` (`m x k`) into `out` ([`at_a`], `kp` pairs a row, every
/// pair of `out` written: zeros past the tile's rows and past `k`).
///
/// # Safety
/// The CPU has AVX-512F, BW and BF16; `out.len()` is a multiple of `16 kp`, `kp` a multiple of
/// 16 at least `k / 2`, and rows `i0..i0+mt` lie inside `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_a(a: &Operand, i0: usize, mt: usize, kp: usize, out: &mut [u32]) {
    let (k, m_pad) = (a.cols, out.len() / kp);
    if a.cs == 1 {
        // A as stored: each row's pairs are adjacent in memory, 16 pairs to a block row.
        for r in 0..m_pad {
            for q in 0..kp / BLOCK {
                let line = if r < mt {
                    let row = &a.data[(i0 + r) * a.rs..][..k];
                    adjacent_pairs(row, 2 * BLOCK * q)
                } else {
                    zero_line()
                };
                store_line(out, at_a(r, BLOCK * q, kp), line);
            }
        }
    } else {
        // A transposed (stored k x m): stored rows 2p and 2p + 1 give pair p of 16 rows, a
        // column of a block; 16 of them are transposed into the block's rows.
        for rb in 0..m_pad / BLOCK {
            let (r0, rows) = (BLOCK * rb, mt.saturating_sub(BLOCK * rb).min(BLOCK));
            for q in 0..kp / BLOCK {
                let lines: [Line; BLOCK] = std::array::from_fn(|pp| {
                    let p = BLOCK * q + pp;
                    let stored = |kk: usize| {
                        let at = kk * a.cs + i0 + r0;
                        a.data.get(at..at + rows).unwrap_or(&[])
                    };
                    match (2 * p < k, 2 * p + 1 < k) {
                        (true, true) => interleaved_pairs(stored(2 * p), stored(2 * p + 1)),
                        (true, false) => interleaved_pairs(stored(2 * p), &[]),
                        _ => zero_line(),
                    }
                });
                for (ii, line) in transpose(lines).into_iter().enumerate() {
                    store_line(out, at_a(r0 + ii, BLOCK * q, kp), line);
                }
            }
        }
    }
}

/// Packs columns `j0..j0+nt` of `b` (`k x n`) into `out` ([`at_b`], `kp` pairs a column, every
/// pair of `out` written).
///
/// # Safety
/// The CPU has AVX-512F, BW and BF16; `out.len()` is a multiple of `16 kp`, `kp` a multiple of
/// 16 at least `k / 2`, and columns `j0..j0+nt` lie inside `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_b(b: &Operand, j0: usize, nt: usize, kp: usize, out: &mut [u32]) {
    let (k, n_pad) = (b.rows, out.len() / kp);
    if b.cs == 1 {
        // B as stored (k x n): stored rows 2p and 2p + 1 give a row of pairs, 16 to a block.
        // Block column by block column, so that the stores run in order through `out`.
        for cb in 0..n_pad / BLOCK {
            let (c0, cols) = (BLOCK * cb, nt.saturating_sub(BLOCK * cb).min(BLOCK));
            let stored = |kk: usize| {
                let at = kk * b.rs + j0 + c0;
                b.data.get(at..at + cols).unwrap_or(&[])
            };
            for p in 0..kp {
                let line = match (2 * p < k, 2 * p + 1 < k) {
                    (true, true) => interleaved_pairs(stored(2 * p), stored(2 * p + 1)),
                    (true, false) => interleaved_pairs(stored(2 * p), &[]),
                    _ => zero_line(),
                };
                store_line(out, at_b(p, c0, kp), line);
            }
        }
    } else {
        // B transposed (stored n x k): each column's pairs are adjacent in memory, a column of
        // a block; 16 of them are transposed into the block's rows.
        for cb in 0..n_pad / BLOCK {
            let c0 = BLOCK * cb;
            for q in 0..kp / BLOCK {
                let lines: [Line; BLOCK] = std::array::from_fn(|cc| {
                    if c0 + cc < nt {
                        adjacent_pairs(&b.data[(j0 + c0 + cc) * b.cs..][..k], 2 * BLOCK * q)
                    } else {
                        zero_line()
                    }
                });
                for (pp, line) in transpose(lines).into_iter().enumerate() {
                    store_line(out, at_b(BLOCK * q + pp, c0, kp), line);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_a(_: &Operand, _: usize, _: usize, _: usize, _: &mut [u32]) {
    unreachable!("the packed paths need x86-64")
}
#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_b(_: &Operand, _: usize, _: usize, _: usize, _: &mut [u32]) {
    unreachable!("the packed paths need x86-64")
}

/// 16 pairs of bf16 in one vector.
#[cfg(target_arch = "x86_64")]
type Line = std::arch::x86_64::__m512i;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn zero_line() -> Line {
    // SAFETY: AVX-512F is enabled in every caller (this is inlined into them).
    unsafe { std::arch::x86_64::_mm512_setzero_si512() }
}

/// Up to 16 f32 from `x` (zeros past its end), without reading past it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load_16(x: &[f32]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let n = x.len().min(16);
    let mask = ((1u32 << n) - 1) as __mmask16;
    // SAFETY: the mask covers the first n <= len elements of `x`, and masked-off lanes are
    // neither read nor faulted on; AVX-512F is enabled in every caller.
    unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr()) }
}

/// The 16 pairs `x[start..start + 32]` make, adjacent elements paired (zeros past the end).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn adjacent_pairs(x: &[f32], start: usize) -> Line {
    use std::arch::x86_64::*;
    let x = x.get(start..).unwrap_or(&[]);
    let (lo, hi) = (load_16(x), load_16(x.get(16..).unwrap_or(&[])));
    // SAFETY: AVX512-BF16 is enabled in every caller; the two vector types are plain bits.
    unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo)) }
}

/// The 16 pairs (`even[i]`, `odd[i]`) (zeros past either's end).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn interleaved_pairs(even: &[f32], odd: &[f32]) -> Line {
    use std::arch::x86_64::*;
    // SAFETY: AVX-512BW and BF16 are enabled in every caller; the vector types are plain bits.
    unsafe {
        let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(load_16(odd), load_16(even)));
        // 16-bit lanes 0..16 hold the even elements, 16..32 the odd: interleave them.
        let order = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        _mm512_permutexvar_epi16(order, both)
    }
}

/// Stores a line at `out[at..at + 16]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn store_line(out: &mut [u32], at: usize, line: Line) {
    let dst = &mut out[at..at + 16];
    // SAFETY: `dst` holds 16 u32, 64 bytes; AVX-512F is enabled in every caller.
    unsafe { std::arch::x86_64::_mm512_storeu_si512(dst.as_mut_ptr().cast(), line) }
}

/// The 16 x 16 transpose of 32-bit elements: row c of the result is column c of `r`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose(r: [Line; 16]) -> [Line; 16] {
    use std::arch::x86_64::*;
    // SAFETY: AVX-512F is enabled in every caller.
    unsafe {
        // Within each 128-bit lane L: t[2i], t[2i + 1] interleave rows 2i and 2i + 1.
        let t: [Line; 16] = std::array::from_fn(|x| {
            let (a, b) = (r[x & !1], r[x | 1]);
            if x % 2 == 0 {
                _mm512_unpacklo_epi32(a, b)
            } else {
                _mm512_unpackhi_epi32(a, b)
            }
        });
        // u[4i + j], lane L: column 4L + j of rows 4i..4i + 4.
        let u: [Line; 16] = std::array::from_fn(|x| {
            let (i, j) = (x / 4, x % 4);
            let (a, b) = (t[4 * i + j / 2], t[4 * i + 2 + j / 2]);
            if j % 2 == 0 {
                _mm512_unpacklo_epi64(a, b)
            } else {
                _mm512_unpackhi_epi64(a, b)
            }
        });
        // Row 4L + j gathers lane L of u[j], u[4 + j], u[8 + j], u[12 + j].
        let mut out = [_mm512_setzero_si512(); 16];
        for j in 0..4 {
            let v = _mm512_shuffle_i32x4::<0x88>(u[j], u[4 + j]);
            let v2 = _mm512_shuffle_i32x4::<0x88>(u[8 + j], u[12 + j]);
            let w = _mm512_shuffle_i32x4::<0xdd>(u[j], u[4 + j]);
            let w2 = _mm512_shuffle_i32x4::<0xdd>(u[8 + j], u[12 + j]);
            out[j] = _mm512_shuffle_i32x4::<0x88>(v, v2);
            out[8 + j] = _mm512_shuffle_i32x4::<0xdd>(v, v2);
            out[4 + j] = _mm512_shuffle_i32x4::<0x88>(w, w2);
            out[12 + j] = _mm512_shuffle_i32x4::<0xdd>(w, w2);
        }
        out
    }
}

/// Rows of C in the AVX-512 register tile.
const MR: usize = 6;
/// Columns of C in the AVX-512 register tile: four vectors of 16 f32.
const NR: usize = 64;

/// Runs the AVX-512 register tile over a packed tile and writes (or adds) the `mt x nt`
/// result at `c` (row stride `ldc`).
///
/// # Safety
/// The CPU has AVX-512F and AVX512-BF16; `p.a` has a multiple of [`BLOCK`] rows and `p.b` a
/// multiple of [`NR`] columns, `p.kp` is a multiple of [`BLOCK`]; `c` is valid for `mt` rows of
/// `nt` elements at stride `ldc`, written by no other thread.
unsafe fn tile_avx512(p: &Packed, c: *mut f32, ldc: usize, accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    for j0 in (0..p.n_pad()).step_by(NR) {
        let cols = NR.min(p.nt.saturating_sub(j0));
        for i0 in (0..p.m_pad()).step_by(MR) {
            let rows = MR.min(p.mt.saturating_sub(i0));
            if rows == 0 || cols == 0 {
                continue;
            }
            // Rows past the packed ones read its last row; their sums are not written.
            let a_rows: [*const u32; MR] = std::array::from_fn(|r| {
                let i = (i0 + r).min(p.m_pad() - 1);
                p.a[at_a(i, 0, p.kp)..].as_ptr()
            });
            let b_cols: [*const u32; NR / 16] =
                std::array::from_fn(|v| p.b[at_b(0, j0 + 16 * v, p.kp)..].as_ptr());
            // SAFETY: the caller's promise; each row pointer starts a packed row and each
            // column pointer a packed block of 16 columns, with kp pairs in their blocks; rows
            // x cols of C from (i0, j0) lie inside it.
            unsafe {
                kernel_6x64(
                    p.kp,
                    &a_rows,
                    &b_cols,
                    c.add(i0 * ldc + j0),
                    ldc,
                    (rows, cols),
                    accumulate,
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, c, ldc, accumulate);
}

/// The AVX-512 register tile: a 6 x 64 block of C as 24 vectors of f32 sums; per pair of `k`,
/// four vectors of B's pairs and six broadcast pairs of A, 24 `vdpbf16ps`.
///
/// # Safety
/// The CPU has AVX-512F and AVX512-BF16; each of `a` starts a row of A packed as [`at_a`]
/// lays it out, each of `b` a block of 16 columns of B as [`at_b`] does, both with `kp` pairs
/// (a multiple of [`BLOCK`]); `c` is valid for `rows <= MR` rows of `cols <= NR` elements at
/// stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel_6x64(
    kp: usize,
    a: &[*const u32; MR],
    b: &[*const u32; NR / 16],
    c: *mut f32,
    ldc: usize,
    (rows, cols): (usize, usize),
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NR / 16]; MR];
    for q in 0..kp / BLOCK {
        for pp in 0..BLOCK {
            // SAFETY: block q < kp / 16 and pair pp < 16 lie inside each packed row and column
            // block (the caller's promise); __m512i and __m512bh are both 64 bytes of bits.
            unsafe {
                let bv: [__m512bh; NR / 16] = std::array::from_fn(|v| {
                    let at = b[v].add(q * BLOCK_LEN + pp * BLOCK);
                    std::mem::transmute(_mm512_loadu_si512(at.cast()))
                });
                for (acc_r, a_r) in acc.iter_mut().zip(a) {
                    let two = *a_r.add(q * BLOCK_LEN + pp) as i32;
                    let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(two));
                    for (s, &bv) in acc_r.iter_mut().zip(&bv) {
                        *s = _mm512_dpbf16_ps(*s, ar, bv);
                    }
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(rows) {
        for (v, &sum) in row.iter().enumerate() {
            let j = 16 * v;
            if j >= cols {
                break;
            }
            let left = cols - j;
            let mask: __mmask16 = if left >= 16 {
                0xffff
            } else {
                ((1u32 << left) - 1) as __mmask16
            };
            // SAFETY: row r < rows and columns j..j+16 masked to those below `cols` lie inside
            // C (the caller's promise).
            unsafe {
                let at = c.add(r * ldc + j);
                let value = if accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), sum)
                } else {
                    sum
                };
                _mm512_mask_storeu_ps(at, mask, value);
            }
        }
    }
}

/// Rows of an AMX block of C: two tiles of 16.
const AMX_ROWS: usize = 32;
/// Columns of an AMX block of C: two tiles of 16.
const AMX_COLS: usize = 32;

/// The tile configuration `ldtilecfg` reads (palette 1): every one of the 8 tiles 16 rows of
/// 64 bytes. C's four tiles hold 16 x 16 f32, A's two 16 rows x 16 pairs, B's two 16 pairs x
/// 16 columns.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const TILE_CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Runs AMX over a packed tile in blocks of 32 x 32 of C (tiles 0-3), each summed over k in
/// steps of 16 pairs from A's tiles 4-5 and B's tiles 6-7, and writes (or adds) the `mt x nt`
/// result at `c` (row stride `ldc`). C's tiles that lie wholly inside it are loaded and stored
/// in place; the others pass through a 16 x 16 scratch.
///
/// The tile registers are not registers the compiler knows: nothing it generates touches them
/// (this crate enables no AMX target feature), so they keep their values from one `asm!` to
/// the next. The tiles are configured on entry and released on exit: a caller's own tile state
/// on this thread does not survive the call.
///
/// # Safety
/// [`amx_permitted`] is true; `p.a` has a multiple of [`AMX_ROWS`] rows and `p.b` a multiple of
/// [`AMX_COLS`] columns, and `p.kp` is a multiple of [`BLOCK`]; `c` is valid for `mt` rows
/// of `nt` elements at stride `ldc`, written by no other thread.
unsafe fn tile_amx(p: &Packed, c: *mut f32, ldc: usize, accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every `asm!` below is an AMX instruction, allowed by the caller's promise. Loads
    // and stores move 16 rows of 64 bytes at the given stride: from the packed operands at
    // rows and pairs inside them (the promise on their padding), and from C only for a 16 x 16
    // tile wholly inside it; otherwise from `scratch`, 16 rows of 64 bytes.
    unsafe {
        use std::arch::asm;
        let (kp, n_pad) = (p.kp, p.n_pad());
        let ldc_bytes = ldc * 4;
        let mut scratch = Scratch([0.0; 256]);
        asm!("ldtilecfg [{}]", in(reg) &TILE_CONFIG, options(nostack, readonly));
        for i0 in (0..p.m_pad()).step_by(AMX_ROWS) {
            for j0 in (0..n_pad).step_by(AMX_COLS) {
                if i0 >= p.mt || j0 >= p.nt {
                    continue;
                }
                // C's four tiles: (i0, j0), (i0, j0 + 16), (i0 + 16, j0), (i0 + 16, j0 + 16).
                macro_rules! for_each_c_tile {
                    ($body:ident) => {
                        $body!("0", 0, 0);
                        $body!("1", 0, 16);
                        $body!("2", 16, 0);
                        $body!("3", 16, 16);
                    };
                }
                macro_rules! load_c {
                    ($t:literal, $di:expr, $dj:expr) => {{
                        let (i, j) = (i0 + $di, j0 + $dj);
                        let whole = i + 16 <= p.mt && j + 16 <= p.nt;
                        if accumulate && whole {
                            asm!(concat!("tileloadd tmm", $t, ", [{0} + {1}]"),
                                in(reg) c.add(i * ldc + j), in(reg) ldc_bytes,
                                options(nostack, readonly));
                        } else if accumulate && i < p.mt && j < p.nt {
                            scratch.load(c.add(i * ldc + j), ldc, p.mt - i, p.nt - j);
                            asm!(concat!("tileloadd tmm", $t, ", [{0} + {1}]"),
                                in(reg) scratch.0.as_ptr(), in(reg) 64usize,
                                options(nostack, readonly));
                        } else {
                            asm!(concat!("tilezero tmm", $t), options(nostack, nomem));
                        }
                    }};
                }
                macro_rules! store_c {
                    ($t:literal, $di:expr, $dj:expr) => {{
                        let (i, j) = (i0 + $di, j0 + $dj);
                        if i + 16 <= p.mt && j + 16 <= p.nt {
                            asm!(concat!("tilestored [{0} + {1}], tmm", $t),
                                in(reg) c.add(i * ldc + j), in(reg) ldc_bytes,
                                options(nostack));
                        } else if i < p.mt && j < p.nt {
                            asm!(concat!("tilestored [{0} + {1}], tmm", $t),
                                in(reg) scratch.0.as_mut_ptr(), in(reg) 64usize,
                                options(nostack));
                            scratch.store(c.add(i * ldc + j), ldc, p.mt - i, p.nt - j);
                        }
                    }};
                }
                for_each_c_tile!(load_c);
                // Each operand's blocks along k follow each other: one pointer per tile row.
                let a0 = p.a[at_a(i0, 0, kp)..].as_ptr();
                let a1 = p.a[at_a(i0 + 16, 0, kp)..].as_ptr();
                let b0 = p.b[at_b(0, j0, kp)..].as_ptr();
                let b1 = p.b[at_b(0, j0 + 16, kp)..].as_ptr();
                for q in 0..kp / BLOCK {
                    asm!(
                        "tileloadd tmm4, [{a0} + {row}]",
                        "tileloadd tmm5, [{a1} + {row}]",
                        "tileloadd tmm6, [{b0} + {row}]",
                        "tileloadd tmm7, [{b1} + {row}]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(q * BLOCK_LEN),
                        a1 = in(reg) a1.add(q * BLOCK_LEN),
                        b0 = in(reg) b0.add(q * BLOCK_LEN),
                        b1 = in(reg) b1.add(q * BLOCK_LEN),
                        row = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
                for_each_c_tile!(store_c);
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, c, ldc, accumulate);
}

/// A 16 x 16 f32 tile of C that is partly outside it.
#[repr(C, align(64))]
struct Scratch([f32; 256]);

impl Scratch {
    /// Copies the `rows x cols` corner (clamped to 16 x 16) of C at `c` in, zeros elsewhere.
    ///
    /// # Safety
    /// `c` is valid for `rows.min(16)` rows of `cols.min(16)` elements at stride `ldc`.
    unsafe fn load(&mut self, c: *const f32, ldc: usize, rows: usize, cols: usize) {
        self.0.fill(0.0);
        for r in 0..rows.min(16) {
            for j in 0..cols.min(16) {
                // SAFETY: the caller's promise.
                self.0[r * 16 + j] = unsafe { *c.add(r * ldc + j) };
            }
        }
    }

    /// Copies the `rows x cols` corner (clamped to 16 x 16) out to C at `c`.
    ///
    /// # Safety
    /// As for [`load`](Self::load), and no other thread writes there.
    unsafe fn store(&self, c: *mut f32, ldc: usize, rows: usize, cols: usize) {
        for r in 0..rows.min(16) {
            for j in 0..cols.min(16) {
                // SAFETY: the caller's promise.
                unsafe { *c.add(r * ldc + j) = self.0[r * 16 + j] };
            }
        }
    }
}

/// The path for a CPU without bf16 dot products: the operands rounded to bf16 into scratch,
/// then the f32 product.
#[cfg_attr(feature = "loop-profile", track_caller)]
fn matmul_by_rounding(
    (m, n, k): (usize, usize, usize),
    (a, op_a): (&[f32], Op),
    (b, op_b): (&[f32], Op),
    c: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    thread_local! {
        static ROUNDED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    ROUNDED.with_borrow_mut(|(ra, rb)| {
        let round = |src: &[f32], dst: &mut Vec<f32>| {
            dst.clear();
            dst.extend(src.iter().map(|&x| round_to_bf16(x)));
        };
        round(&a[..m * k], ra);
        round(&b[..k * n], rb);
        super::matmul(m, n, k, ra, op_a, rb, op_b, c, accumulate, threads);
    });
}

/// `x` rounded to the nearest bfloat16 by comparing it with its two bf16 neighbours in f64,
/// ties to the one with an even last bit: the rule [`bf16_bits`] implements with an integer
/// trick, written plainly for the reference. Subnormal results are flushed to zero, as the
/// hardware's dot products read them.
fn round_to_bf16_plainly(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let down = f32::from_bits(x.to_bits() & 0xffff_0000);
    if down == x {
        return if down.is_subnormal() { 0.0 } else { down };
    }
    // The neighbour away from zero: one more in the last kept bit.
    let up = f32::from_bits((x.to_bits() & 0xffff_0000) + 0x1_0000);
    let (dd, du) = ((x as f64 - down as f64).abs(), (up as f64 - x as f64).abs());
    let even_down = (down.to_bits() >> 16) & 1 == 0;
    let r = if dd < du || (dd == du && even_down) {
        down
    } else {
        up
    };
    if r.is_subnormal() { 0.0 } else { r }
}

/// The plain version of [`matmul_bf16`]: the operands rounded to bf16, products summed in f64.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
pub fn matmul_bf16_reference(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    c: &mut [f32],
    accumulate: bool,
) {
    let ra: Vec<f32> = a.iter().map(|&x| round_to_bf16_plainly(x)).collect();
    let rb: Vec<f32> = b.iter().map(|&x| round_to_bf16_plainly(x)).collect();
    super::matmul::matmul_reference(m, n, k, &ra, op_a, &rb, op_b, c, accumulate);
}
