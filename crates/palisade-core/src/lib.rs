//! The shared vocabulary of Palisade.
//!
//! Every policy crate depends on this one and nothing else of Palisade's, so the types that
//! cross crate boundaries live here:
//!
//! - [`BoxError`] and the concrete rejection errors in [`error`] ([`Overloaded`],
//!   [`RateLimited`], [`CircuitOpen`], [`DeadlineExceeded`], [`Elapsed`]), each downcastable
//!   and carrying a `retry_after` where one is known, plus [`find_rejection`] to find one
//!   anywhere in an error's `source()` chain.
//! - [`Outcome`] and the [`Classify`] trait in [`classify`]: one classification of a call's
//!   result that the breaker, adaptive limits, retries and hedges all read. HTTP (feature
//!   `http`) and gRPC (feature `grpc`) classifiers ship built in.
//! - [`Deadline`] in [`deadline`]: an absolute instant on `tokio::time`, and how it rides on
//!   a request ([`HasDeadline`]).
//! - [`admission`]: the one "wait for admission, then call" future of every layer that
//!   makes requests wait, which never pins the capacity of the layer below while it waits.
//! - [`record`]: the one "classify the result on completion and record it" future.
//! - [`replay`]: the one "may this request be repeated, and how is it copied" policy
//!   and the carrier of later attempts, shared by retries and hedges (streaming bodies
//!   with feature `http`).
//! - [`keyed`]: the one keyed store (exact cap on live keys, state-aware eviction) behind
//!   keyed rate limits, per-key breakers and keyed concurrency limits.
//! - [`rand`]: one small seedable, lock-free random source for jitter, sampling and fault
//!   injection, so runs are reproducible.
//! - [`time`]: saturating `Instant + Duration` and float-to-duration conversions, so no
//!   duration a builder accepts can panic on the request path.
//! - [`stripe`]: per-thread stripes of shared state (counters, reference counts), so
//!   threads on one shared policy do not write the same cache line on every call.
//! - [`observe`]: `tracing` targets and `metrics` handles that cost nothing when unused.
//! - `response` (feature `http`): a layer that answers rejections as HTTP 429/503/504 or
//!   gRPC statuses, so an axum or tonic server stack stays `Infallible`.
//!
//! # Stack order
//!
//! The canonical client stack, outermost first:
//!
//! ```text
//! deadline → retry → hedge → circuit breaker → rate limit → concurrency limit → timeout → client
//! ```
//!
//! The deadline bounds everything; every retry and hedge attempt passes the breaker and
//! the limits; the per-attempt timeout is innermost because it measures the dependency.
//! Layers read each other through this crate: a rejection's [`Origin`] says whether a
//! layer decided locally (breakers, adaptive limits and throttles then ignore it, see
//! [`Outcome::health`]) or a timer measured the dependency (it counts). A layer that
//! makes a request wait never pins capacity below it ([`admission`]). The repository's
//! `docs/ARCHITECTURE.md` explains each choice, and states the one public convention
//! every crate follows (`builder(…).build()` with a `#[non_exhaustive]` error, `handle()`,
//! `name()`, `pub mod future`, bounds only where a mode needs them).
//!
//! # Example
//!
//! ```
//! use palisade_core::{find_rejection, BoxError, Overloaded, Rejection};
//!
//! let err: BoxError = Box::new(Overloaded::new());
//! match find_rejection(err.as_ref()) {
//!     Some(Rejection::Overloaded(_)) => { /* shed: answer 503 */ }
//!     _ => unreachable!(),
//! }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admission;
pub mod classify;
pub mod deadline;
pub mod error;
#[cfg(feature = "http")]
pub mod header;
pub mod keyed;
pub mod observe;
pub mod rand;
pub mod record;
#[cfg(feature = "redis")]
pub mod redis;
pub mod replay;
#[cfg(feature = "http")]
pub mod response;
pub mod stripe;
pub mod time;

pub use classify::{Classify, ErrorsAsFailures, Outcome, OutcomeKind};
pub use deadline::{Deadline, HasDeadline, SetDeadline, WithDeadline};
pub use error::{
    find_rejection, CircuitOpen, DeadlineExceeded, Elapsed, Origin, Overloaded, RateLimited,
    Rejection,
};

/// `get_ref`, `get_mut` and `into_inner` for a middleware whose inner service is its
/// `inner` field of type `$inner`; used inside the middleware's `impl` block, the one
/// accessor shape of the workspace.
///
/// ```
/// pub struct Wrapper<S> {
///     inner: S,
/// }
///
/// impl<S> Wrapper<S> {
///     palisade_core::inner_accessors!(S);
/// }
///
/// let mut w = Wrapper { inner: 5 };
/// *w.get_mut() += 1;
/// assert_eq!(*w.get_ref(), 6);
/// assert_eq!(w.into_inner(), 6);
/// ```
#[macro_export]
macro_rules! inner_accessors {
    ($inner:ty) => {
        /// A reference to the inner service.
        pub fn get_ref(&self) -> &$inner {
            &self.inner
        }

        /// A mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut $inner {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> $inner {
            self.inner
        }
    };
}

/// The error type every Palisade service returns: any error, boxed.
///
/// Services bound their inner error by `Into<BoxError>` (as tower's do), so a
/// rejection from one layer and an error from the wrapped client travel the same way and
/// can be told apart with [`find_rejection`] or `downcast_ref`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
