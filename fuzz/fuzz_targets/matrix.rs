//! The .npy and CSV readers on arbitrary file contents.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    for name in ["m.npy", "m.csv"] {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        let _ = elbo::files::read_matrix(&p);
    }
});
