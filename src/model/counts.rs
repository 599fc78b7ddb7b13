//! Count likelihoods for gene expression: Poisson, negative binomial (NB) and zero-inflated NB
//! (ZINB), with scVI's softmax-times-library mean.
//!
//! For a cell x (D gene counts) with observed total l = sum_g x_g, the decoder's logits a give
//! the expected count of gene g as
//!
//! ```text
//! mu_g = l softmax(a)_g,        ln mu_g = ln l + a_g - logsumexp(a)
//! ```
//!
//! and each count is modelled given mu_g (and an inverse dispersion theta_g, and for the ZINB
//! a zero-inflation logit h_g). Everything is computed in f64 whatever the model's scalar type,
//! from ln mu rather than mu, so that mu down to 1e-10, theta from 1e-4 to 1e8, counts up to
//! 1e5 and logits of +-1e4 all give finite, accurate values and gradients. The log-probabilities
//! are fully normalised (the -ln x! term included), so importance-sampled log p(x) estimates
//! are true log-likelihoods, comparable with scvi-tools' `get_marginal_ll`.
//!
//! The row layouts, for D genes:
//! - decoder output `a`: [logits (D) | zero-inflation logits h (D), ZINB only | ln theta (D),
//!   per-cell dispersion only];
//! - cache: [d log p / d a_g for the logits (D) | rho = softmax(a) (D) | d log p / d h (D),
//!   ZINB only | d log p / d ln theta (D), NB and ZINB]; `log_prob` fills it, the gradient
//!   methods read it, so that the backward pass computes no transcendental function and only
//!   scales what it reads. The first block holds d log p / d ln mu_g while the row is
//!   computed, and the softmax's chain rule ([`SoftmaxLibrary::backward_in_place`]) turns it
//!   into d log p / d a_g before `log_prob` returns, while the row is still in cache.

use serde::{Deserialize, Serialize};

use crate::kernels::fast::with_simd;
use crate::kernels::scalar::{Float, sum_f64};
use crate::kernels::special::{ln_1p_fast, ln_factorial, nb_count_differences, whole_below};

/// ln theta is clamped to [-LOG_THETA_LIMIT, LOG_THETA_LIMIT] (theta from 1.4e-11 to 7.2e10),
/// with zero gradient outside, so that a runaway dispersion parameter cannot overflow.
pub const LOG_THETA_LIMIT: f64 = crate::kernels::fast::LN_THETA_LIMIT as f64;

/// The library size at which [`mean`] reports expected counts: counts per 10,000, the usual
/// normalisation of expression data. A decoded latent code has no observed total of its own.
pub const DECODE_LIBRARY: f64 = 1e4;

/// Where the NB's inverse dispersion theta comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dispersion {
    /// One learned ln theta per gene, a parameter of the likelihood (scVI's default).
    Gene,
    /// ln theta per gene and cell, from the decoder (another D outputs).
    GeneCell,
}

/// Which count model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountModel {
    /// Poisson(mu).
    Poisson,
    /// NB(mu, theta).
    NegativeBinomial(Dispersion),
    /// pi delta_0 + (1 - pi) NB(mu, theta), pi = sigmoid(h).
    ZeroInflated(Dispersion),
}

impl CountModel {
    fn dispersion(self) -> Option<Dispersion> {
        match self {
            CountModel::Poisson => None,
            CountModel::NegativeBinomial(d) | CountModel::ZeroInflated(d) => Some(d),
        }
    }

    fn zero_inflated(self) -> bool {
        matches!(self, CountModel::ZeroInflated(_))
    }

    /// Decoder outputs per gene: the logit, then h (ZINB), then ln theta (per-cell dispersion).
    pub fn outputs_per_dim(self) -> usize {
        1 + self.zero_inflated() as usize
            + (self.dispersion() == Some(Dispersion::GeneCell)) as usize
    }

    /// Cache values per gene: d/d ln mu, rho, then d/dh (ZINB), then d/d ln theta (NB, ZINB).
    pub fn cache_per_dim(self) -> usize {
        2 + self.zero_inflated() as usize + self.dispersion().is_some() as usize
    }

    /// Learned parameters: ln theta per gene for the gene-wise dispersion.
    pub fn num_params(self, dim: usize) -> usize {
        if self.dispersion() == Some(Dispersion::Gene) {
            dim
        } else {
            0
        }
    }

    /// Whether a value can be a count: a finite non-negative integer.
    pub fn accepts(x: f64) -> bool {
        x.is_finite() && x >= 0.0 && x.fract() == 0.0
    }
}

/// The softmax-times-library mean mu = l softmax(a), kept as ln mu = a + (ln l - logsumexp a).
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxLibrary {
    /// ln l - logsumexp(a): add a_g for ln mu_g. -inf for an empty cell (l = 0).
    pub offset: f64,
    /// logsumexp(a).
    pub logsumexp: f64,
}

impl SoftmaxLibrary {
    /// ln l - logsumexp(a) for logits `a` and library size `library`.
    pub fn forward<T: Float>(a: &[T], library: f64) -> Self {
        // f32 vectorised, f64 exact.
        let logsumexp = T::logsumexp(a);
        SoftmaxLibrary {
            offset: library.ln() - logsumexp,
            logsumexp,
        }
    }

