//! The scalar types the math is generic over: `f32` (the fast path) and `f64` (what checks use),
//! with the scalar sigmoid and softplus every layer above builds on. It sits in the kernel layer
//! and imports nothing from above it.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point scalar the kernels run on: `f32` or `f64`.
///
/// Sealed: only `f32` and `f64` implement it, because the kernels' fast paths are written for
/// exactly those two. Those fast paths are methods of a crate-private supertrait, so a user
/// can neither call them nor implement them.
pub trait Float:
    sealed::Kernels
    + num_traits::Float
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + bytemuck::Pod
    + 'static
{
    /// Name of the type as used in model files ("F32" or "F64").
    const NAME: &'static str;
    /// Converts from `f64`, rounding to nearest.
    fn of(x: f64) -> Self;
    /// Widens (or keeps) to `f64`.
    fn as_f64(self) -> f64;
    /// A grey level stored as a byte, mapped to [0, 1].
    #[inline]
    fn from_byte(b: u8) -> Self {
        Self::of(b as f64 / 255.0)
    }
}

use super::fast::AdamStep;

pub(crate) mod sealed {
    use super::{AdamStep, Family, Float, sigmoid, softplus};

    /// The kernels' per-type fast paths. Crate-private (the module is), so it keeps
    /// [`Float`](super::Float) to f32 and f64 and keeps these entry points, which trust their
    /// callers' slice lengths, away from users.
    pub trait Kernels: Sized {
        /// One row of the Bernoulli likelihood: returns sum_j (x_j a_j - softplus(a_j)) and
        /// writes sigmoid(a_j) into `sig`. f32 runs the vectorised kernel, f64 the plain loop.
        fn bernoulli_row(x: &[Self], a: &[Self], sig: &mut [Self]) -> Self;

        /// Copies the nonzero entries of `row` and their positions (plus `base`) to the front
        /// of `index` and `values`, which need `COMPACT_SLACK` entries of room past
        /// `row.len()` (checked: too little panics, as a bug of this crate); returns how many.
        fn compact_nonzeros(
            row: &[Self],
            base: u32,
            index: &mut [u32],
            values: &mut [Self],
        ) -> usize;

        /// Adam's update on one chunk of equal-length slices.
        fn adam(p: &mut [Self], g: &[Self], m: &mut [Self], v: &mut [Self], c: AdamStep<Self>);

        /// ln sum_j e^(a_j): f32 vectorised ([`super::super::fast::logsumexp_f32`]), f64 the
        /// plain loop in f64.
        fn logsumexp(a: &[Self]) -> f64;

        /// out_j = ln(1 + x_j): f32 vectorised ([`super::super::fast::ln_1p_row`]), f64 libm's
        /// `ln_1p`, skipping zeros.
        fn ln_1p_row(x: &[Self], out: &mut [Self]);

        /// v_j = ln(1 + v_j), each entry by the same function as [`ln_1p_row`](Self::ln_1p_row)
        /// (so the two agree bit for bit): for the nonzeros of a sparse row.
        fn ln_1p_in_place(v: &mut [Self]);

        /// [`super::super::bf16::matmul_bf16`] for f32; the plain product for f64.
        #[allow(clippy::type_complexity)]
        fn matmul_bf16(
            mnk: (usize, usize, usize),
            a: (&[Self], super::super::Op),
            b: (&[Self], super::super::Op),
            c: &mut [Self],
            accumulate: bool,
            threads: usize,
        );

        /// Picks the member for `Self` of a pair of values whose types form a [`Family`]: how
        /// code generic over the scalar reaches an f32 or an f64 version of something it holds
        /// both of.
        fn pick<W: Family>(for_f32: W::Of<f32>, for_f64: W::Of<f64>) -> W::Of<Self>
        where
            Self: Float;
    }

