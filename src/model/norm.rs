//! Batch normalisation and dropout: the two layers scVI puts between its dense layers, usable in
//! any model.

use crate::error::Result;
use crate::kernels::scalar::Float;
use crate::model::params::{Layout, TensorId};
use crate::model::shape::holds;

/// The epsilon added to the variance: scVI's 1e-3 (PyTorch's default is 1e-5).
pub const BATCH_NORM_EPS: f64 = 1e-3;

/// The weight of each batch in the running averages (scVI: 0.01).
pub const BATCH_NORM_MOMENTUM: f64 = 0.01;

/// Batch normalisation of `width` features, as `torch.nn.BatchNorm1d(eps = 1e-3, momentum =
/// 0.01)`. While training, each feature is normalised with its batch mean and (biased)
/// variance; for evaluation, with running averages of them, which training updates after every
/// step and the model file keeps (they sit in the parameter buffer with a zero gradient).
#[derive(Clone, Debug)]
pub struct BatchNorm {
    /// Features.
    pub width: usize,
    /// Scale gamma (initially 1).
    pub gamma: TensorId,
    /// Shift beta (initially 0).
    pub beta: TensorId,
    /// Running mean (initially 0): not trained by gradient.
    pub running_mean: TensorId,
    /// Running unbiased variance (initially 1): not trained by gradient.
    pub running_var: TensorId,
}

/// Per-feature statistics of the last training batch: what the backward pass and the running
/// averages need.
#[derive(Clone, Debug, Default)]
pub struct BatchStats {
    /// Batch mean per feature.
    pub mean: Vec<f64>,
    /// 1 / sqrt(batch variance + eps) per feature.
    pub inv_std: Vec<f64>,
    /// Rows of the batch.
    pub rows: usize,
    /// Per-feature sums, kept between passes so that a training step allocates nothing.
    scratch: Vec<f64>,
}

impl BatchStats {
    /// The kept scratch, zeroed, as room for two per-feature accumulators of `width`; give it
    /// back with [`put_scratch`](Self::put_scratch).
    fn take_scratch(&mut self, width: usize) -> Vec<f64> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.resize(2 * width, 0.0);
        scratch
    }

    fn put_scratch(&mut self, scratch: Vec<f64>) {
        self.scratch = scratch;
    }
}

impl BatchNorm {
    /// Registers its four tensors, named `{name}.gamma`, `.beta`, `.running_mean`,
    /// `.running_var`.
    pub fn new(layout: &mut Layout, name: &str, width: usize) -> Self {
        BatchNorm {
            width,
            gamma: layout.push(format!("{name}.gamma"), &[width]),
            beta: layout.push(format!("{name}.beta"), &[width]),
            running_mean: layout.push(format!("{name}.running_mean"), &[width]),
            running_var: layout.push(format!("{name}.running_var"), &[width]),
        }
    }

    /// gamma = 1, beta = 0, running mean 0 and variance 1.
    pub fn init<T: Float>(&self, params: &mut [T]) -> Result<()> {
        self.gamma.get_mut(params)?.fill(T::one());
        self.beta.get_mut(params)?.fill(T::zero());
        self.running_mean.get_mut(params)?.fill(T::zero());
        self.running_var.get_mut(params)?.fill(T::one());
        Ok(())
    }

    /// The tensors that training must not move by gradient or weight decay.
    pub fn running(&self) -> [TensorId; 2] {
        [self.running_mean, self.running_var]
    }

    /// Training forward pass on `z` (`rows x width`, in place): per feature j,
    /// zhat = (z - m_j) / sqrt(v_j + eps) with the batch's mean m_j and biased variance v_j,
    /// kept in `normed`; then z = gamma_j zhat + beta_j. Sums run over rows in order, so the
    /// result does not depend on the thread count.
    pub fn forward_train<T: Float>(
        &self,
        params: &[T],
        z: &mut [T],
        normed: &mut [T],
        stats: &mut BatchStats,
        rows: usize,
    ) -> Result<()> {
        let w = self.width;
        holds("batch-norm input", z, rows, w)?;
        holds("batch-norm cache", normed, rows, w)?;
        let (gamma, beta) = (self.gamma.get(params)?, self.beta.get(params)?);
        let mut scratch = stats.take_scratch(w);
        let (sum, sq) = scratch.split_at_mut(w);
        for row in z[..rows * w].chunks_exact(w) {
            for ((s, q), &v) in sum.iter_mut().zip(sq.iter_mut()).zip(row) {
                let v = v.as_f64();
                *s += v;
                *q += v * v;
            }
        }
        let n = rows as f64;
        stats.rows = rows;
        stats.mean.clear();
        stats.inv_std.clear();
        for j in 0..w {
            let m = sum[j] / n;
            let var = (sq[j] / n - m * m).max(0.0);
            stats.mean.push(m);
            stats.inv_std.push(1.0 / (var + BATCH_NORM_EPS).sqrt());
        }
        stats.put_scratch(scratch);
        for (row, nrow) in z[..rows * w]
            .chunks_exact_mut(w)
            .zip(normed.chunks_exact_mut(w))
        {
            for j in 0..w {
                let zhat = (row[j].as_f64() - stats.mean[j]) * stats.inv_std[j];
                nrow[j] = T::of(zhat);
                row[j] = T::of(gamma[j].as_f64() * zhat + beta[j].as_f64());
            }
        }
        Ok(())
    }

