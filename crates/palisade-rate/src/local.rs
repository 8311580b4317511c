//! A keyless rate limit shared by every clone: [`RateLimitLayer`] and [`RateLimit`].
//!
//! One GCRA bucket per layer value (decision 1): every service the layer builds, and every
//! clone of those, draws from it, so it works under axum and hyper-util, which clone the
//! service per request. Requests over the rate are either rejected at once with
//! [`RateLimited`] (carrying the exact wait, to the nanosecond) or, with
//! [`RateLimitLayer::wait`], queued first come, first served for up to `max_wait`, and
//! never past the request's [`Deadline`]: a request whose needed
//! wait exceeds what its deadline leaves is rejected at once.
//!
//! The decision needs the request (its cost and deadline), so it is made in `call`;
//! `poll_ready` only asks the inner service.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use palisade_core::{BoxError, RateLimited};
//! use palisade_rate::{Quota, RateLimitLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(10).unwrap()))
//!     // an LLM call costs its tokens / 100 cells
//!     .cost(|req: &u32| req / 100);
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: u32| async move { Ok::<_, BoxError>(req) }));
//!
//! assert_eq!(svc.clone().oneshot(900).await?, 900); // 9 cells of 10
//! let err = svc.clone().oneshot(200).await.unwrap_err(); // 2 more: 1 short
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert_eq!(limited.retry_after(), Some(Duration::from_millis(100)));
//! # Ok(()) }
//! ```
//!
//! # Differences from tower's `RateLimit`
//! tower's is a fixed window kept per service value and is not `Clone` (axum needs a
//! `Buffer`, and the limit then applies per buffer); it waits without bound and reports no
//! retry-after. This one is GCRA (smooth, with a burst), `Clone` with shared state, and
//! rejects or waits with a bound.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::Quota;
use palisade_core::observe::CallSpan;
use palisade_core::{call_span, BoxError, Deadline, HasDeadline, RateLimited};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::limiter::{Acquire, Limiter};
use crate::{Cost, UnitCost};

/// Applies a shared keyless rate limit; see the [module docs](crate::local).
#[derive(Debug, Clone)]
pub struct RateLimitLayer<C = UnitCost> {
    limiter: Arc<Limiter>,
    cost: C,
    max_wait: Duration,
}

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// A limit of `quota`, rejecting at once when it is exceeded.
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: Arc::new(Limiter::new(quota)),
            cost: UnitCost,
            max_wait: Duration::ZERO,
        }
    }
}

impl<C> RateLimitLayer<C> {
    /// Wait up to `max_wait` (FIFO) for a slot instead of rejecting at once; still never
    /// past the request's deadline. `Duration::ZERO` means reject at once (the default).
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The instance name used in metrics labels (default `""`). A new limiter: call it
    /// before sharing the layer.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        let name: Arc<str> = name.into();
        self.limiter = Arc::new(Limiter::named(self.limiter.quota(), &name));
        self
    }

    /// Reject at once when the rate is exceeded (the default).
    #[must_use]
    pub fn reject(self) -> Self {
        self.wait(Duration::ZERO)
    }

    /// Charge each request `cost(&request)` cells instead of one.
    #[must_use]
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<C2> {
        RateLimitLayer {
            limiter: self.limiter,
            cost,
            max_wait: self.max_wait,
        }
    }

    /// The shared limiter, for live state (`remaining()`) or direct checks.
    #[must_use]
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }
}

impl<S, C: Clone> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
        }
    }
}

/// A service under a shared keyless rate limit; built by [`RateLimitLayer`].
///
/// Holds no reservation between `poll_ready` and `call`, so the derived `Clone` is right:
/// clones share the limiter through the `Arc`. The inner service must be `Clone`: a call
/// that waits carries an unready clone, readied only when its slot is due, so nothing
/// reaches (or is reserved in) the inner service before then.
#[derive(Debug, Clone)]
pub struct RateLimit<S, C = UnitCost> {
    inner: S,
    limiter: Arc<Limiter>,
    cost: C,
    max_wait: Duration,
}

// === impl RateLimit ===

impl<S, C> RateLimit<S, C> {
    palisade_core::inner_accessors!(S);

    /// The shared limiter.
    #[must_use]
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }
}

/// The wait a request may accept: `max_wait`, capped by what its deadline leaves.
///
/// A layer that rejects at once (`max_wait` zero, the default) never asks the deadline,
/// so it does not read the clock for it: the limiter's own reading is the call's only one.
#[inline]
pub(crate) fn allowed_wait(max_wait: Duration, deadline: Option<Deadline>) -> Duration {
    match deadline {
        Some(deadline) if !max_wait.is_zero() => max_wait.min(deadline.remaining()),
        _ => max_wait,
    }
}

impl<S, C, Request> Service<Request> for RateLimit<S, C>
where
    S: Service<Request> + Clone,
    S::Error: Into<BoxError>,
    C: Cost<Request>,
    Request: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span = call_span!("palisade::rate", "palisade.rate_limit");
        let _scope = span.scope();
        let cost = self.cost.cost(&request);
        let max_wait = allowed_wait(self.max_wait, request.deadline());
        match self.limiter.acquire(cost, max_wait) {
            Acquire::Now => ResponseFuture::called(self.inner.call(request), span),
            Acquire::After(wait) => wait_then_call(&self.inner, wait, request, span),
            Acquire::Rejected(error) => reject(error, cost, span),
        }
    }
}

/// Waits for the reserved slot with an unready clone of the inner service, readied only
/// when the slot is due: the ready service stays in the layer for the next call, so a
/// sleeping request pins nothing below it (a permit of a concurrency limit, say).
pub(crate) fn wait_then_call<S, Request>(
    inner: &S,
    wait: Duration,
    request: Request,
    span: CallSpan,
) -> ResponseFuture<S, Request>
where
    S: Service<Request> + Clone,
{
    tracing::debug!(target: "palisade::rate", wait_us = wait.as_micros() as u64, "rate limit: waiting for a slot");
    ResponseFuture::waiting(tokio::time::sleep(wait), inner.clone(), request, span)
}

pub(crate) fn reject<S: Service<Request>, Request>(
    error: RateLimited,
    cost: u32,
    span: CallSpan,
) -> ResponseFuture<S, Request> {
    tracing::debug!(
        target: "palisade::rate",
        cost,
        retry_after_us = error.retry_after().map(|d| d.as_micros() as u64),
        "rate limit: rejected"
    );
    ResponseFuture::rejected(error, span)
}
