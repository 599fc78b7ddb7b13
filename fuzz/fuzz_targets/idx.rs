//! The IDX reader on arbitrary bytes, raw and through the gzip decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = elbo::data::idx::parse_idx(data, Path::new("fuzz"));
    let _ = elbo::data::idx::parse_idx(flate2::read::GzDecoder::new(data), Path::new("fuzz.gz"));
});
