//! The special functions the count likelihoods need: ln Gamma, digamma, and the two
//! differences lgamma(theta + x) - lgamma(theta) and psi(theta + x) - psi(theta) in forms that do
//! not cancel when theta is large.
//!
//! Written here rather than taken from a crate: `libm` has lgamma but no digamma, `statrs`
//! brings nalgebra with it, and neither has the differences, which are what the negative
//! binomial needs at large theta (scvi-tools issue 2965: lgamma(x + theta) - lgamma(theta)
//! computed as a difference is nonsense past theta ~ 1e4 in f32).
//!
//! Method: shift the argument up to at least [`SHIFT`] with the recurrences
//! Gamma(y + 1) = y Gamma(y) and psi(y + 1) = psi(y) + 1/y, then sum Stirling's series to the
//! y^-11 term. Accuracy, checked against 50-digit mpmath values in `tests/special.rs`: absolute
//! error at most 2e-14 max(1, |value|) for y in [1e-10, 1e12].

/// Arguments are shifted up to at least this before the asymptotic series is summed; there its
/// first omitted term is below 1e-15.
const SHIFT: f64 = 10.0;

/// Counts up to this take the finite-product forms of the differences below SHIFT.
pub const SMALL_COUNT: f64 = 32.0;

/// ln x! for x = 0, 1, ..., 255, summed once.
static LN_FACTORIAL: std::sync::LazyLock<[f64; 256]> = std::sync::LazyLock::new(|| {
    let mut t = [0.0; 256];
    for i in 1..256 {
        t[i] = t[i - 1] + (i as f64).ln();
    }
    t
});

/// ln x! for a count x >= 0: a table below 256, lgamma(x + 1) above.
#[inline]
pub fn ln_factorial(x: f64) -> f64 {
    match whole_below(x, 256.0) {
        Some(i) => LN_FACTORIAL[i],
        None => lgamma(x + 1.0),
    }
}

/// `x` as an index when it is a whole number in [0, limit), else `None` (NaN included). A
/// cast and a compare: `fract` is a call to libm's `trunc`, and this sits in the count
/// likelihoods' per-count loop.
#[inline]
pub(crate) fn whole_below(x: f64, limit: f64) -> Option<usize> {
    // `as` saturates (NaN -> 0), so the round trip fails for anything not whole and >= 0.
    let i = x as usize;
    (x < limit && i as f64 == x).then_some(i)
}

/// ln x for a positive, finite, normal x, without branches or calls, so that loops over it
/// vectorise: fdlibm's method. With x = 2^k m and m in [sqrt(2)/2, sqrt(2)), f = m - 1 and
/// s = f / (2 + f), ln m = 2 atanh s = f - f^2/2 + s (f^2/2 + R(s^2)), R fdlibm's degree-7
/// polynomial in s^2 (error below 2^-58.45), and ln 2 split in two so that k ln 2 is exact.
/// Under 1 ulp, as libm's `ln` (`kernels::tests` holds it to libm). Zero, negative,
/// subnormal, infinite or NaN x give garbage: the callers check first.
///
/// The count likelihoods' lanes call its two halves, [`ln_normal_f64_reduce`] and
/// [`ln_normal_f64_finish`], to share one division among several logarithms; this whole is
/// what `kernels::tests` holds to libm.
#[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
#[inline(always)]
pub fn ln_normal_f64(x: f64) -> f64 {
    let (k, f) = ln_normal_f64_reduce(x);
    ln_normal_f64_finish(k, f, f / (2.0 + f))
}

/// The first half of [`ln_normal_f64`]: x = 2^k (1 + f), with 1 + f in [sqrt(2)/2, sqrt(2)).
/// A caller that needs several logarithms can then take their quotients s = f / (2 + f) from
/// one shared division.
#[inline(always)]
pub(crate) fn ln_normal_f64_reduce(x: f64) -> (f64, f64) {
    let bits = x.to_bits();
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let e = ((bits >> 52) as i64 - 1023) as f64;
    // m in [1, 2): past sqrt(2), halve it and count one more power of two.
    let big = m > std::f64::consts::SQRT_2;
    let (m, k) = if big { (m * 0.5, e + 1.0) } else { (m, e) };
    (k, m - 1.0)
}

