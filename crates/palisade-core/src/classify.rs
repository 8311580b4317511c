//! One classification of a call's result, read by every policy.
//!
//! A [`Classify`] maps `&Result<Response, Error>` to an [`Outcome`]: success, failure or
//! ignored, plus the hints a server gave (Retry-After, gRPC pushback, "overloaded",
//! "retryable"). The circuit breaker counts failures from it, adaptive limits read
//! "overloaded" as a drop, retries read "retryable" and the retry hints, hedges look for the
//! first success. Classifying once, the same way, keeps them from disagreeing.
//!
//! Built in:
//! - [`ErrorsAsFailures`] (the default): every `Ok` is a success, every `Err` a failure.
//! - [`HttpClassifier`] (feature `http`): 5xx and 429 are
//!   failures, 429/503 carry `Retry-After`, other 4xx are successes (the dependency is
//!   healthy; the caller asked for something wrong). All of it configurable.
//! - [`GrpcClassifier`] (feature `grpc`): reads
//!   `grpc-status` from response headers (trailers-only responses) and
//!   `grpc-retry-pushback-ms`.
//!
//! Any `Fn(&Result<Res, E>) -> Outcome` is a classifier too.
//!
//! # Local or remote
//!
//! A rejection a Palisade layer made on its own ([`Origin::Local`](crate::Origin): a shed,
//! a rate-limit refusal, an open breaker, a deadline already spent) is the client
//! protecting itself, not news about the dependency. [`outcome`] classifies a call and
//! marks such results [`Outcome::is_local`], whatever the classifier said; layers that
//! learn the dependency's health read [`Outcome::health`], which ignores them. A
//! per-attempt timeout *below* a breaker measured the dependency and still counts
//! ([`Elapsed`](crate::Elapsed) is [`Origin::Dependency`](crate::Origin)).
//!
//! # Example
//!
//! ```
//! use palisade_core::{BoxError, Classify, ErrorsAsFailures, OutcomeKind};
//!
//! let ok: Result<u32, BoxError> = Ok(7);
//! assert_eq!(ErrorsAsFailures.classify(&ok).kind(), OutcomeKind::Success);
//!
//! // A closure: treat responses over 100 as failures.
//! let custom = |r: &Result<u32, BoxError>| match r {
//!     Ok(n) if *n > 100 => palisade_core::Outcome::failure(),
//!     Ok(_) => palisade_core::Outcome::success(),
//!     Err(e) => palisade_core::Outcome::from_error(e.as_ref()),
//! };
//! assert_eq!(custom.classify(&Ok(101)).kind(), OutcomeKind::Failure);
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::error::{find_rejection, Rejection};
use crate::BoxError;

#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "http")]
mod http;

#[cfg(feature = "grpc")]
pub use self::grpc::{EndOfStream, GrpcClassifier, GrpcCode};
#[cfg(feature = "http")]
pub use self::http::HttpClassifier;

/// Whether a call succeeded, failed, or should not be counted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// The dependency did its job.
    Success,
    /// The dependency failed (error, 5xx, overload, ...): breakers count it, retries may
    /// repeat it.
    Failure,
    /// Counts as neither: e.g. a call cancelled by its caller.
    Ignored,
}

/// A classified call result with the hints the server gave.
///
/// Built with [`Outcome::success`], [`Outcome::failure`], [`Outcome::ignored`] or
/// [`Outcome::from_error`], then refined with the `with_*` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    kind: OutcomeKind,
    retry_after: Option<Duration>,
    pushback: Option<Pushback>,
    overloaded: bool,
    retryable: bool,
    local: bool,
}

/// A gRPC server's retry pushback (`grpc-retry-pushback-ms`, gRPC A6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pushback {
    /// Retry no sooner than this.
    After(Duration),
    /// A negative value: the server asks the client not to retry.
    Stop,
}

impl Outcome {
    /// A success.
    pub const fn success() -> Self {
        Self::of(OutcomeKind::Success)
    }

