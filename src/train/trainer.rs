//! The training loop: minibatches, noise, forward, backward, clipping and the optimizer step,
//! all in one workspace on a pool of the caller's size. Each epoch (and each evaluation) runs as
//! one session of that pool ([`crate::kernels::team`]), so its threads stay with the many short
//! parallel loops of every step.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, epoch_order};
use crate::error::{Error, Result};
use crate::kernels::scalar::Float;
use crate::model::Vae;
use crate::objective::{BatchElbo, Elbo, Iwae, Workspace};
use crate::rng::{Purpose, fill_normal, stream};
use crate::train::optim::{Optimizer, OptimizerConfig, clip_grad_norm};

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// z draws per example.
    pub samples: usize,
    /// Weight of the KL term (1 gives the ELBO; beta-VAE uses more).
    pub beta: f64,
    /// Epochs over which the KL weight rises linearly from 0 to `beta` (0: no warm-up).
    pub warmup_epochs: f64,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// Clip the gradient's norm to this, if set.
    pub clip_norm: Option<f64>,
    /// Seed of every random draw: initialisation, order, noise.
    pub seed: u64,
    /// Resample binary pixels from the grey levels at each step.
    pub binarize: bool,
    /// Train the importance-weighted bound with this many samples per point instead of the
    /// ELBO (Burda et al., 2015); `samples` must then be 1 and beta 1 with no warm-up.
    #[serde(default)]
    pub iw_samples: Option<usize>,
}

impl Default for TrainConfig {
    /// The reference MNIST training: Adam 1e-3, batch 128, 10 epochs, one sample.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 128,
            samples: 1,
            beta: 1.0,
            warmup_epochs: 0.0,
            optimizer: OptimizerConfig::adam(1e-3),
            clip_norm: None,
            seed: 0,
            binarize: false,
            iw_samples: None,
        }
    }
}

impl TrainConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("epochs", 0, "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch size", 0, "must be at least 1"));
        }
        if self.samples == 0 {
            return Err(Error::config("samples", 0, "must be at least 1"));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::config("beta", self.beta, "must be finite and >= 0"));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return Err(Error::config(
                "warm-up epochs",
                self.warmup_epochs,
                "must be finite and >= 0",
            ));
        }
        if let Some(c) = self.clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::config(
                "gradient clip norm",
                c,
                "must be finite and > 0",
            ));
        }
        if let Some(k) = self.iw_samples {
            if k == 0 {
                return Err(Error::config("importance samples", 0, "must be at least 1"));
            }
            if self.samples != 1 {
                return Err(Error::config(
                    "samples",
                    self.samples,
                    "the importance-weighted bound draws its own k samples; leave samples at 1",
                ));
            }
            if self.beta != 1.0 || self.warmup_epochs != 0.0 {
                return Err(Error::config(
                    "beta",
                    self.beta,
                    "beta and warm-up weight the ELBO's KL; the importance-weighted bound has none",
                ));
            }
        }
        self.optimizer.validate()
    }

    /// z draws per data point in each step.
    pub fn draws_per_point(&self) -> usize {
        self.iw_samples.unwrap_or(self.samples)
    }
}

/// A latent dimension counts as active when the variance over the data of its posterior mean
/// exceeds this (Burda et al., 2015).
pub const ACTIVE_UNIT_THRESHOLD: f64 = 1e-2;

/// Posterior-collapse diagnostics over a dataset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatentStats {
    /// Mean over the data of each dimension's KL(q(z_j|x) || N(0, 1)).
    pub kl_per_dim: Vec<f64>,
    /// Variance over the data of each dimension's posterior mean, `Cov_x(E_q[z_j])`.
    pub mean_variance: Vec<f64>,
    /// Dimensions whose `mean_variance` exceeds [`ACTIVE_UNIT_THRESHOLD`].
    pub active_units: usize,
}

/// The ELBO's terms and the latent diagnostics over a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Means of the ELBO's terms.
    pub terms: EpochTerms,
    /// Per-dimension KL and active units.
    pub latent: LatentStats,
}

/// Means over a pass of the loss and the ELBO's terms, per example (nats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochTerms {
    /// -ELBO: what the reference PyTorch example prints as its loss when beta = 1.
    pub neg_elbo: f64,
    /// E_q[log p(x|z)].
    pub recon: f64,
    /// KL(q(z|x) || p(z)).
    pub kl: f64,
    /// The importance-weighted bound, when that is what was trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iw_bound: Option<f64>,
}

