//! Resuming from a checkpoint is bit-identical to a run that was never stopped.

use elbo::data::shapes;
use elbo::train::checkpoint;
use elbo::{TrainConfig, Trainer, Vae, VaeConfig};

fn model() -> Vae {
    Vae::new(
        VaeConfig::mnist()
            .input_dim(784)
            .encoder_hidden(vec![64])
            .latent_dim(4)
            .decoder_hidden(vec![64]),
    )
    .unwrap()
}

fn bits<T: Copy + Into<f64>>(v: &[T]) -> Vec<u64> {
    v.iter().map(|&x| x.into().to_bits()).collect()
}

#[test]
fn library_resume_is_bit_identical() {
    let data = shapes::generate(3, 0, 640).unwrap();
    let test = shapes::generate(3, 640, 64).unwrap();
    // Warm-up and binarisation make the step count and the per-step streams matter.
    let config = TrainConfig::default()
        .epochs(4)
        .batch_size(64)
        .warmup_epochs(3.0)
        .binarize(true);
    let mut straight = Trainer::<f32>::new(
        model(),
        config.clone(),
        &elbo::Parallelism::threads(2).unwrap(),
    )
    .unwrap();
    let full = straight
        .fit(&data, elbo::FitOptions::new().test(&test))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let mut first = Trainer::<f32>::new(
        model(),
        config.clone().epochs(2),
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    first
        .fit(&data, elbo::FitOptions::new().test(&test))
        .unwrap();
    first.save_checkpoint(&path, &[]).unwrap();
    drop(first);
    let mut resumed =
        Trainer::<f32>::resume(&path, &elbo::Parallelism::threads(2).unwrap(), Some(4)).unwrap();
    assert_eq!((resumed.epochs_done(), resumed.steps_done()), (2, 20));
    let rest = resumed
        .fit(&data, elbo::FitOptions::new().test(&test))
        .unwrap();
    assert_eq!(bits(resumed.params()), bits(straight.params()));
    assert_eq!(
        bits(resumed.optimizer().state()),
        bits(straight.optimizer().state())
    );
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[1].test, full[3].test);
    // A file without optimizer state cannot be resumed.
    checkpoint::save(&path, resumed.vae(), resumed.params(), &[]).unwrap();
    assert!(matches!(
        Trainer::<f32>::resume(&path, &elbo::Parallelism::threads(1).unwrap(), None),
        Err(elbo::Error::Malformed { .. })
    ));
}

/// A small `shapes` run on 2 threads, as the command-line tests start it.
const SMALL_RUN: [&str; 11] = [
    "train",
    "--shapes-size",
    "800",
    "--hidden",
    "32",
    "--latent",
    "3",
    "--batch-size",
    "50",
    "--threads",
    "2",
];

#[test]
fn command_line_resume_is_bit_identical() {
    let elbo = env!("CARGO_BIN_EXE_elbo");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let common = SMALL_RUN;
    let run = |extra: &[&str]| {
        let o = std::process::Command::new(elbo)
            .args(common)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    run(&["--epochs", "3", "--out", a.to_str().unwrap()]);
    run(&["--epochs", "1", "--out", b.to_str().unwrap()]);
    let o = std::process::Command::new(elbo)
        .args([
            "train",
            "--resume",
            b.to_str().unwrap(),
            "--epochs",
            "3",
            "--threads",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "two epoch objects and the final one");
    assert_eq!(lines[0]["epoch"], 2);
    let (ma, mb) = (
        checkpoint::load::<f32>(&a.join("model.safetensors")).unwrap(),
        checkpoint::load::<f32>(&b.join("model.safetensors")).unwrap(),
    );
    assert_eq!(bits(&ma.params), bits(&mb.params));
    assert_eq!(
        bits(ma.optimizer_state.as_ref().unwrap()),
        bits(mb.optimizer_state.as_ref().unwrap())
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("report.json")).unwrap()).unwrap();
    let epochs: Vec<u64> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2, 3]);
}

/// Interrupted mid-epoch (the stop flag set after step 13, inside epoch 2), checkpointed and
/// resumed: the same bits as a run never stopped, and the same report for the broken epoch.
#[test]
fn interrupted_mid_epoch_and_resumed_is_bit_identical() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let data = shapes::generate(4, 0, 640).unwrap();
    let config = TrainConfig::default()
        .epochs(3)
        .batch_size(64)
        .binarize(true);
    let mut straight = Trainer::<f32>::new(
        model(),
        config.clone(),
        &elbo::Parallelism::threads(1).unwrap(),
    )
    .unwrap();
    let full = straight.fit(&data, elbo::FitOptions::new()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let flag = Arc::new(AtomicBool::new(false));
    let mut first =
        Trainer::<f32>::new(model(), config, &elbo::Parallelism::threads(2).unwrap()).unwrap();
    let mut steps = 0;
    let setter = flag.clone();
    let options = elbo::FitOptions::new()
        .stop_flag(flag.clone())
        .progress(move |_, _| {
            steps += 1;
            if steps == 13 {
                setter.store(true, Ordering::SeqCst);
            }
        });
    let err = first.fit(&data, options).unwrap_err();
    assert!(
        matches!(
            err,
            elbo::Error::Interrupted {
                epoch: 2,
                step: 13,
                batch: 3,
                batches: 10
            }
        ),
        "{err}"
    );
    first.save_checkpoint(&path, &[]).unwrap();
    let mut resumed =
        Trainer::<f32>::resume(&path, &elbo::Parallelism::threads(1).unwrap(), None).unwrap();
    assert_eq!(resumed.epoch_progress().batches, 3);
    let rest = resumed.fit(&data, elbo::FitOptions::new()).unwrap();
    assert_eq!(bits(resumed.params()), bits(straight.params()));
    assert_eq!(rest[0].epoch, 2);
    assert_eq!(
        rest[0].train, full[1].train,
        "the broken epoch reports what it would have"
    );
}

/// `--precision bf16` is kept by the checkpoint: a bf16 run stopped after one epoch and resumed
/// (without repeating the flag) ends with the bits of one never stopped, and those differ from
/// an f32 run's, so the resumed epochs really did run bf16 products.
#[test]
fn a_bf16_run_resumes_in_bf16() {
    let elbo = env!("CARGO_BIN_EXE_elbo");
    let dir = tempfile::tempdir().unwrap();
    let (a, b, f) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("f"),
    );
    let common = SMALL_RUN;
    let run = |args: &[&str]| {
        let o = std::process::Command::new(elbo)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    fn with<'a>(common: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [common, extra].concat()
    }
    let said = run(&with(
        &common,
        &[
            "--precision",
            "bf16",
            "--epochs",
            "3",
            "--out",
            a.to_str().unwrap(),
        ],
    ));
    assert!(said.contains("Bf16 products on"), "{said}");
    run(&with(
        &common,
        &[
            "--precision",
            "bf16",
            "--epochs",
            "1",
            "--out",
            b.to_str().unwrap(),
        ],
    ));
    run(&with(
        &common,
        &["--epochs", "3", "--out", f.to_str().unwrap()],
    ));
    let said = run(&["train", "--resume", b.to_str().unwrap(), "--epochs", "3"]);
    assert!(said.contains("Bf16 products on"), "{said}");
    let load = |d: &std::path::Path| checkpoint::load::<f32>(&d.join("model.safetensors")).unwrap();
    let (ma, mb, mf) = (load(&a), load(&b), load(&f));
    assert_eq!(bits(&ma.params), bits(&mb.params));
    assert_ne!(bits(&ma.params), bits(&mf.params));
}
