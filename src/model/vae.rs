//! The VAE's architecture: encoder MLP, Gaussian head, decoder MLP and likelihood, with every
//! parameter in one flat buffer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::scalar::Float;
use crate::model::activation::Activation;
use crate::model::dense::Dense;
use crate::model::gaussian::KlToStandardNormal;
use crate::model::likelihood::{
    CustomLikelihood, Likelihood, LikelihoodChoice, LikelihoodHead, LikelihoodInfo,
};
use crate::model::mlp::Mlp;
use crate::model::params::Layout;

/// The largest model accepted: 2^34 parameters (64 GiB in f32).
pub const MAX_PARAMS: usize = 1 << 34;

/// What a VAE looks like: widths, activation and likelihood. Start from [`VaeConfig::mnist`]
/// (also the [`Default`]) and change what differs with the chainable setters; [`Vae::new`]
/// validates the result.
///
/// ```
/// use elbo::{Activation, Likelihood, Vae, VaeConfig};
/// let config = VaeConfig::mnist()
///     .input_dim(10)
///     .hidden(&[32, 16])                 // encoder 10-32-16, decoder 16-32-10
///     .latent_dim(3)
///     .activation(Activation::Tanh)
///     .likelihood(Likelihood::GaussianLearnedVariance);
/// assert_eq!(config.decoder_hidden, [16, 32]);
/// assert!(Vae::new(config.clone()).is_ok());
/// assert!(config.latent_dim(0).validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VaeConfig {
    /// Width D of a data point (784 for MNIST).
    pub input_dim: usize,
    /// Hidden widths of the encoder, input side first.
    pub encoder_hidden: Vec<usize>,
    /// Latent width Z.
    pub latent_dim: usize,
    /// Hidden widths of the decoder, latent side first.
    pub decoder_hidden: Vec<usize>,
    /// Activation of every hidden layer.
    pub activation: Activation,
    /// p(x|z).
    pub likelihood: Likelihood,
    /// Clamp the encoder's log-variances to [-c, c] (gradient zero outside), so that e^logvar
    /// stays finite whatever the weights do. `None`: no clamp.
    #[serde(default)]
    pub logvar_clamp: Option<f64>,
    /// Feed the encoder ln(1 + x) rather than x (scVI's input for counts); the likelihood still
    /// models x itself. For non-negative data.
    #[serde(default)]
    pub log1p_input: bool,
    /// Batch normalisation after every hidden dense layer (encoder and decoder), as scVI
    /// ([`crate::model::BatchNorm`]).
    #[serde(default)]
    pub batch_norm: bool,
    /// Dropout rate after the encoder's hidden layers while training (scVI: 0.1; 0: none).
    #[serde(default)]
    pub dropout: f64,
}

impl Default for VaeConfig {
    /// [`VaeConfig::mnist`].
    fn default() -> Self {
        Self::mnist()
    }
}

impl VaeConfig {
    /// The reference MNIST model: 784-400-20-400-784, ReLU, Bernoulli.
    pub fn mnist() -> Self {
        VaeConfig {
            input_dim: 784,
            encoder_hidden: vec![400],
            latent_dim: 20,
            decoder_hidden: vec![400],
            activation: Activation::Relu,
            likelihood: Likelihood::Bernoulli,
            logvar_clamp: None,
            log1p_input: false,
            batch_norm: false,
            dropout: 0.0,
        }
    }

    /// Sets the width D of a data point.
    pub fn input_dim(mut self, d: usize) -> Self {
        self.input_dim = d;
        self
    }
    /// Sets the encoder's hidden widths, input side first.
    pub fn encoder_hidden(mut self, widths: Vec<usize>) -> Self {
        self.encoder_hidden = widths;
        self
    }
    /// Sets the latent width Z.
    pub fn latent_dim(mut self, z: usize) -> Self {
        self.latent_dim = z;
        self
    }
    /// Sets the decoder's hidden widths, latent side first.
    pub fn decoder_hidden(mut self, widths: Vec<usize>) -> Self {
        self.decoder_hidden = widths;
        self
    }
    /// Sets both: the encoder's hidden widths as given, the decoder's mirrored (no hidden
    /// layer at all, the linear VAE, with `&[]`).
    pub fn hidden(mut self, widths: &[usize]) -> Self {
        self.encoder_hidden = widths.to_vec();
        self.decoder_hidden = widths.iter().rev().copied().collect();
        self
    }
    /// Sets the hidden layers' activation.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }
    /// Sets p(x|z).
    pub fn likelihood(mut self, likelihood: Likelihood) -> Self {
        self.likelihood = likelihood;
        self
    }
    /// Sets the clamp on the encoder's log-variances (`None`: no clamp).
    pub fn logvar_clamp(mut self, clamp: Option<f64>) -> Self {
        self.logvar_clamp = clamp;
        self
    }

