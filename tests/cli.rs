//! The command line: a whole run writes its checkpoint and report; bad input gives a one-line
//! error and a non-zero exit, never a panic.

use std::process::Command;

fn elbo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_elbo"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn train_writes_a_checkpoint_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = elbo(&[
        "train",
        "--shapes-size",
        "1000",
        "--epochs",
        "2",
        "--hidden",
        "64,32",
        "--latent",
        "4",
        "--batch-size",
        "50",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("epoch")).count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.contains("test -ELBO") && stdout.contains("KL"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let epochs = report["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    assert_eq!(
        report["model"]["encoder_hidden"],
        serde_json::json!([64, 32])
    );
    let test_neg_elbo = epochs[1]["test"]["neg_elbo"].as_f64().unwrap();
    // The checkpoint holds the final parameters: evaluating them on the same test set with the
    // same seed reproduces the reported figure.
    let loaded = elbo::train::checkpoint::load::<f32>(&out.join("model.safetensors")).unwrap();
    let test = elbo::data::shapes::generate(0, 1000, 100).unwrap();
    let e = elbo::train::evaluate(&loaded.vae, &loaded.params, &test, 50, 1, 0, 1).unwrap();
    assert!(
        (e.neg_elbo - test_neg_elbo).abs() < 1e-9,
        "{} vs {}",
        e.neg_elbo,
        test_neg_elbo
    );
}

#[test]
fn bad_input_gives_one_line_and_a_failure_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--batch-size", "0", "--out", out], "batch size"),
        (&["train", "--latent", "0", "--out", out], "latent size"),
        (&["train", "--lr", "-0.1", "--out", out], "learning rate"),
        (
            &["train", "--activation", "swish", "--out", out],
            "activation",
        ),
        (&["train", "--data", "mnist", "--out", out], "data-dir"),
        (
            &[
                "train",
                "--data",
                "mnist",
                "--data-dir",
                "/nonexistent",
                "--out",
                out,
            ],
            "/nonexistent",
        ),
    ];
    for (args, needle) in cases {
        let o = elbo(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}
