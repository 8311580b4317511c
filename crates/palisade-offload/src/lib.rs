//! Offload for Tower: blocking calls on a bounded thread pool, CPU work on a bounded `rayon`
//! pool, and crash-isolated worker processes, each as an async [`Service`](tower_service::Service).
//!
//! The three-layer model: I/O that can be awaited stays on the event loop; a blocking
//! (legacy, synchronous) call goes to a thread pool ([`blocking`]); CPU-heavy work goes to a
//! pool that runs in parallel ([`cpu`], feature `cpu`); work that may crash, abort or run
//! away in native code goes to worker processes (`process`, feature `process`, Unix), where
//! a crash kills one worker and not the service, and a deadline can kill the worker.
//!
//! Every pool is bounded and shares one set of rules:
//!
//! - at most `size` jobs run at once; more wait in `poll_ready` ([`OnFull::Wait`]), wait in a
//!   bounded queue for at most `max_wait` and never past the request's
//!   [`Deadline`](palisade_core::Deadline) ([`OnFull::Queue`]), or fail at once
//!   ([`OnFull::Reject`]), with [`Overloaded`](palisade_core::Overloaded);
//! - a call dropped while it waits never runs;
//! - a running thread cannot be stopped: a call whose caller leaves runs on as an orphan,
//!   counted ([`OffloadHandle::orphaned`]), with a [`CancelToken`] it may check (a worker
//!   process, in contrast, is killed);
//! - a panic is an error ([`Panicked`]), never a crash; the pool keeps serving;
//! - an [`OffloadHandle`] gives live counts (running, queued, orphaned, restarts), and the
//!   pool emits `tracing` events under `palisade::offload` and metrics (feature `metrics`)
//!   labelled `policy` = `blocking_pool` / `cpu_pool` / `process_pool`.
//!
//! # Costs
//!
//! Offloading is not free like the other policies' happy paths: each call boxes its job,
//! shares a small state with it (for the orphan count and the [`CancelToken`]) and gets
//! its result through a oneshot channel, besides the executor's own task; a process job
//! also copies its bytes through two pipes. Offload work that takes far longer than that
//! (microseconds and up), not a few nanoseconds of arithmetic.
//!
//! # Example
//!
//! ```
//! use palisade_core::{Deadline, WithDeadline};
//! use palisade_offload::{BlockingPool, CancelToken};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! let pool = BlockingPool::builder(2).queue(8, Duration::from_secs(1)).build()?;
//! let mut svc = ServiceBuilder::new().service(pool.service_fn(
//!     |req: WithDeadline<String>, _: CancelToken| Ok::<_, std::io::Error>(req.request.len()),
//! ));
//! let req = WithDeadline::until("hello".to_owned(), Deadline::after(Duration::from_secs(1)));
//! assert_eq!(svc.ready().await?.call(req).await?, 5);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod blocking;
#[cfg(feature = "cpu")]
pub mod cpu;
pub mod error;
pub mod future;
mod handle;
mod job;
#[cfg(feature = "process")]
pub mod process;
mod service;
mod shared;

pub use self::blocking::{BlockingPool, BlockingPoolBuilder};
#[cfg(feature = "cpu")]
pub use self::cpu::{CpuPool, CpuPoolBuilder};
pub use self::error::{InvalidPool, Panicked, PoolShutdown};
pub use self::handle::{CancelToken, OffloadHandle};
pub use self::job::{FnJob, Job, StatefulJob};
pub use self::service::Offload;
pub use self::shared::OnFull;
