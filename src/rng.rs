//! Seeded random streams. Every random draw in the library comes from a stream named by
//! (seed, purpose, index), so that a draw depends on what it is for and never on the order in
//! which threads or batches happen to run.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is for; each purpose gets independent streams from the same seed.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum Purpose {
    /// Parameter initialisation.
    Init = 1,
    /// Minibatch order, one stream per epoch.
    Shuffle = 2,
    /// Reparameterisation noise eps, one stream per training step.
    Noise = 3,
    /// Dynamic binarisation, one stream per training step.
    Binarize = 4,
    /// Noise for evaluation, one stream per evaluation batch.
    Eval = 5,
    /// Procedural data, one stream per example.
    Data = 6,
    /// Importance sampling of log p(x), one stream per data point.
    Importance = 7,
    /// Dropout masks, one stream per training step.
    Dropout = 8,
}

/// The stream for (seed, purpose, index).
///
/// ```
/// use elbo::rng::{Purpose, fill_normal, stream};
/// let (mut a, mut b) = ([0f64; 3], [0f64; 3]);
/// fill_normal(&mut stream(7, Purpose::Noise, 12), &mut a);
/// fill_normal(&mut stream(7, Purpose::Noise, 12), &mut b);
/// assert_eq!(a, b);                                     // same (seed, purpose, index), same draws
/// ```
pub fn stream(seed: u64, purpose: Purpose, index: u64) -> ChaCha8Rng {
    // Spread the purpose over the seed with a large odd constant so that nearby seeds and
    // purposes do not collide.
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (purpose as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(index);
    rng
}

/// Fills `out` with standard-normal draws (sampled in f64, then rounded), so f32 and f64 runs
/// see the same noise.
pub fn fill_normal<T: crate::kernels::scalar::Float>(rng: &mut ChaCha8Rng, out: &mut [T]) {
    use rand::RngExt;
    for v in out {
        *v = T::of(rng.sample::<f64, _>(rand_distr::StandardNormal));
    }
}