    impl Kernels for f32 {
        #[inline]
        #[cfg_attr(feature = "loop-profile", track_caller)]
        fn matmul_bf16(
            mnk: (usize, usize, usize),
            a: (&[Self], super::super::Op),
            b: (&[Self], super::super::Op),
            c: &mut [Self],
            accumulate: bool,
            threads: usize,
        ) {
            let ((m, n, k), (a, op_a), (b, op_b)) = (mnk, a, b);
            super::super::bf16::matmul_bf16(m, n, k, a, op_a, b, op_b, c, accumulate, threads)
        }
        #[inline]
        fn bernoulli_row(x: &[Self], a: &[Self], sig: &mut [Self]) -> Self {
            super::super::fast::bernoulli_row(x, a, sig)
        }
        #[inline]
        fn compact_nonzeros(
            row: &[Self],
            base: u32,
            index: &mut [u32],
            values: &mut [Self],
        ) -> usize {
            super::super::fast::compact_nonzeros_f32(row, base, index, values)
        }
        #[inline]
        fn adam(p: &mut [Self], g: &[Self], m: &mut [Self], v: &mut [Self], c: AdamStep<Self>) {
            super::super::fast::adam_f32(p, g, m, v, c)
        }
        #[inline]
        fn ln_1p_row(x: &[Self], out: &mut [Self]) {
            super::super::fast::ln_1p_row(x, out)
        }
        #[inline]
        fn ln_1p_in_place(v: &mut [Self]) {
            super::super::fast::ln_1p_in_place(v)
        }
        #[inline]
        fn pick<W: Family>(for_f32: W::Of<f32>, _: W::Of<f64>) -> W::Of<f32> {
            for_f32
        }
        #[inline]
        fn logsumexp(a: &[Self]) -> f64 {
            super::super::fast::logsumexp_f32(a) as f64
        }
    }

    impl Kernels for f64 {
        #[inline]
        #[cfg_attr(feature = "loop-profile", track_caller)]
        fn matmul_bf16(
            (m, n, k): (usize, usize, usize),
            (a, op_a): (&[Self], super::super::Op),
            (b, op_b): (&[Self], super::super::Op),
            c: &mut [Self],
            accumulate: bool,
            threads: usize,
        ) {
            super::super::matmul(m, n, k, a, op_a, b, op_b, c, accumulate, threads)
        }
        #[inline]
        fn bernoulli_row(x: &[Self], a: &[Self], sig: &mut [Self]) -> Self {
            let mut s = 0.0;
            for ((&xi, &ai), si) in x.iter().zip(a).zip(sig.iter_mut()) {
                *si = sigmoid(ai);
                s += xi * ai - softplus(ai);
            }
            s
        }
        #[inline]
        fn compact_nonzeros(
            row: &[Self],
            base: u32,
            index: &mut [u32],
            values: &mut [Self],
        ) -> usize {
            super::super::fast::compact_nonzeros_reference(row, base, index, values)
        }
        #[inline]
        fn adam(p: &mut [Self], g: &[Self], m: &mut [Self], v: &mut [Self], c: AdamStep<Self>) {
            super::super::fast::adam_body(p, g, m, v, c)
        }
        #[inline]
        fn ln_1p_row(x: &[Self], out: &mut [Self]) {
            for (o, &v) in out.iter_mut().zip(x) {
                // Count data are mostly zeros, whose log1p needs no call.
                *o = if v == 0.0 { v } else { v.ln_1p() };
            }
        }
        fn ln_1p_in_place(v: &mut [Self]) {
            for x in v {
                if *x != 0.0 {
                    *x = x.ln_1p();
                }
            }
        }
        #[inline]
        fn pick<W: Family>(_: W::Of<f32>, for_f64: W::Of<f64>) -> W::Of<f64> {
            for_f64
        }
        #[inline]
        fn logsumexp(a: &[Self]) -> f64 {
            let max = a.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            if !max.is_finite() {
                return max;
            }
            max + a.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
        }
    }
}

