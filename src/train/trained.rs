//! A trained model: the structure, its parameters and the threads to run on, with everything
//! a user asks of a VAE after training as `&self` methods.
//!
//! What training hands out ([`Trainer::into_model`](crate::Trainer::into_model),
//! [`fit`](crate::fit)), and what a model file loads into. It evaluates the ELBO and the
//! importance-weighted estimate from [`crate::objective`].

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use ndarray::{Array1, Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::pool::Parallelism;
use crate::kernels::scalar::Float;
use crate::model::{CustomLikelihood, Vae};
use crate::objective::iwae::{CHUNK, log_mean_exp, point_log_weights};
use crate::objective::{Elbo, Workspace};
use crate::rng::{Purpose, fill_normal, stream};
use crate::train::checkpoint;

/// A batch of rows handed to a [`TrainedVae`]: a flat slice (its width is the one the method
/// needs) or an `ndarray` matrix (borrowed when it is in row-major order, else copied once).
#[derive(Clone, Debug)]
pub struct Rows<'a, T: Clone> {
    values: Cow<'a, [T]>,
    cols: Option<usize>,
}

impl<'a, T: Clone> From<&'a [T]> for Rows<'a, T> {
    fn from(values: &'a [T]) -> Self {
        Rows {
            values: Cow::Borrowed(values),
            cols: None,
        }
    }
}

impl<'a, T: Clone> From<&'a Vec<T>> for Rows<'a, T> {
    fn from(values: &'a Vec<T>) -> Self {
        values.as_slice().into()
    }
}

impl<'a, T: Clone> From<ArrayView2<'a, T>> for Rows<'a, T> {
    fn from(m: ArrayView2<'a, T>) -> Self {
        let cols = Some(m.ncols());
        let values = match m.to_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(m.iter().cloned().collect()),
        };
        Rows { values, cols }
    }
}

impl<'a, T: Clone> From<&'a Array2<T>> for Rows<'a, T> {
    fn from(m: &'a Array2<T>) -> Self {
        m.view().into()
    }
}

impl<T: Float> Rows<'_, T> {
    /// The values and the number of rows, for rows of `width`; every value must be finite.
    fn check(&self, width: usize, what: &str) -> Result<(&[T], usize)> {
        if let Some(c) = self.cols
            && c != width
        {
            return Err(Error::shape(what, format!("{width} columns"), c));
        }
        let v = &self.values[..];
        if v.is_empty() || !v.len().is_multiple_of(width) {
            return Err(Error::shape(
                what,
                format!("a non-empty multiple of {width} values"),
                v.len(),
            ));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidData(format!(
                "{what}: row {}, column {} is {}",
                i / width,
                i % width,
                v[i]
            )));
        }
        Ok((v, v.len() / width))
    }
}

/// The posterior q(z|x) = N(means, diag(variances)) of each input row.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Posterior<T> {
    /// `rows x Z`.
    pub means: Array2<T>,
    /// `rows x Z`, each exp(log-variance).
    pub variances: Array2<T>,
}

/// Draws from the model: latent codes z ~ N(0, I) and the decoder's mean for each.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Samples<T> {
    /// `n x Z`.
    pub z: Array2<T>,
    /// `n x D`: the mean of p(x|z).
    pub means: Array2<T>,
}

/// The ELBO's two terms for one data point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointElbo {
    /// E_q[log p(x|z)], estimated with the draws asked for.
    pub recon: f64,
    /// KL(q(z|x) || p(z)), exact.
    pub kl: f64,
}

impl PointElbo {
    /// recon - KL.
    pub fn elbo(&self) -> f64 {
        self.recon - self.kl
    }
}

