//! Every reader fed arbitrary bytes and mutated valid files: none may panic or hang, and none
//! may allocate more than a small multiple of the file's size. A counting global allocator
//! records, per thread, the largest single allocation made while a reader runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use proptest::test_runner::RngSeed;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the allocator may run while thread-locals are being torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bound: 8 times the file, plus 1 MiB for fixed buffers (readers, decompressor windows).
fn bound(file_len: usize) -> usize {
    8 * file_len + (1 << 20)
}

/// Runs `read` on `bytes` written to a file named `name`; returns the largest allocation.
fn largest_allocation_reading(name: &str, bytes: &[u8], read: impl Fn(&Path)) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    LARGEST.with(|l| l.set(0));
    read(&path);
    LARGEST.with(|l| l.get())
}

/// A file name (its extension picks the format) and the reader to run on it.
type Reader = (&'static str, Box<dyn Fn(&Path)>);

fn readers() -> Vec<Reader> {
    vec![
        (
            "x.idx",
            Box::new(|p: &Path| drop(elbo::data::idx::read_idx(p))),
        ),
        (
            "x.npy",
            Box::new(|p: &Path| drop(elbo::files::read_matrix(p))),
        ),
        (
            "x.csv",
            Box::new(|p: &Path| drop(elbo::files::read_matrix(p))),
        ),
        (
            "x.safetensors",
            Box::new(|p: &Path| drop(elbo::train::checkpoint::load::<f32>(p))),
        ),
        (
            // Alone in its folder: the 10x reader without gene or barcode lists.
            "matrix.mtx",
            Box::new(|p: &Path| drop(elbo::data::tenx::read_10x(p.parent().unwrap()))),
        ),
        (
            "counts.csv",
            Box::new(|p: &Path| drop(elbo::files::read_counts(p))),
        ),
        (
            "x.elbo",
            Box::new(|p: &Path| {
                if let Ok(s) = elbo::data::store::MappedStore::open(p) {
                    drop(s.to_dataset());
                }
            }),
        ),
    ]
}

/// One valid file of each kind, small.
fn valid_files() -> Vec<(&'static str, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    elbo::data::idx::write_idx(d.join("a.idx"), &[4, 3, 3], &(0..36).collect::<Vec<u8>>()).unwrap();
    let values: Vec<f32> = (0..20).map(|i| i as f32 / 20.0).collect();
    elbo::files::write_matrix(d.join("a.npy"), 4, 5, &values, &[]).unwrap();
    elbo::files::write_matrix(
        d.join("a.csv"),
        4,
        5,
        &values,
        &["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
    )
    .unwrap();
    let vae = elbo::Vae::new(
        elbo::VaeConfig::mnist()
            .input_dim(5)
            .encoder_hidden(vec![3])
            .latent_dim(2)
            .decoder_hidden(vec![3]),
    )
    .unwrap();
    elbo::train::checkpoint::save(
        d.join("a.safetensors"),
        &vae,
        &vae.init_params::<f32>(0),
        &[],
    )
    .unwrap();
    let mut files: Vec<(&'static str, Vec<u8>)> = ["a.idx", "a.npy", "a.csv", "a.safetensors"]
        .iter()
        .zip(["x.idx", "x.npy", "x.csv", "x.safetensors"])
        .map(|(f, name)| (name, std::fs::read(d.join(f)).unwrap()))
        .collect();
    files.push((
        "matrix.mtx",
        b"%%MatrixMarket matrix coordinate integer general\n3 4 5\n1 1 2\n2 1 1\n3 2 7\n1 3 1\n2 4 9\n".to_vec(),
    ));
    files.push((
        "counts.csv",
        b",g1,g2,g3\nc1,0,1,2\nc2,3,0,0\nc3,0,0,1\n".to_vec(),
    ));
    files
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/hostile_files.txt"))),
        // Pinned: a test must not pass or fail by the draw.
        rng_seed: RngSeed::Fixed(1592590344),
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes, with each format's magic number in front half of the time so the
    /// parsers get past their first check.
    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..2048), with_magic in any::<bool>()) {
        let magics: [&[u8]; 7] = [
            b"\x00\x00\x08\x03",
            b"\x93NUMPY\x01\x00",
            b"",
            b"",
            b"%%MatrixMarket matrix coordinate integer general\n",
            b"",
            b"ELBOMAT\x00\x01\x00\x00\x00",
        ];
        for ((name, read), magic) in readers().into_iter().zip(magics) {
            let bytes = if with_magic { [magic, &body].concat() } else { body.clone() };
            let peak = largest_allocation_reading(name, &bytes, read);
            prop_assert!(peak <= bound(bytes.len()), "{}: {} bytes allocated for a {}-byte file", name, peak, bytes.len());
        }
    }

    /// Valid files with bytes flipped, cut short or extended.
    #[test]
    fn mutated_valid_files(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                           cut in any::<prop::sample::Index>(), truncate in any::<bool>(), extend in any::<bool>()) {
        for ((name, mut bytes), (_, read)) in valid_files().into_iter().zip(readers()) {
            for (i, b) in &flips {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            if extend {
                bytes.extend_from_slice(&[0xff; 64]);
            }
            let peak = largest_allocation_reading(name, &bytes, read);
            prop_assert!(peak <= bound(bytes.len()), "{}: {} bytes allocated for a {}-byte file", name, peak, bytes.len());
        }
    }
}

/// Headers that claim far more data than the file holds are refused before allocation.
#[test]
fn oversized_claims_are_refused_cheaply() {
    let mut idx = vec![0, 0, 8, 3];
    for d in [60_000u32, 28, 28] {
        idx.extend_from_slice(&d.to_be_bytes());
    }
    let npy = {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b
    };
    let safetensors = {
        let cfg = r#"{"input_dim":100000,"encoder_hidden":[100000],"latent_dim":1000,"decoder_hidden":[100000],"activation":"relu","likelihood":"bernoulli"}"#;
        let header = format!(
            r#"{{"__metadata__":{{"elbo.vae_config":{}}}}}"#,
            serde_json::to_string(cfg).unwrap()
        );
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b
    };
    for ((name, read), bytes) in readers().into_iter().zip([
        idx,
        npy,
        b"1,2\n".to_vec(),
        safetensors,
        b"%%MatrixMarket matrix coordinate integer general\n4000000000 4000000000 100\n1 1 1\n"
            .to_vec(),
        b"1,2\n".to_vec(),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let peak = largest_allocation_reading(name, &bytes, &read);
        assert!(peak <= bound(bytes.len()), "{name}: {peak} bytes");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.npy");
    std::fs::write(&p, {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b
    })
    .unwrap();
    let err = elbo::files::read_matrix(&p).unwrap_err().to_string();
    assert!(err.contains("needs 4000000000000 bytes"), "{err}");
}
