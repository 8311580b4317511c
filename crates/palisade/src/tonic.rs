//! tonic glue: Palisade's rejections as `tonic::Status`, a deadline that expired as
//! `DEADLINE_EXCEEDED` whichever timer fired, and request bodies a tonic `Channel`
//! accepts after replay.
//!
//! - [`StatusLayer`] (outermost on a client stack, or
//!   [`ServiceBuilderExt::grpc_status`](crate::ServiceBuilderExt::grpc_status)): tonic
//!   turns any error it cannot read into `UNKNOWN`; this layer answers each Palisade
//!   rejection with its status instead — `UNAVAILABLE` for a shed (`Overloaded`) or an
//!   open breaker, `RESOURCE_EXHAUSTED` for a local rate limit, `DEADLINE_EXCEEDED` for a
//!   deadline or timeout — with `grpc-retry-pushback-ms` in the metadata when a wait is
//!   known. A `Channel` enforces `grpc-timeout` itself and fails with
//!   `CANCELLED "Timeout expired"` when its timer wins the race against Palisade's; this
//!   layer answers `DEADLINE_EXCEEDED` for that too, and for any error that arrives after
//!   the call's deadline (from the request's [`Deadline`](crate::Deadline) or its
//!   `grpc-timeout`), so the outcome does not depend on which timer fired first.
//! - [`TonicBodyLayer`] (innermost, just above the `Channel`): retries and hedges wrap
//!   request bodies for replay (`ReplayBody`); this turns any body back into
//!   `tonic::body::Body`, so a replaying stack needs no `map_request` glue.
//!
//! Server side, answer rejections with
//! [`RejectionResponseLayer`](crate::http::RejectionResponseLayer): gRPC requests get
//! trailers-only statuses with pushback.
//!
//! # Example
//!
//! ```
//! use palisade::{BoxError, Overloaded, ServiceBuilderExt};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .grpc_status()
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Err::<http::Response<()>, BoxError>(Box::new(Overloaded::new()))
//!     }));
//! let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
//! let status = tonic::Status::from_error(err);
//! assert_eq!(status.code(), tonic::Code::Unavailable);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::http::{Request, Response};
use ::tonic::{Code, Status};
use bytes::Bytes;
use palisade_core::{find_rejection, BoxError, HasDeadline, Rejection};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// Turns Palisade's rejections into `tonic::Status`; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusLayer {
    _priv: (),
}

impl StatusLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for StatusLayer {
    type Service = StatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusService { inner }
    }
}

/// The service of [`StatusLayer`].
#[derive(Debug, Clone)]
pub struct StatusService<S> {
    inner: S,
}

impl<S> StatusService<S> {
    palisade_core::inner_accessors!(S);
}

impl<S, B, ResB> Service<Request<B>> for StatusService<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| to_status(e.into(), None))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The call's deadline, as whichever layer below will see it: the request's own, or
        // the budget its `grpc-timeout` header gives (tonic's `Request::set_timeout`).
        let deadline = req.deadline().map(|d| d.instant()).or_else(|| {
            let v = req.headers().get("grpc-timeout")?;
            let d = crate::deadline::grpc_timeout::parse_header(v).ok()?;
            Some(palisade_core::time::from_now(d))
        });
        future::ResponseFuture {
            inner: self.inner.call(req),
            deadline,
        }
    }
}

