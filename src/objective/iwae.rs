//! The importance-weighted bound (Burda, Grosse and Salakhutdinov, 2015) and the importance-
//! sampled estimate of log p(x).
//!
//! With z_i = mu + exp(v/2) eps_i, i = 1..k, and log weights
//!
//! ```text
//! log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)
//!         = log p(x|z_i) - 1/2 sum_j (z_ij^2 - eps_ij^2 - v_j)      (the ln 2 pi terms cancel)
//! ```
//!
//! the bound is L_k = E[log (1/k) sum_i w_i] <= log p(x); L_1 is the ELBO and L_k rises to
//! log p(x) as k grows. Its value for one draw is a log-sum-exp, computed stably as
//! `m + ln sum_i exp(log w_i - m)` with m the largest log weight.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::kernels::pool::Parallelism;
use crate::kernels::scalar::Float;
use crate::model::Vae;
use crate::objective::elbo::{BatchElbo, Elbo, Workspace};
use crate::rng::{Purpose, fill_normal, stream};

/// The importance-weighted bound of a [`Vae`], forward and backward.
///
/// ```
/// use elbo::objective::{Iwae, Workspace};
/// use elbo::{Vae, VaeConfig};
/// let vae = Vae::new(VaeConfig::mnist().input_dim(3).hidden(&[4]).latent_dim(1))?;
/// let params: Vec<f64> = vae.init_params(0);
/// let mut ws = Workspace::<f64>::new(&vae, 1, 8, 1)?;      // one point, k = 8 draws
/// ws.x.copy_from_slice(&[0.0, 1.0, 0.5]);
/// elbo::rng::fill_normal(&mut elbo::rng::stream(0, elbo::rng::Purpose::Eval, 0), &mut ws.eps);
/// let r = Iwae::new(&vae).forward(&params, &mut ws, 1)?;
/// // log (1/k) sum w_i >= (1/k) sum log w_i, draw by draw (Jensen).
/// let mean_log_w = ws.log_w.iter().sum::<f64>() / 8.0;
/// assert!(r.bound >= mean_log_w);
/// let mut grads = vec![0.0; vae.num_params()];
/// Iwae::new(&vae).backward(&params, &mut ws, 1, &mut grads)?;
/// # Ok::<(), elbo::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Iwae<'a> {
    /// The model.
    pub vae: &'a Vae,
}

/// Batch means from one forward pass of the importance-weighted bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IwBatch {
    /// Mean over data points of log (1/k) sum_i w_i.
    pub bound: f64,
    /// The ELBO's terms from the same samples (recon averaged over the k draws).
    pub elbo: BatchElbo,
}

/// Writes log w_i for decoder rows `0 .. rows * samples` into `ws.log_w`, from the last
/// forward pass.
fn log_weights<T: Float>(ws: &mut Workspace<T>, zd: usize, rows: usize) {
    let l = ws.samples();
    let half = T::of(0.5);
    for r in 0..rows * l {
        let lv = &ws.stats[(r / l) * 2 * zd + zd..(r / l + 1) * 2 * zd];
        let (z, e) = (&ws.z[r * zd..(r + 1) * zd], &ws.eps[r * zd..(r + 1) * zd]);
        let mut s = T::zero();
        for j in 0..zd {
            s += z[j] * z[j] - e[j] * e[j] - lv[j];
        }
        ws.log_w[r] = ws.log_px_z[r] - half * s;
    }
}

/// log (1/n) sum exp(v), stably, in f64.
pub fn log_mean_exp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += (x - m).exp();
        n += 1;
    }
    m + (s / n as f64).ln()
}

impl<'a> Iwae<'a> {
    /// Wraps a model.
    pub fn new(vae: &'a Vae) -> Self {
        Iwae { vae }
    }