    /// Feeds the encoder ln(1 + x) (`true`) or x (`false`, the default).
    pub fn log1p_input(mut self, on: bool) -> Self {
        self.log1p_input = on;
        self
    }

    /// Batch normalisation after every hidden layer (`true`) or none.
    pub fn batch_norm(mut self, on: bool) -> Self {
        self.batch_norm = on;
        self
    }

    /// Dropout rate after the encoder's hidden layers (0: none).
    pub fn dropout(mut self, rate: f64) -> Self {
        self.dropout = rate;
        self
    }

    /// Checks that every size is positive and every setting possible.
    pub fn validate(&self) -> Result<()> {
        if self.input_dim == 0 {
            return Err(Error::config("input width", 0, "must be at least 1"));
        }
        if self.latent_dim == 0 {
            return Err(Error::config("latent size", 0, "must be at least 1"));
        }
        if self
            .encoder_hidden
            .iter()
            .chain(&self.decoder_hidden)
            .any(|&w| w == 0)
        {
            return Err(Error::config(
                "hidden widths",
                format!("{:?} / {:?}", self.encoder_hidden, self.decoder_hidden),
                "every hidden width must be at least 1",
            ));
        }
        self.activation.validate()?;
        self.likelihood.validate()?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("dropout", self.dropout, "must lie in [0, 1)"));
        }
        if let Some(c) = self.logvar_clamp
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::config(
                "log-variance clamp",
                c,
                "must be finite and > 0",
            ));
        }
        match self.checked_num_params() {
            Some(n) if n <= MAX_PARAMS => Ok(()),
            _ => Err(Error::config(
                "model size",
                format!("{:?} / {:?}", self.encoder_hidden, self.decoder_hidden),
                "has more than 2^34 parameters",
            )),
        }
    }

    /// The number of parameters, or `None` if it overflows.
    pub fn checked_num_params(&self) -> Option<usize> {
        let dense = |a: usize, b: usize| a.checked_mul(b)?.checked_add(b);
        let mut widths = vec![self.input_dim];
        widths.extend(&self.encoder_hidden);
        // Batch normalisation: gamma, beta and the two running averages per hidden unit.
        let mut total = if self.batch_norm {
            self.encoder_hidden
                .iter()
                .chain(&self.decoder_hidden)
                .try_fold(0usize, |t, &w| t.checked_add(w.checked_mul(4)?))?
        } else {
            0
        };
        for w in widths.windows(2) {
            total = total.checked_add(dense(w[0], w[1])?)?;
        }
        let h = *widths.last()?;
        total = total.checked_add(dense(h, self.latent_dim.checked_mul(2)?)?)?;
        let mut dec = vec![self.latent_dim];
        dec.extend(&self.decoder_hidden);
        dec.push(self.input_dim.checked_mul(
            crate::model::likelihood::LikelihoodInfo::outputs_per_dim(&self.likelihood),
        )?);
        for w in dec.windows(2) {
            total = total.checked_add(dense(w[0], w[1])?)?;
        }
        total = total.checked_add(self.likelihood.num_params(self.input_dim))?;
        Some(total)
    }
}

/// A VAE's structure; its parameters live in a separate flat buffer laid out by
/// [`Vae::layout`].
#[derive(Clone, Debug)]
pub struct Vae {
    config: VaeConfig,
    layout: Layout,
    /// x -> last hidden layer.
    pub encoder: Mlp,
    /// Last hidden layer -> [mu | logvar].
    pub head: Dense,
    /// KL(q(z|x) || N(0, I)).
    pub kl: KlToStandardNormal,
    /// The optional log-variance clamp.
    pub clamp: Option<crate::model::gaussian::LogvarClamp>,
    /// z -> decoder output (logits or means).
    pub decoder: Mlp,
    /// log p(x|z) from the decoder's output.
    pub likelihood: LikelihoodHead,
}

