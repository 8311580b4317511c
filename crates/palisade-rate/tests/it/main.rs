//! Integration tests of palisade-rate.

mod keyed;
mod local;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "http")]
mod response;

use std::time::Duration;

use palisade_core::{BoxError, RateLimited};

/// The `retry_after` of a rate-limit rejection, panicking on anything else.
pub(crate) fn retry_after(err: &BoxError) -> Option<Duration> {
    err.downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("expected RateLimited, got {err}"))
        .retry_after()
}
