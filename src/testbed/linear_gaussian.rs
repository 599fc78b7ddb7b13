//! An exact test-bed: the linear-Gaussian latent model
//!
//! ```text
//! p(z) = N(0, I_Z),   p(x|z) = N(W z + b, Psi),   Psi = diag(psi)
//! ```
//!
//! (probabilistic PCA when psi is isotropic, factor analysis otherwise). Everything the VAE can
//! only estimate is closed-form here:
//!
//! - the marginal p(x) = N(b, C), C = W W^T + Psi;
//! - the posterior p(z|x) = N(m, S), S^-1 = I + W^T Psi^-1 W, m = S W^T Psi^-1 (x - b);
//! - the ELBO of a diagonal Gaussian q = N(mu, diag(exp(v))):
//!   E_q[log p(x|z)] = -1/2 sum_d [ln 2 pi psi_d + ((x - b - W mu)_d^2 + sum_j W_dj^2 e^v_j) / psi_d]
//!   minus the usual KL to N(0, I);
//! - KL(q || p(z|x)) = 1/2 [tr(S^-1 Sigma_q) + (m - mu)^T S^-1 (m - mu) - Z + ln|S| - ln|Sigma_q|];
//! - the maximum-likelihood fit of probabilistic PCA (Tipping and Bishop, 1999).
//!
//! The same model is also a [`Vae`] with no hidden layers, an identity decoder and a Gaussian
//! likelihood, so the library's own forward passes can be held to these formulas.

// Small dense linear algebra reads best with the indices of its formulas.
#![allow(clippy::needless_range_loop)]

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Activation, Likelihood, Vae, VaeConfig};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The linear-Gaussian model with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearGaussian {
    /// Width D of x.
    pub dim: usize,
    /// Width Z of z.
    pub latent: usize,
    /// Loadings W, `D x Z`, row-major.
    pub w: Vec<f64>,
    /// Offset b, `D`.
    pub b: Vec<f64>,
    /// Noise variances psi, `D`.
    pub psi: Vec<f64>,
}

/// Cholesky factor L (lower, row-major) of a symmetric positive-definite `n x n` matrix.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i * n + j] - (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>();
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves (L L^T) x = r for x.
fn cholesky_solve(l: &[f64], n: usize, r: &[f64]) -> Vec<f64> {
    let mut y = r.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= l[i * n + k] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= l[k * n + i] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    y
}

fn log_det_from_cholesky(l: &[f64], n: usize) -> f64 {
    2.0 * (0..n).map(|i| l[i * n + i].ln()).sum::<f64>()
}

/// Eigenvalues of a symmetric `n x n` matrix by cyclic Jacobi rotations, largest first.
pub fn symmetric_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum().max(0.0).mul_add(2.0, -1.0)
                    / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
            }
        }
    }
    let mut ev: Vec<f64> = (0..n).map(|i| m[i * n + i]).collect();
    ev.sort_by(|a, b| b.total_cmp(a));
    ev
}

impl LinearGaussian {
    /// A model with the given parameters.
    pub fn new(dim: usize, latent: usize, w: Vec<f64>, b: Vec<f64>, psi: Vec<f64>) -> Result<Self> {
        if dim == 0 || latent == 0 {
            return Err(Error::config(
                "linear-Gaussian sizes",
                format!("{dim} x {latent}"),
                "must be at least 1",
            ));
        }
        if w.len() != dim * latent || b.len() != dim || psi.len() != dim {
            return Err(Error::shape(
                "linear-Gaussian parameters",
                format!("W {dim}x{latent}, b {dim}, psi {dim}"),
                format!("{}, {}, {}", w.len(), b.len(), psi.len()),
            ));
        }
        if psi.iter().any(|&p| !(p.is_finite() && p > 0.0)) {
            return Err(Error::InvalidData(
                "noise variances must be finite and > 0".into(),
            ));
        }
        Ok(LinearGaussian {
            dim,
            latent,
            w,
            b,
            psi,
        })
    }