/// A family of types indexed by the scalar type (`Of<f32>`, `Of<f64>`), for picking the one
/// for a generic scalar.
pub trait Family {
    /// The member for scalar `T`.
    type Of<T: Float>;
}

impl Float for f32 {
    const NAME: &'static str = "F32";
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_byte(b: u8) -> Self {
        // Division (not multiplication by 1/255) keeps 255 -> exactly 1.0.
        b as f32 / 255.0
    }
}

impl Float for f64 {
    const NAME: &'static str = "F64";
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}

/// softplus(a) = ln(1 + e^a), computed as max(a, 0) + ln(1 + e^-|a|) so it never overflows.
#[inline]
pub fn softplus<T: Float>(a: T) -> T {
    a.max(T::zero()) + (-a.abs()).exp().ln_1p()
}

/// 1 / (1 + e^-a), finite for every finite `a`.
#[inline]
pub fn sigmoid<T: Float>(a: T) -> T {
    if a >= T::zero() {
        T::one() / (T::one() + (-a).exp())
    } else {
        let e = a.exp();
        e / (T::one() + e)
    }
}

/// The running sums `acc` added pairwise in a fixed order (lane l + N/2 into lane l, then
/// halving), whatever the vector width; `N` a power of two.
#[inline(always)]
pub(crate) fn pairwise_sum<T: Copy + std::ops::AddAssign, const N: usize>(mut acc: [T; N]) -> T {
    let mut w = N;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}

/// Running sums of [`sum_f64`]: four 512-bit vectors of f64, so that four adds are in flight.
const SUM_LANES: usize = 32;

/// sum_j v_j in f64, over 32 running sums in a fixed order (lane l takes j = l mod 32; the
/// lanes are then added pairwise, and the tail last): the same bits whatever the caller and
/// instruction set, compiled for the widest vectors the CPU has. With eight running sums this
/// was bound by the adds' latency (one chain of 512-bit adds, or four of 128-bit ones in the
/// baseline build its count-model callers were compiled for): about 1,000 cycles for a row of
/// 2,000 genes, twice a row. Exact, in any order, for integers below 2^53 (counts).
#[inline]
pub fn sum_f64<T: Float>(v: &[T]) -> f64 {
    super::fast::with_simd(
        #[inline(always)]
        || {
            let mut acc = [0.0f64; SUM_LANES];
            let mut chunks = v.chunks_exact(SUM_LANES);
            for c in &mut chunks {
                for l in 0..SUM_LANES {
                    acc[l] += c[l].as_f64();
                }
            }
            let tail: f64 = chunks.remainder().iter().map(|x| x.as_f64()).sum();
            pairwise_sum_apart(&acc) + tail
        },
    )
}

/// [`pairwise_sum`] of `sum_f64`'s running sums, out of line: inlined, its tree of adds led the
/// compiler to keep the 32 sums in 128-bit registers for the whole loop (seen in the
/// disassembly: the sum of a count row's 2,000 values took a twentieth of the count
/// likelihood's time), where apart they stay in four 512-bit ones.
#[inline(never)]
fn pairwise_sum_apart(acc: &[f64; SUM_LANES]) -> f64 {
    pairwise_sum(*acc)
}

/// Calls `f(j)` for each j with `v[j] != 0` (NaN included), in order. A 16-bit mask per chunk
/// of 16, walked by its set bits: count rows are about 95% zeros in no pattern, and a branch
/// per entry is mispredicted at every nonzero.
#[inline]
pub fn for_each_nonzero<T: Float>(v: &[T], mut f: impl FnMut(usize)) {
    for (c, chunk) in v.chunks(16).enumerate() {
        let mut mask = chunk
            .iter()
            .enumerate()
            .fold(0u32, |m, (l, &x)| m | (u32::from(x != T::zero()) << l));
        while mask != 0 {
            f(16 * c + mask.trailing_zeros() as usize);
            mask &= mask - 1;
        }
    }
}
