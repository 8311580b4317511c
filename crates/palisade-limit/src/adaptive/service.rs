use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::observe::CallSpan;
use palisade_core::stripe::{self, Lane, Lanes};
use palisade_core::{call_span, BoxError, Classify, ErrorsAsFailures};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::algorithm::{Algorithm, InvalidAlgorithm};
use super::window::Window;
use crate::concurrency::{
    ByClass, ConcurrencyLimitBuilder, ConcurrencyLimitLayer, Fifo, InvalidConcurrencyLimit, OnFull,
};
use crate::LimitHandle;

/// A limit's response future that knows whether its call was admitted (so its outcome is
/// evidence about the dependency) or shed by the limit itself. Implemented by the response
/// future of [`ConcurrencyLimit`](crate::ConcurrencyLimit) (whatever its queue discipline),
/// the limit an adaptive limit drives.
pub trait Admitted {
    /// Whether the call got a permit.
    fn is_admitted(&self) -> bool;
}

impl<S: Service<Req>, Req> Admitted for crate::concurrency::future::ResponseFuture<S, Req> {
    fn is_admitted(&self) -> bool {
        self.admitted()
    }
}

/// The feedback loop one adaptive limit shares across services and clones.
struct Shared<C> {
    window: Window,
    algorithm: Mutex<Box<dyn Algorithm>>,
    handle: LimitHandle,
    classify: C,
}

impl<C> Shared<C> {
    /// Records one admitted call. `now` is the time it completed if the caller already read
    /// the clock; otherwise it is read here, and only if the sample counts. So is
    /// `in_flight` (the calls in flight when this one was admitted): reading it sums the
    /// limit's per-core stripes, which a call that is no sample should not touch.
    fn record(
        &self,
        rtt: Duration,
        in_flight: impl FnOnce() -> usize,
        dropped: bool,
        now: Option<Instant>,
    ) {
        if !dropped && rtt < self.window.rtt_floor() {
            // Not a sample (and not worth a clock read).
            return;
        }
        let now = now.unwrap_or_else(Instant::now);
        if !self.window.record(rtt, in_flight(), dropped, now) {
            return;
        }
        // One caller per boundary updates; the others carry on (no waiting on the path).
        let Ok(mut algorithm) = self.algorithm.try_lock() else {
            return;
        };
        let Some(sample) = self.window.close(now) else {
            return;
        };
        let new = algorithm.update(&sample).max(1);
        drop(algorithm);
        if new != self.handle.limit() {
            // Refused only for 0 (or more than the semaphore counts), which `max(1)` and the
            // algorithms' own maximum rule out.
            let _ = self.handle.set_limit(new);
            tracing::debug!(target: "palisade::limit", ?sample, new, "adaptive limit updated");
        }
    }
}

/// An adaptive concurrency limit; see the [module docs](super). `L` is the limit it
/// drives: a [`ConcurrencyLimitLayer`] whose queue is FIFO, or served by criticality
/// ([`AdaptiveLimitBuilder::criticality`]).
pub struct AdaptiveLimitLayer<C = ErrorsAsFailures, L = ConcurrencyLimitLayer> {
    limit: L,
    shared: Lanes<Shared<C>>,
}

impl<C, L: Clone> Clone for AdaptiveLimitLayer<C, L> {
    fn clone(&self) -> Self {
        Self {
            limit: self.limit.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<C, L: fmt::Debug> fmt::Debug for AdaptiveLimitLayer<C, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitLayer")
            .field("limit", &self.limit)
            .field("window", &self.shared.window)
            .finish()
    }
}

/// Builds an [`AdaptiveLimitLayer`]; see [`AdaptiveLimitLayer::builder`]. `Q` is the
/// queue discipline of the limit it drives ([`Fifo`], or [`ByClass`] from
/// [`criticality`](Self::criticality)).
#[must_use]
pub struct AdaptiveLimitBuilder<C = ErrorsAsFailures, Q = Fifo> {
    algorithm: Box<dyn Algorithm>,
    /// The limit's own configuration (its initial size is the algorithm's).
    limit: ConcurrencyLimitBuilder<Q>,
    classify: C,
    min_window: Duration,
    min_samples: u64,
    rtt_floor: Duration,
}

impl<C, Q: fmt::Debug> fmt::Debug for AdaptiveLimitBuilder<C, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitBuilder")
            .field("limit", &self.limit)
            .field("min_window", &self.min_window)
            .field("min_samples", &self.min_samples)
            .finish()
    }
}

