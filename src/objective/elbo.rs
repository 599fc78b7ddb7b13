//! The evidence lower bound and its gradient.
//!
//! For a data point x with encoder output (mu, logvar), L draws eps_l ~ N(0, I) and
//! z_l = mu + exp(logvar/2) eps_l:
//!
//! ```text
//! ELBO(x) ~= (1/L) sum_l log p(x | z_l)  -  KL(N(mu, exp(logvar)) || N(0, I))
//!             \______ reconstruction ______/  \____________ KL ____________/
//! ```
//!
//! Training minimises the batch mean of `-recon + beta * KL`; `beta = 1` is the true ELBO.
//! Gradients flow decoder -> z -> (mu, logvar) by reparameterisation, plus the KL's own
//! gradient at (mu, logvar), then through the encoder.

use crate::error::{Error, Result};
use crate::kernels::Precision;
use crate::kernels::scalar::Float;
use crate::model::mlp::ln_1p_rows;
use crate::model::{MlpBuffers, Reparameterize, Vae};

/// Every buffer a forward and backward pass needs, sized once for batches of up to `max_rows`
/// data points with `samples` z draws each; a step allocates nothing.
#[derive(Clone, Debug)]
pub struct Workspace<T> {
    max_rows: usize,
    samples: usize,
    /// Threads the matrix products may use (of the session this thread leads, else of the
    /// current rayon pool).
    pub threads: usize,
    /// The input batch, `rows x D`; callers fill it.
    pub x: Vec<T>,
    /// Reparameterisation noise, `rows L x Z`; callers fill it.
    pub eps: Vec<T>,
    /// The encoder's input ln(1 + x), `rows x D`, when the model takes it (empty otherwise).
    x_in: Vec<T>,
    enc: MlpBuffers<T>,
    /// Encoder head output [mu | logvar], `rows x 2Z`.
    pub stats: Vec<T>,
    /// Latent samples, `rows L x Z`.
    pub z: Vec<T>,
    dec: MlpBuffers<T>,
    /// log p(x | z) per decoder row (`rows L`).
    pub log_px_z: Vec<T>,
    /// KL per data point (`rows`).
    pub kl: Vec<T>,
    /// What the likelihood's forward pass keeps for its backward pass, `rows L x` its cache width.
    lik_cache: Vec<T>,
    /// Log importance weights log p(x, z) - log q(z|x) per decoder row (importance sampling).
    pub log_w: Vec<T>,
    /// Per-decoder-row weights of the likelihood's gradient (self-normalised importance
    /// weights for the importance-weighted bound).
    pub weights: Vec<T>,
    pub(crate) grad_a: Vec<T>,
    pub(crate) grad_b: Vec<T>,
    pub(crate) dz: Vec<T>,
    pub(crate) dstats: Vec<T>,
    /// The shapes of the model it was sized for: every dense layer's (in, out) and the number
    /// of parameters, so that a workspace is never used with another model.
    model_shape: (Vec<(usize, usize)>, usize),
    /// Rows of the last forward pass, which a backward pass must match.
    pub(crate) forward_rows: Option<usize>,
}

