//! The dense (fully connected) layer y = x W + b.

use crate::error::Result;
use crate::kernels::fast::with_simd;
use crate::kernels::scalar::Float;
use crate::kernels::{
    Op, Precision, SparseRows, matmul_in, par, sparse_matmul, sparse_matmul_beside,
};
use crate::model::activation::Activation;
use crate::model::params::{Layout, TensorId};
use crate::model::shape::holds;

/// Bias-gradient columns per parallel task: 128 columns of a batch of 128 rows are about as
/// many additions as a task of the other elementwise loops (`kernels::par`).
const BIAS_COLUMNS_PER_TASK: usize = 128;

/// y = x W + b for a batch of row vectors: x is `rows x n_in`, W is `n_in x n_out`, b is `n_out`.
#[derive(Clone, Debug)]
pub struct Dense {
    /// Weight, `n_in x n_out` (note: PyTorch's `Linear.weight` is its transpose).
    pub weight: TensorId,
    /// Bias, `n_out`.
    pub bias: TensorId,
    /// Input width.
    pub n_in: usize,
    /// Output width.
    pub n_out: usize,
}

impl Dense {
    /// Registers the layer's tensors `{name}.weight` and `{name}.bias` in `layout`.
    ///
    /// ```
    /// use elbo::model::{Dense, Layout};
    /// let mut layout = Layout::new();
    /// let layer = Dense::new(&mut layout, "d", 2, 1); // W: 2 x 1, b: 1
    /// let params = vec![3.0f64, -1.0, 0.5];             // W = [3, -1]^T, b = 0.5
    /// let x = [1.0, 2.0];
    /// let mut y = [0.0];
    /// layer.forward(&params, &x, &mut y, 1, 1)?;
    /// assert_eq!(y, [3.0 - 2.0 + 0.5]);
    /// let (mut grads, mut dx) = (vec![0.0; 3], vec![0.0; 2]);
    /// layer.backward(&params, &x, &[1.0], &mut grads, Some(&mut dx), 1, 1)?;
    /// assert_eq!((grads, dx), (vec![1.0, 2.0, 1.0], vec![3.0, -1.0])); // x^T G, sum G, G W^T
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn new(layout: &mut Layout, name: &str, n_in: usize, n_out: usize) -> Self {
        let weight = layout.push(format!("{name}.weight"), &[n_in, n_out]);
        let bias = layout.push(format!("{name}.bias"), &[n_out]);
        Dense {
            weight,
            bias,
            n_in,
            n_out,
        }
    }

    /// The parameter buffer holds both tensors.
    fn check_params<T>(&self, params: &[T]) -> Result<()> {
        self.weight.get(params)?;
        self.bias.get(params)?;
        Ok(())
    }

    /// PyTorch's default initialisation: W and b uniform on +-1/sqrt(n_in).
    pub fn init<T: Float>(&self, params: &mut [T], rng: &mut impl rand::Rng) -> Result<()> {
        use rand::RngExt;
        self.check_params(params)?;
        let bound = 1.0 / (self.n_in.max(1) as f64).sqrt();
        for v in self.weight.of_mut(params) {
            *v = T::of(rng.random_range(-bound..bound));
        }
        for v in self.bias.of_mut(params) {
            *v = T::of(rng.random_range(-bound..bound));
        }
        Ok(())
    }

