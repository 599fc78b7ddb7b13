//! Vectorisable f32 kernels for the elementwise hot spots (the Bernoulli likelihood and Adam),
//! compiled for AVX-512 and AVX2 besides the portable baseline and chosen at run time, so the
//! crate needs no `target-cpu` flag. Each has a plain reference beside it (`*_reference`,
//! built on the standard library's `exp` and `ln_1p`); `src/kernels/tests.rs` holds them to it.
//!
//! Results do not depend on which instruction set runs: the polynomials' fused multiply-adds
//! are `mul_add`, rounded once on every instruction set (one instruction in the AVX-512 and AVX2
//! builds, libm's `fma` in the baseline one, the same bits more slowly), every other product
//! and sum is rounded alone, and row sums keep 16 partial sums whatever the vector width.

/// e^t for t <= 0, f32, branch-free: t = n ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor
/// series to degree 7 (relative error below 2e-8), times 2^n built in the exponent bits.
/// Returns 0 below -87 (e^-87 is near the smallest normal f32); any t > 0 (+inf included) is
/// treated as 0 and gives 1, and NaN is treated as -87. Total: no input reaches undefined
/// behaviour.
#[inline(always)]
pub fn exp_nonpositive(t: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // max then min (not clamp, which keeps NaN): NaN -> -87, +inf -> 0.
    #[allow(clippy::manual_clamp)]
    let tc = t.max(-87.0).min(0.0);
    let n = (tc * LOG2E + ROUND) - ROUND;
    let r = (tc - n * LN2_HI) - n * LN2_LO;
    const C: [f32; 8] = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
    ];
    let p = horner(r, &C);
    // SAFETY: tc lies in [-87, 0] whatever t is (NaN and infinities included, see above), so
    // n = round(tc log2 e) is an integer in [-126, 0], in range for i32.
    let ni: i32 = unsafe { n.to_int_unchecked() };
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    if t < -87.0 { 0.0 } else { p * scale }
}

/// ln(1 + y) for y in [0, 1], f32, branch-free: with s = y / (2 + y) in [0, 1/3],
/// ln(1 + y) = 2 atanh(s) = 2 (s + s^3/3 + ... + s^13/13) (relative error below 2e-8, and
/// exact to rounding for tiny y).
#[inline(always)]
pub fn ln_1p_unit(y: f32) -> f32 {
    let s = y / (2.0 + y);
    let s2 = s * s;
    const C: [f32; 7] = [
        1.0,
        1.0 / 3.0,
        1.0 / 5.0,
        1.0 / 7.0,
        1.0 / 9.0,
        1.0 / 11.0,
        1.0 / 13.0,
    ];
    2.0 * s * horner(s2, &C)
}

/// c_0 + x (c_1 + x (c_2 + ...)) by Horner's rule, each step one fused multiply-add: half the
/// instructions and half the latency of a multiply then an add, and each step rounded once
/// (`mul_add` is correctly rounded on every instruction set, so the bits do not depend on it).
#[inline(always)]
fn horner<const N: usize>(x: f32, c: &[f32; N]) -> f32 {
    let mut p = c[N - 1];
    for &k in c[..N - 1].iter().rev() {
        p = p.mul_add(x, k);
    }
    p
}

/// Partial sums kept per row: enough for a 512-bit vector of f32.
const LANES: usize = 16;

/// The partial sums added pairwise in a fixed order, whatever the vector width.
#[inline(always)]
fn sum_lanes(acc: [f32; LANES]) -> f32 {
    super::scalar::pairwise_sum(acc)
}

/// One row of the Bernoulli likelihood: returns sum_j (x_j a_j - softplus(a_j)) and writes
/// sigmoid(a_j) into `sig` (what the backward pass needs). Both come from one e^-|a|.
#[inline(always)]
fn bernoulli_element(xi: f32, ai: f32) -> (f32, f32) {
    let e = exp_nonpositive(-ai.abs());
    let inv = 1.0 / (1.0 + e);
    let sig = if ai >= 0.0 { inv } else { e * inv };
    (xi * ai - (ai.max(0.0) + ln_1p_unit(e)), sig)
}

