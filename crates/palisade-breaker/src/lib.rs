//! A circuit breaker for Tower services, with honest sliding windows, slow-call detection,
//! exact half-open probes, manual states and per-key breakers.
//!
//! A [`CircuitBreaker`] watches the outcomes of the calls it passes, classified by a
//! [`Classify`](palisade_core::Classify) (every `Err` a failure by default; HTTP 5xx/429
//! and gRPC codes with palisade-core's classifiers). When the failures (or slow calls)
//! reach a threshold it *opens*: calls fail at once with
//! [`CircuitOpen`](palisade_core::CircuitOpen), carrying the time until it probes again,
//! without reaching the inner service. After the open duration it turns *half-open* and
//! admits exactly `permitted_probes` calls; their outcomes close it or open it again.
//!
//! ```text
//! Closed ──trip──▶ Open ──open duration──▶ HalfOpen ──probes pass──▶ Closed
//!                   ▲                          │
//!                   └── probes fail / timeout ─┘
//! ```
//!
//! - **Failure models** ([`FailureModel`]): the last N outcomes (a true ring: 200 successes
//!   then 60 failures in a window of 100 is a 60 % failure rate), a time window of fixed
//!   buckets evicted as time moves (O(1) per call), or N consecutive failures. Rates are
//!   evaluated once the window holds `minimum_calls`.
//! - **Slow calls**: a call slower than a duration is slow, succeeded or not; the breaker
//!   also trips on the slow-call rate.
//! - **Open duration**: constant, or growing with consecutive trips ([`OpenBackoff`]:
//!   exponential, jitter, cap, reset after a healthy stretch).
//! - **Half-open**: exactly `permitted_probes` calls pass per half-open phase, whatever the
//!   concurrency; a maximum time after which unfinished probes count as a failure.
//! - **Readiness**: by default the service is ready and fails in `call` when open;
//!   [`CircuitBreakerBuilder::not_ready_when_open`] reports not-ready instead, so a balancer routes around it.
//! - **Manual states** through a [`BreakerHandle`]: forced open, disabled, metrics-only,
//!   reset; plus the live [`State`] and [`BreakerStats`], and a transition callback.
//! - **Per key** ([`CircuitBreakerBuilder::build_keyed`]): a breaker per host, method..., at most
//!   `max_keys` of them, idle ones evicted first.
//! - **Observability**: transitions emit `tracing` events on target `palisade::breaker`
//!   and the `palisade_state` / `palisade_transitions_total` / `palisade_decisions_total`
//!   metrics (feature `metrics` of palisade-core).
//!
//! # Outcomes that are not recorded
//!
//! An *ignored* outcome counts as neither success nor failure. A call whose response
//! future is **dropped before it completes** is not recorded either (there is no outcome
//! to record); if it was a half-open probe, its slot is handed back so another call can
//! probe. Put a timeout *inside* the breaker if hung calls should count as failures.
//!
//! # Cost
//!
//! In Closed (and Disabled, MetricsOnly) admission is one atomic load; recording an
//! outcome takes the state machine's short lock only when it may change the window (a
//! success into a window of successes takes none). An admitted call holds its core's
//! [lane](palisade_core::stripe) of the breaker rather than the shared `Arc`, so calls on
//! several cores write no shared cache line. Nothing is allocated per call, except the
//! boxed [`CircuitOpen`](palisade_core::CircuitOpen) of a rejection (the `BoxError` every
//! Palisade service returns).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_breaker::{CircuitBreakerLayer, FailureModel};
//! use palisade_core::{BoxError, CircuitOpen};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .failure_model(FailureModel::count(20))
//!     .minimum_calls(5)
//!     .failure_rate(0.5)
//!     .open_duration(Duration::from_secs(10))
//!     .build()?;
//! let handle = breaker.handle();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err::<(), BoxError>("boom".into()) } else { Ok(()) }
//!     }));
//!
//! for _ in 0..5 {
//!     let _ = svc.ready().await?.call(true).await;
//! }
//! // Five failures out of five: open. The next call is rejected without running.
//! let err = svc.ready().await?.call(false).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().expect("rejected by the breaker");
//! assert!(open.retry_after().is_some());
//! assert_eq!(handle.state(), palisade_breaker::State::Open);
//! # Ok(())
//! # }
//! ```
//!
//! # Differences from tower-resilience's breaker
//!
//! Its count window is cumulative (old outcomes never slide out), its time window scans
//! every record under a lock on each call, and it allocates per call; half-open here
//! admits an exact number of probes, and the state is shared by every clone.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod core;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod machine;
mod service;
mod window;

pub use crate::config::{FailureModel, InvalidBreaker, OpenBackoff};
pub use crate::handle::{BreakerHandle, BreakerStats};
pub use crate::keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerLayer, KeyedHandle};
pub use crate::layer::{CircuitBreakerBuilder, CircuitBreakerLayer};
pub use crate::machine::{State, Transition};
pub use crate::service::CircuitBreaker;
pub use crate::window::WindowStats;
