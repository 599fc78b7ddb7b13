//! Vectorisable f32 kernels for the elementwise hot spots (the Bernoulli likelihood and Adam),
//! compiled for AVX-512 and AVX2 besides the portable baseline and chosen at run time, so the
//! crate needs no `target-cpu` flag. Each has a plain reference beside it (`*_reference`,
//! built on the standard library's `exp` and `ln_1p`); `src/kernels/tests.rs` holds them to it.
//!
//! Results do not depend on which instruction set runs: no fused multiply-adds are used (so
//! every product is rounded the same way) and row sums keep 16 partial sums whatever the vector
//! width.

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
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
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
    let series = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0))))));
    2.0 * s * series
}

/// Partial sums kept per row: enough for a 512-bit vector of f32.
const LANES: usize = 16;

/// The partial sums added pairwise in a fixed order, whatever the vector width.
#[inline(always)]
fn sum_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
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

/// ln(v) for finite v >= 1, f32, branch-free: v = m 2^e with m in [1, 2), so
/// ln v = e ln 2 + ln(1 + (m - 1)), the second by [`ln_1p_unit`].
#[inline(always)]
pub fn ln_at_least_one(v: f32) -> f32 {
    let bits = v.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    e as f32 * std::f32::consts::LN_2 + ln_1p_unit(m - 1.0)
}

/// ln(1 + r) for r >= 0, branch-free (both halves computed, one selected).
#[inline(always)]
fn ln_1p_nonnegative(r: f32) -> f32 {
    let small = ln_1p_unit(r.min(1.0));
    let big = ln_at_least_one(1.0 + r.max(1.0));
    if r <= 1.0 { small } else { big }
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
/// libm) and only the nonzero entries, found 16 at a time by a bit mask, are replaced: whole
/// numbers below 256 from a table (correctly rounded), anything else by libm's `ln_1p`.
pub fn ln_1p_row(x: &[f32], out: &mut [f32]) {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    out.copy_from_slice(x);
    let table = &*LN_1P_SMALL;
    for (c, chunk) in x.chunks(16).enumerate() {
        // NaN != 0, so a NaN goes to ln_1p and stays NaN.
        let mut mask = chunk
            .iter()
            .enumerate()
            .fold(0u32, |m, (l, &v)| m | (u32::from(v != 0.0) << l));
        while mask != 0 {
            let j = 16 * c + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let v = x[j];
            // `as` saturates (NaN -> 0): the round trip holds only for whole numbers in range.
            let k = v as usize;
            out[j] = if v < 256.0 && k as f32 == v {
                table[k]
            } else {
                v.ln_1p()
            };
        }
    }
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

/// The inputs of one cell's zero-count terms: see [`count_zero_row`].
pub struct CountZeroRow<'a> {
    /// The counts: terms are summed for zeros only.
    pub x: &'a [f32],
    /// The decoder's logits.
    pub logits: &'a [f32],
    /// logsumexp of the logits.
    pub logsumexp: f32,
    /// The cell's total count l.
    pub library: f32,
    /// ln theta per gene (clamped here to [-25, 25]; its gradient is 0 outside), or `None` for
    /// the Poisson.
    pub ln_theta: Option<&'a [f32]>,
    /// Zero-inflation logits per gene, or `None`.
    pub h: Option<&'a [f32]>,
}

/// Per-gene outputs of [`count_zero_row`].
pub struct CountZeroOut<'a> {
    /// softmax(a), every gene.
    pub rho: &'a mut [f32],
    /// d log p / d ln mu at a zero count, every gene.
    pub d_ln_mu: &'a mut [f32],
    /// d log p / d ln theta at a zero count (NB), every gene.
    pub d_ln_theta: &'a mut [f32],
    /// d log p / d h at a zero count (ZINB), every gene.
    pub d_h: &'a mut [f32],
}

