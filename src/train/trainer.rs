//! The training loop: minibatches, noise, forward, backward, clipping and the optimizer step,
//! all in one workspace on a pool of the caller's size. Each epoch (and each evaluation) runs as
//! one session of that pool (the kernels' team of threads), so its threads stay with the many short
//! parallel loops of every step.

use std::time::Instant;

use crate::data::{Dataset, EpochOrder};
use crate::error::{Error, Result};
use crate::kernels::pool::Parallelism;
use crate::kernels::scalar::Float;
use crate::model::{Vae, VaeConfig};
use crate::objective::{BatchElbo, Elbo, Iwae, Workspace};
use crate::rng::{Purpose, fill_normal, stream};
use crate::train::config::TrainConfig;
use crate::train::evaluation::evaluate_into;
use crate::train::optim::{Optimizer, OptimizerConfig, clip_grad_norm};
use crate::train::reports::{EpochProgress, EpochReport, EpochTerms, Evaluation, StepResult};
use crate::train::trained::TrainedVae;

/// Trains a [`Vae`] and holds everything a run needs.
pub struct Trainer<T: Float> {
    pub(super) vae: Vae,
    pub(super) config: TrainConfig,
    pub(super) params: Vec<T>,
    pub(super) grads: Vec<T>,
    pub(super) optimizer: Optimizer<T>,
    pub(super) ws: Workspace<T>,
    pub(super) parallelism: Parallelism,
    pub(super) step: u64,
    pub(super) epoch: usize,
    pub(super) progress: EpochProgress,
    pub(super) stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl<T: Float> Trainer<T> {
    /// A trainer with fresh parameters drawn from `config.seed`, running on `parallelism`'s
    /// threads (the results do not depend on how many).
    pub fn new(vae: Vae, config: TrainConfig, parallelism: &Parallelism) -> Result<Self> {
        let params = vae.init_params(config.seed);
        Self::with_params(vae, config, params, parallelism)
    }

    /// A trainer starting from given parameters.
    pub fn with_params(
        vae: Vae,
        config: TrainConfig,
        params: Vec<T>,
        parallelism: &Parallelism,
    ) -> Result<Self> {
        config.validate()?;
        let threads = parallelism.count();
        if params.len() != vae.num_params() {
            return Err(Error::shape("parameters", vae.num_params(), params.len()));
        }
        let n = vae.num_params();
        let ws = Workspace::new(&vae, config.batch_size, config.draws_per_point(), threads)?;
        Ok(Trainer {
            optimizer: Optimizer::new(config.optimizer, n)?,
            grads: vec![T::zero(); n],
            vae,
            config,
            params,
            ws,
            parallelism: parallelism.clone(),
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
            &self.vae.likelihood.choice.domain(),
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
        // Position by position: no O(n) table, whatever the dataset's size.
        let order = EpochOrder::new(data.len(), self.config.seed, self.epoch as u64);
        let steps_per_epoch = data.len().div_ceil(bs);
        let par = self.parallelism.clone();
        let mut idx_buf = Vec::with_capacity(bs);
        par.session(|| -> Result<()> {
            // A resumed epoch skips the batches it had already taken.
            for b in self.progress.batches..steps_per_epoch {
                idx_buf.clear();
                idx_buf.extend((b * bs..((b + 1) * bs).min(data.len())).map(|i| order.at(i)));
                let idx = &idx_buf[..];
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
        let par = self.parallelism.clone();
        par.session(|| self.step_on(data, indices, steps_per_epoch))
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
        self.ws.set_training(true);
        if self.vae.config().dropout > 0.0 {
            self.ws
                .draw_dropout_masks(&self.vae, self.config.seed, step);
        }
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
            let r = Iwae::new(&self.vae).forward_unchecked(&self.params, &mut self.ws, rows)?;
            (r.elbo, -r.bound, Some(r.bound))
        } else {
            let b = Elbo::new(&self.vae).forward_unchecked(&self.params, &mut self.ws, rows)?;
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
            )?;
        } else {
            Elbo::new(&self.vae).backward_unchecked(
                &self.params,
                &mut self.ws,
                rows,
                T::of(beta),
                &mut self.grads,
            )?;
        }
        if self.config.weight_decay > 0.0 {
            // d/dp of (weight_decay / 2) |p|^2, added before clipping as PyTorch does; not to
            // batch normalisation's running averages, which no gradient moves.
            let wd = T::of(self.config.weight_decay);
            for (g, &p) in self.grads.iter_mut().zip(&self.params) {
                *g += wd * p;
            }
            for r in self.vae.frozen_ranges() {
                self.grads[r].fill(T::zero());
            }
        }
        if let Some(c) = self.config.clip_norm {
            clip_grad_norm(&mut self.grads, c);
        }
        self.optimizer.step(&mut self.params, &self.grads)?;
        self.ws.update_running_stats(&self.vae, &mut self.params)?;
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
        ws.set_training(false);
        self.parallelism
            .session(|| evaluate_into(vae, params, data, ws, seed))
    }

    /// Trains until the configured number of epochs is done (on a resumed run, the rest of
    /// them), with what `options` adds: a test set evaluated after each epoch, a progress
    /// callback after each step, a callback with each epoch's report (which may stop the run
    /// by returning an error) and a stop flag. Returns the reports of the epochs it ran.
    ///
    /// ```
    /// use elbo::{Dataset, FitOptions, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};
    /// let data = Dataset::from_bytes(40, 4, (0..160).map(|i| (i * 37 % 256) as u8).collect())?;
    /// let (train, test) = data.split_at(32);
    /// let vae = Vae::new(VaeConfig::mnist().input_dim(4).encoder_hidden(vec![8]).latent_dim(2).decoder_hidden(vec![8]))?;
    /// let config = TrainConfig::default().epochs(3).batch_size(8);
    /// let mut trainer = Trainer::<f32>::new(vae, config, &Parallelism::threads(1)?)?;
    /// let mut seen = 0;
    /// let reports = trainer.fit(&train, FitOptions::new().test(&test).on_epoch(|r, _| {
    ///     seen = r.epoch;
    ///     Ok(())
    /// }))?;
    /// assert_eq!((reports.len(), seen), (3, 3));
    /// assert!(reports[2].test.is_some());
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn fit(&mut self, train: &Dataset, options: FitOptions<'_, T>) -> Result<Vec<EpochReport>> {
        let FitOptions {
            test,
            mut progress,
            mut on_epoch,
            stop,
        } = options;
        if let Some(flag) = stop {
            self.stop = Some(flag);
        }
        let progress: &mut (dyn FnMut(usize, f64) + Send) = &mut *progress;
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
        self.parallelism.count()
    }
}

/// A callback with each step's (examples done in the epoch, running mean loss).
type Progress<'a> = Box<dyn FnMut(usize, f64) + Send + 'a>;
/// A callback with each epoch's report and the trainer after it.
type OnEpoch<'a, T> = Box<dyn FnMut(&EpochReport, &Trainer<T>) -> Result<()> + 'a>;

/// What [`Trainer::fit`] takes besides the training data, all optional: a test set, callbacks
/// and a stop flag. Built with [`FitOptions::new`] and its setters.
#[non_exhaustive]
pub struct FitOptions<'a, T: Float> {
    /// Evaluated after every epoch; its figures go into the reports.
    pub test: Option<&'a Dataset>,
    progress: Progress<'a>,
    on_epoch: OnEpoch<'a, T>,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl<T: Float> Default for FitOptions<'_, T> {
    fn default() -> Self {
        FitOptions {
            test: None,
            progress: Box::new(|_, _| {}),
            on_epoch: Box::new(|_, _| Ok(())),
            stop: None,
        }
    }
}

impl<'a, T: Float> FitOptions<'a, T> {
    /// No test set, no callbacks, no stop flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Evaluates `test` after every epoch.
    pub fn test(mut self, test: &'a Dataset) -> Self {
        self.test = Some(test);
        self
    }

    /// Calls `f(examples_done, running_loss)` after every step.
    pub fn progress(mut self, f: impl FnMut(usize, f64) + Send + 'a) -> Self {
        self.progress = Box::new(f);
        self
    }

    /// Calls `f(report, trainer)` after every epoch; an error from it stops the run and is
    /// returned.
    pub fn on_epoch(mut self, f: impl FnMut(&EpochReport, &Trainer<T>) -> Result<()> + 'a) -> Self {
        self.on_epoch = Box::new(f);
        self
    }

    /// Stops after the step under way once `flag` is set (from a signal handler, say), with
    /// [`Error::Interrupted`]; see [`Trainer::set_stop_flag`].
    pub fn stop_flag(mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }
}

impl<T: Float> Trainer<T> {
    /// The model as trained so far, ready to encode, decode, sample and evaluate.
    pub fn model(&self) -> Result<TrainedVae<T>> {
        TrainedVae::new(self.vae.clone(), self.params.clone(), &self.parallelism)
    }

    /// The trained model, giving up the trainer's optimizer state and buffers.
    pub fn into_model(self) -> Result<TrainedVae<T>> {
        TrainedVae::new(self.vae, self.params, &self.parallelism)
    }
}

/// Trains a VAE of `vae` on `data` with `config` on every core the machine offers, and returns
/// the trained model: the shortest way from data to a model. For a test set, callbacks, a stop
/// flag or a chosen thread count, build a [`Trainer`] and call [`Trainer::fit`].
///
/// ```
/// use elbo::{Dataset, TrainConfig, TrainedVae, VaeConfig};
/// let data = Dataset::from_bytes(32, 4, (0..128).map(|i| (i * 57 % 256) as u8).collect())?;
/// let config = VaeConfig::mnist().input_dim(4).encoder_hidden(vec![]).latent_dim(1).decoder_hidden(vec![]);          // a linear VAE
/// let model: TrainedVae<f64> = elbo::fit(config,
///     TrainConfig::default().epochs(1).batch_size(8), &data)?;
/// assert_eq!(model.latent_dim(), 1);
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn fit<T: Float>(vae: VaeConfig, config: TrainConfig, data: &Dataset) -> Result<TrainedVae<T>> {
    let mut trainer = Trainer::new(Vae::new(vae)?, config, &Parallelism::available()?)?;
    trainer.fit(data, FitOptions::new())?;
    trainer.into_model()
}
