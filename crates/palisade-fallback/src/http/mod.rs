//! HTTP presets (feature `http`): a static response, and a stale cache.
//!
//! [`StaticResponse`] answers a failed call with a fixed status, headers and body, built
//! afresh for each answer (an `http::Response` is not `Clone`). The body type is the inner
//! service's, made `From<Bytes>` (hyper's `Full<Bytes>`, axum's `Body`, or a
//! [`StaleBody`]).
//!
//! [`StaleCache`] remembers the last good response per `GET`/`HEAD` method + URI (bounded
//! in keys and body size, copied as the caller reads it) and serves it, marked with
//! `Warning` and `Age` headers, when a call fails; see [its module](stale).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use palisade_core::{BoxError, CircuitOpen};
//! use palisade_fallback::{http::StaticResponse, FallbackLayer, RejectionKind};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let degraded = StaticResponse::new(StatusCode::OK, Bytes::from_static(b"{\"items\":[]}"))
//!     .header(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::builder(degraded).on_rejections(&[RejectionKind::CircuitOpen]).build()?)
//!     .service(service_fn(|_: Request<()>| async {
//!         Err::<Response<Full<Bytes>>, BoxError>(Box::new(CircuitOpen::new()))
//!     }));
//! let res = svc.oneshot(Request::new(())).await?;
//! assert_eq!(res.headers()["content-type"], "application/json");
//! # Ok(()) }
//! ```

use std::future::{ready, Ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use palisade_core::BoxError;

use crate::fallback::{Failure, Fallback};

pub mod stale;

pub use self::stale::{Record, RecordFuture, RecordLayer, StaleBody, StaleCache, StaleKey};

/// Answers with a fixed response; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct StaticResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl StaticResponse {
    /// A response with `status` and `body`.
    pub fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    /// Adds a header to the response.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

impl<Req, B: From<Bytes>> Fallback<Req, Response<B>> for StaticResponse {
    type Saved = ();
    type Future = Ready<Result<Response<B>, BoxError>>;

    fn save(&self, _req: &Req) -> Self::Saved {}

    fn fallback(&self, _saved: (), _failure: &Failure<Response<B>>) -> Self::Future {
        let mut res = Response::new(B::from(self.body.clone()));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        ready(Ok(res))
    }
}
