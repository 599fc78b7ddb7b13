//! Decoder likelihoods p(x|z), as functions of the decoder's output `a`. Each gives log p(x|a)
//! per row and the gradient of -log p with respect to `a` (and to its own parameters, if it
//! has any).
//!
//! [`DecoderLikelihood`] is the extension point: the built-in [`Likelihood`]s implement it, and
//! so can a user's own type, which [`Vae::with_likelihood`](crate::Vae::with_likelihood) then
//! plugs into the model and [`crate::gradcheck::check_likelihood`] checks against finite
//! differences.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::ValueDomain;
use crate::error::{Error, Result};
use crate::kernels::par;
use crate::kernels::scalar::Float;
use crate::kernels::scalar::{Family, sigmoid};
use crate::model::counts::{self, CountModel, Dispersion};
use crate::model::params::TensorId;
use crate::model::shape::holds;

/// ln(2 pi).
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Which p(x|z) the decoder parameterises.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Likelihood {
    /// Bernoulli with logits `a`; targets may be grey levels in [0, 1]:
    /// log p = x a - softplus(a).
    Bernoulli,
    /// Gaussian with mean `a` and a fixed variance:
    /// log p = -((x - a)^2 / variance + ln(2 pi variance)) / 2.
    Gaussian {
        /// The fixed variance, > 0.
        variance: f64,
    },
    /// Gaussian with mean `a` and a learned log-variance `s_j` per dimension:
    /// log p = -((x - a)^2 exp(-s) + s + ln 2 pi) / 2.
    GaussianLearnedVariance,
    /// Poisson counts with mean mu = l softmax(a), l the cell's total count
    /// ([`crate::model::counts`]).
    Poisson,
    /// Negative-binomial counts with mean mu = l softmax(a) and inverse dispersion theta.
    NegativeBinomial {
        /// Where theta comes from: learned per gene, or from the decoder per gene and cell.
        dispersion: Dispersion,
    },
    /// Zero-inflated negative binomial: the NB, plus a zero-inflation logit per gene and cell
    /// from a second decoder head (scVI's default).
    ZeroInflatedNegativeBinomial {
        /// Where theta comes from.
        dispersion: Dispersion,
    },
}

impl std::str::FromStr for Likelihood {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "bernoulli" => Likelihood::Bernoulli,
            "gaussian" => Likelihood::Gaussian { variance: 1.0 },
            "gaussian-learned" | "gaussian-learned-variance" => Likelihood::GaussianLearnedVariance,
            "poisson" => Likelihood::Poisson,
            "nb" | "negative-binomial" => Likelihood::NegativeBinomial {
                dispersion: Dispersion::Gene,
            },
            "nb-cell" => Likelihood::NegativeBinomial {
                dispersion: Dispersion::GeneCell,
            },
            "zinb" => Likelihood::ZeroInflatedNegativeBinomial {
                dispersion: Dispersion::Gene,
            },
            "zinb-cell" => Likelihood::ZeroInflatedNegativeBinomial {
                dispersion: Dispersion::GeneCell,
            },
            _ => {
                return Err(Error::config(
                    "likelihood",
                    s,
                    "expected one of bernoulli, gaussian, gaussian-learned, poisson, nb, nb-cell, \
                     zinb, zinb-cell",
                ));
            }
        })
    }
}

impl std::fmt::Display for Likelihood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Likelihood::Bernoulli => f.write_str("bernoulli"),
            Likelihood::Gaussian { variance } => write!(f, "gaussian (variance {variance})"),
            Likelihood::GaussianLearnedVariance => f.write_str("gaussian-learned"),
            Likelihood::Poisson => f.write_str("poisson"),
            Likelihood::NegativeBinomial { dispersion } => match dispersion {
                Dispersion::Gene => f.write_str("nb"),
                Dispersion::GeneCell => f.write_str("nb-cell"),
            },
            Likelihood::ZeroInflatedNegativeBinomial { dispersion } => match dispersion {
                Dispersion::Gene => f.write_str("zinb"),
                Dispersion::GeneCell => f.write_str("zinb-cell"),
            },
        }
    }
}

impl Likelihood {
    /// Checks the likelihood's own settings.
    pub fn validate(&self) -> Result<()> {
        if let Likelihood::Gaussian { variance } = *self
            && !(variance.is_finite() && variance > 0.0)
        {
            return Err(Error::config(
                "gaussian variance",
                variance,
                "must be finite and > 0",
            ));
        }
        Ok(())
    }