    /// Evaluation forward pass on `z` (in place) with the running averages:
    /// z = gamma (z - running mean) / sqrt(running var + eps) + beta.
    pub fn forward_eval<T: Float>(&self, params: &[T], z: &mut [T], rows: usize) -> Result<()> {
        let w = self.width;
        holds("batch-norm input", z, rows, w)?;
        let (gamma, beta) = (self.gamma.get(params)?, self.beta.get(params)?);
        let (rm, rv) = (
            self.running_mean.get(params)?,
            self.running_var.get(params)?,
        );
        for row in z[..rows * w].chunks_exact_mut(w) {
            for j in 0..w {
                let inv = 1.0 / (rv[j].as_f64().max(0.0) + BATCH_NORM_EPS).sqrt();
                let zhat = (row[j].as_f64() - rm[j].as_f64()) * inv;
                row[j] = T::of(gamma[j].as_f64() * zhat + beta[j].as_f64());
            }
        }
        Ok(())
    }

    /// Training backward pass. On entry `g` holds dL/dy for y = gamma zhat + beta; on return,
    /// dL/dz. Writes dL/dgamma and dL/dbeta into `grads` (the running averages get 0):
    ///
    /// - dL/dbeta_j = sum_r g_rj,  dL/dgamma_j = sum_r g_rj zhat_rj;
    /// - dL/dz_rj = gamma_j / sqrt(v_j + eps) (g_rj - dL/dbeta_j / n - zhat_rj dL/dgamma_j / n),
    ///
    /// the last because the batch's mean and variance are themselves functions of every row
    /// of z: d zhat_r / d z_s = (1/sigma)([r = s] - 1/n - zhat_r zhat_s / n).
    pub fn backward_train<T: Float>(
        &self,
        params: &[T],
        normed: &[T],
        stats: &mut BatchStats,
        g: &mut [T],
        grads: &mut [T],
        rows: usize,
    ) -> Result<()> {
        let w = self.width;
        holds("batch-norm gradient", g, rows, w)?;
        holds("batch-norm cache", normed, rows, w)?;
        let gamma = self.gamma.get(params)?;
        let mut scratch = stats.take_scratch(w);
        let (db, dg) = scratch.split_at_mut(w);
        for (row, nrow) in g[..rows * w].chunks_exact(w).zip(normed.chunks_exact(w)) {
            for j in 0..w {
                let gj = row[j].as_f64();
                db[j] += gj;
                dg[j] += gj * nrow[j].as_f64();
            }
        }
        let n = rows as f64;
        for (row, nrow) in g[..rows * w]
            .chunks_exact_mut(w)
            .zip(normed.chunks_exact(w))
        {
            for j in 0..w {
                let k = gamma[j].as_f64() * stats.inv_std[j];
                let zhat = nrow[j].as_f64();
                row[j] = T::of(k * (row[j].as_f64() - db[j] / n - zhat * dg[j] / n));
            }
        }
        for (o, v) in self.gamma.get_mut(grads)?.iter_mut().zip(dg) {
            *o = T::of(*v);
        }
        for (o, v) in self.beta.get_mut(grads)?.iter_mut().zip(db) {
            *o = T::of(*v);
        }
        self.running_mean.get_mut(grads)?.fill(T::zero());
        self.running_var.get_mut(grads)?.fill(T::zero());
        stats.put_scratch(scratch);
        Ok(())
    }

