//! Count data: the 10x, CSV and .npy readers (real and malformed files), the sparse storage,
//! the most-variable-gene choice, the procedural `cells` set, and training on counts with the
//! same bits whatever the thread count.

mod common;

use std::io::Write;
use std::path::Path;

use elbo::data::cells::{CellsConfig, generate, truth};
use elbo::data::{CsrMatrix, Dataset, Row, genes::most_variable, tenx::read_10x};
use elbo::{FitOptions, Likelihood, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    if name.ends_with(".gz") {
        let f = std::fs::File::create(p).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
    } else {
        std::fs::write(p, text).unwrap();
    }
}

const HEADER: &str = "%%MatrixMarket matrix coordinate integer general\n%metadata_json: {}\n";

/// A 3-gene x 2-cell folder: cell 1 has gene 1 = 4 and gene 3 = 1; cell 2 has gene 2 = 7.
fn small_10x(dir: &Path, gz: bool) {
    let z = if gz { ".gz" } else { "" };
    write(
        dir,
        &format!("matrix.mtx{z}"),
        &format!("{HEADER}3 2 3\n1 1 4\n3 1 0.999999999999999\n2 2 7\n"),
    );
    write(
        dir,
        &format!("features.tsv{z}"),
        "ENSG1\tCD3E\tGene Expression\nENSG2\tMS4A1\tGene Expression\nENSG3\tLYZ\tGene Expression\n",
    );
    write(dir, &format!("barcodes.tsv{z}"), "AAAC-1\nAAAG-1\n");
}

#[test]
fn a_10x_folder_is_read_transposed_and_sparse() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        small_10x(dir.path(), gz);
        let d = read_10x(dir.path()).unwrap();
        assert_eq!((d.len(), d.dim()), (2, 3));
        assert_eq!(
            d.row(0),
            Some(Row::Sparse {
                indices: &[0, 2],
                values: &[4.0, 1.0]
            })
        );
        assert_eq!(d.value(1, 1), Some(7.0));
        assert_eq!(
            d.feature_names.as_deref().unwrap(),
            ["CD3E", "MS4A1", "LYZ"]
        );
    }
    // genes.tsv (Cell Ranger 2) with one column.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "matrix.mtx", &format!("{HEADER}2 1 1\n2 1 5\n"));
    write(dir.path(), "genes.tsv", "A\nB\n");
    let d = read_10x(dir.path()).unwrap();
    assert_eq!(
        (d.value(0, 1), d.feature_names.unwrap()),
        (Some(5.0), vec!["A".to_string(), "B".into()])
    );
}