    /// Whether data values suit it: Bernoulli needs [0, 1], the Gaussians any finite value,
    /// the count likelihoods non-negative integers.
    pub fn check_value(&self, v: f64) -> bool {
        match self {
            Likelihood::Bernoulli => (0.0..=1.0).contains(&v),
            _ if self.count_model().is_some() => CountModel::accepts(v),
            _ => v.is_finite(),
        }
    }

    /// The count model, for the count likelihoods.
    pub fn count_model(&self) -> Option<CountModel> {
        match *self {
            Likelihood::Poisson => Some(CountModel::Poisson),
            Likelihood::NegativeBinomial { dispersion } => {
                Some(CountModel::NegativeBinomial(dispersion))
            }
            Likelihood::ZeroInflatedNegativeBinomial { dispersion } => {
                Some(CountModel::ZeroInflated(dispersion))
            }
            _ => None,
        }
    }
}

/// What a likelihood is, apart from its arithmetic: its name, its own parameters and the data
/// values it can model. Shared by its f32 and f64 versions.
pub trait LikelihoodInfo: Send + Sync + std::fmt::Debug {
    /// A short name, for messages and model files ("bernoulli").
    fn name(&self) -> String;

    /// Decoder outputs per data dimension: 1 when `a` holds one value per dimension (a logit,
    /// a mean); more when it holds several (a mean and a dispersion, say). The decoder's last
    /// layer is `outputs_per_dim() x D` wide.
    fn outputs_per_dim(&self) -> usize {
        1
    }

    /// Scratch values per data dimension that `log_prob` keeps for the gradient methods: the
    /// cache row is `cache_per_dim() x D` wide. As many as the outputs by default; more when
    /// the backward pass wants derivatives the forward pass already had in hand (a count
    /// likelihood keeps d/d(ln mu) and d/d(ln theta)).
    fn cache_per_dim(&self) -> usize {
        self.outputs_per_dim()
    }

    /// Learned parameters of its own for data of width `dim` (a per-dimension log-variance,
    /// say), trained with the rest of the model; 0 by default.
    fn num_params(&self, dim: usize) -> usize {
        let _ = dim;
        0
    }

    /// The name of its parameter tensor in the model's layout and files.
    fn param_name(&self) -> &str {
        "likelihood.params"
    }

    /// Whether it can model the data value `x` (for the check of a dataset before training).
    fn accepts(&self, x: f64) -> bool {
        x.is_finite()
    }

    /// `accepts` in words, for the error message ("values in [0, 1]").
    fn needs(&self) -> &str {
        "finite values"
    }
}

/// A decoder likelihood p(x | a) in scalar type `T`, one data row at a time.
///
/// `x` is a data row (width D); `a` the decoder's output for it (width
/// `outputs_per_dim() x D`); `params` its own parameters (`num_params(D)` values, empty for
/// most); `cache` a scratch row of `cache_per_dim() x D` values (as wide as `a` unless the
/// likelihood asks for more), which `log_prob` may fill and the gradient methods then read for
/// the same `x` and `a`.
///
/// Implement it for both f32 and f64 (a generic `impl<T: Float>` does) and the model trains
/// with it in either precision. The contract is checked by [`crate::gradcheck::check_likelihood`]:
/// the gradients must be those of `log_prob`.
///
/// ```
/// use std::sync::Arc;
/// use elbo::{DecoderLikelihood, Float, LikelihoodInfo, Vae, VaeConfig};
///
/// /// A Gaussian with variance 2, written as a user would.
/// #[derive(Debug)]
/// struct Wide;
/// impl LikelihoodInfo for Wide {
///     fn name(&self) -> String { "wide-gaussian".into() }
/// }
/// impl<T: Float> DecoderLikelihood<T> for Wide {
///     fn log_prob(&self, _: &[T], x: &[T], a: &[T], _: &mut [T]) -> T {
///         let c = T::of(0.5 * (2.0 * 2.0 * std::f64::consts::PI).ln());
///         x.iter().zip(a).fold(T::zero(), |s, (&x, &a)| s - (x - a) * (x - a) / T::of(4.0) - c)
///     }
///     /// d(-log p)/da = (a - x) / 2
///     fn grad_output(&self, _: &[T], x: &[T], a: &[T], _: &[T], scale: T, da: &mut [T]) {
///         for j in 0..da.len() { da[j] = scale * (a[j] - x[j]) / T::of(2.0); }
///     }
///     fn mean(&self, _: &[T], a: &[T], out: &mut [T]) { out.copy_from_slice(a); }
/// }
///
/// let checks = elbo::gradcheck::check_likelihood(&Wide, &[], &[0.3, -1.0], &[1.0, 0.2], 1e-5,
///     elbo::gradcheck::Tolerance::DEFAULT)?;
/// assert!(checks.iter().all(|c| c.passed));
/// let vae = Vae::with_likelihood(VaeConfig::mnist().input_dim(2).latent_dim(1), Arc::new(Wide))?;
/// assert_eq!(vae.likelihood_info().name(), "wide-gaussian");
/// # Ok::<(), elbo::Error>(())
/// ```
pub trait DecoderLikelihood<T: Float>: LikelihoodInfo {
    /// log p(x | a), fully normalised where the likelihood is a density or a mass function.
    fn log_prob(&self, params: &[T], x: &[T], a: &[T], cache: &mut [T]) -> T;

