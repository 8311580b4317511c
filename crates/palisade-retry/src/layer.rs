use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::observe::Counter;
use palisade_core::stripe::{self, Lanes};
use palisade_core::ErrorsAsFailures;
use tokio::time::Instant;
use tower_layer::Layer;

use super::budget::BudgetState;
use super::{Backoff, Idempotent, InvalidRetry, Jitter, Retry, RetryBudget};

/// Builds a [`RetryLayer`]; see the [module docs](crate) for what each setting means.
#[derive(Debug)]
pub struct RetryBuilder<P = Idempotent, C = ErrorsAsFailures> {
    max_attempts: u32,
    backoff: Backoff,
    jitter: Jitter,
    budget: RetryBudget,
    max_retry_after: Duration,
    min_remaining: Duration,
    name: Arc<str>,
    policy: P,
    classify: C,
}

impl RetryBuilder {
    fn new() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::exponential(Duration::from_millis(100)),
            jitter: Jitter::random(),
            budget: RetryBudget::default(),
            max_retry_after: Duration::from_secs(30),
            min_remaining: Duration::ZERO,
            name: Arc::from(""),
            policy: Idempotent,
            classify: ErrorsAsFailures,
        }
    }
}

impl<P, C> RetryBuilder<P, C> {
    /// At most this many attempts per request, the first included (default 3; 1 disables
    /// retries).
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The wait between attempts when the server gives no hint (default exponential
    /// from 100 ms with full jitter, at most 10 s).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Where the backoff's randomness comes from (default [`Jitter::random`]; tests use
    /// [`Jitter::none`] or [`Jitter::seeded`]).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The retry budget, shared by every service the layer builds and their clones
    /// (default [`RetryBudget::default`]: 20% of requests over 10 s, plus 10 per second).
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The longest server hint (`Retry-After`, `grpc-retry-pushback-ms`) honored (default
    /// 30 s). A hint longer than this ends retrying: the caller gets the server's answer
    /// rather than a retry sent sooner than the server asked for.
    #[must_use]
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// No retry starts unless the request's deadline leaves at least this much after the
    /// wait (default zero: a retry starts if any time is left after the wait).
    #[must_use]
    pub fn min_remaining(mut self, min_remaining: Duration) -> Self {
        self.min_remaining = min_remaining;
        self
    }

    /// The instance name used in metrics labels.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Which requests may be retried and how to copy them (default [`Idempotent`]).
    #[must_use]
    pub fn policy<Q>(self, policy: Q) -> RetryBuilder<Q, C> {
        RetryBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            jitter: self.jitter,
            budget: self.budget,
            max_retry_after: self.max_retry_after,
            min_remaining: self.min_remaining,
            name: self.name,
            policy,
            classify: self.classify,
        }
    }

    /// How results are judged (default [`ErrorsAsFailures`]): a result is retried when
    /// its [`Outcome`](palisade_core::Outcome) is not a success and
    /// [`is_retryable`](palisade_core::Outcome::is_retryable).
    #[must_use]
    pub fn classify<D>(self, classify: D) -> RetryBuilder<P, D> {
        RetryBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            jitter: self.jitter,
            budget: self.budget,
            max_retry_after: self.max_retry_after,
            min_remaining: self.min_remaining,
            name: self.name,
            policy: self.policy,
            classify,
        }
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    /// [`InvalidRetry`] for zero `max_attempts`, a backoff with a zero base or
    /// `min > max`, or budget parameters out of range.
    pub fn build(self) -> Result<RetryLayer<P, C>, InvalidRetry> {
        if self.max_attempts == 0 {
            return Err(InvalidRetry::ZeroMaxAttempts);
        }
        self.backoff.check().map_err(InvalidRetry::Backoff)?;
        let budget = self.budget.build().map_err(InvalidRetry::Budget)?;
        let counter = |metric, extra: &[(&'static str, &'static str)]| {
            Counter::register(metric, "retry", &self.name, extra)
        };
        Ok(RetryLayer {
            // Per-stripe lanes: a call's future holds its thread's (see `Lanes`).
            shared: Lanes::new(
                Shared {
                    max_attempts: self.max_attempts,
                    backoff: self.backoff,
                    jitter: self.jitter,
                    budget,
                    max_retry_after: self.max_retry_after,
                    min_remaining: self.min_remaining,
                    name: self.name.clone(),
                    origin: Instant::now(),
                    retries: AtomicU64::new(0),
                    budget_exhausted: AtomicU64::new(0),
                    first_attempts: counter("palisade_attempts_total", &[("kind", "first")]),
                    retry_attempts: counter("palisade_attempts_total", &[("kind", "retry")]),
                    exhausted: counter(
                        "palisade_decisions_total",
                        &[("decision", "budget_exhausted")],
                    ),
                },
                stripe::stripes(),
            ),
            policy: self.policy,
            classify: self.classify,
        })
    }
}

/// Applies [`Retry`] to a service. Every service it builds, and every clone of those,
/// shares one budget and one set of counters (decision 1).
#[derive(Clone, Debug)]
pub struct RetryLayer<P = Idempotent, C = ErrorsAsFailures> {
    shared: Lanes<Shared>,
    policy: P,
    classify: C,
}

impl RetryLayer {
    /// Starts a configuration: 3 attempts, exponential backoff from 100 ms with full
    /// jitter (at most 10 s), the default budget, the [`Idempotent`] policy and the
    /// [`ErrorsAsFailures`] classifier.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::new()
    }
}