    /// Runs the model on `ws.x` with noise `ws.eps` (k = `ws.samples()` draws per point),
    /// computes the log weights and stores the self-normalised weights
    /// w~_i = w_i / sum_j w_j in `ws.weights` for the backward pass.
    ///
    /// Sizes are checked as for [`Elbo::forward`].
    pub fn forward<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
    ) -> Result<IwBatch> {
        ws.check_call(self.vae, params, rows)?;
        self.forward_unchecked(params, ws, rows)
    }

    /// [`forward`](Self::forward) once its sizes are checked.
    pub(crate) fn forward_unchecked<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
    ) -> Result<IwBatch> {
        let elbo = Elbo::new(self.vae).forward_unchecked(params, ws, rows)?;
        let zd = self.vae.latent_dim();
        log_weights(ws, zd, rows);
        let k = ws.samples();
        let mut bound = 0.0;
        for b in 0..rows {
            let lw = &ws.log_w[b * k..(b + 1) * k];
            let m = lw.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.as_f64()));
            let sum: f64 = lw.iter().map(|v| (v.as_f64() - m).exp()).sum();
            bound += m + (sum / k as f64).ln();
            for i in 0..k {
                ws.weights[b * k + i] = T::of((ws.log_w[b * k + i].as_f64() - m).exp() / sum);
            }
        }
        Ok(IwBatch {
            bound: bound / rows as f64,
            elbo,
        })
    }

    /// Writes into `grads` the gradient of -(1/B) sum_b log (1/k) sum_i w_bi (eps held fixed),
    /// after [`forward`](Self::forward) on the same workspace. With w~ the self-normalised
    /// weights, d/d(log w_i) of the loss is -w~_i / B, and log w_i depends on the parameters
    /// through
    ///
    /// - the decoder output: d log p(x|z_i)/da, weighted by w~_i / B (likelihood backward);
    /// - z_i via the prior: d log p(z_i)/dz_i = -z_i, so dL/dz_i += w~_i z_i / B;
    /// - z_i -> (mu, v) by reparameterisation, as for the ELBO;
    /// - v directly via -log q(z_i|x) = 1/2 sum_j (eps_ij^2 + v_j + ln 2 pi), eps fixed:
    ///   dL/dv_j += -(1/B) sum_i w~_i / 2 = -1/(2B).
    ///
    /// Sizes are checked as for [`Elbo::backward`].
    pub fn backward<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
        grads: &mut [T],
    ) -> Result<()> {
        ws.check_backward(self.vae, params, rows, grads)?;
        self.backward_unchecked(params, ws, rows, rows, grads)
    }

    /// [`backward`](Self::backward) once its sizes are checked.
    pub(crate) fn backward_unchecked<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
        mean_over: usize,
        grads: &mut [T],
    ) -> Result<()> {
        // The bound summed over these rows, over `mean_over` (see Elbo's).
        let elbo = Elbo::new(self.vae);
        let inv_b = T::one() / T::of(mean_over as f64);
        elbo.backward_decoder(params, ws, rows, inv_b, true, grads)?;
        let (zd, k) = (self.vae.latent_dim(), ws.samples());
        for r in 0..rows * k {
            let c = ws.weights[r] * inv_b;
            for j in 0..zd {
                ws.dz[r * zd + j] += c * ws.z[r * zd + j];
            }
        }
        let reparam = elbo.reparam(ws);
        let dstats = &mut ws.dstats[..rows * 2 * zd];
        dstats.fill(T::zero());
        reparam.backward(&ws.stats, &ws.eps, &ws.dz, dstats, rows)?;
        let half = T::of(0.5) * inv_b;
        for b in 0..rows {
            for j in 0..zd {
                dstats[b * 2 * zd + zd + j] -= half;
            }
        }
        elbo.backward_encoder(params, ws, rows, grads)
    }
}

/// Importance-sampled estimates of log p(x) over a dataset, with the ELBO beside them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MarginalReport {
    /// Data points used.
    pub points: usize,
    /// E_q[log p(x|z)] (averaged over all draws) per point, then over points.
    pub recon: f64,
    /// Analytic KL(q(z|x) || p(z)), mean over points.
    pub kl: f64,
    /// recon - kl.
    pub elbo: f64,
    /// One estimate per k.
    pub estimates: Vec<KEstimate>,
    /// log p(x) estimate with the largest k minus the ELBO: an estimate of
    /// KL(q(z|x) || p(z|x)), averaged over points.
    pub gap: f64,
    /// Per point, the estimate for each k (in the order of `estimates`); not serialised.
    #[serde(skip)]
    pub per_point: Vec<Vec<f64>>,
}

/// The k-sample estimate log (1/k) sum_i w_i, averaged over points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KEstimate {
    /// Samples per point.
    pub k: usize,
    /// Mean over points.
    pub log_px: f64,
    /// Standard error of that mean across points.
    pub std_err: f64,
}

/// Samples drawn per forward pass when estimating log p(x): wide enough for efficient matrix
/// products, small enough for the cache.
pub(crate) const CHUNK: usize = 250;