    /// rho = softmax(a) into `rho`.
    pub fn softmax<T: Float>(&self, a: &[T], rho: &mut [T]) {
        for (r, &ak) in rho.iter_mut().zip(a) {
            *r = T::of((ak.as_f64() - self.logsumexp).exp());
        }
    }

    /// Writes `da_k = scale (g_k - rho_k sum_g g_g)`, where `g_g = dL/d ln mu_g` and
    /// rho = softmax(a): the chain rule through ln mu_g = ln l + a_g - logsumexp(a), since
    /// d ln mu_g / d a_k = [g = k] - rho_k (l is data, not a function of a).
    pub fn backward<T: Float>(rho: &[T], d_ln_mu: &[T], scale: f64, da: &mut [T]) {
        da.copy_from_slice(d_ln_mu);
        Self::backward_in_place(rho, da);
        let scale = T::of(scale);
        for d in da.iter_mut() {
            *d = scale * *d;
        }
    }

    /// [`backward`](Self::backward) with scale 1, in place: `g` holds d/d ln mu_g on entry and
    /// d/d a_g on return, g_k - rho_k sum_g g_g.
    pub fn backward_in_place<T: Float>(rho: &[T], g: &mut [T]) {
        // In T, so that the f32 loop vectorises.
        let total = T::of(sum_f64(g));
        with_simd(
            #[inline(always)]
            || {
                for (gk, &r) in g.iter_mut().zip(rho) {
                    *gk -= r * total;
                }
            },
        );
    }
}

/// One count's log-probability and its derivatives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CountTerms {
    /// log p(x).
    pub log_p: f64,
    /// d log p / d ln mu.
    pub d_ln_mu: f64,
    /// d log p / d ln theta (0 for the Poisson).
    pub d_ln_theta: f64,
    /// d log p / d h (0 without zero inflation).
    pub d_h: f64,
}

/// mu = 0: all the mass is at 0, for the Poisson and the NB alike.
fn zero_mean(x: f64) -> CountTerms {
    CountTerms {
        log_p: if x == 0.0 { 0.0 } else { f64::NEG_INFINITY },
        d_ln_mu: 0.0,
        d_ln_theta: 0.0,
        d_h: 0.0,
    }
}

/// Poisson: log p = x ln mu - mu - ln x!.
///
/// Backward: d log p / d ln mu = x - mu.
pub fn poisson(x: f64, ln_mu: f64) -> CountTerms {
    if ln_mu == f64::NEG_INFINITY {
        return zero_mean(x);
    }
    let mu = ln_mu.exp();
    let xlnmu = if x == 0.0 { 0.0 } else { x * ln_mu };
    CountTerms {
        log_p: xlnmu - mu - ln_factorial(x),
        d_ln_mu: x - mu,
        d_ln_theta: 0.0,
        d_h: 0.0,
    }
}

/// Negative binomial with mean mu and inverse dispersion theta (variance mu + mu^2/theta):
///
/// ```text
/// log p = lgamma(x + theta) - lgamma(theta) - ln x! + theta ln(theta/(theta + mu)) + x ln(mu/(theta + mu))
///       = R(theta, x) - ln x! + x ln mu - (theta + x) ln(1 + mu/theta),
/// R(theta, x) = lgamma(x + theta) - lgamma(theta) - x ln theta
/// ```
///
/// The second form is what is computed: R tends to 0 and ln(1 + mu/theta) to mu/theta as
/// theta grows, so it tends to the Poisson's x ln mu - mu - ln x! without cancelling.
///
/// Backward:
/// - d log p / d ln mu = x - (theta + x) mu/(theta + mu) = theta (x - mu)/(theta + mu);
/// - d log p / d theta = psi(x + theta) - psi(theta) - ln(1 + mu/theta) + (mu - x)/(theta + mu),
///   and d/d ln theta is theta times it. The digamma difference is taken as
///   ln(1 + x/theta) + its remainder, so nothing of size x/theta cancels at large theta.
pub fn negative_binomial(x: f64, ln_mu: f64, ln_theta: f64) -> CountTerms {
    negative_binomial_with(x, ln_mu, ln_mu.exp(), ln_theta, ln_theta.exp())
}

/// [`negative_binomial`] given mu and theta beside their logs, as the row loop has them: at a
/// zero count it then takes one logarithm and no exponential.
#[inline]
fn negative_binomial_with(x: f64, ln_mu: f64, mu: f64, ln_theta: f64, theta: f64) -> CountTerms {
    if ln_mu == f64::NEG_INFINITY {
        return zero_mean(x);
    }
    // mu/theta from the logs (mu and theta alone may under- or overflow where it does not).
    let mu_over_theta = if mu > 0.0 && theta.is_finite() && theta > 0.0 {
        mu / theta
    } else {
        (ln_mu - ln_theta).exp()
    };
    let log1p_mu = ln_1p_fast(mu_over_theta);
    let frac_theta = 1.0 / (1.0 + mu_over_theta); // theta / (theta + mu)
    let frac_mu = mu_over_theta * frac_theta; // mu / (theta + mu)
    if x == 0.0 {
        // log p = -theta ln(1 + mu/theta).
        return CountTerms {
            log_p: -theta * log1p_mu,
            d_ln_mu: -theta * frac_mu,
            d_ln_theta: theta * (-log1p_mu + frac_mu),
            d_h: 0.0,
        };
    }
    // R(theta, x), and psi(x + theta) - psi(theta) as ln(1 + x/theta) + its remainder.
    let (rising, digamma_difference) = nb_count_differences(theta, x);
    let log_p = rising - ln_factorial(x) + x * ln_mu - (theta + x) * log1p_mu;
    let d_ln_mu = frac_theta * (x - mu);
    // (mu - x)/(theta + mu) = frac_mu - x/(theta + mu)
    let x_over = x / theta * frac_theta;
    let d_theta = digamma_difference - log1p_mu + frac_mu - x_over;
    CountTerms {
        log_p,
        d_ln_mu,
        d_ln_theta: theta * d_theta,
        d_h: 0.0,
    }
}

