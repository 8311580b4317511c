use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::observe::Counter;
use palisade_core::ErrorsAsFailures;
use tokio::time::Instant;
use tower_layer::Layer;

use super::budget::Budget;
use super::latency::LatencyWindow;
use super::{Hedge, Idempotent, InvalidHedge};

/// When to send the next attempt: a fixed delay, or a percentile of recent successful
/// latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeDelay {
    kind: DelayKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DelayKind {
    Fixed(Duration),
    Percentile {
        percentile: f64,
        window: Duration,
        min_samples: u32,
    },
}

impl HedgeDelay {
    /// Always wait `delay` before the next attempt.
    pub const fn fixed(delay: Duration) -> Self {
        Self {
            kind: DelayKind::Fixed(delay),
        }
    }

    /// Wait for the `percentile` (in (0, 1], e.g. `0.95`) of the latencies of recent
    /// successful attempts: a rolling window of 10 s by default, and no hedging until it
    /// holds 100 samples (see [`window`](Self::window), [`min_samples`](Self::min_samples)).
    pub const fn percentile(percentile: f64) -> Self {
        Self {
            kind: DelayKind::Percentile {
                percentile,
                window: Duration::from_secs(10),
                min_samples: 100,
            },
        }
    }

    /// The rolling window of a percentile delay (ignored for a fixed delay).
    #[must_use]
    pub const fn window(mut self, window: Duration) -> Self {
        if let DelayKind::Percentile {
            percentile,
            min_samples,
            ..
        } = self.kind
        {
            self.kind = DelayKind::Percentile {
                percentile,
                window,
                min_samples,
            };
        }
        self
    }

    /// The warm-up: how many samples the window needs before it hedges (ignored for a
    /// fixed delay).
    #[must_use]
    pub const fn min_samples(mut self, min_samples: u32) -> Self {
        if let DelayKind::Percentile {
            percentile, window, ..
        } = self.kind
        {
            self.kind = DelayKind::Percentile {
                percentile,
                window,
                min_samples,
            };
        }
        self
    }
}

/// Builds a [`HedgeLayer`]; see the [module docs](super) for what each setting means.
#[derive(Debug, Clone)]
pub struct HedgeBuilder<P = Idempotent, C = ErrorsAsFailures> {
    delay: HedgeDelay,
    max_extra: u32,
    budget: Option<(f64, u32)>,
    min_remaining: Option<Duration>,
    name: Arc<str>,
    policy: P,
    classify: C,
}

impl HedgeBuilder {
    fn new(delay: HedgeDelay) -> Self {
        Self {
            delay,
            max_extra: 1,
            budget: Some((0.1, 10)),
            min_remaining: None,
            name: Arc::from(""),
            policy: Idempotent,
            classify: ErrorsAsFailures,
        }
    }
}

impl<P, C> HedgeBuilder<P, C> {
    /// At most this many extra attempts per request, each one delay after the previous
    /// (default 1; 0 disables hedging).
    #[must_use]
    pub fn max_extra(mut self, max_extra: u32) -> Self {
        self.max_extra = max_extra;
        self
    }

    /// Extra attempts may be at most `ratio` of requests (default 0.1), with up to `burst`
    /// saved up (default 10). Shared by every service the layer builds and their clones.
    #[must_use]
    pub fn budget(mut self, ratio: f64, burst: u32) -> Self {
        self.budget = Some((ratio, burst));
        self
    }

    /// No budget: every eligible request may hedge (`max_extra` still applies).
    #[must_use]
    pub fn unlimited(mut self) -> Self {
        self.budget = None;
        self
    }

    /// No attempt starts when the request's [`Deadline`](palisade_core::Deadline) has
    /// less than this left (default: the hedge delay itself, a hedge that cannot get
    /// a typical response in time is wasted load).
    #[must_use]
    pub fn min_remaining(mut self, min_remaining: Duration) -> Self {
        self.min_remaining = Some(min_remaining);
        self
    }

    /// The instance name used in metrics labels.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Which requests may be repeated, and how to copy them (default [`Idempotent`]).
    #[must_use]
    pub fn policy<Q>(self, policy: Q) -> HedgeBuilder<Q, C> {
        HedgeBuilder {
            delay: self.delay,
            max_extra: self.max_extra,
            budget: self.budget,
            min_remaining: self.min_remaining,
            name: self.name,
            policy,
            classify: self.classify,
        }
    }

    /// How results are judged (default [`ErrorsAsFailures`]): the first *success* wins.
    #[must_use]
    pub fn classify<D>(self, classify: D) -> HedgeBuilder<P, D> {
        HedgeBuilder {
            delay: self.delay,
            max_extra: self.max_extra,
            budget: self.budget,
            min_remaining: self.min_remaining,
            name: self.name,
            policy: self.policy,
            classify,
        }
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    /// [`InvalidHedge`] for a percentile outside (0, 1], a zero window or warm-up, or a
    /// budget ratio outside [0, 1].
    pub fn build(self) -> Result<HedgeLayer<P, C>, InvalidHedge> {
        let delay = match self.delay.kind {
            DelayKind::Fixed(d) => DelayState::Fixed(d),
            DelayKind::Percentile {
                percentile,
                window,
                min_samples,
            } => {
                if !(percentile > 0.0 && percentile <= 1.0) {
                    return Err(InvalidHedge::Percentile(percentile));
                }
                if window.is_zero() {
                    return Err(InvalidHedge::ZeroWindow);
                }
                if min_samples == 0 {
                    return Err(InvalidHedge::ZeroMinSamples);
                }
                DelayState::Learned(LatencyWindow::new(
                    percentile,
                    window,
                    u64::from(min_samples),
                ))
            }
        };
        let budget = match self.budget {
            Some((ratio, burst)) => {
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(InvalidHedge::BudgetRatio(ratio));
                }
                Some(Budget::new(ratio, burst))
            }
            None => None,
        };
        let counter = |kind| {
            Counter::register(
                "palisade_attempts_total",
                "hedge",
                &self.name,
                &[("kind", kind)],
            )
        };
        Ok(HedgeLayer {
            shared: Arc::new(Shared {
                delay,
                budget,
                max_extra: self.max_extra,
                min_remaining: self.min_remaining,
                name: self.name.clone(),
                origin: Instant::now(),
                hedges: AtomicU64::new(0),
                hedge_wins: AtomicU64::new(0),
                first_attempts: counter("first"),
                hedge_attempts: counter("hedge"),
            }),
            policy: self.policy,
            classify: self.classify,
        })
    }
}

