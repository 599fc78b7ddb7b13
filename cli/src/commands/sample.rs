//! `elbo sample`: decode draws from the prior.

use std::path::PathBuf;

use elbo::train::checkpoint;
use elbo::{Error, Result};

use crate::args::*;
use crate::saved_model::*;

#[derive(clap::Args, Debug)]
pub(crate) struct SampleArgs {
    #[command(flatten)]
    pub(crate) common: ModelFileArgs,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    pub(crate) n: usize,
    /// Also write the decoded means as a .npy matrix.
    #[arg(long)]
    pub(crate) npy: Option<PathBuf>,
    /// Also write the z used as a .npy matrix.
    #[arg(long)]
    pub(crate) z_npy: Option<PathBuf>,
}

pub(crate) fn sample(args: SampleArgs) -> Result<()> {
    let loaded = checkpoint::load::<f32>(&args.common.model)?;
    if args.n == 0 {
        return Err(Error::config("n", 0, "must be at least 1"));
    }
    let threads = default_threads(args.common.threads);
    let zd = loaded.vae.latent_dim();
    let mut z = vec![0f32; args.n * zd];
    elbo::rng::fill_normal(
        &mut elbo::rng::stream(
            args.common.seed.unwrap_or(0),
            elbo::rng::Purpose::Eval,
            u64::MAX - 1,
        ),
        &mut z,
    );
    let means = pool(threads)?.run(|| loaded.vae.decode_mean(&loaded.params, &z, threads))?;
    let d = loaded.vae.input_dim();
    let s = (d as f64).sqrt().round() as usize;
    let out = beside_model(&args.common, "samples.png");
    if s * s == d {
        let images: Vec<Vec<f32>> = means.chunks(d).map(|c| c.to_vec()).collect();
        elbo::pictures::write_grid(&out, &images, (s, s), 8, 2)?;
        println!("wrote {}", out.display());
    } else if args.npy.is_none() || args.common.out.is_some() {
        // Nothing useful would be written: say so rather than exit quietly.
        return Err(Error::Unsupported(format!(
            "the model's data are {d} values wide, not square images, so there is no PNG to \
             write; ask for the decoded means with --npy FILE"
        )));
    }
    if let Some(p) = &args.npy {
        elbo::files::write_matrix(p, args.n, d, &means, &[])?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &args.z_npy {
        elbo::files::write_matrix(p, args.n, zd, &z, &[])?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
