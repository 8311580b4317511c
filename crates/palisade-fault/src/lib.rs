//! Fault injection for Tower services: seeded latency, errors, aborts and stalls, and with
//! feature `http` status codes, gRPC `UNAVAILABLE` and a misbehaving upstream.
//!
//! [`FaultLayer`] decides per call, from one seeded random sequence shared by every
//! service it builds, whether to:
//!
//! - **delay** the call ([`FaultBuilder::latency`]) by a [`Latency`]: fixed, uniform,
//!   bimodal, or a log-normal long tail;
//! - **fail** it ([`FaultBuilder::error`], [`FaultBuilder::error_with`]) without calling
//!   the inner service;
//! - **abort** it ([`FaultBuilder::abort`]): call the inner service and lose its answer
//!   ([`Aborted`]);
//! - **stall** it ([`FaultBuilder::stall`]): never answer, until the caller drops the
//!   future (a deadline above it fires; nothing leaks).
//!
//! Each fault has a rate. Latency is drawn on its own; at most one of the other faults
//! happens per call, so their rates add up to at most 1 (checked by `build()`). The same
//! seed and the same calls in the same order give the same faults. A [`FaultHandle`]
//! switches the faults on and off at run time, schedules an outage window on
//! `tokio::time` (from t1 to t2), changes rates and reads the counts.
//!
//! Delays and outage windows run on `tokio::time` (paused time in tests), so a layer that
//! injects latency needs a tokio runtime with the time driver enabled.
//!
//! Put it below the policies under test on a client (faults happen before the call
//! leaves), around an axum `Router` on a server ([`HttpFaultLayer`], feature `http`), or
//! over an [`Upstream`] as a standalone misbehaving upstream ([`FaultService`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_fault::{FaultKind, FaultLayer, Latency};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade_core::BoxError> {
//! let faults = FaultLayer::builder()
//!     .seed(7)
//!     .latency(0.5, Latency::Uniform { min: Duration::from_millis(5), max: Duration::from_millis(50) })
//!     .error(0.1)
//!     .name("db")
//!     .build()?;
//! let handle = faults.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(faults)
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
//!
//! let mut failed = 0;
//! for n in 0..100 {
//!     if svc.ready().await?.call(n).await.is_err() {
//!         failed += 1;
//!     }
//! }
//! assert_eq!(failed, handle.injected(FaultKind::Error));
//!
//! handle.set_enabled(false); // the outage is over
//! assert_eq!(svc.ready().await?.call(1).await?, 1);
//! # Ok(()) }
//! ```
//!
//! # Metrics (feature `metrics`)
//!
//! `palisade_decisions_total{policy="fault", decision=...}` counts `passed`, `delayed`
//! and each configured fault kind ([`FaultKind::as_str`]). Tracing events go to target
//! `palisade::fault` at `debug`.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
pub mod future;
#[cfg(feature = "http")]
pub mod http;
mod layer;
mod plan;
mod service;

pub use self::error::{Aborted, InjectedError};
#[cfg(feature = "http")]
pub use self::http::{FaultService, HttpFault, HttpFaultLayer, Upstream};
pub use self::layer::{FaultBuilder, FaultLayer};
pub use self::plan::{FaultHandle, FaultKind, InvalidFault, Latency};
pub use self::service::Fault;
