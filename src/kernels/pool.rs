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
