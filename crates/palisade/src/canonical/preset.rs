//! Presets: the stacks for common jobs, as [`ClientPolicy`] / [`ServerPolicy`](crate::ServerPolicy) values.
//!
//! A preset is data: change any field, then build it as any policy. Each documents its
//! numbers; they are starting points sized for a typical service, not measurements of
//! yours.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade::preset;
//!
//! let mut policy = preset::vendor_api();
//! policy.concurrency.as_mut().unwrap().max = 4; // the vendor's contract
//! policy.deadline = Some(Duration::from_secs(60));
//! let layer = policy.layer()?;
//! # let _ = layer;
//! # Ok::<(), palisade::InvalidPolicy>(())
//! ```

use std::time::Duration;

use crate::canonical::policy::{
    BackoffPolicy, BreakerPolicy, BudgetPolicy, ConcurrencyPolicy, RetryPolicy,
};
use crate::ClientPolicy;

/// An outbound HTTP client (build with [`ClientPolicy::http_layer`]): a 10 s deadline;
/// 3 attempts with exponential backoff from 100 ms (at most 2 s) inside the default budget
/// (20 % of requests plus 10/s), 429/503 `Retry-After` honoured up to 30 s; a breaker that
/// opens for 30 s at 50 % failures over the last 100 calls (at least 20); at most 256
/// calls in flight; 2 s per attempt.
pub fn http_client() -> ClientPolicy {
    ClientPolicy {
        name: "http_client".to_owned(),
        deadline: Some(Duration::from_secs(10)),
        retry: Some(RetryPolicy {
            backoff: BackoffPolicy {
                max: Duration::from_secs(2),
                ..BackoffPolicy::default()
            },
            ..RetryPolicy::default()
        }),
        breaker: Some(BreakerPolicy {
            minimum_calls: 20,
            ..BreakerPolicy::default()
        }),
        concurrency: Some(ConcurrencyPolicy {
            max: 256,
            ..ConcurrencyPolicy::default()
        }),
        attempt_timeout: Some(Duration::from_secs(2)),
        ..ClientPolicy::default()
    }
}

/// An outbound gRPC channel (build with [`ClientPolicy::grpc_layer`]): a 5 s deadline
/// (propagated as `grpc-timeout` when you add the propagation layer); 3 attempts from
/// 50 ms (at most 1 s) inside the default budget, `grpc-retry-pushback-ms` honoured; a
/// breaker at 50 % failures over 100 calls (at least 20), open 30 s; at most 1,024 calls in
/// flight; 1 s per attempt.
pub fn grpc_channel() -> ClientPolicy {
    ClientPolicy {
        name: "grpc_channel".to_owned(),
        deadline: Some(Duration::from_secs(5)),
        retry: Some(RetryPolicy {
            backoff: BackoffPolicy {
                base: Duration::from_millis(50),
                max: Duration::from_secs(1),
                ..BackoffPolicy::default()
            },
            ..RetryPolicy::default()
        }),
        breaker: Some(BreakerPolicy {
            minimum_calls: 20,
            ..BreakerPolicy::default()
        }),
        concurrency: Some(ConcurrencyPolicy {
            max: 1024,
            ..ConcurrencyPolicy::default()
        }),
        attempt_timeout: Some(Duration::from_secs(1)),
        ..ClientPolicy::default()
    }
}

/// An LLM or vendor API client (the 1,000-embeddings case): at most 10 calls in flight
/// with up to 10,000 waiting as long as 60 s (a vendor's concurrency contract, queued
/// rather than refused); 5 attempts with exponential backoff from 500 ms (at most 30 s),
/// a budget of 50 % of requests plus 10/s, and `Retry-After` honoured up to 60 s (vendors
/// ask for long waits); a breaker that opens for 30 s after 20 failures in a row; a 5
/// minute deadline; 60 s per attempt.
pub fn vendor_api() -> ClientPolicy {
    ClientPolicy {
        name: "vendor_api".to_owned(),
        deadline: Some(Duration::from_secs(300)),
        retry: Some(RetryPolicy {
            max_attempts: 5,
            backoff: BackoffPolicy {
                base: Duration::from_millis(500),
                max: Duration::from_secs(30),
                ..BackoffPolicy::default()
            },
            budget: BudgetPolicy {
                percent: 50.0,
                ..BudgetPolicy::default()
            },
            max_retry_after: Duration::from_secs(60),
            ..RetryPolicy::default()
        }),
        breaker: Some(BreakerPolicy {
            consecutive_failures: Some(20),
            ..BreakerPolicy::default()
        }),
        concurrency: Some(ConcurrencyPolicy {
            max: 10,
            queue: 10_000,
            max_wait: Duration::from_secs(60),
        }),
        attempt_timeout: Some(Duration::from_secs(60)),
        ..ClientPolicy::default()
    }
}

/// A public HTTP server: text rejection bodies; the caller's budget read from
/// `x-timeout-ms` (and `grpc-timeout` on gRPC requests), clamped to 30 s, 30 s when none
/// is given; at most 1,024 requests in flight, the rest answered 503 at once.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn http_server() -> crate::ServerPolicy {
    use crate::canonical::policy::server::ServerDeadlinePolicy;
    crate::ServerPolicy {
        name: "http_server".to_owned(),
        deadline: Some(ServerDeadlinePolicy {
            max: Duration::from_secs(30),
            default: Some(Duration::from_secs(30)),
            header: Some("x-timeout-ms".to_owned()),
        }),
        concurrency: Some(ConcurrencyPolicy {
            max: 1024,
            ..ConcurrencyPolicy::default()
        }),
        ..crate::ServerPolicy::default()
    }
}

/// An internal gRPC server: `grpc-timeout` read and clamped to 60 s (no default: a call
/// without one runs unbounded, as gRPC's own default); at most 1,024 calls in flight, up
/// to 256 more waiting 100 ms; rejections as `UNAVAILABLE` / `RESOURCE_EXHAUSTED` /
/// `DEADLINE_EXCEEDED` with `grpc-retry-pushback-ms`.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn grpc_server() -> crate::ServerPolicy {
    use crate::canonical::policy::server::ServerDeadlinePolicy;
    crate::ServerPolicy {
        name: "grpc_server".to_owned(),
        deadline: Some(ServerDeadlinePolicy::default()),
        concurrency: Some(ConcurrencyPolicy {
            max: 1024,
            queue: 256,
            max_wait: Duration::from_millis(100),
        }),
        ..crate::ServerPolicy::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_preset_builds() {
        for p in [
            super::http_client(),
            super::grpc_channel(),
            super::vendor_api(),
        ] {
            p.layer().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        #[cfg(feature = "http")]
        for p in [super::http_server(), super::grpc_server()] {
            p.layer().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }
}
