//! Answering rejections as HTTP or gRPC responses, for servers: the one response layer.
//!
//! axum and hyper want services whose error is `Infallible`; a Palisade layer fails with a
//! `BoxError`. [`RejectionResponseLayer`] sits outside the policies and turns each error
//! into a response:
//!
//! - a Palisade rejection ([`find_rejection`]) becomes its status: 429 for
//!   [`RateLimited`](crate::RateLimited), 504 for a deadline or timeout, 503 otherwise,
//!   with `Retry-After` in whole seconds, rounded up (never 0 when a wait is needed:
//!   [`retry_after_secs`]);
//! - for a gRPC request ([`is_grpc`]: `content-type: application/grpc…`) it is a
//!   trailers-only response instead: HTTP 200 with `grpc-status` (`RESOURCE_EXHAUSTED`,
//!   `DEADLINE_EXCEEDED`, `UNAVAILABLE`), `grpc-message`, and `grpc-retry-pushback-ms`
//!   when a wait is known (rounded up: [`pushback_ms`]);
//! - any other error becomes 500 (gRPC `UNKNOWN`) and is logged at `debug`; its text is
//!   not sent to the client.
//!
//! An error from the inner service's `poll_ready` is answered to the next request the
//! same way; that request never reaches the (unready) inner service.
//!
//! Options:
//! - **Bodies**: by default a short `text/plain` body (`503 Service Unavailable: service
//!   overloaded`); [`problem_json`](RejectionResponseLayer::problem_json) answers RFC 9457
//!   `application/problem+json`; [`empty_body`](RejectionResponseLayer::empty_body) sends
//!   none (for body types without `From<String>`); [`body`](RejectionResponseLayer::body)
//!   takes your own. gRPC answers are always trailers-only (no body).
//! - **Rate-limit fields** (IETF `RateLimit` / `RateLimit-Policy`):
//!   [`rate_limit_policy`](RejectionResponseLayer::rate_limit_policy) adds
//!   `RateLimit-Policy: "default";q=<burst>;w=<window>` and, on 429s,
//!   `RateLimit: "default";r=0;t=<seconds>`;
//!   [`rate_limit_status`](RejectionResponseLayer::rate_limit_status) also puts the live
//!   `RateLimit` field on *successful* responses (`palisade-rate` provides both from a
//!   quota and a limiter).
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
//! assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
//! assert_eq!(res.body(), "429 Too Many Requests: rate limit exceeded (retry after 1.5s)\n");
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{find_rejection, Rejection};
use crate::BoxError;

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// A rate limit's policy, for the `RateLimit-Policy` field: `burst` requests per
/// `window` (GCRA's window is the time to earn the whole burst back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// The quota: requests allowed in one window (`q`).
    pub burst: u64,
    /// The window (`w`, in whole seconds, rounded up, at least 1).
    pub window: Duration,
}

/// A rate limit's live state, for the `RateLimit` field of a successful response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Requests that would be admitted now (`r`).
    pub remaining: u64,
    /// Time until the quota is whole again (`t`, whole seconds rounded up).
    pub reset: Duration,
}

type StatusSource = Arc<dyn Fn() -> RateLimitStatus + Send + Sync>;

/// What a rejection response says, for a [`RejectionBody`].
#[derive(Debug, Clone, Copy)]
pub struct Rejected<'a> {
    /// The HTTP status being answered.
    pub status: StatusCode,
    /// The Palisade rejection, if the error was one (`None`: an internal error).
    pub rejection: Option<Rejection<'a>>,
    /// A short, client-safe description (`"service overloaded"`, `"internal error"`).
    pub detail: &'a str,
}