    /// A random model from `seed`: W and b uniform on [-1, 1], isotropic noise `noise_var`.
    /// With `orthogonal`, W's columns are made orthogonal, so that the posterior covariance is
    /// diagonal and a diagonal q can equal the posterior exactly.
    pub fn random(
        dim: usize,
        latent: usize,
        noise_var: f64,
        seed: u64,
        orthogonal: bool,
    ) -> Result<Self> {
        let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Init, 99);
        let mut w: Vec<f64> = (0..dim * latent)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        if orthogonal {
            // Gram-Schmidt on the columns, keeping their lengths varied.
            for j in 0..latent {
                for k in 0..j {
                    let dot: f64 = (0..dim)
                        .map(|d| w[d * latent + j] * w[d * latent + k])
                        .sum();
                    let nk: f64 = (0..dim).map(|d| w[d * latent + k].powi(2)).sum();
                    for d in 0..dim {
                        w[d * latent + j] -= dot / nk * w[d * latent + k];
                    }
                }
            }
        }
        let b = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        Self::new(dim, latent, w, b, vec![noise_var; dim])
    }

    /// `n` draws of x, row-major.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Data, 7);
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let z: Vec<f64> = (0..self.latent)
                .map(|_| rng.sample(rand_distr::StandardNormal))
                .collect();
            for d in 0..self.dim {
                let e: f64 = rng.sample(rand_distr::StandardNormal);
                let mean = self.b[d]
                    + (0..self.latent)
                        .map(|j| self.w[d * self.latent + j] * z[j])
                        .sum::<f64>();
                out.push(mean + self.psi[d].sqrt() * e);
            }
        }
        out
    }

    /// C = W W^T + Psi.
    fn marginal_cov(&self) -> Vec<f64> {
        let (n, z) = (self.dim, self.latent);
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                c[i * n + j] = (0..z)
                    .map(|k| self.w[i * z + k] * self.w[j * z + k])
                    .sum::<f64>();
            }
            c[i * n + i] += self.psi[i];
        }
        c
    }

    /// log p(x), exactly.
    pub fn log_marginal(&self, x: &[f64]) -> f64 {
        let n = self.dim;
        let l = cholesky(&self.marginal_cov(), n).expect("W W^T + Psi is positive definite");
        let r: Vec<f64> = x.iter().zip(&self.b).map(|(x, b)| x - b).collect();
        let sol = cholesky_solve(&l, n, &r);
        let quad: f64 = r.iter().zip(&sol).map(|(a, b)| a * b).sum();
        -0.5 * (n as f64 * LN_2PI + log_det_from_cholesky(&l, n) + quad)
    }

    /// The posterior precision S^-1 = I + W^T Psi^-1 W (`Z x Z`).
    pub fn posterior_precision(&self) -> Vec<f64> {
        let z = self.latent;
        let mut p = vec![0.0; z * z];
        for i in 0..z {
            for j in 0..z {
                p[i * z + j] = (0..self.dim)
                    .map(|d| self.w[d * z + i] * self.w[d * z + j] / self.psi[d])
                    .sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        p
    }

    /// The posterior p(z|x) = N(m, S): returns (m, S).
    pub fn posterior(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let z = self.latent;
        let l = cholesky(&self.posterior_precision(), z).expect("precision is positive definite");
        let rhs: Vec<f64> = (0..z)
            .map(|j| {
                (0..self.dim)
                    .map(|d| self.w[d * z + j] * (x[d] - self.b[d]) / self.psi[d])
                    .sum()
            })
            .collect();
        let m = cholesky_solve(&l, z, &rhs);
        let mut s = vec![0.0; z * z];
        for j in 0..z {
            let mut e = vec![0.0; z];
            e[j] = 1.0;
            let col = cholesky_solve(&l, z, &e);
            for i in 0..z {
                s[i * z + j] = col[i];
            }
        }
        (m, s)
    }

    /// log p(x|z) + log p(z).
    pub fn log_joint(&self, x: &[f64], z: &[f64]) -> f64 {
        let zd = self.latent;
        let mut lp = -0.5 * z.iter().map(|v| v * v + LN_2PI).sum::<f64>();
        for d in 0..self.dim {
            let mean = self.b[d] + (0..zd).map(|j| self.w[d * zd + j] * z[j]).sum::<f64>();
            lp += -0.5 * (LN_2PI + self.psi[d].ln() + (x[d] - mean).powi(2) / self.psi[d]);
        }
        lp
    }

    /// log p(z|x), exactly.
    pub fn log_posterior(&self, x: &[f64], z: &[f64]) -> f64 {
        self.log_joint(x, z) - self.log_marginal(x)
    }

    /// The ELBO of q = N(mu, diag(exp(logvar))) at x, in closed form: returns (recon, KL).
    pub fn elbo_terms(&self, x: &[f64], mu: &[f64], logvar: &[f64]) -> (f64, f64) {
        let zd = self.latent;
        let mut recon = 0.0;
        for d in 0..self.dim {
            let row = &self.w[d * zd..(d + 1) * zd];
            let mean = self.b[d] + row.iter().zip(mu).map(|(w, m)| w * m).sum::<f64>();
            let spread: f64 = row.iter().zip(logvar).map(|(w, v)| w * w * v.exp()).sum();
            recon +=
                -0.5 * (LN_2PI + self.psi[d].ln() + ((x[d] - mean).powi(2) + spread) / self.psi[d]);
        }
        let kl = 0.5
            * mu.iter()
                .zip(logvar)
                .map(|(m, v)| v.exp_m1() - v + m * m)
                .sum::<f64>();
        (recon, kl)
    }

    /// KL(N(mu, diag(exp(logvar))) || p(z|x)), in closed form.
    pub fn kl_to_posterior(&self, x: &[f64], mu: &[f64], logvar: &[f64]) -> f64 {
        let z = self.latent;
        let prec = self.posterior_precision();
        let (m, _) = self.posterior(x);
        let tr: f64 = (0..z).map(|j| prec[j * z + j] * logvar[j].exp()).sum();
        let dm: Vec<f64> = m.iter().zip(mu).map(|(a, b)| a - b).collect();
        let quad: f64 = (0..z)
            .map(|i| (0..z).map(|j| dm[i] * prec[i * z + j] * dm[j]).sum::<f64>())
            .sum();
        let l = cholesky(&prec, z).expect("precision is positive definite");
        let ln_det_s = -log_det_from_cholesky(&l, z);
        0.5 * (tr + quad - z as f64 + ln_det_s - logvar.iter().sum::<f64>())
    }

    /// The same model as a [`Vae`] (no hidden layers, identity decoder, Gaussian likelihood
    /// with this model's isotropic variance), with parameters whose decoder is this model and
    /// whose encoder outputs `mu(x) = x A + c` and constant log-variance: by default the exact
    /// posterior when the posterior covariance is diagonal. Errors if psi is not isotropic.
    pub fn to_vae(&self) -> Result<(Vae, Vec<f64>)> {
        let psi = self.psi[0];
        if self.psi.iter().any(|&p| p != psi) {
            return Err(Error::InvalidData(
                "to_vae needs isotropic noise (a fixed-variance Gaussian)".into(),
            ));
        }
        let vae = Vae::new(VaeConfig {
            input_dim: self.dim,
            encoder_hidden: vec![],
            latent_dim: self.latent,
            decoder_hidden: vec![],
            activation: Activation::Identity,
            likelihood: Likelihood::Gaussian { variance: psi },
            logvar_clamp: None,
            log1p_input: false,
            batch_norm: false,
            dropout: 0.0,
        })?;
        let mut params = vec![0.0; vae.num_params()];
        let (zd, d) = (self.latent, self.dim);
        // Decoder a = z W^T + b: its weight (n_in x n_out = Z x D) is W^T.
        let dec = &vae.decoder.layers[0].dense;
        for j in 0..zd {
            for k in 0..d {
                params[dec.weight.range()][j * d + k] = self.w[k * zd + j];
            }
        }
        params[dec.bias.range()].copy_from_slice(&self.b);
        // Encoder mean m(x) = S W^T Psi^-1 (x - b): the head's weight (D x 2Z) holds
        // A = Psi^-1 W S in its first Z columns, its bias -b A; log-variances ln S_jj.
        let (_, s) = self.posterior(&self.b);
        let head = &vae.head;
        for k in 0..d {
            for j in 0..zd {
                let a: f64 = (0..zd)
                    .map(|i| self.w[k * zd + i] * s[i * zd + j])
                    .sum::<f64>()
                    / self.psi[k];
                params[head.weight.range()][k * 2 * zd + j] = a;
                params[head.bias.range()][j] -= self.b[k] * a;
            }
        }
        for j in 0..zd {
            params[head.bias.range()][zd + j] = s[j * zd + j].ln();
        }
        Ok((vae, params))
    }

    /// Reads a linear-Gaussian model back from a [`Vae`] with no hidden layers, an identity
    /// decoder and a Gaussian likelihood (fixed or learned per-dimension variance).
    pub fn from_vae(vae: &Vae, params: &[f64]) -> Result<Self> {
        let cfg = vae.config();
        if !cfg.decoder_hidden.is_empty() {
            return Err(Error::InvalidData(
                "the decoder must be linear (no hidden layers)".into(),
            ));
        }
        let (zd, d) = (cfg.latent_dim, cfg.input_dim);
        let dec = &vae.decoder.layers[0].dense;
        let wt = &params[dec.weight.range()];
        let w = (0..d * zd).map(|i| wt[(i % zd) * d + i / zd]).collect();
        let b = params[dec.bias.range()].to_vec();
        let psi = match (cfg.likelihood, vae.likelihood.params) {
            (Likelihood::Gaussian { variance }, _) => vec![variance; d],
            (Likelihood::GaussianLearnedVariance, Some(t)) => {
                params[t.range()].iter().map(|s| s.exp()).collect()
            }
            _ => return Err(Error::InvalidData("the likelihood must be Gaussian".into())),
        };
        Self::new(d, zd, w, b, psi)
    }
}

/// The largest average log-likelihood per point that probabilistic PCA with `latent`
/// components reaches on `data` (`n x dim`), in closed form (Tipping and Bishop): with
/// eigenvalues l_1 >= ... >= l_D of the sample covariance and s^2 the mean of the discarded
/// ones, -1/2 [D ln 2 pi + sum_{i <= Z} ln l_i + (D - Z) ln s^2 + D].
pub fn ppca_max_log_likelihood(data: &[f64], n: usize, dim: usize, latent: usize) -> f64 {
    let mean: Vec<f64> = (0..dim)
        .map(|d| (0..n).map(|i| data[i * dim + d]).sum::<f64>() / n as f64)
        .collect();
    let mut cov = vec![0.0; dim * dim];
    for i in 0..n {
        for a in 0..dim {
            for b in 0..dim {
                cov[a * dim + b] +=
                    (data[i * dim + a] - mean[a]) * (data[i * dim + b] - mean[b]) / n as f64;
            }
        }
    }
    let ev = symmetric_eigenvalues(&cov, dim);
    let s2 = ev[latent..].iter().sum::<f64>() / (dim - latent) as f64;
    -0.5 * (dim as f64 * LN_2PI
        + ev[..latent].iter().map(|l| l.ln()).sum::<f64>()
        + (dim - latent) as f64 * s2.ln()
        + dim as f64)
}

/// The ELBO's identities on a small linear-Gaussian model, each side computed separately:
/// closed forms on one side, the library's own forward passes (Monte Carlo) on the other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentitiesReport {
    /// The model.
    pub model: LinearGaussian,
    /// The data point.
    pub x: Vec<f64>,
    /// q's mean and log-variance (the posterior mean, variances inflated).
    pub q_mean: Vec<f64>,
    /// q's log-variances.
    pub q_logvar: Vec<f64>,
    /// log p(x), closed form.
    pub log_px: f64,
    /// E_q[log p(x|z)], closed form.
    pub recon: f64,
    /// KL(q || p(z)), closed form.
    pub kl_prior: f64,
    /// KL(q || p(z|x)), closed form.
    pub kl_posterior: f64,
    /// Draws of z ~ q used for the Monte-Carlo columns.
    pub draws: usize,
    /// E_q[log w], w = p(x, z) / q(z): the ELBO by Monte Carlo, with its standard error.
    pub elbo_mc: (f64, f64),
    /// `log E_q[w]` by Monte Carlo: log p(x) from the same draws.
    pub log_mean_w: f64,
    /// Smallest ln p(x) - [ln p(x,z) - ln q(z) + 1 - p(z|x)/q(z)] over the draws (>= 0).
    pub bayes_min_slack: f64,
    /// E_q[1 - p(z|x)/q(z)] by Monte Carlo (0 in expectation), with its standard error.
    pub bayes_correction: (f64, f64),
    /// (k, mean of log (1/k) sum w over replicates, standard error).
    pub k_estimates: Vec<(usize, f64, f64)>,
    /// With q = p(z|x): the closed-form ELBO, and the spread (max - min) of log w over draws.
    pub tight: (f64, f64),
}

