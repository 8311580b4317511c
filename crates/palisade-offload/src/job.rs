use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use palisade_core::BoxError;

use crate::CancelToken;

/// A synchronous job an offload pool runs on its threads, one request at a time per call.
///
/// Implemented by [`FnJob`] (a plain function or closure) and [`StatefulJob`] (a function
/// with per-thread mutable state). Implement it yourself for a handler of your own.
pub trait Job<Req>: Send + Sync + 'static {
    /// The job's result.
    type Response: Send + 'static;
    /// The job's error.
    type Error: Into<BoxError>;

    /// Runs the job for `req` on one of the pool's threads. `cancel` turns cancelled when
    /// the caller stops waiting.
    ///
    /// # Errors
    ///
    /// Whatever the job fails with; a panic is caught and returned as
    /// [`Panicked`](crate::Panicked).
    fn run(&self, req: Req, cancel: &CancelToken) -> Result<Self::Response, Self::Error>;
}

/// A function run as a [`Job`]; see the pools' `service_fn`.
#[derive(Debug, Clone)]
pub struct FnJob<F> {
    f: F,
}

impl<F> FnJob<F> {
    /// `f` as a job.
    pub const fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F, Req, T, E> Job<Req> for FnJob<F>
where
    F: Fn(Req, CancelToken) -> Result<T, E> + Send + Sync + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    type Response = T;
    type Error = E;

    fn run(&self, req: Req, cancel: &CancelToken) -> Result<T, E> {
        (self.f)(req, cancel.clone())
    }
}

/// A function with mutable state, run as a [`Job`]; see the pools' `service_with_state`.
///
/// Each job borrows one state exclusively while it runs: states are made by `init` as
/// needed, so there are never more than the pool has threads, and are reused afterwards
/// (a connection or a handle of a legacy library that is not thread-safe, kept per thread).
/// A job that panics drops its state, which may be half-updated; the next one gets a fresh
/// state from `init`.
pub struct StatefulJob<I, F, S> {
    init: I,
    f: F,
    idle: Mutex<Vec<S>>,
}

impl<I, F, S> std::fmt::Debug for StatefulJob<I, F, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map(|v| v.len()).unwrap_or(0);
        f.debug_struct("StatefulJob")
            .field("idle_states", &idle)
            .finish()
    }
}

impl<I, F, S> StatefulJob<I, F, S> {
    /// `f` with states made by `init`.
    pub const fn new(init: I, f: F) -> Self {
        Self {
            init,
            f,
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<I, F, S, Req, T, E> Job<Req> for StatefulJob<I, F, S>
where
    I: Fn() -> S + Send + Sync + 'static,
    F: Fn(&mut S, Req, CancelToken) -> Result<T, E> + Send + Sync + 'static,
    S: Send + 'static,
    T: Send + 'static,
    E: Into<BoxError>,
{
    type Response = T;
    type Error = E;

    fn run(&self, req: Req, cancel: &CancelToken) -> Result<T, E> {
        // The lock is held only to take or return a state, never while the job runs.
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut state = taken.unwrap_or_else(|| (self.init)());
        match catch_unwind(AssertUnwindSafe(|| {
            (self.f)(&mut state, req, cancel.clone())
        })) {
            Ok(out) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(state);
                out
            }
            // The state may be half-updated: drop it, and let the pool report the panic.
            Err(payload) => {
                drop(state);
                resume_unwind(payload)
            }
        }
    }
}