    /// A failure, not marked retryable or overloaded.
    pub const fn failure() -> Self {
        Self::of(OutcomeKind::Failure)
    }

    /// An outcome no policy counts.
    pub const fn ignored() -> Self {
        Self::of(OutcomeKind::Ignored)
    }

    const fn of(kind: OutcomeKind) -> Self {
        Self {
            kind,
            retry_after: None,
            pushback: None,
            overloaded: false,
            retryable: false,
            local: false,
        }
    }

    /// Classifies an error: always a failure; Palisade's own rejections refine it.
    ///
    /// - [`DeadlineExceeded`](crate::DeadlineExceeded): overloaded, not retryable (there is
    ///   no time left to retry in).
    /// - [`CircuitOpen`](crate::CircuitOpen): not retryable (fail fast), with its retry-after.
    /// - [`Overloaded`](crate::Overloaded), [`RateLimited`](crate::RateLimited),
    ///   [`Elapsed`](crate::Elapsed): overloaded and retryable, with any retry-after.
    /// - anything else (connection refused, reset, ...): retryable.
    ///
    /// A rejection of [`Origin::Local`](crate::Origin) is also marked
    /// [`is_local`](Self::is_local).
    pub fn from_error(err: &(dyn Error + 'static)) -> Self {
        let failure = Self::failure();
        let Some(r) = find_rejection(err) else {
            return failure.with_retryable(true);
        };
        let outcome = match r {
            Rejection::DeadlineExceeded(_) => failure.with_overloaded(true),
            Rejection::CircuitOpen(_) => failure.with_retry_after(r.retry_after()),
            _ => failure
                .with_overloaded(true)
                .with_retryable(true)
                .with_retry_after(r.retry_after()),
        };
        outcome.with_local(r.is_local())
    }

    /// The same outcome with `kind` replaced.
    #[must_use]
    pub const fn with_kind(mut self, kind: OutcomeKind) -> Self {
        self.kind = kind;
        self
    }

    /// The same outcome with a retry-after hint (e.g. from a `Retry-After` header).
    #[must_use]
    pub const fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The same outcome with a gRPC pushback.
    #[must_use]
    pub const fn with_pushback(mut self, pushback: Option<Pushback>) -> Self {
        self.pushback = pushback;
        self
    }

    /// The same outcome marked (or not) as a sign the dependency is overloaded
    /// (429, 503, `RESOURCE_EXHAUSTED`, a timeout, a local shed).
    #[must_use]
    pub const fn with_overloaded(mut self, overloaded: bool) -> Self {
        self.overloaded = overloaded;
        self
    }

    /// The same outcome marked (or not) as safe to retry by default.
    #[must_use]
    pub const fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The same outcome marked (or not) as a local rejection (see [`Outcome::is_local`]).
    #[must_use]
    pub const fn with_local(mut self, local: bool) -> Self {
        self.local = local;
        self
    }

    /// Success, failure or ignored.
    pub const fn kind(&self) -> OutcomeKind {
        self.kind
    }

    /// Whether a Palisade layer decided this on its own, without hearing from the
    /// dependency (a shed, a rate-limit refusal, an open breaker, a spent deadline).
    pub const fn is_local(&self) -> bool {
        self.local
    }

    /// The outcome as evidence about the dependency's health: [`OutcomeKind::Ignored`]
    /// for a local rejection, [`kind`](Self::kind) otherwise. The breaker, the adaptive
    /// limit and the throttle read this.
    pub const fn health(&self) -> OutcomeKind {
        if self.local {
            OutcomeKind::Ignored
        } else {
            self.kind
        }
    }

    /// `kind() == Success`.
    pub const fn is_success(&self) -> bool {
        matches!(self.kind, OutcomeKind::Success)
    }

    /// `kind() == Failure`.
    pub const fn is_failure(&self) -> bool {
        matches!(self.kind, OutcomeKind::Failure)
    }

    /// `kind() == Ignored`.
    pub const fn is_ignored(&self) -> bool {
        matches!(self.kind, OutcomeKind::Ignored)
    }

    /// The server's `Retry-After`, or a local rejection's retry hint.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The server's gRPC retry pushback.
    pub const fn pushback(&self) -> Option<Pushback> {
        self.pushback
    }

    /// Whether the outcome signals overload (adaptive limits count it as a drop).
    pub const fn is_overloaded(&self) -> bool {
        self.overloaded
    }

    /// Whether the classifier considers the outcome safe to retry by default. A retry
    /// policy also checks the method's idempotency, its budget and the deadline.
    pub const fn is_retryable(&self) -> bool {
        self.retryable && !matches!(self.pushback, Some(Pushback::Stop))
    }
}

/// Maps a call's result to an [`Outcome`].
///
/// `E` defaults to [`BoxError`]: policies convert their inner service's error into a
/// `BoxError` before they classify, so a classifier can see Palisade's own rejections.
pub trait Classify<Res, E = BoxError> {
    /// Classifies one result.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;