#[inline(always)]
fn bernoulli_row_body(x: &[f32], a: &[f32], sig: &mut [f32]) -> f32 {
    let n = a.len().min(x.len()).min(sig.len());
    let (x, a, sig) = (&x[..n], &a[..n], &mut sig[..n]);
    let mut acc = [0.0f32; LANES];
    let mut xs = x.chunks_exact(LANES);
    let mut as_ = a.chunks_exact(LANES);
    let mut ss = sig.chunks_exact_mut(LANES);
    for ((xc, ac), sc) in (&mut xs).zip(&mut as_).zip(&mut ss) {
        let xc: &[f32; LANES] = xc.try_into().expect("exact chunk");
        let ac: &[f32; LANES] = ac.try_into().expect("exact chunk");
        let sc: &mut [f32; LANES] = sc.try_into().expect("exact chunk");
        for l in 0..LANES {
            let (v, s) = bernoulli_element(xc[l], ac[l]);
            sc[l] = s;
            acc[l] += v;
        }
    }
    for (l, ((&xi, &ai), si)) in xs
        .remainder()
        .iter()
        .zip(as_.remainder())
        .zip(ss.into_remainder())
        .enumerate()
    {
        let (v, s) = bernoulli_element(xi, ai);
        *si = s;
        acc[l] += v;
    }
    sum_lanes(acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn bernoulli_row_avx512(x: &[f32], a: &[f32], sig: &mut [f32]) -> f32 {
    bernoulli_row_body(x, a, sig)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bernoulli_row_avx2(x: &[f32], a: &[f32], sig: &mut [f32]) -> f32 {
    bernoulli_row_body(x, a, sig)
}

/// Which instruction set the kernels run with on this CPU.
pub fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2";
        }
    }
    "portable"
}

/// The fast Bernoulli row kernel (see [`bernoulli_row_reference`] for what it computes).
pub fn bernoulli_row(x: &[f32], a: &[f32], sig: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        match instruction_set() {
            // SAFETY: the CPU has the features each function is compiled for.
            "avx512" => return unsafe { bernoulli_row_avx512(x, a, sig) },
            "avx2" => return unsafe { bernoulli_row_avx2(x, a, sig) },
            _ => {}
        }
    }
    bernoulli_row_body(x, a, sig)
}

/// The plain version: the standard library's `exp` and `ln_1p`, summed in order in f64.
#[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
pub fn bernoulli_row_reference(x: &[f32], a: &[f32], sig: &mut [f32]) -> f32 {
    let mut s = 0.0f64;
    for ((&xi, &ai), si) in x.iter().zip(a).zip(sig.iter_mut()) {
        *si = super::scalar::sigmoid(ai);
        s += (xi * ai) as f64 - super::scalar::softplus(ai as f64);
    }
    s as f32
}

/// Adam's constants for one step.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep<T> {
    /// lr / (1 - beta1^t).
    pub step_size: T,
    /// 1 / sqrt(1 - beta2^t).
    pub inv_sqrt_bc2: T,
    /// beta1, beta2 and eps.
    pub beta1: T,
    /// Second-moment decay.
    pub beta2: T,
    /// Added to the denominator.
    pub eps: T,
    /// Coupled L2 weight decay lambda: the gradient taken is g + lambda p, formed on the fly
    /// (0 for none), as if added to the gradient buffer first, bit for bit.
    pub weight_decay: T,
}

