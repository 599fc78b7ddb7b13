//! The command line on count data: the `cells` demo, a 10x folder and a CSV with labels and
//! --top-genes, evaluation with the k-NN accuracy, and the errors of misplaced options.

use std::process::Command;

fn elbo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_elbo"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails_with(o: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(needle),
        "expected failure with '{needle}', got: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cells_trains_with_count_defaults_and_evaluates_with_knn() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    ok(&elbo(&[
        "train",
        "--data",
        "cells",
        "--cells",
        "3000",
        "--epochs",
        "3",
        "--threads",
        "2",
        "--out",
        out_s,
    ]));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["model"]["likelihood"],
        serde_json::json!({"negative-binomial": {"dispersion": "gene"}})
    );
    assert_eq!(
        (
            report["model"]["latent_dim"].as_u64(),
            report["model"]["log1p_input"].as_bool()
        ),
        (Some(10), Some(true))
    );
    assert_eq!(report["model"]["encoder_hidden"], serde_json::json!([128]));
    assert!(
        out.join("latents.png").is_file(),
        "the scatter of latent means by cell type"
    );
    let text = ok(&elbo(&[
        "eval",
        out.join("model.safetensors").to_str().unwrap(),
        "--k",
        "1,20",
        "--threads",
        "2",
    ]));
    assert!(text.contains("15-NN accuracy"), "{text}");
    let j: serde_json::Value = serde_json::from_str(&ok(&elbo(&[
        "eval",
        out.join("model.safetensors").to_str().unwrap(),
        "--k",
        "1,20",
        "--json",
    ])))
    .unwrap();
    let acc = j["knn15_accuracy"].as_f64().unwrap();
    // Eight cell types: three epochs on 2,700 cells separate them far above chance (1/8);
    // this run gives 0.82 (the full 10,000-cell demo reaches 0.99 in five epochs).
    assert!(acc > 0.6, "15-NN accuracy {acc}");
    assert!(
        j["log_px"][1]["log_px"].as_f64().unwrap() >= j["elbo"]["elbo"].as_f64().unwrap() - 1.0
    );
    ok(&elbo(&[
        "encode",
        out.join("model.safetensors").to_str().unwrap(),
        "--out",
        dir.path().join("z.csv").to_str().unwrap(),
    ]));
    // Pictures of count data: the scatter only; reconstructions and samples say why not.
    let model = out.join("model.safetensors");
    let pics = dir.path().join("pics");
    ok(&elbo(&[
        "pictures",
        model.to_str().unwrap(),
        "--out",
        pics.to_str().unwrap(),
    ]));
    assert!(pics.join("latents.png").is_file());
    fails_with(
        &elbo(&["reconstruct", model.to_str().unwrap()]),
        "not square images",
    );
    fails_with(
        &elbo(&["sample", model.to_str().unwrap()]),
        "not square images",
    );
    let z = std::fs::read_to_string(dir.path().join("z.csv")).unwrap();
    assert_eq!(
        z.lines().count(),
        1 + 300,
        "a header and one line per test cell"
    );
}

#[test]
fn a_count_csv_with_labels_and_top_genes() {
    let dir = tempfile::tempdir().unwrap();
    // 40 cells x 6 genes, two types: type A expresses genes 0-2, type B genes 3-5.
    let mut csv = String::from(",g0,g1,g2,g3,g4,g5\n");
    let mut labels = String::from("cell,type\n");
    for i in 0..40 {
        let a = i % 2 == 0;
        let row: Vec<String> = (0..6)
            .map(|g| {
                let on = (g < 3) == a;
                (if on { 5 + (i * 7 + g) % 4 } else { (i + g) % 2 }).to_string()
            })
            .collect();
        csv += &format!("cell{i},{}\n", row.join(","));
        labels += &format!("cell{i},{}\n", if a { "A" } else { "B" });
    }
    std::fs::write(dir.path().join("x.csv"), csv).unwrap();
    std::fs::write(dir.path().join("labels.csv"), labels).unwrap();
    let out = dir.path().join("run");
    let data = dir.path().join("x.csv");
    let labels = dir.path().join("labels.csv");
    ok(&elbo(&[
        "train",
        "--data",
        "counts",
        "--data-path",
        data.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--top-genes",
        "4",
        "--likelihood",
        "zinb",
        "--hidden",
        "8",
        "--latent",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "12",
        "--out",
        out.to_str().unwrap(),
    ]));
    let model = out.join("model.safetensors");
    let meta = elbo::train::checkpoint::metadata(&model).unwrap();
    let genes: Vec<String> = serde_json::from_str(&meta["elbo.genes"]).unwrap();
    assert_eq!(
        genes.len(),
        4,
        "the kept genes are stored with the model: {genes:?}"
    );
    let loaded = elbo::train::checkpoint::load::<f32>(&model).unwrap();
    assert_eq!(loaded.vae.input_dim(), 4);
    let text = ok(&elbo(&["eval", model.to_str().unwrap(), "--k", "1,10"]));
    assert!(
        text.contains("4 test examples") && text.contains("15-NN"),
        "{text}"
    );
}

