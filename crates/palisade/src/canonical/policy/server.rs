//! [`ServerPolicy`]: an HTTP or gRPC server's stack as data.

use std::time::Duration;

use ::http::{HeaderName, HeaderValue};
use tower::util::Either;
use tower_layer::Layer;

use super::{config_struct, maybe, positive, ConcurrencyPolicy, InvalidPolicy, RatePolicy};
use crate::deadline::{ServerDeadline, ServerDeadlineLayer};
use crate::http::response::{
    ProblemJson, Rejected, RejectionBody, RejectionResponse, RejectionResponseLayer, TextBody,
};
use crate::limit::{ConcurrencyLimit, ConcurrencyLimitLayer};
use crate::rate::{RateLimit, RateLimitLayer};
use crate::BoxErrors;

config_struct! {
    /// A server's stack as data, outermost first:
    ///
    /// ```text
    /// responses → deadline → rate_limit → concurrency → your handler
    /// ```
    ///
    /// Rejections become 429/503/504 (or trailers-only gRPC statuses, with pushback), so
    /// the stack stays `Infallible` for axum and tonic; the deadline reads the caller's
    /// budget (`grpc-timeout` on gRPC requests, a milliseconds header if named) and clamps
    /// it; the limits shed what exceeds them.
    ///
    /// # Example
    ///
    /// ```
    /// # #[cfg(feature = "config")] {
    /// use palisade::{BoxError, ServerPolicy};
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    ///
    /// let policy = ServerPolicy::from_yaml("
    /// rate_limit: { requests: 1, per: 1m }
    /// responses: { body: problem_json }
    /// ")?;
    /// let svc = ServiceBuilder::new()
    ///     .layer(policy.layer()?)
    ///     .service(service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, BoxError>(http::Response::new(String::from("hello")))
    ///     }));
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use tower::Service;
    /// let mut svc = svc;
    /// let ok = svc.ready().await.unwrap().call(http::Request::new(String::new())).await.unwrap();
    /// assert_eq!(ok.status(), 200);
    /// let shed = svc.ready().await.unwrap().call(http::Request::new(String::new())).await.unwrap();
    /// assert_eq!(shed.status(), 429);
    /// assert_eq!(shed.headers()["content-type"], "application/problem+json");
    /// # });
    /// # }
    /// # Ok::<(), palisade::InvalidPolicy>(())
    /// ```
    pub struct ServerPolicy {
        /// The instance name in metrics labels (default `""`).
        pub name: String,
        /// How rejections are answered.
        pub responses: ResponsesPolicy,
        /// The caller's deadline, read and enforced.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub deadline: Option<ServerDeadlinePolicy>,
        /// A rate limit over every request.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub rate_limit: Option<RatePolicy>,
        /// A concurrency limit over every request.
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub concurrency: Option<ConcurrencyPolicy>,
    }
}

impl Default for ServerPolicy {
    /// Text rejection bodies and no policy layer.
    fn default() -> Self {
        Self {
            name: String::new(),
            responses: ResponsesPolicy::default(),
            deadline: None,
            rate_limit: None,
            concurrency: None,
        }
    }
}

config_struct! {
    /// How rejections are answered (`[responses]`).
    pub struct ResponsesPolicy {
        /// `"text"` (default: one `text/plain` line), `"problem_json"` (RFC 9457) or
        /// `"empty"`. gRPC rejections are always trailers-only.
        pub body: String,
        /// Put the IETF `RateLimit` / `RateLimit-Policy` fields on successful responses
        /// too, not only on 429s (default false; needs `rate_limit`).
        pub rate_limit_fields: bool,
    }
}

impl Default for ResponsesPolicy {
    fn default() -> Self {
        Self {
            body: "text".to_owned(),
            rate_limit_fields: false,
        }
    }
}

config_struct! {
    /// The caller's deadline (`[deadline]`).
    pub struct ServerDeadlinePolicy {
        /// The longest budget a caller may ask for; longer ones are clamped (default 60 s).
        #[cfg_attr(feature = "config", serde(with = "super::duration"))]
        pub max: Duration,
        /// The budget of a request that brings none (default: none).
        #[cfg_attr(feature = "config", serde(with = "super::duration::option", skip_serializing_if = "Option::is_none"))]
        pub default: Option<Duration>,
        /// A header carrying the budget in milliseconds, for HTTP callers (e.g.
        /// `x-timeout-ms`).
        #[cfg_attr(feature = "config", serde(skip_serializing_if = "Option::is_none"))]
        pub header: Option<String>,
    }
}

impl Default for ServerDeadlinePolicy {
    fn default() -> Self {
        Self {
            max: Duration::from_secs(60),
            default: None,
            header: None,
        }
    }
}