impl<T: Float> Workspace<T> {
    /// Buffers for `vae` with up to `max_rows` data points per batch and `samples` z draws each.
    pub fn new(vae: &Vae, max_rows: usize, samples: usize, threads: usize) -> Result<Self> {
        if max_rows == 0 {
            return Err(Error::config("batch size", 0, "must be at least 1"));
        }
        if samples == 0 {
            return Err(Error::config(
                "samples per data point",
                0,
                "must be at least 1",
            ));
        }
        let (d, zd) = (vae.input_dim(), vae.latent_dim());
        let dec_rows = max_rows * samples;
        let widest = vae
            .dense_layers()
            .map(|l| l.n_out.max(l.n_in))
            .max()
            .unwrap_or(d);
        let zeros = |n: usize| vec![T::zero(); n];
        Ok(Workspace {
            max_rows,
            samples,
            threads: threads.max(1),
            x: zeros(max_rows * d),
            eps: zeros(dec_rows * zd),
            x_in: zeros(if vae.config().log1p_input {
                max_rows * d
            } else {
                0
            }),
            enc: vae.encoder.buffers(max_rows)?,
            stats: zeros(max_rows * 2 * zd),
            z: zeros(dec_rows * zd),
            // The decoder's input is a latent sample, never sparse: its first layer is dense.
            dec: {
                let mut dec = vae.decoder.buffers(dec_rows)?;
                dec.set_sparse_input(false);
                dec
            },
            log_px_z: zeros(dec_rows),
            kl: zeros(max_rows),
            lik_cache: zeros(dec_rows * vae.likelihood.cache_width()),
            log_w: zeros(dec_rows),
            weights: zeros(dec_rows),
            grad_a: zeros(dec_rows * widest),
            grad_b: zeros(dec_rows * widest),
            dz: zeros(dec_rows * zd),
            dstats: zeros(max_rows * 2 * zd),
            model_shape: model_shape(vae),
            forward_rows: None,
        })
    }

    /// Training mode (batch statistics, dropout masks) or evaluation mode (running averages, no
    /// dropout; the default). Models without batch normalisation or dropout compute the same
    /// either way.
    pub fn set_training(&mut self, training: bool) {
        self.enc.set_training(training);
        self.dec.set_training(training);
    }

    /// Draws the encoder's and decoder's dropout masks for a training step (or one shard of
    /// it) from the (seed, `index`) stream, in a fixed order: the same masks whatever the
    /// thread count.
    pub fn draw_dropout_masks(&mut self, vae: &Vae, seed: u64, index: u64) {
        let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Dropout, index);
        let rows = [self.max_rows, self.max_rows * self.samples];
        for ((mlp, buf), rows) in [(&vae.encoder, &mut self.enc), (&vae.decoder, &mut self.dec)]
            .into_iter()
            .zip(rows)
        {
            for (layer, mask) in mlp.layers.iter().zip(buf.masks_mut()) {
                if let Some(d) = layer.dropout {
                    d.draw_mask(&mut rng, &mut mask[..rows * layer.dense.n_out]);
                }
            }
        }
    }

    /// After a training pass: moves batch normalisation's running averages in `params`
    /// towards the statistics of that pass.
    pub fn update_running_stats(&self, vae: &Vae, params: &mut [T]) -> Result<()> {
        vae.encoder.update_running_stats(params, &self.enc)?;
        vae.decoder.update_running_stats(params, &self.dec)
    }

    /// For one shard of a batch: writes `weight` times the last training pass's batch
    /// normalisation statistics where the running averages sit in `grads` (see
    /// [`crate::model::BatchNorm::write_shard_stats`]).
    pub fn write_shard_stats(&self, vae: &Vae, grads: &mut [T], weight: f64) -> Result<()> {
        vae.encoder.write_shard_stats(grads, &self.enc, weight)?;
        vae.decoder.write_shard_stats(grads, &self.dec, weight)
    }

    /// After a sharded step: moves the running averages towards the statistics the shards
    /// left, summed, in `grads`, and zeroes them there.
    pub fn update_running_from(vae: &Vae, params: &mut [T], grads: &mut [T]) -> Result<()> {
        vae.encoder.update_running_from(params, grads)?;
        vae.decoder.update_running_from(params, grads)
    }

    /// The arithmetic of every dense layer's products, encoder, head and decoder: f32 (the
    /// default) or bf16 operands with f32 sums ([`Precision::Bf16`], f32 models only).
    /// The sparse first layer's products, the likelihood and everything elementwise stay f32.
    pub fn set_precision(&mut self, precision: Precision) {
        self.enc.set_precision(precision);
        self.dec.set_precision(precision);
    }

    /// The arithmetic of the dense layers' products.
    pub fn precision(&self) -> Precision {
        // The encoder's and decoder's buffers hold it; the head follows them.
        self.enc.precision()
    }

    /// Allows (the default) or forbids sparse first-layer products for inputs that are mostly
    /// zeros ([`crate::model::SPARSE_INPUT_DENSITY`]). Results agree to rounding either way.
    /// Only the encoder's input can be sparse: the decoder's is a latent sample.
    pub fn set_sparse_input(&mut self, allow: bool) {
        self.enc.set_sparse_input(allow);
    }

    /// Largest batch it holds.
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// z draws per data point.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The decoder's output (logits or means) for the last forward pass, `rows L x D`.
    pub fn decoder_output(&self) -> &[T] {
        self.dec.outputs.last().map(|v| &v[..]).unwrap_or(&[])
    }

    /// Reconstruction term (1/L) sum_l log p(x | z_l) of data row `b` from the last forward pass.
    pub fn recon_of(&self, b: usize) -> f64 {
        let l = self.samples;
        self.log_px_z[b * l..(b + 1) * l]
            .iter()
            .map(|v| v.as_f64())
            .sum::<f64>()
            / l as f64
    }
}