impl IdentitiesReport {
    /// Computes every identity for a random 5-dimensional model with 2 latents from `seed`,
    /// with `draws` Monte-Carlo draws.
    pub fn compute(seed: u64, draws: usize) -> Result<Self> {
        use crate::objective::{Iwae, Workspace};
        if draws < 1000 {
            return Err(Error::config("draws", draws, "must be at least 1000"));
        }
        let (d, zd) = (5, 2);
        let model = LinearGaussian::random(d, zd, 0.3, seed, false)?;
        let x = model.sample(1, seed ^ 1);
        let log_px = model.log_marginal(&x);
        let (m, s) = model.posterior(&x);
        let q_mean = m.clone();
        let q_logvar: Vec<f64> = (0..zd).map(|j| s[j * zd + j].ln() + 1.0).collect();
        let (recon, kl_prior) = model.elbo_terms(&x, &q_mean, &q_logvar);
        let kl_posterior = model.kl_to_posterior(&x, &q_mean, &q_logvar);
        let (vae, mut params) = model.to_vae()?;
        params[vae.head.weight.range()].fill(0.0);
        let bias = &mut params[vae.head.bias.range()];
        bias[..zd].copy_from_slice(&q_mean);
        bias[zd..].copy_from_slice(&q_logvar);
        let run = |params: &[f64], seed: u64| -> Result<(Vec<f64>, Vec<f64>)> {
            let mut ws = Workspace::<f64>::new(&vae, 1, draws, 1)?;
            ws.x.copy_from_slice(&x);
            crate::rng::fill_normal(
                &mut crate::rng::stream(seed, crate::rng::Purpose::Eval, 0),
                &mut ws.eps,
            );
            Iwae::new(&vae).forward(params, &mut ws, 1)?;
            Ok((ws.log_w.clone(), ws.z.clone()))
        };
        let (log_w, z) = run(&params, seed)?;
        let mean_se = |v: &[f64]| {
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (mean, (var / n).sqrt())
        };
        let mut slack = f64::INFINITY;
        let mut corr = Vec::with_capacity(draws);
        for (lw, zi) in log_w.iter().zip(z.chunks(zd)) {
            let log_q = model.log_joint(&x, zi) - lw;
            let ratio = (model.log_posterior(&x, zi) - log_q).exp();
            slack = slack.min(log_px - (lw + 1.0 - ratio));
            corr.push(1.0 - ratio);
        }
        let k_estimates = [1usize, 10, 100, 1000]
            .iter()
            .map(|&k| {
                let reps: Vec<f64> = log_w
                    .chunks_exact(k)
                    .map(|c| crate::objective::iwae::log_mean_exp(c.iter().copied()))
                    .collect();
                let (mean, se) = mean_se(&reps);
                (k, mean, se)
            })
            .collect();
        // q = p(z|x) needs a diagonal posterior: an orthogonal W.
        let tight_model = LinearGaussian::random(d, zd, 0.3, seed, true)?;
        let (tvae, tparams) = tight_model.to_vae()?;
        let mut ws = Workspace::<f64>::new(&tvae, 1, 1000, 1)?;
        ws.x.copy_from_slice(&x);
        crate::rng::fill_normal(
            &mut crate::rng::stream(seed, crate::rng::Purpose::Eval, 1),
            &mut ws.eps,
        );
        Iwae::new(&tvae).forward(&tparams, &mut ws, 1)?;
        let (lo, hi) = ws
            .log_w
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let (tm, ts) = tight_model.posterior(&x);
        let tlv: Vec<f64> = (0..zd).map(|j| ts[j * zd + j].ln()).collect();
        let (tr, tk) = tight_model.elbo_terms(&x, &tm, &tlv);
        Ok(IdentitiesReport {
            log_mean_w: crate::objective::iwae::log_mean_exp(log_w.iter().copied()),
            elbo_mc: mean_se(&log_w),
            bayes_min_slack: slack,
            bayes_correction: mean_se(&corr),
            k_estimates,
            tight: (tr - tk - tight_model.log_marginal(&x), hi - lo),
            model,
            x,
            q_mean,
            q_logvar,
            log_px,
            recon,
            kl_prior,
            kl_posterior,
            draws,
        })
    }
}

