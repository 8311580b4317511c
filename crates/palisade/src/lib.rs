//! Traffic policy for any Tower `Service`, in one dependency.
//!
//! Palisade puts concurrency limits, rate limits, circuit breakers, deadlines, budgeted
//! retries, hedged requests, scatter-gather fan-out, coalescing, fallback, fault injection
//! and offload around an axum or tonic server, a hyper or tonic client, or any
//! `service_fn`. This crate is the front door: one feature per policy family, the
//! vocabulary at the root, [`ServiceBuilderExt`] so a stack reads top to bottom,
//! [`preset`]s for the common jobs, and [`ClientPolicy`] / [`ServerPolicy`] to build
//! the same stacks from a config file (feature `config`).
//!
//! # The canonical client stack
//!
//! Outermost first — the order every preset and config builds, and the one to write by
//! hand:
//!
//! ```text
//! deadline → retry (budgeted) → hedge → circuit breaker → rate limit → concurrency limit
//!          → per-attempt timeout → the client
//! ```
//!
//! The deadline bounds the whole call; every retry and hedge attempt passes the breaker
//! and the limits; the per-attempt timeout is innermost because it measures the
//! dependency. The repository's `docs/ARCHITECTURE.md` explains each choice.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade::{BoxError, ServiceBuilderExt, WithDeadline};
//! use palisade::breaker::CircuitBreakerLayer;
//! use palisade::limit::ConcurrencyLimitLayer;
//! use palisade::rate::{quota, RateLimitLayer};
//! use palisade::retry::{CloneAll, RetryLayer};
//! use palisade::hedge::{HedgeDelay, HedgeLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let stack = ServiceBuilder::new()
//!     .deadline(Duration::from_secs(2))
//!     .retries(RetryLayer::builder().policy(CloneAll).max_attempts(3).build()?)
//!     .hedge(HedgeLayer::builder(HedgeDelay::fixed(Duration::from_millis(50))).policy(CloneAll).build()?)
//!     .circuit_breaker(CircuitBreakerLayer::builder().build()?)
//!     .rate_limiter(RateLimitLayer::new(quota(100, Duration::from_secs(1))?))
//!     .concurrency_limiter(ConcurrencyLimitLayer::new(16))
//!     .attempt_timeout(Duration::from_millis(300))
//!     .service(service_fn(|req: WithDeadline<&'static str>| async move {
//!         Ok::<_, BoxError>(format!("hello, {}", req.request))
//!     }));
//! // Any request type can carry a deadline: `http::Request` in its extensions,
//! // others in a `WithDeadline`.
//! assert_eq!(stack.oneshot(WithDeadline::new("world")).await?, "hello, world");
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `limit`, `rate`, `breaker`, `deadline`, `retry`, `hedge` | the canonical stack's families (**default**) |
//! | `fanout`, `coalesce`, `fallback`, `fault`, `offload` | scatter-gather, coalescing, fallback, fault injection, offload |
//! | `redis` | fleet-wide rate and concurrency limits (Redis standalone or Cluster) |
//! | `http` | HTTP classifiers, body replay, rejection responses, [`http::key`] extractors, HTTP presets |
//! | `grpc` | gRPC classification (`grpc-status`, pushback) and gRPC presets |
//! | `tonic` | [`tonic`](mod@crate::tonic): rejections as `tonic::Status`, deterministic `DEADLINE_EXCEEDED` |
//! | `metrics` | every family emits through the `metrics` facade |
//! | `config` | [`ClientPolicy`] / [`ServerPolicy`] from TOML, YAML or JSON |
//! | `full` | all of the above |
//!
//! # "implementation of `From` is not general enough"
//!
//! rustc can reject a stack whose future is sent to `tokio::spawn` (or returned from an
//! axum handler) with "implementation of `From` is not general enough … `Box<dyn Error +
//! Send + Sync>` must implement `From<Box<dyn Error + Send + Sync + '0>>`, for any
//! lifetime `'0`". It comes from a `service_fn` whose error type is `BoxError` itself,
//! under a layer that boxes its future as `dyn Future + Send` (the Redis rate limit does):
//! proving that boxed future `Send` makes the compiler ask for the `Into<BoxError>`
//! conversion at every lifetime of the trait object, which it cannot give. The fix is to
//! give the inner service a concrete error type — `std::convert::Infallible`,
//! `std::io::Error`, your own error enum — and let the layers box it:
//!
//! ```
//! use tower::service_fn;
//! // Not `Ok::<_, palisade::BoxError>(n)`:
//! let inner = service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) });
//! # let _ = inner;
//! ```
//!
//! The repository's `fleet_rate` example is the case that hits it and the fix.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use palisade_core::{
    find_rejection, BoxError, CircuitOpen, Classify, Deadline, DeadlineExceeded, Elapsed,
    ErrorsAsFailures, HasDeadline, Origin, Outcome, OutcomeKind, Overloaded, RateLimited,
    Rejection, SetDeadline, WithDeadline,
};

