//! A multi-layer perceptron of any depth: dense layers each followed by an activation.

use crate::error::{Error, Result};
use crate::kernels::par;
use crate::kernels::scalar::Float;
use crate::kernels::{Precision, SparseRows};
use crate::model::activation::Activation;
use crate::model::dense::Dense;
use crate::model::norm::{BatchNorm, BatchStats, Dropout};
use crate::model::params::Layout;
use crate::model::shape::holds;

/// One dense layer, then optionally batch normalisation, then its activation, then optionally
/// dropout (scVI's order).
#[derive(Clone, Debug)]
pub struct Layer {
    /// The affine map.
    pub dense: Dense,
    /// Batch normalisation of the affine map's output, if any.
    pub norm: Option<BatchNorm>,
    /// Applied after the affine map (and the normalisation).
    pub activation: Activation,
    /// Dropout after the activation, if any (while training only).
    pub dropout: Option<Dropout>,
}

/// A stack of layers; the activation of the last may differ (identity for logits).
#[derive(Clone, Debug, Default)]
pub struct Mlp {
    /// The layers, input first.
    pub layers: Vec<Layer>,
}

/// The first layer takes its input in sparse form when at most this fraction of the input's
/// entries are nonzero (MNIST batches: about 0.19). Measured with `cargo bench --bench kernels
/// -- sparse`: on a real MNIST batch the sparse products take about a quarter of the dense ones' time;
/// at density 0.5 they take longer than the dense ones.
pub const SPARSE_INPUT_DENSITY: f64 = 0.3;

/// [`SPARSE_INPUT_DENSITY`] when the dense layers' products are bf16 ([`Precision::Bf16`]):
/// those run two to four times faster than f32's, so the sparse product pays only for sparser
/// inputs. MNIST (19% nonzero) then runs dense: on 2 threads, with AMX, a training step took
/// 1,291 µs against 1,447 µs with the sparse first layer (`examples/step_profile.rs`).
pub const SPARSE_INPUT_DENSITY_BF16: f64 = 0.1;

/// Whether `input`, just filled from a `rows x cols` batch, is sparse enough for the sparse
/// first layer when the dense products run in `precision`.
fn sparse_enough<T: Float>(
    input: &SparseRows<T>,
    rows: usize,
    cols: usize,
    precision: Precision,
) -> bool {
    let most = match precision {
        Precision::F32 => SPARSE_INPUT_DENSITY,
        Precision::Bf16 => SPARSE_INPUT_DENSITY_BF16,
    };
    input.nonzeros() as f64 / (rows * cols).max(1) as f64 <= most
}

/// out = ln(1 + x) for a dense `x` of `cols`-wide rows, row by row in parallel (each row's
/// values depend on that row alone): the log1p input transform written out.
pub(crate) fn ln_1p_rows<T: Float>(x: &[T], out: &mut [T], cols: usize) {
    par::for_each_row(out, cols, |r, out| {
        T::ln_1p_row(&x[r * cols..(r + 1) * cols], out)
    });
}

/// The most values the buffers of one stack may hold: 2^36 (256 GiB in f32), past any machine
/// this runs on; a larger request is a mistake, refused before allocating.
const MAX_BUFFER: usize = 1 << 36;

/// Per-layer outputs of an [`Mlp`] for a batch, kept for the backward pass.
#[derive(Clone, Debug)]
pub struct MlpBuffers<T> {
    /// Output of each layer (after its activation), `max_rows x width`.
    pub outputs: Vec<Vec<T>>,
    /// The last batch's input in sparse row form, when it was sparse enough to use
    /// ([`SPARSE_INPUT_DENSITY`]); then the backward pass needs its transpose.
    input: SparseRows<T>,
    input_t: SparseRows<T>,
    input_is_sparse: bool,
    /// Whether `input_t` holds the transpose of `input`: a training pass builds it in the
    /// forward pass, while `input` is still in the cache. Built in the backward pass instead,
    /// after the decoder and the likelihood had run, it read its source from memory: 0.35 ms
    /// of a 4.4 ms step of the pbmc count model on 2 threads, against about 0.1 ms.
    input_t_ready: bool,
    allow_sparse_input: bool,
    /// The arithmetic of the dense layers' products.
    precision: Precision,
    max_rows: usize,
    /// Training mode: batch statistics and dropout masks; otherwise running averages and no
    /// dropout.
    training: bool,
    /// Per layer with batch normalisation: zhat of the last training pass, `max_rows x width`.
    normed: Vec<Vec<T>>,
    /// Per layer with batch normalisation: the last training batch's statistics.
    stats: Vec<BatchStats>,
    /// Per layer with dropout: the activation before dropout, and the mask.
    activated: Vec<Vec<T>>,
    masks: Vec<Vec<T>>,
}