impl Vae {
    /// Builds the structure for `config`.
    ///
    /// ```
    /// use elbo::{Vae, VaeConfig};
    /// let vae = Vae::new(VaeConfig::mnist())?;             // 784-400-20-400-784
    /// assert_eq!((vae.num_params(), vae.latent_dim()), (652_824, 20));
    /// assert!(Vae::new(VaeConfig::mnist().latent_dim(0)).is_err());
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn new(config: VaeConfig) -> Result<Self> {
        let choice = LikelihoodChoice::Builtin(config.likelihood);
        Self::build(config, choice)
    }

    /// Builds the structure for `config` with a likelihood of the caller's own in place of
    /// `config.likelihood`: the decoder's last layer is as wide as it asks, and its parameters
    /// (if any) join the flat buffer and are trained with the rest.
    ///
    /// A model file of such a model names the likelihood; [`crate::train::checkpoint::load`]
    /// refuses it, and [`load_with_likelihood`](crate::train::checkpoint::load_with_likelihood)
    /// reads it back given the same likelihood.
    pub fn with_likelihood(
        config: VaeConfig,
        likelihood: Arc<dyn CustomLikelihood>,
    ) -> Result<Self> {
        Self::build(config, LikelihoodChoice::Custom(likelihood))
    }

    fn build(config: VaeConfig, choice: LikelihoodChoice) -> Result<Self> {
        config.validate()?;
        let info = choice.info();
        let lik_params = info.num_params(config.input_dim);
        let out_width = info
            .outputs_per_dim()
            .checked_mul(config.input_dim)
            .filter(|&w| w > 0)
            .ok_or_else(|| {
                Error::config(
                    "likelihood outputs per dimension",
                    info.outputs_per_dim(),
                    "must be at least 1, and small enough for the model to fit in memory",
                )
            })?;
        let mut layout = Layout::new();
        let act = config.activation;
        let mut enc_widths = vec![config.input_dim];
        enc_widths.extend(&config.encoder_hidden);
        let dropout = (config.dropout > 0.0).then_some(crate::model::norm::Dropout {
            rate: config.dropout,
        });
        let encoder = Mlp::with_norm(
            &mut layout,
            "encoder",
            &enc_widths,
            act,
            act,
            config.batch_norm,
            dropout,
            true,
        );
        let h = *enc_widths.last().unwrap_or(&config.input_dim);
        let head = Dense::new(&mut layout, "head", h, 2 * config.latent_dim);
        let mut dec_widths = vec![config.latent_dim];
        dec_widths.extend(&config.decoder_hidden);
        dec_widths.push(out_width);
        let decoder = Mlp::with_norm(
            &mut layout,
            "decoder",
            &dec_widths,
            act,
            Activation::Identity,
            config.batch_norm,
            None,
            false,
        );
        let own = (lik_params > 0).then(|| layout.push(info.param_name(), &[lik_params]));
        if layout.len() > MAX_PARAMS {
            return Err(Error::config(
                "model size",
                layout.len(),
                "has more than 2^34 parameters",
            ));
        }
        Ok(Vae {
            kl: KlToStandardNormal {
                latent: config.latent_dim,
            },
            clamp: config
                .logvar_clamp
                .map(|limit| crate::model::gaussian::LogvarClamp {
                    latent: config.latent_dim,
                    limit,
                }),
            likelihood: LikelihoodHead {
                choice,
                params: own,
                dim: config.input_dim,
            },
            encoder,
            head,
            decoder,
            layout,
            config,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Where each named tensor sits in the flat parameter buffer.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.layout.len()
    }

    /// Its likelihood: name, parameters, and the values it can model.
    pub fn likelihood_info(&self) -> &dyn LikelihoodInfo {
        self.likelihood.choice.info()
    }

    /// Width of x.
    pub fn input_dim(&self) -> usize {
        self.config.input_dim
    }

    /// Width of z.
    pub fn latent_dim(&self) -> usize {
        self.config.latent_dim
    }

    /// Every batch normalisation, encoder first.
    pub fn norms(&self) -> impl Iterator<Item = &crate::model::norm::BatchNorm> {
        self.encoder
            .layers
            .iter()
            .chain(&self.decoder.layers)
            .filter_map(|l| l.norm.as_ref())
    }

    /// The parameter ranges that no gradient moves: batch normalisation's running averages.
    /// Weight decay must leave them alone too.
    pub fn frozen_ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.norms().flat_map(|n| n.running()).map(|t| t.range())
    }

    /// Every dense layer, encoder first.
    pub fn dense_layers(&self) -> impl Iterator<Item = &Dense> {
        self.encoder
            .layers
            .iter()
            .map(|l| &l.dense)
            .chain(std::iter::once(&self.head))
            .chain(self.decoder.layers.iter().map(|l| &l.dense))
    }

    fn check_input<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        width: usize,
        what: &str,
    ) -> Result<usize> {
        if params.len() != self.num_params() {
            return Err(Error::shape("parameters", self.num_params(), params.len()));
        }
        if x.is_empty() || !x.len().is_multiple_of(width) {
            return Err(Error::shape(
                what,
                format!("a non-empty multiple of {width} values"),
                x.len(),
            ));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidData(format!("{what}: value {i} is {}", x[i])));
        }
        Ok(x.len() / width)
    }

    /// The encoder's q(z|x) for each row of `x` (`rows x D`): returns (means, log-variances),
    /// each `rows x Z`.
    pub fn encode<T: Float>(
        &self,
        params: &[T],
        x: &[T],
        threads: usize,
    ) -> Result<(Vec<T>, Vec<T>)> {
        let rows = self.check_input(params, x, self.input_dim(), "input")?;
        let zd = self.latent_dim();
        let logged: Vec<T>;
        let x = if self.config.log1p_input {
            logged = x.iter().map(|v| v.ln_1p()).collect();
            &logged[..]
        } else {
            x
        };
        let mut buf = self.encoder.buffers::<T>(rows)?;
        self.encoder.forward(params, x, &mut buf, rows, threads)?;
        let h = buf.outputs.last().map(|v| &v[..]).unwrap_or(x);
        let mut stats = vec![T::zero(); rows * 2 * zd];
        self.head.forward(params, h, &mut stats, rows, threads)?;
        if let Some(c) = &self.clamp {
            c.forward(&mut stats, rows)?;
        }
        let (mut mu, mut lv) = (Vec::with_capacity(rows * zd), Vec::with_capacity(rows * zd));
        for s in stats.chunks_exact(2 * zd) {
            mu.extend_from_slice(&s[..zd]);
            lv.extend_from_slice(&s[zd..]);
        }
        Ok((mu, lv))
    }

    /// The decoder's mean of p(x|z) for each row of `z` (`rows x Z`): sigmoid of the logits for
    /// the Bernoulli, the mean itself for the Gaussians. Returns `rows x D`.
    ///
    /// ```
    /// use elbo::{Vae, VaeConfig};
    /// let vae = Vae::new(VaeConfig::mnist().input_dim(6).encoder_hidden(vec![8]).latent_dim(2).decoder_hidden(vec![8]))?;
    /// let params: Vec<f32> = vae.init_params(0);
    /// let x = vec![0.5f32; 3 * 6];
    /// let (mu, logvar) = vae.encode(&params, &x, 1)?;
    /// assert_eq!((mu.len(), logvar.len()), (3 * 2, 3 * 2));
    /// let means = vae.decode_mean(&params, &mu, 1)?;
    /// assert!(means.iter().all(|&p| p > 0.0 && p < 1.0)); // Bernoulli means
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn decode_mean<T: Float>(&self, params: &[T], z: &[T], threads: usize) -> Result<Vec<T>> {
        let rows = self.check_input(params, z, self.latent_dim(), "latent codes")?;
        let mut buf = self.decoder.buffers::<T>(rows)?;
        self.decoder.forward(params, z, &mut buf, rows, threads)?;
        let a = buf.outputs.pop().unwrap_or_default();
        let (d, w) = (self.input_dim(), self.likelihood.out_width());
        let lik = self.likelihood.choice.as_dyn::<T>();
        let own = self.likelihood.params.map_or(&[][..], |t| t.of(params));
        let mut out = vec![T::zero(); rows * d];
        for (o, ar) in out.chunks_exact_mut(d).zip(a.chunks_exact(w)) {
            lik.mean(own, ar, o);
        }
        Ok(out)
    }

    /// Fresh parameters: PyTorch's default uniform initialisation for every dense layer, drawn
    /// from `seed`, and the likelihood's own initial values (a learned log-variance of 0).
    pub fn init_params<T: Float>(&self, seed: u64) -> Vec<T> {
        let mut params = vec![T::zero(); self.num_params()];
        let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Init, 0);
        for layer in self.dense_layers() {
            // The buffer was made for this layout, so every tensor fits.
            let _ = layer.init(&mut params, &mut rng);
        }
        for norm in self.norms() {
            let _ = norm.init(&mut params);
        }
        if let Some(t) = self.likelihood.params {
            self.likelihood
                .choice
                .as_dyn::<T>()
                .init_params(t.of_mut(&mut params));
        }
        params
    }
}
