//! Decoder likelihoods p(x|z), as functions of the decoder's output `a` (one value per pixel or
//! dimension). Each gives log p(x|z) per row and the gradient of -log p with respect to `a`.

use serde::{Deserialize, Serialize};

use crate::data::ValueDomain;
use crate::error::{Error, Result};
use crate::kernels::par;
use crate::kernels::scalar::Float;
use crate::model::params::TensorId;

/// ln(2 pi).
const LN_2PI: f64 = 1.837_877_066_409_345_5;

fn unit_interval(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

/// Which p(x|z) the decoder parameterises.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
}

impl std::str::FromStr for Likelihood {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "bernoulli" => Likelihood::Bernoulli,
            "gaussian" => Likelihood::Gaussian { variance: 1.0 },
            "gaussian-learned" | "gaussian-learned-variance" => Likelihood::GaussianLearnedVariance,
            _ => {
                return Err(Error::config(
                    "likelihood",
                    s,
                    "expected one of bernoulli, gaussian, gaussian-learned",
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
        }
    }
}

/// A likelihood bound to its parameters (the learned log-variance, if any).
#[derive(Clone, Copy, Debug)]
pub struct LikelihoodHead {
    /// Which likelihood.
    pub kind: Likelihood,
    /// The learned per-dimension log-variance, `dim` values.
    pub log_variance: Option<TensorId>,
    /// Width of x.
    pub dim: usize,
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

    /// Whether data values suit it: Bernoulli needs [0, 1], the Gaussians any finite value.
    pub fn check_value(&self, v: f64) -> bool {
        match self {
            Likelihood::Bernoulli => unit_interval(v),
            _ => v.is_finite(),
        }
    }

    /// The values it can model, as the data layer checks them.
    pub fn domain(&self) -> ValueDomain<'static> {
        match self {
            Likelihood::Bernoulli => ValueDomain {
                likelihood: self.to_string(),
                needs: "values in [0, 1]",
                accepts: &unit_interval,
                bytes_always_fit: true,
            },
            _ => ValueDomain {
                likelihood: self.to_string(),
                needs: "finite values",
                accepts: &f64::is_finite,
                bytes_always_fit: true,
            },
        }
    }
}

impl LikelihoodHead {
    /// log p(x|a) per decoder row, in parallel over rows. Decoder row r belongs to data row
    /// r / samples. For the Bernoulli, `cache` receives sigmoid(a), which the backward pass
    /// reuses (computed from the same e^-|a| as the softplus); other likelihoods leave it alone.
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
    ) {
        let d = self.dim;
        let kind = self.kind;
        let log_var = self.log_variance.map(|t| t.of(params));
        par::for_each_row_with_scalar(
            &mut cache[..dec_rows * d],
            d,
            &mut logp[..dec_rows],
            |r, sig, lp| {
                let xr = &x[(r / samples) * d..(r / samples + 1) * d];
                let ar = &a[r * d..(r + 1) * d];
                *lp = match kind {
                    Likelihood::Bernoulli => T::bernoulli_row(xr, ar, sig),
                    Likelihood::Gaussian { variance } => {
                        let sq = xr
                            .iter()
                            .zip(ar)
                            .fold(T::zero(), |s, (&x, &a)| s + (x - a) * (x - a));
                        let n = T::of(d as f64);
                        -T::of(0.5) * (sq / T::of(variance) + n * T::of(LN_2PI + variance.ln()))
                    }
                    Likelihood::GaussianLearnedVariance => {
                        let s = log_var.expect("learned variance has a tensor");
                        let mut acc = T::zero();
                        for j in 0..d {
                            let e = xr[j] - ar[j];
                            acc += e * e * (-s[j]).exp() + s[j] + T::of(LN_2PI);
                        }
                        -T::of(0.5) * acc
                    }
                };
            },
        );
    }

    /// Writes dL/da for L = -scale * sum_r c_r log p(x|a_r) into `da` (c_r = `row_weights[r]`,
    /// or 1 when `None`), and for the learned variance writes dL/ds into `grads`. `cache` is
    /// what [`forward`](Self::forward) left there for the same `a`.
    ///
    /// - Bernoulli:        d(-log p)/da = sigmoid(a) - x     (sigmoid(a) from the cache)
    /// - Gaussian (fixed): d(-log p)/da = (a - x) / variance
    /// - Gaussian learned: d(-log p)/da = (a - x) exp(-s),
    ///   d(-log p)/ds = (1 - (x - a)^2 exp(-s)) / 2, summed over rows
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
    ) {
        let d = self.dim;
        let kind = self.kind;
        let log_var = self.log_variance.map(|t| t.of(params));
        let weight = |r: usize| row_weights.map_or(scale, |w| scale * w[r]);
        par::for_each_row(&mut da[..dec_rows * d], d, |r, dr| {
            let scale = weight(r);
            let xr = &x[(r / samples) * d..(r / samples + 1) * d];
            let ar = &a[r * d..(r + 1) * d];
            match kind {
                Likelihood::Bernoulli => {
                    let sig = &cache[r * d..(r + 1) * d];
                    for j in 0..d {
                        dr[j] = scale * (sig[j] - xr[j]);
                    }
                }
                Likelihood::Gaussian { variance } => {
                    let inv = scale / T::of(variance);
                    for j in 0..d {
                        dr[j] = inv * (ar[j] - xr[j]);
                    }
                }
                Likelihood::GaussianLearnedVariance => {
                    let s = log_var.expect("learned variance has a tensor");
                    for j in 0..d {
                        dr[j] = scale * (ar[j] - xr[j]) * (-s[j]).exp();
                    }
                }
            }
        });
        if let (Likelihood::GaussianLearnedVariance, Some(t)) = (kind, self.log_variance) {
            let s = t.of(params);
            let ds = t.of_mut(grads);
            ds.fill(T::zero());
            for r in 0..dec_rows {
                let scale = weight(r);
                let xr = &x[(r / samples) * d..(r / samples + 1) * d];
                let ar = &a[r * d..(r + 1) * d];
                for j in 0..d {
                    let e = xr[j] - ar[j];
                    ds[j] += scale * T::of(0.5) * (T::one() - e * e * (-s[j]).exp());
                }
            }
        }
    }
}
