//! Inbound deadlines for HTTP and gRPC servers: [`ServerDeadlineLayer`].
//!
//! Reads the caller's budget from `grpc-timeout` (and/or an HTTP header in milliseconds),
//! clamps it to a configured maximum — an inbound `99999999H` must not hold a handler for
//! three millennia — and sets it as the request's [`Deadline`], where handlers and the
//! client stacks they call read it. At the deadline the handler's future is dropped
//! (cancelled) and the caller gets HTTP 504, or for a gRPC request a trailers-only response
//! with `grpc-status: 4` (`DEADLINE_EXCEEDED`; never `CANCELLED`). A request that arrives
//! with a zero budget is answered at once, without running the handler.
//!
//! Malformed headers are ignored (logged at `debug`): the request runs with the default
//! timeout, if one is set, or none. The service's error type is the inner one, so an axum
//! or tonic stack stays `Infallible`.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use palisade_deadline::ServerDeadlineLayer;
//! use std::time::Duration;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         ServerDeadlineLayer::new()
//!             .header(http::HeaderName::from_static("x-request-timeout-ms"))
//!             .max(Duration::from_secs(30))
//!             .default_timeout(Duration::from_secs(10)),
//!     );
//! ```
//!
//! [`Deadline`]: palisade_core::Deadline

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, Request, Response};
use palisade_core::observe::{CallSpan, Counter};
use palisade_core::response::error_response;
use palisade_core::{call_span, BoxError, Deadline, DeadlineExceeded, HasDeadline, SetDeadline};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::grpc_timeout;
use crate::timer::{Due, Race, Raced};

/// Sets inbound requests' deadlines and enforces them; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ServerDeadlineLayer {
    grpc: bool,
    header: Option<HeaderName>,
    max: Duration,
    default: Option<Duration>,
    name: std::sync::Arc<str>,
    expired: Counter,
}

impl Default for ServerDeadlineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerDeadlineLayer {
    /// Reads `grpc-timeout`; clamps to 60 s; no default timeout.
    pub fn new() -> Self {
        Self {
            grpc: true,
            header: None,
            max: Duration::from_secs(60),
            default: None,
            name: "".into(),
            expired: Counter::register(
                "palisade_decisions_total",
                "server_deadline",
                "",
                &[("decision", "expired")],
            ),
        }
    }

    /// Also reads the budget in milliseconds from `name` (used when `grpc-timeout` is
    /// absent or malformed).
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = Some(name);
        self
    }

    /// The instance name used in metrics labels (default `""`).
    #[must_use]
    pub fn name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
        let name: std::sync::Arc<str> = name.into();
        self.expired = Counter::register(
            "palisade_decisions_total",
            "server_deadline",
            &name,
            &[("decision", "expired")],
        );
        self.name = name;
        self
    }

    /// Whether to read `grpc-timeout` (default yes). It is read only on gRPC requests
    /// (`content-type: application/grpc…`): a plain HTTP request that happens to carry the
    /// header keeps its own budget rules (`header`, `default_timeout`).
    #[must_use]
    pub fn read_grpc_timeout(mut self, read: bool) -> Self {
        self.grpc = read;
        self
    }

    /// The longest budget a caller may ask for (default 60 s); longer ones are clamped.
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The budget of a request that brings none (default: none, so no deadline is set).
    /// Also clamped to [`max`](Self::max).
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default = Some(timeout);
        self
    }

    /// The caller's budget in `headers`, clamped; `None` if it brings none (or only
    /// malformed ones) and there is no default.
    fn budget(&self, headers: &HeaderMap, grpc: bool) -> Option<Duration> {
        let from_grpc = (self.grpc && grpc)
            .then(|| headers.get("grpc-timeout"))
            .flatten()
            .and_then(|v| match grpc_timeout::parse_header(v) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::debug!(target: "palisade::deadline", error = %e, "ignoring malformed grpc-timeout");
                    None
                }
            });
        let from_header = || {
            let v = headers.get(self.header.as_ref()?)?;
            let ms = v
                .to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok());
            if ms.is_none() {
                tracing::debug!(target: "palisade::deadline", "ignoring malformed timeout header");
            }
            ms.map(Duration::from_millis)
        };
        let asked = from_grpc.or_else(from_header).or(self.default)?;
        if asked > self.max {
            tracing::debug!(target: "palisade::deadline", ?asked, max = ?self.max, "inbound deadline clamped");
        }
        Some(asked.min(self.max))
    }
}

