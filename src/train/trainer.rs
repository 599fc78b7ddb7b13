//! The training loop: minibatches, noise, forward, backward, clipping and the optimizer step,
//! all in one workspace on a pool of the caller's size. Each epoch (and each evaluation) runs as
//! one session of that pool (the kernels' team of threads), so its threads stay with the many short
//! parallel loops of every step.

use std::time::Instant;

use crate::data::{Dataset, EpochOrder};
use crate::error::{Error, Result};
use crate::kernels::matmul::Precision;
use crate::kernels::pool::Parallelism;
use crate::kernels::scalar::Float;
use crate::model::{Vae, VaeConfig};
use crate::objective::{BatchElbo, Elbo, Iwae, Workspace};
use crate::rng::{Purpose, fill_normal, stream};
use crate::train::config::TrainConfig;
use crate::train::distributed::{
    Collective, Fingerprint, SHARD_STATS, ShardBuffers, ShardPlan, SingleProcess, check_agreement,
};
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
    /// The processes this one trains with, if any.
    pub(super) group: Option<Box<dyn Collective>>,
    /// A sharded step's buffers, when the run is sharded.
    pub(super) shard_bufs: Option<ShardBuffers<T>>,
    /// Each member of a group has updated only its slice of the optimizer's state since the
    /// members last shared theirs (see [`Trainer::sharded_step`]); true until the epoch ends.
    pub(super) state_spread: bool,
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
        if config.precision == Precision::Bf16 && T::NAME != "F32" {
            return Err(Error::config(
                "precision",
                "bf16",
                "bf16 products train f32 models only; an f64 model is for exact checks",
            ));
        }
        let threads = parallelism.count();
        if params.len() != vae.num_params() {
            return Err(Error::shape("parameters", vae.num_params(), params.len()));
        }
        let n = vae.num_params();
        let ws = Workspace::new(&vae, config.batch_size, config.draws_per_point(), threads)?;
        let shard_bufs = match config.shards {
            Some(s) => Some(ShardBuffers::new(Self::shard_plan(s, 1, 0)?, n)),
            None => None,
        };
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
            group: None,
            shard_bufs,
            state_spread: false,
        })
    }

    fn shard_plan(shards: usize, procs: usize, rank: usize) -> Result<ShardPlan> {
        ShardPlan::new(shards, procs, rank)
    }

    /// Trains as one member of `group` (data-parallel: each member computes its share of every
    /// batch's shards, and every member takes the same step). The run must be sharded
    /// ([`TrainConfig::shards`]) into a multiple of the group's size; the members' settings,
    /// parameters and data are compared at the start of every epoch, and a disagreement is an
    /// [`Error::Distributed`] on every member.
    pub fn set_group(&mut self, group: Box<dyn Collective>) -> Result<()> {
        let (procs, rank) = (group.size(), group.rank());
        let shards = match self.config.shards {
            Some(s) => s,
            None if procs == 1 => {
                self.group = Some(group);
                return Ok(());
            }
            None => {
                return Err(Error::Distributed(format!(
                    "{procs} processes train together only on a sharded batch; set the shards \
                     (for example {}) and keep that number on any number of processes",
                    procs * 4
                )));
            }
        };
        let plan = Self::shard_plan(shards, procs, rank)?;
        self.shard_bufs = Some(ShardBuffers::new(plan, self.params.len()));
        self.group = Some(group);
        Ok(())
    }

    /// This process's place in its group (0 alone); only member 0 should write files.
    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank())
    }

    /// Processes training together (1 alone).
    pub fn group_size(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.size())
    }

    /// Compares settings, parameters, position and data across the group.
    fn check_group(&mut self, data: &Dataset) -> Result<()> {
        let Some(group) = self.group.as_deref_mut() else {
            return Ok(());
        };
        if group.size() == 1 {
            return Ok(());
        }
        let json = |v: serde_json::Result<Vec<u8>>| v.unwrap_or_default();
        let mut settings = Fingerprint::default();
        settings
            .add(&json(serde_json::to_vec(&self.config)))
            .add(&json(serde_json::to_vec(self.vae.config())));
        let mut state = Fingerprint::default();
        state
            .add(bytemuck::cast_slice(&self.params))
            .add(&self.step.to_le_bytes())
            .add(&(self.epoch as u64).to_le_bytes())
            .add(&(self.progress.batches as u64).to_le_bytes());
        // The data's shape and 64 rows spread over it: enough to tell different files or
        // different splits apart without reading a dataset larger than memory.
        let mut rows = Fingerprint::default();
        rows.add(&(data.len() as u64).to_le_bytes())
            .add(&(data.dim() as u64).to_le_bytes());
        let mut row = vec![0f32; data.dim()];
        let picks = data.len().min(64);
        for k in 0..picks {
            data.gather(&[k * data.len() / picks], &mut row)?;
            rows.add(bytemuck::cast_slice(&row));
        }
        check_agreement(
            group,
            &[
                ("settings", settings.value()),
                ("parameters or position in the run", state.value()),
                ("training data", rows.value()),
            ],
        )
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
    /// The gradient of the last step. In a group of several members whose update is
    /// elementwise (no clipping, no batch normalisation), each member sums and applies only its
    /// own slice of it, and only that slice here is the last step's.
    pub fn grads(&self) -> &[T] {
        &self.grads
    }
    /// The optimizer. In such a group its state is whole at the end of each epoch; within an
    /// epoch each member has moved only its own slice of it.
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
        self.epoch_pass(data, progress)
    }

    /// [`train_epoch`](Self::train_epoch) on data already checked against the model: `fit`
    /// checks its data once, not at every epoch (a full pass over a memory-mapped file).
    fn epoch_pass(
        &mut self,
        data: &Dataset,
        progress: &mut (dyn FnMut(usize, f64) + Send),
    ) -> Result<EpochTerms> {
        self.check_group(data)?;
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
        self.share_optimizer_state()?;
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
        if let Some(mut bufs) = self.shard_bufs.take() {
            let r = self.sharded_step(&mut bufs, data, idx, steps_per_epoch);
            self.shard_bufs = Some(bufs);
            return r;
        }
        let step = self.step + 1;
        let beta = self.beta_at(step, steps_per_epoch);
        let mut grads = std::mem::take(&mut self.grads);
        let r = self.forward_backward(data, (idx, idx.len()), step, beta, &mut grads);
        self.grads = grads;
        let (elbo, loss, iw_bound) = r?;
        if !loss.is_finite() {
            return Err(self.diverged(step, loss));
        }
        self.update(step, false)?;
        Ok(StepResult {
            elbo,
            loss,
            iw_bound,
        })
    }

    fn diverged(&self, step: u64, loss: f64) -> Error {
        Error::Diverged {
            epoch: self.epoch + 1,
            step,
            loss,
            hint: "the learning rate is probably too high for this model; \
                   try a smaller --lr, or --clip to bound the gradient",
        }
    }

    /// Gathers the rows `idx`, draws the noise (and masks, and binarisation) of stream
    /// `stream_index`, and runs the forward pass; when the loss is finite, also the backward
    /// pass into `grads`: the gradient of the loss summed over these rows, over `mean_over`.
    fn forward_backward(
        &mut self,
        data: &Dataset,
        (idx, mean_over): (&[usize], usize),
        stream_index: u64,
        beta: f64,
        grads: &mut [T],
    ) -> Result<(BatchElbo, f64, Option<f64>)> {
        let rows = idx.len();
        let d = self.vae.input_dim();
        self.ws.set_training(true);
        self.ws.set_precision(self.config.precision);
        if self.vae.config().dropout > 0.0 {
            self.ws
                .draw_dropout_masks(&self.vae, self.config.seed, stream_index);
        }
        if self.config.binarize {
            let mut rng = stream(self.config.seed, Purpose::Binarize, stream_index);
            data.gather_binarized(idx, &mut self.ws.x[..rows * d], &mut rng)?;
        } else {
            data.gather(idx, &mut self.ws.x[..rows * d])?;
        }
        let zl = rows * self.config.draws_per_point() * self.vae.latent_dim();
        fill_normal(
            &mut stream(self.config.seed, Purpose::Noise, stream_index),
            &mut self.ws.eps[..zl],
        );
        let (elbo, loss, iw_bound) = if self.config.iw_samples.is_some() {
            let r = Iwae::new(&self.vae).forward_unchecked(&self.params, &mut self.ws, rows)?;
            (r.elbo, -r.bound, Some(r.bound))
        } else {
            let b = Elbo::new(&self.vae).forward_unchecked(&self.params, &mut self.ws, rows)?;
            (b, b.loss(beta), None)
        };
        if !loss.is_finite() {
            return Ok((elbo, loss, iw_bound));
        }
        if iw_bound.is_some() {
            Iwae::new(&self.vae).backward_unchecked(
                &self.params,
                &mut self.ws,
                rows,
                mean_over,
                grads,
            )?;
        } else {
            Elbo::new(&self.vae).backward_unchecked(
                &self.params,
                &mut self.ws,
                rows,
                mean_over,
                T::of(beta),
                grads,
            )?;
        }
        Ok((elbo, loss, iw_bound))
    }

    /// Weight decay, clipping and the optimizer's step from `self.grads`, then batch
    /// normalisation's running averages (from the last pass, or when `sharded` from the
    /// shards' statistics summed into the gradient); `step` becomes the steps done.
    fn update(&mut self, step: u64, sharded: bool) -> Result<()> {
        if sharded {
            // Read (and cleared) before anything else touches the gradient.
            Workspace::update_running_from(&self.vae, &mut self.params, &mut self.grads)?;
        }
        let wd = self.config.weight_decay;
        if wd > 0.0 && self.config.clip_norm.is_none() && self.vae.frozen_ranges().next().is_none()
        {
            // Nothing to clip and no entry to exempt: the optimizer adds the decay as it reads
            // the gradient, with the same bits as the pass below and without its memory traffic
            // (a tenth of a count model's step on 1 thread).
            self.optimizer
                .step_with_weight_decay(&mut self.params, &self.grads, wd)?;
            if !sharded {
                self.ws.update_running_stats(&self.vae, &mut self.params)?;
            }
            self.step = step;
            return Ok(());
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
        if !sharded {
            self.ws.update_running_stats(&self.vae, &mut self.params)?;
        }
        self.step = step;
        Ok(())
    }

    /// One step on a sharded batch: this process's shards one by one, each gradient weighted
    /// by its share of the batch's rows, then the group's fixed-order sum and the same update
    /// on every member.
    fn sharded_step(
        &mut self,
        bufs: &mut ShardBuffers<T>,
        data: &Dataset,
        idx: &[usize],
        steps_per_epoch: usize,
    ) -> Result<StepResult> {
        let (rows, n, step) = (idx.len(), self.params.len(), self.step + 1);
        let beta = self.beta_at(step, steps_per_epoch);
        let (plan, padded) = (bufs.plan, bufs.padded);
        for (k, s) in plan.local().enumerate() {
            let leaf = &mut bufs.leaves[k * padded..(k + 1) * padded];
            let stats = &mut bufs.stats[k * SHARD_STATS..(k + 1) * SHARD_STATS];
            stats.fill(0.0);
            leaf[n..].fill(T::zero());
            let mine = &idx[plan.rows(s, rows)];
            if mine.is_empty() {
                leaf.fill(T::zero());
                continue;
            }
            let key = plan.stream_index(step, s);
            let (elbo, loss, bound) =
                self.forward_backward(data, (mine, rows), key, beta, &mut leaf[..n])?;
            let m = mine.len() as f64;
            stats.copy_from_slice(&[
                m,
                m * elbo.recon,
                m * elbo.kl,
                m * bound.unwrap_or(0.0),
                m * loss,
            ]);
            if loss.is_finite() {
                // Batch normalisation's statistics travel in the gradient's frozen entries,
                // weighted like the gradient, so the tree sums them too.
                self.ws
                    .write_shard_stats(&self.vae, leaf, m / rows as f64)?;
            } else {
                leaf.fill(T::zero());
            }
        }
        let group: &mut dyn Collective = match self.group.as_deref_mut() {
            Some(g) => g,
            None => &mut SingleProcess,
        };
        // A group of more than one whose update is elementwise (no clipping, which needs the
        // whole gradient's norm; no batch-normalisation averages riding in the gradient): each
        // member updates its own slice of the parameters and of the optimizer's state, and the
        // members share the new parameters. The same bits as every member updating the whole
        // vector, with a member's share of the optimizer's work and memory traffic.
        let n = self.params.len();
        let spread = group.size() > 1
            && self.config.clip_norm.is_none()
            && self.vae.frozen_ranges().next().is_none();
        let mine = if spread {
            let mine = bufs.slice(n);
            bufs.reduce_slice(group, &mut self.grads[mine.clone()])?;
            Some(mine)
        } else {
            bufs.reduce(group, &mut self.grads)?;
            None
        };
        let mut total = [0f64; SHARD_STATS];
        for shard in bufs.all_stats.chunks_exact(SHARD_STATS) {
            for (t, v) in total.iter_mut().zip(shard) {
                *t += v;
            }
        }
        let [_, recon, kl, bound, loss] = total.map(|v| v / rows as f64);
        if !loss.is_finite() {
            return Err(self.diverged(step, loss));
        }
        match mine {
            Some(range) => {
                self.optimizer.step_slice(
                    &mut self.params[range.clone()],
                    &self.grads[range.clone()],
                    range.start,
                    self.config.weight_decay,
                )?;
                self.state_spread = true;
                bufs.share_slices(group, &mut self.params)?;
                self.step = step;
            }
            None => self.update(step, true)?,
        }
        Ok(StepResult {
            elbo: BatchElbo { recon, kl },
            loss,
            iw_bound: self.config.iw_samples.map(|_| bound),
        })
    }

    /// Gives every member of the group the whole optimizer state, when each has updated only
    /// its slice of it (a collective: every member calls it at the same point, the end of an
    /// epoch).
    fn share_optimizer_state(&mut self) -> Result<()> {
        if !self.state_spread {
            return Ok(());
        }
        let (Some(group), Some(bufs)) = (self.group.as_deref_mut(), self.shard_bufs.as_mut())
        else {
            return Ok(());
        };
        let n = self.params.len();
        for block in self.optimizer.state_mut().chunks_exact_mut(n) {
            bufs.share_slices(group, block)?;
        }
        self.state_spread = false;
        Ok(())
    }

    /// The ELBO's terms averaged over `data` with the current parameters, one noise stream per
    /// evaluation batch (the same for every call, so epochs are compared on equal noise).
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation> {
        self.check_data(data, "evaluation data")?;
        self.evaluate_checked(data)
    }

    /// [`evaluate`](Self::evaluate) on data already checked against the model.
    fn evaluate_checked(&mut self, data: &Dataset) -> Result<Evaluation> {
        let params = &self.params;
        let (vae, ws, seed) = (&self.vae, &mut self.ws, self.config.seed);
        ws.set_training(false);
        ws.set_precision(Precision::F32);
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
            let train_terms = self.epoch_pass(train, progress)?;
            let secs = start.elapsed().as_secs_f64();
            let eval_start = Instant::now();
            let test_eval = test.map(|t| self.evaluate_checked(t)).transpose()?;
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
