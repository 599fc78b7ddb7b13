//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared MNIST folder (`../shared/data/mnist` beside the project). Tests that need it fail
/// with this message rather than pass silently when it is missing.
pub fn mnist_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "MNIST not found at {}: these tests read the shared copy beside the project",
        dir.display()
    );
    dir
}
