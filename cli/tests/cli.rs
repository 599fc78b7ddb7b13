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
    let e = elbo::train::evaluate(
        &loaded.vae,
        &loaded.params,
        &test,
        50,
        1,
        0,
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    assert!(
        (e.terms.neg_elbo - test_neg_elbo).abs() < 1e-9,
        "{} vs {}",
        e.terms.neg_elbo,
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

/// `elbo eval` reports the ELBO, rising k-sample estimates of log p(x) and latent diagnostics,
/// as text and JSON, for a model saved by `elbo train`.
#[test]
fn eval_reports_log_px_estimates_and_active_units() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = elbo(&[
        "train",
        "--shapes-size",
        "1000",
        "--epochs",
        "2",
        "--hidden",
        "64",
        "--latent",
        "4",
        "--batch-size",
        "50",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = out.join("model.safetensors");
    let o = elbo(&[
        "eval",
        model.to_str().unwrap(),
        "--limit",
        "40",
        "--k",
        "1,10,100",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["points"], 40);
    let est: Vec<f64> = v["log_px"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["log_px"].as_f64().unwrap())
        .collect();
    assert_eq!(est.len(), 3);
    assert!(
        est[2] > est[0],
        "k=100 estimate {} not above k=1 {}",
        est[2],
        est[0]
    );
    let elbo_v = v["elbo"]["elbo"].as_f64().unwrap();
    assert!(est[2] > elbo_v && v["gap"].as_f64().unwrap() > 0.0);
    assert_eq!(v["latent"]["kl_per_dim"].as_array().unwrap().len(), 4);
    let o = elbo(&[
        "eval",
        model.to_str().unwrap(),
        "--limit",
        "10",
        "--k",
        "1,10",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("log p(x), k=10") && text.contains("active units"),
        "{text}"
    );
    let o = elbo(&["eval", model.to_str().unwrap(), "--k", "0"]);
    assert_eq!(o.status.code(), Some(1));
    let o = elbo(&["eval", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn identities_print_every_derivation_with_its_numbers() {
    let o = elbo(&["identities", "--draws", "20000"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "1. Jensen",
        "2. KL",
        "3. Bayes",
        "(a) ELBO <= log p(x): holds",
        "(d) k-sample",
        "(e) q = p(z|x)",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

#[test]
fn gradcheck_passes_for_a_described_model_and_names_each_tensor() {
    let o = elbo(&[
        "gradcheck",
        "--hidden",
        "8",
        "--latent",
        "2",
        "--activation",
        "softplus",
        "--shapes-size",
        "20",
        "--per-tensor",
        "10",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("encoder.0.weight")
            && text.contains("decoder.1.bias")
            && text.contains("all 8 tensors agree"),
        "{text}"
    );
    let o = elbo(&[
        "gradcheck",
        "--hidden",
        "8",
        "--latent",
        "2",
        "--iw",
        "--samples",
        "3",
        "--shapes-size",
        "20",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `--hidden ""` asks for the linear VAE (no hidden layer), and a training set smaller than
/// the default batch gets one batch of all of it, with a note saying so.
#[test]
fn a_linear_vae_on_a_small_set_trains_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = elbo(&[
        "train",
        "--hidden",
        "",
        "--latent",
        "2",
        "--shapes-size",
        "100",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fewer than the default batch of 128"), "{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["model"]["encoder_hidden"], serde_json::json!([]));
    assert_eq!(report["model"]["decoder_hidden"], serde_json::json!([]));
    let batch = report["training"]["batch_size"].as_u64().unwrap();
    assert!(batch < 128, "batch {batch}");
    // A width that is not a number is refused with the reason.
    let o = elbo(&["train", "--hidden", "64,x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("'x' is not a width"));
}
