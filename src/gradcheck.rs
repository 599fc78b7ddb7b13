//! Gradient checking: an analytic gradient against central finite differences, in f64, one
//! report per named tensor.
//!
//! For each scalar theta_i the numerical derivative is
//! `(f(theta + h e_i) - f(theta - h e_i)) / (2h)`, whose error is O(h^2) from truncation plus
//! O(machine epsilon * |f| / h) from rounding; h = 1e-5 balances the two for losses of order
//! 1 to 100 in f64, giving absolute errors around 1e-9.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{DecoderLikelihood, Layout};

/// When an analytic gradient counts as equal to the numerical one: for every element,
/// `|analytic - numerical| <= atol + rtol * |numerical|` (numpy's `allclose`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f64,
    /// Relative part.
    pub rtol: f64,
}

impl Tolerance {
    /// atol 1e-7, rtol 1e-5: far above the finite-difference error at h = 1e-5 in f64, far
    /// below any real mistake in a derivative.
    pub const DEFAULT: Tolerance = Tolerance {
        atol: 1e-7,
        rtol: 1e-5,
    };
}

/// How one tensor's analytic gradient compares with central differences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorCheck {
    /// The tensor's name.
    pub name: String,
    /// Its number of elements.
    pub len: usize,
    /// Largest |analytic - numerical| over its elements.
    pub max_abs_err: f64,
    /// Largest |analytic - numerical| / max(|analytic|, |numerical|), over elements where
    /// either exceeds the absolute tolerance (0 if none does).
    pub max_rel_err: f64,
    /// Largest |numerical| over its elements, for scale.
    pub max_abs_grad: f64,
    /// Whether every element is within the tolerance.
    pub passed: bool,
}

/// Checks `analytic` (laid out by `layout`) against central differences of `f` at `params`
/// with step `h`. `f` is called 2 * params.len() times.
///
/// ```
/// use elbo::gradcheck::{check, Tolerance};
/// use elbo::model::{Layout, KlToStandardNormal};
///
/// // The KL's hand-written gradient at (mu, logvar) = (0.3, -0.5).
/// let mut layout = Layout::new();
/// let stats = layout.push("stats", &[1, 2]);
/// let kl = KlToStandardNormal { latent: 1 };
/// let theta = vec![0.3, -0.5];
/// let mut grad = vec![0.0; 2];
/// kl.backward(&theta, 1.0, &mut grad, 1)?;
/// let f = |t: &[f64]| {
///     let mut k = [0.0];
///     // NaN (a failed check) if the sizes were wrong; they are not.
///     match stats.get(t).and_then(|s| kl.forward(s, &mut k, 1)) {
///         Ok(()) => k[0],
///         Err(_) => f64::NAN,
///     }
/// };
/// let report = check(&layout, &theta, &grad, f, 1e-5, Tolerance::DEFAULT)?;
/// assert!(report[0].passed && report[0].max_abs_err < 1e-8);
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn check(
    layout: &Layout,
    params: &[f64],
    analytic: &[f64],
    f: impl FnMut(&[f64]) -> f64,
    h: f64,
    tol: Tolerance,
) -> Result<Vec<TensorCheck>> {
    check_entries(layout, params, analytic, f, h, tol, usize::MAX)
}

/// Like [`check`], on at most `per_tensor` evenly spaced entries of each tensor (for models
/// too large to perturb every parameter); `len` in each report counts the entries checked.
pub fn check_entries(
    layout: &Layout,
    params: &[f64],
    analytic: &[f64],
    mut f: impl FnMut(&[f64]) -> f64,
    h: f64,
    tol: Tolerance,
    per_tensor: usize,
) -> Result<Vec<TensorCheck>> {
    if params.len() != layout.len() {
        return Err(Error::shape("parameters", layout.len(), params.len()));
    }
    if analytic.len() != layout.len() {
        return Err(Error::shape(
            "analytic gradient",
            layout.len(),
            analytic.len(),
        ));
    }
    if !(h.is_finite() && h > 0.0) {
        return Err(Error::config(
            "finite-difference step",
            h,
            "must be finite and > 0",
        ));
    }
    let mut theta = params.to_vec();
    Ok(layout
        .tensors()
        .iter()
        .map(|spec| {
            let stride = spec.len().div_ceil(per_tensor.max(1)).max(1);
            let mut c = TensorCheck {
                name: spec.name.clone(),
                len: spec.len().div_ceil(stride),
                max_abs_err: 0.0,
                max_rel_err: 0.0,
                max_abs_grad: 0.0,
                passed: true,
            };
            for i in spec.range().step_by(stride) {
                let orig = theta[i];
                theta[i] = orig + h;
                let up = f(&theta);
                theta[i] = orig - h;
                let down = f(&theta);
                theta[i] = orig;
                let num = (up - down) / (2.0 * h);
                let a = analytic[i];
                let err = (a - num).abs();
                c.max_abs_err = c.max_abs_err.max(err);
                c.max_abs_grad = c.max_abs_grad.max(num.abs());
                let scale = a.abs().max(num.abs());
                if scale > tol.atol {
                    c.max_rel_err = c.max_rel_err.max(err / scale);
                }
                // Written so that a NaN error fails.
                let within = err <= tol.atol + tol.rtol * num.abs();
                c.passed &= within;
            }
            c
        })
        .collect())
}

