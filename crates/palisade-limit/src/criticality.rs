//! Criticality: how much a request matters when there is not enough capacity for all.
//!
//! Criticality is a queue discipline of the concurrency limits, not a limit of its own:
//! [`ConcurrencyLimitBuilder::criticality`](crate::ConcurrencyLimitBuilder::criticality),
//! [`AdaptiveLimitBuilder::criticality`](crate::adaptive::AdaptiveLimitBuilder::criticality)
//! and [`KeyedConcurrencyLimitBuilder::criticality`](crate::keyed::KeyedConcurrencyLimitBuilder::criticality)
//! serve their queue by class ([`ByClass`](crate::concurrency::ByClass)). The limit is
//! work-conserving: while a permit is free, any request takes it — no capacity is held back
//! for a class that is not asking. Only when the limit is full do classes differ:
//!
//! - a freed permit goes to the oldest waiter of the *highest* criticality waiting;
//! - when the queue is full, a new request evicts the newest waiter of a *lower*
//!   criticality (which fails with [`Overloaded`](palisade_core::Overloaded)), or, if there
//!   is none, is itself shed;
//! - every waiter waits at most `max_wait`, and never past its request's deadline.
//!
//! So under saturation, critical requests keep the capacity and sheddable ones absorb the
//! rejections (Google SRE's criticality levels). The limit's [`LimitHandle`](crate::LimitHandle)
//! counts waiters per class; metrics count `palisade_decisions_total{decision="evicted"}`
//! and `{decision="shed"}` beside the limit's usual series.
//!
//! A request's criticality comes from a closure over the request; for `http::Request`
//! (feature `http`), `from_extension` reads a [`Criticality`] put in its extensions (e.g.
//! by an auth layer) and `from_header` parses a header such as `x-criticality: sheddable`.
//!
//! # Example
//!
//! ```
//! use palisade_core::WithDeadline;
//! use palisade_limit::criticality::Criticality;
//! use palisade_limit::ConcurrencyLimitLayer;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! // (With feature `http`, `from_header(name)` reads it from a header instead.)
//! let by_user = |req: &WithDeadline<&'static str>| {
//!     if req.request.starts_with("user:") { Criticality::Critical } else { Criticality::Sheddable }
//! };
//! let layer = ConcurrencyLimitLayer::builder(64)
//!     .queue(256, Duration::from_millis(100))
//!     .criticality(by_user)
//!     .build()?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: WithDeadline<&'static str>| async move { Ok::<_, std::io::Error>(req.request) }));
//! assert_eq!(svc.oneshot(WithDeadline::new("user:42")).await?, "user:42");
//! assert_eq!(handle.in_flight(), 0);
//! # Ok(()) }
//! ```

/// How much a request matters when there is not enough capacity for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Criticality {
    /// Shed first: prefetches, batch work, retries that can wait.
    Sheddable = 0,
    /// Ordinary traffic.
    #[default]
    Default = 1,
    /// Shed last: user-facing calls whose failure is visible.
    Critical = 2,
}

impl Criticality {
    /// Parses `critical`, `default` or `sheddable` (ASCII case-insensitive); `None` for
    /// anything else.
    pub fn parse(s: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(s).ok()?.trim();
        if s.eq_ignore_ascii_case("critical") {
            Some(Self::Critical)
        } else if s.eq_ignore_ascii_case("default") {
            Some(Self::Default)
        } else if s.eq_ignore_ascii_case("sheddable") {
            Some(Self::Sheddable)
        } else {
            None
        }
    }
}

#[cfg(feature = "http")]
/// Reads a [`Criticality`] from an `http::Request`'s extensions ([`Criticality::Default`]
/// when absent).
pub fn from_extension<B>() -> impl Fn(&http::Request<B>) -> Criticality + Clone {
    |req| {
        req.extensions()
            .get::<Criticality>()
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(feature = "http")]
/// Reads a [`Criticality`] from a header; absent or malformed values are
/// [`Criticality::Default`] (a caller cannot make itself critical by sending garbage).
pub fn from_header<B>(name: http::HeaderName) -> impl Fn(&http::Request<B>) -> Criticality + Clone {
    move |req| {
        req.headers()
            .get(&name)
            .and_then(|v| Criticality::parse(v.as_bytes()))
            .unwrap_or_default()
    }
}