/// A VAE with trained parameters, ready to encode, decode, sample and evaluate. Every method
/// takes `&self`, checks its input and returns [`Error::Shape`] or [`Error::InvalidData`]
/// rather than panicking; results do not depend on the number of threads.
///
/// ```
/// use elbo::{Dataset, Parallelism, TrainConfig, TrainedVae, VaeConfig};
/// let pixels: Vec<u8> = (0..64 * 4).map(|i| (i * 37 % 256) as u8).collect();
/// let data = Dataset::from_bytes(64, 4, pixels)?;
/// let config = VaeConfig::mnist().input_dim(4).encoder_hidden(vec![8]).latent_dim(2).decoder_hidden(vec![8]);
/// let model: TrainedVae<f32> = elbo::fit(config,
///     TrainConfig::default().epochs(2).batch_size(16), &data)?;
/// let x = [0.0f32, 0.5, 1.0, 0.25];
/// let q = model.encode(&x[..])?;                     // one row of width 4
/// assert_eq!(q.means.dim(), (1, 2));
/// let back = model.decode(q.means.view())?;          // an ndarray view works too
/// assert_eq!(back.dim(), (1, 4));
/// let drawn = model.sample(3, 7)?;
/// assert_eq!(drawn.means.dim(), (3, 4));
/// let lp = model.log_px(&x[..], 100, 0)?;            // importance-sampled, k = 100
/// let terms = model.elbo(&x[..], 1, 0)?;
/// assert!(lp[0] >= terms[0].elbo() - 1e-3);          // log p(x) >= ELBO, up to noise
/// # Ok::<(), elbo::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TrainedVae<T: Float> {
    vae: Vae,
    params: Vec<T>,
    parallelism: Parallelism,
}