/// Zero inflation of a count distribution p_c with logit h: pi = sigmoid(h),
///
/// ```text
/// p(0) = pi + (1 - pi) p_c(0),   log p(0) = logaddexp(h, ln p_c(0)) - softplus(h)
/// p(x) = (1 - pi) p_c(x),        log p(x) = ln p_c(x) - softplus(h)      (x > 0)
/// ```
///
/// Backward, with w = pi/(pi + (1 - pi) p_c(0)) = sigmoid(h - ln p_c(0)) the posterior
/// probability that a zero is structural:
/// - x = 0: d log p / d h = w - sigmoid(h), d log p / d ln p_c = 1 - w;
/// - x > 0: d log p / d h = -sigmoid(h),    d log p / d ln p_c = 1.
///
/// The count terms' derivatives are scaled by d log p / d ln p_c (the chain rule).
pub fn zero_inflate(x: f64, count: CountTerms, h: f64) -> CountTerms {
    let sig_h = sigmoid64(h);
    let (log_p, d_h, k) = if x == 0.0 {
        let w = sigmoid64(h - count.log_p);
        (
            logaddexp(h, count.log_p) - softplus64(h),
            w - sig_h,
            1.0 - w,
        )
    } else {
        (count.log_p - softplus64(h), -sig_h, 1.0)
    };
    CountTerms {
        log_p,
        d_ln_mu: k * count.d_ln_mu,
        d_ln_theta: k * count.d_ln_theta,
        d_h,
    }
}

#[inline]
fn sigmoid64(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

#[inline]
fn softplus64(v: f64) -> f64 {
    v.max(0.0) + (-v.abs()).exp().ln_1p()
}

#[inline]
fn logaddexp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + (-(a - b).abs()).exp().ln_1p()
}

/// ln theta clamped, and whether it lay inside the clamp (else its gradient is 0).
#[inline]
fn clamp_ln_theta(raw: f64) -> (f64, bool) {
    let c = raw.clamp(-LOG_THETA_LIMIT, LOG_THETA_LIMIT);
    (c, c == raw)
}

/// Where each block sits in the cache row, for D genes.
struct CacheLayout {
    rho: usize,
    h: usize,
    theta: usize,
}

impl CacheLayout {
    fn of(model: CountModel, d: usize) -> Self {
        let h = 2 * d;
        CacheLayout {
            rho: d,
            h,
            theta: if model.zero_inflated() { h + d } else { h },
        }
    }
}

/// One cell's log p(x | a), filling `cache` as the module documentation lays it out.
pub fn log_prob<T: Float>(model: CountModel, own: &[T], x: &[T], a: &[T], cache: &mut [T]) -> T {
    let mut logp = [T::zero()];
    log_prob_rows(model, own, |_| x, a, cache, &mut logp);
    logp[0]
}

/// Rows of a block the f32 path takes together: the per-gene dispersion terms are computed
/// once per block and gene chunk rather than once per row.
pub const ROW_BLOCK: usize = 8;

/// Genes per chunk of the f32 path: the dispersion's terms for a chunk sit on the stack.
const GENE_CHUNK: usize = 256;

/// [`log_prob`] for `logp.len()` rows at once: row i's counts are `x_of(i)`, its decoder
/// outputs and cache the i-th rows of `a` and `cache`. The same values as row by row.
///
/// f32: each row's softmax numerators in one vectorised pass, then gene chunk by gene chunk
/// the zero-count terms of every gene vectorised and the nonzero counts (about 5%) exactly;
/// with a dispersion per gene, its terms are computed once per chunk for up to [`ROW_BLOCK`]
/// rows. f64: every gene exactly (what the checks hold the f32 path to).
pub fn log_prob_rows<'x, T: Float>(
    model: CountModel,
    own: &[T],
    x_of: impl Fn(usize) -> &'x [T],
    a: &[T],
    cache: &mut [T],
    logp: &mut [T],
) {
    let rows = logp.len();
    if rows == 0 {
        return;
    }
    let d = x_of(0).len();
    let (w, cw) = (model.outputs_per_dim() * d, model.cache_per_dim() * d);
    if let (Some(own), Some(a)) = (f32s(own), f32s(a)) {
        let (cache, logp) = (
            f32s_mut(cache).expect("T is f32"),
            f32s_mut(logp).expect("T is f32"),
        );
        for b0 in (0..rows).step_by(ROW_BLOCK) {
            let b1 = (b0 + ROW_BLOCK).min(rows);
            let xs: [&[f32]; ROW_BLOCK] =
                std::array::from_fn(|i| f32s(x_of((b0 + i).min(b1 - 1))).expect("T is f32"));
            log_prob_block_f32(
                model,
                own,
                &xs[..b1 - b0],
                &a[b0 * w..b1 * w],
                &mut cache[b0 * cw..b1 * cw],
                &mut logp[b0..b1],
            );
        }
        return;
    }
    for (i, lp) in logp.iter_mut().enumerate() {
        let c = &mut cache[i * cw..(i + 1) * cw];
        *lp = T::of(log_prob_exact(
            model,
            own,
            x_of(i),
            &a[i * w..(i + 1) * w],
            c,
        ));
    }
}

