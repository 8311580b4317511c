//! The client's overall deadline: [`DeadlineLayer`].
//!
//! Sets the request's [`Deadline`] to the earlier of the one it already carries and
//! `now + timeout` (a layer may shorten a caller's deadline, never extend it), then fails the
//! call with [`DeadlineExceeded`](palisade_core::DeadlineExceeded) when it passes, dropping (cancelling) the inner future. A
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

use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{call_span, BoxError, Deadline, SetDeadline};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::timer::Due;

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

impl<S> ApplyDeadline<S> {
    palisade_core::inner_accessors!(S);
}

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
        // The deadline remembers how much was left at this reading, so the layers below
        // can rule out a retry or a hedge copy without reading the clock again.
        let ours = Deadline::after_from(now, self.timeout);
        let deadline = match req.deadline() {
            Some(theirs) if theirs < ours => Deadline::at_from(theirs.instant(), now),
            _ => ours,
        };
        let span = call_span!("palisade::deadline", "palisade.deadline");
        let _scope = span.scope();
        if deadline.instant() <= now {
            // Already out of time: don't start work nobody will wait for.
            tracing::debug!(target: "palisade::deadline", "deadline already passed: rejected");
            return future::ResponseFuture::new(None, None, span);
        }
        req.set_deadline(deadline);
        // The inner call is made inside the expression that builds the returned future,
        // so the compiler writes it in place instead of moving it (a profile showed two
        // copies of the whole nested future per call when it went through a local).
        future::ResponseFuture::new(
            Some(self.inner.call(req)),
            Some(Due::Deadline(deadline.instant())),
            span,
        )
    }
}

/// Response future of [`ApplyDeadline`]: the timeout layer's, failing with
/// [`DeadlineExceeded`](palisade_core::DeadlineExceeded).
pub mod future {
    pub use crate::timeout::future::ResponseFuture;
}