impl<S> Layer<S> for ServerDeadlineLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerDeadline {
            inner,
            config: std::sync::Arc::new(self.clone()),
        }
    }
}

/// Sets inbound requests' deadlines and enforces them; built by [`ServerDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct ServerDeadline<S> {
    inner: S,
    // Shared: servers clone the service for every request (one reference count, not the
    // name, header and counter each).
    config: std::sync::Arc<ServerDeadlineLayer>,
}

impl<S> ServerDeadline<S> {
    palisade_core::inner_accessors!(S);
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerDeadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let grpc = palisade_core::response::is_grpc(req.headers());
        let span =
            call_span!("palisade::deadline", "palisade.server_deadline", name = %self.config.name);
        let _scope = span.scope();
        let Some(budget) = self.config.budget(req.headers(), grpc) else {
            return future::ResponseFuture::unbounded(self.inner.call(req), grpc, span);
        };
        // One clock reading for the new deadline and the check that it has not passed.
        let now = Instant::now();
        let mut deadline = Deadline::after_from(now, budget);
        if let Some(existing) = req.deadline() {
            deadline = deadline.min(existing);
        }
        if deadline.instant() <= now {
            self.config.expired.increment(1);
            tracing::debug!(target: "palisade::deadline", "inbound deadline already passed: rejected");
            return future::ResponseFuture::expired(grpc, span);
        }
        req.set_deadline(deadline);
        future::ResponseFuture::bounded(
            self.inner.call(req),
            deadline.instant(),
            grpc,
            self.config.expired.clone(),
            span,
        )
    }
}

/// Response future of [`ServerDeadline`].
pub mod future {
    use super::*;

    pin_project! {
        /// Response future of [`ServerDeadline`](super::ServerDeadline).
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            // The handler against the inbound deadline (no timer without one).
            #[pin]
            race: Race<F>,
            grpc: bool,
            expired: Counter,
            span: CallSpan,
        }
    }

    impl<F> ResponseFuture<F> {
        pub(super) fn unbounded(inner: F, grpc: bool, span: CallSpan) -> Self {
            Self {
                race: Race::new(Some(inner), None),
                grpc,
                expired: Counter::noop(),
                span,
            }
        }

        pub(super) fn bounded(
            inner: F,
            at: Instant,
            grpc: bool,
            expired: Counter,
            span: CallSpan,
        ) -> Self {
            Self {
                race: Race::new(Some(inner), Some(Due::Deadline(at))),
                grpc,
                expired,
                span,
            }
        }

        pub(super) fn expired(grpc: bool, span: CallSpan) -> Self {
            Self {
                race: Race::new(None, None),
                grpc,
                expired: Counter::noop(),
                span,
            }
        }
    }

    impl<F, ResBody, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<Response<ResBody>, E>>,
        ResBody: Default,
    {
        type Output = Result<Response<ResBody>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let _entered = this.span.enter();
            match ready!(this.race.poll_race(cx)) {
                Raced::Done(out) => return Poll::Ready(out),
                // Out of time: the handler was cancelled; answer DEADLINE_EXCEEDED.
                Raced::OutOfTime {
                    in_flight: true, ..
                } => {
                    this.expired.increment(1);
                    tracing::debug!(target: "palisade::deadline", "handler exceeded the inbound deadline: cancelled");
                }
                Raced::OutOfTime {
                    in_flight: false, ..
                } => {}
            }
            let err: BoxError = DeadlineExceeded::new().into();
            Poll::Ready(Ok(error_response(&err, *this.grpc)))
        }
    }
}