/// `v` as f32 when T is f32: the fast path's kernels are written for f32 alone.
fn f32s<T: Float>(v: &[T]) -> Option<&[f32]> {
    (T::NAME == <f32 as Float>::NAME).then(|| bytemuck::cast_slice(v))
}

fn f32s_mut<T: Float>(v: &mut [T]) -> Option<&mut [f32]> {
    (T::NAME == <f32 as Float>::NAME).then(|| bytemuck::cast_slice_mut(v))
}

/// The exact terms of gene g in f64, written into the cache row; returns log p. `dispersion`
/// is (ln theta clamped, theta, whether ln theta lay inside the clamp); `h` the zero-inflation
/// logit.
#[inline]
#[allow(clippy::too_many_arguments)]
fn exact_gene<T: Float>(
    model: CountModel,
    at: &CacheLayout,
    g: usize,
    xg: f64,
    ln_mu: f64,
    mu: f64,
    dispersion: (f64, f64, bool),
    h: f64,
    cache: &mut [T],
) -> f64 {
    let t = match model.dispersion() {
        None => poisson(xg, ln_mu),
        Some(_) => {
            let (ln_theta, theta, inside) = dispersion;
            let mut t = negative_binomial_with(xg, ln_mu, mu, ln_theta, theta);
            if !inside {
                t.d_ln_theta = 0.0;
            }
            t
        }
    };
    store_gene(model, at, g, xg, t, h, cache)
}

/// The end of every nonzero count's path: the zero inflation (when the model has it) over the
/// count terms `t` of gene `g`, their derivatives written into the cache row, and log p.
#[inline]
fn store_gene<T: Float>(
    model: CountModel,
    at: &CacheLayout,
    g: usize,
    xg: f64,
    mut t: CountTerms,
    h: f64,
    cache: &mut [T],
) -> f64 {
    if model.zero_inflated() {
        t = zero_inflate(xg, t, h);
        cache[at.h + g] = T::of(t.d_h);
    }
    cache[g] = T::of(t.d_ln_mu);
    if model.dispersion().is_some() {
        cache[at.theta + g] = T::of(t.d_ln_theta);
    }
    t.log_p
}

/// Where ln theta comes from in a decoder row `a` of `d` genes: the parameters (per gene) or
/// the decoder (per gene and cell).
fn ln_theta_source<'s, T>(
    model: CountModel,
    own: &'s [T],
    a: &'s [T],
    d: usize,
) -> Option<&'s [T]> {
    let theta_out = if model.zero_inflated() { 2 * d } else { d };
    match model.dispersion() {
        Some(Dispersion::Gene) => Some(&own[..d]),
        Some(Dispersion::GeneCell) => Some(&a[theta_out..theta_out + d]),
        None => None,
    }
}

/// One row, every gene exactly in f64.
fn log_prob_exact<T: Float>(
    model: CountModel,
    own: &[T],
    x: &[T],
    a: &[T],
    cache: &mut [T],
) -> f64 {
    let d = x.len();
    let library = sum_f64(x);
    let logits = &a[..d];
    let at = CacheLayout::of(model, d);
    if library <= 0.0 {
        // An empty cell: mu = 0, all mass at zero (the zero-inflation included), log p = 0.
        cache.fill(T::zero());
        return 0.0;
    }
    let mean = SoftmaxLibrary::forward(logits, library);
    let ln_library = library.ln();
    let ln_theta = ln_theta_source(model, own, a, d);
    let mut total = 0.0;
    for g in 0..d {
        let rho = (logits[g].as_f64() - mean.logsumexp).exp();
        cache[at.rho + g] = T::of(rho);
        let ln_mu = logits[g].as_f64() - mean.logsumexp + ln_library;
        let (lt, inside) = ln_theta.map_or((0.0, false), |l| clamp_ln_theta(l[g].as_f64()));
        let h = if model.zero_inflated() {
            a[d + g].as_f64()
        } else {
            0.0
        };
        total += exact_gene(
            model,
            &at,
            g,
            x[g].as_f64(),
            ln_mu,
            library * rho,
            (lt, lt.exp(), inside),
            h,
            cache,
        );
    }
    let (d_ln_mu, rest) = cache.split_at_mut(d);
    SoftmaxLibrary::backward_in_place(&rest[..d], d_ln_mu);
    total
}

/// Per row of a block: what the gene chunks need.
#[derive(Clone, Copy, Default)]
struct RowTerms {
    library: f64,
    ln_library: f64,
    /// logsumexp of the logits, in f64.
    lse: f64,
    /// 1 / sum_g e^(a_g - max a).
    inv_sum: f32,
    /// An empty cell (library 0): all its terms are 0.
    empty: bool,
    /// log p so far.
    total: f64,
}