impl From<BatchElbo> for EpochTerms {
    fn from(b: BatchElbo) -> Self {
        EpochTerms {
            neg_elbo: -b.elbo(),
            recon: b.recon,
            kl: b.kl,
            iw_bound: None,
        }
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// KL weight at the end of the epoch.
    pub beta: f64,
    /// Means over the epoch's training batches, as they were trained on.
    pub train: EpochTerms,
    /// On the test set after the epoch, if one was given.
    pub test: Option<EpochTerms>,
    /// Per-dimension KL and active units on the test set, if one was given.
    pub test_latent: Option<LatentStats>,
    /// Wall time of the training pass.
    pub train_seconds: f64,
    /// Training examples per second.
    pub images_per_sec: f64,
    /// Wall time of the test-set evaluation (0 without a test set).
    #[serde(default)]
    pub test_seconds: f64,
}

/// Running sums over the batches of an unfinished epoch, kept so that an epoch interrupted
/// and resumed reports exactly what an uninterrupted one would.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// Batches done.
    pub batches: usize,
    /// Examples seen.
    pub seen: usize,
    /// Sum over examples of the reconstruction term.
    pub recon: f64,
    /// Sum over examples of the KL.
    pub kl: f64,
    /// Sum over examples of the loss.
    pub loss: f64,
    /// Sum over examples of the importance-weighted bound.
    pub bound: f64,
}

/// What one training step saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResult {
    /// The batch means of the ELBO's terms.
    pub elbo: BatchElbo,
    /// The loss that was minimised.
    pub loss: f64,
    /// The importance-weighted bound, when that is the objective.
    pub iw_bound: Option<f64>,
}

