//! `elbo reconstruct`: test inputs above their reconstructions.

use elbo::{Error, Result};

use crate::args::*;
use crate::saved_model::*;

pub(crate) fn reconstruct(args: ModelFileArgs) -> Result<()> {
    let (loaded, test) = load_model(&args)?;
    let threads = default_threads(args.threads);
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating", "a temporary folder", e))?;
    let files = pool(threads)?.run(|| {
        elbo::pictures::write_gallery(
            &loaded.vae,
            &loaded.params,
            &test,
            dir.path(),
            args.seed.unwrap_or(0),
            threads,
        )
    })?;
    // Rows that are not images get only the scatter of their latent means: no reconstruction
    // picture to copy.
    let src = files
        .iter()
        .find(|f| f.ends_with("reconstructions.png"))
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "the model's data are {} values wide, not square images, so there is no \
                 picture of reconstructions; `elbo encode` exports the latent means",
                test.dim()
            ))
        })?;
    let out = beside_model(&args, "reconstructions.png");
    std::fs::copy(src, &out).map_err(|e| Error::io("writing", &out, e))?;
    println!("wrote {}", out.display());
    Ok(())
}