/// Makes the body of an HTTP rejection response: `Some((content_type, body))`, or `None`
/// for no body (the body type's `Default`). Closures of that shape are bodies too.
pub trait RejectionBody<B> {
    /// The body for `rejected`.
    fn body(&self, rejected: &Rejected<'_>) -> Option<(HeaderValue, B)>;
}

impl<F, B> RejectionBody<B> for F
where
    F: Fn(&Rejected<'_>) -> Option<(HeaderValue, B)>,
{
    fn body(&self, rejected: &Rejected<'_>) -> Option<(HeaderValue, B)> {
        self(rejected)
    }
}

/// The default body: one line of `text/plain` (`503 Service Unavailable: service overloaded`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TextBody;

impl<B: From<String>> RejectionBody<B> for TextBody {
    fn body(&self, r: &Rejected<'_>) -> Option<(HeaderValue, B)> {
        let text = format!("{}: {}\n", r.status, r.detail);
        Some((
            HeaderValue::from_static("text/plain; charset=utf-8"),
            B::from(text),
        ))
    }
}

/// An RFC 9457 problem document (`application/problem+json`) with `type`, `title`,
/// `status` and `detail`, plus `retry_after` (seconds) when a wait is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemJson;

impl<B: From<String>> RejectionBody<B> for ProblemJson {
    fn body(&self, r: &Rejected<'_>) -> Option<(HeaderValue, B)> {
        let mut json = format!(
            r#"{{"type":"about:blank","title":"{}","status":{},"detail":"{}""#,
            json_escape(r.status.canonical_reason().unwrap_or("Error")),
            r.status.as_u16(),
            json_escape(r.detail),
        );
        if let Some(wait) = r.rejection.and_then(|r| r.retry_after()) {
            json.push_str(&format!(r#","retry_after":{}"#, retry_after_secs(wait)));
        }
        json.push('}');
        Some((
            HeaderValue::from_static("application/problem+json"),
            B::from(json),
        ))
    }
}

/// No body (the body type's `Default`), for body types without `From<String>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyBody;

impl<B> RejectionBody<B> for EmptyBody {
    fn body(&self, _: &Rejected<'_>) -> Option<(HeaderValue, B)> {
        None
    }
}

/// Turns errors into responses; see the [module docs](self).
#[derive(Clone)]
pub struct RejectionResponseLayer<M = TextBody> {
    body: M,
    policy: Option<RateLimitPolicy>,
    status: Option<StatusSource>,
}

impl<M: fmt::Debug> fmt::Debug for RejectionResponseLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectionResponseLayer")
            .field("body", &self.body)
            .field("policy", &self.policy)
            .field("status", &self.status.is_some())
            .finish()
    }
}

impl Default for RejectionResponseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RejectionResponseLayer {
    /// The layer, with short text bodies and no rate-limit fields.
    pub const fn new() -> Self {
        Self {
            body: TextBody,
            policy: None,
            status: None,
        }
    }
}

impl<M> RejectionResponseLayer<M> {
    /// Answers HTTP rejections with `body` instead (a [`RejectionBody`], or a closure).
    pub fn body<M2>(self, body: M2) -> RejectionResponseLayer<M2> {
        RejectionResponseLayer {
            body,
            policy: self.policy,
            status: self.status,
        }
    }

    /// RFC 9457 `application/problem+json` bodies.
    pub fn problem_json(self) -> RejectionResponseLayer<ProblemJson> {
        self.body(ProblemJson)
    }

    /// No bodies.
    pub fn empty_body(self) -> RejectionResponseLayer<EmptyBody> {
        self.body(EmptyBody)
    }

    /// Adds `RateLimit-Policy` to 429s (and to successful responses when
    /// [`rate_limit_status`](Self::rate_limit_status) is set).
    #[must_use]
    pub fn rate_limit_policy(mut self, policy: RateLimitPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Adds the live `RateLimit` field (and `RateLimit-Policy`, if set) to successful
    /// HTTP responses, read from `status` after each call.
    #[must_use]
    pub fn rate_limit_status(
        mut self,
        status: impl Fn() -> RateLimitStatus + Send + Sync + 'static,
    ) -> Self {
        self.status = Some(Arc::new(status));
        self
    }
}

impl<S, M: Clone> Layer<S> for RejectionResponseLayer<M> {
    type Service = RejectionResponse<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        RejectionResponse {
            inner,
            failed: None,
            config: self.clone(),
        }
    }
}

/// Turns the inner service's errors into responses; see the [module docs](self).
pub struct RejectionResponse<S, M = TextBody> {
    inner: S,
    /// The inner service's readiness error, answered to the next request.
    failed: Option<BoxError>,
    config: RejectionResponseLayer<M>,
}

impl<S: Clone, M: Clone> Clone for RejectionResponse<S, M> {
    fn clone(&self) -> Self {
        // A readiness failure belongs to this instance's next call, not to its clones.
        Self {
            inner: self.inner.clone(),
            failed: None,
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, M: fmt::Debug> fmt::Debug for RejectionResponse<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectionResponse")
            .field("inner", &self.inner)
            .field("failed", &self.failed)
            .field("config", &self.config)
            .finish()
    }
}

// === impl RejectionResponse ===

impl<S> RejectionResponse<S> {
    /// Wraps `inner` with the default configuration.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            failed: None,
            config: RejectionResponseLayer::new(),
        }
    }
}

impl<S, M> RejectionResponse<S, M> {
    crate::inner_accessors!(S);
}

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for RejectionResponse<S, M>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    M: RejectionBody<ResBody> + Clone,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, M>;

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
        ResponseFuture {
            state,
            grpc,
            config: self.config.clone(),
        }
    }
}

