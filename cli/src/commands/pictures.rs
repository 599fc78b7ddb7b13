//! `elbo pictures`: every picture of a saved model.

use std::path::PathBuf;

use elbo::{Error, Result};

use crate::args::*;
use crate::saved_model::*;

pub(crate) fn pictures(args: ModelFileArgs) -> Result<()> {
    let (loaded, test) = load_model(&args)?;
    let threads = default_threads(args.threads);
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| args.model.parent().map(PathBuf::from).unwrap_or_default());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    let files = pool(threads)?.run(|| {
        elbo::pictures::write_gallery(
            &loaded.vae,
            &loaded.params,
            &test,
            &dir,
            args.seed.unwrap_or(0),
            threads,
        )
    })?;
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
