//! `elbo convert`: any supported input to elbo's own matrix file, read memory-mapped
//! (`src/data/store.rs`). Counts and `cells` are written sparse, everything else dense; labels
//! are kept. `cells` is written straight from the generator, in bounded memory.

use std::path::PathBuf;

use elbo::Result;
use elbo::data::store::{StoreKind, write_dataset};

use crate::args::*;

#[derive(clap::Args, Debug)]
pub(crate) struct ConvertArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// The file to write (for example cells.elbo).
    #[arg(long, visible_alias = "output")]
    pub(crate) out: PathBuf,
}

pub(crate) fn convert(args: ConvertArgs) -> Result<()> {
    args.data.check_applicable()?;
    let kind = args.data.data.unwrap_or(DataKind::Shapes);
    let header = if kind == DataKind::Cells && args.data.top_genes.is_none() {
        let config = elbo::data::cells::CellsConfig {
            zero_inflation: args.data.zero_inflation.unwrap_or(0.0),
            ..Default::default()
        };
        let n = args.data.cells.unwrap_or(10_000) as u64;
        elbo::data::cells::write_store(&config, args.data.data_seed.unwrap_or(0), 0, n, &args.out)?
    } else if kind == DataKind::Counts {
        // Every cell, in order, with the kept genes: training on the file splits it as
        // training on the original does.
        write_dataset(&args.out, &read_all_counts(&args.data)?, StoreKind::Sparse)?
    } else {
        // Data with a test set of their own, and `cells` with genes chosen on its training
        // cells: the training set here, the test set beside it.
        let (train, test) = load_data(&args.data, None)?;
        let store = if kind.is_counts() {
            StoreKind::Sparse
        } else {
            StoreKind::Dense
        };
        let h = write_dataset(&args.out, &train, store)?;
        let test_path = args.out.with_extension("test.elbo");
        write_dataset(&test_path, &test, store)?;
        println!("wrote the test set to {}", test_path.display());
        h
    };
    println!(
        "wrote {} rows x {} columns ({} stored values, {:?}) to {}",
        header.rows,
        header.cols,
        header.nnz,
        header.kind,
        args.out.display()
    );
    Ok(())
}
