//! Opening a saved model and the data it goes with.

use std::path::PathBuf;

use elbo::data::Dataset;
use elbo::train::checkpoint;
use elbo::{Error, Result};

use crate::args::*;

#[derive(clap::Args, Debug)]
pub(crate) struct ModelFileArgs {
    /// The model file (model.safetensors from `elbo train`).
    pub(crate) model: PathBuf,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Output file (PNG; .npy or .csv for `encode`) or folder (for `pictures`) [default:
    /// beside the model].
    #[arg(long, visible_alias = "output")]
    pub(crate) out: Option<PathBuf>,
    /// Seed of the random draws [default: 0] (not for `encode`, which draws nothing).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Threads [default: all cores].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

/// The data a saved model goes with: the settings stored in the file (paths stored absolute),
/// with every option given on the command line taking the place of the stored one.
pub(crate) fn data_for_model(
    meta: &std::collections::HashMap<String, String>,
    given: &DataArgs,
    path: &std::path::Path,
) -> Result<DataArgs> {
    let data = match meta.get("elbo.data") {
        Some(s) => given.over(
            &serde_json::from_str::<DataArgs>(s)
                .map_err(|e| Error::malformed(path, format!("bad data settings ({e})")))?
                .only_applicable(),
        ),
        None => given.clone(),
    };
    data.check_applicable()?;
    Ok(data)
}

/// The model's genes, stored in its file, picked out of `data` by name: a model trained on
/// some genes reads those, in its order, whatever order the file lists them in. Data without
/// names, or a model without stored genes, are left as they are.
pub(crate) fn model_genes(
    meta: &std::collections::HashMap<String, String>,
    data: Dataset,
    path: &std::path::Path,
) -> Result<Dataset> {
    let (Some(stored), Some(names)) = (meta.get("elbo.genes"), data.feature_names.as_ref()) else {
        return Ok(data);
    };
    let genes: Vec<String> = serde_json::from_str(stored)
        .map_err(|e| Error::malformed(path, format!("bad gene list ({e})")))?;
    if genes == *names {
        return Ok(data);
    }
    let position: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(j, n)| (n.as_str(), j))
        .collect();
    let keep = genes
        .iter()
        .map(|g| {
            position.get(g.as_str()).copied().ok_or_else(|| {
                Error::InvalidData(format!(
                    "the data have no gene '{g}', which the model {} was trained on",
                    path.display()
                ))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    data.select_columns(&keep)
}

/// A saved model and the test set it was trained beside (or the one the options name).
pub(crate) fn load_model(args: &ModelFileArgs) -> Result<(checkpoint::Loaded<f32>, Dataset)> {
    let loaded = checkpoint::load::<f32>(&args.model)?;
    let data = data_for_model(&loaded.metadata, &args.data, &args.model)?;
    let test = model_genes(&loaded.metadata, load_test_data(&data)?, &args.model)?;
    test.check_for(
        loaded.vae.input_dim(),
        &loaded.vae.likelihood.choice.domain(),
    )?;
    Ok((loaded, test))
}

pub(crate) fn beside_model(args: &ModelFileArgs, name: &str) -> PathBuf {
    args.out.clone().unwrap_or_else(|| {
        args.model
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(name)
    })
}
