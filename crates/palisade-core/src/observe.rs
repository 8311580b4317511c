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
//! | `palisade::coalesce` | coalescing: joins, bypasses |
//! | `palisade::fallback` | fallbacks: when they answer, when they fail |
//! | `palisade::fault` | fault injection: injected faults |
//!
//! `tracing` caches per call site whether anyone listens, so with no subscriber an event
//! costs a relaxed load and a branch, and never allocates.
//!
//! # Spans
//!
//! Each call through a policy runs in a `debug` span of that policy's target, named
//! `palisade.<policy>` (`palisade.retry`, `palisade.circuit_breaker`, …) with the instance
//! `name` as a field where the layer has one. A layer opens its span in `call` and enters it
//! there and in every poll of its response future, so the layers below nest inside it and
//! every decision event of the call is a child of its policy's span: a trace of one request
//! through the canonical stack reads `palisade.deadline > palisade.retry > palisade.hedge >
//! palisade.circuit_breaker > …`. When `debug` is off for the target (or nothing listens),
//! [`CallSpan`] is an empty `Option` of one word: no allocation, no field evaluated, one
//! relaxed load per call.
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

/// The `debug` span of one call through one policy, or nothing when nobody listens at
/// `debug`; see [Spans](self#spans).
///
/// One word in the response future; boxed only when the span is enabled, so a disabled
/// span costs no allocation and no size beyond the pointer. Make one with [`call_span!`](crate::call_span),
/// enter it in `call` ([`scope`](Self::scope)) and in every `poll` ([`enter`](Self::enter)).
///
/// ```
/// use palisade_core::call_span;
///
/// let span = call_span!("palisade::limit", "palisade.concurrency_limit", name = "db");
/// // No subscriber is installed: the span is disabled and holds nothing.
/// assert!(span.is_disabled());
/// let _entered = span.enter(); // a no-op here; enters the span when enabled
/// ```
#[derive(Default)]
pub struct CallSpan(Option<Box<tracing::Span>>);

impl CallSpan {
    /// Keeps `span` if it is enabled; see [`call_span!`](crate::call_span).
    #[inline]
    pub fn new(span: tracing::Span) -> Self {
        if span.is_disabled() {
            Self(None)
        } else {
            Self(Some(Box::new(span)))
        }
    }

    /// No span.
    pub const fn none() -> Self {
        Self(None)
    }

    /// Whether the span is off (nobody listens at `debug` for its target).
    pub fn is_disabled(&self) -> bool {
        self.0.is_none()
    }

    /// Enters the span until the guard is dropped; nothing when it is disabled.
    #[inline]
    pub fn enter(&self) -> Option<tracing::span::Entered<'_>> {
        self.0.as_deref().map(tracing::Span::enter)
    }

    /// Enters the span until the returned scope is dropped, for `call`: the inner call is
    /// made inside it, and the span itself stays free to move into the response future:
    ///
    /// ```text
    /// let span = call_span!("palisade::limit", "palisade.concurrency_limit");
    /// let _scope = span.scope();
    /// ResponseFuture::new(self.inner.call(req), permit, span) // built in place
    /// ```
    ///
    /// Nothing runs between the inner call and the move of its future into the response
    /// future, so the compiler writes the (large, nested) inner future in place; the scope
    /// exits when `call` returns. A disabled span's scope is empty.
    #[inline]
    pub fn scope(&self) -> CallScope {
        // The common case (no span) stays inline: one test of a pointer.
        match self.0.as_deref() {
            None => CallScope(None),
            Some(span) => open_scope(span),
        }
    }
}

#[cold]
#[inline(never)]
fn open_scope(span: &tracing::Span) -> CallScope {
    CallScope(Some(Box::new(span.clone().entered())))
}

impl Drop for CallSpan {
    #[inline]
    fn drop(&mut self) {
        // The common case (no span) stays inline: one test of a pointer.
        if let Some(span) = self.0.take() {
            close(span);
        }
    }
}

#[cold]
#[inline(never)]
fn close(span: Box<tracing::Span>) {
    drop(span);
}

/// The scope of [`CallSpan::scope`]: the span is entered until this is dropped.
#[derive(Debug)]
pub struct CallScope(Option<Box<tracing::span::EnteredSpan>>);

impl Drop for CallScope {
    #[inline]
    fn drop(&mut self) {
        // As for `CallSpan`: the empty scope's drop is one inline test.
        if let Some(entered) = self.0.take() {
            leave(entered);
        }
    }
}

#[cold]
#[inline(never)]
fn leave(entered: Box<tracing::span::EnteredSpan>) {
    drop(entered);
}

impl std::fmt::Debug for CallSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(span) => span.fmt(f),
            None => f.write_str("CallSpan(disabled)"),
        }
    }
}

/// Opens the `debug` [`CallSpan`] of one call: `call_span!(target, name, fields…)`, with the
/// target and span name as string literals and fields as in `tracing::debug_span!`
/// (evaluated only when the span is enabled).
#[macro_export]
macro_rules! call_span {
    ($target:literal, $name:literal $(, $($fields:tt)*)?) => {
        // The global max level first: with no subscriber (or none listening at `debug`)
        // that is one relaxed load, and no span is built at all.
        if $crate::observe::__tracing::level_enabled!($crate::observe::__tracing::Level::DEBUG) {
            $crate::observe::CallSpan::new($crate::observe::__tracing::debug_span!(
                target: $target,
                $name
                $(, $($fields)*)?
            ))
        } else {
            $crate::observe::CallSpan::none()
        }
    };
}

#[doc(hidden)]
pub use tracing as __tracing;