#[test]
fn the_real_10x_folder_trains() {
    let dir_data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/pbmc-celltypist");
    if !dir_data.join("matrix.mtx.gz").is_file() {
        assert!(
            std::env::var_os("ELBO_REQUIRE_MNIST").is_none_or(|v| v == "0"),
            "pbmc data missing"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let text = ok(&elbo(&[
        "train",
        "--data",
        "counts",
        "--data-path",
        dir_data.to_str().unwrap(),
        "--top-genes",
        "500",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(text.contains("epoch   2/2"), "{text}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        (
            report["train_examples"].as_u64(),
            report["test_examples"].as_u64()
        ),
        (Some(504), Some(55))
    );
}

#[test]
fn misplaced_count_options_are_refused() {
    fails_with(
        &elbo(&["train", "--data", "cells", "--labels", "x.csv"]),
        "applies only to --data counts",
    );
    fails_with(
        &elbo(&["train", "--top-genes", "10"]),
        "applies only to --data cells or counts",
    );
    fails_with(&elbo(&["train", "--data", "counts"]), "--data-path");
    fails_with(
        &elbo(&["train", "--data", "cells", "--cells", "1"]),
        "at least 2",
    );
    fails_with(
        &elbo(&[
            "train",
            "--data",
            "cells",
            "--cells",
            "100",
            "--top-genes",
            "5000",
        ]),
        "at most the number of genes",
    );
    let dir = tempfile::tempdir().unwrap();
    let halves = dir.path().join("h.csv");
    std::fs::write(&halves, "0.5,1\n2,3\n1,1\n").unwrap();
    fails_with(
        &elbo(&[
            "train",
            "--data",
            "file",
            "--data-path",
            halves.to_str().unwrap(),
            "--likelihood",
            "poisson",
        ]),
        "non-negative integer counts",
    );
    fails_with(
        &elbo(&[
            "train",
            "--data",
            "cells",
            "--cells",
            "100",
            "--likelihood",
            "zinb-x",
        ]),
        "zinb-cell",
    );
    fails_with(
        &elbo(&["train", "--optimizer", "sgd", "--adam-eps", "0.01"]),
        "applies only to --optimizer adam",
    );
}

/// `elbo convert` writes every cell with the kept genes; training on the .elbo file (read
/// memory-mapped) then gives the same model, bit for bit, as training on the original file.
#[test]
fn training_on_a_converted_file_equals_training_on_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from(",a,b,c,d,e\n");
    for i in 0..60 {
        let row: Vec<String> = (0..5)
            .map(|g| ((i * (g + 3) + g) % 7 * (g % 2 + 1)).to_string())
            .collect();
        csv += &format!("cell{i},{}\n", row.join(","));
    }
    let src = dir.path().join("x.csv");
    std::fs::write(&src, csv).unwrap();
    let converted = dir.path().join("x.elbo");
    let text = ok(&elbo(&[
        "convert",
        "--data",
        "counts",
        "--data-path",
        src.to_str().unwrap(),
        "--top-genes",
        "4",
        "--out",
        converted.to_str().unwrap(),
    ]));
    assert!(text.contains("60 rows x 4 columns"), "{text}");
    let train = |path: &std::path::Path, out: &str| {
        let out = dir.path().join(out);
        let mut args = vec![
            "train",
            "--data",
            "counts",
            "--data-path",
            path.to_str().unwrap(),
            "--hidden",
            "8",
            "--latent",
            "2",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--out",
            out.to_str().unwrap(),
        ];
        if path.extension().is_some_and(|e| e == "csv") {
            args.extend(["--top-genes", "4"]);
        }
        ok(&elbo(&args));
        let m = elbo::train::checkpoint::load::<f32>(&out.join("model.safetensors")).unwrap();
        m.params.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(train(&src, "from-csv"), train(&converted, "from-elbo"));
    // Choosing genes of a mapped file is refused, with what to do instead.
    fails_with(
        &elbo(&[
            "train",
            "--data",
            "counts",
            "--data-path",
            converted.to_str().unwrap(),
            "--top-genes",
            "2",
        ]),
        "choose them (--top-genes) when converting",
    );
}