/// The second half of [`ln_normal_f64`]: ln x from [`ln_normal_f64_reduce`]'s (k, f) and
/// s = f / (2 + f).
// fdlibm's constants, digits as published: they round to the same f64.
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub(crate) fn ln_normal_f64_finish(k: f64, f: f64, s: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    const LG: [f64; 7] = [
        6.666_666_666_666_735_130e-1,
        3.999_999_999_940_941_908e-1,
        2.857_142_874_366_239_149e-1,
        2.222_219_843_214_978_396e-1,
        1.818_357_216_161_805_012e-1,
        1.531_383_769_920_937_332e-1,
        1.479_819_860_511_658_591e-1,
    ];
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG[1] + w * (LG[3] + w * LG[5]));
    let t2 = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])));
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// ln sqrt(2 pi).
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Stirling's correction c(y) = lgamma(y) - [(y - 1/2) ln y - y + ln sqrt(2 pi)], y >= SHIFT:
/// 1/(12y) - 1/(360y^3) + 1/(1260y^5) - 1/(1680y^7) + 1/(1188y^9) - 691/(360360y^11).
#[inline]
fn stirling_correction(y: f64) -> f64 {
    let r = 1.0 / y;
    let r2 = r * r;
    r * (1.0 / 12.0
        + r2 * (-1.0 / 360.0
            + r2 * (1.0 / 1260.0
                + r2 * (-1.0 / 1680.0 + r2 * (1.0 / 1188.0 + r2 * (-691.0 / 360_360.0))))))
}

/// psi(y) - ln y for y >= SHIFT:
/// -1/(2y) - 1/(12y^2) + 1/(120y^4) - 1/(252y^6) + 1/(240y^8) - 1/(132y^10)
/// + 691/(32760y^12).
#[inline]
fn digamma_tail(y: f64) -> f64 {
    let r = 1.0 / y;
    let r2 = r * r;
    -0.5 * r
        + r2 * (-1.0 / 12.0
            + r2 * (1.0 / 120.0
                + r2 * (-1.0 / 252.0
                    + r2 * (1.0 / 240.0 + r2 * (-1.0 / 132.0 + r2 * (691.0 / 32760.0))))))
}

/// ln Gamma(y) for y > 0 (NaN otherwise).
pub fn lgamma(y: f64) -> f64 {
    if y.is_nan() || y <= 0.0 {
        return f64::NAN;
    }
    if y == f64::INFINITY {
        return f64::INFINITY;
    }
    // lgamma(y) = lgamma(y + n) - ln(y (y + 1) ... (y + n - 1)); the product of at most 10
    // factors below 11 cannot overflow.
    let (mut shifted, mut product) = (y, 1.0);
    while shifted < SHIFT {
        product *= shifted;
        shifted += 1.0;
    }
    (shifted - 0.5) * shifted.ln() - shifted + LN_SQRT_2PI + stirling_correction(shifted)
        - product.ln()
}

/// psi(y) = d/dy ln Gamma(y) for y > 0 (NaN otherwise).
pub fn digamma(y: f64) -> f64 {
    if y.is_nan() || y <= 0.0 {
        return f64::NAN;
    }
    let (mut shifted, mut sum) = (y, 0.0);
    while shifted < SHIFT {
        sum += 1.0 / shifted;
        shifted += 1.0;
    }
    shifted.ln() + digamma_tail(shifted) - sum
}

/// (1 + u) ln(1 + u) - u for u >= 0, without the cancellation of the two terms at small u:
/// the series sum_{k>=2} (-1)^k u^k / (k (k - 1)) below 0.01.
#[inline]
fn one_plus_u_log1p_minus_u(u: f64) -> f64 {
    one_plus_u_log1p_minus_u_given(u, u.ln_1p())
}

/// [`one_plus_u_log1p_minus_u`] given ln(1 + u), which the caller has anyway.
#[inline]
fn one_plus_u_log1p_minus_u_given(u: f64, ln_1p_u: f64) -> f64 {
    if u < 0.01 {
        // The first omitted term, u^10/90, is below 1e-22.
        let u2 = u * u;
        u2 * (1.0 / 2.0
            + u * (-1.0 / 6.0
                + u * (1.0 / 12.0
                    + u * (-1.0 / 20.0
                        + u * (1.0 / 30.0
                            + u * (-1.0 / 42.0 + u * (1.0 / 56.0 + u * (-1.0 / 72.0))))))))
    } else {
        (1.0 + u) * ln_1p_u - u
    }
}