/// Trains a [`Vae`] and holds everything a run needs.
pub struct Trainer<T: Float> {
    vae: Vae,
    config: TrainConfig,
    params: Vec<T>,
    grads: Vec<T>,
    optimizer: Optimizer<T>,
    ws: Workspace<T>,
    pool: std::sync::Arc<crate::kernels::pool::ThreadPool>,
    threads: usize,
    step: u64,
    epoch: usize,
    progress: EpochProgress,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl<T: Float> Trainer<T> {
    /// A trainer with fresh parameters drawn from `config.seed`, running on `threads` threads.
    pub fn new(vae: Vae, config: TrainConfig, threads: usize) -> Result<Self> {
        let params = vae.init_params(config.seed);
        Self::with_params(vae, config, params, threads)
    }

    /// A trainer starting from given parameters.
    pub fn with_params(
        vae: Vae,
        config: TrainConfig,
        params: Vec<T>,
        threads: usize,
    ) -> Result<Self> {
        config.validate()?;
        if threads == 0 {
            return Err(Error::config("threads", 0, "must be at least 1"));
        }
        if params.len() != vae.num_params() {
            return Err(Error::shape("parameters", vae.num_params(), params.len()));
        }
        let n = vae.num_params();
        let ws = Workspace::new(&vae, config.batch_size, config.draws_per_point(), threads)?;
        let pool = crate::kernels::pool::ThreadPool::new(threads)?;
        Ok(Trainer {
            optimizer: Optimizer::new(config.optimizer, n)?,
            grads: vec![T::zero(); n],
            vae,
            config,
            params,
            ws,
            pool: std::sync::Arc::new(pool),
            threads,
            step: 0,
            epoch: 0,
            progress: EpochProgress::default(),
            stop: None,
        })
    }

    /// The model.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }
    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
    /// The current parameters.
    pub fn params(&self) -> &[T] {
        &self.params
    }
    /// The gradient of the last step.
    pub fn grads(&self) -> &[T] {
        &self.grads
    }
    /// The optimizer.
    pub fn optimizer(&self) -> &Optimizer<T> {
        &self.optimizer
    }
    /// Epochs completed.
    pub fn epochs_done(&self) -> usize {
        self.epoch
    }
    /// Steps completed.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Where the epoch under way stands (all zero between epochs).
    pub fn epoch_progress(&self) -> &EpochProgress {
        &self.progress
    }

    /// Replaces the learning rate and the gradient clip, when given, keeping everything else
    /// (the optimizer's state among it): how a diverged run is continued more gently.
    pub fn with_overrides(mut self, (lr, clip): (Option<f64>, Option<f64>)) -> Result<Self> {
        if let Some(lr) = lr {
            match &mut self.config.optimizer {
                OptimizerConfig::Adam { lr: l, .. } | OptimizerConfig::Sgd { lr: l, .. } => *l = lr,
            }
        }
        if clip.is_some() {
            self.config.clip_norm = clip;
        }
        self.config.validate()?;
        self.optimizer.set_config(self.config.optimizer);
        Ok(self)
    }

    /// A flag the caller may set (from a signal handler, say) to stop training after the step
    /// under way: [`train_epoch`](Self::train_epoch) and [`fit`](Self::fit) then return
    /// [`Error::Interrupted`], and [`save_checkpoint`](Self::save_checkpoint) writes a
    /// checkpoint from which [`resume`](Self::resume) continues bit-identically.
    pub fn set_stop_flag(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.stop = Some(flag);
    }

    /// The KL weight at step `step` (1-based) of a run with `steps_per_epoch`.
    pub fn beta_at(&self, step: u64, steps_per_epoch: usize) -> f64 {
        let warm = self.config.warmup_epochs * steps_per_epoch as f64;
        if warm <= 0.0 {
            self.config.beta
        } else {
            self.config.beta * (step as f64 / warm).min(1.0)
        }
    }

    fn check_data(&self, data: &Dataset, what: &str) -> Result<()> {
        self.check_rows(data, 0..data.len(), what)
    }

    fn check_rows(
        &self,
        data: &Dataset,
        rows: impl IntoIterator<Item = usize>,
        what: &str,
    ) -> Result<()> {
        data.check_rows(
            rows,
            self.vae.input_dim(),
            &self.vae.config().likelihood.domain(),
        )
        .map_err(|e| match e {
            Error::InvalidData(m) => Error::InvalidData(format!("{what}: {m}")),
            other => other,
        })
    }

    /// One pass over `data` in a seeded order. `progress(examples_done, running_loss)` is
    /// called after each step.
    pub fn train_epoch(
        &mut self,
        data: &Dataset,
        progress: &mut (dyn FnMut(usize, f64) + Send),
    ) -> Result<EpochTerms> {
        self.check_data(data, "training data")?;
        let bs = self.config.batch_size;
        if bs > data.len() {
            return Err(Error::config(
                "batch size",
                bs,
                "is larger than the training set; use a batch no larger than the data",
            ));
        }
        let order = epoch_order(data.len(), self.config.seed, self.epoch as u64);
        let steps_per_epoch = data.len().div_ceil(bs);
        let pool = self.pool.clone();
        pool.install_session(|| -> Result<()> {
            // A resumed epoch skips the batches it had already taken.
            for idx in order.chunks(bs).skip(self.progress.batches) {
                let s = self.step_on(data, idx, steps_per_epoch)?;
                let (w, p) = (idx.len() as f64, &mut self.progress);
                p.recon += s.elbo.recon * w;
                p.kl += s.elbo.kl * w;
                p.loss += s.loss * w;
                p.bound += s.iw_bound.unwrap_or(0.0) * w;
                p.seen += idx.len();
                p.batches += 1;
                progress(p.seen, p.loss / p.seen as f64);
                let stop = self
                    .stop
                    .as_ref()
                    .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
                if stop && self.progress.batches < steps_per_epoch {
                    return Err(Error::Interrupted {
                        epoch: self.epoch + 1,
                        step: self.step,
                        batch: self.progress.batches,
                        batches: steps_per_epoch,
                    });
                }
            }
            Ok(())
        })?;
        let p = std::mem::take(&mut self.progress);
        self.epoch += 1;
        let n = p.seen as f64;
        let mut terms: EpochTerms = BatchElbo {
            recon: p.recon / n,
            kl: p.kl / n,
        }
        .into();
        terms.iw_bound = self.config.iw_samples.map(|_| p.bound / n);
        Ok(terms)
    }

    /// One optimizer step on the examples `indices` of `data` (at most the batch size), as the
    /// epoch loop takes it: gather, noise, forward, backward, clipping, update. The step's
    /// random draws are those of the step number it is.
    pub fn step(&mut self, data: &Dataset, indices: &[usize]) -> Result<StepResult> {
        if indices.is_empty()
            || indices.len() > self.config.batch_size
            || indices.iter().any(|&i| i >= data.len())
        {
            return Err(Error::shape(
                "step indices",
                format!(
                    "1 to {} indices below {}",
                    self.config.batch_size,
                    data.len()
                ),
                format!("{} indices", indices.len()),
            ));
        }
        // Only this step's rows: checking the whole dataset at every step would be O(N).
        self.check_rows(data, indices.iter().copied(), "training data")?;
        let steps_per_epoch = data.len().div_ceil(self.config.batch_size);
        let pool = self.pool.clone();
        pool.install_session(|| self.step_on(data, indices, steps_per_epoch))
    }

    fn step_on(
        &mut self,
        data: &Dataset,
        idx: &[usize],
        steps_per_epoch: usize,
    ) -> Result<StepResult> {
        let rows = idx.len();
        let step = self.step + 1;
        let d = self.vae.input_dim();
        if self.config.binarize {
            let mut rng = stream(self.config.seed, Purpose::Binarize, step);
            data.gather_binarized(idx, &mut self.ws.x[..rows * d], &mut rng)?;
        } else {
            data.gather(idx, &mut self.ws.x[..rows * d])?;
        }
        let zl = rows * self.config.draws_per_point() * self.vae.latent_dim();
        fill_normal(
            &mut stream(self.config.seed, Purpose::Noise, step),
            &mut self.ws.eps[..zl],
        );
        let beta = self.beta_at(step, steps_per_epoch);
        let (elbo, loss, iw_bound) = if self.config.iw_samples.is_some() {
            let r = Iwae::new(&self.vae).forward_unchecked(&self.params, &mut self.ws, rows);
            (r.elbo, -r.bound, Some(r.bound))
        } else {
            let b = Elbo::new(&self.vae).forward_unchecked(&self.params, &mut self.ws, rows);
            (b, b.loss(beta), None)
        };
        if !loss.is_finite() {
            return Err(Error::Diverged {
                epoch: self.epoch + 1,
                step,
                loss,
                hint: "the learning rate is probably too high for this model; \
                       try a smaller --lr, or --clip to bound the gradient",
            });
        }
        if iw_bound.is_some() {
            Iwae::new(&self.vae).backward_unchecked(
                &self.params,
                &mut self.ws,
                rows,
                &mut self.grads,
            );
        } else {
            Elbo::new(&self.vae).backward_unchecked(
                &self.params,
                &mut self.ws,
                rows,
                T::of(beta),
                &mut self.grads,
            );
        }
        if let Some(c) = self.config.clip_norm {
            clip_grad_norm(&mut self.grads, c);
        }
        self.optimizer.step(&mut self.params, &self.grads)?;
        self.step = step;
        Ok(StepResult {
            elbo,
            loss,
            iw_bound,
        })
    }

    /// The ELBO's terms averaged over `data` with the current parameters, one noise stream per
    /// evaluation batch (the same for every call, so epochs are compared on equal noise).
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation> {
        self.check_data(data, "evaluation data")?;
        let params = &self.params;
        let (vae, ws, seed) = (&self.vae, &mut self.ws, self.config.seed);
        Ok(self
            .pool
            .install_session(|| evaluate_into(vae, params, data, ws, seed)))
    }

    /// Trains for the configured epochs, evaluating on `test` after each; `on_epoch` sees each
    /// report (and may stop the run by returning an error).
    pub fn fit(
        &mut self,
        train: &Dataset,
        test: Option<&Dataset>,
        progress: &mut (dyn FnMut(usize, f64) + Send),
        on_epoch: &mut dyn FnMut(&EpochReport, &Self) -> Result<()>,
    ) -> Result<Vec<EpochReport>> {
        self.check_data(train, "training data")?;
        if let Some(t) = test {
            self.check_data(t, "test data")?;
        }
        let mut reports = Vec::new();
        while self.epoch < self.config.epochs {
            let start = Instant::now();
            let train_terms = self.train_epoch(train, progress)?;
            let secs = start.elapsed().as_secs_f64();
            let eval_start = Instant::now();
            let test_eval = test.map(|t| self.evaluate(t)).transpose()?;
            let test_seconds = eval_start.elapsed().as_secs_f64();
            let steps_per_epoch = train.len().div_ceil(self.config.batch_size);
            let report = EpochReport {
                epoch: self.epoch,
                beta: self.beta_at(self.step, steps_per_epoch),
                train: train_terms,
                test: test_eval.as_ref().map(|e| e.terms),
                test_latent: test_eval.map(|e| e.latent),
                train_seconds: secs,
                images_per_sec: train.len() as f64 / secs,
                test_seconds,
            };
            on_epoch(&report, self)?;
            reports.push(report);
        }
        Ok(reports)
    }

    /// Allows (the default) or forbids the sparse first-layer products used when a batch is
    /// mostly zeros; see [`Workspace::set_sparse_input`]. For measuring the dense path alone.
    pub fn set_sparse_input(&mut self, allow: bool) {
        self.ws.set_sparse_input(allow);
    }

    /// Threads in use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Writes a checkpoint from which [`resume`](Self::resume) continues bit-identically:
    /// parameters, the optimizer's state, the training settings, and where the run stands
    /// (epochs, steps). Every random draw is a function of (seed, epoch or step), so nothing
    /// else is needed. `extra` is added to the metadata.
    pub fn save_checkpoint(&self, path: &std::path::Path, extra: &[(&str, String)]) -> Result<()> {
        let mut meta = vec![
            (
                KEY_TRAINING,
                serde_json::to_string(&self.config).expect("serialises"),
            ),
            (KEY_EPOCH, self.epoch.to_string()),
            (KEY_STEP, self.step.to_string()),
            (KEY_OPTIMIZER_STEPS, self.optimizer.steps().to_string()),
            (
                KEY_PROGRESS,
                serde_json::to_string(&self.progress).expect("serialises"),
            ),
        ];
        meta.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        crate::train::checkpoint::save_with_state(
            path,
            &self.vae,
            &self.params,
            Some(self.optimizer.state()),
            &meta,
        )
    }

    /// Continues a run from a checkpoint written by [`save_checkpoint`](Self::save_checkpoint),
    /// on `threads` threads; `epochs`, if given, replaces the run's total number of epochs.
    pub fn resume(path: &std::path::Path, threads: usize, epochs: Option<usize>) -> Result<Self> {
        let loaded = crate::train::checkpoint::load::<T>(path)?;
        let bad = |r: &str| Error::malformed(path, format!("cannot resume: {r}"));
        let get = |k: &str| {
            loaded
                .metadata
                .get(k)
                .ok_or_else(|| bad(&format!("no '{k}' in the metadata")))
        };
        let mut config: TrainConfig =
            serde_json::from_str(get(KEY_TRAINING)?).map_err(|e| bad(&e.to_string()))?;
        if let Some(e) = epochs {
            config.epochs = e;
        }
        let num = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .map_err(|_| bad(&format!("'{k}' is not a number")))
        };
        let (epoch, step, opt_steps) = (
            num(KEY_EPOCH)? as usize,
            num(KEY_STEP)?,
            num(KEY_OPTIMIZER_STEPS)?,
        );
        let state = loaded
            .optimizer_state
            .clone()
            .ok_or_else(|| bad("no optimizer state in the file"))?;
        let n = loaded.vae.num_params();
        let mut t = Self::with_params(loaded.vae, config, loaded.params, threads)?;
        t.optimizer = Optimizer::from_state(t.config.optimizer, n, state, opt_steps)?;
        t.epoch = epoch;
        t.step = step;
        if let Some(p) = loaded.metadata.get(KEY_PROGRESS) {
            t.progress =
                serde_json::from_str(p).map_err(|e| bad(&format!("bad epoch progress ({e})")))?;
        }
        Ok(t)
    }
}

