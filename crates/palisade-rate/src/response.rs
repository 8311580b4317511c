//! Rate-limit fields for core's one response layer (feature `http`).
//!
//! Rejections are answered by [`RejectionResponseLayer`] from `palisade-core`: a
//! [`RateLimited`](palisade_core::RateLimited) becomes `429 Too Many Requests` with
//! `Retry-After` rounded *up* (a 300µs wait is `1`, never `0`) and the IETF field
//! `RateLimit: "default";r=0;t=<seconds>`, or, for a gRPC request, a trailers-only
//! `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`. This module turns a quota and a
//! limiter into what that layer needs for the other fields:
//!
//! - [`policy`]: `RateLimit-Policy: "default";q=<burst>;w=<window s>` from a [`Quota`];
//! - [`status`]: the live `RateLimit` field on *successful* responses, from a
//!   [`Limiter`]'s remaining cells.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use axum::{routing::get, Router};
//! use palisade_core::response::RejectionResponseLayer;
//! use palisade_rate::{response, Quota, RateLimitLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
//! let limit = RateLimitLayer::new(quota);
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(
//!             RejectionResponseLayer::new()
//!                 .rate_limit_policy(response::policy(&quota))
//!                 .rate_limit_status(response::status(limit.limiter())),
//!         )
//!         .layer(limit),
//! );
//! let req = || http::Request::get("/").body(axum::body::Body::empty()).unwrap();
//! let ok = app.clone().oneshot(req()).await.unwrap();
//! assert_eq!(ok.status(), 200);
//! assert_eq!(ok.headers()["ratelimit"], "\"default\";r=0;t=1");
//! let res = app.oneshot(req()).await.unwrap();
//! assert_eq!(res.status(), 429);
//! assert_eq!(res.headers()["retry-after"], "1");
//! assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=1;w=1");
//! # }
//! ```
//!
//! [`RejectionResponseLayer`]: palisade_core::response::RejectionResponseLayer

use std::sync::Arc;

use governor::Quota;
use palisade_core::response::{RateLimitPolicy, RateLimitStatus};

use crate::limiter::Limiter;

/// The `RateLimit-Policy` of `quota`: its burst per the time to earn the burst back
/// (GCRA's window).
#[must_use]
pub fn policy(quota: &Quota) -> RateLimitPolicy {
    RateLimitPolicy {
        burst: u64::from(quota.burst_size().get()),
        window: quota.burst_size_replenished_in(),
    }
}

/// A live status source for successful responses: the cells `limiter` has now, and the
/// time until it is full again.
pub fn status(limiter: &Arc<Limiter>) -> impl Fn() -> RateLimitStatus + Send + Sync + 'static {
    let limiter = Arc::clone(limiter);
    move || {
        let remaining = limiter.remaining();
        let missing = limiter.burst().saturating_sub(remaining);
        RateLimitStatus {
            remaining: u64::from(remaining),
            reset: limiter.emission_interval().saturating_mul(missing),
        }
    }
}
