//! A rayon thread pool whose threads are joined when it is dropped.
//!
//! rayon lets a dropped pool's threads finish on their own. A program that makes pools
//! repeatedly (one per training run or evaluation) then starts new threads while old ones
//! still hold their malloc arenas, and glibc makes new arenas: memory grows with every pool.
//! Joining the threads hands their arenas back before the next pool starts.

use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// A rayon pool of a fixed size, joined on drop.
pub struct ThreadPool {
    pool: Option<rayon::ThreadPool>,
    handles: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// A pool of `threads` threads (at least 1).
    pub fn new(threads: usize) -> Result<Self> {
        let mut handles = Vec::new();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .spawn_handler(|thread| {
                let h = std::thread::Builder::new()
                    .name(format!("elbo-{}", thread.index()))
                    .spawn(move || thread.run())?;
                handles.push(h);
                Ok(())
            })
            .build()
            .map_err(|e| {
                Error::io(
                    "starting threads for",
                    "the thread pool",
                    std::io::Error::other(e),
                )
            })?;
        // gemm keeps one packing buffer per thread (its `L2_SLAB`, the size of the L2 cache),
        // made the first time that thread packs a product's left side in place. Which thread
        // first does so depends on the schedule, so without this the buffers would appear
        // during a later epoch, and the heap would grow (by 2 MiB here) after the first.
        // Making them now keeps the rule that memory is allocated before training starts.
        pool.broadcast(|_| gemm_common::gemm::L2_SLAB.with(|_| ()));
        Ok(ThreadPool {
            pool: Some(pool),
            handles,
        })
    }

    /// Runs `f` inside the pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool
            .as_ref()
            .expect("present until dropped")
            .install(f)
    }

    /// Runs `f` inside the pool as a [`session`](super::team::session): the pool's other
    /// threads wait, spinning, for the parallel loops `f` starts. For a run of many short loops
    /// (a training epoch, an evaluation), not for long serial work.
    pub fn install_session<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let threads = self.handles.len();
        self.install(move || super::team::session(threads, f))
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        drop(self.pool.take());
        let me = std::thread::current().id();
        for h in self.handles.drain(..) {
            // A pool dropped from one of its own threads cannot wait for that thread.
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.handles.len())
    }
}

/// How many threads elbo's kernels use: chosen once, then handed to whatever trains or
/// evaluates. Cloning shares the same threads.
///
/// ```
/// let par = elbo::Parallelism::threads(2)?;
/// assert_eq!(par.count(), 2);
/// let sum: u64 = par.run(|| (1..=10u64).sum());
/// assert_eq!(sum, 55);
/// # Ok::<(), elbo::Error>(())
/// ```
#[derive(Clone)]
pub struct Parallelism {
    pool: std::sync::Arc<ThreadPool>,
    threads: usize,
}

impl std::fmt::Debug for Parallelism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallelism")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Parallelism {
    /// `threads` threads of their own (joined when the last clone is dropped). Results do not
    /// depend on the count: every loop is cut by shape alone.
    pub fn threads(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::config("threads", 0, "must be at least 1"));
        }
        Ok(Parallelism {
            pool: std::sync::Arc::new(ThreadPool::new(threads)?),
            threads,
        })
    }

    /// One thread: the calling thread's work is done on one pool thread, with no others.
    pub fn single() -> Result<Self> {
        Self::threads(1)
    }

    /// As many threads as the machine offers ([`std::thread::available_parallelism`]).
    pub fn available() -> Result<Self> {
        Self::threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The number of threads.
    pub fn count(&self) -> usize {
        self.threads
    }

    /// Runs `f` on these threads: the kernels it calls split their work among them.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Runs `f` as one session of these threads (see [`super::team`]): for a run of many short
    /// loops, such as an epoch or an evaluation.
    pub(crate) fn session<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install_session(f)
    }
}
