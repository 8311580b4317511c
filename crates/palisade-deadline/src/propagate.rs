//! Outbound deadline propagation for HTTP and gRPC clients: [`PropagateDeadlineLayer`].
//!
//! Writes the request's remaining budget, less a safety margin for the time the request
//! spends on the wire, into `grpc-timeout` (gRPC wire format, see [`grpc_timeout`]) and/or
//! an HTTP header in milliseconds, so the next hop can stop working when the caller stops
//! waiting. A request with no [`Deadline`] passes unchanged; one with no budget left after
//! the margin fails at once with [`DeadlineExceeded`] rather than be sent.
//!
//! Put it innermost in a client stack (just above the HTTP client), so each attempt carries
//! the budget left when *it* is sent.
//!
//! # Example
//!
//! ```
//! use palisade_core::BoxError;
//! use palisade_deadline::{DeadlineLayer, PropagateDeadlineLayer};
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(2)))
//!     .layer(PropagateDeadlineLayer::grpc().safety_margin(Duration::from_millis(5)))
//!     .service(service_fn(|req: http::Request<()>| async move {
//!         Ok::<_, BoxError>(req.headers()["grpc-timeout"].clone())
//!     }));
//! let sent = svc.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(sent, "1995000u");
//! # }
//! ```
//!
//! [`Deadline`]: palisade_core::Deadline
//! [`grpc_timeout`]: crate::grpc_timeout

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request};
use palisade_core::{BoxError, DeadlineExceeded, HasDeadline};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::grpc_timeout;

/// Writes the remaining budget into outbound headers; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct PropagateDeadlineLayer {
    grpc: bool,
    header: Option<HeaderName>,
    margin: Duration,
}

impl PropagateDeadlineLayer {
    /// Writes `grpc-timeout`.
    pub const fn grpc() -> Self {
        Self {
            grpc: true,
            header: None,
            margin: Duration::ZERO,
        }
    }

    /// Writes the budget in whole milliseconds (rounded down) into `name`, e.g.
    /// `x-request-timeout-ms`.
    pub fn header(name: HeaderName) -> Self {
        Self {
            grpc: false,
            header: Some(name),
            margin: Duration::ZERO,
        }
    }

    /// Also writes `grpc-timeout`.
    #[must_use]
    pub fn with_grpc(mut self) -> Self {
        self.grpc = true;
        self
    }

    /// Also writes the budget in milliseconds into `name`.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName) -> Self {
        self.header = Some(name);
        self
    }

    /// Subtracts `margin` from the budget sent (default 0): time for the request to reach
    /// the next hop, and for its answer to come back.
    #[must_use]
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline {
            inner,
            config: self.clone(),
        }
    }
}

/// Writes the remaining budget into outbound headers; built by [`PropagateDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct PropagateDeadline<S> {
    inner: S,
    config: PropagateDeadlineLayer,
}

impl<S> PropagateDeadline<S> {
    palisade_core::inner_accessors!(S);
}

impl<S, B> Service<Request<B>> for PropagateDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(deadline) = req.deadline() {
            let budget = deadline.remaining().saturating_sub(self.config.margin);
            if budget.is_zero() {
                tracing::debug!(target: "palisade::deadline", "no budget left to send: rejected");
                return future::ResponseFuture { inner: None };
            }
            let headers = req.headers_mut();
            if self.config.grpc {
                headers.insert("grpc-timeout", grpc_timeout::encode_header(budget));
            }
            if let Some(name) = &self.config.header {
                let ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
                headers.insert(name.clone(), HeaderValue::from(ms));
            }
        }
        future::ResponseFuture {
            inner: Some(self.inner.call(req)),
        }
    }
}

/// Response future of [`PropagateDeadline`].
pub mod future {
    use super::*;

    pin_project! {
        /// Response future of [`PropagateDeadline`](super::PropagateDeadline).
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            // `None`: no budget was left; fail on first poll.
            #[pin]
            pub(super) inner: Option<F>,
        }
    }

    impl<F, T, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        type Output = Result<T, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project().inner.as_pin_mut() {
                Some(f) => f.poll(cx).map_err(Into::into),
                None => Poll::Ready(Err(DeadlineExceeded::new().into())),
            }
        }
    }
}
