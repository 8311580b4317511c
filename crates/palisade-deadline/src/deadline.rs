//! The client's overall deadline: [`DeadlineLayer`].
//!
//! Sets the request's [`Deadline`] to the earlier of the one it already carries and
//! `now + timeout` (a layer may shorten a caller's deadline, never extend it), then fails the
//! call with [`DeadlineExceeded`] when it passes, dropping (cancelling) the inner future. A
//! request whose deadline has already passed is rejected at once, without calling the inner
//! service.
//!
//! Put it outermost in a client stack, so retries, hedges and queues inside it all see (and
//! stop at) the same deadline. Everything inside reads it through [`HasDeadline`].
//!
//! # Example
//!
//! ```
//! use palisade_core::{BoxError, DeadlineExceeded, HasDeadline};
//! use palisade_deadline::DeadlineLayer;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_millis(300)))
//!     .service(service_fn(|req: http::Request<()>| async move {
//!         // The inner service sees the deadline...
//!         assert!(req.deadline().is_some());
//!         tokio::time::sleep(Duration::from_secs(1)).await; // ...and overruns it.
//!         Ok::<_, BoxError>(())
//!     }));
//! let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
//! assert!(err.is::<DeadlineExceeded>());
//! # }
//! ```
//!
//! [`Deadline`]: palisade_core::Deadline
//! [`HasDeadline`]: palisade_core::HasDeadline

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Deadline, DeadlineExceeded, SetDeadline};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::timer::LazySleep;

/// Applies an overall deadline of `timeout` to every request; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// Every request must finish within `timeout` (or its own, earlier deadline).
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = ApplyDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApplyDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Applies an overall deadline to every request; built by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct ApplyDeadline<S> {
    inner: S,
    timeout: Duration,
}

crate::macros::inner_accessors!(ApplyDeadline);

impl<S, Req> Service<Req> for ApplyDeadline<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: SetDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        // One clock read per call: it is most of this layer's cost.
        let now = Instant::now();
        let deadline = match (now.checked_add(self.timeout), req.deadline()) {
            (Some(ours), Some(theirs)) => theirs.min(Deadline::at(ours)),
            (Some(ours), None) => Deadline::at(ours),
            (None, Some(theirs)) => theirs,
            // A timeout too large to represent and no deadline: a deadline decades away.
            (None, None) => Deadline::after(self.timeout),
        };
        // Built in one place, so the (large) future is constructed where it is returned.
        let inner = if deadline.instant() <= now {
            // Already out of time: don't start work nobody will wait for.
            tracing::debug!(target: "palisade::deadline", "deadline already passed: rejected");
            None
        } else {
            req.set_deadline(deadline);
            Some(self.inner.call(req))
        };
        future::ResponseFuture::new(inner, deadline.instant())
    }
}

/// Response future of [`ApplyDeadline`].
pub mod future {
    use super::*;

    pin_project! {
        /// Response future of [`ApplyDeadline`](super::ApplyDeadline): the inner call, raced
        /// against the deadline.
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            // `None`: the deadline had passed before the call; fail on first poll.
            #[pin]
            inner: Option<F>,
            #[pin]
            sleep: LazySleep,
        }
    }

    impl<F> ResponseFuture<F> {
        /// `inner` is `None` when the deadline had passed before the call.
        pub(crate) fn new(inner: Option<F>, at: Instant) -> Self {
            Self {
                inner,
                sleep: LazySleep::until(at),
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
            let mut this = self.project();
            let Some(inner) = this.inner.as_mut().as_pin_mut() else {
                return Poll::Ready(Err(DeadlineExceeded::new().into()));
            };
            // The inner call first: a response that is ready wins even at the deadline.
            if let Poll::Ready(out) = inner.poll(cx) {
                return Poll::Ready(out.map_err(Into::into));
            }
            ready!(this.sleep.poll_elapsed(cx));
            // Out of time: drop the inner future now, cancelling its work.
            this.inner.set(None);
            tracing::debug!(target: "palisade::deadline", "deadline exceeded: call cancelled");
            Poll::Ready(Err(DeadlineExceeded::new().into()))
        }
    }
}