impl<T> MlpBuffers<T> {
    /// Whether the last forward pass took its input in sparse form.
    pub fn input_was_sparse(&self) -> bool {
        self.input_is_sparse
    }

    /// Allows (the default) or forbids the sparse first-layer path. The results agree to
    /// rounding either way; forbidding it is for measuring the dense products alone.
    pub fn set_sparse_input(&mut self, allow: bool) {
        self.allow_sparse_input = allow;
    }

    /// Training mode (batch statistics, dropout) or evaluation mode (running averages, no
    /// dropout, the default).
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Sets the arithmetic of the dense layers' products (f32 by default).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The arithmetic of the dense layers' products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether it is in training mode.
    pub fn training(&self) -> bool {
        self.training
    }

    /// The dropout masks, one per layer (empty for a layer without dropout), for the caller to
    /// fill before a training pass ([`Dropout::draw_mask`]).
    pub fn masks_mut(&mut self) -> &mut [Vec<T>] {
        &mut self.masks
    }
}

impl Mlp {
    /// Layers of widths `widths[0] -> widths[1] -> ...`, named `{name}.{i}`; hidden layers use
    /// `hidden`, the last layer uses `last`.
    ///
    /// ```
    /// use elbo::model::{Layout, Mlp};
    /// use elbo::Activation;
    /// let mut layout = Layout::new();
    /// let mlp = Mlp::new(&mut layout, "m", &[3, 4, 2], Activation::Tanh, Activation::Identity);
    /// let params = vec![0.1f64; layout.len()];
    /// let mut buf = mlp.buffers::<f64>(5)?;              // up to 5 rows
    /// mlp.forward(&params, &[0.5; 2 * 3], &mut buf, 2, 1)?;
    /// assert_eq!(buf.outputs[1][..4].len(), 2 * 2);
    /// assert!(mlp.forward(&params, &[0.5; 6 * 3], &mut buf, 6, 1).is_err()); // 6 > 5 rows
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn new(
        layout: &mut Layout,
        name: &str,
        widths: &[usize],
        hidden: Activation,
        last: Activation,
    ) -> Self {
        Self::with_norm(layout, name, widths, hidden, last, false, None, false)
    }