/// Genes g0..g1 of a cache block, or the empty block a model does not have.
fn genes(v: &mut [f32], g0: usize, g1: usize) -> &mut [f32] {
    if v.is_empty() { v } else { &mut v[g0..g1] }
}

/// The nonzero counts of one row's gene chunk that the negative binomial's lane path takes:
/// counts 1 to [`LANE_COUNT`], 1e-8 <= theta < 10, 0 < mu < 1e200 (see [`NbLanes::push`]).
struct NbLanes {
    n: usize,
    gene: [u32; GENE_CHUNK],
    inside: [bool; GENE_CHUNK],
    h: [f64; GENE_CHUNK],
    x: [f64; GENE_CHUNK],
    ln_fact: [f64; GENE_CHUNK],
    ln_mu: [f64; GENE_CHUNK],
    mu: [f64; GENE_CHUNK],
    theta: [f64; GENE_CHUNK],
    log_p: [f64; GENE_CHUNK],
    d_ln_mu: [f64; GENE_CHUNK],
    d_theta: [f64; GENE_CHUNK],
}

/// Lanes are computed in multiples of this (see [`NbLanes::finish`]).
const LANE_PAD: usize = 8;

/// Largest count of the lane path: the rising factorial's product runs a fixed
/// `LANE_COUNT - 1` masked steps, so each step more costs every lane. Counts 1 to 4 are 83%
/// of the nonzeros of `cells` and 90% of those of pbmc's 2,000 most variable genes; 1 to 8,
/// 91% and 95%. A count the lanes miss takes the exact path, about 125 cycles with its two libm
/// logarithms. The NB forward on a batch of 128 (`nb_forward_128x2000`, one core, 3
/// interleaved rounds, old/new) with 8 against 4: `cells` 1.12, 1.10, 0.98; pbmc 1.06, 1.14,
/// 1.01. With 16 it was no faster than with 8.
const LANE_COUNT: f64 = 8.0;

impl Default for NbLanes {
    fn default() -> Self {
        NbLanes {
            n: 0,
            gene: [0; GENE_CHUNK],
            inside: [false; GENE_CHUNK],
            h: [0.0; GENE_CHUNK],
            x: [0.0; GENE_CHUNK],
            ln_fact: [0.0; GENE_CHUNK],
            ln_mu: [0.0; GENE_CHUNK],
            mu: [0.0; GENE_CHUNK],
            theta: [0.0; GENE_CHUNK],
            log_p: [0.0; GENE_CHUNK],
            d_ln_mu: [0.0; GENE_CHUNK],
            d_theta: [0.0; GENE_CHUNK],
        }
    }
}

impl NbLanes {
    /// Takes gene `g`'s count `x` if the lane path covers it (and there is room), else leaves
    /// it to [`negative_binomial_with`]. The bounds keep every lane's product, quotients and
    /// logarithms' arguments positive, finite and normal.
    #[inline]
    fn push(
        &mut self,
        g: usize,
        x: f64,
        ln_mu: f64,
        mu: f64,
        (_, theta, inside): (f64, f64, bool),
        h: f64,
    ) -> bool {
        let covered = whole_below(x, LANE_COUNT + 1.0).is_some_and(|k| k >= 1)
            && (1e-8..10.0).contains(&theta)
            && mu > 0.0
            && mu < 1e200
            && ln_mu > f64::NEG_INFINITY;
        if !covered || self.n == GENE_CHUNK {
            return false;
        }
        let i = self.n;
        self.gene[i] = g as u32;
        self.inside[i] = inside;
        self.h[i] = h;
        self.x[i] = x;
        self.ln_fact[i] = ln_factorial(x);
        self.ln_mu[i] = ln_mu;
        self.mu[i] = mu;
        self.theta[i] = theta;
        self.n += 1;
        true
    }

    /// Computes the lanes, writes their derivatives into the cache row `c` as
    /// [`exact_gene`] does, and returns the sum of their log p (in lane order).
    fn finish(&mut self, model: CountModel, at: &CacheLayout, c: &mut [f32]) -> f64 {
        let n = self.n;
        if n == 0 {
            return 0.0;
        }
        // Whole vectors only: the lanes past n get harmless values (count 1, theta 1, mu 1), so
        // that no lane runs in the loop's scalar remainder, which took as long as the vectors.
        let padded = n.next_multiple_of(LANE_PAD).min(GENE_CHUNK);
        for i in n..padded {
            (self.x[i], self.theta[i], self.mu[i]) = (1.0, 1.0, 1.0);
            (self.ln_mu[i], self.ln_fact[i]) = (0.0, 0.0);
        }
        crate::kernels::fast::with_simd(
            #[inline(always)]
            || nb_small_count_lanes(self, padded),
        );
        let mut total = 0.0;
        for i in 0..n {
            let t = CountTerms {
                log_p: self.log_p[i],
                d_ln_mu: self.d_ln_mu[i],
                d_ln_theta: if self.inside[i] {
                    self.theta[i] * self.d_theta[i]
                } else {
                    0.0
                },
                d_h: 0.0,
            };
            total += store_gene(model, at, self.gene[i] as usize, self.x[i], t, self.h[i], c);
        }
        total
    }
}