impl std::fmt::Display for IdentitiesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let elbo = self.recon - self.kl_prior;
        writeln!(
            f,
            "Linear-Gaussian model p(z) = N(0, I_2), p(x|z) = N(Wz + b, 0.3 I_5); one x; q = N(mu, diag(s^2)) with"
        )?;
        writeln!(
            f,
            "the posterior's means and e-fold variances. Closed forms on the left, {} draws through elbo's own",
            self.draws
        )?;
        writeln!(
            f,
            "forward passes (Monte Carlo, +- one standard error) on the right.\n"
        )?;
        writeln!(
            f,
            "log p(x) (closed form)                          {:>12.6}",
            self.log_px
        )?;
        writeln!(
            f,
            "ELBO = E_q[log p(x|z)] - KL(q||p(z))            {:>12.6} = {:.6} - {:.6}\n",
            elbo, self.recon, self.kl_prior
        )?;
        writeln!(
            f,
            "1. Jensen: log p(x) = log E_q[w] >= E_q[log w] = ELBO,  w = p(x,z)/q(z)"
        )?;
        writeln!(
            f,
            "   log E_q[w]    {:>12.6}   (log p(x) {:.6})",
            self.log_mean_w, self.log_px
        )?;
        writeln!(
            f,
            "   E_q[log w]    {:>12.6} +- {:.6}   (ELBO {:.6})",
            self.elbo_mc.0, self.elbo_mc.1, elbo
        )?;
        writeln!(
            f,
            "   (a) ELBO <= log p(x): {}\n",
            if elbo <= self.log_px {
                "holds"
            } else {
                "FAILS"
            }
        )?;
        writeln!(f, "2. KL: log p(x) = ELBO + KL(q(z|x) || p(z|x))")?;
        writeln!(
            f,
            "   log p(x) - ELBO            {:>12.6}",
            self.log_px - elbo
        )?;
        writeln!(
            f,
            "   KL(q || p(z|x))            {:>12.6}",
            self.kl_posterior
        )?;
        writeln!(
            f,
            "   E_q[log p(x) - log w]      {:>12.6} +- {:.6}",
            self.log_px - self.elbo_mc.0,
            self.elbo_mc.1
        )?;
        writeln!(
            f,
            "   (b) difference of the closed forms: {:.2e}\n",
            (self.log_px - elbo - self.kl_posterior).abs()
        )?;
        writeln!(
            f,
            "3. Bayes: ln p(x) = ln p(x,z) - ln q(z) + ln(q(z)/p(z|x)) >= ln p(x,z) - ln q(z) + 1 - p(z|x)/q(z)"
        )?;
        writeln!(
            f,
            "   (ln y >= 1 - 1/y); the correction has mean 0 under q, so E_q gives the ELBO"
        )?;
        writeln!(
            f,
            "   (c) smallest slack over all draws   {:>12.3e}  (must be >= 0)",
            self.bayes_min_slack
        )?;
        writeln!(
            f,
            "       E_q[1 - p(z|x)/q(z)]            {:>12.6} +- {:.6}  (0 in expectation)\n",
            self.bayes_correction.0, self.bayes_correction.1
        )?;
        writeln!(
            f,
            "(d) k-sample bound E[log (1/k) sum_i w_i] rises towards log p(x) = {:.6}:",
            self.log_px
        )?;
        for (k, m, se) in &self.k_estimates {
            writeln!(
                f,
                "   k = {k:>5}   {m:>12.6} +- {se:.6}   gap {:.6}",
                self.log_px - m
            )?;
        }
        writeln!(
            f,
            "\n(e) q = p(z|x) (orthogonal W, so the posterior is diagonal):"
        )?;
        writeln!(
            f,
            "   ELBO - log p(x) = {:.2e};  spread of log w over 1000 draws = {:.2e} (zero variance)",
            self.tight.0, self.tight.1
        )
    }
}
