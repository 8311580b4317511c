//! CPU offload: CPU-heavy work as an async service, on a `rayon` pool with a bound and
//! backpressure, so the event loop never runs it and nothing queues without bound.
//!
//! [`CpuPool`] runs its jobs on a rayon pool: one it builds with [`CpuPoolBuilder::threads`],
//! one you supply ([`CpuPoolBuilder::pool`]), or rayon's global pool (the default). At most
//! as many jobs as that pool has threads are handed to it at once, so rayon's own queue
//! stays empty; further calls wait in `poll_ready` ([`OnFull::Wait`], the default), in a
//! bounded queue ([`OnFull::Queue`]), or fail at once ([`OnFull::Reject`]). A call dropped
//! while waiting never runs; a running job cannot be stopped, and is counted as an orphan,
//! with a [`CancelToken`] it may check. A panic is returned as [`Panicked`](crate::Panicked).
//!
//! Rust has no global interpreter lock: the threads run in parallel on as many cores as
//! there are. What this module adds over calling `rayon::spawn` by hand is the bound, the
//! backpressure and the accounting.
//!
//! `cargo bench -p palisade-benches --bench main -- offload` measures what this buys: a
//! 1 ms ticker on a single-threaded runtime while 8 jobs of about 50 ms of hashing run
//! inline, through a `CpuPool`, or through unbounded `spawn_blocking`; it prints the
//! ticker's lateness and the jobs' total time, and writes
//! `target/palisade-offload-responsiveness.json`. Real time: the figures move with
//! whatever else the machine runs.
//!
//! # Example
//!
//! ```
//! use palisade_offload::{CancelToken, CpuPool};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! let pool = CpuPool::builder().threads(2).name("hash").build()?;
//! let mut svc = ServiceBuilder::new()
//!     .service(pool.service_fn(|data: Vec<u8>, _: CancelToken| {
//!         Ok::<_, std::convert::Infallible>(data.iter().map(|&b| u64::from(b)).sum::<u64>())
//!     }));
//! assert_eq!(svc.ready().await?.call(vec![1, 2, 3]).await?, 6);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::job::{FnJob, Job, StatefulJob};
use crate::shared::{admission_setters, thread_pool_services, Executor, OnFull, Shared};
use crate::{CancelToken, InvalidPool, Offload, OffloadHandle};

/// A bounded front to a rayon pool; see the [module docs](self).
///
/// Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct CpuPool {
    shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
enum Threads {
    Global,
    Own(usize),
    Supplied(Arc<rayon::ThreadPool>),
}

/// Builds a [`CpuPool`]; see [`CpuPool::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CpuPoolBuilder {
    threads: Threads,
    on_full: OnFull,
    name: Arc<str>,
}

// === impl CpuPool ===

impl CpuPool {
    /// Configures a pool on rayon's global pool, waiting in `poll_ready` when it is busy.
    pub fn builder() -> CpuPoolBuilder {
        CpuPoolBuilder {
            threads: Threads::Global,
            on_full: OnFull::Wait,
            name: Arc::from(""),
        }
    }

    thread_pool_services!();
}

// === impl CpuPoolBuilder ===

impl CpuPoolBuilder {
    /// Builds a rayon pool of its own with `threads` threads (named after the pool).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Threads::Own(threads);
        self
    }

    /// Runs on rayon's global pool (the default).
    pub fn global(mut self) -> Self {
        self.threads = Threads::Global;
        self
    }

    /// Runs on a rayon pool of yours, shared with whatever else uses it; the bound is its
    /// thread count.
    pub fn pool(mut self, pool: Arc<rayon::ThreadPool>) -> Self {
        self.threads = Threads::Supplied(pool);
        self
    }

    admission_setters!("thread");

    /// Validates the configuration and builds the pool (and its rayon pool, if it owns one).
    ///
    /// # Errors
    ///
    /// [`InvalidPool`] for zero threads, a queue of zero places or zero wait, or a rayon
    /// pool that could not start its threads.
    pub fn build(self) -> Result<CpuPool, InvalidPool> {
        crate::shared::check(self.on_full)?;
        let (size, pool) = match self.threads {
            Threads::Global => (rayon::current_num_threads(), None),
            Threads::Supplied(pool) => (pool.current_num_threads(), Some(pool)),
            Threads::Own(0) => return Err(InvalidPool::ZeroThreads),
            Threads::Own(n) => {
                let prefix = if self.name.is_empty() {
                    "palisade-cpu".to_owned()
                } else {
                    self.name.to_string()
                };
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(move |i| format!("{prefix}-{i}"))
                    .build()
                    .map_err(|e| InvalidPool::ThreadPool(e.to_string()))?;
                (n, Some(Arc::new(pool)))
            }
        };
        let shared = Shared::new(
            "cpu_pool",
            size,
            self.on_full,
            self.name,
            Executor::Rayon(pool),
        )?;
        Ok(CpuPool {
            shared: Arc::new(shared),
        })
    }
}