/// Outcome classification: [`Classify`], and the HTTP and gRPC classifiers.
pub mod classify {
    pub use palisade_core::classify::*;
}

/// Rejection errors and where they came from ([`Origin`]).
pub mod error {
    pub use palisade_core::error::*;
}

/// May this request be repeated, and how is it copied: the replay policies shared by
/// retries and hedges.
pub mod replay {
    pub use palisade_core::replay::*;
}

/// Saturating time helpers on `tokio::time`.
pub mod time {
    pub use palisade_core::time::*;
}

/// The one keyed store behind keyed rate limits, per-key breakers and keyed limits.
pub mod keyed {
    pub use palisade_core::keyed::*;
}

/// Concurrency limits: static, keyed, criticality, adaptive (AIMD, Vegas, Gradient2),
/// the SRE throttle and (feature `redis`) fleet-wide leases.
#[cfg(feature = "limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
pub mod limit {
    pub use palisade_limit::*;
}

/// Rate limits: local and keyed GCRA, and (feature `redis`) fleet-wide through Redis.
#[cfg(feature = "rate")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate")))]
pub mod rate {
    pub use palisade_rate::*;
}

/// Circuit breakers: count, time and consecutive windows, slow calls, probes, per key.
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub mod breaker {
    pub use palisade_breaker::*;
}

/// Deadlines: the whole-call budget, per-attempt timeouts, propagation across hops and the
/// server side.
#[cfg(feature = "deadline")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadline")))]
pub mod deadline {
    pub use palisade_deadline::*;
}

/// Budgeted retries: backoff with jitter, Retry-After and pushback, deadline-aware.
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry {
    pub use palisade_retry::*;
}

/// Hedged requests: a spare attempt after a fixed or percentile delay, budgeted.
#[cfg(feature = "hedge")]
#[cfg_attr(docsrs, doc(cfg(feature = "hedge")))]
pub mod hedge {
    pub use palisade_fanout::hedge::*;
}

/// Scatter-gather fan-out: all, first, quorum, or partial results under a deadline.
#[cfg(feature = "fanout")]
#[cfg_attr(docsrs, doc(cfg(feature = "fanout")))]
pub mod fanout {
    pub use palisade_fanout::fanout::*;
    pub use palisade_fanout::join;
}

/// Request coalescing: concurrent identical requests share one call.
#[cfg(feature = "coalesce")]
#[cfg_attr(docsrs, doc(cfg(feature = "coalesce")))]
pub mod coalesce {
    pub use palisade_coalesce::*;
}

/// Fallback answers on failure or rejection.
#[cfg(feature = "fallback")]
#[cfg_attr(docsrs, doc(cfg(feature = "fallback")))]
pub mod fallback {
    pub use palisade_fallback::*;
}

/// Fault injection: latency, errors, aborts and outages, seeded and switchable.
#[cfg(feature = "fault")]
#[cfg_attr(docsrs, doc(cfg(feature = "fault")))]
pub mod fault {
    pub use palisade_fault::*;
}

/// Offloading blocking and CPU work, and crash-isolated worker processes.
#[cfg(feature = "offload")]
#[cfg_attr(docsrs, doc(cfg(feature = "offload")))]
pub mod offload {
    pub use palisade_offload::*;
}

mod builder;
pub use builder::ServiceBuilderExt;

pub mod boxed;
pub use boxed::{BoxErrors, BoxErrorsLayer};

// Policies and presets build the canonical stack, so they need all of its families.
#[cfg(all(
    feature = "limit",
    feature = "rate",
    feature = "breaker",
    feature = "deadline",
    feature = "retry",
    feature = "hedge"
))]
mod canonical {
    pub(crate) mod policy;
    pub mod preset;
}
#[cfg(all(
    feature = "limit",
    feature = "rate",
    feature = "breaker",
    feature = "deadline",
    feature = "retry",
    feature = "hedge"
))]
pub use canonical::{policy::exports::*, preset};

/// HTTP helpers: request key extractors for keyed policies, and the rejection response
/// layer for servers.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;

#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;
