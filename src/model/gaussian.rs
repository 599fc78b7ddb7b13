//! The diagonal-Gaussian posterior q(z|x) = N(mu, diag(exp(logvar))): sampling by
//! reparameterisation, and its closed-form KL divergence to the prior N(0, I).
//!
//! Both work on the encoder head's output `stats`, a `rows x 2Z` buffer whose first Z columns
//! are mu and last Z columns are logvar. Gradients go to a buffer of the same shape.

use crate::error::Result;
use crate::kernels::par;
use crate::kernels::scalar::Float;
use crate::model::shape::holds;

/// Rows per parallel task in these loops. Each element costs an exponential (a libm call), so
/// a batch's 128 x 20 of them took tens of microseconds on one thread while the other waited:
/// far fewer elements a task than `kernels::par`'s default grain for plain arithmetic.
const ROWS_PER_TASK: usize = 16;

/// z = mu + exp(logvar / 2) * eps, with `samples` draws of eps per data point.
#[derive(Clone, Copy, Debug)]
pub struct Reparameterize {
    /// Latent width Z.
    pub latent: usize,
    /// Samples L per data point; sample l of row b is output row b * L + l.
    pub samples: usize,
}

impl Reparameterize {
    /// `z[b L + l] = mu[b] + exp(logvar[b] / 2) * eps[b L + l]`, for `rows` data points.
    ///
    /// ```
    /// use elbo::model::Reparameterize;
    /// let stats = [1.0f64, (4.0f64).ln()];                 // mu = 1, sigma^2 = 4
    /// let mut z = [0.0];
    /// Reparameterize { latent: 1, samples: 1 }.forward(&stats, &[0.5], &mut z, 1)?;
    /// assert!((z[0] - 2.0).abs() < 1e-12);                  // 1 + 2 * 0.5
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn forward<T: Float>(
        &self,
        stats: &[T],
        eps: &[T],
        z: &mut [T],
        rows: usize,
    ) -> Result<()> {
        let (zd, l) = (self.latent, self.samples);
        holds("posterior statistics", stats, rows, 2 * zd)?;
        holds("noise", eps, rows.saturating_mul(l), zd)?;
        holds("latent samples", z, rows.saturating_mul(l), zd)?;
        let z = &mut z[..rows * l * zd];
        par::for_each_row_in_blocks(z, zd, ROWS_PER_TASK, |r, zr| {
            let s = &stats[(r / l) * 2 * zd..(r / l + 1) * 2 * zd];
            let (mu, lv) = s.split_at(zd);
            let e = &eps[r * zd..(r + 1) * zd];
            for j in 0..zd {
                zr[j] = mu[j] + (lv[j] * T::of(0.5)).exp() * e[j];
            }
        });
        Ok(())
    }

    /// With dz = dL/dz, adds to `dstats`:
    ///
    /// - dL/dmu     += sum_l dz_l                                   (dz/dmu = 1)
    /// - dL/dlogvar += sum_l dz_l * eps_l * exp(logvar / 2) / 2     (dz/dlogvar = eps sigma / 2)
    pub fn backward<T: Float>(
        &self,
        stats: &[T],
        eps: &[T],
        dz: &[T],
        dstats: &mut [T],
        rows: usize,
    ) -> Result<()> {
        let (zd, l) = (self.latent, self.samples);
        holds("posterior statistics", stats, rows, 2 * zd)?;
        holds("noise", eps, rows.saturating_mul(l), zd)?;
        holds("latent gradient", dz, rows.saturating_mul(l), zd)?;
        holds("statistics gradient", dstats, rows, 2 * zd)?;
        let dstats = &mut dstats[..rows * 2 * zd];
        par::for_each_row_in_blocks(dstats, 2 * zd, ROWS_PER_TASK, |b, ds| {
            let lv = &stats[b * 2 * zd + zd..(b + 1) * 2 * zd];
            let (dmu, dlv) = ds.split_at_mut(zd);
            for s in 0..l {
                let r = b * l + s;
                let (d, e) = (&dz[r * zd..(r + 1) * zd], &eps[r * zd..(r + 1) * zd]);
                for j in 0..zd {
                    dmu[j] += d[j];
                    dlv[j] += d[j] * e[j] * (lv[j] * T::of(0.5)).exp() * T::of(0.5);
                }
            }
        });
        Ok(())
    }
}

/// KL(N(mu, diag(exp(logvar))) || N(0, I)) = 1/2 sum_j (exp(logvar_j) + mu_j^2 - 1 - logvar_j).
#[derive(Clone, Copy, Debug)]
pub struct KlToStandardNormal {
    /// Latent width Z.
    pub latent: usize,
}