/// What the encoder reads: `x` itself, or ln(1 + x) written into `x_in` when the model takes
/// the log1p transform (its derivative is not needed: x is data).
fn encoder_input<'w, T: Float>(vae: &Vae, x: &'w [T], x_in: &'w mut [T], rows: usize) -> &'w [T] {
    if !vae.config().log1p_input {
        return x;
    }
    let n = rows * vae.input_dim();
    ln_1p_rows(&x[..n], &mut x_in[..n], vae.input_dim());
    &x_in[..n]
}

fn model_shape(vae: &Vae) -> (Vec<(usize, usize)>, usize) {
    (
        vae.dense_layers().map(|l| (l.n_in, l.n_out)).collect(),
        vae.num_params(),
    )
}

impl<T: Float> Workspace<T> {
    /// Checks a caller's call: the workspace was sized for `vae`, `params` fit it, and `rows`
    /// is between 1 and the workspace's batch size.
    pub(crate) fn check_call(&self, vae: &Vae, params: &[T], rows: usize) -> Result<()> {
        // Compared layer by layer, so the check allocates nothing.
        let (layers, n) = &self.model_shape;
        let same = *n == vae.num_params()
            && layers
                .iter()
                .copied()
                .eq(vae.dense_layers().map(|l| (l.n_in, l.n_out)));
        if !same {
            return Err(Error::shape(
                "workspace",
                "one sized for this model (Workspace::new with the same Vae)",
                "one sized for another model",
            ));
        }
        if params.len() != vae.num_params() {
            return Err(Error::shape("parameters", vae.num_params(), params.len()));
        }
        if rows == 0 || rows > self.max_rows {
            return Err(Error::shape(
                "rows",
                format!("1 to {} (the workspace's batch size)", self.max_rows),
                rows,
            ));
        }
        Ok(())
    }

    /// Checks a backward call: as [`check_call`](Self::check_call), after a forward pass on the
    /// same rows, with a gradient buffer of the model's size.
    pub(crate) fn check_backward(
        &self,
        vae: &Vae,
        params: &[T],
        rows: usize,
        grads: &[T],
    ) -> Result<()> {
        self.check_call(vae, params, rows)?;
        if grads.len() != vae.num_params() {
            return Err(Error::shape(
                "gradient buffer",
                vae.num_params(),
                grads.len(),
            ));
        }
        if self.forward_rows != Some(rows) {
            return Err(Error::config(
                "backward rows",
                rows,
                match self.forward_rows {
                    Some(_) => "must be the rows of the forward pass just before it",
                    None => "a backward pass needs a forward pass on the same workspace first",
                },
            ));
        }
        Ok(())
    }
}

/// Batch means of the ELBO's two terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchElbo {
    /// Mean over data points of E_q[log p(x|z)] (estimated with L samples).
    pub recon: f64,
    /// Mean over data points of KL(q(z|x) || p(z)).
    pub kl: f64,
}

