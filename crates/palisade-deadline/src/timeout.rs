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
//! tower's `Timeout` reads the clock and creates a tokio `Sleep` for every call; this one
//! does neither until the inner future is first pending, and caps the timeout by the
//! request's deadline. So the timeout counts from the attempt's first pending poll (in a
//! stack, the poll right after `call`), and a call that finishes in its first poll never
//! reads the clock. Whether the deadline has already passed is asked, at `call`, of the
//! bound the deadline remembers from the last clock reading above it (the deadline layer's,
//! see [`Deadline::may_leave_more_than`]); a deadline that passed since then is found when
//! the timer is armed, and ends the call as out of time before it started (a local
//! [`DeadlineExceeded`], which breakers do not count).
//!
//! [`Deadline`]: palisade_core::Deadline
//! [`Deadline::may_leave_more_than`]: palisade_core::Deadline::may_leave_more_than

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::observe::CallSpan;
use palisade_core::{call_span, BoxError, DeadlineExceeded, Elapsed, HasDeadline};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::timer::{Due, Race, Raced};

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
        let deadline = req.deadline();
        let span = call_span!("palisade::deadline", "palisade.timeout");
        let _scope = span.scope();
        // Out of time already: rejected at once, without calling the inner service. Asked
        // of the bound the deadline remembers from the last clock reading above (the
        // deadline layer's), so this reads the clock only for a deadline that has none.
        if deadline.is_some_and(|d| !d.may_leave_more_than(Duration::ZERO)) {
            return future::ResponseFuture::new(None, None, span);
        }
        // The timer starts when the call is first pending; a call that finishes in its
        // first poll never reads the clock. A deadline that passed since the reading
        // above is found then, and ends the call as out of time before it started.
        let due = Due::After {
            timeout: self.timeout,
            deadline: deadline.map(|d| d.instant()),
        };
        future::ResponseFuture::new(Some(self.inner.call(req)), Some(due), span)
    }
}

/// The error for a call that ran out of time. `in_flight`: the timer fired while the
/// dependency held the call, so the error measured it (and breakers count it); a call that
/// was out of time before it started is a local rejection. `by_deadline`: the request's
/// deadline ran out, not the per-attempt timeout.
fn out_of_time(in_flight: bool, by_deadline: bool) -> BoxError {
    match (by_deadline, in_flight) {
        (false, _) => Elapsed::new().into(),
        (true, true) => DeadlineExceeded::in_flight().into(),
        (true, false) => DeadlineExceeded::new().into(),
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
            span: CallSpan,
        }
    }

    impl<F> ResponseFuture<F> {
        /// `inner` is `None` when the call was out of time before it started: the future
        /// then fails with [`DeadlineExceeded`] on first poll. Built in one place so the
        /// (large) future is constructed where it is returned.
        pub(crate) fn new(inner: Option<F>, due: Option<Due>, span: CallSpan) -> Self {
            Self {
                race: Race::new(inner, due),
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
                Raced::OutOfTime {
                    in_flight,
                    by_deadline,
                } => {
                    if in_flight {
                        tracing::debug!(target: "palisade::deadline", by_deadline, "out of time: call cancelled");
                    }
                    Poll::Ready(Err(out_of_time(in_flight, by_deadline)))
                }
            }
        }
    }
}
