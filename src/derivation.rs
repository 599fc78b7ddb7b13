//! # From log p(x) to every gradient in this crate
//!
//! A derivation in nine steps. Each step names the function that computes it and the test
//! that checks it. The math renders with KaTeX when the documentation is built with
//! `RUSTDOCFLAGS="--html-in-header katex-header.html" cargo doc --no-deps`; without it, it
//! reads as TeX.
//!
//! Notation: data $x \in \mathbb{R}^D$, latent $z \in \mathbb{R}^Z$, prior
//! $p(z) = \mathcal{N}(0, I)$, decoder $p_\theta(x \mid z)$, encoder
//! $q_\phi(z \mid x) = \mathcal{N}(\mu, \mathrm{diag}(e^{v}))$ with $(\mu, v)$ computed from $x$.
//!
//! ## 1. The evidence lower bound, three ways
//!
//! **Jensen.** Multiply and divide by $q$ inside the integral, then move the logarithm (a
//! concave function) inside the expectation:
//!
//! $$\log p(x) = \log \int q(z \mid x) \frac{p(x, z)}{q(z \mid x)} \, dz = \log \mathbb{E}_q\[w\] \ge \mathbb{E}_q\[\log w\] = \mathrm{ELBO}, \qquad w = \frac{p(x, z)}{q(z \mid x)}.$$
//!
//! Splitting $\log w = \log p(x \mid z) + \log p(z) - \log q(z \mid x)$ gives the two terms
//! the code reports apart:
//!
//! $$\mathrm{ELBO} = \mathbb{E}_q\[\log p(x \mid z)\] - \mathrm{KL}(q(z \mid x) \,\|\, p(z)).$$
//!
//! **KL to the posterior.** For any $z$, Bayes' rule gives
//! $\log p(x) = \log p(x, z) - \log p(z \mid x)$. Add and subtract $\log q(z \mid x)$ and take
//! the expectation under $q$:
//!
//! $$\log p(x) = \mathrm{ELBO} + \mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x)).$$
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
//! Under $q$ the correction has mean $1 - \int p(z \mid x) \, dz = 0$, and what remains is the
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
//! $\mathbb{E}_q\[f(z)\]$ depends on $\phi$ through the distribution, so it cannot be
//! differentiated sample by sample. Writing $z = \mu + e^{v/2} \odot \varepsilon$ with
//! $\varepsilon \sim \mathcal{N}(0, I)$ moves $\phi$ inside $f$. With $\varepsilon$ fixed,
//! per coordinate:
//!
//! $$\frac{\partial z_j}{\partial \mu_j} = 1, \qquad \frac{\partial z_j}{\partial v_j} = \tfrac12 \varepsilon_j e^{v_j / 2}.$$
//!
//! With $L$ samples per point, the gradients of the $L$ draws add up. This is
//! [`crate::model::Reparameterize::backward`], checked by `reparameterisation` in
//! `tests/gradients.rs`.
//!
//! ## 3. The KL to the prior, in closed form
//!
//! For one coordinate, $\mathrm{KL}(\mathcal{N}(\mu, e^{v}) \,\|\, \mathcal{N}(0, 1)) = \mathbb{E}_q\[\log q - \log p\]$,
//! with $\mathbb{E}_q\[(z-\mu)^2\] = e^{v}$ and $\mathbb{E}_q\[z^2\] = \mu^2 + e^{v}$:
//!
//! $$\mathrm{KL} = \tfrac12 \sum_j \left( e^{v_j} - 1 - v_j + \mu_j^2 \right), \qquad \frac{\partial\, \mathrm{KL}}{\partial \mu_j} = \mu_j, \qquad \frac{\partial\, \mathrm{KL}}{\partial v_j} = \tfrac12 (e^{v_j} - 1).$$
//!
//! The code computes $e^{v} - 1 - v$ as `expm1(v) - v`, which is exact to rounding near
//! $v = 0$ and exactly 0 at the prior. See [`crate::model::KlToStandardNormal`]. Tests:
//! `kl_divergence` (the gradient), and in `tests/math.rs` `kl_matches_monte_carlo`,
//! `kl_is_non_negative` and `kl_is_exactly_zero_at_the_prior`.
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
//! **Gaussian with a learned log-variance $s_d$ per dimension:**
//! $-\log p = \tfrac12 \left( (x - a)^2 e^{-s} + s + \ln 2\pi \right)$, with
//! $\partial_a = (a - x) e^{-s}$ and $\partial_s = \tfrac12 \left( 1 - (x - a)^2 e^{-s} \right)$.
//!
//! All three are in [`crate::model::LikelihoodHead::backward`], checked by `likelihoods`.
//!
//! ## 5. Dense layers and activations
//!
//! For a batch, $Y = XW + \mathbf{1} b^\top$, that is
//! $Y_{ik} = \sum_j X_{ij} W_{jk} + b_k$. Given $G = \partial \mathcal{L} / \partial Y$, the
//! chain rule summed over the entries that each parameter touches gives:
//!
//! $$\frac{\partial \mathcal{L}}{\partial W_{jk}} = \sum_i X_{ij} G_{ik} = (X^\top G)_{jk}, \qquad \frac{\partial \mathcal{L}}{\partial b_k} = \sum_i G_{ik}, \qquad \frac{\partial \mathcal{L}}{\partial X_{ij}} = \sum_k G_{ik} W_{jk} = (G W^\top)_{ij}.$$
//!
//! See [`crate::model::Dense::backward`], checked by `dense_layer`. An activation $y = f(a)$
//! multiplies the incoming gradient by $f'(a)$. Each $f'$ is written through the output:
//! ReLU $1\[y > 0\]$, tanh $1 - y^2$, sigmoid $y(1 - y)$, and softplus
//! $\sigma(a) = 1 - e^{-y}$. See [`crate::model::Activation::backward`], checked by
//! `activations`; whole stacks by `mlp`.
//!
//! ## 6. The whole $-\mathrm{ELBO}$
//!
//! Training minimises the batch mean
//! $\mathcal{L} = \frac1B \sum_b \left( -\frac1L \sum_l \log p(x_b \mid z_{bl}) + \beta\, \mathrm{KL}_b \right)$.
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
//! $$\mathcal{L}_k = \mathbb{E}\left\[ \log \frac1k \sum_{i=1}^k w_i \right\] \le \log p(x), \qquad \mathcal{L}_1 = \mathrm{ELBO}, \qquad \mathcal{L}_k \uparrow \log p(x).$$
//!
//! For Gaussians the $\ln 2\pi$ terms cancel:
//! $\log w_i = \log p(x \mid z_i) - \tfrac12 \sum_j \left( z_{ij}^2 - \varepsilon_{ij}^2 - v_j \right)$.
//! The gradient of a log-sum-exp is a softmax. With self-normalised weights
//! $\tilde w_i = w_i / \sum_m w_m$:
//!
//! $$\nabla \log \frac1k \sum_i w_i = \sum_i \tilde w_i \, \nabla \log w_i.$$
//!
//! With $\varepsilon$ fixed, $\log w_i$ depends on the parameters through the decoder output
//! (weight $\tilde w_i$ on the likelihood gradient) and through $z_i$ in the prior,
//! $\partial \log p(z_i) / \partial z_i = -z_i$. It also depends on $v$ directly, through
//! $-\log q(z_i \mid x) = \tfrac12 \sum_j (\varepsilon_{ij}^2 + v_j + \ln 2\pi)$, which
//! contributes $\tfrac12$ per coordinate, weighted by $\sum_i \tilde w_i = 1$. See
//! [`crate::objective::Iwae::backward`], checked by `whole_negative_iw_bound`. The estimate of
//! $\log p(x)$ for $k$ up to thousands is
//! [`crate::objective::estimate_log_marginal`], with a stable log-sum-exp. It is checked
//! against the exact $\log p(x)$ by `d_k_sample_bound_rises_towards_log_px`.
//!
//! ## 8. Adam
//!
//! With gradient $g_t$ at step $t$ and PyTorch's defaults $\beta_1 = 0.9$,
//! $\beta_2 = 0.999$, $\epsilon = 10^{-8}$:
//!
//! $$m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad u_t = \beta_2 u_{t-1} + (1 - \beta_2) g_t^2, \qquad \theta_t = \theta_{t-1} - \frac{\eta}{1 - \beta_1^t} \frac{m_t}{\sqrt{u_t} / \sqrt{1 - \beta_2^t} + \epsilon}.$$
//!
//! The bias corrections undo the zero start of $m$ and $u$. The first step therefore moves
//! each parameter by almost exactly $\eta$ against its gradient's sign. See
//! [`crate::train::Optimizer::step`], checked by `adam_matches_its_formula`.
//!
//! ## 9. How every gradient is checked
//!
//! [`crate::gradcheck::check`] perturbs each parameter by $\pm h$ and compares
//! $(f(\theta + h e_i) - f(\theta - h e_i)) / 2h$ with the analytic value, in `f64`. The
//! truncation error is $O(h^2)$ and the rounding error $O(\epsilon_{\text{mach}} |f| / h)$.
//! At $h = 10^{-5}$ both are near $10^{-9}$, far below the tolerance
//! $|\text{analytic} - \text{numerical}| \le 10^{-7} + 10^{-5} |\text{numerical}|$.
//! `elbo gradcheck` runs the same check on a model described on the command line.
