//! [`CircuitBreakerLayer`] and its [`CircuitBreakerBuilder`].

use std::sync::Arc;
use std::time::Duration;

use palisade_core::stripe::{self, Lanes};
use palisade_core::ErrorsAsFailures;
use tower_layer::Layer;

use crate::config::{FailureModel, InvalidBreaker, OpenBackoff, Settings};
use crate::core::{Core, Template};
use crate::handle::BreakerHandle;
use crate::keyed::KeyedCircuitBreakerLayer;
use crate::machine::Transition;
use crate::CircuitBreaker;

/// Builds [`CircuitBreaker`] services that all share one breaker (see the
/// [crate docs](crate)).
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    core: Lanes<Core>,
    classify: C,
}

/// Configures a [`CircuitBreakerLayer`]; start with [`CircuitBreakerLayer::builder`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerBuilder<C = ErrorsAsFailures> {
    template: Template,
    classify: C,
}

// === impl CircuitBreakerLayer ===

impl CircuitBreakerLayer {
    /// A builder with the defaults: a count window of the last 100 calls, trip at a failure
    /// rate of 0.5 with at least 10 calls, no slow-call rule, open for 30 s, one probe, at
    /// most 60 s in half-open, every `Err` a failure.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            template: Template {
                settings: Settings::default(),
                name: Arc::from(""),
                not_ready_when_open: false,
                on_transition: None,
            },
            classify: ErrorsAsFailures,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A handle on the breaker: state, statistics, manual states.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.core.shared().clone())
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        // Every service shares the layer's breaker (decision 1).
        CircuitBreaker::from_parts(inner, self.core.clone(), self.classify.clone())
    }
}

// === impl CircuitBreakerBuilder ===

impl<C> CircuitBreakerBuilder<C> {
    /// The failure model (default: a count window of 100).
    #[must_use]
    pub fn failure_model(mut self, model: FailureModel) -> Self {
        self.template.settings.model = model;
        self
    }

    /// Trip when the window's failure rate reaches this (in `(0, 1]`, default 0.5). In
    /// half-open, the probes' failure rate is held to the same threshold.
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.template.settings.failure_rate = rate;
        self
    }

    /// Rates are only evaluated once the window holds this many calls (default 10).
    #[must_use]
    pub fn minimum_calls(mut self, n: u64) -> Self {
        self.template.settings.minimum_calls = n;
        self
    }

    /// A call slower than `duration` is slow, whether it succeeded or not; trip when the
    /// slow-call rate reaches `rate` (in `(0, 1]`). Off by default.
    #[must_use]
    pub fn slow_calls(mut self, duration: Duration, rate: f64) -> Self {
        self.template.settings.slow_call = Some((duration, rate));
        self
    }

    /// How long the breaker stays open before probing (default 30 s).
    #[must_use]
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.template.settings.open_duration = duration;
        self
    }

    /// Grow the open duration with consecutive trips (default: constant).
    #[must_use]
    pub fn open_backoff(mut self, backoff: OpenBackoff) -> Self {
        self.template.settings.backoff = Some(backoff);
        self
    }

    /// Calls admitted in half-open (default 1). Exactly this many pass per half-open
    /// phase, whatever the concurrency; a probe dropped before completion (or whose outcome
    /// is ignored) hands its slot back.
    #[must_use]
    pub fn permitted_probes(mut self, n: u32) -> Self {
        self.template.settings.permitted_probes = n;
        self
    }

    /// Reopen if the probes have not decided within this time (default 60 s; `None`: wait
    /// for them indefinitely).
    #[must_use]
    pub fn max_half_open(mut self, max: Option<Duration>) -> Self {
        self.template.settings.max_half_open = max;
        self
    }

    /// Report the open state as not ready in `poll_ready` (so a balancer routes around this
    /// endpoint), instead of being ready and failing in `call` (the default). The service
    /// then wakes itself when the breaker turns half-open.
    #[must_use]
    pub fn not_ready_when_open(mut self, yes: bool) -> Self {
        self.template.not_ready_when_open = yes;
        self
    }

    /// The instance name used in tracing events and metric labels.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.template.name = name.into();
        self
    }

    /// Seed of the jitter's random sequence (for reproducible tests).
    #[must_use]
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.template.settings.seed = seed;
        self
    }

    /// Called on every state transition, outside the breaker's lock.
    #[must_use]
    pub fn on_transition(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.template.on_transition = Some(Arc::new(f));
        self
    }

    /// How results become outcomes (default [`ErrorsAsFailures`]; e.g.
    /// `palisade_core::classify::HttpClassifier` with the `http` feature of palisade-core).
    /// Ignored outcomes count as neither success nor failure.
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            template: self.template,
            classify,
        }
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// [`InvalidBreaker`] if a setting is out of range (zero window, a rate outside
    /// `(0, 1]`, zero probes, a backoff cap below the open duration...).
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, InvalidBreaker> {
        self.template.settings.validate()?;
        Ok(CircuitBreakerLayer {
            core: Lanes::new(Core::new(&self.template), stripe::stripes()),
            classify: self.classify,
        })
    }

    /// Builds a per-key layer: `key` maps each request to a key, and each key gets its own
    /// breaker with this configuration. At most `max_keys` breakers are kept; when a new
    /// key arrives at the cap, breakers idle for `idle_timeout` are evicted first, then the
    /// least recently used.
    ///
    /// Each call looks its key up under one short lock (a hash lookup, no allocation for a
    /// known key). Every per-key breaker reports metrics under this builder's `name`; the
    /// [`KeyedHandle`](crate::KeyedHandle) gives each key's state.
    ///
    /// # Errors
    /// As [`CircuitBreakerBuilder::build`], and if `max_keys` or `idle_timeout` is 0.
    pub fn build_keyed<K, F>(
        self,
        key: F,
        max_keys: usize,
        idle_timeout: Duration,
    ) -> Result<KeyedCircuitBreakerLayer<K, F, C>, InvalidBreaker> {
        self.template.settings.validate()?;
        KeyedCircuitBreakerLayer::new(self.template, self.classify, key, max_keys, idle_timeout)
    }
}