/// Each malformed folder gives an error that names the problem and, for an entry, its line.
#[test]
fn malformed_10x_files_are_refused_with_the_line() {
    let cases: &[(&str, &str)] = &[
        ("3 2 1\n1 1 2.5\n", "line 4"),       // not a count
        ("3 2 1\n1 1 -3\n", "line 4"),        // negative
        ("3 2 1\n4 1 1\n", "gene index '4'"), // past the last gene
        ("3 2 1\n1 0 1\n", "cell index '0'"), // 1-based
        ("3 2 2\n1 1 1\n1 1 2\n", "appears twice"),
        ("3 2 2\n1 1 1\n", "1 entries, the header declares 2"),
        ("3 2 1\n1 1 1\n2 2 1\n", "more entries"),
        ("3 x 1\n", "line 3"),
        ("3 2 1\n1 1\n", "line 4"),
    ];
    for (body, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        small_10x(dir.path(), false);
        write(dir.path(), "matrix.mtx", &format!("{HEADER}{body}"));
        let e = read_10x(dir.path()).unwrap_err().to_string();
        assert!(e.contains(want), "{body:?}: '{e}' does not say '{want}'");
        assert!(e.contains("matrix.mtx"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    small_10x(dir.path(), false);
    write(dir.path(), "barcodes.tsv", "only-one\n");
    assert!(
        read_10x(dir.path())
            .unwrap_err()
            .to_string()
            .contains("1 barcodes listed")
    );
    write(
        dir.path(),
        "matrix.mtx",
        "%%MatrixMarket matrix array real general\n3 2\n",
    );
    assert!(
        read_10x(dir.path())
            .unwrap_err()
            .to_string()
            .contains("line 1")
    );
    assert!(
        read_10x(tempfile::tempdir().unwrap().path())
            .unwrap_err()
            .to_string()
            .contains("no matrix.mtx")
    );
    // A header declaring billions of cells with no barcodes to back them is refused at once.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "matrix.mtx",
        &format!("{HEADER}3 4000000000 0\n"),
    );
    assert!(
        read_10x(dir.path())
            .unwrap_err()
            .to_string()
            .contains("no barcodes.tsv")
    );
}

/// The real matrix, as its README describes it.
#[test]
fn the_real_pbmc_matrix_reads_as_its_readme_says() {
    let Some(dir) = common::pbmc_dir() else {
        return;
    };
    let d = read_10x(&dir).unwrap();
    assert_eq!((d.len(), d.dim()), (559, 32_786));
    let elbo::data::RowsView::Sparse(m) = d.view() else {
        panic!("count data are held sparse")
    };
    assert_eq!(m.nnz(), 1_027_859);
    let totals: Vec<f64> = (0..m.rows())
        .map(|r| m.row(r).unwrap().1.iter().map(|&v| v as f64).sum())
        .collect();
    let (lo, hi) = totals
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &t| (a.min(t), b.max(t)));
    assert_eq!((lo, hi), (945.0, 39_886.0));
    let max = (0..m.rows())
        .flat_map(|r| m.row(r).unwrap().1.to_vec())
        .fold(0f32, f32::max);
    assert_eq!(max, 1448.0);
    assert_eq!(d.feature_names.as_ref().unwrap().len(), 32_786);
    // Sparse: about 12 bytes per nonzero, a tenth of the dense 73 MB.
    assert!(m.heap_bytes() < 13 * 1_027_859);
    let keep = most_variable(&d, 2000).unwrap();
    assert_eq!(keep.len(), 2000);
    assert!(keep.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn csv_and_npy_counts_with_names_and_float_noise() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.csv");
    std::fs::write(&p, ",G1,G2,G3\nc1,0,2,0\nc2,1.0000000001,0,0\nc3,0,0,3\n").unwrap();
    let d = elbo::files::read_counts(&p).unwrap();
    assert_eq!((d.len(), d.dim(), d.value(1, 0)), (3, 3, Some(1.0)));
    assert_eq!(d.feature_names.as_deref().unwrap(), ["G1", "G2", "G3"]);
    // No header, no names.
    std::fs::write(&p, "0,2\n5,0\n").unwrap();
    let d = elbo::files::read_counts(&p).unwrap();
    assert_eq!(
        (d.len(), d.value(1, 0), d.feature_names),
        (2, Some(5.0), None)
    );
    for (text, want) in [
        ("0,2\n5,0.5\n", "line 2, column 2"),
        ("a,b\nc1,0\nc2,-1\n", "line 3, column 2"),
        ("0,2\n5\n", "line 2 has 1 counts"),
        ("0,nan\n", "line 1, column 2"),
    ] {
        std::fs::write(&p, text).unwrap();
        let e = elbo::files::read_counts(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: '{e}'");
    }
    let npy = dir.path().join("c.npy");
    elbo::files::write_matrix(&npy, 2, 2, &[0.0, 3.0, 1.0, 0.0], &[]).unwrap();
    let d = elbo::files::read_counts(&npy).unwrap();
    assert_eq!((d.value(0, 1), d.value(1, 0)), (Some(3.0), Some(1.0)));
    elbo::files::write_matrix(&npy, 2, 2, &[0.0, 3.0, 1.5, 0.0], &[]).unwrap();
    assert!(
        elbo::files::read_counts(&npy)
            .unwrap_err()
            .to_string()
            .contains("row 1, column 0")
    );
}

#[test]
fn the_most_variable_genes_are_the_ones_that_differ_between_cells() {
    // Genes 0-2 constant share of every cell; gene 3 on in half the cells; gene 4 never on.
    let mut m = CsrMatrix::with_cols(5).unwrap();
    for i in 0..20 {
        let g3 = if i % 2 == 0 { 30.0 } else { 0.0 };
        m.push_dense_row(&[10.0, 10.0, 10.0, g3, 0.0]).unwrap();
    }
    let d = Dataset::from_csr(m).unwrap();
    assert_eq!(most_variable(&d, 1).unwrap(), vec![3]);
    assert_eq!(most_variable(&d, 4).unwrap(), vec![0, 1, 2, 3]);
    assert!(most_variable(&d, 0).is_err() && most_variable(&d, 6).is_err());
}

#[test]
fn the_cells_set_is_sparse_labelled_and_the_same_on_any_thread_count() {
    let config = CellsConfig::default();
    let one = Parallelism::threads(1)
        .unwrap()
        .run(|| generate(&config, 3, 0, 2000))
        .unwrap();
    let two = Parallelism::threads(2)
        .unwrap()
        .run(|| generate(&config, 3, 0, 2000))
        .unwrap();
    assert_eq!(one, two);
    let elbo::data::RowsView::Sparse(m) = one.view() else {
        panic!("held sparse")
    };
    let density = m.nnz() as f64 / (2000.0 * 2000.0);
    assert!((0.03..0.10).contains(&density), "density {density}");
    let labels = one.labels.as_ref().unwrap();
    assert!((0..8).all(|k| labels.iter().filter(|&&l| l == k).count() > 150));
    let t = truth(&config, 3).unwrap();
    assert!(
        t.profiles
            .iter()
            .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-9)
    );
    // The counts' total follows the drawn library size (NB means sum to it).
    let f = one.factors.as_ref().unwrap();
    let ratio: f64 = (0..2000)
        .map(|i| {
            m.row(i).unwrap().1.iter().map(|&v| v as f64).sum::<f64>()
                / f.get(i, "library").unwrap()
        })
        .sum::<f64>()
        / 2000.0;
    assert!((ratio - 1.0).abs() < 0.02, "counts / library = {ratio}");
    // Zero inflation removes counts.
    let zi = generate(
        &CellsConfig {
            zero_inflation: 0.5,
            ..config.clone()
        },
        3,
        0,
        200,
    )
    .unwrap();
    let elbo::data::RowsView::Sparse(mz) = zi.view() else {
        panic!()
    };
    let plain = generate(&config, 3, 0, 200).unwrap();
    let elbo::data::RowsView::Sparse(mp) = plain.view() else {
        panic!()
    };
    assert!(mz.nnz() < mp.nnz() * 9 / 10);
}

fn cells_training(threads: usize, lik: Likelihood) -> (Vec<f32>, f64) {
    let config = CellsConfig {
        genes: 300,
        ..CellsConfig::default()
    };
    let data = generate(&config, 1, 0, 600).unwrap();
    let vae = Vae::new(
        VaeConfig::mnist()
            .input_dim(300)
            .hidden(&[32])
            .latent_dim(4)
            .likelihood(lik)
            .log1p_input(true),
    )
    .unwrap();
    let train = TrainConfig::default()
        .epochs(2)
        .batch_size(64)
        .weight_decay(1e-6);
    let mut trainer =
        Trainer::<f32>::new(vae, train, &Parallelism::threads(threads).unwrap()).unwrap();
    let reports = trainer.fit(&data, FitOptions::new()).unwrap();
    (
        trainer.params().to_vec(),
        -reports.last().unwrap().train.neg_elbo,
    )
}

/// Training on counts gives the same bits on one thread and on two, for each count model, and
/// improves the ELBO.
#[test]
fn count_training_is_bit_identical_across_thread_counts() {
    for lik in ["poisson", "nb", "zinb", "nb-cell"] {
        let lik: Likelihood = lik.parse().unwrap();
        let (p1, e1) = cells_training(1, lik);
        let (p2, e2) = cells_training(2, lik);
        assert!(
            p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{lik}: bits differ"
        );
        assert_eq!(e1.to_bits(), e2.to_bits());
        assert!(e1.is_finite());
    }
}

#[test]
fn count_likelihoods_refuse_values_that_are_not_counts() {
    let data = Dataset::from_f32(2, 2, vec![0.0, 1.5, 2.0, 3.0]).unwrap();
    let vae = Vae::new(
        VaeConfig::mnist()
            .input_dim(2)
            .hidden(&[4])
            .latent_dim(1)
            .likelihood(Likelihood::Poisson),
    )
    .unwrap();
    let e = data
        .check_for(2, &vae.likelihood.choice.domain())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 0, column 1") && e.contains("non-negative integer counts"),
        "{e}"
    );
}