impl<P, C> RetryLayer<P, C> {
    /// A cheap handle on the live state (counters, budget balance).
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            shared: Arc::clone(self.shared.shared()),
        }
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for RetryLayer<P, C> {
    type Service = Retry<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_parts(
            inner,
            self.shared.clone(),
            self.policy.clone(),
            self.classify.clone(),
        )
    }
}

/// Live state of one retry policy, shared with its layer.
#[derive(Debug, Clone)]
pub struct RetryHandle {
    shared: Arc<Shared>,
}

impl RetryHandle {
    /// Retries sent.
    pub fn retries(&self) -> u64 {
        self.shared.retries.load(Ordering::Relaxed)
    }

    /// Retries the policy wanted but the budget did not allow.
    pub fn budget_exhausted(&self) -> u64 {
        self.shared.budget_exhausted.load(Ordering::Relaxed)
    }

    /// The budget's balance: retries (TTL budget) or tokens (throttle); `None` when
    /// unlimited.
    pub fn budget_available(&self) -> Option<f64> {
        self.shared.budget.available(self.shared.now())
    }
}

// === impl Shared ===

/// State shared by every service of one layer.
pub(crate) struct Shared {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) budget: BudgetState,
    pub(crate) max_retry_after: Duration,
    pub(crate) min_remaining: Duration,
    pub(crate) name: Arc<str>,
    origin: Instant,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
    pub(crate) first_attempts: Counter,
    pub(crate) retry_attempts: Counter,
    pub(crate) exhausted: Counter,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .field("budget", &self.budget)
            .field("max_retry_after", &self.max_retry_after)
            .field("min_remaining", &self.min_remaining)
            .field("retries", &self.retries)
            .field("budget_exhausted", &self.budget_exhausted)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Time since the layer was built: the budget's clock.
    pub(crate) fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    /// Whether every outcome must be classified even when no retry is possible (the
    /// throttle learns from every attempt).
    pub(crate) fn budget_records(&self) -> bool {
        matches!(self.budget, BudgetState::Throttle(_))
    }

    /// Counts a retry the budget refused.
    pub(crate) fn count_exhausted(&self) {
        self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        self.exhausted.increment(1);
        tracing::debug!(target: "palisade::retry", "retry skipped: budget exhausted");
    }

    /// Counts a retry sent.
    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.retry_attempts.increment(1);
    }
}
