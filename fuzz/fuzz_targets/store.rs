//! elbo's matrix file reader on arbitrary file contents: open (header and row offsets checked),
//! then every row read.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.elbo");
    std::fs::write(&p, data).unwrap();
    if let Ok(s) = elbo::data::store::MappedStore::open(&p) {
        let _ = s.to_dataset();
    }
});
