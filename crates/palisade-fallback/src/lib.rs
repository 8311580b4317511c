//! Fallbacks for Tower services: answer a failed call from a value, a closure of the
//! failure, another service, or a stale cache.
//!
//! [`FallbackLayer`] watches each call's result and, when it is triggered, answers from a
//! [`Fallback`] instead:
//!
//! - **Triggers.** Any error (the default); or only selected Palisade rejections
//!   ([`FallbackBuilder::on_rejections`]: [`RejectionKind::CircuitOpen`],
//!   [`RejectionKind::Overloaded`], [`RejectionKind::DeadlineExceeded`], ... found anywhere
//!   in the error's source chain); and/or whatever a core
//!   [`Classify`](palisade_core::Classify) calls a failure, responses included
//!   ([`FallbackBuilder::classify`], e.g. an HTTP 503 with core's `HttpClassifier`).
//! - **Sources.** [`value`] (a clone of one value), [`from_fn`] (a closure of the
//!   [`Failure`]), [`service`] / [`service_with`] (another service: a cache, a degraded
//!   backend), [`StaleCache`] (the last good response for the key), and with feature
//!   `http`, [`http::StaticResponse`] (a fixed status, headers and body) and
//!   [`http::StaleCache`] (the last good response per `GET` URI, bounded, copied as it is
//!   read and served marked stale).
//! - **Declining.** A fallback with no answer for a request (a cache with nothing for
//!   its key, see [`Fallback::declines`]) lets the call's own result through untouched,
//!   so layers above still read its rejection; counted as declined.
//! - **Failures are reported.** If the fallback fails too, the caller gets
//!   [`FallbackFailed`], carrying the fallback's error as its source and the call's
//!   original error.
//! - **Counts.** [`FallbackHandle`] reads how many calls triggered it, were served,
//!   failed, and were declined.
//!
//! Stacked over a circuit breaker, an open breaker's [`CircuitOpen`](palisade_core::CircuitOpen)
//! is answered by the fallback and the inner service is not called at all.
//!
//! # Example
//!
//! ```
//! use palisade_core::{BoxError, Overloaded};
//! use palisade_fallback::{value, FallbackLayer, RejectionKind};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let layer = FallbackLayer::builder(value("cached recommendations"))
//!     .on_rejections(&[RejectionKind::Overloaded, RejectionKind::CircuitOpen])
//!     .name("recommendations")
//!     .build()?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_: ()| async { Err::<&str, BoxError>(Box::new(Overloaded::new())) }));
//!
//! assert_eq!(svc.oneshot(()).await?, "cached recommendations");
//! assert_eq!((handle.triggered(), handle.served()), (1, 1));
//! # Ok(()) }
//! ```
//!
//! # Metrics (feature `metrics`)
//!
//! `palisade_decisions_total{policy="fallback", decision="served"|"failed"|"declined"}`. Tracing
//! events go to target `palisade::fallback` at `debug`.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod fallback;
pub mod future;
#[cfg(feature = "http")]
pub mod http;
mod layer;
mod service;

pub use self::error::FallbackFailed;
pub use self::fallback::{
    from_fn, service, service_with, value, Failure, Fallback, FromFn, NoStaleEntry,
    ServiceFallback, ServiceFuture, StaleCache, Value,
};
pub use self::layer::{
    FallbackBuilder, FallbackHandle, FallbackLayer, InvalidFallback, NoClassifier, Reason,
    RejectionKind,
};
pub use self::service::FallbackService;