/// For the data point in `ws.x` (a workspace of 1 row and `chunk` samples), `kmax` log
/// importance weights log p(x, z_i) - log q(z_i|x), with z_i drawn from the stream of
/// (`seed`, `index`); returns (mean log p(x|z_i), KL, the log weights).
pub(crate) fn point_log_weights<T: Float>(
    vae: &Vae,
    params: &[T],
    ws: &mut Workspace<T>,
    kmax: usize,
    seed: u64,
    index: u64,
) -> Result<(f64, f64, Vec<f64>)> {
    let (zd, chunk) = (vae.latent_dim(), ws.samples());
    let mut rng = stream(seed, Purpose::Importance, index);
    let mut log_w = Vec::with_capacity(kmax);
    let (mut recon, mut kl) = (0.0, 0.0);
    let elbo = Elbo::new(vae);
    while log_w.len() < kmax {
        fill_normal(&mut rng, &mut ws.eps[..chunk * zd]);
        elbo.forward_unchecked(params, ws, 1)?;
        log_weights(ws, zd, 1);
        let take = chunk.min(kmax - log_w.len());
        recon += ws.log_px_z[..take].iter().map(|v| v.as_f64()).sum::<f64>();
        log_w.extend(ws.log_w[..take].iter().map(|v| v.as_f64()));
        kl = ws.kl[0].as_f64();
    }
    Ok((recon / kmax as f64, kl, log_w))
}

/// Estimates log p(x) for each k in `ks` (nested: the k-sample estimate uses the first k of
/// max(ks) draws per point) on `data`, in parallel over points on `parallelism`'s threads. Each
/// point's draws come from its own stream, so results do not depend on the thread count.
///
/// ```
/// use elbo::{Parallelism, Vae, VaeConfig};
/// let data = elbo::data::shapes::generate(0, 0, 4)?;
/// let vae = Vae::new(VaeConfig::mnist().latent_dim(2))?;
/// let params: Vec<f32> = vae.init_params(0);
/// let r = elbo::objective::estimate_log_marginal(&vae, &params, &data, &[1, 50], 0,
///     &Parallelism::threads(1)?)?;
/// // One estimate per k, each the mean over points with its standard error.
/// assert_eq!((r.estimates[1].k, r.points), (50, 4));
/// assert!(r.estimates.iter().all(|e| e.log_px.is_finite() && e.std_err >= 0.0));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn estimate_log_marginal<T: Float>(
    vae: &Vae,
    params: &[T],
    data: &Dataset,
    ks: &[usize],
    seed: u64,
    parallelism: &Parallelism,
) -> Result<MarginalReport> {
    let kmax = ks.iter().copied().max().unwrap_or(0);
    if kmax == 0 || ks.contains(&0) {
        return Err(Error::config(
            "importance samples k",
            format!("{ks:?}"),
            "every k must be at least 1",
        ));
    }
    if params.len() != vae.num_params() {
        return Err(Error::shape("parameters", vae.num_params(), params.len()));
    }
    data.check_for(vae.input_dim(), &vae.likelihood.choice.domain())?;
    let chunk = CHUNK.min(kmax);
    let d = vae.input_dim();
    let first = Workspace::<T>::new(vae, 1, chunk, 1)?;
    let per_point: Vec<(f64, f64, Vec<f64>)> = parallelism.run(|| {
        (0..data.len())
            .into_par_iter()
            .map_init(
                || first.clone(),
                |ws, p| {
                    data.gather_unchecked(&[p], &mut ws.x[..d]);
                    point_log_weights(vae, params, ws, kmax, seed, p as u64)
                },
            )
            .collect::<Result<_>>()
    })?;
    let n = per_point.len() as f64;
    let recon = per_point.iter().map(|p| p.0).sum::<f64>() / n;
    let kl = per_point.iter().map(|p| p.1).sum::<f64>() / n;
    let mut ks_sorted = ks.to_vec();
    ks_sorted.sort_unstable();
    ks_sorted.dedup();
    let points: Vec<Vec<f64>> = per_point
        .iter()
        .map(|p| {
            ks_sorted
                .iter()
                .map(|&k| log_mean_exp(p.2[..k].iter().copied()))
                .collect()
        })
        .collect();
    let estimates: Vec<KEstimate> = ks_sorted
        .iter()
        .enumerate()
        .map(|(ki, &k)| {
            let vals: Vec<f64> = points.iter().map(|p| p[ki]).collect();
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            KEstimate {
                k,
                log_px: mean,
                std_err: (var / n).sqrt(),
            }
        })
        .collect();
    let best = estimates.last().expect("at least one k").log_px;
    Ok(MarginalReport {
        points: data.len(),
        recon,
        kl,
        elbo: recon - kl,
        gap: best - (recon - kl),
        estimates,
        per_point: points,
    })
}