    /// Writes `da = scale * d(-log p(x|a))/da`.
    fn grad_output(&self, params: &[T], x: &[T], a: &[T], cache: &[T], scale: T, da: &mut [T]);

    /// Adds `scale * d(-log p(x|a))/d(params)` into `dparams`. Nothing to do without
    /// parameters, which is the default.
    #[allow(clippy::too_many_arguments)]
    fn grad_params(
        &self,
        params: &[T],
        x: &[T],
        a: &[T],
        cache: &[T],
        scale: T,
        dparams: &mut [T],
    ) {
        let _ = (params, x, a, cache, scale, dparams);
    }

    /// The mean of p(x | a), width D: what decoding a latent code gives.
    fn mean(&self, params: &[T], a: &[T], out: &mut [T]);

    /// Initial values of its parameters; zeros by default.
    fn init_params(&self, params: &mut [T]) {
        params.fill(T::zero());
    }
}

/// A user's likelihood the model can hold: one that works in both f32 and f64. Every type that
/// implements [`DecoderLikelihood`] for both is one.
pub trait CustomLikelihood: DecoderLikelihood<f32> + DecoderLikelihood<f64> {}
impl<L: DecoderLikelihood<f32> + DecoderLikelihood<f64>> CustomLikelihood for L {}

impl LikelihoodInfo for Likelihood {
    fn name(&self) -> String {
        self.to_string()
    }
    fn outputs_per_dim(&self) -> usize {
        self.count_model().map_or(1, CountModel::outputs_per_dim)
    }
    fn cache_per_dim(&self) -> usize {
        self.count_model().map_or(1, CountModel::cache_per_dim)
    }
    fn num_params(&self, dim: usize) -> usize {
        match self {
            Likelihood::GaussianLearnedVariance => dim,
            _ => self.count_model().map_or(0, |m| m.num_params(dim)),
        }
    }
    fn param_name(&self) -> &str {
        match self {
            Likelihood::GaussianLearnedVariance => "likelihood.log_variance",
            _ => "likelihood.log_theta",
        }
    }
    fn accepts(&self, x: f64) -> bool {
        self.check_value(x)
    }
    fn needs(&self) -> &str {
        match self {
            Likelihood::Bernoulli => "values in [0, 1]",
            _ if self.count_model().is_some() => "non-negative integer counts",
            _ => "finite values",
        }
    }
}

impl<T: Float> DecoderLikelihood<T> for Likelihood {
    /// - Bernoulli: sum_j x_j a_j - softplus(a_j) (sigmoid(a) into the cache, computed from
    ///   the same e^-|a| as the softplus);
    /// - Gaussian (fixed variance v): -1/2 sum_j ((x_j - a_j)^2 / v + ln(2 pi v));
    /// - Gaussian with learned log-variance s: -1/2 sum_j ((x_j - a_j)^2 e^-s_j + s_j + ln 2 pi).
    fn log_prob(&self, params: &[T], x: &[T], a: &[T], cache: &mut [T]) -> T {
        if let Some(m) = self.count_model() {
            return counts::log_prob(m, params, x, a, cache);
        }
        match *self {
            Likelihood::Bernoulli => T::bernoulli_row(x, a, cache),
            Likelihood::Gaussian { variance } => {
                let sq = x
                    .iter()
                    .zip(a)
                    .fold(T::zero(), |s, (&x, &a)| s + (x - a) * (x - a));
                let n = T::of(x.len() as f64);
                -T::of(0.5) * (sq / T::of(variance) + n * T::of(LN_2PI + variance.ln()))
            }
            Likelihood::GaussianLearnedVariance => {
                let mut acc = T::zero();
                for ((&xj, &aj), &sj) in x.iter().zip(a).zip(params) {
                    let e = xj - aj;
                    acc += e * e * (-sj).exp() + sj + T::of(LN_2PI);
                }
                -T::of(0.5) * acc
            }
            _ => unreachable!("count likelihoods return above"),
        }
    }