/// Adam's update over equal-length slices; the plain loop is also the reference.
///
/// Moments below the smallest normal number are set to zero. A weight whose gradient is
/// almost always zero (an MNIST border pixel's) has a first moment that decays by beta1 a step
/// into the subnormal range and stays there for about 150 steps; on x86 each subnormal operand
/// costs a microcode assist of 100-odd cycles. Measured (1 thread, MNIST): Adam was 22% of an
/// epoch's time, and epochs slowed from 2.6 s to 3.5 s as more moments went subnormal. XLA's
/// CPU backend flushes every subnormal to zero; this flushes only the two moments, whose
/// subnormal values move a parameter by less than 1e-38 / eps.
///
/// The step is `step_size * (m / (sqrt(v) / sqrt(1 - beta2^t) + eps))`, the ratio first: with
/// `step_size * m` first, a first moment decaying through 1e-38..1e-35 gives a subnormal
/// product for about 65 steps, and the assists came back (1 thread, MNIST, Adam's time in
/// epoch 2: 384 and 415 ms against 215 and 222 ms with the ratio first; the ratio is at least
/// `m` over a denominator near `eps`, far from the subnormal range).
#[inline(always)]
pub fn adam_body<T: crate::kernels::scalar::Float>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    c: AdamStep<T>,
) {
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (c1, c2) = (T::one() - c.beta1, T::one() - c.beta2);
    let normal = T::min_positive_value();
    let flush = |x: T| if x.abs() < normal { T::zero() } else { x };
    for i in 0..n {
        let gi = g[i] + c.weight_decay * p[i];
        let mi = flush(c.beta1 * m[i] + c1 * gi);
        let vi = flush(c.beta2 * v[i] + c2 * gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] -= c.step_size * (mi / (vi.sqrt() * c.inv_sqrt_bc2 + c.eps));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn adam_f32_avx512(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    c: AdamStep<f32>,
) {
    adam_body(p, g, m, v, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn adam_f32_avx2(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamStep<f32>) {
    adam_body(p, g, m, v, c)
}

/// Adam's update for f32, vectorised for the CPU at hand; bit-identical to [`adam_body`].
pub fn adam_f32(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamStep<f32>) {
    #[cfg(target_arch = "x86_64")]
    {
        match instruction_set() {
            // SAFETY: the CPU has the features each function is compiled for.
            "avx512" => return unsafe { adam_f32_avx512(p, g, m, v, c) },
            "avx2" => return unsafe { adam_f32_avx2(p, g, m, v, c) },
            _ => {}
        }
    }
    adam_body(p, g, m, v, c)
}

/// Runs `body` compiled for the widest vector instructions this CPU has: the closure is
/// inlined into a function built with those target features, so its loops vectorise for them.
/// Mark the closure `#[inline(always)]`: otherwise it may be compiled as a function of its own,
/// for the baseline instruction set (seen with `perf`).
#[inline(always)]
pub fn with_simd<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match instruction_set() {
            // SAFETY: the CPU has the features each function is compiled for.
            "avx512" => return unsafe { run_avx512(body) },
            "avx2" => return unsafe { run_avx2(body) },
            _ => {}
        }
    }
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn run_avx512<R>(body: impl FnOnce() -> R) -> R {
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// Writes the nonzero entries of `row` (NaN included) into `index` (their positions, plus
/// `base`) and `values`, in order; returns how many. `index` and `values` need room for
/// `row.len()` entries plus [`COMPACT_SLACK`]: the fast version stores whole vectors.
pub fn compact_nonzeros_reference<T: crate::kernels::scalar::Float>(
    row: &[T],
    base: u32,
    index: &mut [u32],
    values: &mut [T],
) -> usize {
    let mut n = 0;
    for (j, &v) in row.iter().enumerate() {
        if v != T::zero() {
            index[n] = base + j as u32;
            values[n] = v;
            n += 1;
        }
    }
    n
}

/// Room past the last entry that [`compact_nonzeros_f32`] may write (and leave as garbage).
pub const COMPACT_SLACK: usize = 16;

/// [`compact_nonzeros_reference`] for f32 with AVX-512's compress instructions when the CPU
/// has them (16 entries a step); the same output.
pub fn compact_nonzeros_f32(
    row: &[f32],
    base: u32,
    index: &mut [u32],
    values: &mut [f32],
) -> usize {
    assert!(
        index.len() >= row.len() + COMPACT_SLACK && values.len() >= row.len() + COMPACT_SLACK,
        "compact_nonzeros_f32: output too small"
    );
    #[cfg(target_arch = "x86_64")]
    if instruction_set() == "avx512" {
        // SAFETY: the CPU has AVX-512F; the lengths were checked above.
        return unsafe { compact_avx512(row, base, index, values) };
    }
    compact_nonzeros_reference(row, base, index, values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn compact_avx512(row: &[f32], base: u32, index: &mut [u32], values: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let len = row.len();
    let mut n = 0usize;
    let mut j = 0usize;
    let step = _mm512_set1_epi32(16);
    let mut pos = _mm512_add_epi32(
        _mm512_set1_epi32(base as i32),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    let zero = _mm512_setzero_ps();
    while j < len {
        let left = len - j;
        let lanes: __mmask16 = if left >= 16 {
            0xFFFF
        } else {
            ((1u32 << left) - 1) as __mmask16
        };
        // SAFETY: the mask keeps the load inside `row`; the stores write 16 lanes at n, and
        // n <= j < len, so n + 16 <= len + COMPACT_SLACK, checked by the caller.
        unsafe {
            let v = _mm512_maskz_loadu_ps(lanes, row.as_ptr().add(j));
            // Not equal, unordered: NaN counts as nonzero, as in the reference.
            let keep = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(lanes, v, zero);
            let vals = _mm512_maskz_compress_ps(keep, v);
            let idx = _mm512_maskz_compress_epi32(keep, pos);
            _mm512_storeu_ps(values.as_mut_ptr().add(n), vals);
            _mm512_storeu_si512(index.as_mut_ptr().add(n) as *mut __m512i, idx);
            n += keep.count_ones() as usize;
            pos = _mm512_add_epi32(pos, step);
        }
        j += 16;
    }
    n
}

/// ln v for a positive, finite, normal f32, without a division: v = m 2^e with m in
/// [sqrt(1/2), sqrt(2)), and with f = m - 1 (exact),
/// ln v = e ln 2 + f - f^2/2 + f^3 P(f), P of degree 7 fitted to ln(1 + f) on that interval
/// (weighted least squares on Chebyshev nodes, in f64: relative error of the fit 7e-9). Within
/// 2.5e-7 relative of f64's ln, tested.
#[inline(always)]
pub fn ln_normal(v: f32) -> f32 {
    // ln 2 in two parts: e * LN2_HI is exact for |e| < 2^10.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 8] = [
        0.333_333_54,
        -0.250_008_52,
        0.199_998_27,
        -0.166_213_7,
        0.142_271_14,
        -0.132_021_04,
        0.126_203_27,
        -0.073_628_68,
    ];
    let bits = v.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let (m, e) = if big { (0.5 * m, e + 1) } else { (m, e) };
    let f = m - 1.0;
    let p = horner(f, &P);
    let e = e as f32;
    let f2 = f * f;
    e * LN2_HI + (f - 0.5 * f2 + (f2 * f).mul_add(p, e * LN2_LO))
}

/// ln(1 + k) for k = 0..255 in f32, rounded from f64: counts are whole numbers, mostly small.
static LN_1P_SMALL: std::sync::LazyLock<[f32; 256]> = std::sync::LazyLock::new(|| {
    let mut t = [0.0f32; 256];
    for (k, v) in t.iter_mut().enumerate() {
        *v = (k as f64).ln_1p() as f32;
    }
    t
});

/// out_j = ln(1 + x_j) for the first min(len) entries: count data's log1p input transform.
/// Count rows are about 95% zeros, so the row is copied (ln 1 = 0, and -0.0 stays -0.0 as in
/// libm) and only the nonzero entries ([`super::scalar::for_each_nonzero`]) are replaced: whole
/// numbers below 256 from a table (correctly rounded), anything else by libm's `ln_1p`.
pub fn ln_1p_row(x: &[f32], out: &mut [f32]) {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    out.copy_from_slice(x);
    let table = &*LN_1P_SMALL;
    super::scalar::for_each_nonzero(x, |j| out[j] = ln_1p_by_table(x[j], table));
}

/// ln(1 + v) of one entry, as [`ln_1p_row`] computes it: a table for whole numbers below 256,
/// libm's `ln_1p` for anything else.
#[inline(always)]
fn ln_1p_by_table(v: f32, table: &[f32; 256]) -> f32 {
    // `as` saturates (NaN -> 0): the round trip holds only for whole numbers in range.
    let k = v as usize;
    if v < 256.0 && k as f32 == v {
        table[k]
    } else {
        v.ln_1p()
    }
}

/// v_j = ln(1 + v_j) in place, zeros left as they are: [`ln_1p_row`]'s values, for the
/// nonzeros of a sparse row.
///
/// Sixteen entries at a time: when all are whole numbers below 256 (or zero), as counts are,
/// they are looked up together, branch-free, so that the loop vectorises; any other chunk goes
/// entry by entry. (Entry by entry throughout, the lookups were 2% of a pbmc training step.)
pub fn ln_1p_in_place(v: &mut [f32]) {
    let table = &*LN_1P_SMALL;
    let one_by_one = |c: &mut [f32]| {
        for x in c.iter_mut().filter(|x| **x != 0.0) {
            *x = ln_1p_by_table(*x, table);
        }
    };
    with_simd(
        #[inline(always)]
        || {
            let mut chunks = v.chunks_exact_mut(LANES);
            for c in &mut chunks {
                let c: &mut [f32; LANES] = c.try_into().expect("a full chunk");
                let mut at = [0usize; LANES];
                let mut whole = true;
                for l in 0..LANES {
                    // `as` saturates (NaN -> 0): the round trip holds only for whole numbers.
                    let k = c[l] as i32;
                    whole &= (0..256).contains(&k) & (k as f32 == c[l]);
                    at[l] = k.clamp(0, 255) as usize;
                }
                if whole {
                    for l in 0..LANES {
                        // A zero stays as it is (-0.0 too), as entry by entry.
                        c[l] = if c[l] == 0.0 { c[l] } else { table[at[l]] };
                    }
                } else {
                    one_by_one(c);
                }
            }
            one_by_one(chunks.into_remainder());
        },
    );
}

/// The plain loop [`ln_1p_row`] is held to: libm's `ln_1p` entry by entry.
#[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
pub fn ln_1p_row_reference(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v.ln_1p();
    }
}

/// ln theta is clamped to [-LN_THETA_LIMIT, LN_THETA_LIMIT] (theta from 1.4e-11 to 7.2e10),
/// with zero gradient outside, so that a runaway dispersion cannot overflow. The count
/// likelihoods' exact path clamps to the same limit.
pub const LN_THETA_LIMIT: f32 = 25.0;

/// e^LN_THETA_LIMIT, so that theta = e^(ln theta - limit) e^limit with a non-positive
/// exponent.
const E25: f32 = 72_004_899_337.385_87;

/// The dispersion's per-gene terms the zero-count kernel reads, from
/// [`dispersion_terms_f32`]: computed once per gene for a block of rows when theta is a
/// parameter per gene, so that the row loop takes no exponential for them.
pub struct ThetaTerms<'a> {
    /// theta = e^(ln theta), ln theta clamped to [-25, 25].
    pub theta: &'a [f32],
    /// 1 / theta, as an exponential of its own (no division).
    pub inv_theta: &'a [f32],
    /// theta where ln theta lay inside the clamp, else 0: the factor of d/d ln theta, whose
    /// gradient is 0 outside.
    pub theta_d: &'a [f32],
}

/// Writes [`ThetaTerms`] for each ln theta: theta, 1/theta, and theta or 0 by the clamp.
/// Every slice must be as long as `ln_theta` (checked: a shorter one panics, as a bug of this
/// crate).
pub fn dispersion_terms_f32(
    ln_theta: &[f32],
    theta: &mut [f32],
    inv_theta: &mut [f32],
    theta_d: &mut [f32],
) {
    let n = ln_theta.len();
    assert!(
        theta.len() >= n && inv_theta.len() >= n && theta_d.len() >= n,
        "dispersion_terms_f32: slices shorter than the input"
    );
    #[cfg(target_arch = "x86_64")]
    {
        match instruction_set() {
            // SAFETY: the CPU has the features each function is compiled for.
            "avx512" => {
                return unsafe { dispersion_terms_avx512(ln_theta, theta, inv_theta, theta_d) };
            }
            "avx2" => return unsafe { dispersion_terms_avx2(ln_theta, theta, inv_theta, theta_d) },
            _ => {}
        }
    }
    dispersion_terms_body(ln_theta, theta, inv_theta, theta_d)
}

#[inline(always)]
fn dispersion_terms_body(
    ln_theta: &[f32],
    theta: &mut [f32],
    inv_theta: &mut [f32],
    theta_d: &mut [f32],
) {
    let n = ln_theta.len();
    for (((&raw, t), it), td) in ln_theta
        .iter()
        .zip(&mut theta[..n])
        .zip(&mut inv_theta[..n])
        .zip(&mut theta_d[..n])
    {
        // max then min, not clamp: a NaN ln theta becomes -25 rather than a NaN.
        #[allow(clippy::manual_clamp)]
        let lt = raw.max(-LN_THETA_LIMIT).min(LN_THETA_LIMIT);
        *t = exp_nonpositive(lt - LN_THETA_LIMIT) * E25;
        *it = exp_nonpositive(-lt - LN_THETA_LIMIT) * E25;
        *td = if lt == raw { *t } else { 0.0 };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn dispersion_terms_avx512(l: &[f32], t: &mut [f32], i: &mut [f32], d: &mut [f32]) {
    dispersion_terms_body(l, t, i, d)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dispersion_terms_avx2(l: &[f32], t: &mut [f32], i: &mut [f32], d: &mut [f32]) {
    dispersion_terms_body(l, t, i, d)
}

/// The inputs of one cell's zero-count terms over a run of genes: see [`count_zero_row`].
pub struct CountZeroRow<'a> {
    /// The counts: terms are summed for zeros only.
    pub x: &'a [f32],
    /// 1 / sum_g e^(a_g - max a), from [`logsumexp_store_f32`]: rho_g = e^(a_g - max a) times
    /// it.
    pub inv_sum: f32,
    /// The cell's total count l.
    pub library: f32,
    /// The dispersion's terms per gene, or `None` for the Poisson.
    pub theta: Option<ThetaTerms<'a>>,
    /// Zero-inflation logits per gene, or `None`.
    pub h: Option<&'a [f32]>,
}

/// Per-gene outputs of [`count_zero_row`].
pub struct CountZeroOut<'a> {
    /// e^(a_g - max a) on entry (as [`logsumexp_store_f32`] left it), rho = softmax(a) on
    /// return.
    pub rho: &'a mut [f32],
    /// d log p / d ln mu at a zero count, every gene.
    pub d_ln_mu: &'a mut [f32],
    /// d log p / d ln theta at a zero count (NB), every gene.
    pub d_ln_theta: &'a mut [f32],
    /// d log p / d h at a zero count (ZINB), every gene.
    pub d_h: &'a mut [f32],
}

/// One gene's zero-count terms: (log p(0), d/d ln mu, d/d ln theta, d/dh), and rho, from
/// e = e^(a - max a) and the dispersion's terms.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn count_zero_element(
    e: f32,
    inv_sum: f32,
    library: f32,
    (theta, inv_theta, theta_d): (f32, f32, f32),
    nb: bool,
    h: f32,
    zi: bool,
) -> (f32, f32, f32, f32, f32) {
    let rho = e * inv_sum;
    let mu = library * rho;
    let (lp, dmu, dth) = if nb {
        // One division: ln(1 + r) is ln u for u = 1 + r rounded, plus (r - (u - 1))/u for
        // what the rounding lost (all of r when r is below f32's epsilon), with the 1/u that
        // frac_mu needs. (Divisions and exponentials were this loop's cost: perf put most
        // samples on the instructions waiting for them.)
        let r = mu * inv_theta;
        let u = 1.0 + r;
        let inv_u = 1.0 / u;
        let l1p = ln_normal(u) + (r - (u - 1.0)) * inv_u;
        let frac_mu = r * inv_u;
        // frac_mu - ln(1 + r), which cancels at small r: -r^2/2 + 2r^3/3 - 3r^4/4 there.
        let series = -r * r * (0.5 - r * (2.0 / 3.0 - r * 0.75));
        let diff = if r < 0.01 { series } else { frac_mu - l1p };
        (-theta * l1p, -theta * frac_mu, theta_d * diff)
    } else {
        (-mu, -mu, 0.0)
    };
    if !zi {
        return (lp, dmu, dth, 0.0, rho);
    }
    // log p(0) = logaddexp(h, lp) - softplus(h); w = sigmoid(h - lp).
    let big = h.max(lp);
    let lae = big + ln_1p_unit(exp_nonpositive(-(h - lp).abs()));
    let softplus = h.max(0.0) + ln_1p_unit(exp_nonpositive(-h.abs()));
    let sig = |v: f32| {
        let e = exp_nonpositive(-v.abs());
        let inv = 1.0 / (1.0 + e);
        if v >= 0.0 { inv } else { e * inv }
    };
    let w = sig(h - lp);
    let k = 1.0 - w;
    (lae - softplus, k * dmu, k * dth, w - sig(h), rho)
}

/// One chunk of W genes, read and written in place: fixed-size arrays and const flags leave
/// the compiler a straight, branch-free loop to vectorise, with no copies.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn count_zero_lanes<const NB: bool, const ZI: bool, const W: usize>(
    x: &[f32; W],
    theta: [&[f32; W]; 3],
    hs: &[f32; W],
    inv_sum: f32,
    library: f32,
    out: [&mut [f32; W]; 4],
    acc: &mut [f32; W],
) {
    let [rho, dmu, dth, dh] = out;
    let [t, it, td] = theta;
    for l in 0..W {
        let (lp, m, dt, h, r) = count_zero_element(
            rho[l],
            inv_sum,
            library,
            (t[l], it[l], td[l]),
            NB,
            hs[l],
            ZI,
        );
        rho[l] = r;
        dmu[l] = m;
        if NB {
            dth[l] = dt;
        }
        if ZI {
            dh[l] = h;
        }
        acc[l] += if x[l] == 0.0 { lp } else { 0.0 };
    }
}

#[inline(always)]
fn count_zero_row_typed<const NB: bool, const ZI: bool>(
    i: &CountZeroRow<'_>,
    o: &mut CountZeroOut<'_>,
) -> f32 {
    const W: usize = LANES;
    let n = i.x.len();
    let mut acc = [0.0f32; W];
    let full = n - n % W;
    // Inputs a flag leaves out are read as zeros, outputs it leaves out go to a scratch chunk.
    let zeros = [0.0f32; W];
    let (mut spare_t, mut spare_h) = ([0.0f32; W], [0.0f32; W]);
    let chunk = |v: &[f32], g: usize| -> [f32; W] { v[g..g + W].try_into().expect("a full chunk") };
    let no_theta: &[f32] = &[];
    let (t, it, td) = match &i.theta {
        Some(th) => (th.theta, th.inv_theta, th.theta_d),
        None => (no_theta, no_theta, no_theta),
    };
    for g in (0..full).step_by(W) {
        let (tc, itc, tdc) = if NB {
            (chunk(t, g), chunk(it, g), chunk(td, g))
        } else {
            (zeros, zeros, zeros)
        };
        let hs = if ZI {
            chunk(i.h.unwrap_or(&[]), g)
        } else {
            zeros
        };
        let rho: &mut [f32; W] = (&mut o.rho[g..g + W]).try_into().expect("a full chunk");
        let dmu: &mut [f32; W] = (&mut o.d_ln_mu[g..g + W]).try_into().expect("a full chunk");
        let dth: &mut [f32; W] = if NB {
            (&mut o.d_ln_theta[g..g + W])
                .try_into()
                .expect("a full chunk")
        } else {
            &mut spare_t
        };
        let dh: &mut [f32; W] = if ZI {
            (&mut o.d_h[g..g + W]).try_into().expect("a full chunk")
        } else {
            &mut spare_h
        };
        count_zero_lanes::<NB, ZI, W>(
            &chunk(i.x, g),
            [&tc, &itc, &tdc],
            &hs,
            i.inv_sum,
            i.library,
            [rho, dmu, dth, dh],
            &mut acc,
        );
    }
    if full < n {
        // The tail, padded: counts of 1 add nothing to the sum, and only n - full outputs are
        // kept.
        let m = n - full;
        let pad = |v: Option<&[f32]>, fill: f32| {
            let mut c = [fill; W];
            if let Some(v) = v {
                c[..m].copy_from_slice(&v[full..n]);
            }
            c
        };
        let nb = |v: &[f32]| pad(NB.then_some(v), 0.0);
        let mut outs = [pad(Some(o.rho), 0.0), [0.0f32; W], [0.0f32; W], [0.0f32; W]];
        {
            let [r, d, dt, h] = &mut outs;
            count_zero_lanes::<NB, ZI, W>(
                &pad(Some(i.x), 1.0),
                [&nb(t), &nb(it), &nb(td)],
                &pad(i.h.filter(|_| ZI), 0.0),
                i.inv_sum,
                i.library,
                [r, d, dt, h],
                &mut acc,
            );
        }
        o.rho[full..n].copy_from_slice(&outs[0][..m]);
        o.d_ln_mu[full..n].copy_from_slice(&outs[1][..m]);
        if NB {
            o.d_ln_theta[full..n].copy_from_slice(&outs[2][..m]);
        }
        if ZI {
            o.d_h[full..n].copy_from_slice(&outs[3][..m]);
        }
    }
    sum_lanes(acc)
}

#[inline(always)]
fn count_zero_row_body(i: &CountZeroRow<'_>, o: &mut CountZeroOut<'_>) -> f32 {
    match (i.theta.is_some(), i.h.is_some()) {
        (false, false) => count_zero_row_typed::<false, false>(i, o),
        (true, false) => count_zero_row_typed::<true, false>(i, o),
        (false, true) => count_zero_row_typed::<false, true>(i, o),
        (true, true) => count_zero_row_typed::<true, true>(i, o),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn count_zero_row_avx512(i: &CountZeroRow<'_>, o: &mut CountZeroOut<'_>) -> f32 {
    count_zero_row_body(i, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn count_zero_row_avx2(i: &CountZeroRow<'_>, o: &mut CountZeroOut<'_>) -> f32 {
    count_zero_row_body(i, o)
}

/// The count likelihoods' terms for a run of genes as if each count were zero, vectorised in
/// f32: rho = softmax(a) (from the exponentials [`logsumexp_store_f32`] left in `o.rho`), and
/// for a zero count the NB's log p(0) = -theta ln(1 + mu/theta) (the Poisson's -mu), its
/// derivatives in ln mu and ln theta, and with zero inflation the mixture's log p(0) and
/// derivatives (the count likelihoods' module documents them). Returns the sum of log p(0) over
/// the genes whose count is 0; the caller computes the nonzero counts exactly and overwrites
/// their derivatives. Every slice must be as long as `x` (checked: a shorter one panics, as a
/// bug of this crate).
pub fn count_zero_row(i: &CountZeroRow<'_>, o: &mut CountZeroOut<'_>) -> f32 {
    let n = i.x.len();
    assert!(
        o.rho.len() >= n
            && o.d_ln_mu.len() >= n
            && i.theta.as_ref().is_none_or(|t| t.theta.len() >= n
                && t.inv_theta.len() >= n
                && t.theta_d.len() >= n
                && o.d_ln_theta.len() >= n)
            && i.h.is_none_or(|h| h.len() >= n && o.d_h.len() >= n),
        "count_zero_row: slices shorter than the row"
    );
    #[cfg(target_arch = "x86_64")]
    {
        match instruction_set() {
            // SAFETY: the CPU has the features each function is compiled for.
            "avx512" => return unsafe { count_zero_row_avx512(i, o) },
            "avx2" => return unsafe { count_zero_row_avx2(i, o) },
            _ => {}
        }
    }
    count_zero_row_body(i, o)
}

/// Writes e_j = e^(a_j - max a) into `e` and returns (max a, sum_j e_j), vectorised in f32 (16
/// partial sums in a fixed order): the softmax's normaliser and numerators in one pass, so that
/// rho = e / sum needs no second exponential. For a row whose maximum is not finite, the sum
/// is 0 and e holds what exp_nonpositive gives (0 for NaN).
pub fn logsumexp_store_f32(a: &[f32], e: &mut [f32]) -> (f32, f32) {
    let e = &mut e[..a.len()];
    #[cfg(target_arch = "x86_64")]
    {
        match instruction_set() {
            // SAFETY: the CPU has the features each function is compiled for.
            "avx512" => return unsafe { logsumexp_store_avx512(a, e) },
            "avx2" => return unsafe { logsumexp_store_avx2(a, e) },
            _ => {}
        }
    }
    logsumexp_store_body(a, e)
}

#[inline(always)]
fn max_f32(a: &[f32]) -> f32 {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = a.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().expect("exact chunk");
        for l in 0..LANES {
            maxes[l] = maxes[l].max(c[l]);
        }
    }
    chunks.remainder().iter().fold(
        maxes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
        |m, &v| m.max(v),
    )
}

#[inline(always)]
fn logsumexp_store_body(a: &[f32], e: &mut [f32]) -> (f32, f32) {
    let max = max_f32(a);
    if !max.is_finite() {
        for (o, &v) in e.iter_mut().zip(a) {
            *o = exp_nonpositive(v - max);
        }
        return (max, 0.0);
    }
    let mut acc = [0.0f32; LANES];
    let mut chunks = a.chunks_exact(LANES);
    let mut outs = e.chunks_exact_mut(LANES);
    for (c, o) in (&mut chunks).zip(&mut outs) {
        let c: &[f32; LANES] = c.try_into().expect("exact chunk");
        let o: &mut [f32; LANES] = o.try_into().expect("exact chunk");
        for l in 0..LANES {
            o[l] = exp_nonpositive(c[l] - max);
            acc[l] += o[l];
        }
    }
    for (l, (o, &v)) in outs
        .into_remainder()
        .iter_mut()
        .zip(chunks.remainder())
        .enumerate()
    {
        *o = exp_nonpositive(v - max);
        acc[l] += *o;
    }
    (max, sum_lanes(acc))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn logsumexp_store_avx512(a: &[f32], e: &mut [f32]) -> (f32, f32) {
    logsumexp_store_body(a, e)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn logsumexp_store_avx2(a: &[f32], e: &mut [f32]) -> (f32, f32) {
    logsumexp_store_body(a, e)
}

#[inline(always)]
fn logsumexp_body(a: &[f32]) -> f32 {
    let max = max_f32(a);
    if !max.is_finite() {
        return max;
    }
    let mut acc = [0.0f32; LANES];
    let mut chunks = a.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().expect("exact chunk");
        for l in 0..LANES {
            acc[l] += exp_nonpositive(c[l] - max);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] += exp_nonpositive(v - max);
    }
    max + sum_lanes(acc).ln()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn logsumexp_avx512(a: &[f32]) -> f32 {
    logsumexp_body(a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn logsumexp_avx2(a: &[f32]) -> f32 {
    logsumexp_body(a)
}

/// ln sum_j e^(a_j), vectorised in f32 (the largest a_j taken out first, 16 partial sums in a
/// fixed order). -inf for an empty row.
pub fn logsumexp_f32(a: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        match instruction_set() {
            // SAFETY: the CPU has the features each function is compiled for.
            "avx512" => return unsafe { logsumexp_avx512(a) },
            "avx2" => return unsafe { logsumexp_avx2(a) },
            _ => {}
        }
    }
    logsumexp_body(a)
}