pin_project! {
    /// Response future of [`RejectionResponse`].
    pub struct ResponseFuture<F, M = TextBody> {
        #[pin]
        state: State<F>,
        grpc: bool,
        config: RejectionResponseLayer<M>,
    }
}

impl<F, M: fmt::Debug> fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("grpc", &self.grpc)
            .finish_non_exhaustive()
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

impl<F, M, ResBody, E> Future for ResponseFuture<F, M>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    M: RejectionBody<ResBody>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let err = match this.state.project() {
            StateProj::Called { fut } => match ready!(fut.poll(cx)) {
                Ok(mut res) => {
                    if !*this.grpc {
                        if let Some(status) = &this.config.status {
                            rate_limit_fields(res.headers_mut(), this.config.policy, status());
                        }
                    }
                    return Poll::Ready(Ok(res));
                }
                Err(e) => e.into(),
            },
            StateProj::Failed { error } => error.take().expect("polled after completion"),
        };
        Poll::Ready(Ok(respond(&err, *this.grpc, this.config)))
    }
}

/// Whether a request is gRPC (`content-type: application/grpc`, `application/grpc+proto`,
/// …): the one check every Palisade server layer uses.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
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

/// `grpc-retry-pushback-ms` for a wait: whole milliseconds, rounded up.
pub fn pushback_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The response for `err` with no body: see the [module docs](self). `grpc` selects a
/// trailers-only gRPC response. (The layer adds bodies and rate-limit fields.)
pub fn error_response<B: Default>(err: &BoxError, grpc: bool) -> Response<B> {
    respond(err, grpc, &RejectionResponseLayer::new().empty_body())
}

fn respond<B: Default, M: RejectionBody<B>>(
    err: &BoxError,
    grpc: bool,
    config: &RejectionResponseLayer<M>,
) -> Response<B> {
    let rejection = find_rejection(err.as_ref());
    if rejection.is_none() {
        tracing::debug!(target: "palisade::response", error = %err, "inner service failed");
    }
    let detail = match rejection {
        Some(_) => err.to_string(),
        None => "internal error".to_owned(),
    };
    let retry_after = rejection.and_then(|r| r.retry_after());
    if grpc {
        let mut res = Response::new(B::default());
        let headers = res.headers_mut();
        let code = rejection.map_or(2, |r| r.grpc_code());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(GRPC_STATUS, HeaderValue::from(code));
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&detail)) {
            headers.insert(GRPC_MESSAGE, v);
        }
        if let Some(wait) = retry_after {
            headers.insert(GRPC_PUSHBACK, HeaderValue::from(pushback_ms(wait)));
        }
        return res;
    }
    let status = rejection.map_or(StatusCode::INTERNAL_SERVER_ERROR, |r| {
        StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    });
    let rejected = Rejected {
        status,
        rejection,
        detail: &detail,
    };
    let mut res = match config.body.body(&rejected) {
        Some((content_type, body)) => {
            let mut res = Response::new(body);
            res.headers_mut().insert(CONTENT_TYPE, content_type);
            res
        }
        None => Response::new(B::default()),
    };
    *res.status_mut() = status;
    let headers = res.headers_mut();
    if let Some(wait) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
    }
    if let Some(Rejection::RateLimited(_)) = rejection {
        let reset = retry_after.unwrap_or(Duration::ZERO);
        let status = RateLimitStatus {
            remaining: 0,
            reset,
        };
        rate_limit_fields(headers, config.policy, status);
    }
    res
}