    /// - Bernoulli:        d(-log p)/da = sigmoid(a) - x     (sigmoid(a) from the cache)
    /// - Gaussian (fixed): d(-log p)/da = (a - x) / v
    /// - Gaussian learned: d(-log p)/da = (a - x) e^-s
    fn grad_output(&self, params: &[T], x: &[T], a: &[T], cache: &[T], scale: T, da: &mut [T]) {
        if let Some(m) = self.count_model() {
            return counts::grad_output(m, x, cache, scale, da);
        }
        // Zipped iterators, not indices: no bounds checks, so the loops vectorise.
        match *self {
            Likelihood::Bernoulli => {
                for ((d, &s), &xj) in da.iter_mut().zip(cache).zip(x) {
                    *d = scale * (s - xj);
                }
            }
            Likelihood::Gaussian { variance } => {
                let inv = scale / T::of(variance);
                for ((d, &aj), &xj) in da.iter_mut().zip(a).zip(x) {
                    *d = inv * (aj - xj);
                }
            }
            Likelihood::GaussianLearnedVariance => {
                for (((d, &aj), &xj), &sj) in da.iter_mut().zip(a).zip(x).zip(params) {
                    *d = scale * (aj - xj) * (-sj).exp();
                }
            }
            _ => unreachable!("count likelihoods return above"),
        }
    }

    /// Gaussian learned: d(-log p)/ds_j = (1 - (x_j - a_j)^2 e^-s_j) / 2; NB and ZINB with
    /// gene-wise dispersion: d(-log p)/d(ln theta_g), kept in the cache by `log_prob`
    /// ([`counts::negative_binomial`]); the others have no parameters.
    fn grad_params(
        &self,
        params: &[T],
        x: &[T],
        a: &[T],
        cache: &[T],
        scale: T,
        dparams: &mut [T],
    ) {
        if let Some(m) = self.count_model() {
            return counts::grad_params(m, x, cache, scale, dparams);
        }
        if let Likelihood::GaussianLearnedVariance = self {
            for j in 0..dparams.len() {
                let e = x[j] - a[j];
                dparams[j] += scale * T::of(0.5) * (T::one() - e * e * (-params[j]).exp());
            }
        }
    }

    /// sigmoid(a) for the Bernoulli, `a` itself for the Gaussians, expected counts per
    /// [`counts::DECODE_LIBRARY`] for the count likelihoods.
    fn mean(&self, _params: &[T], a: &[T], out: &mut [T]) {
        if let Some(m) = self.count_model() {
            return counts::mean(m, a, out);
        }
        match self {
            Likelihood::Bernoulli => {
                for (o, &v) in out.iter_mut().zip(a) {
                    *o = sigmoid(v);
                }
            }
            _ => out.copy_from_slice(&a[..out.len()]),
        }
    }
}

/// The likelihood a model holds: a built-in one (described by the model's configuration and
/// saved with it) or a user's.
#[derive(Clone, Debug)]
pub enum LikelihoodChoice {
    /// One of elbo's own.
    Builtin(Likelihood),
    /// A user's [`CustomLikelihood`].
    Custom(Arc<dyn CustomLikelihood>),
}

/// `&dyn DecoderLikelihood<T>` as a family over T, for [`Float::pick`].
struct DynLikelihood<'a>(std::marker::PhantomData<&'a ()>);
impl<'a> Family for DynLikelihood<'a> {
    type Of<T: Float> = &'a dyn DecoderLikelihood<T>;
}

impl LikelihoodChoice {
    /// Its name, its parameters and the values it accepts.
    pub fn info(&self) -> &dyn LikelihoodInfo {
        match self {
            LikelihoodChoice::Builtin(l) => l,
            LikelihoodChoice::Custom(c) => {
                let l: &dyn DecoderLikelihood<f64> = &**c;
                l
            }
        }
    }