/// Applies [`Hedge`] to a service. Every service it builds, and every clone of those,
/// shares one latency window, one budget and one set of counters (decision 1).
#[derive(Clone, Debug)]
pub struct HedgeLayer<P = Idempotent, C = ErrorsAsFailures> {
    shared: Arc<Shared>,
    policy: P,
    classify: C,
}

impl HedgeLayer {
    /// Starts a configuration with `delay`, one extra attempt, a 10% budget, the
    /// [`Idempotent`] policy and the [`ErrorsAsFailures`] classifier.
    pub fn builder(delay: HedgeDelay) -> HedgeBuilder {
        HedgeBuilder::new(delay)
    }
}

impl<P, C> HedgeLayer<P, C> {
    /// A cheap handle on the live state (current delay, counters).
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Clone, P: Clone, C: Clone> Layer<S> for HedgeLayer<P, C> {
    type Service = Hedge<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::from_parts(
            inner,
            Arc::clone(&self.shared),
            self.policy.clone(),
            self.classify.clone(),
        )
    }
}

/// Live state of one hedge policy, shared with its layer.
#[derive(Debug, Clone)]
pub struct HedgeHandle {
    shared: Arc<Shared>,
}

impl HedgeHandle {
    /// The delay a request starting now would wait before its first extra attempt;
    /// `None` while a percentile delay is still warming up.
    pub fn delay(&self) -> Option<Duration> {
        self.shared.delay()
    }

    /// Extra attempts sent.
    pub fn hedges(&self) -> u64 {
        self.shared.hedges.load(Ordering::Relaxed)
    }

    /// Requests answered by an extra attempt rather than the first.
    pub fn hedge_wins(&self) -> u64 {
        self.shared.hedge_wins.load(Ordering::Relaxed)
    }

    /// The budget's balance in hedges (`None` without a budget).
    pub fn budget_available(&self) -> Option<f64> {
        self.shared.budget.as_ref().map(Budget::available)
    }
}

// === impl Shared ===

#[derive(Debug)]
pub(crate) enum DelayState {
    Fixed(Duration),
    Learned(LatencyWindow),
}

/// State shared by every service of one layer.
pub(crate) struct Shared {
    pub(crate) delay: DelayState,
    pub(crate) budget: Option<Budget>,
    pub(crate) max_extra: u32,
    pub(crate) min_remaining: Option<Duration>,
    pub(crate) name: Arc<str>,
    pub(crate) origin: Instant,
    pub(crate) hedges: AtomicU64,
    pub(crate) hedge_wins: AtomicU64,
    pub(crate) first_attempts: Counter,
    pub(crate) hedge_attempts: Counter,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("delay", &self.delay)
            .field("budget", &self.budget)
            .field("max_extra", &self.max_extra)
            .field("min_remaining", &self.min_remaining)
            .field("hedges", &self.hedges)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn delay(&self) -> Option<Duration> {
        match &self.delay {
            DelayState::Fixed(d) => Some(*d),
            DelayState::Learned(w) => w.delay(),
        }
    }

    /// Per request: pay into the budget, and say after how long a hedge would
    /// fire, or `None` if this request cannot hedge at all (cold window, empty budget).
    pub(crate) fn on_request(&self) -> Option<Duration> {
        self.first_attempts.increment(1);
        if self.max_extra == 0 {
            return None;
        }
        if let Some(b) = &self.budget {
            b.deposit();
            if !b.can_afford() {
                return None;
            }
        }
        self.delay()
    }

    /// Pays for one extra attempt.
    pub(crate) fn try_hedge(&self) -> bool {
        let paid = self.budget.as_ref().is_none_or(Budget::try_withdraw);
        if paid {
            self.hedges.fetch_add(1, Ordering::Relaxed);
            self.hedge_attempts.increment(1);
        }
        paid
    }

    /// Whether successes are recorded (a learned delay).
    pub(crate) fn learns(&self) -> bool {
        matches!(self.delay, DelayState::Learned(_))
    }

    /// A success that completed in the poll that started it (no wait, no clock read).
    pub(crate) fn record_immediate_success(&self) {
        if let DelayState::Learned(w) = &self.delay {
            w.record_current(Duration::ZERO);
        }
    }

    /// A successful attempt's own latency, for a learned delay.
    pub(crate) fn record_success(&self, attempt_started: Instant, now: Instant) {
        if let DelayState::Learned(w) = &self.delay {
            let since_origin = now.saturating_duration_since(self.origin);
            w.record(
                u64::try_from(since_origin.as_nanos()).unwrap_or(u64::MAX),
                now.saturating_duration_since(attempt_started),
            );
        }
    }
}