/// [`negative_binomial_with`] at small counts, lane by lane and without branches or calls, so
/// that the loop vectorises: the same formulas, with four changes.
///
/// - The rising factorial's product p = prod_{i<x} (1 + i/theta) runs a fixed number of
///   steps, masked past the lane's count; its logarithm is [`ln_normal_f64`].
/// - The digamma difference psi(theta + x) - psi(theta) = sum_{i<x} 1/(theta + i) is
///   p'/p, where p' = dp/d theta scaled alike: with r = prod (theta + i), r' is the sum of
///   r/(theta + i), and dividing both by theta^x, p'_{i+1} = p'_i (1 + i/theta) + p_i / theta
///   from p'_1 = 1/theta. Every term is positive, so nothing cancels.
/// - ln(1 + mu/theta) is ln of w = 1 + mu/theta rounded, plus the rounding's share
///   (mu/theta - (w - 1)) / w, and 1/w is the theta/(theta + mu) the gradient needs anyway.
/// - Two divisions a lane, not seven: mu/theta and x/theta multiply by 1/theta, and 1/p, 1/w
///   and the two logarithms' quotients f/(2 + f) all come from one reciprocal, 1/D with
///   D = p w (2 + f_p)(2 + f_w): 1/p = w (2 + f_p)(2 + f_w)/D, and so on. A vector division
///   issues once every 16 cycles here, and the seven were most of the lane's time. Each
///   quotient so formed carries a few roundings more than a division's one; the lanes' results
///   end in f32. [`NbLanes::push`] keeps D finite: p <= 7! 1e56 < 1e60 for counts up to 8
///   at theta >= 1e-8, mu < 1e200 keeps w below 1e208, and (2 + f)^2 < 6.
#[inline(always)]
fn nb_small_count_lanes(l: &mut NbLanes, n: usize) {
    use crate::kernels::special::{ln_normal_f64_finish, ln_normal_f64_reduce};
    for i in 0..n.min(GENE_CHUNK) {
        let (x, theta, mu) = (l.x[i], l.theta[i], l.mu[i]);
        let inv = 1.0 / theta;
        let (mut p, mut dp) = (1.0f64, inv);
        for k in 1..LANE_COUNT as usize {
            let kf = k as f64;
            let f = 1.0 + kf * inv;
            let (np, ndp) = (p * f, dp * f + p * inv);
            let on = kf < x;
            p = if on { np } else { p };
            dp = if on { ndp } else { dp };
        }
        let u = mu * inv;
        let w = 1.0 + u;
        let ((kp, fp), (kw, fw)) = (ln_normal_f64_reduce(p), ln_normal_f64_reduce(w));
        let (ap, aw) = (2.0 + fp, 2.0 + fw);
        let (pw, a2) = (p * w, ap * aw);
        let r = 1.0 / (pw * a2);
        let inv_pw = a2 * r;
        let psi = dp * w * inv_pw;
        let frac_theta = p * inv_pw;
        let (sp, sw) = (fp * (aw * pw) * r, fw * (ap * pw) * r);
        let rising = ln_normal_f64_finish(kp, fp, sp);
        let frac_mu = u * frac_theta;
        let log1p_mu = ln_normal_f64_finish(kw, fw, sw) + (u - (w - 1.0)) * frac_theta;
        l.log_p[i] = rising - l.ln_fact[i] + x * l.ln_mu[i] - (theta + x) * log1p_mu;
        l.d_ln_mu[i] = frac_theta * (x - mu);
        let x_over = x * inv * frac_theta;
        l.d_theta[i] = psi - log1p_mu + frac_mu - x_over;
    }
}

