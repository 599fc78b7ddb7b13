//! A team of threads that stays awake through many short parallel loops.
//!
//! A training step runs about twenty parallel loops, each of 20 to 500 µs. On a rayon pool each
//! loop is a new job: the other workers must find it, and between loops they yield and fall
//! asleep, so every loop pays for waking them. A [`session`] instead takes the pool's other
//! threads for its whole length: they watch one atomic word for the next loop (spinning for
//! 50 µs, then parked until the leader publishes one) and claim its tasks from the same word.
//! Handing out a loop then costs a store and a few compare-and-swaps.
//!
//! The threads still come from rayon (the session is a rayon scope whose spawned jobs are the
//! helpers), so a session only ever uses the pool the caller installed.
//!
//! Tasks carry no thread identity: which thread runs a task never changes what it computes.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use sync::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, LocalKey, Mutex, Ordering, Thread};

/// The synchronisation the protocol is built from: the standard library's, or loom's when the
/// crate is built with `--cfg loom` for the model test at the end of this file.
#[cfg(not(loom))]
mod sync {
    pub use std::sync::Mutex;
    pub use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence};
    pub use std::thread::{LocalKey, Thread, current, park};
}
#[cfg(loom)]
mod sync {
    pub use loom::sync::Mutex;
    pub use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence};
    pub use loom::thread::{LocalKey, Thread, current, park};
}

#[cfg_attr(loom, allow(dead_code))]
/// How long a waiting thread spins before it parks: longer than most gaps between two loops
/// of a step, short enough that an idle team gives its cores back at once. Spinning longer is
/// harmful on a virtual machine whose cores are shared: a spinning core takes time from the
/// one doing the work.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The job word: generation (24 bits) | end (20 bits) | next (20 bits). The unclaimed tasks
/// are `next..end`: the leader claims from the front (`next`, counting up) and the helpers from
/// the back (`end`, counting down). So the leader runs a loop's first tasks and a helper its
/// last ones, loop after loop: the rows a thread wrote in one loop are mostly the rows it reads
/// in the next, from its own cache rather than the other core's.
const FIELD: u32 = 20;
const FIELD_MASK: u64 = (1 << FIELD) - 1;
/// Most tasks one published loop can have; larger loops group their tasks.
const MAX_TASKS: usize = (1 << FIELD) - 1;

type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Team {
    /// See [`FIELD`]. Claiming a task is a compare-and-swap that increments the low field.
    word: AtomicU64,
    /// Points at the current loop's `Job` on the leader's stack; valid while a task of the
    /// current generation is unfinished.
    job: AtomicPtr<()>,
    /// Tasks of the current loop finished (run or panicked).
    done: AtomicUsize,
    /// Tasks of the current loop: written before the loop's word is published.
    total: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
    size: usize,
    /// Threads parked (or about to park) waiting for work or for the loop's end.
    parked: AtomicUsize,
    /// Every thread of the team, to unpark them.
    threads: Mutex<Vec<Thread>>,
}

/// Waits until `ready()` holds: spins for [`SPIN`], then parks. A thread that makes `ready()`
/// true must then call [`Team::wake`]; the `parked` count, in sequentially consistent order on
/// both sides, makes sure that a wake-up is never lost.
fn wait_until(team: &Team, ready: impl Fn() -> bool) {
    #[cfg(not(loom))]
    let (start, mut spins) = (std::time::Instant::now(), 0u32);
    while !ready() {
        // Under loom the spin is left out: it only delays the park below, and loom explores
        // every interleaving of the protocol without it.
        #[cfg(not(loom))]
        {
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
        }
        team.parked.fetch_add(1, Ordering::SeqCst);
        // Store-then-load handshake with `wake` (Dekker): the fences on both sides put this
        // increment before the check of `ready`, so either the check sees the change or `wake`
        // sees the count. SeqCst accesses alone order it on real hardware, but not in loom's
        // model, which weakens them to AcqRel; the fences make it hold in both.
        sync::fence(Ordering::SeqCst);
        if !ready() {
            // Spurious returns and stale unpark tokens only cost another check.
            sync::park();
        }
        team.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(not(loom))]
thread_local! {
    /// The session this thread leads, if any.
    static LEADING: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
    /// Set while this thread runs a session's task or helps one: nested loops run inline.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}
#[cfg(loom)]
loom::thread_local! {
    static LEADING: Cell<*const Team> = Cell::new(std::ptr::null());
    static INSIDE: Cell<bool> = Cell::new(false);
}

/// Restores a thread-local on drop, so a panic cannot leave it set.
struct Restore<T: Copy + 'static> {
    key: &'static LocalKey<Cell<T>>,
    old: T,
}

impl<T: Copy + 'static> Restore<T> {
    fn set(key: &'static LocalKey<Cell<T>>, value: T) -> Self {
        Restore {
            key,
            old: key.with(|c| c.replace(value)),
        }
    }
}

impl<T: Copy + 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        self.key.with(|c| c.set(self.old));
    }
}

impl Team {
    /// A team of `size` threads, the calling one (the leader) registered.
    fn new(size: usize) -> Self {
        Team {
            word: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            size,
            parked: AtomicUsize::new(0),
            threads: Mutex::new(vec![sync::current()]),
        }
    }

    fn generation(word: u64) -> u64 {
        word >> (2 * FIELD)
    }

