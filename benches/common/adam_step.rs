//! The Adam step the kernel benchmarks time: PyTorch's defaults at lr 1e-3, past the bias
//! correction's first steps, no weight decay.

use elbo::kernels::fast::AdamStep;

pub fn adam_step() -> AdamStep<f32> {
    AdamStep {
        step_size: 1e-3,
        inv_sqrt_bc2: 1.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}
