//! Answering rejections as HTTP or gRPC responses, for servers.
//!
//! axum and hyper want services whose error is `Infallible`; a Palisade layer fails with a
//! `BoxError`. [`RejectionResponseLayer`] sits outside the policies and turns each error
//! into a response:
//!
//! - a Palisade rejection ([`find_rejection`]) becomes its status: 429 for
//!   [`RateLimited`](crate::RateLimited), 504 for a deadline or timeout, 503 otherwise,
//!   with `Retry-After` in whole seconds, rounded up (never 0 when a wait is needed);
//! - for a gRPC request (`content-type: application/grpc…`) it is a trailers-only response
//!   instead: HTTP 200 with `grpc-status` (`RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`,
//!   `UNAVAILABLE`), `grpc-message`, and `grpc-retry-pushback-ms` when a wait is known;
//! - any other error becomes 500 (gRPC `UNKNOWN`), and is logged at `debug`.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use palisade_core::{response::RejectionResponseLayer, BoxError, RateLimited};
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(RejectionResponseLayer::new())
//!     .service(service_fn(|_req: Request<()>| async {
//!         Err::<Response<String>, BoxError>(Box::new(RateLimited::with_retry_after(Duration::from_millis(1500))))
//!     }));
//! let res = svc.oneshot(Request::new(())).await.unwrap(); // Infallible
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers()["retry-after"], "2");
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::find_rejection;
use crate::BoxError;

/// Turns errors into responses; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectionResponseLayer {
    _priv: (),
}

impl RejectionResponseLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for RejectionResponseLayer {
    type Service = RejectionResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RejectionResponse::new(inner)
    }
}

/// Turns the inner service's errors into responses; see the [module docs](self).
#[derive(Debug)]
pub struct RejectionResponse<S> {
    inner: S,
    /// The inner service's readiness error, answered to the next request.
    failed: Option<BoxError>,
}

impl<S: Clone> Clone for RejectionResponse<S> {
    fn clone(&self) -> Self {
        // A readiness failure belongs to this instance's next call, not to its clones.
        Self::new(self.inner.clone())
    }
}

// === impl RejectionResponse ===

impl<S> RejectionResponse<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            failed: None,
        }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RejectionResponse<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        // There is no request to answer yet: keep the error for the next call, which gets
        // it as a response without reaching the (unready) inner service.
        if let Err(e) = ready!(self.inner.poll_ready(cx)) {
            self.failed = Some(e.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        let state = match self.failed.take() {
            Some(error) => State::Failed { error: Some(error) },
            None => State::Called {
                fut: self.inner.call(req),
            },
        };
        ResponseFuture { state, grpc }
    }
}

pin_project! {
    /// Response future of [`RejectionResponse`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        grpc: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // The inner service was called.
        Called { #[pin] fut: F },
        // The inner service failed readiness; answer with that error.
        Failed { error: Option<BoxError> },
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let err = match this.state.project() {
            StateProj::Called { fut } => match ready!(fut.poll(cx)) {
                Ok(res) => return Poll::Ready(Ok(res)),
                Err(e) => e.into(),
            },
            StateProj::Failed { error } => error.take().expect("polled after completion"),
        };
        Poll::Ready(Ok(error_response(&err, *this.grpc)))
    }
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `Retry-After` delay-seconds for a wait: whole seconds, rounded up, at least 1 when any
/// wait is needed.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs();
    if wait.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

/// The response for `err`: see the [module docs](self). `grpc` selects a trailers-only
/// gRPC response.
pub fn error_response<B: Default>(err: &BoxError, grpc: bool) -> Response<B> {
    let rejection = find_rejection(err.as_ref());
    if rejection.is_none() {
        tracing::debug!(target: "palisade::response", error = %err, "inner service failed");
    }
    let mut res = Response::new(B::default());
    let headers = res.headers_mut();
    let retry_after = rejection.and_then(|r| r.retry_after());
    if grpc {
        let code = rejection.map_or(2, |r| r.grpc_code());
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        let message = match rejection {
            Some(_) => err.to_string(),
            None => "internal error".to_owned(),
        };
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert("grpc-message", v);
        }
        if let Some(wait) = retry_after {
            let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            headers.insert("grpc-retry-pushback-ms", HeaderValue::from(ms));
        }
    } else {
        *res.status_mut() = rejection.map_or(StatusCode::INTERNAL_SERVER_ERROR, |r| {
            StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        });
        if let Some(wait) = retry_after {
            res.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
    }
    res
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII except `%` as is.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CircuitOpen, DeadlineExceeded, Overloaded};

    fn resp(err: BoxError, grpc: bool) -> Response<()> {
        error_response(&err, grpc)
    }

    #[test]
    fn http_statuses_and_retry_after() {
        let r = resp(Box::new(Overloaded::new()), false);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().get("retry-after").is_none());
        let r = resp(
            Box::new(CircuitOpen::with_retry_after(Duration::from_millis(1))),
            false,
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "1");
        let r = resp(Box::new(DeadlineExceeded::new()), false);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        let r = resp("disk on fire".into(), false);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn grpc_trailers_only() {
        let r = resp(
            Box::new(crate::RateLimited::with_retry_after(Duration::from_micros(
                2500,
            ))),
            true,
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "3");
        assert_eq!(
            r.headers()["grpc-message"],
            "rate limit exceeded (retry after 2.5ms)"
        );
        let r = resp(Box::new(DeadlineExceeded::new()), true);
        assert_eq!(r.headers()["grpc-status"], "4");
        let r = resp("boom".into(), true);
        assert_eq!(r.headers()["grpc-status"], "2");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn readiness_failure_answers_the_next_call() {
        use tower::ServiceExt;
        #[derive(Clone)]
        struct Broken;
        impl Service<Request<()>> for Broken {
            type Response = Response<()>;
            type Error = BoxError;
            type Future = std::future::Ready<Result<Response<()>, BoxError>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                Poll::Ready(Err(Box::new(Overloaded::new())))
            }
            fn call(&mut self, _: Request<()>) -> Self::Future {
                panic!("must not be called after failing readiness")
            }
        }
        let res = RejectionResponse::new(Broken)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn message_is_percent_encoded() {
        assert_eq!(percent_encode("a%b\né"), "a%25b%0A%C3%A9");
    }
}