    /// Moves the running averages towards the last training batch's statistics:
    /// r = (1 - 0.01) r + 0.01 batch value, with the variance made unbiased (times n/(n - 1)),
    /// as PyTorch does.
    pub fn update_running<T: Float>(&self, params: &mut [T], stats: &BatchStats) -> Result<()> {
        if stats.rows == 0 || stats.mean.len() != self.width {
            return Ok(());
        }
        let var = stats
            .inv_std
            .iter()
            .map(|&inv| unbiased_var(inv, stats.rows));
        self.blend(params, stats.mean.iter().copied(), var)
    }

    /// For a batch cut into shards: writes `weight` times this shard's mean and unbiased
    /// variance into `out` where the running averages sit (in a gradient, whose entries there
    /// are otherwise zero). Summed over the shards with weights that add up to 1, they are the
    /// batch's statistics for [`update_running_from`](Self::update_running_from).
    pub fn write_shard_stats<T: Float>(
        &self,
        out: &mut [T],
        stats: &BatchStats,
        weight: f64,
    ) -> Result<()> {
        if stats.rows == 0 || stats.mean.len() != self.width {
            return Ok(());
        }
        for (o, &b) in self.running_mean.get_mut(out)?.iter_mut().zip(&stats.mean) {
            *o = T::of(weight * b);
        }
        for (o, &inv) in self
            .running_var
            .get_mut(out)?
            .iter_mut()
            .zip(&stats.inv_std)
        {
            *o = T::of(weight * unbiased_var(inv, stats.rows));
        }
        Ok(())
    }

    /// Moves the running averages towards the statistics that `combined` holds where they sit
    /// (see [`write_shard_stats`](Self::write_shard_stats)), then zeroes them there.
    pub fn update_running_from<T: Float>(
        &self,
        params: &mut [T],
        combined: &mut [T],
    ) -> Result<()> {
        let (mean, var) = (
            self.running_mean.get(combined)?,
            self.running_var.get(combined)?,
        );
        let as_f64 = |v: &T| v.as_f64();
        self.blend(params, mean.iter().map(as_f64), var.iter().map(as_f64))?;
        self.running_mean.get_mut(combined)?.fill(T::zero());
        self.running_var.get_mut(combined)?.fill(T::zero());
        Ok(())
    }

    fn blend<T: Float>(
        &self,
        params: &mut [T],
        mean: impl Iterator<Item = f64>,
        var: impl Iterator<Item = f64>,
    ) -> Result<()> {
        let m = BATCH_NORM_MOMENTUM;
        for (r, b) in self.running_mean.get_mut(params)?.iter_mut().zip(mean) {
            *r = T::of((1.0 - m) * r.as_f64() + m * b);
        }
        for (r, v) in self.running_var.get_mut(params)?.iter_mut().zip(var) {
            *r = T::of((1.0 - m) * r.as_f64() + m * v);
        }
        Ok(())
    }
}

/// The unbiased variance (times n/(n - 1)) of a batch of `rows` from its 1/sqrt(var + eps).
fn unbiased_var(inv_std: f64, rows: usize) -> f64 {
    let n = rows as f64;
    let unbias = if rows > 1 { n / (n - 1.0) } else { 1.0 };
    (1.0 / (inv_std * inv_std) - BATCH_NORM_EPS).max(0.0) * unbias
}

/// Dropout with rate p: while training, each value is kept with probability 1 - p and scaled
/// by 1/(1 - p), so its expectation is unchanged; at evaluation it is the identity. The mask is
/// drawn from the (seed, step) stream by the caller, so results do not depend on the thread
/// count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// The rate p in [0, 1).
    pub rate: f64,
}

impl Dropout {
    /// Fills `mask` with 0 (dropped, probability p) or 1/(1 - p) (kept) from `rng`.
    pub fn draw_mask<T: Float>(&self, rng: &mut impl rand::Rng, mask: &mut [T]) {
        let keep = T::of(1.0 / (1.0 - self.rate));
        // Compared as integers: u < p 2^64.
        let cut = (self.rate * 2f64.powi(64)) as u64;
        for m in mask {
            *m = if rng.next_u64() < cut {
                T::zero()
            } else {
                keep
            };
        }
    }

    /// y = x * mask, in place.
    pub fn forward<T: Float>(mask: &[T], x: &mut [T]) {
        for (v, &m) in x.iter_mut().zip(mask) {
            *v *= m;
        }
    }

    /// dL/dx = dL/dy * mask, in place: the same mask as the forward pass.
    pub fn backward<T: Float>(mask: &[T], g: &mut [T]) {
        for (v, &m) in g.iter_mut().zip(mask) {
            *v *= m;
        }
    }
}
