//! HTTP faults (feature `http`): status responses, gRPC `UNAVAILABLE`, aborted bodies, and a
//! misbehaving upstream.
//!
//! [`HttpFaultLayer`] (built with [`FaultBuilder::build_http`]) answers with responses
//! instead of errors, so its error type is the inner service's: on an axum `Router`
//! (`Infallible`) it goes straight into `Router::layer`. Its faults:
//!
//! - [`unavailable`](FaultBuilder::unavailable): `503` with `Retry-After`, and
//!   [`too_many_requests`](FaultBuilder::too_many_requests): `429` with `Retry-After`
//!   (whole seconds, rounded up);
//! - [`status`](FaultBuilder::status): any status code, empty body;
//! - [`grpc_unavailable`](FaultBuilder::grpc_unavailable): a trailers-only gRPC response
//!   (HTTP 200, `content-type: application/grpc`, `grpc-status: 14`), which tonic clients
//!   read as `Code::Unavailable`;
//! - [`abort`](FaultBuilder::abort): the inner service answers, and the response body fails
//!   with [`Aborted`] on its first frame. On a server, hyper then closes the connection
//!   without a complete response (HTTP/1 writes the head with the first frame, so the
//!   client usually sees the connection close before any byte); on a client, reading the
//!   body fails;
//! - [`stall`](FaultBuilder::stall) and [`latency`](FaultBuilder::latency), as on the
//!   generic layer.
//!
//! [`FaultService`] is the layer over an [`Upstream`] that always answers one configured
//! response: a standalone misbehaving upstream for tests and the policy lab.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, StatusCode};
//! use palisade_fault::{FaultLayer, Upstream};
//! use tower::{Layer, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_fault::InvalidFault> {
//! // Every call answers 503 with Retry-After: 2.
//! let faults = FaultLayer::builder()
//!     .unavailable(1.0, Some(Duration::from_secs(2)))
//!     .build_http()?;
//! let upstream = ServiceBuilder::new().layer(faults.clone()).service(Upstream::ok("hello"));
//! let res = upstream.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(res.headers()["retry-after"], "2");
//!
//! // The outage ends: the same upstream answers 200.
//! faults.handle().set_enabled(false);
//! let res = faults.layer(Upstream::ok("hello")).oneshot(Request::new(())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::future::Delay;
use crate::layer::FaultBuilder;
use crate::plan::{FaultHandle, FaultKind, InvalidFault, Shared};
use crate::Aborted;

/// What the HTTP faults answer with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpPayload {
    unavailable_after: Option<Duration>,
    too_many_after: Option<Duration>,
    status: StatusCode,
}