/// Metadata keys of a training checkpoint.
const KEY_TRAINING: &str = "elbo.training";
const KEY_EPOCH: &str = "elbo.epoch";
const KEY_STEP: &str = "elbo.step";
const KEY_OPTIMIZER_STEPS: &str = "elbo.optimizer_steps";
const KEY_PROGRESS: &str = "elbo.epoch_progress";

/// The ELBO's terms and latent diagnostics over `data`, in batches of the workspace's size.
fn evaluate_into<T: Float>(
    vae: &Vae,
    params: &[T],
    data: &Dataset,
    ws: &mut Workspace<T>,
    seed: u64,
) -> Evaluation {
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
        let b = elbo.forward_unchecked(params, ws, rows);
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
    Evaluation {
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
    }
}

/// The ELBO's terms and latent diagnostics over `data` for given parameters, in batches of
/// `batch_size` with `samples` z draws each, on `threads` threads.
pub fn evaluate<T: Float>(
    vae: &Vae,
    params: &[T],
    data: &Dataset,
    batch_size: usize,
    samples: usize,
    seed: u64,
    threads: usize,
) -> Result<Evaluation> {
    if params.len() != vae.num_params() {
        return Err(Error::shape("parameters", vae.num_params(), params.len()));
    }
    data.check_for(vae.input_dim(), &vae.config().likelihood.domain())?;
    let mut ws = Workspace::new(vae, batch_size, samples, threads)?;
    let pool = crate::kernels::pool::ThreadPool::new(threads.max(1))?;
    Ok(pool.install_session(|| evaluate_into(vae, params, data, &mut ws, seed)))
}
