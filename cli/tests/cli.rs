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
        stdout.contains("test −ELBO") && stdout.contains("E log p(x|z)") && stdout.contains("KL"),
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

fn ok(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn fails_with(o: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected a failure mentioning {needle:?}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// Commands on a saved model: data paths are stored absolute, so they work from any folder;
/// options given on the command line replace the stored ones; options that cannot apply are
/// refused; only the test data are read.
#[test]
fn saved_model_commands_take_data_options_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let train_dir = dir.path().join("a");
    let other = dir.path().join("b");
    std::fs::create_dir_all(&train_dir).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    // 60 rows of 3 columns, trained on from folder a with a relative path.
    let rows: String = (0..60)
        .map(|i| format!("{},{},{}\n", i % 7, (i * 3) % 5, (i % 2) as f64 * 0.5))
        .collect();
    std::fs::write(train_dir.join("points.csv"), &rows).unwrap();
    std::fs::write(other.join("four.csv"), "1,2,3\n0,0,0\n1,1,1\n2,2,2\n").unwrap();
    let run = |cwd: &std::path::Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_elbo"))
            .current_dir(cwd)
            .args(args)
            .output()
            .unwrap()
    };
    ok(&run(
        &train_dir,
        &[
            "train",
            "--data",
            "file",
            "--data-path",
            "points.csv",
            "--likelihood",
            "gaussian",
            "--hidden",
            "8",
            "--latent",
            "2",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--out",
            "run",
        ],
    ));
    let model = train_dir.join("run/model.safetensors");
    let m = model.to_str().unwrap();
    // From another folder, the stored (absolute) path is found: 6 test rows (the last tenth).
    let lat = other.join("lat.csv");
    ok(&run(&other, &["encode", m, "--out", lat.to_str().unwrap()]));
    let text = std::fs::read_to_string(&lat).unwrap();
    assert_eq!(text.lines().count(), 1 + 6, "{text}");
    // --test-path replaces the stored test split: 4 rows; `--output` still works as an alias.
    ok(&run(
        &other,
        &[
            "encode",
            m,
            "--test-path",
            "four.csv",
            "--output",
            "lat4.csv",
        ],
    ));
    let text = std::fs::read_to_string(other.join("lat4.csv")).unwrap();
    assert_eq!(text.lines().count(), 1 + 4, "{text}");
    // An option that cannot apply to these data is refused, not ignored.
    fails_with(
        &run(&other, &["eval", m, "--data-dir", "/nowhere"]),
        "applies only to --data mnist",
    );
    fails_with(
        &run(&other, &["eval", m, "--shapes-size", "100"]),
        "applies only to --data shapes",
    );
    // Only the test data are read: with a test file given, the training file may be gone.
    std::fs::remove_file(train_dir.join("points.csv")).unwrap();
    ok(&run(
        &other,
        &["encode", m, "--test-path", "four.csv", "--out", "again.csv"],
    ));
    // Data that are not images: `sample` says why it writes nothing, instead of exiting quietly.
    fails_with(&run(&other, &["sample", m]), "not square images");
    fails_with(
        &run(&other, &["encode", m, "--seed", "3"]),
        "does not apply to encode",
    );
    ok(&run(&other, &["sample", m, "--npy", "means.npy"]));
}

/// A resumed run that would train nothing, or change its model, is refused with the reason.
#[test]
fn resume_refuses_no_ops_and_architecture_changes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let base = [
        "--shapes-size",
        "200",
        "--hidden",
        "16",
        "--latent",
        "2",
        "--threads",
        "1",
    ];
    let mut args = vec!["train", "--epochs", "2", "--out", o];
    args.extend(base);
    ok(&elbo(&args));
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    fails_with(&elbo(&["train", "--resume", o]), "the run has done 2");
    fails_with(
        &elbo(&["train", "--resume", o, "--epochs", "1"]),
        "no more than the epochs",
    );
    fails_with(
        &elbo(&["train", "--resume", o, "--epochs", "3", "--hidden", "8"]),
        "cannot change a resumed run",
    );
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before,
        "nothing rewritten"
    );
    ok(&elbo(&["train", "--resume", o, "--epochs", "3"]));
}

/// Two identical runs, and a run on another thread count, write byte-identical model files,
/// and reports that agree in every figure but the timings and the thread count.
#[test]
fn identical_runs_write_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, threads: &str| {
        let out = dir.path().join(name);
        ok(&elbo(&[
            "train",
            "--shapes-size",
            "640",
            "--epochs",
            "2",
            "--hidden",
            "64",
            "--latent",
            "3",
            "--threads",
            threads,
            "--out",
            out.to_str().unwrap(),
        ]));
        let model = std::fs::read(out.join("model.safetensors")).unwrap();
        let mut report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        report.as_object_mut().unwrap().remove("threads");
        for e in report["epochs"].as_array_mut().unwrap() {
            for k in ["train_seconds", "images_per_sec", "test_seconds"] {
                e.as_object_mut().unwrap().remove(k);
            }
        }
        (model, report)
    };
    let (m1, r1) = run("a", "2");
    let (m2, r2) = run("b", "2");
    let (m3, r3) = run("c", "1");
    assert!(m1 == m2 && m1 == m3, "model files differ");
    assert_eq!(r1, r2);
    assert_eq!(r1, r3);
}

/// The terminal follows the one sign convention: terms as they are, costs with their minus
/// sign; the importance-weighted line shows −IW beside −ELBO, both positive costs.
#[test]
fn the_terminal_line_follows_the_sign_convention() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = elbo(&[
        "train",
        "--shapes-size",
        "200",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--latent",
        "2",
        "--iw-samples",
        "3",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().find(|l| l.starts_with("epoch")).unwrap();
    let number_after = |label: &str| -> f64 {
        let rest = &line[line
            .find(label)
            .unwrap_or_else(|| panic!("{label} in {line}"))
            + label.len()..];
        rest.split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches([',', ')'])
            .parse()
            .unwrap()
    };
    assert!(number_after("train −ELBO ") > 0.0, "{line}");
    assert!(number_after("train −IW ") > 0.0, "{line}");
    assert!(number_after("(E log p(x|z) ") < 0.0, "{line}");
    assert!(number_after("KL ") >= 0.0, "{line}");
}
