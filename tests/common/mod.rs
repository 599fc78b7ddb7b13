//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Where MNIST is: `$ELBO_MNIST_DIR`, else `../shared/data/mnist` beside the repository.
///
/// When it is absent, a test that needs it prints why and skips (returns `None`), so that
/// `cargo test` works in a clone without the shared data. CI sets `ELBO_REQUIRE_MNIST=1`, and
/// then a missing copy fails the test: CI never skips silently.
pub fn mnist_dir() -> Option<PathBuf> {
    shared_dir(
        "ELBO_MNIST_DIR",
        "mnist",
        "train-images-idx3-ubyte.gz",
        "MNIST",
    )
}

/// A folder of the shared data: `$env` if set, else `../shared/data/{name}` beside the
/// repository, when it holds `marker`; else `None` after saying why on stderr, or a failure
/// under `ELBO_REQUIRE_MNIST=1` (which CI sets: the shared data come together).
fn shared_dir(env: &str, name: &str, marker: &str, what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(env).filter(|v| !v.is_empty()).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(REPO_ROOT)
                .join("../shared/data")
                .join(name)
        },
        PathBuf::from,
    );
    if dir.join(marker).is_file() {
        return Some(dir);
    }
    let why = format!(
        "{what} not found at {} (set {env} to its folder)",
        dir.display()
    );
    if std::env::var_os("ELBO_REQUIRE_MNIST").is_some_and(|v| v != "0") {
        panic!("{why}, and ELBO_REQUIRE_MNIST is set");
    }
    // Written to the stderr handle, not with eprintln!, which the test harness captures and
    // hides for a passing test.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping: {why}");
    None
}

/// The repository's root relative to this package's folder.
const REPO_ROOT: &str = ".";

/// Where the real 10x count matrix is: `$ELBO_PBMC_DIR`, else
/// `../shared/data/pbmc-celltypist` beside the repository; skips or fails like [`mnist_dir`].
pub fn pbmc_dir() -> Option<PathBuf> {
    shared_dir(
        "ELBO_PBMC_DIR",
        "pbmc-celltypist",
        "matrix.mtx.gz",
        "the pbmc count matrix",
    )
}
