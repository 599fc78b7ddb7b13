//! `elbo export`: the training and test sets exactly as `train` reads them (after the split and
//! --top-genes), as dense .npy matrices with their labels and gene names, for training the same
//! data in another tool.

use std::path::PathBuf;

use elbo::data::Dataset;
use elbo::{Error, Result};

use crate::args::*;

#[derive(clap::Args, Debug)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Folder to write train.npy, test.npy (f32, one row an example), and when the data have
    /// them train_labels.csv, test_labels.csv and features.txt.
    #[arg(long, visible_alias = "output")]
    pub(crate) out: PathBuf,
}

fn write(dir: &std::path::Path, name: &str, data: &Dataset) -> Result<()> {
    let values: Vec<f32> = data.to_array::<f32>().iter().copied().collect();
    elbo::files::write_matrix(
        dir.join(format!("{name}.npy")),
        data.len(),
        data.dim(),
        &values,
        &[],
    )?;
    if let Some(labels) = &data.labels {
        let names = data.label_names.clone();
        let mut text = String::from("label\n");
        for &l in labels {
            match &names {
                Some(n) => {
                    text += &format!(
                        "{}\n",
                        n.get(l as usize).cloned().unwrap_or_else(|| l.to_string())
                    )
                }
                None => text += &format!("{l}\n"),
            }
        }
        elbo::io::write_atomic(dir.join(format!("{name}_labels.csv")), text.as_bytes())?;
    }
    Ok(())
}

pub(crate) fn export(args: ExportArgs) -> Result<()> {
    args.data.check_applicable()?;
    let (train, test) = load_data(&args.data, None)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io("creating", &args.out, e))?;
    write(&args.out, "train", &train)?;
    write(&args.out, "test", &test)?;
    if let Some(names) = &train.feature_names {
        elbo::io::write_atomic(
            args.out.join("features.txt"),
            (names.join("\n") + "\n").as_bytes(),
        )?;
    }
    println!(
        "wrote {} training and {} test examples of width {} into {}",
        train.len(),
        test.len(),
        train.dim(),
        args.out.display()
    );
    Ok(())
}
