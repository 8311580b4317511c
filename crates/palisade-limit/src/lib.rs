//! Concurrency limits for Tower services.
//!
//! - [`concurrency`]: at most N calls in flight, shared by every clone, resizable at run time
//!   through a [`LimitHandle`], with three behaviours when full: wait (backpressure through
//!   `poll_ready`), a bounded queue with a maximum wait (capped by the request's
//!   [`Deadline`](palisade_core::Deadline)), or reject at once.
//!
//! - [`adaptive`]: the same limit, resized by a feedback loop (AIMD, Vegas, Gradient2) from
//!   each call's round-trip time and overload signals.
//! - [`keyed`]: per-key (per-tenant) limits, N in flight per key plus an optional global
//!   limit, in core's memory-capped keyed store.
//! - [`criticality`]: a queue discipline of every limit above: under saturation,
//!   lower-criticality requests wait behind and are shed before higher ones;
//!   work-conserving.
//! - `fleet` (feature `redis`): one limit across a fleet of processes, kept as leases in
//!   Redis (standalone, Cluster or Valkey), reclaimed by TTL when a process dies.
//! - [`throttle`]: client-side adaptive throttling (Google SRE): shed locally what an
//!   overloaded backend would reject anyway.
//!
//! # Example
//!
//! ```
//! use palisade_limit::ConcurrencyLimitLayer;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! // At most 10 calls at once; up to 100 more wait at most 50 ms each, then get `Overloaded`.
//! let layer = ConcurrencyLimitLayer::builder(10)
//!     .queue(100, Duration::from_millis(50))
//!     .build()?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: &'static str| async move { Ok::<_, std::io::Error>(req.len()) }));
//! assert_eq!(svc.oneshot("embed").await?, 5);
//! assert_eq!(handle.in_flight(), 0);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adaptive;
pub mod concurrency;
pub mod criticality;
#[cfg(feature = "redis")]
pub mod fleet;
mod future;
pub mod keyed;
pub mod throttle;

pub use concurrency::{
    ConcurrencyLimit, ConcurrencyLimitBuilder, ConcurrencyLimitLayer, InvalidConcurrencyLimit,
    LimitHandle, OnFull,
};
