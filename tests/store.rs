//! elbo's on-disk matrix format: round trips (sparse and dense, with labels), the `cells`
//! generator writing straight to it, and hostile or truncated files refused before anything is
//! mapped or read.

use elbo::data::Row;
use elbo::data::cells::{CellsConfig, generate, write_store};
use elbo::data::store::{MAGIC, MappedStore, StoreKind, write_dataset};

fn small_cells() -> (CellsConfig, elbo::Dataset) {
    let config = CellsConfig {
        genes: 120,
        ..CellsConfig::default()
    };
    let data = generate(&config, 4, 0, 300).unwrap();
    (config, data)
}

#[test]
fn sparse_and_dense_files_round_trip_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = small_cells();
    for kind in [StoreKind::Sparse, StoreKind::Dense] {
        let path = dir.path().join(format!("{kind:?}.elbo"));
        let h = write_dataset(&path, &data, kind).unwrap();
        assert_eq!((h.rows, h.cols, h.labels), (300, 120, true));
        let store = MappedStore::open(&path).unwrap();
        let back = store.to_dataset().unwrap();
        assert_eq!(back.to_array::<f32>(), data.to_array::<f32>());
        assert_eq!(back.labels, data.labels);
        assert_eq!(back.feature_names, data.feature_names);
        assert_eq!(store.column_names().unwrap()[5], "gene5");
        // A row read in place is the same row.
        let mut dense = vec![0f32; 120];
        data.gather(&[7], &mut dense).unwrap();
        match store.row(7).unwrap() {
            Row::Sparse { indices, values } => {
                assert_eq!(indices.len(), dense.iter().filter(|v| **v != 0.0).count());
                for (&j, &v) in indices.iter().zip(values) {
                    assert_eq!(dense[j as usize], v);
                }
            }
            Row::Floats(f) => assert_eq!(f, &dense[..]),
            other => panic!("{other:?}"),
        }
        assert!(store.row(300).is_none());
    }
    // The sparse file holds 8 bytes a nonzero besides its header, row offsets, labels and
    // gene names.
    let elbo::data::RowsView::Sparse(m) = data.view() else {
        panic!("held sparse")
    };
    let names: u64 = data
        .feature_names
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.len() as u64 + 1)
        .sum();
    let sparse = std::fs::metadata(dir.path().join("Sparse.elbo"))
        .unwrap()
        .len();
    assert_eq!(sparse, 64 + 8 * 301 + 8 * m.nnz() as u64 + 300 + names);
    let dense = std::fs::metadata(dir.path().join("Dense.elbo"))
        .unwrap()
        .len();
    assert_eq!(dense, 64 + 4 * 300 * 120 + 300 + names);
}

#[test]
fn the_cells_generator_writes_the_same_rows_straight_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = small_cells();
    let path = dir.path().join("cells.elbo");
    // 300 cells in chunks of 8192: one chunk; the second call checks an offset start too.
    write_store(&config, 4, 0, 300, &path).unwrap();
    assert_eq!(
        MappedStore::open(&path)
            .unwrap()
            .to_dataset()
            .unwrap()
            .to_array::<f32>(),
        data.to_array::<f32>()
    );
    write_store(&config, 4, 100, 50, &path).unwrap();
    let tail = MappedStore::open(&path).unwrap().to_dataset().unwrap();
    assert_eq!(tail.row(0), data.row(100));
}

fn header(kind: u32, rows: u64, cols: u64, nnz: u64, labels: u64) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend(1u32.to_le_bytes());
    b.extend(kind.to_le_bytes());
    for v in [rows, cols, nnz, labels] {
        b.extend(v.to_le_bytes());
    }
    b.resize(64, 0);
    b
}

