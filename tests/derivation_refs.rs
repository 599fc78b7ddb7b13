//! The derivation document (`src/derivation.rs`) names the tests that check each step, in
//! backticks. Functions it names in code are intra-doc links, which `cargo doc -D warnings`
//! checks; test names cannot be links, so this checks that each one is a function that exists,
//! and a rename breaks the build here instead of leaving a dangling name.

use std::path::Path;

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// Backticked snake_case names in the document (`a_elbo_is_below_log_px`, `mlp`, ...).
fn named(doc: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in doc.split('`').skip(1).step_by(2) {
        let is_name = part.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_name && !["f64", "f32"].contains(&part) {
            names.push(part.to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_test_the_derivation_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("src/derivation.rs")).unwrap();
    let mut code = String::new();
    for dir in ["src", "tests", "cli"] {
        sources(&root.join(dir), &mut code);
    }
    let names = named(&doc);
    assert!(names.len() >= 20, "found only {names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !code.contains(&format!("fn {n}(")) && !code.contains(&format!("fn {n}<")))
        .collect();
    assert!(
        missing.is_empty(),
        "the derivation names functions that do not exist: {missing:?}"
    );
}

#[test]
fn a_renamed_test_would_be_caught() {
    let names = named("checked by `kl_divergence` and `no_such_test_anywhere`; not `f64`");
    assert_eq!(names, ["kl_divergence", "no_such_test_anywhere"]);
}