impl KlToStandardNormal {
    /// One KL per row. `exp(v) - 1 - v` is computed as `expm1(v) - v`, which keeps precision for
    /// small v and gives exactly 0 at the prior.
    ///
    /// ```
    /// use elbo::model::KlToStandardNormal;
    /// let kl = KlToStandardNormal { latent: 2 };
    /// let (mut k, mut d) = ([0.0f64], [0.0; 4]);
    /// kl.forward(&[0.0, 0.0, 0.0, 0.0], &mut k, 1)?;     // q = p: KL = 0
    /// assert_eq!(k, [0.0]);
    /// kl.backward(&[1.0, 0.0, 0.0, 0.0], 1.0, &mut d, 1)?; // dKL/dmu = mu
    /// assert_eq!(d, [1.0, 0.0, 0.0, 0.0]);
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn forward<T: Float>(&self, stats: &[T], kl: &mut [T], rows: usize) -> Result<()> {
        let zd = self.latent;
        holds("posterior statistics", stats, rows, 2 * zd)?;
        holds("KL per row", kl, rows, 1)?;
        par::for_each_row_in_blocks(&mut kl[..rows], 1, ROWS_PER_TASK, |b, k| {
            let (mu, lv) = stats[b * 2 * zd..(b + 1) * 2 * zd].split_at(zd);
            let mut s = T::zero();
            for j in 0..zd {
                s += lv[j].exp_m1() - lv[j] + mu[j] * mu[j];
            }
            k[0] = s * T::of(0.5);
        });
        Ok(())
    }

    /// Adds `scale` times the KL's gradient to `dstats`:
    ///
    /// - dKL/dmu_j     = mu_j
    /// - dKL/dlogvar_j = (exp(logvar_j) - 1) / 2
    pub fn backward<T: Float>(
        &self,
        stats: &[T],
        scale: T,
        dstats: &mut [T],
        rows: usize,
    ) -> Result<()> {
        let zd = self.latent;
        holds("posterior statistics", stats, rows, 2 * zd)?;
        holds("statistics gradient", dstats, rows, 2 * zd)?;
        let half = T::of(0.5);
        let dstats = &mut dstats[..rows * 2 * zd];
        par::for_each_row_in_blocks(dstats, 2 * zd, ROWS_PER_TASK, |b, d| {
            let s = &stats[b * 2 * zd..(b + 1) * 2 * zd];
            for j in 0..zd {
                d[j] += scale * s[j];
                d[zd + j] += scale * half * s[zd + j].exp_m1();
            }
        });
        Ok(())
    }
}

/// Clamps the log-variance half of `stats` to [-limit, limit], so that exp(logvar) and the
/// KL stay finite whatever the encoder's weights do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogvarClamp {
    /// Latent width Z.
    pub latent: usize,
    /// The bound c > 0.
    pub limit: f64,
}

impl LogvarClamp {
    /// logvar <- min(max(logvar, -c), c), in place.
    ///
    /// ```
    /// use elbo::model::LogvarClamp;
    /// let mut stats = [0.3f64, 25.0];                       // mu, logvar
    /// LogvarClamp { latent: 1, limit: 10.0 }.forward(&mut stats, 1)?;
    /// assert_eq!(stats, [0.3, 10.0]);
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn forward<T: Float>(&self, stats: &mut [T], rows: usize) -> Result<()> {
        let (zd, c) = (self.latent, T::of(self.limit));
        holds("posterior statistics", stats, rows, 2 * zd)?;
        for s in stats[..rows * 2 * zd].chunks_exact_mut(2 * zd) {
            for v in &mut s[zd..] {
                *v = v.max(-c).min(c);
            }
        }
        Ok(())
    }

    /// d clamp(v)/dv = 1 inside (-c, c), 0 where the clamp held: zeroes the log-variance
    /// gradients at the bound. `stats` is the clamped output.
    pub fn backward<T: Float>(&self, stats: &[T], dstats: &mut [T], rows: usize) -> Result<()> {
        let (zd, c) = (self.latent, T::of(self.limit));
        holds("posterior statistics", stats, rows, 2 * zd)?;
        holds("statistics gradient", dstats, rows, 2 * zd)?;
        for (s, d) in stats[..rows * 2 * zd]
            .chunks_exact(2 * zd)
            .zip(dstats.chunks_exact_mut(2 * zd))
        {
            for j in 0..zd {
                if s[zd + j].abs() >= c {
                    d[zd + j] = T::zero();
                }
            }
        }
        Ok(())
    }
}
