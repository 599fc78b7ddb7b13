//! `elbo encode`: posterior means and variances of a test set, to a file.

use elbo::{Error, Result};

use crate::args::*;
use crate::saved_model::*;

#[derive(clap::Args, Debug)]
pub(crate) struct EncodeArgs {
    #[command(flatten)]
    pub(crate) common: ModelFileArgs,
    /// Use only the first N test examples.
    #[arg(long)]
    pub(crate) limit: Option<usize>,
}

pub(crate) fn encode(args: EncodeArgs) -> Result<()> {
    if let Some(seed) = args.common.seed {
        return Err(Error::config(
            "seed",
            seed,
            "does not apply to encode, which writes the posterior means and variances and draws nothing",
        ));
    }
    let (loaded, test) = load_model(&args.common)?;
    let test = match args.limit {
        Some(0) => return Err(Error::config("limit", 0, "must be at least 1")),
        Some(n) => test.head(n),
        None => test,
    };
    let threads = default_threads(args.common.threads);
    let x = test.to_array::<f32>().into_raw_vec_and_offset().0;
    let (mu, lv) = pool(threads)?.run(|| loaded.vae.encode(&loaded.params, &x, threads))?;
    let zd = loaded.vae.latent_dim();
    let mut out = Vec::with_capacity(test.len() * 2 * zd);
    for (m, l) in mu.chunks(zd).zip(lv.chunks(zd)) {
        out.extend_from_slice(m);
        out.extend(l.iter().map(|v| v.exp()));
    }
    let header: Vec<String> = (0..zd)
        .map(|j| format!("mu_{j}"))
        .chain((0..zd).map(|j| format!("var_{j}")))
        .collect();
    let path = beside_model(&args.common, "latents.csv");
    elbo::files::write_matrix(&path, test.len(), 2 * zd, &out, &header)?;
    println!(
        "wrote {} ({} rows: {zd} means then {zd} variances)",
        path.display(),
        test.len()
    );
    Ok(())
}
