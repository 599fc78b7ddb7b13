//! Evaluation: the ELBO's terms and the latent diagnostics over a dataset, in batches, with
//! noise fixed by the seed so that epochs are compared on equal draws.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::kernels::pool::Parallelism;
use crate::kernels::scalar::Float;
use crate::model::Vae;
use crate::objective::{BatchElbo, Elbo, Workspace};
use crate::rng::{Purpose, fill_normal, stream};
use crate::train::reports::{ACTIVE_UNIT_THRESHOLD, Evaluation, LatentStats};

/// The ELBO's terms and latent diagnostics over `data`, in batches of the workspace's size.
pub(crate) fn evaluate_into<T: Float>(
    vae: &Vae,
    params: &[T],
    data: &Dataset,
    ws: &mut Workspace<T>,
    seed: u64,
) -> Result<Evaluation> {
    let elbo = Elbo::new(vae);
    let (d, zd, l) = (vae.input_dim(), vae.latent_dim(), ws.samples());
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut sum = BatchElbo::default();
    let (mut s_mu, mut s_mu2, mut s_kl) = (vec![0.0; zd], vec![0.0; zd], vec![0.0; zd]);
    for (bi, idx) in indices.chunks(ws.max_rows()).enumerate() {
        let rows = idx.len();
        data.gather_unchecked(idx, &mut ws.x[..rows * d]);
        fill_normal(
            &mut stream(seed, Purpose::Eval, bi as u64),
            &mut ws.eps[..rows * l * zd],
        );
        let b = elbo.forward_unchecked(params, ws, rows)?;
        sum.recon += b.recon * rows as f64;
        sum.kl += b.kl * rows as f64;
        for s in ws.stats[..rows * 2 * zd].chunks_exact(2 * zd) {
            for j in 0..zd {
                let (mu, lv) = (s[j].as_f64(), s[zd + j].as_f64());
                s_mu[j] += mu;
                s_mu2[j] += mu * mu;
                s_kl[j] += 0.5 * (lv.exp_m1() - lv + mu * mu);
            }
        }
    }
    let n = data.len() as f64;
    let mean_variance: Vec<f64> = (0..zd)
        .map(|j| (s_mu2[j] / n - (s_mu[j] / n).powi(2)).max(0.0))
        .collect();
    Ok(Evaluation {
        terms: BatchElbo {
            recon: sum.recon / n,
            kl: sum.kl / n,
        }
        .into(),
        latent: LatentStats {
            kl_per_dim: s_kl.iter().map(|k| k / n).collect(),
            active_units: mean_variance
                .iter()
                .filter(|&&v| v > ACTIVE_UNIT_THRESHOLD)
                .count(),
            mean_variance,
        },
    })
}

/// The ELBO's terms and latent diagnostics over `data` for given parameters, in batches of
/// `batch_size` with `samples` z draws each, on `parallelism`'s threads.
///
/// ```
/// use elbo::{Parallelism, Vae, VaeConfig};
/// let data = elbo::data::shapes::generate(0, 0, 64)?;
/// let vae = Vae::new(VaeConfig::mnist().latent_dim(2))?;
/// let params: Vec<f32> = vae.init_params(0);
/// let e = elbo::train::evaluate(&vae, &params, &data, 32, 1, 0, &Parallelism::threads(1)?)?;
/// assert!(e.terms.kl >= 0.0 && e.latent.kl_per_dim.len() == 2);
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn evaluate<T: Float>(
    vae: &Vae,
    params: &[T],
    data: &Dataset,
    batch_size: usize,
    samples: usize,
    seed: u64,
    parallelism: &Parallelism,
) -> Result<Evaluation> {
    if params.len() != vae.num_params() {
        return Err(Error::shape("parameters", vae.num_params(), params.len()));
    }
    data.check_for(vae.input_dim(), &vae.likelihood.choice.domain())?;
    let mut ws = Workspace::new(vae, batch_size, samples, parallelism.count())?;
    parallelism.session(|| evaluate_into(vae, params, data, &mut ws, seed))
}
