//! Crash-isolated worker processes as a Tower service (feature `process`, Unix first).
//!
//! A [`ProcessPool`] keeps up to `workers` child processes running a command you give (a
//! worker program, or the current binary started in a worker mode), and sends each job to
//! one of them as bytes, in length-delimited frames over the child's stdin and stdout
//! (tokio-util's `LengthDelimitedCodec`: a 4-byte big-endian length, then the bytes). The
//! worker side is [`worker::serve`]: a blocking loop that needs no async runtime.
//!
//! What a process gives that a thread cannot:
//!
//! - **Crash isolation.** A worker that dies mid-job (it exits, aborts, segfaults, is
//!   SIGKILLed) is reaped and replaced, and its job is retried once on another worker;
//!   a second death is a [`WorkerCrashed`] error. The pool keeps serving either way.
//! - **Cancellation.** A job past its request's [`Deadline`](palisade_core::Deadline) (or
//!   the pool's [`job_timeout`](ProcessPoolBuilder::job_timeout)) gets its worker killed and
//!   replaced, and fails with [`DeadlineExceeded`](palisade_core::DeadlineExceeded) (or
//!   [`Elapsed`](palisade_core::Elapsed)). A caller that drops its future mid-job gets the
//!   worker killed the same way: nothing runs on as an orphan.
//! - **Reaping.** Workers are spawned with `kill_on_drop`; a dead worker is waited for
//!   before it is replaced; [`ProcessPool::shutdown`] closes and reaps every idle worker, and
//!   dropping the pool kills them (tokio reaps them in the background). No zombies, no
//!   orphans.
//!
//! The pool is bounded like the thread pools ([`OnFull`](crate::OnFull)); workers are
//! started when first needed (or up front with [`ProcessPool::prestart`]) and reused. A
//! worker's error answer (its handler returned an error or panicked) is [`WorkerFailed`]:
//! the worker stays, the job is not retried.
//!
//! Requests are [`Payload`]s: `Bytes`, `Vec<u8>`, `String`, or any of those in a
//! [`WithDeadline`](palisade_core::WithDeadline). With feature `serde`, [`to_payload`] /
//! [`from_payload`] and [`worker::serve_json`] carry JSON.
//!
//! # Platforms
//!
//! Written and tested for Unix (Linux). On Windows, tokio's child processes and pipes work,
//! but there are no signals: a dying worker is seen only as a closed pipe and an exit code,
//! "killed" means `TerminateProcess`, and nothing here has been tested there.
//!
//! # Example
//!
//! ```no_run
//! use palisade_offload::process::ProcessPool;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main] async fn main() -> Result<(), palisade_core::BoxError> {
//! // The current binary, started with `--worker`, calls `worker::serve(..)` in `main`.
//! let pool = ProcessPool::builder(std::env::current_exe()?)
//!     .arg("--worker")
//!     .workers(4)
//!     .build()?;
//! let mut svc = ServiceBuilder::new().service(pool.service());
//! let answer = ServiceExt::<Vec<u8>>::ready(&mut svc)
//!     .await?
//!     .call(b"render page 7".to_vec())
//!     .await?;
//! # let _ = answer;
//! pool.shutdown().await;
//! # Ok(()) }
//! ```

mod error;
mod pool;
pub(crate) mod protocol;
pub mod worker;

pub use self::error::{WorkerCrashed, WorkerFailed};
pub use self::pool::{Payload, ProcessPool, ProcessPoolBuilder, ProcessService};

#[cfg(feature = "serde")]
pub use self::protocol::{from_payload, to_payload};

/// Response futures of [`ProcessService`].
pub mod future {
    pub use super::pool::ResponseFuture;
}