/// One gene's zero-count terms: (log p(0), d/d ln mu, d/d ln theta, d/dh), and rho.
#[inline(always)]
fn count_zero_element(
    a: f32,
    lse: f32,
    library: f32,
    ln_theta: f32,
    nb: bool,
    h: f32,
    zi: bool,
) -> (f32, f32, f32, f32, f32) {
    let rho = exp_nonpositive(a - lse);
    let mu = library * rho;
    let (lp, dmu, dth) = if nb {
        // max then min, not clamp: a NaN ln theta becomes -25 rather than a NaN.
        #[allow(clippy::manual_clamp)]
        let lt = ln_theta.max(-LN_THETA_LIMIT).min(LN_THETA_LIMIT);
        let theta = exp_nonpositive(lt - LN_THETA_LIMIT) * E25;
        let r = mu / theta;
        let l1p = ln_1p_nonnegative(r);
        let frac_mu = r / (1.0 + r);
        // frac_mu - ln(1 + r), which cancels at small r: -r^2/2 + 2r^3/3 - 3r^4/4 there.
        let series = -r * r * (0.5 - r * (2.0 / 3.0 - r * 0.75));
        let diff = if r < 0.01 { series } else { frac_mu - l1p };
        let inside = lt == ln_theta;
        (
            -theta * l1p,
            -theta * frac_mu,
            if inside { theta * diff } else { 0.0 },
        )
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

/// One full chunk of LANES genes, read and written in place: fixed-size arrays and const flags
/// leave the compiler a straight, branch-free loop to vectorise, with no copies.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn count_zero_lanes<const NB: bool, const ZI: bool>(
    x: &[f32; LANES],
    a: &[f32; LANES],
    lt: &[f32; LANES],
    hs: &[f32; LANES],
    lse: f32,
    library: f32,
    out: [&mut [f32; LANES]; 4],
    acc: &mut [f32; LANES],
) {
    let [rho, dmu, dth, dh] = out;
    for l in 0..LANES {
        let (lp, m, t, h, r) = count_zero_element(a[l], lse, library, lt[l], NB, hs[l], ZI);
        rho[l] = r;
        dmu[l] = m;
        if NB {
            dth[l] = t;
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
    let n = i.x.len();
    let mut acc = [0.0f32; LANES];
    let full = n - n % LANES;
    // Inputs a flag leaves out are read as zeros, outputs it leaves out go to a scratch chunk.
    let zeros = [0.0f32; LANES];
    let (mut spare_t, mut spare_h) = ([0.0f32; LANES], [0.0f32; LANES]);
    let chunk =
        |v: &[f32], g: usize| -> [f32; LANES] { v[g..g + LANES].try_into().expect("a full chunk") };
    for g in (0..full).step_by(LANES) {
        let lt = if NB {
            chunk(i.ln_theta.unwrap_or(&[]), g)
        } else {
            zeros
        };
        let hs = if ZI {
            chunk(i.h.unwrap_or(&[]), g)
        } else {
            zeros
        };
        let rho: &mut [f32; LANES] = (&mut o.rho[g..g + LANES]).try_into().expect("a full chunk");
        let dmu: &mut [f32; LANES] = (&mut o.d_ln_mu[g..g + LANES])
            .try_into()
            .expect("a full chunk");
        let dth: &mut [f32; LANES] = if NB {
            (&mut o.d_ln_theta[g..g + LANES])
                .try_into()
                .expect("a full chunk")
        } else {
            &mut spare_t
        };
        let dh: &mut [f32; LANES] = if ZI {
            (&mut o.d_h[g..g + LANES]).try_into().expect("a full chunk")
        } else {
            &mut spare_h
        };
        count_zero_lanes::<NB, ZI>(
            &chunk(i.x, g),
            &chunk(i.logits, g),
            &lt,
            &hs,
            i.logsumexp,
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
            let mut c = [fill; LANES];
            if let Some(v) = v {
                c[..m].copy_from_slice(&v[full..n]);
            }
            c
        };
        let mut outs = [[0.0f32; LANES]; 4];
        {
            let [r, d, t, h] = &mut outs;
            count_zero_lanes::<NB, ZI>(
                &pad(Some(i.x), 1.0),
                &pad(Some(i.logits), 0.0),
                &pad(i.ln_theta.filter(|_| NB), 0.0),
                &pad(i.h.filter(|_| ZI), 0.0),
                i.logsumexp,
                i.library,
                [r, d, t, h],
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
    match (i.ln_theta.is_some(), i.h.is_some()) {
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

/// The count likelihoods' terms for every gene as if its count were zero, vectorised in f32:
/// rho = softmax(a), and for a zero count the NB's log p(0) = -theta ln(1 + mu/theta) (the
/// Poisson's -mu), its derivatives in ln mu and ln theta, and with zero inflation the mixture's
/// log p(0) and derivatives (the count likelihoods' module documents them). Returns the sum of log p(0) over the
/// genes whose count is 0; the caller computes the nonzero counts exactly and overwrites their
/// derivatives. Every slice must be as long as `x` (checked: a shorter one panics, as a bug of
/// this crate).
pub fn count_zero_row(i: &CountZeroRow<'_>, o: &mut CountZeroOut<'_>) -> f32 {
    let n = i.x.len();
    assert!(
        i.logits.len() >= n
            && o.rho.len() >= n
            && o.d_ln_mu.len() >= n
            && i.ln_theta
                .is_none_or(|t| t.len() >= n && o.d_ln_theta.len() >= n)
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

#[inline(always)]
fn logsumexp_body(a: &[f32]) -> f32 {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = a.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().expect("exact chunk");
        for l in 0..LANES {
            maxes[l] = maxes[l].max(c[l]);
        }
    }
    let max = chunks.remainder().iter().fold(
        maxes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
        |m, &v| m.max(v),
    );
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