/// Up to [`ROW_BLOCK`] rows in f32 (see [`log_prob_rows`]).
fn log_prob_block_f32(
    model: CountModel,
    own: &[f32],
    xs: &[&[f32]],
    a: &[f32],
    cache: &mut [f32],
    logp: &mut [f32],
) {
    use crate::kernels::fast::{
        COMPACT_SLACK, CountZeroOut, CountZeroRow, ThetaTerms, compact_nonzeros_f32,
        count_zero_row, dispersion_terms_f32, logsumexp_store_f32,
    };
    let d = xs[0].len();
    let (w, cw) = (model.outputs_per_dim() * d, model.cache_per_dim() * d);
    let at = CacheLayout::of(model, d);
    let mut terms = [RowTerms::default(); ROW_BLOCK];
    for (i, t) in terms[..xs.len()].iter_mut().enumerate() {
        let library = sum_f64(xs[i]);
        let c = &mut cache[i * cw..(i + 1) * cw];
        if library <= 0.0 {
            // An empty cell: mu = 0, all mass at zero (the zero-inflation included), log p 0.
            c.fill(0.0);
            t.empty = true;
            continue;
        }
        let (max, sum) = logsumexp_store_f32(&a[i * w..i * w + d], &mut c[at.rho..at.rho + d]);
        *t = RowTerms {
            library,
            ln_library: library.ln(),
            lse: max as f64 + (sum as f64).ln(),
            inv_sum: 1.0 / sum,
            empty: false,
            total: 0.0,
        };
    }
    let mut lanes = NbLanes::default();
    let (mut nz_index, mut nz_value) = (
        [0u32; GENE_CHUNK + COMPACT_SLACK],
        [0.0f32; GENE_CHUNK + COMPACT_SLACK],
    );
    let per_gene = model.dispersion() == Some(Dispersion::Gene);
    let (mut theta, mut inv_theta, mut theta_d) = (
        [0.0f32; GENE_CHUNK],
        [0.0f32; GENE_CHUNK],
        [0.0f32; GENE_CHUNK],
    );
    for g0 in (0..d).step_by(GENE_CHUNK) {
        let g1 = (g0 + GENE_CHUNK).min(d);
        let n = g1 - g0;
        if per_gene {
            dispersion_terms_f32(&own[g0..g1], &mut theta, &mut inv_theta, &mut theta_d);
        }
        for (i, t) in terms[..xs.len()].iter_mut().enumerate() {
            if t.empty {
                continue;
            }
            let ar = &a[i * w..(i + 1) * w];
            let ln_theta = ln_theta_source(model, own, ar, d);
            if model.dispersion() == Some(Dispersion::GeneCell) {
                let l = &ln_theta.expect("a dispersion")[g0..g1];
                dispersion_terms_f32(l, &mut theta, &mut inv_theta, &mut theta_d);
            }
            let c = &mut cache[i * cw..(i + 1) * cw];
            let x = &xs[i][g0..g1];
            let zero_sum = {
                let (d_ln_mu, rest) = c.split_at_mut(d);
                let (rho, rest) = rest.split_at_mut(d);
                let (d_h, d_ln_theta) =
                    rest.split_at_mut(if model.zero_inflated() { d } else { 0 });
                let theta_terms = model.dispersion().map(|_| ThetaTerms {
                    theta: &theta[..n],
                    inv_theta: &inv_theta[..n],
                    theta_d: &theta_d[..n],
                });
                let input = CountZeroRow {
                    x,
                    inv_sum: t.inv_sum,
                    library: t.library as f32,
                    theta: theta_terms,
                    h: model.zero_inflated().then(|| &ar[d + g0..d + g1]),
                };
                let mut out = CountZeroOut {
                    rho: &mut rho[g0..g1],
                    d_ln_mu: &mut d_ln_mu[g0..g1],
                    d_ln_theta: genes(d_ln_theta, g0, g1),
                    d_h: genes(d_h, g0, g1),
                };
                count_zero_row(&input, &mut out)
            };
            t.total += zero_sum as f64;
            // The nonzero counts exactly, with mu from the rho just written (to f32's
            // precision, the precision of everything this path returns) and theta from the
            // chunk's terms (to f32's precision as well): no exponential per count.
            // Small counts of the negative binomials go lane by lane (vectorised) once the
            // chunk's are gathered; the rest one by one. Which way a count goes depends on
            // its own values alone, so a row gives the same bits in any block.
            // The chunk's nonzeros are compacted first (16 entries a step, no branch) and
            // then walked: a walk of the dense chunk by its bit masks mispredicts a branch at
            // almost every nonzero, in about half the 16-entry groups.
            lanes.n = 0;
            let nonzeros = compact_nonzeros_f32(x, 0, &mut nz_index, &mut nz_value);
            for (&j, &count) in nz_index[..nonzeros].iter().zip(&nz_value[..nonzeros]) {
                let j = j as usize;
                let g = g0 + j;
                let ln_mu = ar[g] as f64 - t.lse + t.ln_library;
                let mu = t.library * c[at.rho + g] as f64;
                let dispersion = ln_theta.map_or((0.0, 0.0, false), |l| {
                    let (lt, inside) = clamp_ln_theta(l[g] as f64);
                    (lt, theta[j] as f64, inside)
                });
                let h = if model.zero_inflated() {
                    ar[d + g] as f64
                } else {
                    0.0
                };
                let xg = count as f64;
                if model.dispersion().is_none() || !lanes.push(g, xg, ln_mu, mu, dispersion, h) {
                    t.total += exact_gene(model, &at, g, xg, ln_mu, mu, dispersion, h, c);
                }
            }
            t.total += lanes.finish(model, &at, c);
        }
    }
    for (i, (t, lp)) in terms.iter().zip(logp.iter_mut()).enumerate() {
        if !t.empty {
            let (d_ln_mu, rest) = cache[i * cw..(i + 1) * cw].split_at_mut(d);
            SoftmaxLibrary::backward_in_place(&rest[..d], d_ln_mu);
        }
        *lp = t.total as f32;
    }
}

/// Writes `da = scale d(-log p)/da` from the cache `log_prob` filled.
pub fn grad_output<T: Float>(model: CountModel, x: &[T], cache: &[T], scale: T, da: &mut [T]) {
    let d = x.len();
    let at = CacheLayout::of(model, d);
    let s = -scale;
    // The cache holds d log p / d a for the logits already (log_prob applied the softmax's
    // chain rule).
    with_simd(
        #[inline(always)]
        || {
            for (o, &c) in da[..d].iter_mut().zip(&cache[..d]) {
                *o = s * c;
            }
            if model.zero_inflated() {
                for (o, &c) in da[d..2 * d].iter_mut().zip(&cache[at.h..at.h + d]) {
                    *o = s * c;
                }
            }
            if model.dispersion() == Some(Dispersion::GeneCell) {
                let out = if model.zero_inflated() { 2 * d } else { d };
                for (o, &c) in da[out..out + d]
                    .iter_mut()
                    .zip(&cache[at.theta..at.theta + d])
                {
                    *o = s * c;
                }
            }
        },
    );
}

