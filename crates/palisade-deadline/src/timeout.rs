//! Per-attempt timeouts: [`TimeoutLayer`].
//!
//! Fails an attempt that takes longer than `timeout` with [`Elapsed`], dropping (cancelling)
//! the inner future. It never waits past the request's overall [`Deadline`]: when less than
//! `timeout` is left, the attempt gets what is left, and running out of *that* fails with
//! [`DeadlineExceeded`] instead, so a retry layer outside can tell "this attempt was slow,
//! try again" from "the whole call is out of time, stop".
//!
//! Put it innermost in a client stack, below retries and hedges, so each attempt gets its
//! own timeout.
//!
//! # Example
//!
//! ```
//! use palisade_core::{BoxError, Elapsed};
//! use palisade_deadline::TimeoutLayer;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(100)))
//!     .service(service_fn(|_: &'static str| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Ok::<_, BoxError>("late")
//!     }));
//! let err = svc.oneshot("req").await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! # }
//! ```
//!
//! # Differences from tower's `Timeout`
//!
//! tower's `Timeout` creates a tokio `Sleep` for every call; this one arms its timer only
//! when the inner future is first pending, and caps the timeout by the request's deadline.
//!
//! [`Deadline`]: palisade_core::Deadline

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::observe::CallSpan;
use palisade_core::{call_span, BoxError, DeadlineExceeded, Elapsed, HasDeadline};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::timer::{Race, Raced};

/// Applies a per-attempt timeout; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Each call must finish within `timeout` (or the request's earlier deadline).
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Applies a per-attempt timeout; built by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    palisade_core::inner_accessors!(S);
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let now = Instant::now();
        let own = now.checked_add(self.timeout);
        // Whichever ends first: our timeout, or the request's deadline.
        let (at, cause) = match (own, req.deadline()) {
            (Some(own), Some(d)) if d.instant() < own => (d.instant(), Cause::Deadline),
            (None, Some(d)) => (d.instant(), Cause::Deadline),
            (Some(own), _) => (own, Cause::Timeout),
            // A timeout too large to represent, and no deadline: wait forever, in effect.
            (None, None) => (now + Duration::from_secs(86400 * 365 * 30), Cause::Timeout),
        };
        let span = call_span!("palisade::deadline", "palisade.timeout");
        let _scope = span.scope();
        // Deadline already passed: rejected at once, without calling the inner service.
        let inner = (cause != Cause::Deadline || at > now).then(|| self.inner.call(req));
        future::ResponseFuture::new(inner, at, cause, span)
    }
}

/// What ends a call that runs out of time. Shared with the deadline layer, whose
/// response future is this module's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    Timeout,
    Deadline,
}

impl Cause {
    /// The error for a call that ran out of time. `in_flight`: the timer fired while the
    /// dependency held the call, so the error measured it (and breakers count it); a call
    /// that was out of time before it started is a local rejection.
    fn error(self, in_flight: bool) -> BoxError {
        match (self, in_flight) {
            (Cause::Timeout, _) => Elapsed::new().into(),
            (Cause::Deadline, true) => DeadlineExceeded::in_flight().into(),
            (Cause::Deadline, false) => DeadlineExceeded::new().into(),
        }
    }
}

/// Response future of [`Timeout`].
pub mod future {
    use super::*;

    pin_project! {
        /// Response future of [`Timeout`](super::Timeout) and of
        /// [`ApplyDeadline`](crate::ApplyDeadline): the inner call raced against a timer,
        /// dropped (cancelled) when the timer fires first.
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            #[pin]
            race: Race<F>,
            cause: Cause,
            span: CallSpan,
        }
    }

    impl<F> ResponseFuture<F> {
        /// `inner` is `None` when the call was out of time before it started: the future
        /// then fails with `cause`'s error on first poll. Built in one place so the (large)
        /// future is constructed where it is returned.
        pub(crate) fn new(inner: Option<F>, at: Instant, cause: Cause, span: CallSpan) -> Self {
            Self {
                race: Race::new(inner, Some(at)),
                cause,
                span,
            }
        }
    }

    impl<F, T, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        type Output = Result<T, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let _entered = this.span.enter();
            match ready!(this.race.poll_race(cx)) {
                Raced::Done(out) => Poll::Ready(out.map_err(Into::into)),
                Raced::OutOfTime { in_flight } => {
                    if in_flight {
                        tracing::debug!(target: "palisade::deadline", cause = ?this.cause, "out of time: call cancelled");
                    }
                    Poll::Ready(Err(this.cause.error(in_flight)))
                }
            }
        }
    }
}
