//! Optimizers over the flat parameter buffer. Each update is one fused elementwise loop over
//! parameters, gradients and state, split into fixed-size chunks run in parallel (`kernels::par`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::par::{self, Disjoint};
use crate::kernels::scalar::Float;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// Which optimizer, with its settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OptimizerConfig {
    /// Adam with bias correction, as `torch.optim.Adam`.
    Adam {
        /// Learning rate (PyTorch: 1e-3).
        lr: f64,
        /// First-moment decay (0.9).
        beta1: f64,
        /// Second-moment decay (0.999).
        beta2: f64,
        /// Added to the denominator (1e-8).
        eps: f64,
    },
    /// Stochastic gradient descent with heavy-ball momentum, as `torch.optim.SGD`.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum in [0, 1).
        momentum: f64,
    },
}

impl OptimizerConfig {
    /// Adam with PyTorch's defaults and learning rate `lr`.
    pub fn adam(lr: f64) -> Self {
        OptimizerConfig::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// SGD with learning rate `lr` and `momentum`.
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        OptimizerConfig::Sgd { lr, momentum }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerConfig::Adam { lr, .. } | OptimizerConfig::Sgd { lr, .. } => lr,
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::config("learning rate", lr, "must be finite and > 0"));
        }
        match *self {
            OptimizerConfig::Adam {
                beta1, beta2, eps, ..
            } => {
                for (name, b) in [("adam beta1", beta1), ("adam beta2", beta2)] {
                    if !(0.0..1.0).contains(&b) {
                        return Err(Error::config(name, b, "must lie in [0, 1)"));
                    }
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(Error::config("adam eps", eps, "must be finite and > 0"));
                }
            }
            OptimizerConfig::Sgd { momentum, .. } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(Error::config("momentum", momentum, "must lie in [0, 1)"));
                }
            }
        }
        Ok(())
    }

    /// Scalars of state per parameter.
    fn state_per_param(&self) -> usize {
        match self {
            OptimizerConfig::Adam { .. } => 2,
            OptimizerConfig::Sgd { .. } => 1,
        }
    }
}

/// An optimizer and its state: one flat buffer (Adam: first moments then second moments; SGD:
/// the momentum buffer), laid out like the parameters.
#[derive(Clone, Debug)]
pub struct Optimizer<T> {
    config: OptimizerConfig,
    state: Vec<T>,
    steps: u64,
    n: usize,
}

impl<T: Float> Optimizer<T> {
    /// A fresh optimizer for `n` parameters.
    pub fn new(config: OptimizerConfig, n: usize) -> Result<Self> {
        config.validate()?;
        Ok(Optimizer {
            config,
            state: vec![T::zero(); n * config.state_per_param()],
            steps: 0,
            n,
        })
    }

    /// An optimizer continuing from a saved `state` after `steps` updates.
    pub fn from_state(
        config: OptimizerConfig,
        n: usize,
        state: Vec<T>,
        steps: u64,
    ) -> Result<Self> {
        config.validate()?;
        if state.len() != n * config.state_per_param() {
            return Err(Error::shape(
                "optimizer state",
                n * config.state_per_param(),
                state.len(),
            ));
        }
        Ok(Optimizer {
            config,
            state,
            steps,
            n,
        })
    }

    /// Changes the settings of the same kind of optimizer (a new learning rate, say), keeping
    /// the state.
    pub(crate) fn set_config(&mut self, config: OptimizerConfig) {
        debug_assert_eq!(config.state_per_param(), self.config.state_per_param());
        self.config = config;
    }

    /// Its settings.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The state buffer.
    pub fn state(&self) -> &[T] {
        &self.state
    }

    /// One update of `params` from `grads`.
    ///
    /// Adam (t = steps taken, from 1):
    /// m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    /// p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    ///
    /// SGD: u <- g at t = 1, u <- mu u + g after; p <- p - lr u
    ///
    /// `params` and `grads` must both have the length the optimizer was made for, else
    /// [`Error::Shape`] and nothing changes.
    ///
    /// ```
    /// use elbo::train::{Optimizer, OptimizerConfig};
    /// let mut sgd = Optimizer::<f64>::new(OptimizerConfig::sgd(0.1, 0.0), 2)?;
    /// let mut p = vec![1.0, -1.0];
    /// sgd.step(&mut p, &[10.0, 0.0])?;                      // p - lr g
    /// assert_eq!(p, [0.0, -1.0]);
    /// assert!(sgd.step(&mut p, &[1.0]).is_err());           // wrong length: nothing changes
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn step(&mut self, params: &mut [T], grads: &[T]) -> Result<()> {
        self.step_with_weight_decay(params, grads, 0.0)
    }

