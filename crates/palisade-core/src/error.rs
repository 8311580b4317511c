//! Rejection errors shared by every policy.
//!
//! Each rejection is a small concrete struct, so it survives boxing into [`BoxError`]
//! and can be recovered with `downcast_ref` (this is how tonic and axum adapters, and
//! client code, tell a local rejection from an upstream failure). Each carries a
//! `retry_after` where the policy knows one: the time until a rate limit admits again,
//! until a breaker half-opens, and so on.
//!
//! [`find_rejection`] finds a rejection anywhere in an error's `source()` chain, so a
//! rejection wrapped by another layer (a retry giving up, a buffer worker) is still found.
//!
//! | error | raised by | HTTP | gRPC |
//! |---|---|---|---|
//! | [`Overloaded`] | concurrency limits: full, queue full, queue wait exceeded | 503 | `UNAVAILABLE` |
//! | [`RateLimited`] | rate limits | 429 | `RESOURCE_EXHAUSTED` |
//! | [`CircuitOpen`] | circuit breakers | 503 | `UNAVAILABLE` |
//! | [`DeadlineExceeded`] | the request's overall deadline passed | 504 | `DEADLINE_EXCEEDED` |
//! | [`Elapsed`] | one attempt's timeout passed | 504 | `DEADLINE_EXCEEDED` |
//!
//! [`BoxError`]: crate::BoxError

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// Defines one rejection struct: private `retry_after`, `const fn new`, a builder for the
/// hint, a getter, `Display` and `Error`. One macro keeps the five types identical in shape.
macro_rules! rejection {
    ($(#[$meta:meta])* $name:ident, $msg:literal, $origin:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name {
            retry_after: Option<Duration>,
            origin: Origin,
        }

        impl $name {
            /// A rejection with no retry hint, of this type's usual [`Origin`].
            pub const fn new() -> Self {
                Self { retry_after: None, origin: $origin }
            }

            /// A rejection that tells the caller when trying again may succeed.
            pub const fn with_retry_after(retry_after: Duration) -> Self {
                Self { retry_after: Some(retry_after), origin: $origin }
            }

            /// The same rejection with its [`Origin`] replaced: e.g. a client adapter that
            /// turns a dependency's own "overloaded" answer into this error marks it
            /// [`Origin::Dependency`], so breakers and adaptive limits count it.
            #[must_use]
            pub const fn with_origin(mut self, origin: Origin) -> Self {
                self.origin = origin;
                self
            }

            /// How long the caller should wait before trying again, if known.
            pub const fn retry_after(&self) -> Option<Duration> {
                self.retry_after
            }

            /// Who decided: a Palisade layer on its own, or a timer that measured the
            /// dependency.
            pub const fn origin(&self) -> Origin {
                self.origin
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($msg)?;
                if let Some(after) = self.retry_after {
                    write!(f, " (retry after {after:?})")?;
                }
                Ok(())
            }
        }

        impl Error for $name {}
    };
}

rejection!(
    /// The service is at its concurrency limit and the request was shed: the limit was full
    /// and the policy rejects at once, the wait queue was full, or the request waited in the
    /// queue longer than allowed (or than its deadline).
    Overloaded,
    "service overloaded",
    Origin::Local
);
rejection!(
    /// A rate limit refused the request; `retry_after` is the exact wait until it would be
    /// admitted.
    RateLimited,
    "rate limit exceeded",
    Origin::Local
);
rejection!(
    /// A circuit breaker is open (or its half-open probes are taken) and failed the request
    /// fast, without calling the inner service; `retry_after` is the time until it half-opens.
    CircuitOpen,
    "circuit open",
    Origin::Local
);
rejection!(
    /// The request's overall [`Deadline`](crate::Deadline) passed before it completed.
    ///
    /// [`DeadlineExceeded::new`] is [`Origin::Local`]: the deadline had passed (or left too
    /// little) before the dependency was called. A timer that fires while the dependency
    /// is working on the call uses [`DeadlineExceeded::in_flight`]: that measured a slow
    /// dependency.
    DeadlineExceeded,
    "deadline exceeded",
    Origin::Local
);
rejection!(
    /// One attempt took longer than its per-attempt timeout. Always
    /// [`Origin::Dependency`] unless said otherwise: the timer measured the dependency.
    Elapsed,
    "request timed out",
    Origin::Dependency
);

impl DeadlineExceeded {
    /// The deadline passed while the dependency was working on the call
    /// ([`Origin::Dependency`]): a slow call, which breakers and adaptive limits count.
    pub const fn in_flight() -> Self {
        Self::new().with_origin(Origin::Dependency)
    }
}

/// Who made a rejection: the client protecting itself, or a measurement of the dependency.
///
/// This is the workspace's one local-versus-remote rule. A rejection a Palisade layer makes
/// on its own — shed by a limit, refused by a rate limit, failed fast by an open breaker,
/// a deadline that had run out before the call — says nothing about the dependency's
/// health, so layers that learn from outcomes (the breaker, the adaptive limit, the
/// throttle) ignore it ([`Outcome::is_local`](crate::Outcome::is_local)). A timer that
/// fires while the dependency holds the call ([`Elapsed`], [`DeadlineExceeded::in_flight`])
/// measured it, and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Decided by a Palisade layer in this process, without hearing from the dependency.
    Local,
    /// Evidence about the dependency: a timer that ran out while it held the call, or a
    /// dependency's own answer turned into a rejection.
    Dependency,
}