#[test]
fn hostile_and_truncated_files_are_refused_before_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.elbo");
    let refuse = |bytes: &[u8], want: &str| {
        std::fs::write(&p, bytes).unwrap();
        let e = MappedStore::open(&p).unwrap_err().to_string();
        assert!(e.contains(want), "'{e}' does not say '{want}'");
    };
    refuse(b"", "shorter than");
    refuse(&[b"NOTMAGIC".as_slice(), &[0u8; 56]].concat(), "magic");
    // Claims of terabytes in a 64-byte file.
    refuse(
        &header(0, 1 << 40, 1 << 20, 1 << 50, 0),
        "the header describes",
    );
    refuse(&header(1, u64::MAX, u64::MAX, 0, 0), "header");
    refuse(
        &header(1, 2, 2, 4, 0),
        "the header describes 80 bytes, the file holds 64",
    );
    refuse(&header(7, 1, 1, 1, 0), "unknown kind");
    // Column names: as many as columns, each ended by a line break.
    let with_names = |text: &[u8]| {
        let mut b = header(1, 1, 2, 2, 0);
        b[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        b.extend(1f32.to_le_bytes());
        b.extend(2f32.to_le_bytes());
        b.extend(text);
        b
    };
    std::fs::write(&p, with_names(b"CD3E\nLYZ\n")).unwrap();
    assert_eq!(
        MappedStore::open(&p).unwrap().column_names().unwrap(),
        ["CD3E", "LYZ"]
    );
    refuse(&with_names(b"CD3E\n"), "1 column names for 2 columns");
    refuse(&with_names(b"A\nB\nC\n"), "3 column names for 2 columns");
    refuse(&with_names(b"A\n\xff\n"), "not UTF-8");
    let mut reserved = header(1, 1, 1, 1, 0);
    reserved[56] = 1;
    reserved.extend(1f32.to_le_bytes());
    refuse(&reserved, "reserved");
    // Row offsets that go backwards.
    let mut b = header(0, 2, 3, 2, 0);
    for v in [0u64, 2, 1] {
        b.extend(v.to_le_bytes());
    }
    b.extend([0u8; 16]);
    refuse(&b, "row offsets");
    // Column indices out of range, and values that are not finite, are caught at opening.
    let mut b = header(0, 1, 3, 1, 0);
    for v in [0u64, 1] {
        b.extend(v.to_le_bytes());
    }
    b.extend(9u32.to_le_bytes());
    b.extend(1f32.to_le_bytes());
    refuse(&b, "row 0");
    let mut b = header(1, 1, 2, 2, 0);
    b.extend(1f32.to_le_bytes());
    b.extend(f32::NAN.to_le_bytes());
    refuse(&b, "row 0, column 1");
    // A valid file cut short by one byte.
    let (_, data) = small_cells();
    write_dataset(&p, &data, StoreKind::Sparse).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.pop();
    refuse(&bytes, "the file holds");
}

/// Training on the memory-mapped file gives the same bits as training on the same cells in
/// memory, through the same every-tenth-cell split.
#[test]
fn training_from_a_mapped_file_equals_training_in_memory() {
    use elbo::{FitOptions, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};
    let dir = tempfile::tempdir().unwrap();
    let (config, all) = small_cells();
    let path = dir.path().join("cells.elbo");
    write_store(&config, 4, 0, 300, &path).unwrap();
    let mapped = elbo::Dataset::from_store(MappedStore::open(&path).unwrap()).unwrap();
    let (m_train, m_test) = mapped.mapped_holdout().unwrap();
    let (idx_train, idx_test): (Vec<usize>, Vec<usize>) = (0..300).partition(|i| i % 10 != 9);
    let (train, test) = (
        all.select(&idx_train).unwrap(),
        all.select(&idx_test).unwrap(),
    );
    assert_eq!((m_train.len(), m_test.len()), (270, 30));
    let (ma, ta) = (m_train.to_array::<f32>(), train.to_array::<f32>());
    if let Some(((i, j), v)) = ma.indexed_iter().find(|((i, j), v)| **v != ta[[*i, *j]]) {
        panic!(
            "row {i} col {j}: mapped {v} vs memory {}; mapped row {:?}",
            ta[[i, j]],
            m_train.row(i)
        );
    }
    assert_eq!(m_test.to_array::<f32>(), test.to_array::<f32>());
    assert_eq!(
        (&m_train.labels, &m_test.labels),
        (&train.labels, &test.labels)
    );
    let run = |train: &elbo::Dataset, test: &elbo::Dataset| {
        let vae = Vae::new(
            VaeConfig::mnist()
                .input_dim(120)
                .hidden(&[16])
                .latent_dim(3)
                .likelihood("nb".parse().unwrap())
                .log1p_input(true),
        )
        .unwrap();
        let mut t = Trainer::<f32>::new(
            vae,
            TrainConfig::default().epochs(2).batch_size(32),
            &Parallelism::threads(2).unwrap(),
        )
        .unwrap();
        let reports = t.fit(train, FitOptions::new().test(test)).unwrap();
        (
            t.params().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            reports.last().unwrap().test.unwrap().neg_elbo,
        )
    };
    let (a, ea) = run(&m_train, &m_test);
    let (b, eb) = run(&train, &test);
    assert_eq!(a, b);
    assert_eq!(ea.to_bits(), eb.to_bits());
}
