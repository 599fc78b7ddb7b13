//! Checkpoints of a run under way: what [`Trainer::save_checkpoint`] writes beside the model
//! (settings, optimizer state, where the run stands) and how [`Trainer::resume`] reads it back
//! to continue bit-identically. The file format itself is [`super::checkpoint`]'s.

use crate::error::{Error, Result};
use crate::kernels::pool::Parallelism;
use crate::kernels::scalar::Float;
use crate::train::config::TrainConfig;
use crate::train::optim::Optimizer;
use crate::train::trainer::Trainer;

impl<T: Float> Trainer<T> {
    /// Writes a checkpoint from which [`resume`](Self::resume) continues bit-identically:
    /// parameters, the optimizer's state, the training settings, and where the run stands
    /// (epochs, steps). Every random draw is a function of (seed, epoch or step), so nothing
    /// else is needed. `extra` is added to the metadata.
    pub fn save_checkpoint(
        &self,
        path: impl AsRef<std::path::Path>,
        extra: &[(&str, String)],
    ) -> Result<()> {
        let path = path.as_ref();
        if self.state_spread {
            return Err(Error::Distributed(
                "the optimizer's state is spread over the group's members until the epoch ends \
                 (each updates its own slice); write the checkpoint after train_epoch or at an \
                 epoch's end in fit"
                    .into(),
            ));
        }
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
    /// on `parallelism`'s threads; `epochs`, if given, replaces the run's total number of epochs.
    pub fn resume(
        path: impl AsRef<std::path::Path>,
        parallelism: &Parallelism,
        epochs: Option<usize>,
    ) -> Result<Self> {
        let path = path.as_ref();
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
        let mut t = Self::with_params(loaded.vae, config, loaded.params, parallelism)?;
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