    /// Like [`new`](Self::new), with batch normalisation (`batch_norm`) and dropout (`dropout`)
    /// on the hidden layers, and on the last one too when `last_is_hidden` (an encoder's last
    /// layer feeds the Gaussian head, not the output). Normalisation tensors are named
    /// `{name}.{i}.norm.*`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_norm(
        layout: &mut Layout,
        name: &str,
        widths: &[usize],
        hidden: Activation,
        last: Activation,
        batch_norm: bool,
        dropout: Option<Dropout>,
        last_is_hidden: bool,
    ) -> Self {
        let n = widths.len().saturating_sub(1);
        let layers = (0..n)
            .map(|i| {
                let dense = Dense::new(layout, &format!("{name}.{i}"), widths[i], widths[i + 1]);
                let is_hidden = i + 1 < n || last_is_hidden;
                Layer {
                    dense,
                    norm: (batch_norm && is_hidden).then(|| {
                        BatchNorm::new(layout, &format!("{name}.{i}.norm"), widths[i + 1])
                    }),
                    activation: if i + 1 == n { last } else { hidden },
                    dropout: dropout.filter(|d| is_hidden && d.rate > 0.0),
                }
            })
            .collect();
        Mlp { layers }
    }

    /// Moves every batch normalisation's running averages towards the statistics of the last
    /// training pass on `buf`.
    pub fn update_running_stats<T: Float>(
        &self,
        params: &mut [T],
        buf: &MlpBuffers<T>,
    ) -> Result<()> {
        for (norm, stats) in self.norms_with(&buf.stats) {
            norm.update_running(params, stats)?;
        }
        Ok(())
    }

    /// Every batch normalisation's [`write_shard_stats`](BatchNorm::write_shard_stats) for the
    /// last training pass on `buf`.
    pub fn write_shard_stats<T: Float>(
        &self,
        out: &mut [T],
        buf: &MlpBuffers<T>,
        weight: f64,
    ) -> Result<()> {
        for (norm, stats) in self.norms_with(&buf.stats) {
            norm.write_shard_stats(out, stats, weight)?;
        }
        Ok(())
    }

    /// Every batch normalisation's [`update_running_from`](BatchNorm::update_running_from).
    pub fn update_running_from<T: Float>(
        &self,
        params: &mut [T],
        combined: &mut [T],
    ) -> Result<()> {
        for norm in self.norms() {
            norm.update_running_from(params, combined)?;
        }
        Ok(())
    }

    /// The batch normalisations, in layer order.
    fn norms(&self) -> impl Iterator<Item = &BatchNorm> {
        self.layers.iter().filter_map(|l| l.norm.as_ref())
    }

    /// The batch normalisations, each with its layer's entry of `per_layer`.
    fn norms_with<'a, S>(
        &'a self,
        per_layer: &'a [S],
    ) -> impl Iterator<Item = (&'a BatchNorm, &'a S)> {
        self.layers
            .iter()
            .zip(per_layer)
            .filter_map(|(l, s)| l.norm.as_ref().map(|n| (n, s)))
    }

    /// Width of the output (0 for an empty stack).
    pub fn out_width(&self) -> Option<usize> {
        self.layers.last().map(|l| l.dense.n_out)
    }

    /// Buffers for batches of up to `max_rows` rows; [`Error::InvalidConfig`] if they would
    /// not fit in memory.
    pub fn buffers<T: Float>(&self, max_rows: usize) -> Result<MlpBuffers<T>> {
        let n_in = self.layers.first().map_or(0, |l| l.dense.n_in);
        let total = self.layers.iter().try_fold(0usize, |t, l| {
            t.checked_add(max_rows.checked_mul(l.dense.n_out.max(n_in))?)
        });
        if total.is_none_or(|t| t > MAX_BUFFER) {
            return Err(Error::config(
                "batch rows",
                max_rows,
                "too many for the layers' buffers to fit in memory",
            ));
        }
        // A buffer of `max_rows x width` for each layer that needs one, empty for the others.
        let per_layer = |needs: &dyn Fn(&Layer) -> bool| -> Vec<Vec<T>> {
            self.layers
                .iter()
                .map(|l| {
                    vec![
                        T::zero();
                        if needs(l) {
                            max_rows * l.dense.n_out
                        } else {
                            0
                        }
                    ]
                })
                .collect()
        };
        Ok(MlpBuffers {
            outputs: self
                .layers
                .iter()
                .map(|l| vec![T::zero(); max_rows * l.dense.n_out])
                .collect(),
            input: SparseRows::with_capacity(max_rows, n_in),
            input_t: SparseRows::with_capacity(n_in, max_rows),
            input_is_sparse: false,
            input_t_ready: false,
            allow_sparse_input: true,
            precision: Precision::F32,
            max_rows,
            training: false,
            normed: per_layer(&|l: &Layer| l.norm.is_some()),
            stats: vec![BatchStats::default(); self.layers.len()],
            activated: per_layer(&|l: &Layer| l.dropout.is_some()),
            masks: per_layer(&|l: &Layer| l.dropout.is_some()),
        })
    }

    /// `rows` fits `buf` (made by [`buffers`](Self::buffers) of this stack) and `params`
    /// holds every layer's tensors.
    fn check<T: Float>(&self, params: &[T], buf: &MlpBuffers<T>, rows: usize) -> Result<()> {
        let fits = buf.outputs.len() == self.layers.len()
            && self
                .layers
                .iter()
                .zip(&buf.outputs)
                .all(|(l, o)| o.len() == buf.max_rows * l.dense.n_out);
        if !fits {
            return Err(Error::shape(
                "layer buffers",
                "buffers made by this stack's buffers()",
                "buffers of another shape",
            ));
        }
        if rows > buf.max_rows {
            return Err(Error::shape(
                "rows",
                format!("at most {} (the buffers' size)", buf.max_rows),
                rows,
            ));
        }
        for l in &self.layers {
            l.dense.weight.get(params)?;
            l.dense.bias.get(params)?;
        }
        Ok(())
    }

    /// [`forward`](Self::forward) on ln(1 + x) of the counts `x` (`rows x n_in`), the log1p
    /// input transform. When the counts are sparse enough for the sparse first layer, only
    /// their nonzeros are transformed, after they are gathered, and `dense` is left as it was;
    /// otherwise ln(1 + x) is written into `dense` and taken from there. The values are the
    /// same either way: ln(1 + 0) = 0, and each nonzero is transformed by the same function.
    pub(crate) fn forward_log1p<T: Float>(
        &self,
        params: &[T],
        counts: &[T],
        dense: &mut [T],
        buf: &mut MlpBuffers<T>,
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        let Some(first) = self.layers.first() else {
            return Err(Error::shape("layers", "at least one", 0));
        };
        let n_in = first.dense.n_in;
        self.check(params, buf, rows)?;
        holds("input", counts, rows, n_in)?;
        holds("transformed input", dense, rows, n_in)?;
        let sparse = buf.allow_sparse_input && {
            buf.input
                .fill_from_dense(&counts[..rows * n_in], rows, n_in);
            sparse_enough(&buf.input, rows, n_in, buf.precision)
        };
        if sparse {
            buf.input.map_values(T::ln_1p_in_place);
        } else {
            ln_1p_rows(&counts[..rows * n_in], &mut dense[..rows * n_in], n_in);
        }
        self.forward_with(params, dense, buf, rows, threads, Some(sparse))
    }

    /// Runs every layer on `x`; layer i's output lands in `buf.outputs[i]`.
    pub fn forward<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        buf: &mut MlpBuffers<T>,
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        self.forward_with(params, x, buf, rows, threads, None)
    }

    /// [`forward`](Self::forward), with the first layer's input already in place when
    /// `prepared` says so: sparse (`Some(true)`, in `buf.input`) or dense (`Some(false)`, `x`).
    fn forward_with<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        buf: &mut MlpBuffers<T>,
        rows: usize,
        threads: usize,
        prepared: Option<bool>,
    ) -> Result<()> {
        self.check(params, buf, rows)?;
        if let Some(first) = self.layers.first() {
            holds("input", x, rows, first.dense.n_in)?;
        }
        (buf.input_is_sparse, buf.input_t_ready) = (false, false);
        for i in 0..self.layers.len() {
            let layer = &self.layers[i];
            let (before, rest) = buf.outputs.split_at_mut(i);
            let out = &mut rest[0][..rows * layer.dense.n_out];
            if i == 0 {
                let n_in = layer.dense.n_in;
                let x = &x[..rows * n_in];
                if let Some(sparse) = prepared {
                    buf.input_is_sparse = sparse;
                } else if buf.allow_sparse_input {
                    buf.input.fill_from_dense(x, rows, n_in);
                    buf.input_is_sparse = sparse_enough(&buf.input, rows, n_in, buf.precision);
                }
                if buf.input_is_sparse {
                    let training = buf.training;
                    let (input, input_t) = (&buf.input, &mut buf.input_t);
                    layer.dense.forward_sparse_without_bias_beside(
                        params,
                        input,
                        out,
                        threads,
                        || {
                            if training {
                                input.transpose_into(input_t);
                            }
                        },
                    );
                    buf.input_t_ready = training;
                } else {
                    layer.dense.forward_without_bias_in(
                        buf.precision,
                        params,
                        x,
                        out,
                        rows,
                        threads,
                    )?;
                }
            } else {
                let input = &before[i - 1][..];
                layer.dense.forward_without_bias_in(
                    buf.precision,
                    params,
                    input,
                    out,
                    rows,
                    threads,
                )?;
            }
            let w = layer.dense.n_out;
            match &layer.norm {
                None => {
                    layer
                        .activation
                        .forward_with_bias(out, Some(layer.dense.bias.of(params)), w)?
                }
                Some(norm) => {
                    let bias = layer.dense.bias.of(params);
                    for row in out.chunks_exact_mut(w) {
                        for (v, &b) in row.iter_mut().zip(bias) {
                            *v += b;
                        }
                    }
                    if buf.training {
                        norm.forward_train(
                            params,
                            out,
                            &mut buf.normed[i],
                            &mut buf.stats[i],
                            rows,
                        )?;
                    } else {
                        norm.forward_eval(params, out, rows)?;
                    }
                    layer.activation.forward_with_bias(out, None, w)?;
                }
            }
            if layer.dropout.is_some() && buf.training {
                buf.activated[i][..rows * w].copy_from_slice(out);
                Dropout::forward(&buf.masks[i][..rows * w], out);
            }
        }
        Ok(())
    }

    /// Backpropagates through every layer. On entry `grad_a` holds dL/d(output) (`rows x
    /// out_width`); `grad_b` is scratch of the same capacity. Parameter gradients are written
    /// into `grads`; dL/dx into `dx` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        buf: &mut MlpBuffers<T>,
        grad_a: &mut [T],
        grad_b: &mut [T],
        grads: &mut [T],
        mut dx: Option<&mut [T]>,
        rows: usize,
        threads: usize,
    ) -> Result<()> {
        self.check(params, buf, rows)?;
        self.check(grads, buf, rows)?;
        let widest = self
            .layers
            .iter()
            .map(|l| l.dense.n_out.max(l.dense.n_in))
            .max();
        if let (Some(first), Some(widest)) = (self.layers.first(), widest) {
            holds("input", x, rows, first.dense.n_in)?;
            holds("output gradient", grad_a, rows, widest)?;
            holds("gradient scratch", grad_b, rows, widest)?;
        }
        let (mut cur, mut next) = (grad_a, grad_b);
        for i in (0..self.layers.len()).rev() {
            let layer = &self.layers[i];
            let width = layer.dense.n_out;
            let g = &mut cur[..rows * width];
            let dropped = layer.dropout.is_some() && buf.training;
            if dropped {
                Dropout::backward(&buf.masks[i][..rows * width], g);
            }
            let activated = if dropped {
                &buf.activated[i]
            } else {
                &buf.outputs[i]
            };
            layer
                .activation
                .backward(&activated[..rows * width], g, width)?;
            if let Some(norm) = &layer.norm {
                if !buf.training {
                    return Err(Error::config(
                        "backward pass",
                        "evaluation mode",
                        "a model with batch normalisation is differentiated in training mode \
                         (batch statistics); set the workspace to training first",
                    ));
                }
                norm.backward_train(params, &buf.normed[i], &mut buf.stats[i], g, grads, rows)?;
            }
            let input = if i == 0 { x } else { &buf.outputs[i - 1][..] };
            let target = if i == 0 {
                dx.as_deref_mut()
            } else {
                Some(&mut next[..])
            };
            if i == 0 && buf.input_is_sparse {
                if !buf.input_t_ready {
                    buf.input.transpose_into(&mut buf.input_t);
                    buf.input_t_ready = true;
                }
                layer.dense.backward_sparse(
                    buf.precision,
                    params,
                    &buf.input_t,
                    g,
                    grads,
                    target,
                    rows,
                    threads,
                );
            } else {
                layer.dense.backward_in(
                    buf.precision,
                    params,
                    input,
                    g,
                    grads,
                    target,
                    rows,
                    threads,
                )?;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts with whole numbers below and above the log1p table's 256, a fraction and a
    /// large value, at about `density` nonzeros.
    fn counts<T: Float>(rows: usize, cols: usize, density: f64) -> Vec<T> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..rows * cols)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let v = match i % 7 {
                    0 => 300.0,
                    1 => 2.5,
                    2 => 12345.0,
                    _ => (1 + i % 13) as f64,
                };
                T::of(if u < density { v } else { 0.0 })
            })
            .collect()
    }

    /// The 40-16-6 stack these tests run, its parameter count and its parameters.
    fn test_mlp<T: Float>() -> (Mlp, usize, Vec<T>) {
        let mut layout = Layout::new();
        let mlp = Mlp::new(
            &mut layout,
            "e",
            &[40, 16, 6],
            Activation::Relu,
            Activation::Identity,
        );
        let params = (0..layout.len())
            .map(|i| T::of(((i * 37 % 23) as f64 - 11.0) / 40.0))
            .collect();
        (mlp, layout.len(), params)
    }

    fn log1p_against_dense<T: Float>(density: f64, sparse: bool) {
        let (rows, n_in) = (9, 40);
        let (mlp, n_params, params) = test_mlp::<T>();
        let x = counts::<T>(rows, n_in, density);
        let mut transformed = vec![T::zero(); rows * n_in];
        for (r, out) in transformed.chunks_mut(n_in).enumerate() {
            T::ln_1p_row(&x[r * n_in..(r + 1) * n_in], out);
        }
        let run = |log1p: bool| {
            let mut buf = mlp.buffers::<T>(rows).expect("buffers");
            let mut dense = vec![T::zero(); rows * n_in];
            if log1p {
                mlp.forward_log1p(&params, &x, &mut dense, &mut buf, rows, 1)
            } else {
                mlp.forward(&params, &transformed, &mut buf, rows, 1)
            }
            .expect("forward");
            assert_eq!(buf.input_was_sparse(), sparse, "density {density}");
            let width = n_in;
            let (mut a, mut b) = (vec![T::zero(); rows * width], vec![T::zero(); rows * width]);
            let mut grads = vec![T::zero(); n_params];
            let dy: Vec<T> = (0..rows * 6)
                .map(|i| T::of(i as f64 / 17.0 - 1.5))
                .collect();
            a[..dy.len()].copy_from_slice(&dy);
            let input = if log1p && sparse {
                &dense
            } else {
                &transformed
            };
            mlp.backward(
                &params, input, &mut buf, &mut a, &mut b, &mut grads, None, rows, 1,
            )
            .expect("backward");
            (buf.outputs.clone(), grads)
        };
        let (want, got) = (run(false), run(true));
        let bits = |v: &[T]| v.iter().map(|x| x.as_f64().to_bits()).collect::<Vec<_>>();
        for (w, g) in want.0.iter().zip(&got.0) {
            assert_eq!(bits(w), bits(g), "layer outputs, density {density}");
        }
        assert_eq!(bits(&want.1), bits(&got.1), "gradients, density {density}");
    }

    /// The transpose of a sparse input that a training forward pass builds ahead of the
    /// backward pass gives the gradients of the one the backward pass builds itself (an
    /// evaluation-mode forward pass), bit for bit, and a later batch never meets an earlier
    /// batch's transpose: a forward pass that left the first batch's in place, or built it
    /// before the log1p transform, is caught.
    #[test]
    fn transpose_built_ahead_gives_the_same_gradients() {
        let (rows, n_in) = (9, 40);
        let (mlp, n_params, params) = test_mlp::<f64>();
        let first = counts::<f64>(rows, n_in, 0.1);
        let second: Vec<f64> = counts::<f64>(rows + 3, n_in, 0.15)[3 * n_in..].to_vec();
        let dy: Vec<f64> = (0..rows * 6).map(|i| i as f64 / 17.0 - 1.5).collect();
        let mut buf = mlp.buffers::<f64>(rows).expect("buffers");
        let grads_of = |buf: &mut MlpBuffers<f64>, x: &[f64], training: bool| {
            buf.set_training(training);
            let mut dense = vec![0.0; rows * n_in];
            mlp.forward_log1p(&params, x, &mut dense, buf, rows, 1)
                .expect("forward");
            assert!(buf.input_was_sparse());
            let (mut a, mut b) = (vec![0.0; rows * n_in], vec![0.0; rows * n_in]);
            a[..dy.len()].copy_from_slice(&dy);
            let mut grads = vec![0.0; n_params];
            mlp.backward(
                &params, &dense, buf, &mut a, &mut b, &mut grads, None, rows, 1,
            )
            .expect("backward");
            grads.iter().map(|g| g.to_bits()).collect::<Vec<_>>()
        };
        let want = grads_of(&mut mlp.buffers(rows).expect("buffers"), &second, false);
        let _ = grads_of(&mut buf, &first, true);
        assert_eq!(
            grads_of(&mut buf, &second, false),
            want,
            "after a training pass"
        );
        assert_eq!(grads_of(&mut buf, &second, true), want, "built ahead");
        assert_ne!(grads_of(&mut buf, &first, true), want, "the batches differ");
    }

    /// The log1p input taken by [`Mlp::forward_log1p`] (only the nonzeros transformed, after
    /// they are gathered) gives every layer, and the gradients, the same bits as ln(1 + x)
    /// written out first; too dense a batch takes the dense transform. A sparse path that
    /// skipped the transform, or used another function for it, is caught.
    #[test]
    fn log1p_of_gathered_counts_matches_the_dense_transform_bit_for_bit() {
        for (density, sparse) in [(0.08, true), (0.25, true), (0.7, false)] {
            log1p_against_dense::<f32>(density, sparse);
            log1p_against_dense::<f64>(density, sparse);
        }
    }
}