    /// Claims and runs one task of the current loop, the first unclaimed one (`from_back`
    /// false) or the last; false if none is left.
    fn run_one(&self, from_back: bool) -> bool {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let (end, next) = ((w >> FIELD) & FIELD_MASK, w & FIELD_MASK);
            if next >= end {
                return false;
            }
            let (claimed, task) = if from_back {
                (w - (1 << FIELD), end - 1)
            } else {
                (w + 1, next)
            };
            match self
                .word
                .compare_exchange_weak(w, claimed, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: task `task` is claimed and unfinished, so the leader is still inside
                    // this loop and `job` still points at its closure.
                    let job = unsafe { *(self.job.load(Ordering::Acquire) as *const Job<'_>) };
                    if catch_unwind(AssertUnwindSafe(|| job(task as usize))).is_err() {
                        self.panicked.store(true, Ordering::Relaxed);
                    }
                    // Written before the word this claim read, so this loop's count.
                    let total = self.total.load(Ordering::Relaxed);
                    if self.done.fetch_add(1, Ordering::SeqCst) + 1 == total {
                        // The leader may be parked waiting for this loop's end.
                        self.wake();
                    }
                    return true;
                }
                Err(now) => w = now,
            }
        }
    }

    fn help(&self) {
        let _inside = Restore::set(&INSIDE, true);
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sync::current());
        loop {
            wait_until(self, || {
                self.stop.load(Ordering::SeqCst) || {
                    let w = self.word.load(Ordering::SeqCst);
                    w & FIELD_MASK < (w >> FIELD) & FIELD_MASK
                }
            });
            while self.run_one(true) {}
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Unparks every parked thread of the team, after a change they may wait for.
    fn wake(&self) {
        // The other half of the handshake in `wait_until`: the change before this fence, the
        // count after it.
        sync::fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) > 0 {
            for t in self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                t.unpark();
            }
        }
    }

    /// Publishes `tasks` tasks of `f`, runs them with the helpers, and returns when all are done.
    fn run(&self, tasks: usize, f: Job<'_>) {
        debug_assert!(tasks <= MAX_TASKS);
        let job: Job<'_> = f;
        self.job
            .store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.total.store(tasks, Ordering::Relaxed);
        let generation = Self::generation(self.word.load(Ordering::Relaxed)) + 1;
        self.word.store(
            (generation << (2 * FIELD)) | ((tasks as u64) << FIELD),
            Ordering::SeqCst,
        );
        self.wake();
        {
            let _inside = Restore::set(&INSIDE, true);
            while self.run_one(false) {}
        }
        wait_until(self, || self.done.load(Ordering::SeqCst) >= tasks);
        if self.panicked.swap(false, Ordering::Relaxed) {
            resume_unwind(Box::new("a task of a parallel loop panicked"));
        }
    }
}

/// Runs `f` on the calling thread with the current rayon pool's other threads (up to
/// `threads - 1` of them) waiting as helpers for [`for_each_task`] until `f` returns. Must be
/// called inside the pool (`ThreadPool::install`); with `threads <= 1`, or inside another
/// session, it simply calls `f`.
pub fn session<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let threads = threads.min(rayon::current_num_threads());
    if threads <= 1 || INSIDE.with(Cell::get) || !LEADING.with(Cell::get).is_null() {
        return f();
    }
    let team = Team::new(threads);
    struct StopOnDrop<'a>(&'a Team);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.stop.store(true, Ordering::SeqCst);
            self.0.wake();
        }
    }
    rayon::in_place_scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| team.help());
        }
        let _stop = StopOnDrop(&team);
        let _leading = Restore::set(&LEADING, &team as *const Team);
        f()
    })
}

/// The number of threads of the session this thread leads (0 outside a session, or inside one
/// of its tasks).
pub fn session_threads() -> usize {
    if INSIDE.with(Cell::get) {
        return 0;
    }
    let team = LEADING.with(Cell::get);
    if team.is_null() {
        0
    } else {
        // SAFETY: `LEADING` is set only while the session's `Team` lives on this thread's stack.
        unsafe { (*team).size }
    }
}

/// Whether this thread is running a session's task (or helping one): parallel loops started
/// here should run inline.
pub fn inside_task() -> bool {
    INSIDE.with(Cell::get)
}

/// Calls `f(t)` for every `t` in `0..tasks` on the session this thread leads and returns true,
/// or returns false (having run nothing) when there is no such session.
pub fn for_each_task(tasks: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
    if session_threads() == 0 {
        return false;
    }
    // SAFETY: as in `session_threads`.
    let team = unsafe { &*LEADING.with(Cell::get) };
    if tasks <= 1 {
        (0..tasks).for_each(f);
    } else if tasks <= MAX_TASKS {
        team.run(tasks, f);
    } else {
        let group = tasks.div_ceil(MAX_TASKS);
        team.run(tasks.div_ceil(group), &|g| {
            (g * group..((g + 1) * group).min(tasks)).for_each(f)
        });
    }
    true
}

/// The wake-up and task-claim protocol under loom, which runs the leader and a helper through
/// every interleaving of their atomic operations (within a preemption bound) and fails on a
/// lost wake-up (every thread parked: a deadlock), a task run twice or not at all, or a read
/// of the job after the leader left the loop. The session's rayon scope and the time-based spin
/// are left out: loom cannot run rayon's pool, and the spin only delays the park.
///
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom -- --test-threads=1`
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    fn one_leader_one_helper(loops: usize, tasks: usize) {
        let team = Arc::new(Team::new(2));
        let helper = {
            let team = team.clone();
            loom::thread::spawn(move || team.help())
        };
        for _ in 0..loops {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            team.run(tasks, &|t| {
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
            for h in &hits {
                assert_eq!(h.load(Ordering::Relaxed), 1, "every task runs exactly once");
            }
        }
        team.stop.store(true, Ordering::SeqCst);
        team.wake();
        helper.join().unwrap();
    }

    #[test]
    fn loom_two_loops_of_two_tasks() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| one_leader_one_helper(2, 2));
    }

    #[test]
    fn loom_one_loop_of_three_tasks() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| one_leader_one_helper(1, 3));
    }
}