/// The status for `err`: a Palisade rejection's, `DEADLINE_EXCEEDED` for tonic's own
/// timeout or any error after `deadline`, or `err` itself, untouched.
fn to_status(err: BoxError, deadline: Option<Instant>) -> BoxError {
    let err = match err.downcast::<Status>() {
        Ok(status) => {
            // tonic's own grpc-timeout enforcement, or anything cancelled after the
            // deadline: the deadline's doing.
            let late = deadline.is_some_and(|d| Instant::now() >= d);
            let timed_out = deadline.is_some() && status.message() == TONIC_TIMEOUT;
            if (late || timed_out) && matches!(status.code(), Code::Cancelled | Code::Unknown) {
                return Box::new(Status::deadline_exceeded(status.message().to_owned()));
            }
            return status;
        }
        Err(err) => err,
    };
    // A Channel enforcing the call's grpc-timeout (it wraps the error in its own
    // transport error): that timeout is the deadline, so it is DEADLINE_EXCEEDED.
    if in_chain::<::tonic::TimeoutExpired>(err.as_ref()) {
        return Box::new(Status::deadline_exceeded(
            "deadline exceeded (grpc-timeout)",
        ));
    }
    let status = match find_rejection(err.as_ref()) {
        Some(Rejection::RateLimited(r)) => {
            Some((Status::resource_exhausted(r.to_string()), r.retry_after()))
        }
        Some(Rejection::Overloaded(r)) => {
            Some((Status::unavailable(r.to_string()), r.retry_after()))
        }
        Some(Rejection::CircuitOpen(r)) => {
            Some((Status::unavailable(r.to_string()), r.retry_after()))
        }
        Some(Rejection::DeadlineExceeded(r)) => {
            Some((Status::deadline_exceeded(r.to_string()), None))
        }
        Some(Rejection::Elapsed(r)) => Some((Status::deadline_exceeded(r.to_string()), None)),
        _ => None,
    };
    match status {
        Some((mut status, wait)) => {
            if let Some(wait) = wait {
                let ms = palisade_core::response::pushback_ms(wait);
                if let Ok(v) = ms.to_string().parse() {
                    status.metadata_mut().insert("grpc-retry-pushback-ms", v);
                }
            }
            Box::new(status)
        }
        None if deadline.is_some_and(|d| Instant::now() >= d) => {
            // Any other error once the deadline has passed (a transport error from a
            // cancelled stream, say) is the deadline's doing.
            Box::new(Status::deadline_exceeded(format!(
                "deadline exceeded: {err}"
            )))
        }
        None => err,
    }
}

/// tonic's message when its grpc-timeout enforcement fires (client or server side).
const TONIC_TIMEOUT: &str = "Timeout expired";
/// The same, percent-encoded as `grpc-message` carries it.
const TONIC_TIMEOUT_ENCODED: &str = "Timeout%20expired";

/// Whether `err` or any error in its `source()` chain is an `E`.
fn in_chain<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The response future of [`StatusService`].
pub mod future {
    use super::*;

    pin_project_lite::pin_project! {
        /// The inner future; its error mapped to a `tonic::Status` where it is one of
        /// Palisade's.
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            #[pin]
            pub(super) inner: F,
            pub(super) deadline: Option<Instant>,
        }
    }

    impl<F, B, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
        E: Into<BoxError>,
    {
        type Output = Result<Response<B>, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let res = ready!(this.inner.poll(cx));
            let deadline = *this.deadline;
            Poll::Ready(match res {
                Ok(mut res) => {
                    // A tonic *server* enforcing the propagated grpc-timeout answers a
                    // trailers-only CANCELLED "Timeout expired": the same deadline, so the
                    // same code as when the client's timer fires first.
                    if deadline.is_some() && is_server_timeout(res.headers()) {
                        res.headers_mut()
                            .insert("grpc-status", http::HeaderValue::from_static("4"));
                    }
                    Ok(res)
                }
                Err(e) => Err(to_status(e.into(), deadline)),
            })
        }
    }

    fn is_server_timeout(headers: &http::HeaderMap) -> bool {
        headers.get("grpc-status").is_some_and(|v| v == "1")
            && headers
                .get("grpc-message")
                .is_some_and(|v| v == TONIC_TIMEOUT_ENCODED)
    }
}

/// Turns any request body into `tonic::body::Body`, for the bottom of a stack over a
/// tonic `Channel` whose layers wrap bodies (replay for retries and hedges).
#[derive(Debug, Clone, Copy, Default)]
pub struct TonicBodyLayer {
    _priv: (),
}

impl TonicBodyLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for TonicBodyLayer {
    type Service = TonicBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TonicBody { inner }
    }
}

/// The service of [`TonicBodyLayer`].
#[derive(Debug, Clone)]
pub struct TonicBody<S> {
    inner: S,
}

impl<S> TonicBody<S> {
    palisade_core::inner_accessors!(S);
}

impl<S, B> Service<Request<B>> for TonicBody<S>
where
    S: Service<Request<::tonic::body::Body>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req.map(::tonic::body::Body::new))
    }
}
