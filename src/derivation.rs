//! # From log p(x) to every gradient in this crate
//!
//! A derivation in eleven steps. Each step names the function that computes it and the test that
//! checks it. The math renders with KaTeX. Offline, `scripts/katex.sh` fetches KaTeX from the
//! npm registry into `target/katex` and prints the header to build with:
//! `RUSTDOCFLAGS="--html-in-header $(scripts/katex.sh)" cargo doc --no-deps -p elbo --open`.
//! With `katex-header.html` instead, KaTeX comes from a CDN (as on docs.rs). CI checks that
//! every formula reaches the page intact and renders without a KaTeX error
//! (`scripts/check_derivation_html.py`).
//!
//! Notation: data $x \in \mathbb{R}^D$, latent $z \in \mathbb{R}^Z$, prior
//! $p(z) = \mathcal{N}(0, I)$, decoder $p\_\theta(x \mid z)$, encoder
//! $q\_\phi(z \mid x) = \mathcal{N}(\mu, \mathrm{diag}(e^{v}))$ with $(\mu, v)$ computed from $x$.
//!
//! ## 1. The evidence lower bound, three ways
//!
//! **Jensen.** Multiply and divide by $q$ inside the integral, then move the logarithm (a
//! concave function) inside the expectation:
//!
//! $$\log p(x) = \log \int q(z \mid x) \frac{p(x, z)}{q(z \mid x)} \\, dz = \log \mathbb{E}\_q\[w\] \ge \mathbb{E}\_q\[\log w\] = \mathrm{ELBO}, \qquad w = \frac{p(x, z)}{q(z \mid x)}.$$
//!
//! Splitting $\log w = \log p(x \mid z) + \log p(z) - \log q(z \mid x)$ gives the two terms
//! the code reports apart:
//!
//! $$\mathrm{ELBO} = \mathbb{E}\_q\[\log p(x \mid z)\] - \mathrm{KL}(q(z \mid x) \\,\\|\\, p(z)).$$
//!
//! **KL to the posterior.** For any $z$, Bayes' rule gives
//! $\log p(x) = \log p(x, z) - \log p(z \mid x)$. Add and subtract $\log q(z \mid x)$ and take
//! the expectation under $q$:
//!
//! $$\log p(x) = \mathrm{ELBO} + \mathrm{KL}(q(z \mid x) \\,\\|\\, p(z \mid x)).$$
//!
//! The KL is non-negative, so the ELBO is a lower bound. The gap is exactly how far $q$ is from
//! the true posterior, so raising the ELBO with respect to $\phi$ pulls $q$ towards the
//! posterior.
//!
//! **Bayes with $\ln y \le y - 1$.** Put $y = p(z \mid x) / q(z \mid x)$ in
//! $\ln y \le y - 1$. Then $\ln(q/p(z \mid x)) = -\ln y \ge 1 - y$, and for every single $z$:
//!
//! $$\ln p(x) \ge \ln p(x, z) - \ln q(z \mid x) + 1 - \frac{p(z \mid x)}{q(z \mid x)}.$$
//!
//! Under $q$ the correction has mean $1 - \int p(z \mid x) \\, dz = 0$, and what remains is the
//! ELBO.
//!
//! These three are printed with numbers by `elbo identities`
//! ([`crate::testbed::linear_gaussian::IdentitiesReport`]). `tests/linear_gaussian.rs` checks
//! them on an exact linear-Gaussian model, where $\log p(x)$ and $p(z \mid x)$ are closed-form:
//! `a_elbo_is_below_log_px`, `b_gap_is_kl_to_the_posterior`,
//! `c_log_inequality_holds_for_every_z`, `e_exact_posterior_makes_the_bound_tight`.
//!
//! ## 2. The reparameterisation and its gradient
//!
//! $\mathbb{E}\_q\[f(z)\]$ depends on $\phi$ through the distribution, so it cannot be
//! differentiated sample by sample. Writing $z = \mu + e^{v/2} \odot \varepsilon$ with
//! $\varepsilon \sim \mathcal{N}(0, I)$ moves $\phi$ inside $f$. With $\varepsilon$ fixed,
//! per coordinate:
//!
//! $$\frac{\partial z\_j}{\partial \mu\_j} = 1, \qquad \frac{\partial z\_j}{\partial v\_j} = \tfrac12 \varepsilon\_j e^{v\_j / 2}.$$
//!
//! **Why this estimates the right gradient, without bias.** The distribution of $\varepsilon$
//! does not depend on $\phi$, so the expectation can be taken over $\varepsilon$ and the
//! gradient moved inside it (for an $f$ whose gradient is integrable, by dominated
//! convergence):
//!
//! $$\nabla\_\phi \mathbb{E}\_{q\_\phi(z \mid x)}\[f(z)\] = \nabla\_\phi \mathbb{E}\_{\varepsilon \sim \mathcal{N}(0, I)}\[f(\mu + e^{v/2} \odot \varepsilon)\] = \mathbb{E}\_{\varepsilon}\[\nabla\_\phi f(\mu + e^{v/2} \odot \varepsilon)\].$$
//!
//! Each draw's gradient $\nabla\_\phi f(\mu + e^{v/2} \odot \varepsilon\_l)$ therefore has the
//! true gradient as its mean, and so does their average over $L$ draws: the estimator is
//! unbiased, and its variance falls as $1/L$.
//!
//! With $L$ samples per point, the gradients of the $L$ draws add up. This is
//! [`crate::model::Reparameterize::backward`], checked by `reparameterisation` in
//! `tests/gradients.rs`.
//!
//! ## 3. The KL to the prior, in closed form
//!
//! For one coordinate, $\mathrm{KL}(\mathcal{N}(\mu, e^{v}) \\,\\|\\, \mathcal{N}(0, 1)) = \mathbb{E}\_q\[\log q - \log p\]$,
//! with $\mathbb{E}\_q\[(z-\mu)^2\] = e^{v}$ and $\mathbb{E}\_q\[z^2\] = \mu^2 + e^{v}$:
//!
//! $$\mathrm{KL} = \tfrac12 \sum\_j \left( e^{v\_j} - 1 - v\_j + \mu\_j^2 \right), \qquad \frac{\partial\\, \mathrm{KL}}{\partial \mu\_j} = \mu\_j, \qquad \frac{\partial\\, \mathrm{KL}}{\partial v\_j} = \tfrac12 (e^{v\_j} - 1).$$
//!
//! The code computes $e^{v} - 1 - v$ as `expm1(v) - v`, which is exact to rounding near
//! $v = 0$ and exactly 0 at the prior. See [`crate::model::KlToStandardNormal`]. Tests:
//! `kl_divergence` (the gradient), and in `tests/math.rs` `kl_matches_monte_carlo`,
//! `kl_is_non_negative` and `kl_is_exactly_zero_at_the_prior`.
//!
//! **The log-variance clamp.** With `logvar_clamp` set to $c$, the head's $v$ is replaced by
//! $\bar v = \min(\max(v, -c), c)$ before it is used, so $e^{\bar v}$ and the KL stay finite
//! whatever the weights do. Its derivative is $\partial \bar v / \partial v = 1$ for
//! $|v| < c$ and $0$ where the clamp holds; at exactly $\pm c$ the code takes 0 (a
//! subgradient). See [`crate::model::LogvarClamp::backward`], checked on both sides of the
//! bound by `whole_negative_elbo` with clamps of 0.05 to 1.
//!
//! ## 4. The likelihoods and their gradients at the decoder output $a$
//!
//! **Bernoulli on logits** with $p = \sigma(a)$, for grey-level targets $x \in \[0, 1\]$:
//! $\log p(x \mid a) = x \log \sigma(a) + (1 - x) \log(1 - \sigma(a))$. Using
//! $\log \sigma(a) = a - \mathrm{softplus}(a)$ and $\log(1 - \sigma(a)) = -\mathrm{softplus}(a)$:
//!
//! $$\log p(x \mid a) = x a - \mathrm{softplus}(a), \qquad \frac{\partial (-\log p)}{\partial a} = \sigma(a) - x.$$
//!
//! For any finite $a$, $\mathrm{softplus}(a) = \max(a, 0) + \mathrm{log1p}(e^{-|a|})$ is finite,
//! and $\sigma$ is evaluated on the side where the exponential cannot overflow
//! (`bernoulli_is_stable_at_extreme_logits`, at $|a| = 10^4$).
//!
//! **Gaussian with fixed variance $s^2$:**
//! $-\log p = \tfrac12 \left( (x - a)^2 / s^2 + \ln 2\pi s^2 \right)$, with gradient
//! $(a - x)/s^2$.
//!
//! **Gaussian with a learned log-variance $s\_d$ per dimension:**
//! $-\log p = \tfrac12 \left( (x - a)^2 e^{-s} + s + \ln 2\pi \right)$, with
//! $\partial\_a = (a - x) e^{-s}$ and $\partial\_s = \tfrac12 \left( 1 - (x - a)^2 e^{-s} \right)$.
//!
//! All three are in [`crate::model::LikelihoodHead::backward`], checked by `likelihoods`.
//!
//! ## 5. Dense layers and activations
//!
//! For a batch, $Y = XW + \mathbf{1} b^\top$, that is
//! $Y\_{ik} = \sum\_j X\_{ij} W\_{jk} + b\_k$. Given $G = \partial \mathcal{L} / \partial Y$, the
//! chain rule summed over the entries that each parameter touches gives:
//!
//! $$\frac{\partial \mathcal{L}}{\partial W\_{jk}} = \sum\_i X\_{ij} G\_{ik} = (X^\top G)\_{jk}, \qquad \frac{\partial \mathcal{L}}{\partial b\_k} = \sum\_i G\_{ik}, \qquad \frac{\partial \mathcal{L}}{\partial X\_{ij}} = \sum\_k G\_{ik} W\_{jk} = (G W^\top)\_{ij}.$$
//!
//! See [`crate::model::Dense::backward`], checked by `dense_layer`. An activation $y = f(a)$
//! multiplies the incoming gradient by $f^\prime(a)$. Each $f^\prime$ is written through the output:
//! ReLU $1\[y > 0\]$; LeakyReLU with slope $s \in (0, 1)$, $y = a$ for $a > 0$ and $s a$
//! otherwise, so $y$ has the sign of $a$ and $f^\prime = 1$ for $y > 0$, else $s$; tanh
//! $1 - y^2$; sigmoid $y(1 - y)$; and softplus $\sigma(a) = 1 - e^{-y}$. See [`crate::model::Activation::backward`], checked by
//! `activations`; whole stacks by `mlp`.
//!
//! ## 6. The whole $-\mathrm{ELBO}$
//!
//! Training minimises the batch mean
//! $\mathcal{L} = \frac1B \sum\_b \left( -\frac1L \sum\_l \log p(x\_b \mid z\_{bl}) + \beta\\, \mathrm{KL}\_b \right)$.
//! [`crate::objective::Elbo::backward`] chains the steps above:
//!
//! 1. the likelihood gradient at each decoder output, scaled by $1/(BL)$ (step 4);
//! 2. back through the decoder's layers to $\partial \mathcal{L} / \partial z$ (step 5);
//! 3. to $(\mu, v)$ by reparameterisation (step 2), plus $\beta / B$ times the KL's gradient
//!    (step 3);
//! 4. back through the encoder head and layers (step 5); $x$ needs no gradient.
//!
//! Checked end to end by `whole_negative_elbo`, over random architectures, likelihoods, sample
//! counts and $\beta$, with $\varepsilon$ held fixed.
//!
//! ## 7. The importance-weighted bound
//!
//! Jensen applied to the average of $k$ weights gives a tighter bound (Burda et al., 2015):
//!
//! $$\mathcal{L}\_k = \mathbb{E}\left\[ \log \frac1k \sum\_{i=1}^k w\_i \right\] \le \log p(x), \qquad \mathcal{L}\_1 = \mathrm{ELBO}, \qquad \mathcal{L}\_k \uparrow \log p(x).$$
//!
//! For Gaussians the $\ln 2\pi$ terms cancel:
//! $\log w\_i = \log p(x \mid z\_i) - \tfrac12 \sum\_j \left( z\_{ij}^2 - \varepsilon\_{ij}^2 - v\_j \right)$.
//! The gradient of a log-sum-exp is a softmax. With self-normalised weights
//! $\tilde w\_i = w\_i / \sum\_m w\_m$:
//!
//! $$\nabla \log \frac1k \sum\_i w\_i = \sum\_i \tilde w\_i \\, \nabla \log w\_i.$$
//!
//! With $\varepsilon$ fixed, $\log w\_i$ depends on the parameters through the decoder output
//! (weight $\tilde w\_i$ on the likelihood gradient) and through $z\_i$ in the prior,
//! $\partial \log p(z\_i) / \partial z\_i = -z\_i$. It also depends on $v$ directly, through
//! $-\log q(z\_i \mid x) = \tfrac12 \sum\_j (\varepsilon\_{ij}^2 + v\_j + \ln 2\pi)$, which
//! contributes $\tfrac12$ per coordinate, weighted by $\sum\_i \tilde w\_i = 1$. See
//! [`crate::objective::Iwae::backward`], checked by `whole_negative_iw_bound`. The estimate of
//! $\log p(x)$ for $k$ up to thousands is
//! [`crate::objective::estimate_log_marginal`], with a stable log-sum-exp. It is checked
//! against the exact $\log p(x)$ by `d_k_sample_bound_rises_towards_log_px`.
//!
//! ## 8. Adam
//!
//! With gradient $g\_t$ at step $t$ and PyTorch's defaults $\beta\_1 = 0.9$,
//! $\beta\_2 = 0.999$, $\epsilon = 10^{-8}$:
//!
//! $$m\_t = \beta\_1 m\_{t-1} + (1 - \beta\_1) g\_t, \qquad u\_t = \beta\_2 u\_{t-1} + (1 - \beta\_2) g\_t^2, \qquad \theta\_t = \theta\_{t-1} - \frac{\eta}{1 - \beta\_1^t} \frac{m\_t}{\sqrt{u\_t} / \sqrt{1 - \beta\_2^t} + \epsilon}.$$
//!
//! The bias corrections undo the zero start of $m$ and $u$. The first step therefore moves
//! each parameter by almost exactly $\eta$ against its gradient's sign. See
//! [`crate::train::Optimizer::step`], checked by `adam_matches_its_formula`.
//!
//! **SGD with momentum** (PyTorch's convention, no dampening): $u\_1 = g\_1$,
//! $u\_t = \mu u\_{t-1} + g\_t$, $\theta\_t = \theta\_{t-1} - \eta u\_t$. Unrolled,
//! $u\_t = \sum\_{s \le t} \mu^{t-s} g\_s$: a step follows an exponentially weighted sum of past
//! gradients, so directions that persist build up speed. See
//! [`crate::train::Optimizer::step`], checked by `sgd_momentum_matches_its_formula`.
//!
//! **Gradient clipping.** With a bound $c$ on the norm, the gradient is rescaled when it is
//! longer: $g \leftarrow g \cdot \min(1, c / \lVert g \rVert\_2)$. Its direction is kept and
//! its length becomes $\min(\lVert g \rVert\_2, c)$, so one bad batch cannot throw the
//! parameters far. The norm is summed in `f64` in one fixed order, so clipping changes no bit
//! between thread counts. See [`crate::train::clip_grad_norm`], checked by
//! `gradient_clipping_bounds_the_norm`.
//!
//! ## 9. How every gradient is checked
//!
//! [`crate::gradcheck::check`] perturbs each parameter by $\pm h$ and compares
//! $(f(\theta + h e\_i) - f(\theta - h e\_i)) / 2h$ with the analytic value, in `f64`. The
//! truncation error is $O(h^2)$ and the rounding error $O(\epsilon\_{\text{mach}} |f| / h)$.
//! At $h = 10^{-5}$ both are near $10^{-9}$, far below the tolerance
//! $|\text{analytic} - \text{numerical}| \le 10^{-7} + 10^{-5} |\text{numerical}|$.
//! `elbo gradcheck` runs the same check on a model described on the command line.
//!
//! ## 10. The linear-Gaussian case, where everything is exact
//!
//! Take a linear decoder with Gaussian noise, $p(z) = \mathcal{N}(0, I)$ and
//! $p(x \mid z) = \mathcal{N}(W z + b, \Psi)$ with $\Psi$ diagonal (probabilistic PCA when
//! $\Psi = \psi I$). Then $x = W z + b + \text{noise}$ is a sum of Gaussians, so
//!
//! $$p(x) = \mathcal{N}(b, \\, W W^\top + \Psi), \qquad \log p(x) = -\tfrac12 \left( D \ln 2\pi + \ln \det C + (x - b)^\top C^{-1} (x - b) \right), \quad C = W W^\top + \Psi.$$
//!
//! Completing the square in $\log p(x \mid z) + \log p(z)$, which is quadratic in $z$, gives
//! the posterior, also Gaussian:
//!
//! $$p(z \mid x) = \mathcal{N}(m, S), \qquad S = (I + W^\top \Psi^{-1} W)^{-1}, \qquad m = S W^\top \Psi^{-1} (x - b).$$
//!
//! Every term of step 1 is then a closed form: the ELBO for a Gaussian $q$, $\log p(x)$, and
//! $\mathrm{KL}(q \\,\\|\\, p(z \mid x))$ between two Gaussians. This is the test-bed
//! [`crate::testbed::linear_gaussian::LinearGaussian`] (`log_marginal`, `posterior`,
//! `elbo_terms`, `kl_to_posterior`), which `elbo identities` prints and
//! `tests/linear_gaussian.rs` checks against the library's own forward passes.
//!
//! **Why the bound is tight here.** The gap is $\mathrm{KL}(q \\,\\|\\, p(z \mid x))$, zero
//! exactly when $q = p(z \mid x)$. A VAE with no hidden layer, a linear decoder and the
//! Gaussian likelihood is this model, and its encoder is linear too: it can output the mean
//! $m$, which is linear in $x$, and the log-variances $\ln \mathrm{diag}(S)$, which do not
//! depend on $x$. So $q$ can equal the posterior whenever $S$ is diagonal, that is when the
//! columns of $\Psi^{-1/2} W$ are orthogonal; then the ELBO equals $\log p(x)$
//! (`e_exact_posterior_makes_the_bound_tight`). With a non-diagonal $S$, the best diagonal $q$
//! leaves a gap. Trained, such a linear VAE reaches the maximum likelihood of probabilistic PCA
//! (`f_trained_linear_vae_reaches_the_pca_maximum_likelihood`); `elbo train --hidden ""
//! --likelihood gaussian` trains one from the command line.
//!
//! ## 11. Counts: the negative binomial, zero inflation and the softmax-library mean
//!
//! Gene-expression data $x \in \mathbb{N}^D$ are counts, so the decoder parameterises a count
//! distribution per gene ([`crate::model::counts`]).
//!
//! **The mean.** As in scVI, the decoder's logits $a$ give proportions and the cell's observed
//! total $l = \sum\_g x\_g$ gives the scale:
//!
//! $$\mu\_g = l \\, \mathrm{softmax}(a)\_g, \qquad \ln \mu\_g = \ln l + a\_g - \log \sum\_k e^{a\_k}.$$
//!
//! Since $\partial \ln \mu\_g / \partial a\_k = [g = k] - \rho\_k$ with $\rho = \mathrm{softmax}(a)$,
//! the chain rule from $g\_g = \partial L / \partial \ln \mu\_g$ is
//!
//! $$\frac{\partial L}{\partial a\_k} = g\_k - \rho\_k \sum\_g g\_g,$$
//!
//! whose entries sum to zero, as they must: adding a constant to every logit changes nothing
//! ([`crate::model::counts::SoftmaxLibrary::backward`], `softmax_library_backward_is_shift_invariant`).
//! The forward pass applies it in place at the end of each row, while the row is still in
//! cache ([`crate::model::counts::SoftmaxLibrary::backward_in_place`]); the backward pass then
//! only scales what it reads.
//!
//! **Poisson.** $\log p(x) = x \ln \mu - \mu - \ln x!$, and $\partial \log p / \partial \ln \mu = x - \mu$.
//!
//! **The negative binomial as a Gamma-Poisson mixture.** Let the rate be
//! $\lambda \sim \mathrm{Gamma}(\theta, \text{scale } \mu / \theta)$, with mean $\mu$ and
//! variance $\mu^2 / \theta$, and $x \mid \lambda \sim \mathrm{Poisson}(\lambda)$. Integrating
//! $\lambda$ out,
//!
//! $$p(x) = \int\_0^\infty \frac{\lambda^x e^{-\lambda}}{x!} \\, \frac{\lambda^{\theta - 1} e^{-\lambda \theta / \mu}}{\Gamma(\theta) (\mu / \theta)^\theta} \\, d\lambda = \frac{\Gamma(x + \theta)}{\Gamma(\theta) \\, x!} \left( \frac{\theta}{\theta + \mu} \right)^\theta \left( \frac{\mu}{\theta + \mu} \right)^x,$$
//!
//! because the integrand is an unnormalised $\mathrm{Gamma}(x + \theta, \text{rate } 1 + \theta / \mu)$
//! density. Its mean is $\mu$ and its variance $\mu + \mu^2 / \theta$: $\theta$ is the inverse
//! dispersion, and $\theta \to \infty$ gives back the Poisson. The code computes
//!
//! $$\log p(x) = R(\theta, x) - \ln x! + x \ln \mu - (\theta + x) \\, \mathrm{log1p}(\mu / \theta), \qquad R(\theta, x) = \ln \Gamma(x + \theta) - \ln \Gamma(\theta) - x \ln \theta,$$
//!
//! which is the same expression regrouped so that nothing large cancels: at $\theta = 10^8$ the
//! two $\ln \Gamma$ are $1.7 \cdot 10^9$ and their difference matters to a few units, which f32
//! cannot hold (scvi-tools issue 2965). $R$ comes from Stirling's series subtracted term by term,
//! $R = \theta \left( (1 + u) \\, \mathrm{log1p}(u) - u \right) - \tfrac12 \mathrm{log1p}(u) + c(\theta + x) - c(\theta)$
//! with $u = x / \theta$ and $c$ Stirling's correction, and tends to 0 as $\theta$ grows
//! ([`crate::model::counts::negative_binomial`]; `rising_factorial_and_digamma_difference_do_not_cancel`,
//! `large_theta_is_the_poisson_limit`).
//!
//! **Its gradients.** In $\ln \mu$:
//!
//! $$\frac{\partial \log p}{\partial \ln \mu} = x - (\theta + x) \frac{\mu}{\theta + \mu} = \frac{\theta (x - \mu)}{\theta + \mu}.$$
//!
//! In $\theta$, with $\psi$ the digamma function:
//!
//! $$\frac{\partial \log p}{\partial \theta} = \psi(x + \theta) - \psi(\theta) - \mathrm{log1p}(\mu / \theta) + \frac{\mu - x}{\theta + \mu},$$
//!
//! and $\partial / \partial \ln \theta$ is $\theta$ times it (the model learns $\ln \theta$,
//! per gene or per gene and cell). The digamma difference is taken as
//! $\mathrm{log1p}(x / \theta)$ plus the difference of the two asymptotic tails, so at large
//! $\theta$ the terms of size $x / \theta$ do not cancel. Checked from $\theta = 10^{-4}$ to
//! $10^8$, counts to $10^5$ and $\mu$ down to $10^{-10}$
//! (`theta_gradient_is_accurate_from_1e_minus_4_to_1e8`), and a 1% error in it is caught
//! (`a_one_percent_error_in_the_theta_gradient_is_caught`).
//!
//! **Zero inflation.** With probability $\pi = \sigma(h)$ a count is a structural zero:
//! $p(0) = \pi + (1 - \pi) p\_{\mathrm{NB}}(0)$ and $p(x) = (1 - \pi) p\_{\mathrm{NB}}(x)$ for
//! $x > 0$. In logs, with $\ln(1 - \pi) = -\mathrm{softplus}(h)$,
//!
//! $$\log p(0) = \mathrm{logaddexp}(h, \ln p\_{\mathrm{NB}}(0)) - \mathrm{softplus}(h), \qquad \log p(x) = \ln p\_{\mathrm{NB}}(x) - \mathrm{softplus}(h).$$
//!
//! With $w = \sigma(h - \ln p\_{\mathrm{NB}}(0))$, the posterior probability that an observed
//! zero is structural, the gradients at a zero are
//! $\partial \log p / \partial h = w - \sigma(h)$ and
//! $\partial \log p / \partial \ln p\_{\mathrm{NB}} = 1 - w$; at a positive count they are
//! $-\sigma(h)$ and 1. The NB's own gradients are scaled by the second factor
//! ([`crate::model::counts::zero_inflate`]; `extreme_zero_inflation_logits_stay_finite` at
//! $h = \pm 10^4$).
//!
//! Every piece, and the whole $-\mathrm{ELBO}$ and importance-weighted bound with each count
//! likelihood, is checked against central differences by `count_heads`,
//! `whole_negative_elbo_with_counts` and `whole_negative_iw_bound_with_counts`
//! (`tests/counts.rs`). The probabilities sum to one (`the_pmfs_sum_to_one`), so an
//! importance-sampled $\log p(x)$ is a true log-likelihood.
