//! Rate-limit rejections as HTTP 429 or gRPC `RESOURCE_EXHAUSTED` (feature `http`).
//!
//! [`RateLimitResponseLayer`] turns the errors of the service below it into responses, so
//! the stack is `Infallible` as axum and hyper servers require:
//!
//! - a [`RateLimited`] error becomes `429 Too Many Requests` with `Retry-After` in
//!   delay-seconds, rounded *up* (a 300µs wait is `1`, never `0`), and the IETF draft
//!   fields `RateLimit-Policy: "default";q=<burst>;w=<window s>` (when the layer knows the
//!   quota) and `RateLimit: "default";r=0;t=<seconds>`; in gRPC mode it becomes a
//!   trailers-only response with `grpc-status: 8` (`RESOURCE_EXHAUSTED`) and
//!   `grpc-retry-pushback-ms` (rounded up);
//! - any other Palisade rejection ([`find_rejection`]) gets its own status (503/504 or its
//!   gRPC code), any other error `500` (gRPC `UNKNOWN`, 2).
//!
//! The functions [`too_many_requests`] and [`resource_exhausted`] build the same responses
//! for use in your own error handler (e.g. axum's `HandleErrorLayer`).
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use axum::{routing::get, Router};
//! use palisade_rate::response::RateLimitResponseLayer;
//! use palisade_rate::{Quota, RateLimitLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(RateLimitResponseLayer::http().quota(quota))
//!         .layer(RateLimitLayer::new(quota)),
//! );
//! let req = || http::Request::get("/").body(axum::body::Body::empty()).unwrap();
//! assert_eq!(app.clone().oneshot(req()).await.unwrap().status(), 200);
//! let res = app.oneshot(req()).await.unwrap();
//! assert_eq!(res.status(), 429);
//! assert_eq!(res.headers()["retry-after"], "1");
//! # }
//! ```

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use governor::Quota;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use palisade_core::{find_rejection, BoxError, RateLimited};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// Whole seconds for `Retry-After`, rounded up: any non-zero wait is at least 1.
#[must_use]
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Whole milliseconds for `grpc-retry-pushback-ms`, rounded up.
#[must_use]
pub fn pushback_millis(wait: Duration) -> u64 {
    let ms = wait.as_millis();
    let ms = ms + u128::from(!wait.as_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A `429 Too Many Requests` for `error`, with `Retry-After` and the IETF `RateLimit`
/// fields (`RateLimit-Policy` only when `quota` is given).
#[must_use]
pub fn too_many_requests<B: Default>(error: &RateLimited, quota: Option<&Quota>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    let mut text = String::new();
    if let Some(quota) = quota {
        // GCRA's window: the time to earn the whole burst back.
        let window = retry_after_seconds(quota.burst_size_replenished_in()).max(1);
        let _ = write!(text, "\"default\";q={};w={window}", quota.burst_size());
        headers.insert(RATELIMIT_POLICY, header_value(&text));
    }
    if let Some(wait) = error.retry_after() {
        let seconds = retry_after_seconds(wait);
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        text.clear();
        let _ = write!(text, "\"default\";r=0;t={seconds}");
        headers.insert(RATELIMIT, header_value(&text));
    }
    response
}

/// A trailers-only gRPC response with `grpc-status` 8 (`RESOURCE_EXHAUSTED`) and, when
/// the wait is known, `grpc-retry-pushback-ms`.
#[must_use]
pub fn resource_exhausted<B: Default>(error: &RateLimited) -> Response<B> {
    let mut response = grpc_status(8, "rate%20limited");
    if let Some(wait) = error.retry_after() {
        response
            .headers_mut()
            .insert(GRPC_PUSHBACK, HeaderValue::from(pushback_millis(wait)));
    }
    response
}

fn grpc_status<B: Default>(code: i32, message: &'static str) -> Response<B> {
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    headers.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
    response
}

/// Which protocol the responses speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http,
    Grpc,
}

/// Turns errors into responses; see the [module docs](crate::response).
#[derive(Clone, Copy, Debug)]
pub struct RateLimitResponseLayer {
    protocol: Protocol,
    quota: Option<Quota>,
}

// === impl RateLimitResponseLayer ===

impl RateLimitResponseLayer {
    /// Answer with HTTP statuses (429 for rate limits).
    #[must_use]
    pub const fn http() -> Self {
        Self {
            protocol: Protocol::Http,
            quota: None,
        }
    }

    /// Answer with gRPC statuses (`RESOURCE_EXHAUSTED` for rate limits).
    #[must_use]
    pub const fn grpc() -> Self {
        Self {
            protocol: Protocol::Grpc,
            quota: None,
        }
    }

    /// Advertise `quota` in `RateLimit-Policy` (HTTP only).
    #[must_use]
    pub const fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }
}

impl<S> Layer<S> for RateLimitResponseLayer {
    type Service = RateLimitResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitResponse {
            inner,
            protocol: self.protocol,
            quota: self.quota,
        }
    }
}

/// A service whose errors are answered as responses; built by [`RateLimitResponseLayer`].
#[derive(Clone, Copy, Debug)]
pub struct RateLimitResponse<S> {
    inner: S,
    protocol: Protocol,
    quota: Option<Quota>,
}

// === impl RateLimitResponse ===

impl<S> RateLimitResponse<S> {
    crate::accessors!();
}

impl<S, Request, B> Service<Request> for RateLimitResponse<S>
where
    S: Service<Request, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An inner readiness error cannot be answered here (there is no request yet): keep
        // it for the next call, which answers it.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
            protocol: self.protocol,
            quota: self.quota,
        }
    }
}

pin_project! {
    /// Response future of [`RateLimitResponse`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        protocol: Protocol,
        quota: Option<Quota>,
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let error: BoxError = match ready!(this.inner.poll(cx)) {
            Ok(response) => return Poll::Ready(Ok(response)),
            Err(error) => error.into(),
        };
        Poll::Ready(Ok(answer(&error, *this.protocol, this.quota.as_ref())))
    }
}

fn answer<B: Default>(error: &BoxError, protocol: Protocol, quota: Option<&Quota>) -> Response<B> {
    if let Some(limited) = error.downcast_ref::<RateLimited>() {
        return match protocol {
            Protocol::Http => too_many_requests(limited, quota),
            Protocol::Grpc => resource_exhausted(limited),
        };
    }
    let rejection = find_rejection(&**error as &(dyn std::error::Error + 'static));
    match protocol {
        Protocol::Http => {
            let mut response = Response::new(B::default());
            *response.status_mut() = rejection
                .and_then(|r| StatusCode::from_u16(r.http_status()).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Some(wait) = rejection.and_then(|r| r.retry_after()) {
                let seconds = retry_after_seconds(wait);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Protocol::Grpc => grpc_status(rejection.map_or(2, |r| r.grpc_code()), "rejected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_up_and_never_zero_for_a_wait() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 0);
        assert_eq!(retry_after_seconds(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_micros(300)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(pushback_millis(Duration::from_micros(300)), 1);
        assert_eq!(pushback_millis(Duration::from_micros(2000)), 2);
        assert_eq!(pushback_millis(Duration::from_micros(2001)), 3);
    }
}
