//! The reference MNIST VAE in candle (its autodiff and AdamW with no weight decay, i.e. Adam),
//! initialised as PyTorch does. Same data, batch and loss as pytorch_vae.py; prints one JSON
//! line per epoch. Built only with `--features candle-bench`:
//!
//! `cargo run --release --features candle-bench --bin candle_vae -- --data-dir ../shared/data/mnist`

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, Optimizer, VarBuilder, VarMap};
use clap::Parser;
use elbo::data::mnist;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn linear(vb: &VarBuilder, n_in: usize, n_out: usize, name: &str) -> candle_core::Result<Linear> {
    let b = 1.0 / (n_in as f64).sqrt();
    let init = candle_nn::Init::Uniform { lo: -b, up: b };
    let vb = vb.pp(name);
    let w = vb.get_with_hints((n_out, n_in), "weight", init)?;
    let bias = vb.get_with_hints(n_out, "bias", init)?;
    Ok(Linear::new(w, Some(bias)))
}

fn images(ds: &elbo::Dataset, dev: &Device) -> candle_core::Result<Tensor> {
    let x = ds.to_array::<f32>().into_raw_vec_and_offset().0;
    Tensor::from_vec(x, (ds.len(), ds.dim()), dev)
}

fn main() -> candle_core::Result<()> {
    let args = Args::parse();
    // candle reads the thread count from the same variable as rayon.
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string()) };
    let dev = Device::Cpu;
    let train = images(
        &mnist::load(&args.data_dir, mnist::Split::Train).expect("MNIST"),
        &dev,
    )?;
    let test = images(
        &mnist::load(&args.data_dir, mnist::Split::Test).expect("MNIST"),
        &dev,
    )?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let (fc1, fc21, fc22) = (
        linear(&vb, 784, 400, "fc1")?,
        linear(&vb, 400, 20, "fc21")?,
        linear(&vb, 400, 20, "fc22")?,
    );
    let (fc3, fc4) = (linear(&vb, 20, 400, "fc3")?, linear(&vb, 400, 784, "fc4")?);
    let loss = |x: &Tensor| -> candle_core::Result<Tensor> {
        let h = fc1.forward(x)?.relu()?;
        let (mu, logvar) = (fc21.forward(&h)?, fc22.forward(&h)?);
        let eps = Tensor::randn(0f32, 1f32, mu.shape(), &dev)?;
        let z = (&mu + (logvar.affine(0.5, 0.0)?.exp()? * eps)?)?;
        let a = fc4.forward(&fc3.forward(&z)?.relu()?)?;
        // BCE on logits: softplus(a) - x a, summed.
        let softplus = (a.relu()? + (a.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let bce = (softplus - (x * &a)?)?.sum_all()?;
        let kl = (((logvar.exp()? + mu.sqr()?)? - 1.0)? - &logvar)?
            .sum_all()?
            .affine(0.5, 0.0)?;
        bce + kl
    };
    let params = candle_nn::ParamsAdamW {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = candle_nn::AdamW::new(varmap.all_vars(), params)?;
    let n = train.dim(0)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    for epoch in 1..=args.epochs {
        use rand::seq::SliceRandom;
        order.shuffle(&mut elbo::rng::stream(
            0,
            elbo::rng::Purpose::Shuffle,
            epoch as u64,
        ));
        let (mut total, start) = (0.0f64, Instant::now());
        for chunk in order.chunks(128) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let x = train.index_select(&idx, 0)?;
            let l = loss(&x)?;
            opt.backward_step(&l)?;
            total += l.to_scalar::<f32>()? as f64;
        }
        let secs = start.elapsed().as_secs_f64();
        let eval_start = Instant::now();
        let mut test_total = 0.0f64;
        for j in (0..test.dim(0)?).step_by(1000) {
            test_total += loss(&test.narrow(0, j, 1000)?)?.to_scalar::<f32>()? as f64;
        }
        println!(
            "{{\"epoch\": {epoch}, \"seconds\": {secs}, \"eval_seconds\": {}, \"train_loss\": {}, \"test_loss\": {}}}",
            eval_start.elapsed().as_secs_f64(),
            total / n as f64,
            test_total / test.dim(0)? as f64
        );
    }
    Ok(())
}
