//! Blocking offload: synchronous (legacy, blocking) calls as an async service, on tokio's
//! blocking pool under a limit of the pool's own.
//!
//! [`BlockingPool`] runs at most `threads` jobs at once on tokio's blocking threads (of the
//! current runtime, or of one given with [`BlockingPoolBuilder::runtime`]); every service
//! built on it, and every clone of those, shares that bound. When all its threads are busy,
//! [`OnFull`] decides: wait in `poll_ready` (the default), wait in a bounded queue for at
//! most `max_wait` and never past the request's [`Deadline`](palisade_core::Deadline), or
//! fail at once with [`Overloaded`](palisade_core::Overloaded).
//!
//! A call dropped while it waits for a thread never runs. A call already running cannot be
//! stopped (no thread can be, safely): its [`CancelToken`] turns cancelled, it holds its
//! thread until it returns, and it is counted as an orphan
//! ([`OffloadHandle::orphaned`], metric `palisade_orphaned_total`, a `warn` event). A panic
//! is caught and returned as [`Panicked`](crate::Panicked); the pool keeps serving.
//!
//! # Example
//!
//! ```
//! use palisade_offload::{BlockingPool, CancelToken};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! let pool = BlockingPool::builder(4)
//!     .queue(16, Duration::from_millis(200))
//!     .name("legacy-db")
//!     .build()?;
//! let handle = pool.handle();
//! let mut svc = ServiceBuilder::new()
//!     .service(pool.service_fn(|id: u32, cancel: CancelToken| {
//!         // A legacy synchronous client call; it may check `cancel` between steps.
//!         if cancel.is_cancelled() {
//!             return Err("caller left");
//!         }
//!         Ok(format!("row {id}"))
//!     }));
//! assert_eq!(svc.ready().await?.call(7).await?, "row 7");
//! assert_eq!(handle.completed(), 1);
//! # Ok(()) }
//! ```
//!
//! The threads are tokio's, so a call must be polled inside a tokio runtime (or the pool
//! given one with [`BlockingPoolBuilder::runtime`]). A pool larger than the runtime's
//! `max_blocking_threads` (512 by default, shared with `tokio::fs` and every other
//! `spawn_blocking`) would queue inside tokio, out of this pool's sight; keep it well below.
//!
//! # Differences from `spawn_blocking` in a `service_fn`
//!
//! `tokio::task::spawn_blocking` has no bound of its own below tokio's 512 threads, no
//! queue limit and no count of calls left running after their callers gave up; a limit or
//! timeout above it cannot see any of that. Here the bound, the queue, the deadline and the
//! orphans are the pool's.

use std::sync::Arc;
use std::time::Duration;

use crate::job::{FnJob, Job, StatefulJob};
use crate::shared::{admission_setters, thread_pool_services, Executor, OnFull, Shared};
use crate::{CancelToken, InvalidPool, Offload, OffloadHandle};

/// A bounded pool of blocking threads; see the [module docs](self).
///
/// Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct BlockingPool {
    shared: Arc<Shared>,
}

/// Builds a [`BlockingPool`]; see [`BlockingPool::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct BlockingPoolBuilder {
    threads: usize,
    on_full: OnFull,
    name: Arc<str>,
    runtime: Option<tokio::runtime::Handle>,
}

// === impl BlockingPool ===

impl BlockingPool {
    /// Configures a pool running at most `threads` blocking calls at once.
    pub fn builder(threads: usize) -> BlockingPoolBuilder {
        BlockingPoolBuilder {
            threads,
            on_full: OnFull::Wait,
            name: Arc::from(""),
            runtime: None,
        }
    }

    thread_pool_services!();
}

// === impl BlockingPoolBuilder ===

impl BlockingPoolBuilder {
    admission_setters!("thread");

    /// Runs the jobs on this runtime's blocking pool instead of the one current where each
    /// call is polled.
    pub fn runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Validates the configuration and builds the pool.
    ///
    /// # Errors
    ///
    /// [`InvalidPool`] for zero or too many threads, or a queue of zero places or zero wait.
    pub fn build(self) -> Result<BlockingPool, InvalidPool> {
        let shared = Shared::new(
            "blocking_pool",
            self.threads,
            self.on_full,
            self.name,
            Executor::Blocking(self.runtime),
        )?;
        Ok(BlockingPool {
            shared: Arc::new(shared),
        })
    }
}
