//! Elementwise activations. Every derivative is written in terms of the activation's output
//! `y = f(a)`, so the backward pass needs no copy of the pre-activation `a`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::fast::with_simd;
use crate::kernels::par;
use crate::kernels::scalar::{Float, sigmoid, softplus};
use crate::model::shape::{holds, width};

/// An elementwise nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Activation {
    /// y = a (used for output layers).
    Identity,
    /// y = max(a, 0).
    Relu,
    /// y = a for a > 0, `slope * a` otherwise (PyTorch's default slope is 0.01).
    LeakyRelu {
        /// Slope for negative inputs, in (0, 1).
        slope: f64,
    },
    /// y = tanh(a).
    Tanh,
    /// y = 1 / (1 + e^-a).
    Sigmoid,
    /// y = ln(1 + e^a).
    Softplus,
}

impl std::str::FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "identity" | "linear" => Activation::Identity,
            "relu" => Activation::Relu,
            "leaky-relu" | "leakyrelu" | "leaky_relu" => Activation::LeakyRelu { slope: 0.01 },
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "softplus" => Activation::Softplus,
            _ => {
                return Err(Error::config(
                    "activation",
                    s,
                    "expected one of relu, leaky-relu, tanh, sigmoid, softplus, identity",
                ));
            }
        })
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky-relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Softplus => "softplus",
        })
    }
}

impl Activation {
    /// Checks the activation's own settings.
    pub fn validate(&self) -> Result<()> {
        if let Activation::LeakyRelu { slope } = *self
            && !(slope.is_finite() && slope > 0.0 && slope < 1.0)
        {
            return Err(Error::config(
                "leaky-relu slope",
                slope,
                "must lie in (0, 1)",
            ));
        }
        Ok(())
    }

    /// y = f(a), in place over a buffer of `cols`-wide rows.
    ///
    /// ```
    /// use elbo::Activation;
    /// let mut a = vec![-1.0f64, 0.5, 2.0, -3.0];
    /// Activation::Relu.forward(&mut a, 2)?;            // two rows of two
    /// assert_eq!(a, [0.0, 0.5, 2.0, 0.0]);
    /// let mut g = vec![1.0; 4];                         // dL/dy
    /// Activation::Relu.backward(&a, &mut g, 2)?;       // dL/da, written through y
    /// assert_eq!(g, [0.0, 1.0, 1.0, 0.0]);
    /// assert!(Activation::Relu.forward(&mut a, 3).is_err()); // 4 values are not rows of 3
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn forward<T: Float>(&self, a: &mut [T], cols: usize) -> Result<()> {
        self.forward_with_bias(a, None, cols)
    }

    /// y = f(a + b) for each row a, in place: the dense layer's bias and the activation in one
    /// pass over memory.
    pub fn forward_with_bias<T: Float>(
        &self,
        a: &mut [T],
        bias: Option<&[T]>,
        cols: usize,
    ) -> Result<()> {
        width("activation rows", cols)?;
        if !a.len().is_multiple_of(cols) {
            return Err(Error::shape(
                "activation input",
                format!("whole rows of {cols}"),
                a.len(),
            ));
        }
        if let Some(b) = bias {
            holds("bias", b, 1, cols)?;
        }
        let act = *self;
        if act == Activation::Identity && bias.is_none() {
            return Ok(());
        }
        par::for_each_row(a, cols, |_, row| {
            with_simd(
                #[inline(always)]
                || {
                    if let Some(b) = bias {
                        for (v, &bj) in row.iter_mut().zip(b) {
                            *v += bj;
                        }
                    }
                    // One loop per kind, so each is a plain loop the compiler can vectorise.
                    match act {
                        Activation::Identity => {}
                        Activation::Relu => row.iter_mut().for_each(|v| *v = v.max(T::zero())),
                        Activation::LeakyRelu { slope } => {
                            let s = T::of(slope);
                            row.iter_mut()
                                .for_each(|v| *v = if *v > T::zero() { *v } else { s * *v })
                        }
                        Activation::Tanh => row.iter_mut().for_each(|v| *v = v.tanh()),
                        Activation::Sigmoid => row.iter_mut().for_each(|v| *v = sigmoid(*v)),
                        Activation::Softplus => row.iter_mut().for_each(|v| *v = softplus(*v)),
                    }
                },
            )
        });
        Ok(())
    }

    /// dL/da = dL/dy * f'(a), in place on `grad` (which holds dL/dy on entry), with f'
    /// expressed through the output y = f(a):
    ///
    /// - identity: f' = 1
    /// - ReLU: f' = 1 if y > 0, else 0
    /// - LeakyReLU: f' = 1 if y > 0, else slope
    /// - tanh: f' = 1 - y^2
    /// - sigmoid: f' = y (1 - y)
    /// - softplus: f' = sigmoid(a) = 1 - e^-y (computed as -expm1(-y), exact for tiny y)
    pub fn backward<T: Float>(&self, y: &[T], grad: &mut [T], cols: usize) -> Result<()> {
        width("activation rows", cols)?;
        if !grad.len().is_multiple_of(cols) {
            return Err(Error::shape(
                "activation gradient",
                format!("whole rows of {cols}"),
                grad.len(),
            ));
        }
        holds("activation output", y, grad.len() / cols, cols)?;
        let act = *self;
        if act == Activation::Identity {
            return Ok(());
        }
        let y = &y[..grad.len()];
        par::for_each_row(grad, cols, |r, g| {
            let yr = &y[r * cols..(r + 1) * cols];
            with_simd(
                #[inline(always)]
                || match act {
                    Activation::Relu => g
                        .iter_mut()
                        .zip(yr)
                        .for_each(|(g, &y)| *g = if y > T::zero() { *g } else { T::zero() }),
                    _ => g
                        .iter_mut()
                        .zip(yr)
                        .for_each(|(g, &y)| *g *= act.derivative_from_output(y)),
                },
            )
        });
        Ok(())
    }

    #[inline]
    fn derivative_from_output<T: Float>(self, y: T) -> T {
        match self {
            Activation::Identity => T::one(),
            Activation::Relu => {
                if y > T::zero() {
                    T::one()
                } else {
                    T::zero()
                }
            }
            Activation::LeakyRelu { slope } => {
                if y > T::zero() {
                    T::one()
                } else {
                    T::of(slope)
                }
            }
            Activation::Tanh => T::one() - y * y,
            Activation::Sigmoid => y * (T::one() - y),
            Activation::Softplus => -(-y).exp_m1(),
        }
    }
}