/// Invalid configuration of an [`AdaptiveLimitLayer`], reported by `build()`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum InvalidAdaptiveLimit {
    /// The limit's own configuration (its queue, its initial size).
    Limit(InvalidConcurrencyLimit),
    /// The algorithm's settings.
    Algorithm(InvalidAlgorithm),
}

impl fmt::Display for InvalidAdaptiveLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limit(e) => e.fmt(f),
            Self::Algorithm(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InvalidAdaptiveLimit {}

// === impl AdaptiveLimitLayer ===

impl AdaptiveLimitLayer {
    /// Configures an adaptive limit driven by `algorithm`, starting at its initial limit.
    /// Defaults: wait when full, errors as failures (overload errors as drops), windows of at
    /// least 100 ms and 10 samples, RTTs under 100 µs ignored.
    pub fn builder(algorithm: impl Algorithm) -> AdaptiveLimitBuilder {
        let limit = ConcurrencyLimitLayer::builder(algorithm.initial_limit()).on_full(OnFull::Wait);
        AdaptiveLimitBuilder {
            algorithm: Box::new(algorithm),
            limit,
            classify: ErrorsAsFailures,
            min_window: Duration::from_millis(100),
            min_samples: 10,
            rtt_floor: Duration::from_micros(100),
        }
    }
}

impl<C, Q> AdaptiveLimitLayer<C, ConcurrencyLimitLayer<Q>> {
    /// The limit's handle: live limit, in-flight and queued counts (by class too).
    pub fn handle(&self) -> LimitHandle {
        self.limit.handle()
    }
}

impl<S, C, L: Layer<S>> Layer<S> for AdaptiveLimitLayer<C, L> {
    type Service = AdaptiveLimit<L::Service, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit {
            inner: self.limit.layer(inner),
            shared: self.shared.clone(),
        }
    }
}

// === impl AdaptiveLimitBuilder ===

impl<C, Q> AdaptiveLimitBuilder<C, Q> {
    /// Shorthand for `on_full(OnFull::Reject)`.
    pub fn reject(self) -> Self {
        let limit = self.limit.reject();
        Self { limit, ..self }
    }

    /// How outcomes are classified; an outcome marked overloaded is a drop.
    pub fn classify<C2>(self, classify: C2) -> AdaptiveLimitBuilder<C2, Q> {
        AdaptiveLimitBuilder {
            algorithm: self.algorithm,
            limit: self.limit,
            classify,
            min_window: self.min_window,
            min_samples: self.min_samples,
            rtt_floor: self.rtt_floor,
        }
    }

    /// Serves the limit's queue by criticality (see
    /// [`ConcurrencyLimitBuilder::criticality`]): critical before default before
    /// sheddable, a full queue evicting the newest lower-class waiter. As the algorithm
    /// shrinks the limit, fewer permits free up, so the sheddable requests are the ones that
    /// wait and are shed. Needs a [`queue`](Self::queue).
    pub fn criticality<F: Clone>(self, classify: F) -> AdaptiveLimitBuilder<C, ByClass<F>> {
        AdaptiveLimitBuilder {
            algorithm: self.algorithm,
            limit: self.limit.criticality(classify),
            classify: self.classify,
            min_window: self.min_window,
            min_samples: self.min_samples,
            rtt_floor: self.rtt_floor,
        }
    }

