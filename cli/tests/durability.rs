//! Failing runs lose nothing: Ctrl-C checkpoints and resumes bit-identically, a run killed at
//! any moment leaves loadable files, and an unusable output folder fails before training.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use elbo::train::checkpoint;

const ELBO: &str = env!("CARGO_BIN_EXE_elbo");

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn ctrl_c_checkpoints_mid_epoch_and_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let args = [
        "train",
        "--shapes-size",
        "20000",
        "--epochs",
        "3",
        "--hidden",
        "200",
        "--latent",
        "4",
        "--threads",
        "2",
    ];
    let o = Command::new(ELBO)
        .args(args)
        .args(["--out", a.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut child = Command::new(ELBO)
        .args(args)
        .args(["--out", b.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first epoch's line, then interrupt during the second epoch.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("epoch   1/3"), "{first}");
    std::thread::sleep(Duration::from_millis(50));
    signal(child.id(), "-INT");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted after step") && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let o = Command::new(ELBO)
        .args(["train", "--resume", b.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ma, mb) = (
        checkpoint::load::<f32>(&a.join("model.safetensors")).unwrap(),
        checkpoint::load::<f32>(&b.join("model.safetensors")).unwrap(),
    );
    assert_eq!(
        bits(&ma.params),
        bits(&mb.params),
        "resumed after Ctrl-C differs from a straight run"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["epochs"].as_array().unwrap().len(), 3);
}

/// SIGKILL at ten moments during a run that rewrites its files many times a second: what is on
/// disk always loads, parses and resumes.
#[test]
fn killed_runs_leave_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (k, ms) in [40u64, 90, 150, 220, 300, 380, 470, 560, 680, 800]
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("run{k}"));
        let mut child = Command::new(ELBO)
            .args([
                "train",
                "--shapes-size",
                "1000",
                "--epochs",
                "1000",
                "--hidden",
                "16",
                "--latent",
                "2",
                "--batch-size",
                "100",
                "--threads",
                "1",
                "--out",
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        signal(child.id(), "-KILL");
        child.wait().unwrap();
        let model = out.join("model.safetensors");
        if model.exists() {
            let m = checkpoint::load::<f32>(&model)
                .unwrap_or_else(|e| panic!("kill after {ms} ms: {e}"));
            assert!(m.optimizer_state.is_some());
            elbo::Trainer::<f32>::resume(&model, &elbo::Parallelism::threads(1).unwrap(), None)
                .unwrap();
            checked += 1;
        }
        let report = std::fs::read(out.join("report.json")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&report)
            .unwrap_or_else(|e| panic!("kill after {ms} ms: report.json: {e}"));
        assert!(v["epochs"].is_array());
    }
    assert!(
        checked >= 5,
        "only {checked} runs got as far as a checkpoint"
    );
}

#[test]
fn an_output_folder_that_cannot_be_made_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let o = Command::new(ELBO)
        .args([
            "train",
            "--shapes-size",
            "500",
            "--out",
            file.join("run").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: creating") && err.contains("not-a-folder"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("epoch"),
        "no training may happen"
    );
}

/// A run that diverges keeps the last good checkpoint untouched, says so, and continues from it
/// with a smaller learning rate.
#[test]
fn a_diverged_run_keeps_its_checkpoint_and_resumes_with_a_smaller_rate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let common = [
        "--shapes-size",
        "1000",
        "--hidden",
        "32",
        "--latent",
        "2",
        "--likelihood",
        "gaussian",
        "--optimizer",
        "sgd",
    ];
    let r = Command::new(ELBO)
        .args(["train", "--epochs", "2", "--lr", "1e-3", "--out", o])
        .args(common)
        .output()
        .unwrap();
    assert!(r.status.success());
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    // Resume with a learning rate far too high: the loss overflows in epoch 3.
    let r = Command::new(ELBO)
        .args(["train", "--resume", o, "--epochs", "4", "--lr", "1000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("training diverged at epoch 3")
            && err.contains("checkpoint of epoch 2")
            && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before,
        "the good checkpoint must be untouched"
    );
    let r = Command::new(ELBO)
        .args(["train", "--resume", o, "--epochs", "4", "--lr", "1e-3"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["epochs"].as_array().unwrap().len(), 4);
    assert_eq!(report["training"]["optimizer"]["lr"], 1e-3);
}

/// A write that fails part-way (as on a full disk; simulated with a file-size limit, so the
/// write fails with EFBIG) ends the run with a clear message and leaves the previous
/// checkpoint whole.
#[test]
fn a_failing_write_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let r = Command::new(ELBO)
        .args([
            "train",
            "--shapes-size",
            "500",
            "--epochs",
            "1",
            "--hidden",
            "64",
            "--latent",
            "2",
            "--out",
            o,
        ])
        .output()
        .unwrap();
    assert!(r.status.success());
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    assert!(
        before.len() > 200 * 1024,
        "the checkpoint must exceed the limit below"
    );
    // 200 blocks of 512 bytes: room for the report, not for a checkpoint. SIGXFSZ is ignored
    // (inherited through exec), so the write returns an error instead of killing the process.
    let script =
        format!("trap '' XFSZ; ulimit -f 200; exec '{ELBO}' train --resume '{o}' --epochs 2");
    let r = Command::new("sh").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: writing")
            && err.contains("model.safetensors")
            && err.contains("too large"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before,
        "the previous checkpoint must be intact"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}
