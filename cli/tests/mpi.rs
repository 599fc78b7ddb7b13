//! Data-parallel training under `mpirun` (the `mpi` feature; Open MPI from Debian's packages):
//! 1, 2 and 4 processes give bit-identical models after two epochs on `cells` and on MNIST;
//! processes that disagree are refused before training; a process that diverges or dies
//! ends the whole job, and the last good checkpoint is kept and resumes.
//!
//! Run with `cargo test --release -p elbo-cli --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ELBO: &str = env!("CARGO_BIN_EXE_elbo");

fn mpirun(procs: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-n"])
        .arg(procs.to_string());
    c
}

/// `mpirun -n procs elbo train` on `cells` cells, one thread a process; the rest is the
/// test's.
fn cells_job(procs: usize, cells: usize) -> Command {
    let mut c = mpirun(procs);
    c.args([
        ELBO,
        "train",
        "--data",
        "cells",
        "--threads",
        "1",
        "--cells",
    ])
    .arg(cells.to_string());
    c
}

/// Waits for `child` for at most `secs`, killing it (and failing the test) past that.
fn wait(mut child: Child, secs: u64, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("waiting").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what} took over {secs} s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(mut c: Command, secs: u64, what: &str) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun is installed (apt-get install openmpi-bin)");
    wait(child, secs, what)
}

fn ok(out: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

fn mnist_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ELBO_MNIST_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist"),
            PathBuf::from,
        );
    if dir.join("train-images-idx3-ubyte.gz").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("ELBO_REQUIRE_MNIST").is_none_or(|v| v == "0"),
        "MNIST not found at {}, and ELBO_REQUIRE_MNIST is set",
        dir.display()
    );
    None
}

/// Trains under `mpirun -n procs` and returns the model file's bytes.
fn train_on(procs: usize, out: &Path, data: &[&str]) -> Vec<u8> {
    let mut c = mpirun(procs);
    c.arg(ELBO)
        .args(["train", "--epochs", "2", "--shards", "4", "--threads", "1"])
        .args(data)
        .arg("--out")
        .arg(out);
    ok(run(c, 600, &format!("{procs} processes")), "training");
    std::fs::read(out.join("model.safetensors")).expect("process 0 wrote the model")
}

#[test]
fn one_two_and_four_processes_give_the_same_bits_on_cells() {
    let dir = tempfile::tempdir().unwrap();
    let data = ["--data", "cells", "--cells", "3000"];
    let one = train_on(1, &dir.path().join("p1"), &data);
    for procs in [2, 4] {
        let out = dir.path().join(format!("p{procs}"));
        assert!(
            train_on(procs, &out, &data) == one,
            "{procs} processes differ from one"
        );
        // Only process 0 writes: one set of files.
        assert!(out.join("report.json").is_file());
    }
    // Without mpirun, on two threads, the same sharded run gives the same bits again.
    let plain = dir.path().join("plain");
    let text = ok(
        Command::new(ELBO)
            .args(["train", "--epochs", "2", "--shards", "4", "--threads", "2"])
            .args(data)
            .arg("--out")
            .arg(&plain)
            .output()
            .unwrap(),
        "plain run",
    );
    assert!(text.contains("4 shards"), "{text}");
    assert!(std::fs::read(plain.join("model.safetensors")).unwrap() == one);
}

#[test]
fn one_two_and_four_processes_give_the_same_bits_on_mnist() {
    let Some(mnist) = mnist_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let m = mnist.to_str().unwrap();
    let data = ["--data", "mnist", "--data-dir", m];
    let one = train_on(1, &dir.path().join("p1"), &data);
    for procs in [2, 4] {
        assert!(
            train_on(procs, &dir.path().join(format!("p{procs}")), &data) == one,
            "{procs} processes differ from one"
        );
    }
}

#[test]
fn processes_that_disagree_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // Two programs in one job (MPI's colon syntax): the same command but for the seed.
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe"]);
    for seed in ["1", "2"] {
        c.args([
            "-n", "1", ELBO, "train", "--data", "cells", "--cells", "500",
        ])
        .args(["--shards", "2", "--threads", "1", "--seed", seed])
        .arg("--out")
        .arg(&out)
        .arg(":");
    }
    let o = run(c, 300, "disagreeing processes");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("disagree") && err.contains("settings"),
        "{err}"
    );
    assert!(
        !out.join("model.safetensors").exists(),
        "nothing was trained or saved"
    );
    // And two processes need shards.
    let mut c = cells_job(2, 500);
    c.arg("--out").arg(&out);
    let o = run(c, 300, "no shards");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("shards"), "{err}");
}

#[test]
fn a_diverging_run_stops_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cells_job(2, 500);
    c.args([
        "--shards",
        "2",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--epochs",
        "3",
    ])
    .arg("--out")
    .arg(dir.path().join("run"));
    let o = run(c, 300, "a diverging run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("diverged"), "{err}");
}

/// The processes `mpirun` (pid `parent`) started, with their ranks.
fn ranks_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if let Some(rank) = env
            .split(|&b| b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("OMPI_COMM_WORLD_RANK="))
        {
            found.push((pid, rank.to_string()));
        }
    }
    found
}

#[test]
fn a_process_that_dies_ends_the_job_and_the_last_checkpoint_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let model = out.join("model.safetensors");
    let mut c = cells_job(2, 20000);
    c.args(["--shards", "2", "--epochs", "200"])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("mpirun is installed");
    let start = Instant::now();
    while !model.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ranks = ranks_of(child.id());
    let (victim, _) = ranks
        .iter()
        .find(|(_, r)| r == "1")
        .unwrap_or_else(|| panic!("process 1 not found among {ranks:?}"));
    // SIGKILL: the process cannot say goodbye; MPI must notice.
    let killed = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = wait(child, 120, "the job after a process died");
    assert!(!o.status.success(), "the job went on without process 1");
    // The checkpoint of the last finished epoch is whole, and resumes (here on one process)
    // for one more epoch.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let done = report["epochs"].as_array().unwrap().len();
    assert!(done >= 1);
    let o = Command::new(ELBO)
        .args(["train", "--resume"])
        .arg(&out)
        .args(["--threads", "2", "--epochs"])
        .arg((done + 1).to_string())
        .output()
        .unwrap();
    let text = ok(o, "resuming the kept checkpoint");
    assert!(
        text.contains(&format!("resuming after epoch {done}")),
        "{text}"
    );
}
