//! Observability: `tracing` events and `metrics` handles that cost nothing when unused.
//!
//! # Tracing
//!
//! Policies emit `tracing` events on decisions (at `trace`/`debug`) and state changes
//! (at `info`/`warn`) under one target per policy, so a filter such as
//! `RUST_LOG=palisade::breaker=info` selects one of them:
//!
//! | target | what |
//! |---|---|
//! | `palisade::limit` | concurrency limits: rejections, queue timeouts, resizes, adaptive updates |
//! | `palisade::rate` | rate limits: rejections, store failures |
//! | `palisade::breaker` | circuit breakers: state transitions |
//! | `palisade::deadline` | deadlines: expiries, clamped inbound deadlines |
//! | `palisade::retry` | retries: attempts, budget exhaustion |
//! | `palisade::fanout` | hedges and scatter-gather |
//! | `palisade::offload` | offload pools: rejections, panics, orphaned calls, worker restarts |
//!
//! `tracing` caches per call site whether anyone listens, so with no subscriber an event
//! costs a relaxed load and a branch, and never allocates.
//!
//! # Metrics (feature `metrics`)
//!
//! With the feature on, policies register handles through the [`metrics`] facade when they
//! are built (so install the recorder before building layers) and only touch those handles
//! per call. With the feature off, [`Counter`], [`Gauge`] and [`Histogram`] are empty types
//! whose methods compile to nothing. Every metric has the labels `policy` (e.g.
//! `"concurrency_limit"`) and `name` (the instance name given to the layer, `""` if none).
//!
//! | metric | kind | extra labels | meaning |
//! |---|---|---|---|
//! | `palisade_decisions_total` | counter | `decision` | admitted / rejected / queued / timed_out / ... |
//! | `palisade_in_flight` | gauge | | calls holding a permit now |
//! | `palisade_queued` | gauge | | calls waiting for a permit now |
//! | `palisade_limit` | gauge | | the current concurrency limit |
//! | `palisade_queue_wait_seconds` | histogram | | time spent waiting for a permit |
//! | `palisade_state` | gauge | | breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics-only |
//! | `palisade_transitions_total` | counter | `from`, `to` | breaker transitions |
//! | `palisade_attempts_total` | counter | `kind` | retries and hedges: first / retry / hedge |
//! | `palisade_orphaned_total` | counter | | offload: calls whose caller left while the job ran on |
//! | `palisade_panics_total` | counter | | offload: jobs that panicked |
//! | `palisade_restarts_total` | counter | | offload: worker processes replaced after dying or being killed |
//!
//! # Example
//!
//! ```
//! use palisade_core::observe::Counter;
//!
//! // Registered once, when the policy is built; incremented per call.
//! let rejected = Counter::register("palisade_decisions_total", "concurrency_limit", "db", &[("decision", "rejected")]);
//! rejected.increment(1);
//! ```

#[cfg(feature = "metrics")]
fn labels(
    policy: &'static str,
    name: &str,
    extra: &[(&'static str, &'static str)],
) -> Vec<metrics::Label> {
    let mut labels = Vec::with_capacity(2 + extra.len());
    labels.push(metrics::Label::from_static_parts("policy", policy));
    labels.push(metrics::Label::new("name", name.to_owned()));
    for (k, v) in extra {
        labels.push(metrics::Label::from_static_parts(k, v));
    }
    labels
}

/// A counter handle; a no-op unless the `metrics` feature is on and a recorder installed.
#[derive(Clone, Debug, Default)]
pub struct Counter {
    #[cfg(feature = "metrics")]
    inner: Option<metrics::Counter>,
}

impl Counter {
    /// Registers `metric` for one policy instance, with extra static labels.
    #[allow(unused_variables)]
    pub fn register(
        metric: &'static str,
        policy: &'static str,
        name: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            inner: Some(metrics::counter!(metric, labels(policy, name, extra))),
        }
    }

    /// A handle that records nothing.
    pub fn noop() -> Self {
        Self::default()
    }

    /// Adds `n`.
    #[inline]
    #[allow(unused_variables)]
    pub fn increment(&self, n: u64) {
        #[cfg(feature = "metrics")]
        if let Some(c) = &self.inner {
            c.increment(n);
        }
    }
}

/// A gauge handle; a no-op unless the `metrics` feature is on and a recorder installed.
#[derive(Clone, Debug, Default)]
pub struct Gauge {
    #[cfg(feature = "metrics")]
    inner: Option<metrics::Gauge>,
}

impl Gauge {
    /// Registers `metric` for one policy instance, with extra static labels.
    #[allow(unused_variables)]
    pub fn register(
        metric: &'static str,
        policy: &'static str,
        name: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            inner: Some(metrics::gauge!(metric, labels(policy, name, extra))),
        }
    }

    /// A handle that records nothing.
    pub fn noop() -> Self {
        Self::default()
    }

    /// Sets the value.
    #[inline]
    #[allow(unused_variables)]
    pub fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        if let Some(g) = &self.inner {
            g.set(value);
        }
    }

    /// Adds `delta`.
    #[inline]
    #[allow(unused_variables)]
    pub fn increment(&self, delta: f64) {
        #[cfg(feature = "metrics")]
        if let Some(g) = &self.inner {
            g.increment(delta);
        }
    }

    /// Subtracts `delta`.
    #[inline]
    #[allow(unused_variables)]
    pub fn decrement(&self, delta: f64) {
        #[cfg(feature = "metrics")]
        if let Some(g) = &self.inner {
            g.decrement(delta);
        }
    }
}

/// A histogram handle; a no-op unless the `metrics` feature is on and a recorder installed.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    #[cfg(feature = "metrics")]
    inner: Option<metrics::Histogram>,
}

impl Histogram {
    /// Registers `metric` for one policy instance, with extra static labels.
    #[allow(unused_variables)]
    pub fn register(
        metric: &'static str,
        policy: &'static str,
        name: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            inner: Some(metrics::histogram!(metric, labels(policy, name, extra))),
        }
    }

    /// A handle that records nothing.
    pub fn noop() -> Self {
        Self::default()
    }

    /// Records one value.
    #[inline]
    #[allow(unused_variables)]
    pub fn record(&self, value: f64) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.inner {
            h.record(value);
        }
    }
}