    /// The version in scalar type `T`.
    ///
    /// ```
    /// use elbo::model::LikelihoodChoice;
    /// use elbo::Likelihood;
    /// let choice = LikelihoodChoice::Builtin(Likelihood::Bernoulli);
    /// assert_eq!(choice.info().name(), "bernoulli");
    /// let (x, a, mut cache) = ([1.0f64], [0.0f64], [0.0f64]);
    /// let lp = choice.as_dyn::<f64>().log_prob(&[], &x, &a, &mut cache);
    /// assert!((lp - 0.5f64.ln()).abs() < 1e-12);          // log sigmoid(0)
    /// assert!(!(choice.domain().accepts)(1.5));            // Bernoulli data lie in [0, 1]
    /// ```
    pub fn as_dyn<T: Float>(&self) -> &dyn DecoderLikelihood<T> {
        match self {
            LikelihoodChoice::Builtin(l) => l,
            LikelihoodChoice::Custom(c) => T::pick::<DynLikelihood<'_>>(&**c, &**c),
        }
    }

    /// The values it can model, as the data layer checks them.
    pub fn domain(&self) -> ValueDomain<'_> {
        let info = self.info();
        ValueDomain {
            likelihood: info.name(),
            needs: info.needs(),
            accepts: Box::new(move |v| info.accepts(v)),
            bytes_always_fit: matches!(self, LikelihoodChoice::Builtin(_)),
        }
    }
}

/// A likelihood bound to its place in the model: its parameters' tensor, if any, and the data
/// width.
#[derive(Clone, Debug)]
pub struct LikelihoodHead {
    /// Which likelihood.
    pub choice: LikelihoodChoice,
    /// Its own parameters in the flat buffer, if it has any.
    pub params: Option<TensorId>,
    /// Width D of x.
    pub dim: usize,
}

impl LikelihoodHead {
    /// The built-in count likelihood this head is, if it is one: those run their rows in
    /// blocks and their dispersion's gradient by blocks of genes.
    fn count_model(&self) -> Option<CountModel> {
        match &self.choice {
            LikelihoodChoice::Builtin(l) => l.count_model(),
            LikelihoodChoice::Custom(_) => None,
        }
    }

    /// Decoder outputs per data row.
    pub fn out_width(&self) -> usize {
        self.choice.info().outputs_per_dim() * self.dim
    }

    /// Cache values per decoder row ([`LikelihoodInfo::cache_per_dim`] x D).
    pub fn cache_width(&self) -> usize {
        self.choice.info().cache_per_dim() * self.dim
    }

