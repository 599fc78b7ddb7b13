//! `elbo gradcheck`: hand-written gradients against central finite differences.

use elbo::{Error, Result, Vae};

use crate::args::*;

#[derive(clap::Args, Debug)]
pub(crate) struct GradcheckArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Examples in the batch.
    #[arg(long, default_value_t = 4)]
    pub(crate) batch_size: usize,
    /// z samples per example (or K of the importance-weighted bound with --iw).
    #[arg(long, default_value_t = 1)]
    pub(crate) samples: usize,
    /// Check the importance-weighted bound instead of the ELBO.
    #[arg(long)]
    pub(crate) iw: bool,
    /// KL weight.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) beta: f64,
    /// Entries checked per tensor (evenly spaced); each costs two forward passes.
    #[arg(long, default_value_t = 50)]
    pub(crate) per_tensor: usize,
    /// Finite-difference step.
    #[arg(long, default_value_t = 1e-5)]
    pub(crate) step: f64,
    /// Seed of the parameters and the noise.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
}

pub(crate) fn gradcheck(args: GradcheckArgs) -> Result<()> {
    use elbo::objective::{Elbo, Iwae, Workspace};
    let (train, _) = load_data(&args.data, None)?;
    let config = args
        .model
        .config(train.dim(), args.data.data.unwrap_or(DataKind::Shapes))?;
    let vae = Vae::new(config)?;
    if args.batch_size == 0 || args.batch_size > train.len() {
        return Err(Error::config(
            "batch size",
            args.batch_size,
            "must be between 1 and the size of the data",
        ));
    }
    if !(args.step.is_finite() && args.step > 0.0) {
        return Err(Error::config("step", args.step, "must be finite and > 0"));
    }
    let rows = args.batch_size;
    let mut params: Vec<f64> = vae.init_params(args.seed);
    if let Some(t) = vae.layout().get("likelihood.log_variance") {
        params[t.range()]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = 0.1 * ((i % 7) as f64 - 3.0));
    }
    let mut ws = Workspace::<f64>::new(&vae, rows, args.samples, 1)?;
    train.gather(
        &(0..rows).collect::<Vec<_>>(),
        &mut ws.x[..rows * train.dim()],
    )?;
    elbo::rng::fill_normal(
        &mut elbo::rng::stream(args.seed, elbo::rng::Purpose::Noise, 0),
        &mut ws.eps,
    );
    let mut grads = vec![0.0; vae.num_params()];
    let objective = if args.iw {
        "-(importance-weighted bound)"
    } else {
        "-ELBO (batch mean, beta-weighted KL)"
    };
    if args.iw {
        let iwae = Iwae::new(&vae);
        iwae.forward(&params, &mut ws, rows)?;
        iwae.backward(&params, &mut ws, rows, &mut grads)?;
    } else {
        let elbo = Elbo::new(&vae);
        elbo.forward(&params, &mut ws, rows)?;
        elbo.backward(&params, &mut ws, rows, args.beta, &mut grads)?;
    }
    let mut ws2 = ws.clone();
    let (iw, beta) = (args.iw, args.beta);
    let loss = |t: &[f64]| {
        if iw {
            // The sizes were checked by the calls above; NaN would fail every entry loudly.
            Iwae::new(&vae)
                .forward(t, &mut ws2, rows)
                .map_or(f64::NAN, |r| -r.bound)
        } else {
            Elbo::new(&vae)
                .forward(t, &mut ws2, rows)
                .map_or(f64::NAN, |b| b.loss(beta))
        }
    };
    let tol = elbo::gradcheck::Tolerance::DEFAULT;
    let checks = elbo::gradcheck::check_entries(
        vae.layout(),
        &params,
        &grads,
        loss,
        args.step,
        tol,
        args.per_tensor,
    )?;
    println!(
        "gradient of {objective} for {} examples x {} samples, eps held fixed; f64;\n\
         numerical = (f(p + h) - f(p - h)) / 2h with h = {}; pass when |analytic - numerical| <= {} + {} |numerical|\n",
        rows, args.samples, args.step, tol.atol, tol.rtol
    );
    print!("{}", elbo::gradcheck::format_table(&checks));
    let failed = checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        return Err(Error::InvalidData(format!(
            "{failed} tensor(s) failed the gradient check"
        )));
    }
    println!("\nall {} tensors agree", checks.len());
    Ok(())
}
