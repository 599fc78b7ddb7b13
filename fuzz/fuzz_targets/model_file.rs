//! The model-file (safetensors) reader on arbitrary file contents.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    std::fs::write(&p, data).unwrap();
    let _ = elbo::train::checkpoint::load::<f32>(&p);
});
