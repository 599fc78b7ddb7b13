//! Where a training step's time goes, loop by loop (the `loop-profile` feature): the wall time
//! of every outermost parallel loop ([`super::par::for_each_task`] and the loops built on it,
//! the products among them), keyed by the line of this crate that started it, and the time
//! before it since the previous loop ended on the same thread: work the calling thread did
//! alone while a second thread had nothing to take.
//!
//! Why a feature and not `perf` alone: `perf` attributes samples to functions, and the same
//! kernel (a product, say) serves several layers; the line that started a loop names the layer.
//! The lines come from `#[track_caller]`, which the loops and products carry only with this
//! feature, so that a build without it pays nothing.
//!
//! `cargo run --release --features loop-profile --example step_profile -- cells 2 3` prints
//! a step's table.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::Location;
use std::sync::Mutex;
use std::time::Instant;

/// One source line's loops, summed since the last [`take`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoopTime {
    /// The file of the line that started the loops (a path inside this crate).
    pub file: &'static str,
    /// Its line.
    pub line: u32,
    /// How many loops it started.
    pub calls: u64,
    /// Their wall time, in seconds.
    pub loop_secs: f64,
    /// The time before each of them since the calling thread's previous loop ended, summed:
    /// what that thread did alone in between (the first loop of a step also carries whatever
    /// ran between steps).
    pub gap_secs: f64,
}

static TIMES: Mutex<Option<HashMap<(&'static str, u32), LoopTime>>> = Mutex::new(None);

thread_local! {
    static LAST_END: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Loops and tasks under way on this thread: a loop started at depth 0 is outermost.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Raises this thread's depth for its lifetime.
struct Deeper;

impl Deeper {
    fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        Deeper
    }
}

impl Drop for Deeper {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// `f`, run as a task of a timed loop: a loop it starts, on whichever thread, is inside the
/// timed one, whose time already holds it.
pub(crate) fn in_task<F: Fn(usize) + Sync>(f: F) -> impl Fn(usize) + Sync {
    move |t| {
        let _deeper = Deeper::enter();
        f(t)
    }
}

/// Times one loop from its creation to its drop, if it is outermost on its thread.
pub(crate) struct Timer {
    at: Option<(&'static Location<'static>, Instant)>,
    _deeper: Deeper,
}

impl Timer {
    pub(crate) fn start(at: &'static Location<'static>) -> Self {
        let outermost = DEPTH.with(|d| d.get()) == 0;
        Timer {
            at: outermost.then(|| (at, Instant::now())),
            _deeper: Deeper::enter(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let Some((at, start)) = self.at else {
            return;
        };
        let end = Instant::now();
        let gap = LAST_END.with(|l| l.replace(Some(end))).map_or(0.0, |last| {
            start.saturating_duration_since(last).as_secs_f64()
        });
        // A poisoned lock only means another thread panicked while recording; the sums stay
        // usable.
        let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
        let t = times
            .get_or_insert_with(HashMap::new)
            .entry((at.file(), at.line()))
            .or_insert(LoopTime {
                file: at.file(),
                line: at.line(),
                calls: 0,
                loop_secs: 0.0,
                gap_secs: 0.0,
            });
        t.calls += 1;
        t.loop_secs += (end - start).as_secs_f64();
        t.gap_secs += gap;
    }
}

/// The loops recorded since the last call, longest total first, and starts afresh.
pub fn take() -> Vec<LoopTime> {
    let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<LoopTime> = times.take().unwrap_or_default().into_values().collect();
    v.sort_by(|a, b| {
        (b.loop_secs + b.gap_secs)
            .total_cmp(&(a.loop_secs + a.gap_secs))
            .then(a.file.cmp(b.file))
            .then(a.line.cmp(&b.line))
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::par;

    /// A loop is recorded under the line that started it, once per call, with its time; a loop
    /// inside a task is not recorded on its own. (The lock keeps the other tests' loops, run
    /// on other threads meanwhile, out of the lines checked here, not out of the table.)
    #[test]
    fn loops_are_timed_by_the_line_that_started_them() {
        let spin = || {
            let t = Instant::now();
            while t.elapsed().as_micros() < 200 {
                std::hint::spin_loop();
            }
        };
        let outer_line = line!() + 2;
        for _ in 0..3 {
            par::for_each_task(4, |_| {
                spin();
                par::for_each_task(2, |_| {});
            });
        }
        let times = take();
        let here: Vec<&LoopTime> = times.iter().filter(|t| t.file == file!()).collect();
        assert_eq!(
            here.len(),
            1,
            "one line recorded here, not the inner loop: {here:?}"
        );
        assert_eq!(here[0].line, outer_line);
        assert_eq!(here[0].calls, 3);
        // Four tasks of 200 µs each, three times, on however many threads: at least 600 µs.
        assert!(here[0].loop_secs >= 6e-4, "{here:?}");
        assert!(
            take().iter().all(|t| t.file != file!()),
            "take starts afresh"
        );
    }
}