    /// A window closes once it is at least `min_time` old and holds `min_samples` calls
    /// (defaults 100 ms, 10), or at once on a drop from a call sent after the last window
    /// that reported one.
    pub fn window(mut self, min_time: Duration, min_samples: u64) -> Self {
        self.min_window = min_time;
        self.min_samples = min_samples;
        self
    }

    /// RTTs under this are not samples (default 100 µs).
    pub fn rtt_floor(mut self, floor: Duration) -> Self {
        self.rtt_floor = floor;
        self
    }

    /// Names the limit in tracing events and metrics.
    pub fn name(self, name: impl Into<Arc<str>>) -> Self {
        let limit = self.limit.name(name);
        Self { limit, ..self }
    }

    /// Checks the algorithm's settings and the window, then builds the layer around the
    /// limit `build` makes.
    fn finish<Q2>(
        self,
        build: impl FnOnce(
            ConcurrencyLimitBuilder<Q>,
        ) -> Result<ConcurrencyLimitLayer<Q2>, InvalidConcurrencyLimit>,
    ) -> Result<AdaptiveLimitLayer<C, ConcurrencyLimitLayer<Q2>>, InvalidAdaptiveLimit> {
        self.algorithm
            .validate()
            .map_err(InvalidAdaptiveLimit::Algorithm)?;
        if self.min_samples == 0 {
            return Err(InvalidAdaptiveLimit::Algorithm(InvalidAlgorithm::Zero(
                "window's minimum samples",
            )));
        }
        let limit = build(self.limit).map_err(InvalidAdaptiveLimit::Limit)?;
        let handle = limit.handle();
        Ok(AdaptiveLimitLayer {
            limit,
            // Per-stripe lanes: a call's future holds its thread's (see `ResponseFuture`).
            shared: Lanes::new(
                Shared {
                    window: Window::new(self.min_window, self.min_samples, self.rtt_floor),
                    algorithm: Mutex::new(self.algorithm),
                    handle,
                    classify: self.classify,
                },
                stripe::stripes(),
            ),
        })
    }
}

impl<C> AdaptiveLimitBuilder<C, Fifo> {
    /// What happens when the limit is full (default [`OnFull::Wait`]).
    pub fn on_full(self, on_full: OnFull) -> Self {
        let limit = self.limit.on_full(on_full);
        Self { limit, ..self }
    }

    /// Shorthand for `on_full(OnFull::Queue { max_queued, max_wait })`.
    pub fn queue(self, max_queued: usize, max_wait: Duration) -> Self {
        let limit = self.limit.queue(max_queued, max_wait);
        Self { limit, ..self }
    }

    /// Validates and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidAdaptiveLimit`] for an invalid queue configuration, an algorithm whose
    /// settings cannot work ([`Algorithm::validate`]), or a window of 0 samples.
    pub fn build(self) -> Result<AdaptiveLimitLayer<C>, InvalidAdaptiveLimit> {
        self.finish(ConcurrencyLimitBuilder::<Fifo>::build)
    }
}

impl<C, F> AdaptiveLimitBuilder<C, ByClass<F>> {
    /// At most `max_queued` calls wait, each at most `max_wait` and never past the
    /// request's deadline; served by criticality.
    pub fn queue(self, max_queued: usize, max_wait: Duration) -> Self {
        let limit = self.limit.queue(max_queued, max_wait);
        Self { limit, ..self }
    }

    /// Validates and builds the layer.
    ///
    /// # Errors
    ///
    /// As the FIFO `build`, and [`InvalidConcurrencyLimit::CriticalityWithoutQueue`] (in
    /// [`InvalidAdaptiveLimit::Limit`]) without a queue.
    pub fn build(
        self,
    ) -> Result<AdaptiveLimitLayer<C, ConcurrencyLimitLayer<ByClass<F>>>, InvalidAdaptiveLimit>
    {
        self.finish(ConcurrencyLimitBuilder::<ByClass<F>>::build)
    }
}