    /// [`step`](Self::step) on the gradient `grads + weight_decay * params` (coupled L2 weight
    /// decay, as PyTorch's optimizers take it), formed on the fly: the same bits as adding
    /// it into `grads` first, without a pass over the gradient to do so. `weight_decay` must be
    /// finite and non-negative, else [`Error::InvalidConfig`] and nothing changes.
    ///
    /// ```
    /// use elbo::train::{Optimizer, OptimizerConfig};
    /// let mut sgd = Optimizer::<f64>::new(OptimizerConfig::sgd(0.5, 0.0), 1)?;
    /// let mut p = vec![2.0];
    /// sgd.step_with_weight_decay(&mut p, &[1.0], 0.25)?;   // p - lr (g + 0.25 p)
    /// assert_eq!(p, [1.25]);
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn step_with_weight_decay(
        &mut self,
        params: &mut [T],
        grads: &[T],
        weight_decay: f64,
    ) -> Result<()> {
        check_weight_decay(weight_decay)?;
        for (what, len) in [("parameters", params.len()), ("gradients", grads.len())] {
            if len != self.n {
                return Err(Error::shape(what, self.n, len));
            }
        }
        self.update_range(params, grads, 0, T::of(weight_decay));
        Ok(())
    }

    /// One step for the parameters `offset..offset + params.len()` alone, as
    /// [`step_with_weight_decay`](Self::step_with_weight_decay) would move them (it is
    /// elementwise): a member of a data-parallel group updates its slice of the parameters and
    /// shares the result. The state outside the slice is left as it was, and the step counts.
    pub(crate) fn step_slice(
        &mut self,
        params: &mut [T],
        grads: &[T],
        offset: usize,
        weight_decay: f64,
    ) -> Result<()> {
        check_weight_decay(weight_decay)?;
        if grads.len() != params.len() {
            return Err(Error::shape("gradients", params.len(), grads.len()));
        }
        if offset
            .checked_add(params.len())
            .is_none_or(|end| end > self.n)
        {
            return Err(Error::shape(
                "parameter slice",
                format!("at most {} from {offset}", self.n.saturating_sub(offset)),
                params.len(),
            ));
        }
        self.update_range(params, grads, offset, T::of(weight_decay));
        Ok(())
    }

    /// The state buffer, for a group's members to share their slices of it.
    pub(crate) fn state_mut(&mut self) -> &mut [T] {
        &mut self.state
    }

    /// The step on entries `offset..offset + params.len()`, lengths checked by the caller.
    fn update_range(&mut self, params: &mut [T], grads: &[T], offset: usize, wd: T) {
        let (n, len) = (self.n, params.len());
        self.steps += 1;
        let t = self.steps as i32;
        match self.config {
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let c = crate::kernels::fast::AdamStep {
                    step_size: T::of(lr / (1.0 - beta1.powi(t))),
                    inv_sqrt_bc2: T::of(1.0 / (1.0 - beta2.powi(t)).sqrt()),
                    beta1: T::of(beta1),
                    beta2: T::of(beta2),
                    eps: T::of(eps),
                    weight_decay: wd,
                };
                let (m, v) = self.state.split_at_mut(n);
                let (m, v) = (
                    Disjoint::new(&mut m[offset..offset + len]),
                    Disjoint::new(&mut v[offset..offset + len]),
                );
                par::for_each_piece(params, CHUNK, |at, p| {
                    let end = at + p.len();
                    // SAFETY: each piece of `params` is one task's; m and v follow it.
                    let (m, v) = unsafe { (m.piece(at, end), v.piece(at, end)) };
                    T::adam(p, &grads[at..end], m, v, c)
                });
            }
            OptimizerConfig::Sgd { lr, momentum } => {
                let (lr, mu) = (T::of(lr), T::of(momentum));
                let first = t == 1;
                let state = Disjoint::new(&mut self.state[offset..offset + len]);
                par::for_each_piece(params, CHUNK, |at, p| {
                    let end = at + p.len();
                    let g = &grads[at..end];
                    // SAFETY: each piece of `params` is one task's; the state follows it.
                    let u = unsafe { state.piece(at, end) };
                    for i in 0..p.len() {
                        let gi = g[i] + wd * p[i];
                        u[i] = if first { gi } else { mu * u[i] + gi };
                        p[i] -= lr * u[i];
                    }
                });
            }
        }
    }
}

/// A weight decay the optimizer can take: finite and non-negative.
fn check_weight_decay(weight_decay: f64) -> Result<()> {
    if weight_decay.is_finite() && weight_decay >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            "weight decay",
            weight_decay,
            "must be finite and at least 0",
        ))
    }
}

/// Scales `grads` so that their Euclidean norm is at most `max_norm`; returns the norm before.
/// The sum of squares runs in f64 in one fixed order.
pub fn clip_grad_norm<T: Float>(grads: &mut [T], max_norm: f64) -> f64 {
    let norm = grads
        .iter()
        .map(|g| g.as_f64() * g.as_f64())
        .sum::<f64>()
        .sqrt();
    if norm > max_norm {
        let s = T::of(max_norm / norm);
        grads.iter_mut().for_each(|g| *g *= s);
    }
    norm
}