impl<T: Float> TrainedVae<T> {
    /// A model from its structure and parameters (which must fit it and be finite), run on
    /// `parallelism`'s threads.
    pub fn new(vae: Vae, params: Vec<T>, parallelism: &Parallelism) -> Result<Self> {
        if params.len() != vae.num_params() {
            return Err(Error::shape("parameters", vae.num_params(), params.len()));
        }
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidData(format!(
                "parameter {i} is {}",
                params[i]
            )));
        }
        Ok(TrainedVae {
            vae,
            params,
            parallelism: parallelism.clone(),
        })
    }

    /// Reads a model file (written by [`save`](Self::save), `elbo train` or a checkpoint).
    pub fn load(path: impl AsRef<Path>, parallelism: &Parallelism) -> Result<Self> {
        let l = checkpoint::load::<T>(path)?;
        Self::new(l.vae, l.params, parallelism)
    }

    /// Reads a model file whose model has a user's likelihood, given that likelihood.
    pub fn load_with_likelihood(
        path: impl AsRef<Path>,
        likelihood: Arc<dyn CustomLikelihood>,
        parallelism: &Parallelism,
    ) -> Result<Self> {
        let l = checkpoint::load_with_likelihood::<T>(path, likelihood)?;
        Self::new(l.vae, l.params, parallelism)
    }

    /// Writes the model to `path` atomically (safetensors, with its configuration).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        checkpoint::save(path.as_ref(), &self.vae, &self.params, &[])
    }

    /// The structure.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// The parameters, laid out by [`Vae::layout`].
    pub fn params(&self) -> &[T] {
        &self.params
    }

    /// The threads it runs on.
    pub fn parallelism(&self) -> &Parallelism {
        &self.parallelism
    }

    /// Width D of a data row.
    pub fn input_dim(&self) -> usize {
        self.vae.input_dim()
    }

    /// Width Z of a latent code.
    pub fn latent_dim(&self) -> usize {
        self.vae.latent_dim()
    }

    /// q(z|x) for each row of `x` (`rows x D`).
    pub fn encode<'a>(&self, x: impl Into<Rows<'a, T>>) -> Result<Posterior<T>> {
        let x = x.into();
        let (x, rows) = x.check(self.input_dim(), "input")?;
        let zd = self.latent_dim();
        let threads = self.parallelism.count();
        let (mu, lv) = self
            .parallelism
            .run(|| self.vae.encode(&self.params, x, threads))?;
        let var = lv.iter().map(|v| v.exp()).collect();
        Ok(Posterior {
            means: to_matrix(mu, rows, zd)?,
            variances: to_matrix(var, rows, zd)?,
        })
    }

    /// The mean of p(x|z) for each row of `z` (`rows x Z`).
    pub fn decode<'a>(&self, z: impl Into<Rows<'a, T>>) -> Result<Array2<T>> {
        let z = z.into();
        let (z, rows) = z.check(self.latent_dim(), "latent codes")?;
        let threads = self.parallelism.count();
        let means = self
            .parallelism
            .run(|| self.vae.decode_mean(&self.params, z, threads))?;
        to_matrix(means, rows, self.input_dim())
    }

    /// `n` draws z ~ N(0, I) from the stream of `seed`, and their decoded means.
    pub fn sample(&self, n: usize, seed: u64) -> Result<Samples<T>> {
        if n == 0 {
            return Err(Error::config("samples", 0, "must be at least 1"));
        }
        let zd = self.latent_dim();
        let len = n
            .checked_mul(zd)
            .filter(|&l| l <= isize::MAX as usize / 8)
            .ok_or_else(|| Error::config("samples", n, "too many to hold in memory"))?;
        let mut z = vec![T::zero(); len];
        // The stream `elbo sample` draws from, so the two give the same codes for a seed.
        fill_normal(&mut stream(seed, Purpose::Eval, u64::MAX - 1), &mut z);
        let means = self.decode(&z)?;
        Ok(Samples {
            z: to_matrix(z, n, zd)?,
            means,
        })
    }

    /// Each row of `x` decoded from its posterior mean: the model's reconstruction.
    pub fn reconstruct<'a>(&self, x: impl Into<Rows<'a, T>>) -> Result<Array2<T>> {
        let q = self.encode(x)?;
        self.decode(q.means.view())
    }

    /// The ELBO's terms for each row of `x`, the reconstruction term estimated with `samples`
    /// draws from the stream of `seed`. `x` must hold values the likelihood can model.
    pub fn elbo<'a>(
        &self,
        x: impl Into<Rows<'a, T>>,
        samples: usize,
        seed: u64,
    ) -> Result<Vec<PointElbo>> {
        let x = x.into();
        let (x, _) = x.check(self.input_dim(), "input")?;
        let threads = self.parallelism.count();
        let terms = self
            .parallelism
            .run(|| Elbo::new(&self.vae).per_point(&self.params, x, samples, seed, threads))?;
        Ok(terms
            .into_iter()
            .map(|(recon, kl)| PointElbo { recon, kl })
            .collect())
    }

    /// log p(x) for each row of `x`, estimated by importance sampling with `k` draws from q:
    /// log (1/k) sum_i p(x, z_i) / q(z_i|x), a lower bound that tightens as k grows. Row i's
    /// draws come from the stream of (`seed`, i), whatever the thread count.
    pub fn log_px<'a>(
        &self,
        x: impl Into<Rows<'a, T>>,
        k: usize,
        seed: u64,
    ) -> Result<Array1<f64>> {
        if k == 0 {
            return Err(Error::config(
                "importance samples k",
                0,
                "must be at least 1",
            ));
        }
        let x = x.into();
        let (x, rows) = x.check(self.input_dim(), "input")?;
        Elbo::new(&self.vae).check_batch(x)?;
        let (d, chunk) = (self.input_dim(), CHUNK.min(k));
        let (vae, params) = (&self.vae, &self.params[..]);
        let first = Workspace::<T>::new(vae, 1, chunk, 1)?;
        let estimates: Vec<f64> = self.parallelism.run(|| {
            (0..rows)
                .into_par_iter()
                .map_init(
                    || first.clone(),
                    |ws, i| {
                        ws.x[..d].copy_from_slice(&x[i * d..(i + 1) * d]);
                        let (_, _, log_w) = point_log_weights(vae, params, ws, k, seed, i as u64)?;
                        Ok(log_mean_exp(log_w.into_iter()))
                    },
                )
                .collect::<Result<_>>()
        })?;
        Ok(Array1::from(estimates))
    }
}

fn to_matrix<T>(v: Vec<T>, rows: usize, cols: usize) -> Result<Array2<T>> {
    let len = v.len();
    Array2::from_shape_vec((rows, cols), v)
        .map_err(|_| Error::shape("result", format!("{rows} x {cols} values"), len))
}
