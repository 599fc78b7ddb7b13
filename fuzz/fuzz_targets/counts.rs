//! The count readers on arbitrary file contents: a lone matrix.mtx (the 10x reader) and a
//! counts CSV.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("matrix.mtx"), data).unwrap();
    let _ = elbo::data::tenx::read_10x(dir.path());
    let p = dir.path().join("c.csv");
    std::fs::write(&p, data).unwrap();
    let _ = elbo::files::read_counts(&p);
});
