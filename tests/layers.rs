//! The layers `lib.rs` documents, enforced: a file may import (through `crate::...`) only its
//! own module and the modules below it. Reads the sources, so a new upward import fails here
//! before anyone reads it.

use std::path::{Path, PathBuf};

/// Each top-level module's rank: lower ranks never import higher ones, and modules of equal
/// rank do not import each other.
const RANKS: &[(&str, u32)] = &[
    ("error", 0),
    ("kernels", 1),
    ("rng", 2),
    ("io", 2),
    ("data", 3),
    ("model", 4),
    ("objective", 5),
    ("gradcheck", 5),
    ("testbed", 6),
    ("train", 6),
    ("files", 7),
    ("pictures", 7),
];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`src/model/vae.rs` -> `model`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::name` in the file's code (comments and doc comments skipped).
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
            rest = tail;
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for part in group.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((n + 1, name));
                }
            }
        }
    }
    found
}

#[test]
fn no_layer_imports_from_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut bad = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "derivation" {
            continue; // the crate root re-exports everything; the derivation only links
        }
        let Some(own) = rank(&module) else {
            bad.push(format!(
                "{}: module '{module}' has no rank in RANKS",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, name) in imports(&text) {
            if name == module {
                continue;
            }
            match rank(&name) {
                Some(r) if r < own => {}
                Some(_) => bad.push(format!(
                    "{}:{line}: '{module}' imports '{name}', which is not below it",
                    file.display()
                )),
                None => bad.push(format!(
                    "{}:{line}: '{module}' uses 'crate::{name}', a root re-export or an unranked \
                     module; import it from its own module",
                    file.display()
                )),
            }
        }
    }
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

/// The check itself can fail: an upward import in a made-up kernel file is caught.
#[test]
fn an_upward_import_is_caught() {
    let found =
        imports("use crate::model::Vae;\nuse crate::{error::Error, train};\n// crate::objective");
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["model", "error", "train"]);
    assert!(rank("model") > rank("kernels") && rank("train") > rank("kernels"));
}