/// A Palisade rejection found in an error chain by [`find_rejection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection<'a> {
    /// See [`Overloaded`].
    Overloaded(&'a Overloaded),
    /// See [`RateLimited`].
    RateLimited(&'a RateLimited),
    /// See [`CircuitOpen`].
    CircuitOpen(&'a CircuitOpen),
    /// See [`DeadlineExceeded`].
    DeadlineExceeded(&'a DeadlineExceeded),
    /// See [`Elapsed`].
    Elapsed(&'a Elapsed),
}

impl Rejection<'_> {
    /// The rejection's retry hint, if it has one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::Overloaded(e) => e.retry_after(),
            Rejection::RateLimited(e) => e.retry_after(),
            Rejection::CircuitOpen(e) => e.retry_after(),
            Rejection::DeadlineExceeded(e) => e.retry_after(),
            Rejection::Elapsed(e) => e.retry_after(),
        }
    }

    /// The rejection's [`Origin`].
    pub fn origin(&self) -> Origin {
        match self {
            Rejection::Overloaded(e) => e.origin(),
            Rejection::RateLimited(e) => e.origin(),
            Rejection::CircuitOpen(e) => e.origin(),
            Rejection::DeadlineExceeded(e) => e.origin(),
            Rejection::Elapsed(e) => e.origin(),
        }
    }

    /// `origin() == Origin::Local`: a decision this process made without the dependency.
    pub fn is_local(&self) -> bool {
        self.origin() == Origin::Local
    }

    /// The HTTP status code a server should answer with: 429 for a rate limit, 504 for a
    /// deadline or timeout, 503 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            Rejection::RateLimited(_) => 429,
            Rejection::DeadlineExceeded(_) | Rejection::Elapsed(_) => 504,
            Rejection::Overloaded(_) | Rejection::CircuitOpen(_) => 503,
        }
    }

    /// The gRPC status code (as its number) a server should answer with:
    /// `RESOURCE_EXHAUSTED` (8) for a rate limit, `DEADLINE_EXCEEDED` (4) for a deadline or
    /// timeout, `UNAVAILABLE` (14) otherwise.
    pub fn grpc_code(&self) -> i32 {
        match self {
            Rejection::RateLimited(_) => 8,
            Rejection::DeadlineExceeded(_) | Rejection::Elapsed(_) => 4,
            Rejection::Overloaded(_) | Rejection::CircuitOpen(_) => 14,
        }
    }
}

/// Finds the first Palisade rejection in `err` or anywhere in its `source()` chain.
///
/// ```
/// use palisade_core::{find_rejection, BoxError, RateLimited};
/// use std::time::Duration;
///
/// let err: BoxError = Box::new(RateLimited::with_retry_after(Duration::from_millis(250)));
/// let found = find_rejection(err.as_ref()).unwrap();
/// assert_eq!(found.retry_after(), Some(Duration::from_millis(250)));
/// assert_eq!(found.http_status(), 429);
/// ```
pub fn find_rejection<'a>(err: &'a (dyn Error + 'static)) -> Option<Rejection<'a>> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(r) = as_rejection(e) {
            return Some(r);
        }
        current = e.source();
    }
    None
}

fn as_rejection<'a>(e: &'a (dyn Error + 'static)) -> Option<Rejection<'a>> {
    if let Some(e) = e.downcast_ref::<Overloaded>() {
        Some(Rejection::Overloaded(e))
    } else if let Some(e) = e.downcast_ref::<RateLimited>() {
        Some(Rejection::RateLimited(e))
    } else if let Some(e) = e.downcast_ref::<CircuitOpen>() {
        Some(Rejection::CircuitOpen(e))
    } else if let Some(e) = e.downcast_ref::<DeadlineExceeded>() {
        Some(Rejection::DeadlineExceeded(e))
    } else {
        e.downcast_ref::<Elapsed>().map(Rejection::Elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.0.as_ref())
        }
    }

    #[test]
    fn downcasts_from_box_error() {
        let err: BoxError = Box::new(CircuitOpen::with_retry_after(Duration::from_secs(3)));
        let open = err.downcast_ref::<CircuitOpen>().unwrap();
        assert_eq!(open.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(err.to_string(), "circuit open (retry after 3s)");
    }

    #[test]
    fn finds_rejection_in_source_chain() {
        let inner: BoxError = Elapsed::new().into();
        let outer = Wrapper(Box::new(Wrapper(inner)));
        let found = find_rejection(&outer).unwrap();
        assert_eq!(found, Rejection::Elapsed(&Elapsed::new()));
        assert_eq!(found.http_status(), 504);
        assert_eq!(found.grpc_code(), 4);
    }

    #[test]
    fn no_rejection_in_plain_error() {
        let err: BoxError = "connection refused".into();
        assert!(find_rejection(err.as_ref()).is_none());
    }

    #[test]
    fn status_mapping() {
        assert_eq!(Rejection::Overloaded(&Overloaded::new()).http_status(), 503);
        assert_eq!(Rejection::RateLimited(&RateLimited::new()).grpc_code(), 8);
        assert_eq!(Rejection::CircuitOpen(&CircuitOpen::new()).grpc_code(), 14);
        assert_eq!(
            Rejection::DeadlineExceeded(&DeadlineExceeded::new()).http_status(),
            504
        );
    }
}