    fn own_params<'p, T>(&self, params: &'p [T]) -> &'p [T] {
        self.params.map_or(&[], |t| t.of(params))
    }

    /// log p(x|a) per decoder row, in parallel over rows. Decoder row r belongs to data row
    /// r / samples. `cache` receives what the likelihood keeps for its backward pass.
    ///
    /// ```
    /// use elbo::{Vae, VaeConfig};
    /// let vae = Vae::new(VaeConfig::mnist().input_dim(2).hidden(&[]).latent_dim(1))?;
    /// let params: Vec<f64> = vae.init_params(0);
    /// let (x, a) = ([1.0, 0.0], [0.0, 0.0]);                // one row, one sample
    /// let (mut logp, mut cache) = ([0.0], [0.0; 2]);
    /// vae.likelihood.forward(&params, &x, &a, 1, &mut logp, &mut cache, 1)?;
    /// assert!((logp[0] - 2.0 * 0.5f64.ln()).abs() < 1e-12); // two Bernoulli pixels at logit 0
    /// let (mut da, mut grads) = ([0.0; 2], vec![0.0; vae.num_params()]);
    /// vae.likelihood.backward(&params, &x, &a, &cache, 1, 1.0, None, &mut da, &mut grads, 1)?;
    /// assert_eq!(da, [-0.5, 0.5]);                          // sigmoid(a) - x
    /// # Ok::<(), elbo::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn forward<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        a: &[T],
        samples: usize,
        logp: &mut [T],
        cache: &mut [T],
        dec_rows: usize,
    ) -> Result<()> {
        let (d, w, cw) = (self.dim, self.out_width(), self.cache_width());
        self.check(params, x, a, samples, dec_rows)?;
        holds("log-likelihood per row", logp, dec_rows, 1)?;
        holds("likelihood cache", cache, dec_rows, cw)?;
        let own = self.own_params(params);
        if let Some(m) = self.count_model() {
            // Blocks of rows in parallel, each computed together (the dispersion's per-gene
            // terms once per block): each row's values are the same however rows are grouped.
            let rb = counts::ROW_BLOCK;
            let (cache, logp) = (
                par::Disjoint::new(&mut cache[..dec_rows * cw]),
                par::Disjoint::new(&mut logp[..dec_rows]),
            );
            par::for_each_task(dec_rows.div_ceil(rb), |blk| {
                let (r0, r1) = (blk * rb, ((blk + 1) * rb).min(dec_rows));
                // SAFETY: block blk alone takes rows r0..r1 of the cache and of logp.
                let (c, lp) = unsafe { (cache.piece(r0 * cw, r1 * cw), logp.piece(r0, r1)) };
                let x_of = |i: usize| {
                    let xr = (r0 + i) / samples;
                    &x[xr * d..(xr + 1) * d]
                };
                counts::log_prob_rows(m, own, x_of, &a[r0 * w..r1 * w], c, lp);
            });
            return Ok(());
        }
        let lik = self.choice.as_dyn::<T>();
        par::for_each_row_with_scalar(
            &mut cache[..dec_rows * cw],
            cw,
            &mut logp[..dec_rows],
            |r, c, lp| {
                let xr = &x[(r / samples) * d..(r / samples + 1) * d];
                *lp = lik.log_prob(own, xr, &a[r * w..(r + 1) * w], c);
            },
        );
        Ok(())
    }

    /// The sizes every pass needs: the parameters hold its tensor, `x` the data rows of
    /// `dec_rows` decoder rows (`samples` per data row), `a` the decoder rows.
    fn check<T>(
        &self,
        params: &[T],
        x: &[T],
        a: &[T],
        samples: usize,
        dec_rows: usize,
    ) -> Result<()> {
        if samples == 0 {
            return Err(Error::config(
                "samples per data point",
                0,
                "must be at least 1",
            ));
        }
        if let Some(t) = self.params {
            t.get(params)?;
        }
        holds("data rows", x, dec_rows.div_ceil(samples), self.dim)?;
        holds("decoder output", a, dec_rows, self.out_width())
    }

    /// Writes dL/da for L = -scale * sum_r c_r log p(x|a_r) into `da` (c_r = `row_weights[r]`,
    /// or 1 when `None`), and dL/d(its parameters) into `grads`, by the likelihood's
    /// [`grad_output`](DecoderLikelihood::grad_output) and
    /// [`grad_params`](DecoderLikelihood::grad_params). `cache` is what
    /// [`forward`](Self::forward) left there for the same `a`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        a: &[T],
        cache: &[T],
        samples: usize,
        scale: T,
        row_weights: Option<&[T]>,
        da: &mut [T],
        grads: &mut [T],
        dec_rows: usize,
    ) -> Result<()> {
        let (d, w, cw) = (self.dim, self.out_width(), self.cache_width());
        self.check(params, x, a, samples, dec_rows)?;
        holds("likelihood cache", cache, dec_rows, cw)?;
        holds("output gradient", da, dec_rows, w)?;
        if let Some(rw) = row_weights {
            holds("row weights", rw, dec_rows, 1)?;
        }
        if let Some(t) = self.params {
            t.get(grads)?;
        }
        let lik = self.choice.as_dyn::<T>();
        let own = self.own_params(params);
        let weight = |r: usize| row_weights.map_or(scale, |wr| scale * wr[r]);
        par::for_each_row(&mut da[..dec_rows * w], w, |r, dr| {
            let xr = &x[(r / samples) * d..(r / samples + 1) * d];
            let (ar, cr) = (&a[r * w..(r + 1) * w], &cache[r * cw..(r + 1) * cw]);
            lik.grad_output(own, xr, ar, cr, weight(r), dr);
        });
        if let Some(t) = self.params {
            let (own, dp) = (t.of(params), t.of_mut(grads));
            dp.fill(T::zero());
            if let Some(m) = self.count_model() {
                // Blocks of genes in parallel, each summing over the rows in order: the same
                // sums as the serial loop below, whatever the thread count.
                par::for_each_piece(dp, 256, |g0, piece| {
                    for r in 0..dec_rows {
                        let cr = &cache[r * cw..(r + 1) * cw];
                        counts::grad_params_genes(m, d, cr, weight(r), g0, piece);
                    }
                });
                return Ok(());
            }
            // Serial over rows, in order: the sum does not depend on the thread count.
            for r in 0..dec_rows {
                let xr = &x[(r / samples) * d..(r / samples + 1) * d];
                let (ar, cr) = (&a[r * w..(r + 1) * w], &cache[r * cw..(r + 1) * cw]);
                lik.grad_params(own, xr, ar, cr, weight(r), dp);
            }
        }
        Ok(())
    }
}