/// Checks a likelihood's hand-written gradients, `d(-log p(x|a))/da` from
/// [`grad_output`](DecoderLikelihood::grad_output) and `d(-log p)/d(params)` from
/// [`grad_params`](DecoderLikelihood::grad_params), against central differences of its
/// [`log_prob`](DecoderLikelihood::log_prob), at one data row `x`, decoder output `a` and
/// parameters `params`. Works for any implementor, built-in or a user's. Returns one report for
/// "a" and one for "params" (when it has any).
///
/// ```
/// use elbo::gradcheck::{check_likelihood, Tolerance};
/// use elbo::Likelihood;
/// let x = [0.0, 0.3, 1.0];
/// let a = [-1.5, 0.2, 2.0];
/// let checks = check_likelihood(&Likelihood::Bernoulli, &[], &x, &a, 1e-5, Tolerance::DEFAULT)?;
/// assert!(checks.iter().all(|c| c.passed));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn check_likelihood(
    lik: &dyn DecoderLikelihood<f64>,
    params: &[f64],
    x: &[f64],
    a: &[f64],
    h: f64,
    tol: Tolerance,
) -> Result<Vec<TensorCheck>> {
    let d = x.len();
    let width = lik.outputs_per_dim().saturating_mul(d);
    if d == 0 || a.len() != width {
        return Err(Error::shape(
            "decoder output",
            format!("{width} values for a data row of {d}"),
            a.len(),
        ));
    }
    if params.len() != lik.num_params(d) {
        return Err(Error::shape(
            "likelihood parameters",
            lik.num_params(d),
            params.len(),
        ));
    }
    let mut layout = Layout::new();
    let ta = layout.push("a", &[width]);
    let tp = (!params.is_empty()).then(|| layout.push("params", &[params.len()]));
    let mut theta = a.to_vec();
    theta.extend_from_slice(params);
    let mut cache = vec![0.0; lik.cache_per_dim().saturating_mul(d)];
    lik.log_prob(params, x, a, &mut cache);
    let mut analytic = vec![0.0; theta.len()];
    lik.grad_output(params, x, a, &cache, 1.0, ta.of_mut(&mut analytic));
    if let Some(tp) = tp {
        lik.grad_params(params, x, a, &cache, 1.0, tp.of_mut(&mut analytic));
    }
    let mut scratch = vec![0.0; cache.len()];
    let neg_log_p = |t: &[f64]| {
        let own = tp.map_or(&[][..], |tp| tp.of(t));
        -lik.log_prob(own, x, ta.of(t), &mut scratch)
    };
    check(&layout, &theta, &analytic, neg_log_p, h, tol)
}

/// Prints checks as a table.
pub fn format_table(checks: &[TensorCheck]) -> String {
    let mut s = format!(
        "{:<28} {:>8} {:>12} {:>12} {:>12}  {}\n",
        "tensor", "checked", "max |grad|", "max abs err", "max rel err", "ok"
    );
    for c in checks {
        s += &format!(
            "{:<28} {:>8} {:>12.3e} {:>12.3e} {:>12.3e}  {}\n",
            c.name,
            c.len,
            c.max_abs_grad,
            c.max_abs_err,
            c.max_rel_err,
            if c.passed { "yes" } else { "NO" }
        );
    }
    s
}
