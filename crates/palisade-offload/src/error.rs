//! Errors of the offload pools.
//!
//! Rejections reuse core's types: a full pool or queue, or a queue wait past `max_wait`, is
//! [`Overloaded`](palisade_core::Overloaded); a request whose [`Deadline`](palisade_core::Deadline)
//! passed before it could start (or, in a process pool, before its worker answered) is
//! [`DeadlineExceeded`](palisade_core::DeadlineExceeded). What is particular to offloading:
//!
//! | error | when |
//! |---|---|
//! | [`Panicked`] | the job panicked; the pool kept serving |
//! | [`PoolShutdown`] | the runtime or thread pool went away before the job could report |
//! | [`WorkerCrashed`] | a worker process died mid-job, and again on the one retry (feature `process`) |
//! | [`WorkerFailed`] | a worker process answered with an error of its own (feature `process`) |

use std::any::Any;
use std::fmt;

/// A job panicked. The panic was caught on the pool's thread, which keeps serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    message: String,
}

impl Panicked {
    /// A panic with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// Turns a caught panic's payload into the error, keeping its message when it is a
    /// string (as `panic!` makes it).
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_owned()
        };
        Self { message }
    }

    /// The panic's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offloaded job panicked: {}", self.message)
    }
}

impl std::error::Error for Panicked {}

/// The job was accepted but its result never came back: the tokio runtime (blocking pool)
/// or the rayon pool shut down first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolShutdown {
    _private: (),
}

impl PoolShutdown {
    /// The error.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl fmt::Display for PoolShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("offload pool shut down before the job reported")
    }
}

impl std::error::Error for PoolShutdown {}

/// Invalid configuration of a blocking or CPU pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidPool {
    /// Zero threads (or zero worker processes): nothing could ever run.
    ZeroThreads,
    /// More threads than a semaphore can count.
    TooManyThreads(usize),
    /// A queue of 0 places: use `reject()`.
    ZeroQueue,
    /// A queue wait of 0: use `reject()`.
    ZeroWait,
    /// The rayon thread pool could not be built (feature `cpu`).
    ThreadPool(String),
    /// A process pool's worker program was empty (feature `process`).
    EmptyProgram,
}

impl fmt::Display for InvalidPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroThreads => f.write_str("an offload pool needs at least 1 thread or worker"),
            Self::TooManyThreads(n) => write!(f, "{n} threads exceed what the pool can count"),
            Self::ZeroQueue => f.write_str("a queue needs at least 1 place; use reject()"),
            Self::ZeroWait => f.write_str("a queue wait must be longer than 0; use reject()"),
            Self::ThreadPool(e) => write!(f, "rayon thread pool: {e}"),
            Self::EmptyProgram => f.write_str("a process pool needs a worker program"),
        }
    }
}

impl std::error::Error for InvalidPool {}

#[cfg(feature = "process")]
pub use crate::process::{WorkerCrashed, WorkerFailed};