    /// y = x W + b over `rows` rows.
    pub fn forward<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        y: &mut [T],
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        self.forward_in(Precision::F32, params, x, y, rows, threads)
    }

    /// [`forward`](Self::forward) with the product in `precision`.
    pub fn forward_in<T: Float>(
        &self,
        precision: Precision,
        params: &[T],
        x: &[T],
        y: &mut [T],
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        self.forward_without_bias_in(precision, params, x, y, rows, threads)?;
        let y = &mut y[..rows * self.n_out];
        Activation::Identity.forward_with_bias(y, Some(self.bias.of(params)), self.n_out)
    }

    /// y = x W only; the caller adds the bias (an [`Mlp`](crate::model::Mlp) fuses it with
    /// the activation in [`Activation::forward_with_bias`]).
    pub fn forward_without_bias<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        y: &mut [T],
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        self.forward_without_bias_in(Precision::F32, params, x, y, rows, threads)
    }

    /// [`forward_without_bias`](Self::forward_without_bias) with the product in `precision`.
    pub fn forward_without_bias_in<T: Float>(
        &self,
        precision: Precision,
        params: &[T],
        x: &[T],
        y: &mut [T],
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        self.check_params(params)?;
        holds("layer input", x, rows, self.n_in)?;
        holds("layer output", y, rows, self.n_out)?;
        let w = self.weight.of(params);
        let y = &mut y[..rows * self.n_out];
        matmul_in(
            precision,
            (rows, self.n_out, self.n_in),
            (x, Op::N),
            (w, Op::N),
            y,
            false,
            threads,
        );
        Ok(())
    }

    /// y = x W with x in sparse row form (`x.rows() x n_in`): only the nonzero terms are
    /// computed (by the sparse product kernel). The caller adds the bias. `side` runs beside
    /// the product as one more parallel task ([`sparse_matmul_beside`]).
    pub(crate) fn forward_sparse_without_bias_beside<T: Float>(
        &self,
        params: &[T],
        x: &SparseRows<T>,
        y: &mut [T],
        threads: usize,
        side: impl FnOnce() + Send,
    ) {
        debug_assert_eq!(x.cols(), self.n_in);
        sparse_matmul_beside(x, self.weight.of(params), self.n_out, y, threads, side);
    }

    /// Given G = dL/dy (`rows x n_out`), writes
    ///
    /// - dL/dW = x^T G           (`n_in x n_out`)
    /// - dL/db = sum over rows of G
    /// - dL/dx = G W^T           (`rows x n_in`), only when `dx` is given
    ///
    /// into `grads` (same layout as `params`), overwriting what was there.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        dy: &[T],
        grads: &mut [T],
        dx: Option<&mut [T]>,
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        self.backward_in(Precision::F32, params, x, dy, grads, dx, rows, threads)
    }

    /// [`backward`](Self::backward) with the products in `precision`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_in<T: Float>(
        &self,
        precision: Precision,
        params: &[T],
        x: &[T],
        dy: &[T],
        grads: &mut [T],
        dx: Option<&mut [T]>,
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        let (n_in, n_out) = (self.n_in, self.n_out);
        self.check_params(params)?;
        self.check_params(grads)?;
        holds("layer input", x, rows, n_in)?;
        holds("output gradient", dy, rows, n_out)?;
        if let Some(dx) = &dx {
            holds("input gradient", dx, rows, n_in)?;
        }
        let dy = &dy[..rows * n_out];
        matmul_in(
            precision,
            (n_in, n_out, rows),
            (x, Op::T),
            (dy, Op::N),
            self.weight.of_mut(grads),
            false,
            threads,
        );
        self.bias_and_input_grads(precision, params, dy, grads, dx, rows, threads);
        Ok(())
    }

    /// [`backward`](Self::backward) with the input given as its transpose x^T in sparse row
    /// form (`n_in x rows`), so that dL/dW = x^T G skips the zeros of x. The same derivatives.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_sparse<T: Float>(
        &self,
        precision: Precision,
        params: &[T],
        x_t: &SparseRows<T>,
        dy: &[T],
        grads: &mut [T],
        dx: Option<&mut [T]>,
        rows: usize,
        threads: usize,
    ) {
        debug_assert_eq!((x_t.rows(), x_t.cols()), (self.n_in, rows));
        let dy = &dy[..rows * self.n_out];
        sparse_matmul(x_t, dy, self.n_out, self.weight.of_mut(grads), threads);
        self.bias_and_input_grads(precision, params, dy, grads, dx, rows, threads);
    }

    /// dL/db = column sums of G, and dL/dx = G W^T (in `precision`) when asked for.
    #[allow(clippy::too_many_arguments)]
    fn bias_and_input_grads<T: Float>(
        &self,
        precision: Precision,
        params: &[T],
        dy: &[T],
        grads: &mut [T],
        dx: Option<&mut [T]>,
        rows: usize,
        threads: usize,
    ) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        // Column sums, each in row order: a fixed summation order whatever the thread count.
        // Tasks take ranges of columns (on the leader alone, the sums left the other thread
        // idle: 0.8% of a `cells` step's samples).
        let db = self.bias.of_mut(grads);
        par::for_each_piece(db, BIAS_COLUMNS_PER_TASK, |j0, db| {
            with_simd(
                #[inline(always)]
                || {
                    db.fill(T::zero());
                    for row in dy.chunks_exact(n_out) {
                        for (d, &g) in db.iter_mut().zip(&row[j0..]) {
                            *d += g;
                        }
                    }
                },
            )
        });
        if let Some(dx) = dx {
            let w = self.weight.of(params);
            matmul_in(
                precision,
                (rows, n_in, n_out),
                (dy, Op::N),
                (w, Op::T),
                &mut dx[..rows * n_in],
                false,
                threads,
            );
        }
    }
}
