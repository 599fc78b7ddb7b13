//! Readers and generators: IDX (raw, gzipped, and broken in every way), MNIST, `shapes`, and
//! batch order.

mod common;

use std::io::Write;

use elbo::Error;
use elbo::data::idx::{parse_idx, read_idx, write_idx};
use elbo::data::shapes::{self, FACTOR_LEVELS, SIDE};
use elbo::data::{Dataset, epoch_order, mnist};

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn idx_round_trips_raw_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8 * 7).collect();
    let raw = dir.path().join("a.idx");
    write_idx(&raw, &[2, 3, 4], &data).unwrap();
    let a = read_idx(&raw).unwrap();
    assert_eq!(
        (a.dims.clone(), a.data.clone()),
        (vec![2, 3, 4], data.clone())
    );
    let gz = dir.path().join("a.idx.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&raw).unwrap())).unwrap();
    assert_eq!(read_idx(&gz).unwrap(), a);
}

fn parse(bytes: &[u8]) -> elbo::Result<elbo::data::idx::IdxArray> {
    parse_idx(bytes, std::path::Path::new("test.idx"))
}

#[test]
fn idx_rejects_broken_files_with_a_clear_error() {
    let good = idx_bytes(&[2, 2], &[1, 2, 3, 4]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "shorter than"),
        (
            "truncated data",
            good[..good.len() - 1].to_vec(),
            "truncated",
        ),
        ("truncated header", good[..6].to_vec(), "truncated header"),
        ("extra data", [good.clone(), vec![9]].concat(), "more data"),
        ("wrong magic", b"PK\x03\x04rest".to_vec(), "not an IDX file"),
        (
            "float type",
            {
                let mut b = good.clone();
                b[2] = 0x0D;
                b
            },
            "element type",
        ),
        ("no dimensions", vec![0, 0, 8, 0], "zero dimensions"),
        (
            "overflowing dims",
            idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[]),
            "too large",
        ),
        (
            "huge claim",
            idx_bytes(&[60000, 28, 28], &[0; 100]),
            "truncated",
        ),
    ];
    for (what, bytes, needle) in cases {
        match parse(&bytes) {
            Err(Error::Malformed { reason, .. }) => {
                assert!(
                    reason.contains(needle),
                    "{what}: reason '{reason}' lacks '{needle}'"
                )
            }
            other => panic!("{what}: expected a Malformed error, got {other:?}"),
        }
    }
    // A truncated gzip stream is an error too, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.gz");
    let z = gzip(&idx_bytes(&[100], &[5; 100]));
    std::fs::write(&p, &z[..z.len() / 2]).unwrap();
    assert!(matches!(read_idx(&p), Err(Error::Malformed { .. })));
    assert!(matches!(
        read_idx(dir.path().join("missing")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn mnist_rejects_mismatched_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_idx(
        dir.path().join("t10k-images-idx3-ubyte"),
        &[3, 2, 2],
        &[0; 12],
    )
    .unwrap();
    write_idx(dir.path().join("t10k-labels-idx1-ubyte"), &[2], &[1, 2]).unwrap();
    let err = mnist::load(dir.path(), mnist::Split::Test).unwrap_err();
    assert!(err.to_string().contains("2 labels for 3 images"), "{err}");
    // Images announced as labels (mislabelled file).
    write_idx(
        dir.path().join("t10k-labels-idx1-ubyte"),
        &[3, 1, 1],
        &[1, 2, 3],
    )
    .unwrap();
    let err = mnist::load(dir.path(), mnist::Split::Test).unwrap_err();
    assert!(err.to_string().contains("expected 1 dimension"), "{err}");
}

#[test]
fn mnist_loads_from_the_shared_copy() {
    let Some(dir) = common::mnist_dir() else {
        return;
    };
    let train = mnist::load(&dir, mnist::Split::Train).unwrap();
    let test = mnist::load(&dir, mnist::Split::Test).unwrap();
    assert_eq!(
        (train.len(), train.dim(), test.len()),
        (60_000, 784, 10_000)
    );
    assert_eq!(train.image_shape, Some((28, 28)));
    let labels = test.labels.as_ref().unwrap();
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    // Grey levels in [0, 1] with the known mean intensity of MNIST (~0.13).
    let mut x = vec![0f32; 100 * 784];
    train.gather(&(0..100).collect::<Vec<_>>(), &mut x).unwrap();
    let mean = x.iter().sum::<f32>() / x.len() as f32;
    assert!(
        x.iter().all(|&v| (0.0..=1.0).contains(&v)) && (0.1..0.16).contains(&mean),
        "{mean}"
    );
}

#[test]
fn shapes_are_deterministic_and_sliceable() {
    let a = shapes::generate(3, 0, 40).unwrap();
    let b = shapes::generate(3, 0, 40).unwrap();
    assert_eq!(a, b);
    let tail = shapes::generate(3, 30, 10).unwrap();
    let mut xa = vec![0f32; 10 * 784];
    let mut xt = vec![0f32; 10 * 784];
    a.gather(&(30..40).collect::<Vec<_>>(), &mut xa).unwrap();
    tail.gather(&(0..10).collect::<Vec<_>>(), &mut xt).unwrap();
    assert_eq!(xa, xt);
    assert_ne!(a, shapes::generate(4, 0, 40).unwrap());
}

#[test]
fn shapes_images_match_their_factors() {
    let ds = shapes::generate(0, 0, 600).unwrap();
    let factors = ds.factors.as_ref().unwrap();
    assert_eq!(factors.names(), shapes::FACTOR_NAMES);
    assert_eq!(factors.len(), 600);
    let mut seen = [[false; 40]; 5];
    for i in 0..600 {
        // The stored factors are the ones image i was drawn with.
        let f = shapes::ShapeFactors::draw(0, i as u64);
        assert_eq!(
            factors.row(i).unwrap(),
            &[f.shape as u8 as f64, f.scale, f.rotation, f.x, f.y]
        );
        for (k, &l) in f.levels.iter().enumerate() {
            assert!(l < FACTOR_LEVELS[k]);
            seen[k][l] = true;
        }
        let on = (0..SIDE * SIDE)
            .filter(|&j| ds.value(i, j).unwrap() > 0.5)
            .count();
        // A sprite is visible and never fills the image; its area grows with its scale.
        assert!(
            (8..SIDE * SIDE / 3).contains(&on),
            "image {i} ({f:?}) has {on} pixels on"
        );
        // Its centre of mass sits near the factor's position.
        let (mut cx, mut cy) = (0.0, 0.0);
        for j in 0..SIDE * SIDE {
            if ds.value(i, j).unwrap() > 0.5 {
                cx += (j % SIDE) as f64 + 0.5;
                cy += (j / SIDE) as f64 + 0.5;
            }
        }
        let (cx, cy) = (cx / on as f64 / SIDE as f64, cy / on as f64 / SIDE as f64);
        let (ex, ey) = (0.22 + 0.56 * f.x, 0.22 + 0.56 * f.y);
        assert!(
            (cx - ex).abs() < 0.08 && (cy - ey).abs() < 0.08,
            "image {i}: centre ({cx}, {cy}) vs ({ex}, {ey})"
        );
    }
    for (k, &n) in FACTOR_LEVELS.iter().enumerate() {
        assert!(
            seen[k][..n].iter().filter(|&&s| s).count() >= n * 3 / 4,
            "factor {k} poorly covered"
        );
    }
}

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = epoch_order(1000, 1, 0);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(1000, 1, 0));
    assert_ne!(a, epoch_order(1000, 1, 1));
    assert_ne!(a, epoch_order(1000, 2, 0));
}

#[test]
fn dynamic_binarisation_keeps_the_mean() {
    let ds = Dataset::from_bytes(1, 4, vec![0, 64, 191, 255]).unwrap();
    let mut rng = elbo::rng::stream(0, elbo::rng::Purpose::Binarize, 0);
    let mut sums = [0.0f64; 4];
    let n = 20_000;
    let mut out = vec![0f32; 4];
    for _ in 0..n {
        ds.gather_binarized(&[0], &mut out, &mut rng).unwrap();
        for j in 0..4 {
            assert!(out[j] == 0.0 || out[j] == 1.0);
            sums[j] += out[j] as f64;
        }
    }
    for (j, expect) in [0.0, 64.0 / 255.0, 191.0 / 255.0, 1.0].iter().enumerate() {
        assert!((sums[j] / n as f64 - expect).abs() < 0.015, "pixel {j}");
    }
}
