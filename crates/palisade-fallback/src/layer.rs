use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use palisade_core::observe::Counter;
use palisade_core::{find_rejection, BoxError, Classify, OutcomeKind, Rejection};
use tower_layer::Layer;

use crate::service::FallbackService;

/// A Palisade rejection a fallback can be selected for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// [`Overloaded`](palisade_core::Overloaded): a concurrency limit shed the call.
    Overloaded,
    /// [`RateLimited`](palisade_core::RateLimited).
    RateLimited,
    /// [`CircuitOpen`](palisade_core::CircuitOpen): a breaker failed it fast.
    CircuitOpen,
    /// [`DeadlineExceeded`](palisade_core::DeadlineExceeded).
    DeadlineExceeded,
    /// [`Elapsed`](palisade_core::Elapsed): a per-attempt timeout.
    Elapsed,
}

impl RejectionKind {
    const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn of(err: &BoxError) -> Option<Self> {
        Some(match find_rejection(err.as_ref())? {
            Rejection::Overloaded(_) => Self::Overloaded,
            Rejection::RateLimited(_) => Self::RateLimited,
            Rejection::CircuitOpen(_) => Self::CircuitOpen,
            Rejection::DeadlineExceeded(_) => Self::DeadlineExceeded,
            Rejection::Elapsed(_) => Self::Elapsed,
            _ => return None,
        })
    }
}

/// Why a fallback answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A selected Palisade rejection.
    Rejection(RejectionKind),
    /// An error, with [`FallbackBuilder::on_any_error`].
    Error,
    /// The classifier called the result a failure (a response such as a 503 included).
    Classified,
}

/// Never calls a result a failure: the default when only errors or rejections trigger.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClassifier;

impl<Res> Classify<Res, BoxError> for NoClassifier {
    fn classify(&self, _result: &Result<Res, BoxError>) -> palisade_core::Outcome {
        palisade_core::Outcome::ignored()
    }
}

/// Invalid configuration of a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidFallback {
    /// Nothing selected to trigger it: no error, rejection or classifier.
    NoTrigger,
}

impl fmt::Display for InvalidFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTrigger => f.write_str(
                "a fallback needs a trigger: any error, a rejection kind, or a classifier",
            ),
        }
    }
}

impl std::error::Error for InvalidFallback {}

/// What triggers a fallback, its counts and metrics: shared by every service of a layer.
pub(crate) struct Shared<Fb, C> {
    pub(crate) fallback: Fb,
    classify: C,
    any_error: bool,
    rejections: u8,
    pub(crate) name: Arc<str>,
    stats: Arc<Stats>,
}

/// The counts a [`FallbackHandle`] reads.
#[derive(Debug, Default)]
struct Stats {
    triggered: AtomicU64,
    served: AtomicU64,
    failed: AtomicU64,
    declined: AtomicU64,
    served_counter: Counter,
    failed_counter: Counter,
    declined_counter: Counter,
}

impl<Fb, C> Shared<Fb, C> {
    /// Whether `result` triggers the fallback, and why.
    pub(crate) fn trigger<Res>(&self, result: &Result<Res, BoxError>) -> Option<Reason>
    where
        C: Classify<Res, BoxError>,
    {
        if let Err(e) = result {
            if let Some(kind) = RejectionKind::of(e) {
                if self.rejections & kind.bit() != 0 {
                    return Some(Reason::Rejection(kind));
                }
            }
            if self.any_error {
                return Some(Reason::Error);
            }
        }
        (self.classify.classify(result).kind() == OutcomeKind::Failure)
            .then_some(Reason::Classified)
    }

    pub(crate) fn record_trigger(&self, reason: Reason) {
        self.stats.triggered.fetch_add(1, Relaxed);
        tracing::debug!(target: "palisade::fallback", name = %self.name, ?reason, "falling back");
    }

    pub(crate) fn record_declined(&self) {
        self.stats.declined.fetch_add(1, Relaxed);
        self.stats.declined_counter.increment(1);
        tracing::debug!(target: "palisade::fallback", name = %self.name, "fallback has no answer; returning the call's own result");
    }

    pub(crate) fn record_answer(&self, ok: bool) {
        if ok {
            self.stats.served.fetch_add(1, Relaxed);
            self.stats.served_counter.increment(1);
        } else {
            self.stats.failed.fetch_add(1, Relaxed);
            self.stats.failed_counter.increment(1);
            tracing::debug!(target: "palisade::fallback", name = %self.name, "fallback failed");
        }
    }
}

/// Answers failed calls from a [`Fallback`](crate::Fallback); see the [crate docs](crate).
pub struct FallbackLayer<Fb, C = NoClassifier> {
    shared: Arc<Shared<Fb, C>>,
}