/// The body a [`ServerPolicy`] chose for rejection responses.
#[derive(Debug, Clone, Copy)]
pub enum ConfiguredBody {
    /// One `text/plain` line.
    Text,
    /// An RFC 9457 problem document.
    ProblemJson,
    /// No body.
    Empty,
}

impl<B: From<String>> RejectionBody<B> for ConfiguredBody {
    fn body(&self, rejected: &Rejected<'_>) -> Option<(HeaderValue, B)> {
        match self {
            ConfiguredBody::Text => TextBody.body(rejected),
            ConfiguredBody::ProblemJson => ProblemJson.body(rejected),
            ConfiguredBody::Empty => None,
        }
    }
}

impl ServerPolicy {
    /// Checks every field and builds the stack.
    ///
    /// # Errors
    /// The first invalid field, by path.
    pub fn layer(&self) -> Result<ServerStackLayer, InvalidPolicy> {
        let name = self.name.as_str();
        let body = match self.responses.body.as_str() {
            "text" => ConfiguredBody::Text,
            "problem_json" => ConfiguredBody::ProblemJson,
            "empty" => ConfiguredBody::Empty,
            other => {
                return Err(InvalidPolicy::field(
                    "responses.body",
                    format_args!("must be \"text\", \"problem_json\" or \"empty\", got {other:?}"),
                ))
            }
        };
        let mut responses = RejectionResponseLayer::new().body(body);
        let deadline = match &self.deadline {
            None => None,
            Some(d) => {
                positive("deadline.max".to_owned(), d.max)?;
                let mut layer = ServerDeadlineLayer::new().name(name).max(d.max);
                if let Some(t) = d.default {
                    layer = layer.default_timeout(t);
                }
                if let Some(h) = &d.header {
                    let name = HeaderName::try_from(h.as_str()).map_err(|_| {
                        InvalidPolicy::field(
                            "deadline.header",
                            format_args!("not a header name: {h:?}"),
                        )
                    })?;
                    layer = layer.header(name);
                }
                Some(layer)
            }
        };
        let rate_limit = match &self.rate_limit {
            None => {
                if self.responses.rate_limit_fields {
                    return Err(InvalidPolicy::field(
                        "responses.rate_limit_fields",
                        "needs a rate_limit section",
                    ));
                }
                None
            }
            Some(r) => {
                let quota = r.quota("rate_limit")?;
                let layer = r.layer("rate_limit", name)?;
                responses = responses.rate_limit_policy(crate::rate::response::policy(&quota));
                if self.responses.rate_limit_fields {
                    responses =
                        responses.rate_limit_status(crate::rate::response::status(layer.limiter()));
                }
                Some(layer)
            }
        };
        let concurrency = self
            .concurrency
            .as_ref()
            .map(|c| c.layer("concurrency", name))
            .transpose()?;
        Ok(ServerStackLayer {
            responses,
            deadline,
            rate_limit,
            concurrency,
        })
    }
}

/// The layers a [`ServerPolicy`] switched on, applied in order. Its services answer every
/// rejection as a response: their error is `Infallible`.
#[derive(Debug, Clone)]
pub struct ServerStackLayer {
    responses: RejectionResponseLayer<ConfiguredBody>,
    deadline: Option<ServerDeadlineLayer>,
    rate_limit: Option<RateLimitLayer>,
    concurrency: Option<ConcurrencyLimitLayer>,
}

impl ServerStackLayer {
    /// The rate limit, if on.
    pub fn rate_limit(&self) -> Option<&RateLimitLayer> {
        self.rate_limit.as_ref()
    }

    /// The concurrency limit, if on (for its [`handle`](ConcurrencyLimitLayer::handle)).
    pub fn concurrency(&self) -> Option<&ConcurrencyLimitLayer> {
        self.concurrency.as_ref()
    }
}

type U1<S> = Either<ConcurrencyLimit<BoxErrors<S>>, BoxErrors<S>>;
type U2<S> = Either<RateLimit<U1<S>>, U1<S>>;
type U3<S> = Either<ServerDeadline<U2<S>>, U2<S>>;

/// The service a [`ServerStackLayer`] builds around `S`.
pub type ServerStack<S> = RejectionResponse<U3<S>, ConfiguredBody>;

impl<S> Layer<S> for ServerStackLayer {
    type Service = ServerStack<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let s = BoxErrors::new(inner);
        let s = maybe(&self.concurrency, s);
        let s = maybe(&self.rate_limit, s);
        let s = maybe(&self.deadline, s);
        self.responses.layer(s)
    }
}