/// An adaptive concurrency limit; built by [`AdaptiveLimitLayer`]. `L` is the limit
/// service it resizes ([`ConcurrencyLimit`](crate::ConcurrencyLimit)) around the inner
/// service.
pub struct AdaptiveLimit<L, C = ErrorsAsFailures> {
    inner: L,
    shared: Lanes<Shared<C>>,
}

impl<L: Clone, C> Clone for AdaptiveLimit<L, C> {
    fn clone(&self) -> Self {
        // The inner limit's Clone resets any reservation.
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<L: fmt::Debug, C> fmt::Debug for AdaptiveLimit<L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<L, C> AdaptiveLimit<L, C> {
    // The inner service is the limit it resizes (whose own `get_ref` reaches the service
    // below it).
    palisade_core::inner_accessors!(L);
}

impl<L, C, Req> Service<Req> for AdaptiveLimit<L, C>
where
    L: Service<Req, Error = BoxError>,
    L::Future: Admitted,
    C: Classify<L::Response, BoxError> + Send + Sync + 'static,
{
    type Response = L::Response;
    type Error = BoxError;
    type Future = ResponseFuture<L::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span = call_span!("palisade::limit", "palisade.adaptive_limit");
        let _scope = span.scope();
        ResponseFuture {
            inner: self.inner.call(req),
            start: None,
            in_flight: 0,
            shared: self.shared.lane().clone(),
            span,
        }
    }
}

pin_project! {
    /// Response future of [`AdaptiveLimit`]: records the call's outcome when it completes.
    /// A future dropped before completion records nothing.
    ///
    /// The RTT runs from the first poll after the call is admitted (not from `call`, which
    /// in queue mode would count the wait in our own queue) to completion. A call that
    /// completes in the poll that admits it reads no clock: its RTT is taken as zero, under
    /// any RTT floor, so it is not a sample (unless it was a drop). The calls in flight are
    /// read with the clock, when the call is admitted (or, for such a drop, as it
    /// completes): not on the path of a call that is no sample.
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        start: Option<Instant>,
        // The calls in flight when `start` was read (0 until then).
        in_flight: usize,
        // This thread's lane: its reference count is not shared with other cores' calls.
        shared: Lane<Shared<C>>,
        span: CallSpan,
    }
}

impl<F, T, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, BoxError>> + Admitted,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let out = match this.inner.as_mut().poll(cx) {
            Poll::Ready(out) => out,
            Poll::Pending => {
                // Admitted and now waiting on the dependency: its RTT starts here.
                if this.start.is_none() && this.inner.as_ref().get_ref().is_admitted() {
                    *this.start = Some(Instant::now());
                    *this.in_flight = this.shared.handle.in_flight();
                }
                return Poll::Pending;
            }
        };
        // Only admitted calls are samples: a local shed says nothing about the dependency.
        if this.inner.as_ref().get_ref().is_admitted() {
            // Local rejections from layers below (a rate limit, a breaker) say nothing
            // about the dependency either: `health()` ignores them.
            let outcome = palisade_core::classify::outcome(&this.shared.classify, &out);
            if outcome.health() != palisade_core::OutcomeKind::Ignored {
                let (rtt, now) = match *this.start {
                    Some(start) => {
                        let now = Instant::now();
                        (now.saturating_duration_since(start), Some(now))
                    }
                    None => (Duration::ZERO, None),
                };
                // Read when admitted; a call done in its first poll (a drop, if it is a
                // sample at all) reads it now.
                let (started, in_flight) = (this.start.is_some(), *this.in_flight);
                let shared: &Shared<C> = this.shared;
                let in_flight = || {
                    if started {
                        in_flight
                    } else {
                        shared.handle.in_flight()
                    }
                };
                shared.record(rtt, in_flight, outcome.is_overloaded(), now);
            }
        }
        Poll::Ready(out)
    }
}

impl<F: fmt::Debug, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
