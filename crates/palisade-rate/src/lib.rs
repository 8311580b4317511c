//! Rate limiting for Tower services: a shared local GCRA limit, per-key (tenant) limits
//! with bounded memory, and (feature `redis`) a fleet-wide limit kept in Redis.
//!
//! - [`RateLimitLayer`] ([`local`]): one bucket per layer value, shared by every clone;
//!   reject at once or wait FIFO up to a bound and never past the request's deadline; cost
//!   weights by closure; exact `retry_after`.
//! - [`KeyedRateLimitLayer`] ([`keyed`]): a bucket per key extracted from the request, an
//!   optional global bucket on top, and a cap on live keys with inline eviction.
//! - `RedisRateLimitLayer` (`redis` module, feature `redis`): one atomic Lua GCRA script per
//!   decision on the Redis server's clock, fail-open or fail-closed, with a deny-cache.
//! - `response` (feature `http`): `RateLimit-Policy` and live `RateLimit` fields for
//!   palisade-core's one response layer (`RejectionResponseLayer`), which answers a
//!   rejection as HTTP 429 (`Retry-After`) or gRPC `RESOURCE_EXHAUSTED`
//!   (`grpc-retry-pushback-ms`), keeping an axum service `Infallible`.
//!
//! Quotas are governor's [`Quota`] (re-exported; `NonZero` by construction), or built with
//! [`quota`] which returns a typed error for bad input. Time is read through
//! [`TokioClock`], a governor clock over `tokio::time`, so every limiter honours paused
//! time in tests.
//!
//! Decisions are traced under the `palisade::rate` target (rejections at `debug`, Redis
//! failures at `warn`) and, with feature `metrics`, counted in `palisade_decisions_total`
//! (`policy` = `rate_limit` / `keyed_rate_limit`, `decision` = admitted / queued /
//! rejected); the Redis store also counts its round trips and failures
//! (`RedisStore::round_trips`, `RedisStore::failures`).
//!
//! Rejections are [`palisade_core::RateLimited`] errors, boxed in `BoxError`, with
//! `retry_after()` set to the exact wait (absent only when the request costs more than the
//! burst and can never pass).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod cost;
mod gcra;
mod limiter;

pub mod future;
pub mod keyed;
pub mod local;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "http")]
pub mod response;

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

pub use clock::TokioClock;
pub use cost::{Cost, UnitCost};
pub use governor::Quota;
pub use keyed::{KeyedRateLimit, KeyedRateLimitLayer};
pub use limiter::{Acquire, Limiter};
pub use local::{RateLimit, RateLimitLayer};

/// `cells` requests per `period`, all of which may come in one burst.
///
/// # Errors
/// [`InvalidQuota`] when `cells` is 0 or `period` is shorter than `cells` nanoseconds.
///
/// ```
/// use std::time::Duration;
/// let q = palisade_rate::quota(100, Duration::from_secs(60)).unwrap();
/// assert_eq!(q.burst_size().get(), 100);
/// assert!(palisade_rate::quota(0, Duration::from_secs(1)).is_err());
/// ```
pub fn quota(cells: u32, period: Duration) -> Result<Quota, InvalidQuota> {
    let cells = NonZeroU32::new(cells).ok_or(InvalidQuota::ZeroCells)?;
    if period.as_nanos() < u128::from(cells.get()) {
        return Err(InvalidQuota::PeriodTooShort);
    }
    Quota::with_period(period / cells.get())
        .map(|q| q.allow_burst(cells))
        .ok_or(InvalidQuota::PeriodTooShort)
}

/// Why [`quota`] refused its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidQuota {
    /// A quota must allow at least one cell.
    ZeroCells,
    /// The period must be at least one nanosecond per cell.
    PeriodTooShort,
}

impl fmt::Display for InvalidQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroCells => f.write_str("rate quota must allow at least one cell"),
            Self::PeriodTooShort => {
                f.write_str("rate quota period must be at least one nanosecond per cell")
            }
        }
    }
}

impl std::error::Error for InvalidQuota {}
