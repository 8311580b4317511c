//! At most N calls in flight, shared by every clone and resizable at run time.
//!
//! [`ConcurrencyLimitLayer`] holds one limit (a FIFO-fair semaphore) in an `Arc`: every
//! service it builds, and every clone of those, draws from it. axum and hyper-util clone the
//! service per request, so a limit kept per clone would limit nothing.
//!
//! What happens when the limit is full is set by [`OnFull`]:
//!
//! - [`OnFull::Wait`] (the default): backpressure. `poll_ready` waits for a permit, first
//!   come first served, like tower's `ConcurrencyLimit`. The wait is unbounded here; bound it
//!   from outside (a deadline or timeout layer).
//! - [`OnFull::Queue`]: `poll_ready` is always ready; a call that finds the limit full waits
//!   in a queue of at most `max_queued` calls, for at most `max_wait` and never past the
//!   request's [`Deadline`](palisade_core::Deadline), then fails with
//!   [`Overloaded`](palisade_core::Overloaded). A full queue fails at once.
//! - [`OnFull::Reject`]: load shedding. A call that finds the limit full fails at once with
//!   [`Overloaded`](palisade_core::Overloaded).
//!
//! A queue is served in the order of the limit's [`discipline`]: first come first
//! served ([`Fifo`], the default), or by [criticality](crate::criticality) ([`ByClass`],
//! from [`ConcurrencyLimitBuilder::criticality`]: critical before default before
//! sheddable, a full queue evicting the newest lower-class waiter). The discipline is part
//! of the type, and so are the bounds: a limit without a queue ([`NoQueue`], what
//! [`ConcurrencyLimitLayer::new`] and a builder without a queue make) takes any request and
//! any inner service; a queue needs the request's deadline (`Req:`
//! [`HasDeadline`](palisade_core::HasDeadline)) and a clone of the inner service to wait
//! with (`S: Clone`).
//!
//! A permit is released when the response future completes, fails or is dropped. The limit
//! can be changed at run time through a [`LimitHandle`] (the adaptive limits drive it so);
//! shrinking it never revokes calls already in flight: permits are retired as they return.
//!
//! # Example
//!
//! ```
//! use palisade_limit::{ConcurrencyLimitLayer, OnFull};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! let layer = ConcurrencyLimitLayer::builder(2).on_full(OnFull::Reject).build()?;
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) }));
//! assert_eq!(svc.ready().await?.call(21).await?, 42);
//!
//! handle.set_limit(8)?; // e.g. from a config reload
//! assert_eq!(handle.limit(), 8);
//! # Ok(()) }
//! ```
//!
//! # Differences from tower's `ConcurrencyLimit`
//!
//! - One limit per layer value: tower's `ConcurrencyLimitLayer` makes a new semaphore on
//!   every `layer()` call, so two services built from one layer value each get N.
//! - `poll_ready` takes its permit first but stores it only once the inner service is ready
//!   too, so a stalled inner service does not pin capacity others could use.
//! - Queue and reject modes, a queue by criticality, resizing, and live in-flight/queued
//!   counts (by class too).
//! - It scales across cores: free permits are split over per-core stripes (a caller takes
//!   from its own and steals from the others before it waits, so the limit stays exact), and
//!   a permit holds its core's [lane](palisade_core::stripe) of the shared state, so calls on
//!   different cores do not write one cache line. tower's semaphore is one counter.

pub mod discipline;
mod future_impl;
mod layer;
pub(crate) mod semaphore;
mod service;
pub(crate) mod shared;

pub use self::discipline::{ByClass, Fifo, NoQueue};
pub use self::layer::{
    ConcurrencyLimitBuilder, ConcurrencyLimitLayer, InvalidConcurrencyLimit, OnFull,
};
pub use self::service::ConcurrencyLimit;
pub use self::shared::LimitHandle;

/// Response futures of [`ConcurrencyLimit`].
pub mod future {
    pub use super::future_impl::ResponseFuture;
}