impl Default for HttpPayload {
    fn default() -> Self {
        Self {
            unavailable_after: None,
            too_many_after: None,
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl HttpPayload {
    /// The response fault `kind` answers with, if it answers with one.
    fn response<B>(&self, kind: FaultKind) -> Option<Response<FaultBody<B>>> {
        let mut res = Response::new(FaultBody::empty());
        let retry_after = match kind {
            FaultKind::Unavailable => {
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                self.unavailable_after
            }
            FaultKind::TooManyRequests => {
                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                self.too_many_after
            }
            FaultKind::Status => {
                *res.status_mut() = self.status;
                None
            }
            FaultKind::GrpcUnavailable => {
                let headers = res.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                headers.insert("grpc-status", HeaderValue::from_static("14"));
                headers.insert("grpc-message", HeaderValue::from_static("injected%20fault"));
                None
            }
            _ => return None,
        };
        if let Some(wait) = retry_after {
            let secs = palisade_core::response::retry_after_secs(wait);
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        Some(res)
    }
}

// === impl FaultBuilder (HTTP faults) ===

impl FaultBuilder {
    /// Answers a fraction `rate` of calls with `503 Service Unavailable`, with
    /// `Retry-After` when `retry_after` is given (HTTP layer only).
    pub fn unavailable(mut self, rate: f64, retry_after: Option<Duration>) -> Self {
        self.plan.set(FaultKind::Unavailable, rate);
        self.http.unavailable_after = retry_after;
        self
    }

    /// Answers a fraction `rate` of calls with `429 Too Many Requests`, with `Retry-After`
    /// when `retry_after` is given (HTTP layer only).
    pub fn too_many_requests(mut self, rate: f64, retry_after: Option<Duration>) -> Self {
        self.plan.set(FaultKind::TooManyRequests, rate);
        self.http.too_many_after = retry_after;
        self
    }

    /// Answers a fraction `rate` of calls with `status` and an empty body (HTTP layer
    /// only).
    pub fn status(mut self, rate: f64, status: StatusCode) -> Self {
        self.plan.set(FaultKind::Status, rate);
        self.http.status = status;
        self
    }

    /// Answers a fraction `rate` of calls with a trailers-only gRPC `UNAVAILABLE` (HTTP
    /// layer only).
    pub fn grpc_unavailable(mut self, rate: f64) -> Self {
        self.plan.set(FaultKind::GrpcUnavailable, rate);
        self
    }

    /// Validates the plan and builds the HTTP layer.
    ///
    /// # Errors
    ///
    /// [`InvalidFault`] for a rate outside `[0, 1]`, rates adding up to more than 1, an
    /// invalid latency distribution, or a generic [`error`](FaultBuilder::error) fault
    /// (use [`status`](FaultBuilder::status) or [`abort`](FaultBuilder::abort)).
    pub fn build_http(self) -> Result<HttpFaultLayer, InvalidFault> {
        self.plan.check(|kind| kind != FaultKind::Error)?;
        Ok(HttpFaultLayer {
            shared: self.plan.into_shared(),
            payload: self.http,
        })
    }
}

/// Injects HTTP faults into every service it builds; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct HttpFaultLayer {
    shared: Arc<Shared>,
    payload: HttpPayload,
}

impl HttpFaultLayer {
    /// A handle to switch this layer's faults on and off and change their rates.
    pub fn handle(&self) -> FaultHandle {
        FaultHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A standalone misbehaving upstream: this layer over `upstream`.
    pub fn upstream(&self, upstream: Upstream) -> FaultService {
        self.layer(upstream)
    }
}

impl<S> Layer<S> for HttpFaultLayer {
    type Service = HttpFault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpFault {
            inner,
            layer: self.clone(),
        }
    }
}

/// Injects HTTP faults into calls to `S`; built by [`HttpFaultLayer`].
#[derive(Clone, Debug)]
pub struct HttpFault<S> {
    inner: S,
    layer: HttpFaultLayer,
}

impl<S> HttpFault<S> {
    palisade_core::inner_accessors!(S);
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpFault<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<FaultBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let decision = self.layer.shared.decide();
        let kind = match decision.fault {
            Some(FaultKind::Stall) => Kind::Stall,
            Some(FaultKind::Abort) => Kind::Abort {
                fut: self.inner.call(req),
            },
            Some(kind) => match self.layer.payload.response(kind) {
                // Answered here: the inner service never sees the request.
                Some(res) => Kind::Respond { res: Some(res) },
                None => Kind::Call {
                    fut: self.inner.call(req),
                },
            },
            None => Kind::Call {
                fut: self.inner.call(req),
            },
        };
        ResponseFuture {
            delay: Delay::new(decision.delay),
            kind,
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Call { #[pin] fut: F },
        Abort { #[pin] fut: F },
        Respond { res: Option<Response<FaultBody<B>>> },
        Stall,
    }
}

pin_project! {
    /// The response future of [`HttpFault`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        delay: Delay,
        #[pin]
        kind: Kind<F, B>,
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<FaultBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        std::task::ready!(this.delay.poll_done(cx));
        match this.kind.project() {
            KindProj::Call { fut } => fut.poll(cx).map_ok(|res| res.map(FaultBody::new)),
            KindProj::Abort { fut } => fut.poll(cx).map_ok(|res| {
                // Keep the head, lose the body: the length the inner service promised is
                // no longer true.
                let (mut parts, _body) = res.into_parts();
                parts.headers.remove(http::header::CONTENT_LENGTH);
                Response::from_parts(parts, FaultBody::aborted())
            }),
            KindProj::Respond { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                // Polled after completion: stay pending rather than panic.
                None => Poll::Pending,
            },
            // Never ready and never woken; dropping the future releases everything.
            KindProj::Stall => Poll::Pending,
        }
    }
}

pin_project! {
    /// The body of an [`HttpFault`] response: the inner body, an injected response's empty
    /// body, or an aborted body that fails with [`Aborted`].
    pub struct FaultBody<B> {
        #[pin]
        state: BodyState<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyState<B> {
        Inner { #[pin] body: B },
        Empty,
        Aborted { done: bool },
    }
}

impl<B> fmt::Debug for FaultBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultBody").finish_non_exhaustive()
    }
}

impl<B> FaultBody<B> {
    /// The inner service's body, untouched.
    pub fn new(body: B) -> Self {
        Self {
            state: BodyState::Inner { body },
        }
    }

    fn empty() -> Self {
        Self {
            state: BodyState::Empty,
        }
    }

    fn aborted() -> Self {
        Self {
            state: BodyState::Aborted { done: false },
        }
    }
}

impl<B> Body for FaultBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().state.project() {
            BodyProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            BodyProj::Empty => Poll::Ready(None),
            BodyProj::Aborted { done } => {
                if *done {
                    Poll::Ready(None)
                } else {
                    // A body error makes hyper reset the stream / close the connection.
                    *done = true;
                    Poll::Ready(Some(Err(Box::new(Aborted::new()))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            BodyState::Inner { body } => body.is_end_stream(),
            BodyState::Empty => true,
            BodyState::Aborted { done } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Inner { body } => body.size_hint(),
            BodyState::Empty => SizeHint::with_exact(0),
            BodyState::Aborted { .. } => SizeHint::default(),
        }
    }
}

/// An upstream that answers every request with one fixed response; under an
/// [`HttpFaultLayer`] it is a [`FaultService`].
#[derive(Clone, Debug)]
pub struct Upstream {
    status: StatusCode,
    body: Bytes,
}

impl Upstream {
    /// Answers `200 OK` with `body`.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self::new(StatusCode::OK, body)
    }

    /// Answers `status` with `body`.
    pub fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}

impl<B> Service<Request<B>> for Upstream {
    type Response = Response<Full>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        let mut res = Response::new(Full(Some(self.body.clone())));
        *res.status_mut() = self.status;
        ready(Ok(res))
    }
}

/// A one-frame body of [`Bytes`], the body of an [`Upstream`]'s responses.
#[derive(Debug, Clone)]
pub struct Full(Option<Bytes>);

impl Body for Full {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// A standalone misbehaving upstream: [`HttpFault`] over an [`Upstream`].
pub type FaultService = HttpFault<Upstream>;
