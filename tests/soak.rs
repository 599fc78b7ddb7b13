//! Long runs: memory must not grow. Resident memory is read from /proc/self/statm. Run by CI
//! with `cargo test --release --test soak -- --ignored --nocapture --test-threads=1` (one at a
//! time: resident memory is the whole process's).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use elbo::data::{mnist, shapes};
use elbo::objective::estimate_log_marginal;
use elbo::train::{checkpoint, evaluate};
use elbo::{TrainConfig, Trainer, Vae, VaeConfig};

/// Counts the bytes the process holds from the allocator right now: a leak shows here exactly,
/// whatever the allocator keeps cached.
struct LiveBytes;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: LiveBytes = LiveBytes;

fn live_kib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1024.0
}

/// Resident memory after handing the allocator's free pages back to the system, so that what is
/// measured is what the process holds plus fragmentation, not glibc's per-thread caches.
fn trimmed_rss_mib() -> f64 {
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe { libc::malloc_trim(0) };
    rss_mib()
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// How far the live heap may move between two moments that hold the same objects: thread-local
/// and registry bookkeeping moves by a few KiB (up to 9 KiB seen here).
const LIVE_SLACK_KIB: f64 = 64.0;

/// 50 epochs of the reference MNIST training with a test evaluation after each.
///
/// The leak check is exact: the live heap after every later epoch stays within 64 KiB of what it
/// was after the first, so a leak of 3 bytes a step (23 000 steps after epoch 1) fails. The one
/// thing that should grow does: the epoch reports `fit` returns, about 0.3 KiB an epoch. Resident
/// memory, after the allocator's free pages are trimmed, stays within 8 MiB of epoch 1's: that
/// bounds fragmentation as well, which a live-byte count cannot see.
#[test]
#[ignore]
fn fifty_mnist_epochs_do_not_grow_memory() {
    let Some(dir) = common::mnist_dir() else {
        return;
    };
    let train = mnist::load(&dir, mnist::Split::Train).unwrap();
    let test = mnist::load(&dir, mnist::Split::Test).unwrap();
    let config = TrainConfig::default().epochs(50);
    let mut t = Trainer::<f32>::new(
        Vae::new(VaeConfig::mnist()).unwrap(),
        config,
        &elbo::Parallelism::threads(2).unwrap(),
    )
    .unwrap();
    let mut live = Vec::new();
    let mut rss = Vec::new();
    let options = elbo::FitOptions::new().test(&test).on_epoch(|_, _| {
        live.push(live_kib());
        rss.push(trimmed_rss_mib());
        Ok(())
    });
    t.fit(&train, options).unwrap();
    let show = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("live heap KiB after each epoch: {}", show(&live));
    println!("resident MiB (trimmed) after each epoch: {}", show(&rss));
    let live_worst = live[1..].iter().cloned().fold(f64::MIN, f64::max);
    assert!(
        live_worst <= live[0] + LIVE_SLACK_KIB,
        "live heap grew from {:.1} to {live_worst:.1} KiB",
        live[0]
    );
    let rss_worst = rss[1..].iter().cloned().fold(f64::MIN, f64::max);
    assert!(
        rss_worst <= rss[0] + 8.0,
        "resident memory grew from {:.1} to {rss_worst:.1} MiB",
        rss[0]
    );
}

/// Thirty rounds in one process of: train a model, evaluate it, estimate log p(x), save and
/// reload it. The live heap after the last round stays within 64 KiB of the live heap after the
/// third, so a leak of 2.4 KiB a round fails.
///
/// Resident memory is printed but not bounded here. Each round starts and joins new worker
/// threads, and glibc gives threads their own malloc arenas, which fragment: with the default
/// arenas, trimmed resident memory rose from 13 to 18 MiB over 30 rounds on a flat live heap of
/// 2855 KiB; with `MALLOC_ARENA_MAX=1` it stayed at 7.1-7.2 MiB. That is the allocator's policy,
/// not memory this crate holds; the CLI and a long-lived `Trainer` start their threads once.
#[test]
#[ignore]
fn soak_train_evaluate_save_load() {
    let data = shapes::generate(9, 0, 3000).unwrap();
    let test = shapes::generate(9, 3000, 300).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let mut live = Vec::new();
    let mut rss = Vec::new();
    for round in 0..30u64 {
        let cfg = VaeConfig::mnist()
            .encoder_hidden(vec![128])
            .decoder_hidden(vec![128])
            .latent_dim(8);
        let config = TrainConfig::default().epochs(1).seed(round);
        let mut t = Trainer::<f32>::new(
            Vae::new(cfg).unwrap(),
            config,
            &elbo::Parallelism::threads(2).unwrap(),
        )
        .unwrap();
        t.fit(&data, elbo::FitOptions::new().test(&test)).unwrap();
        let e = evaluate(
            t.vae(),
            t.params(),
            &test,
            100,
            1,
            round,
            &elbo::Parallelism::threads(2).unwrap(),
        )
        .unwrap();
        assert!(e.terms.neg_elbo.is_finite());
        let m = estimate_log_marginal(
            t.vae(),
            t.params(),
            &test.head(50),
            &[1, 10, 100],
            round,
            &elbo::Parallelism::threads(2).unwrap(),
        )
        .unwrap();
        assert!(m.estimates[2].log_px >= m.estimates[0].log_px - 1.0);
        t.save_checkpoint(&path, &[]).unwrap();
        let back =
            Trainer::<f32>::resume(&path, &elbo::Parallelism::threads(2).unwrap(), None).unwrap();
        assert_eq!(back.params(), t.params());
        drop(checkpoint::load::<f32>(&path).unwrap());
        drop((t, back));
        live.push(live_kib());
        rss.push(trimmed_rss_mib());
    }
    let at = [2, 9, 19, 29];
    println!(
        "after rounds 3, 10, 20, 30: live heap KiB {:?}, resident MiB (trimmed) {:?}",
        at.map(|i| (live[i] * 10.0).round() / 10.0),
        at.map(|i| (rss[i] * 10.0).round() / 10.0)
    );
    let worst = live[3..].iter().cloned().fold(f64::MIN, f64::max);
    assert!(
        worst <= live[2] + LIVE_SLACK_KIB,
        "live heap grew from {:.1} to {worst:.1} KiB",
        live[2]
    );
}