/// Adds `scale d(-log p)/d(ln theta_g)` into `dparams` for the gene-wise dispersion.
pub fn grad_params<T: Float>(model: CountModel, x: &[T], cache: &[T], scale: T, dparams: &mut [T]) {
    grad_params_genes(model, x.len(), cache, scale, 0, dparams);
}

/// [`grad_params`] for genes `first..first + dparams.len()` of a row of `d` genes: what a task
/// of the parallel backward pass adds for its block of genes.
pub fn grad_params_genes<T: Float>(
    model: CountModel,
    d: usize,
    cache: &[T],
    scale: T,
    first: usize,
    dparams: &mut [T],
) {
    if model.dispersion() != Some(Dispersion::Gene) {
        return;
    }
    let (at, n) = (CacheLayout::of(model, d).theta + first, dparams.len());
    with_simd(
        #[inline(always)]
        || {
            for (p, &c) in dparams.iter_mut().zip(&cache[at..at + n]) {
                *p -= scale * c;
            }
        },
    );
}

/// Expected counts at [`DECODE_LIBRARY`]: `DECODE_LIBRARY softmax(a)`, times 1 - pi for the
/// ZINB.
pub fn mean<T: Float>(model: CountModel, a: &[T], out: &mut [T]) {
    let d = out.len();
    let m = SoftmaxLibrary::forward(&a[..d], DECODE_LIBRARY);
    for g in 0..d {
        let mut v = (a[g].as_f64() + m.offset).exp();
        if model.zero_inflated() {
            v *= 1.0 - sigmoid64(a[d + g].as_f64());
        }
        out[g] = T::of(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The small counts' lane path against [`negative_binomial_with`], which the gradient
    /// checks and the textbook comparisons validate, in f64 over the lanes' whole domain:
    /// counts 1 to 8, theta from 1e-8 to just under 10, mu from 1e-10 to 1e12 and at the
    /// lanes' bound, just under 1e200, where their largest product p w is. The lanes go
    /// through [`NbLanes::finish`] in batches whose sizes are no multiple of the vector width,
    /// so the padded lanes are exercised too. log p and d/d ln mu agree to 1e-12 relative;
    /// d/d ln theta, a sum of terms that cancel, to 1e-12 of the largest term.
    #[test]
    fn small_count_lanes_match_the_exact_path() {
        let model = CountModel::NegativeBinomial(Dispersion::Gene);
        let mut cases = Vec::new();
        for t in 0..45 {
            let theta = 1e-8 * 10f64.powf(t as f64 * (9.0 - 1e-4) / 44.0);
            for &mu in &[
                1e-10f64, 1e-5, 0.01, 0.5, 1.0, 3.0, 50.0, 1e3, 1e5, 1e8, 1e12, 9.9e199,
            ] {
                for x in 1..=LANE_COUNT as usize {
                    cases.push((x as f64, mu, theta));
                }
            }
        }
        let mut checked = 0;
        for batch in cases.chunks(83) {
            let d = batch.len();
            let at = CacheLayout::of(model, d);
            let mut cache = vec![0.0f32; model.cache_per_dim() * d];
            let mut lanes = NbLanes::default();
            let mut want = 0.0;
            for (g, &(x, mu, theta)) in batch.iter().enumerate() {
                let ln_theta = theta.ln();
                assert!(lanes.push(g, x, mu.ln(), mu, (ln_theta, theta, true), 0.0));
                want += negative_binomial_with(x, mu.ln(), mu, ln_theta, theta).log_p;
            }
            let total = lanes.finish(model, &at, &mut cache);
            assert!(
                (total - want).abs() <= 1e-12 * want.abs().max(1.0),
                "batch log p {total} vs {want}"
            );
            for (g, &(x, mu, theta)) in batch.iter().enumerate() {
                let exact = negative_binomial_with(x, mu.ln(), mu, theta.ln(), theta);
                let lane = (lanes.log_p[g], lanes.d_ln_mu[g], theta * lanes.d_theta[g]);
                let what = format!("x {x}, mu {mu:e}, theta {theta:e}");
                assert!(
                    (lane.0 - exact.log_p).abs() <= 1e-12 * exact.log_p.abs().max(1.0),
                    "log p at {what}: {} vs {}",
                    lane.0,
                    exact.log_p
                );
                assert!(
                    (lane.1 - exact.d_ln_mu).abs() <= 1e-12 * exact.d_ln_mu.abs().max(1.0),
                    "d/d ln mu at {what}: {} vs {}",
                    lane.1,
                    exact.d_ln_mu
                );
                // The terms of d/d ln theta: theta times each of psi, ln(1 + mu/theta),
                // mu/(theta + mu) and x/(theta + mu).
                let largest = x.max(theta * (mu / theta).ln_1p()).max(1.0);
                assert!(
                    (lane.2 - exact.d_ln_theta).abs() <= 1e-12 * largest,
                    "d/d ln theta at {what}: {} vs {}",
                    lane.2,
                    exact.d_ln_theta
                );
                assert_eq!(cache[g], exact.d_ln_mu as f32, "cached d/d ln mu at {what}");
                checked += 1;
            }
        }
        assert_eq!(checked, cases.len());
    }
}