impl BatchElbo {
    /// recon - KL.
    pub fn elbo(&self) -> f64 {
        self.recon - self.kl
    }
    /// The training loss -recon + beta KL.
    pub fn loss(&self, beta: f64) -> f64 {
        -self.recon + beta * self.kl
    }
}

/// The ELBO of a [`Vae`], forward and backward.
///
/// ```
/// use elbo::{Elbo, Vae, VaeConfig, Workspace};
/// let vae = Vae::new(VaeConfig::mnist().input_dim(4).encoder_hidden(vec![8]).latent_dim(2).decoder_hidden(vec![8]))?;
/// let params: Vec<f64> = vae.init_params(1);
/// let mut ws = Workspace::<f64>::new(&vae, 2, 1, 1)?;   // 2 rows, 1 sample each
/// ws.x.copy_from_slice(&[0.0, 0.5, 1.0, 0.2, 0.9, 0.1, 0.3, 0.7]);
/// ws.eps.copy_from_slice(&[0.1, -0.3, 0.8, 0.2]);        // noise held fixed
/// let terms = Elbo::new(&vae).forward(&params, &mut ws, 2)?;
/// assert!(terms.kl >= 0.0 && terms.elbo() < 0.0);
/// let mut grads = vec![0.0; vae.num_params()];
/// Elbo::new(&vae).backward(&params, &mut ws, 2, 1.0, &mut grads)?; // d(-ELBO)/d(params)
/// assert!(grads.iter().any(|g| *g != 0.0));
/// // Sizes are checked, never trusted: 3 rows do not fit a workspace of 2.
/// assert!(Elbo::new(&vae).forward(&params, &mut ws, 3).is_err());
/// # Ok::<(), elbo::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Elbo<'a> {
    /// The model.
    pub vae: &'a Vae,
}

impl<'a> Elbo<'a> {
    /// Wraps a model.
    pub fn new(vae: &'a Vae) -> Self {
        Elbo { vae }
    }

    pub(crate) fn reparam(&self, ws: &Workspace<impl Float>) -> Reparameterize {
        Reparameterize {
            latent: self.vae.latent_dim(),
            samples: ws.samples,
        }
    }