    /// The outcome of a result that is only known later — a gRPC response streamed past
    /// [`TrailerStatusLayer`]'s cap, whose status arrives in trailers at the end of the
    /// body — or `None` (the default) when [`classify`](Self::classify) is final. Layers
    /// that only *record* outcomes (breakers, throttles) wait for a deferred one: the call
    /// counts when its stream ends, and not at all if the body is dropped first. Layers
    /// that must decide now (retries, hedges) use `classify`.
    ///
    /// [`TrailerStatusLayer`]: https://docs.rs/palisade/latest/palisade/grpc/struct.TrailerStatusLayer.html
    fn deferred(&self, result: &Result<Res, E>) -> Option<Deferred> {
        let _ = result;
        None
    }
}

/// An outcome known later; see [`Classify::deferred`].
///
/// Holds how to register for it: [`then`](Self::then) hands over a function called once
/// with the outcome, or dropped uncalled if the outcome never comes (the body was dropped
/// before its end), so whatever it owns is released either way.
///
/// ```
/// use palisade_core::classify::Deferred;
/// use palisade_core::Outcome;
/// use std::sync::{Arc, Mutex};
///
/// let slot: Arc<Mutex<Option<Box<dyn FnOnce(&Outcome) + Send>>>> = Arc::default();
/// let later = Deferred::new({
///     let slot = slot.clone();
///     move |f| *slot.lock().unwrap() = Some(f)
/// });
/// let seen = Arc::new(Mutex::new(None));
/// let s = seen.clone();
/// later.then(move |o| *s.lock().unwrap() = Some(o.is_failure()));
/// // … the stream ends with a failure:
/// (slot.lock().unwrap().take().unwrap())(&Outcome::failure());
/// assert_eq!(*seen.lock().unwrap(), Some(true));
/// ```
pub struct Deferred(Box<dyn FnOnce(Later) + Send>);

/// The function a [`Deferred`] outcome is handed to.
pub type Later = Box<dyn FnOnce(&Outcome) + Send>;

impl Deferred {
    /// An outcome delivered by whoever `register` hands the function to.
    pub fn new(register: impl FnOnce(Later) + Send + 'static) -> Self {
        Self(Box::new(register))
    }