/// lgamma(theta + x) - lgamma(theta) - x ln theta, for theta > 0 and x >= 0: the log of the
/// rising factorial theta (theta + 1) ... (theta + x - 1) over theta^x when x is a count. It
/// tends to 0 as theta grows (the Poisson limit), and is computed so that it does:
///
/// - theta >= SHIFT: Stirling's series for both lgammas, subtracted term by term,
///   theta [(1 + u) ln(1 + u) - u] - ln(1 + u)/2 + c(theta + x) - c(theta), u = x/theta.
///   Nothing large cancels.
/// - theta < SHIFT and a count x of at most [`SMALL_COUNT`]: the product itself,
///   ln prod_{i<x} (1 + i/theta), one logarithm (most counts are small);
/// - theta < SHIFT otherwise: lgamma(theta + x) - lgamma(theta) - x ln theta directly; each
///   term is at most about x ln x there, and the sum is of the same size.
pub fn log_rising_over_power(theta: f64, x: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    if theta < SHIFT && whole_below(x, SMALL_COUNT + 1.0).is_some() {
        // A factor is at most 1 + 31/theta; with theta down to the model's clamp (1.4e-11),
        // 31 of them could leave f64's range, so the product is logged and restarted past
        // 1e250.
        let inv = 1.0 / theta;
        let (mut p, mut total) = (1.0f64, 0.0f64);
        for i in 1..x as usize {
            p *= 1.0 + i as f64 * inv;
            if p > 1e250 {
                total += p.ln();
                p = 1.0;
            }
        }
        return total + p.ln();
    }
    if theta >= SHIFT {
        let u = x / theta;
        theta * one_plus_u_log1p_minus_u(u) - 0.5 * u.ln_1p()
            + (stirling_correction(theta + x) - stirling_correction(theta))
    } else {
        lgamma(theta + x) - lgamma(theta) - x * theta.ln()
    }
}

/// psi(theta + x) - psi(theta) - ln(1 + x/theta), for theta > 0 and x >= 0: the digamma
/// difference the negative binomial's theta-derivative needs, less its leading logarithm, so
/// that at large theta (where both are about x/theta) nothing cancels:
///
/// - theta >= SHIFT: the difference of the two asymptotic tails;
/// - theta < SHIFT: psi(theta + x) - psi(theta) - ln(1 + x/theta) directly.
pub fn digamma_difference_remainder(theta: f64, x: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    if theta < SHIFT && whole_below(x, SMALL_COUNT + 1.0).is_some() {
        // psi(theta + x) - psi(theta) = sum_{i<x} 1/(theta + i), exactly, for a count x.
        let sum: f64 = (0..x as usize).map(|i| 1.0 / (theta + i as f64)).sum();
        return sum - (x / theta).ln_1p();
    }
    if theta >= SHIFT {
        digamma_tail(theta + x) - digamma_tail(theta)
    } else {
        digamma(theta + x) - digamma(theta) - (x / theta).ln_1p()
    }
}

/// [`log_rising_over_power`] and the whole digamma difference psi(theta + x) - psi(theta)
/// (= ln(1 + x/theta) + [`digamma_difference_remainder`]) at once, for theta > 0 and x >= 0:
/// the negative binomial needs both at every nonzero count, and together they share their
/// work. At theta >= SHIFT both use one ln(1 + x/theta), which separately is taken three times;
/// for a small count one loop over the factors theta + i gives the product's logarithm and
/// the digamma difference's exact sum, sum_{i<x} 1/(theta + i), with no logarithm for the
/// latter. Elsewhere it is the two functions themselves.
pub fn nb_count_differences(theta: f64, x: f64) -> (f64, f64) {
    if x == 0.0 {
        return (0.0, 0.0);
    }
    if theta < SHIFT
        && let Some(count) = whole_below(x, SMALL_COUNT + 1.0)
    {
        // As in log_rising_over_power: the product is logged and restarted past 1e250.
        let inv = 1.0 / theta;
        let (mut p, mut logged, mut psi) = (1.0f64, 0.0f64, inv);
        for i in 1..count {
            p *= 1.0 + i as f64 * inv;
            if p > 1e250 {
                logged += p.ln();
                p = 1.0;
            }
            psi += 1.0 / (theta + i as f64);
        }
        return (logged + p.ln(), psi);
    }
    if theta >= SHIFT {
        let u = x / theta;
        let l = u.ln_1p();
        let rising = theta * one_plus_u_log1p_minus_u_given(u, l) - 0.5 * l
            + (stirling_correction(theta + x) - stirling_correction(theta));
        return (rising, l + (digamma_tail(theta + x) - digamma_tail(theta)));
    }
    (
        log_rising_over_power(theta, x),
        (x / theta).ln_1p() + digamma_difference_remainder(theta, x),
    )
}

/// ln(1 + x) for x >= 0 by Goldberg's trick: with u = 1 + x rounded, ln(u) x / (u - 1) is
/// accurate to a few ulp (the rounding of u cancels between the two factors), and costs one
/// `ln` and one division, well under libm's `ln_1p`.
#[inline]
pub fn ln_1p_fast(x: f64) -> f64 {
    let u = 1.0 + x;
    if u == 1.0 {
        x
    } else if u.is_infinite() {
        u
    } else {
        u.ln() * x / (u - 1.0)
    }
}
