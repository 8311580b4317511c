//! Retries for Tower services: backoff with jitter, retry budgets, server hints and
//! deadlines.
//!
//! [`Retry`] sends a failed request again, one attempt at a time:
//!
//! - **What is retried**: a result whose [`Outcome`] (from the layer's [`Classify`]) is
//!   not a success and [`is_retryable`](palisade_core::Outcome::is_retryable). With the built-in
//!   classifiers that means connection errors and other transport errors, HTTP 503 and
//!   429, gRPC `UNAVAILABLE`, and `RESOURCE_EXHAUSTED` with a pushback; never a result
//!   with a negative gRPC pushback, and never a Palisade `DeadlineExceeded` or
//!   `CircuitOpen`.
//! - **Local rejections** (made by Palisade layers below, never seen by the dependency;
//!   see [`Origin`](palisade_core::Origin)), each decided explicitly:
//!   - a local `RateLimited` with a `retry_after` is waited out exactly and retried,
//!     costing an attempt but **no budget** (the limiter already bounds the load), when
//!     the wait fits the deadline and `max_retry_after`;
//!   - a local `CircuitOpen` is **never retried**: retrying into an open breaker before it
//!     probes only adds rejections; the caller gets it at once, with its `retry_after`;
//!   - a local `Overloaded` (a shed by a limit below) is retried after the backoff like a
//!     transport error, paying budget (the retry does reach the dependency if admitted);
//!   - a local `DeadlineExceeded` is never retried: there is no time left.
//!
//!   A local rejection feeds no budget's failure count: it is not a server failure.
//! - **Which requests**: those the [`ReplayPolicy`] agrees to copy. The default,
//!   [`Idempotent`], copies `http::Request`s with idempotent methods only; [`AnyMethod`]
//!   opts `POST`/`PATCH` in, [`Grpc`] retries gRPC calls and sets
//!   `grpc-previous-rpc-attempts`; [`CloneAll`] or a closure serve other request types.
//! - **How often**: at most [`max_attempts`](RetryBuilder::max_attempts), the first
//!   included.
//! - **How long to wait**: the server's hint when it gave one (`Retry-After` on 429/503,
//!   in seconds or as an HTTP-date; `grpc-retry-pushback-ms`), else the [`Backoff`]:
//!   exponential with full jitter or decorrelated jitter, between a minimum and a maximum.
//!   A hint longer than [`max_retry_after`](RetryBuilder::max_retry_after) ends retrying.
//! - **Deadline**: the request's [`Deadline`] (read through [`HasDeadline`]) bounds it
//!   all: no wait runs past it, and no retry starts unless it leaves at least
//!   [`min_remaining`](RetryBuilder::min_remaining) after the wait.
//! - **Budget**: a [`RetryBudget`] shared by every clone: Finagle-style (a share of
//!   recent requests plus a minimum rate) or gRPC-style throttling (a token bucket fed by
//!   successes and drained by failures). A retry the budget refuses is skipped and
//!   counted ([`RetryHandle::budget_exhausted`]).
//!
//! When it gives up, for whatever reason, the caller gets the **last real result**: the
//! server's 503 with its headers, or the transport error, never a synthetic "retries
//! exhausted" error.
//!
//! A copy of the request (and a clone of the service to send it with) is kept only when
//! a retry is possible for it: attempts left, a policy that copies it, budget and time
//! left. A call that needs no retry allocates nothing.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_retry::{Backoff, CloneAll, RetryBudget, RetryLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade_core::BoxError> {
//! let retry = RetryLayer::builder()
//!     .max_attempts(3)
//!     .backoff(Backoff::exponential(Duration::from_millis(50)).max(Duration::from_secs(2)))
//!     .budget(RetryBudget::ttl(Duration::from_secs(10), 5, 0.1))
//!     .policy(CloneAll)
//!     .build()?;
//! let handle = retry.handle();
//!
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counted = calls.clone();
//! let svc = ServiceBuilder::new()
//!     .layer(retry)
//!     .service(service_fn(move |key: &'static str| {
//!         let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!         async move {
//!             // The first attempt hits a reset connection; the second works.
//!             if n == 0 { Err("connection reset".into()) } else { Ok::<_, palisade_core::BoxError>(key.len()) }
//!         }
//!     }));
//! assert_eq!(svc.oneshot("user:42").await?, 7);
//! assert_eq!(handle.retries(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Differences from `tower::retry` and tower-resilience
//! tower's `Retry` leaves backoff, budgets and classification to a hand-written `Policy`,
//! knows nothing of `Retry-After` or deadlines, and clones every request whether or not
//! it could be retried. tower-resilience's retry has backoff and a budget but no server
//! hints and no deadline, and boxes every call.
//!
//! # Features
//! - `http`: the [`Idempotent`], [`AnyMethod`] and [`Grpc`] policies for `http::Request`,
//!   and [`body`]: replay of streaming request bodies.
//! - `metrics`: emit `palisade_attempts_total` (`kind` = `first` / `retry`) and
//!   `palisade_decisions_total` (`decision` = `budget_exhausted`) through `metrics`.
//!
//! # Request bodies
//! An `http::Request<B>` with a cloneable body (`Full<Bytes>`, `String`, ...) is copied
//! by cloning. A streaming body is wrapped in a [`body::ReplayBody`] (by
//! [`body::ReplayBodyLayer`], outside the retry layer): it is buffered up to a cap while
//! the first attempt sends it and replayed from the buffer; a body that outgrew the cap
//! is not retried.
//!
//! [`Outcome`]: palisade_core::Outcome
//! [`Classify`]: palisade_core::Classify
//! [`Deadline`]: palisade_core::Deadline
//! [`HasDeadline`]: palisade_core::HasDeadline

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
/// Replaying streaming request bodies (palisade-core's, shared with hedging).
#[cfg(feature = "http")]
pub mod body {
    pub use palisade_core::replay::body::*;
}
pub mod budget;
mod error;
pub mod future;
mod layer;
mod service;

pub use self::backoff::{Backoff, Jitter};
pub use self::budget::RetryBudget;
pub use self::error::InvalidRetry;
pub use self::layer::{RetryBuilder, RetryHandle, RetryLayer};
pub use self::service::Retry;
pub use palisade_core::replay::{AnyMethod, CloneAll, Grpc, Idempotent, ReplayPolicy};