/// Writes `RateLimit-Policy` (when known) and `RateLimit` (IETF httpapi draft).
fn rate_limit_fields(
    headers: &mut HeaderMap,
    policy: Option<RateLimitPolicy>,
    status: RateLimitStatus,
) {
    if let Some(p) = policy {
        let window = retry_after_secs(p.window).max(1);
        let text = format!("\"default\";q={};w={window}", p.burst);
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.insert(RATELIMIT_POLICY, v);
        }
    }
    let text = format!(
        "\"default\";r={};t={}",
        status.remaining,
        retry_after_secs(status.reset)
    );
    if let Ok(v) = HeaderValue::from_str(&text) {
        headers.insert(RATELIMIT, v);
    }
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

/// Escapes a string for a JSON string literal.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
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
    fn pushback_rounds_up() {
        assert_eq!(pushback_ms(Duration::from_micros(1500)), 2);
        assert_eq!(pushback_ms(Duration::from_millis(3)), 3);
        assert_eq!(pushback_ms(Duration::MAX), u64::MAX);
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
        let res: Response<String> = RejectionResponse::new(Broken2)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.body(), "503 Service Unavailable: service overloaded\n");
    }

    #[derive(Clone)]
    struct Broken2;
    impl Service<Request<()>> for Broken2 {
        type Response = Response<String>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<String>, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err(Box::new(Overloaded::new())))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            panic!("must not be called after failing readiness")
        }
    }

    #[test]
    fn bodies_text_problem_json_and_empty() {
        let err: BoxError = Box::new(crate::RateLimited::with_retry_after(Duration::from_secs(2)));
        let layer = RejectionResponseLayer::new().rate_limit_policy(RateLimitPolicy {
            burst: 10,
            window: Duration::from_secs(1),
        });
        let r: Response<String> = respond(&err, false, &layer);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=10;w=1");
        assert_eq!(r.headers()["ratelimit"], "\"default\";r=0;t=2");
        assert!(r
            .body()
            .starts_with("429 Too Many Requests: rate limit exceeded"));
        let r: Response<String> = respond(&err, false, &layer.clone().problem_json());
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(
            r.body(),
            r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"rate limit exceeded (retry after 2s)","retry_after":2}"#
        );
        let r: Response<String> = respond(&err, false, &layer.clone().empty_body());
        assert!(r.body().is_empty() && r.headers().get("content-type").is_none());
        // Internal errors never leak their text.
        let r: Response<String> = respond(&"db password wrong".into(), false, &layer);
        assert_eq!(r.body(), "500 Internal Server Error: internal error\n");
        // gRPC: trailers-only, whatever the body option.
        let r: Response<String> = respond(&err, true, &layer.problem_json());
        assert!(r.body().is_empty());
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(json_escape("a\"b\\\n"), "a\\\"b\\\\\\u000a");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rate_limit_fields_on_success() {
        use tower::ServiceExt;
        let svc = RejectionResponseLayer::new()
            .rate_limit_policy(RateLimitPolicy {
                burst: 5,
                window: Duration::from_secs(10),
            })
            .rate_limit_status(|| RateLimitStatus {
                remaining: 3,
                reset: Duration::from_millis(4500),
            })
            .layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, BoxError>(Response::new(String::from("ok")))
            }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["ratelimit"], "\"default\";r=3;t=5");
        assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=5;w=10");
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