    /// Runs encoder, reparameterisation, decoder, likelihood and KL on the first `rows` rows of
    /// `ws.x` with noise `ws.eps`, keeping everything the backward pass needs; returns the batch
    /// means of the two terms. Per-point values stay in `ws.log_px_z` and `ws.kl`.
    ///
    /// `rows` must be between 1 and the workspace's batch size, the workspace sized for this
    /// model and `params` of its length: otherwise [`Error::Shape`].
    pub fn forward<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
    ) -> Result<BatchElbo> {
        ws.check_call(self.vae, params, rows)?;
        self.forward_unchecked(params, ws, rows)
    }

    /// [`forward`](Self::forward) once its sizes are checked.
    pub(crate) fn forward_unchecked<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
    ) -> Result<BatchElbo> {
        ws.forward_rows = Some(rows);
        let vae = self.vae;
        let t = ws.threads;
        let l = ws.samples;
        let input = if vae.config().log1p_input && !vae.encoder.layers.is_empty() {
            // Sparse counts: only the nonzeros are transformed; x_in is written only when the
            // batch is too dense for the sparse first layer.
            let (x, x_in) = (&ws.x[..], &mut ws.x_in[..]);
            vae.encoder
                .forward_log1p(params, x, x_in, &mut ws.enc, rows, t)?;
            &ws.x_in[..]
        } else {
            let input = encoder_input(vae, &ws.x, &mut ws.x_in, rows);
            vae.encoder.forward(params, input, &mut ws.enc, rows, t)?;
            input
        };
        let h = ws.enc.outputs.last().map(|v| &v[..]).unwrap_or(input);
        vae.head
            .forward_in(ws.enc.precision(), params, h, &mut ws.stats, rows, t)?;
        if let Some(c) = &vae.clamp {
            c.forward(&mut ws.stats, rows)?;
        }
        self.reparam(ws)
            .forward(&ws.stats, &ws.eps, &mut ws.z, rows)?;
        vae.decoder
            .forward(params, &ws.z, &mut ws.dec, rows * l, t)?;
        let out = ws.dec.outputs.last().expect("decoder has a layer");
        vae.likelihood.forward(
            params,
            &ws.x,
            out,
            l,
            &mut ws.log_px_z,
            &mut ws.lik_cache,
            rows * l,
        )?;
        vae.kl.forward(&ws.stats, &mut ws.kl, rows)?;
        let recon = ws.log_px_z[..rows * l]
            .iter()
            .map(|v| v.as_f64())
            .sum::<f64>()
            / (rows * l) as f64;
        let kl = ws.kl[..rows].iter().map(|v| v.as_f64()).sum::<f64>() / rows as f64;
        Ok(BatchElbo { recon, kl })
    }

    /// Writes into `grads` the gradient of the batch mean of `-recon + beta KL` with respect to
    /// every parameter, after a [`forward`](Self::forward) on the same workspace and rows:
    ///
    /// 1. dL/da = (1/(B L)) d(-log p(x|a))/da at the decoder output a (the likelihood's backward);
    /// 2. back through the decoder to dL/dz;
    /// 3. dL/d(mu, logvar) from z = mu + exp(logvar/2) eps (reparameterisation backward),
    ///    plus (beta/B) dKL/d(mu, logvar);
    /// 4. back through the head and the encoder (no gradient for x itself).
    ///
    /// Sizes are checked as for [`forward`](Self::forward), and `rows` must be those of the
    /// forward pass just before.
    pub fn backward<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
        beta: T,
        grads: &mut [T],
    ) -> Result<()> {
        ws.check_backward(self.vae, params, rows, grads)?;
        self.backward_unchecked(params, ws, rows, rows, beta, grads)
    }

    /// [`backward`](Self::backward) once its sizes are checked.
    /// The loss is the sum over these `rows` divided by `mean_over`: `rows` itself for a
    /// batch, the whole batch's rows for one shard of it (so that the shards' gradients add up
    /// to the batch's without a pass to weight them).
    pub(crate) fn backward_unchecked<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
        mean_over: usize,
        beta: T,
        grads: &mut [T],
    ) -> Result<()> {
        let scale = T::one() / T::of((mean_over * ws.samples) as f64);
        self.backward_decoder(params, ws, rows, scale, false, grads)?;
        let zd = self.vae.latent_dim();
        let reparam = self.reparam(ws);
        let dstats = &mut ws.dstats[..rows * 2 * zd];
        dstats.fill(T::zero());
        reparam.backward(&ws.stats, &ws.eps, &ws.dz, dstats, rows)?;
        self.vae
            .kl
            .backward(&ws.stats, beta / T::of(mean_over as f64), dstats, rows)?;
        self.backward_encoder(params, ws, rows, grads)
    }

    /// Steps 1-2 of the backward pass: from -scale * sum_r c_r log p(x|z_r) to dL/dz in
    /// `ws.dz`, with c_r = `ws.weights[r]` when `weighted`, else 1.
    pub(crate) fn backward_decoder<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
        scale: T,
        weighted: bool,
        grads: &mut [T],
    ) -> Result<()> {
        let vae = self.vae;
        let (t, l) = (ws.threads, ws.samples);
        let dec_rows = rows * l;
        let out = ws.dec.outputs.last().expect("decoder has a layer");
        let weights = weighted.then_some(&ws.weights[..dec_rows]);
        vae.likelihood.backward(
            params,
            &ws.x,
            out,
            &ws.lik_cache,
            l,
            scale,
            weights,
            &mut ws.grad_a,
            grads,
            dec_rows,
        )?;
        vae.decoder.backward(
            params,
            &ws.z,
            &mut ws.dec,
            &mut ws.grad_a,
            &mut ws.grad_b,
            grads,
            Some(&mut ws.dz),
            dec_rows,
            t,
        )
    }

    /// Step 4: from dL/d(mu, logvar) in `ws.dstats` back through the head and the encoder.
    pub(crate) fn backward_encoder<T: Float>(
        &self,
        params: &[T],
        ws: &mut Workspace<T>,
        rows: usize,
        grads: &mut [T],
    ) -> Result<()> {
        let vae = self.vae;
        let t = ws.threads;
        if let Some(c) = &vae.clamp {
            c.backward(&ws.stats, &mut ws.dstats, rows)?;
        }
        let dstats = &ws.dstats[..rows * 2 * vae.latent_dim()];
        let has_hidden = !vae.encoder.layers.is_empty();
        // The forward pass left ln(1 + x) in x_in when the model takes it, unless the first
        // layer took it sparse (then the backward pass reads it from there, not from x_in).
        let input = if vae.config().log1p_input {
            &ws.x_in[..]
        } else {
            &ws.x[..]
        };
        let h = ws.enc.outputs.last().map(|v| &v[..]).unwrap_or(input);
        let dh = if has_hidden {
            Some(&mut ws.grad_a[..])
        } else {
            None
        };
        vae.head
            .backward_in(ws.enc.precision(), params, h, dstats, grads, dh, rows, t)?;
        if has_hidden {
            vae.encoder.backward(
                params,
                input,
                &mut ws.enc,
                &mut ws.grad_a,
                &mut ws.grad_b,
                grads,
                None,
                rows,
                t,
            )?;
        }
        Ok(())
    }

    /// Checks a batch given by a caller: `x` must hold whole rows of width D with finite values
    /// that suit the likelihood. Returns the number of rows.
    pub fn check_batch<T: Float>(&self, x: &[T]) -> Result<usize> {
        let d = self.vae.input_dim();
        if x.is_empty() || !x.len().is_multiple_of(d) {
            return Err(Error::shape(
                "input batch",
                format!("a non-empty multiple of the model's input width {d}"),
                format!("{} values", x.len()),
            ));
        }
        let lik = self.vae.likelihood_info();
        if let Some(i) = x.iter().position(|v| !lik.accepts(v.as_f64())) {
            return Err(Error::InvalidData(format!(
                "input row {}, column {} is {}, which the {} likelihood cannot model ({})",
                i / d,
                i % d,
                x[i],
                lik.name(),
                lik.needs()
            )));
        }
        Ok(x.len() / d)
    }

    /// [`per_point`](Self::per_point) for an `ndarray` batch (any memory order).
    pub fn per_point_array<T: Float>(
        &self,
        params: &[T],
        x: ndarray::ArrayView2<'_, T>,
        samples: usize,
        seed: u64,
        threads: usize,
    ) -> Result<Vec<(f64, f64)>> {
        let d = self.vae.input_dim();
        if x.ncols() != d {
            return Err(Error::shape(
                "input batch",
                format!("{d} columns"),
                x.ncols(),
            ));
        }
        let flat: Vec<T> = x.iter().copied().collect();
        self.per_point(params, &flat, samples, seed, threads)
    }

    /// The ELBO's two terms per data point for a caller's batch `x` (`rows x D`, checked), with
    /// `samples` z draws each from `seed`. Returns (recon, KL) per row.
    pub fn per_point<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        samples: usize,
        seed: u64,
        threads: usize,
    ) -> Result<Vec<(f64, f64)>> {
        let rows = self.check_batch(x)?;
        if params.len() != self.vae.num_params() {
            return Err(Error::shape(
                "parameters",
                self.vae.num_params(),
                params.len(),
            ));
        }
        let mut ws = Workspace::new(self.vae, rows, samples, threads)?;
        ws.x[..x.len()].copy_from_slice(x);
        let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Eval, 0);
        crate::rng::fill_normal(&mut rng, &mut ws.eps);
        self.forward_unchecked(params, &mut ws, rows)?;
        Ok((0..rows)
            .map(|b| (ws.recon_of(b), ws.kl[b].as_f64()))
            .collect())
    }
}
