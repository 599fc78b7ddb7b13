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
    let mut sum = BatchElbo::default();
    let (mut s_mu, mut s_mu2, mut s_kl) = (vec![0.0; zd], vec![0.0; zd], vec![0.0; zd]);
    // One batch of indices at a time: nothing a test row, however many rows there are.
    let batch = ws.max_rows();
    let mut idx = Vec::with_capacity(batch);
    for (bi, start) in (0..data.len()).step_by(batch).enumerate() {
        idx.clear();
        idx.extend(start..(start + batch).min(data.len()));
        let rows = idx.len();
        data.gather_unchecked(&idx, &mut ws.x[..rows * d]);
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

/// The encoder's means for every example of `data`, `len x Z` row-major in f64, computed in
/// batches of 512 on `parallelism`'s threads.
pub fn latent_means<T: Float>(
    vae: &Vae,
    params: &[T],
    data: &Dataset,
    parallelism: &Parallelism,
) -> Result<Vec<f64>> {
    if params.len() != vae.num_params() {
        return Err(Error::shape("parameters", vae.num_params(), params.len()));
    }
    if data.dim() != vae.input_dim() {
        return Err(Error::shape("dataset width", vae.input_dim(), data.dim()));
    }
    let d = vae.input_dim();
    let threads = parallelism.count();
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut out = Vec::with_capacity(data.len() * vae.latent_dim());
    let mut x = vec![T::zero(); 512.min(data.len()) * d];
    parallelism.session(|| {
        for idx in indices.chunks(512) {
            data.gather_unchecked(idx, &mut x[..idx.len() * d]);
            let (mu, _) = vae.encode(params, &x[..idx.len() * d], threads)?;
            out.extend(mu.iter().map(|v| v.as_f64()));
        }
        Ok(out)
    })
}

/// The accuracy of a k-nearest-neighbour classifier: each test point (a row of `test`, width
/// `dim`) takes the majority label of the `k` training points nearest to it in Euclidean
/// distance; a tie goes to the tied label whose nearest member is nearest. The share of test
/// points whose label it predicts.
///
/// ```
/// use elbo::train::knn_accuracy;
/// let train = [0.0, 0.1, 0.2, 5.0, 5.1, 5.2];             // 1-D: two clusters
/// let test = [0.05, 5.05, 4.0];
/// let acc = knn_accuracy(&train, &[0, 0, 0, 1, 1, 1], &test, &[0, 1, 0], 1, 3)?;
/// assert!((acc - 2.0 / 3.0).abs() < 1e-12);                // 4.0 lies in cluster 1
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn knn_accuracy(
    train: &[f64],
    train_labels: &[u8],
    test: &[f64],
    test_labels: &[u8],
    dim: usize,
    k: usize,
) -> Result<f64> {
    if dim == 0 || k == 0 {
        return Err(Error::config(
            "k-NN",
            format!("dim {dim}, k {k}"),
            "both must be at least 1",
        ));
    }
    if train.len() != train_labels.len() * dim || test.len() != test_labels.len() * dim {
        return Err(Error::shape(
            "k-NN points",
            "one label per point of width dim",
            train.len(),
        ));
    }
    if train_labels.len() < k || test_labels.is_empty() {
        return Err(Error::config(
            "k-NN",
            train_labels.len(),
            "needs at least k training points and one test point",
        ));
    }
    use rayon::prelude::*;
    let correct: usize = test
        .par_chunks(dim)
        .zip(test_labels.par_iter())
        .map(|(q, &want)| {
            let mut near: Vec<(f64, usize)> = train
                .chunks(dim)
                .enumerate()
                .map(|(i, p)| (p.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(), i))
                .collect();
            near.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            near.truncate(k);
            near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut votes = [0usize; 256];
            for &(_, i) in &near {
                votes[train_labels[i] as usize] += 1;
            }
            let best = votes.iter().copied().max().unwrap_or(0);
            // Nearest-first, the first label with the most votes.
            let predicted = near
                .iter()
                .map(|&(_, i)| train_labels[i])
                .find(|&l| votes[l as usize] == best)
                .unwrap_or(0);
            (predicted == want) as usize
        })
        .sum();
    Ok(correct as f64 / test_labels.len() as f64)
}