impl<Fb, C> Clone for FallbackLayer<Fb, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Fb, C> fmt::Debug for FallbackLayer<Fb, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// Builds a [`FallbackLayer`]; see [`FallbackLayer::builder`].
#[must_use]
pub struct FallbackBuilder<Fb, C = NoClassifier> {
    fallback: Fb,
    classify: C,
    classified: bool,
    any_error: bool,
    rejections: u8,
    name: Arc<str>,
}

impl<Fb, C> fmt::Debug for FallbackBuilder<Fb, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("any_error", &self.any_error)
            .field("rejections", &self.rejections)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

// === impl FallbackLayer ===

impl<Fb> FallbackLayer<Fb> {
    /// Falls back to `fallback` on any error (the default trigger); narrow it with
    /// [`on_rejections`](FallbackBuilder::on_rejections), widen it to failed responses
    /// with [`classify`](FallbackBuilder::classify).
    pub fn builder(fallback: Fb) -> FallbackBuilder<Fb> {
        FallbackBuilder {
            fallback,
            classify: NoClassifier,
            classified: false,
            any_error: true,
            rejections: 0,
            name: Arc::from(""),
        }
    }
}

impl<Fb, C> FallbackLayer<Fb, C> {
    /// A handle on this layer's counts.
    pub fn handle(&self) -> FallbackHandle {
        FallbackHandle {
            stats: Arc::clone(&self.shared.stats),
        }
    }
}

impl<S, Fb, C> Layer<S> for FallbackLayer<Fb, C> {
    type Service = FallbackService<S, Fb, C>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService::from_parts(inner, Arc::clone(&self.shared))
    }
}

// === impl FallbackBuilder ===

impl<Fb, C> FallbackBuilder<Fb, C> {
    /// Falls back on any error (the default).
    pub fn on_any_error(mut self) -> Self {
        self.any_error = true;
        self
    }

    /// Falls back on these Palisade rejections only (found anywhere in the error's source
    /// chain), and not on other errors.
    pub fn on_rejections(mut self, kinds: &[RejectionKind]) -> Self {
        self.any_error = false;
        self.rejections = kinds.iter().fold(0, |bits, k| bits | k.bit());
        self
    }

    /// Also falls back when `classify` calls the result a failure: an error, or a
    /// response such as an HTTP 503 (core's `HttpClassifier`).
    pub fn classify<C2>(self, classify: C2) -> FallbackBuilder<Fb, C2> {
        FallbackBuilder {
            fallback: self.fallback,
            classify,
            classified: true,
            any_error: self.any_error,
            rejections: self.rejections,
            name: self.name,
        }
    }

    /// Names this layer in tracing events and metrics labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidFallback::NoTrigger`] if nothing would trigger the fallback (an empty
    /// rejection list and no classifier).
    pub fn build(self) -> Result<FallbackLayer<Fb, C>, InvalidFallback> {
        if !self.any_error && self.rejections == 0 && !self.classified {
            return Err(InvalidFallback::NoTrigger);
        }
        let counter = |decision| {
            Counter::register(
                "palisade_decisions_total",
                "fallback",
                &self.name,
                &[("decision", decision)],
            )
        };
        let stats = Stats {
            served_counter: counter("served"),
            failed_counter: counter("failed"),
            declined_counter: counter("declined"),
            ..Stats::default()
        };
        let shared = Shared {
            fallback: self.fallback,
            classify: self.classify,
            any_error: self.any_error,
            rejections: self.rejections,
            name: self.name,
            stats: Arc::new(stats),
        };
        Ok(FallbackLayer {
            shared: Arc::new(shared),
        })
    }
}

/// Live counts of a [`FallbackLayer`].
#[derive(Clone, Debug)]
pub struct FallbackHandle {
    stats: Arc<Stats>,
}

impl FallbackHandle {
    /// Calls that triggered the fallback so far.
    pub fn triggered(&self) -> u64 {
        self.stats.triggered.load(Relaxed)
    }

    /// Fallbacks that answered.
    pub fn served(&self) -> u64 {
        self.stats.served.load(Relaxed)
    }

    /// Fallbacks that failed themselves (reported as
    /// [`FallbackFailed`](crate::FallbackFailed)).
    pub fn failed(&self) -> u64 {
        self.stats.failed.load(Relaxed)
    }

    /// Triggered calls the fallback had no answer for
    /// ([`Fallback::declines`](crate::Fallback::declines)): their own result was returned.
    pub fn declined(&self) -> u64 {
        self.stats.declined.load(Relaxed)
    }
}