    /// Calls `f` with the outcome when it is known (or drops it if it never is).
    pub fn then(self, f: impl FnOnce(&Outcome) + Send + 'static) {
        (self.0)(Box::new(f));
    }
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deferred")
    }
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// Classifies one call's result with `classify`, and marks it [`Outcome::is_local`] when
/// the error is a Palisade rejection of [`Origin::Local`](crate::Origin) — whatever the
/// classifier said, so a custom classifier cannot make a breaker count local sheds.
///
/// Every Palisade layer classifies through this function.
///
/// ```
/// use palisade_core::{classify, BoxError, Overloaded, OutcomeKind};
///
/// let all_failures = |_: &Result<(), BoxError>| palisade_core::Outcome::failure();
/// let shed: Result<(), BoxError> = Err(Box::new(Overloaded::new()));
/// let o = classify::outcome(&all_failures, &shed);
/// assert!(o.is_failure() && o.is_local());
/// assert_eq!(o.health(), OutcomeKind::Ignored);
/// ```
pub fn outcome<Res, C>(classify: &C, result: &Result<Res, BoxError>) -> Outcome
where
    C: Classify<Res> + ?Sized,
{
    let outcome = classify.classify(result);
    match result {
        Err(e) if !outcome.local => {
            let local = find_rejection(e.as_ref()).is_some_and(|r| r.is_local());
            outcome.with_local(local)
        }
        _ => outcome,
    }
}

/// The default classifier: every `Ok` is a success, every `Err` a failure (refined by
/// [`Outcome::from_error`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsAsFailures;

impl<Res> Classify<Res, BoxError> for ErrorsAsFailures {
    fn classify(&self, result: &Result<Res, BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::success(),
            Err(e) => Outcome::from_error(e.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CircuitOpen, DeadlineExceeded, Elapsed};

    #[test]
    fn errors_as_failures() {
        let ok: Result<(), BoxError> = Ok(());
        assert!(ErrorsAsFailures.classify(&ok).is_success());
        let err: Result<(), BoxError> = Err("reset".into());
        let o = ErrorsAsFailures.classify(&err);
        assert!(o.is_failure() && o.is_retryable() && !o.is_overloaded());
    }

    #[test]
    fn rejections_refine_errors() {
        let o = Outcome::from_error(&DeadlineExceeded::new());
        assert!(o.is_failure() && !o.is_retryable() && o.is_overloaded());
        let o = Outcome::from_error(&CircuitOpen::with_retry_after(Duration::from_secs(1)));
        assert!(!o.is_retryable());
        assert_eq!(o.retry_after(), Some(Duration::from_secs(1)));
        let o = Outcome::from_error(&Elapsed::new());
        assert!(o.is_retryable() && o.is_overloaded());
    }

    #[test]
    fn local_rejections_are_ignored_as_health() {
        use crate::{Overloaded, RateLimited};
        for err in [
            Box::new(Overloaded::new()) as BoxError,
            Box::new(RateLimited::new()),
            Box::new(CircuitOpen::new()),
            Box::new(DeadlineExceeded::new()),
        ] {
            let o = Outcome::from_error(err.as_ref());
            assert!(o.is_failure() && o.is_local(), "{err}");
            assert_eq!(o.health(), OutcomeKind::Ignored, "{err}");
        }
        // Timers that measured the dependency count.
        for err in [
            Box::new(Elapsed::new()) as BoxError,
            Box::new(DeadlineExceeded::in_flight()),
            Box::new(Overloaded::new().with_origin(crate::Origin::Dependency)),
            "connection reset".into(),
        ] {
            let o = Outcome::from_error(err.as_ref());
            assert!(!o.is_local(), "{err}");
            assert_eq!(o.health(), OutcomeKind::Failure, "{err}");
        }
        // A classifier that ignores the rule cannot override it.
        let blunt = |_: &Result<(), BoxError>| Outcome::failure();
        let shed: Result<(), BoxError> = Err(Box::new(CircuitOpen::new()));
        assert_eq!(outcome(&blunt, &shed).health(), OutcomeKind::Ignored);
        let ok: Result<(), BoxError> = Ok(());
        assert_eq!(outcome(&blunt, &ok).health(), OutcomeKind::Failure);
    }

    #[test]
    fn pushback_stop_is_not_retryable() {
        let o = Outcome::failure()
            .with_retryable(true)
            .with_pushback(Some(Pushback::Stop));
        assert!(!o.is_retryable());
    }
}
