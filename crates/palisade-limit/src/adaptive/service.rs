use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Classify, ErrorsAsFailures, HasDeadline};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::algorithm::{Algorithm, InvalidAlgorithm};
use super::window::Window;
use crate::concurrency::future::ResponseFuture as LimitFuture;
use crate::concurrency::{
    ConcurrencyLimit, ConcurrencyLimitLayer, InvalidConcurrencyLimit, OnFull,
};
use crate::LimitHandle;

/// The feedback loop one adaptive limit shares across services and clones.
struct Shared<C> {
    window: Window,
    algorithm: Mutex<Box<dyn Algorithm>>,
    handle: LimitHandle,
    classify: C,
}

impl<C> Shared<C> {
    /// Records one admitted call. `now` is the time it completed if the caller already read
    /// the clock; otherwise it is read here, and only if the sample counts.
    fn record(&self, rtt: Duration, in_flight: usize, dropped: bool, now: Option<Instant>) {
        if !dropped && rtt < self.window.rtt_floor() {
            // Not a sample (and not worth a clock read).
            return;
        }
        let now = now.unwrap_or_else(Instant::now);
        if !self.window.record(rtt, in_flight, dropped, now) {
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
            let _ = self.handle.set_limit(new);
            tracing::debug!(target: "palisade::limit", ?sample, new, "adaptive limit updated");
        }
    }
}

/// An adaptive concurrency limit; see the [module docs](super).
pub struct AdaptiveLimitLayer<C = ErrorsAsFailures> {
    limit: ConcurrencyLimitLayer,
    shared: Arc<Shared<C>>,
}

impl<C> Clone for AdaptiveLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            limit: self.limit.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for AdaptiveLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitLayer")
            .field("limit", &self.limit)
            .field("window", &self.shared.window)
            .finish()
    }
}

/// Builds an [`AdaptiveLimitLayer`]; see [`AdaptiveLimitLayer::builder`].
#[must_use]
pub struct AdaptiveLimitBuilder<C = ErrorsAsFailures> {
    algorithm: Box<dyn Algorithm>,
    on_full: OnFull,
    classify: C,
    min_window: Duration,
    min_samples: u64,
    rtt_floor: Duration,
    name: Arc<str>,
}

impl<C> fmt::Debug for AdaptiveLimitBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitBuilder")
            .field("on_full", &self.on_full)
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
        AdaptiveLimitBuilder {
            algorithm: Box::new(algorithm),
            on_full: OnFull::Wait,
            classify: ErrorsAsFailures,
            min_window: Duration::from_millis(100),
            min_samples: 10,
            rtt_floor: Duration::from_micros(100),
            name: Arc::from(""),
        }
    }
}

impl<C> AdaptiveLimitLayer<C> {
    /// The limit's handle: live limit, in-flight and queued counts.
    pub fn handle(&self) -> LimitHandle {
        self.limit.handle()
    }
}

impl<S, C> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit {
            inner: self.limit.layer(inner),
            shared: Arc::clone(&self.shared),
        }
    }
}

// === impl AdaptiveLimitBuilder ===

impl<C> AdaptiveLimitBuilder<C> {
    /// What happens when the limit is full (default [`OnFull::Wait`]).
    pub fn on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// Shorthand for `on_full(OnFull::Queue { max_queued, max_wait })`.
    pub fn queue(self, max_queued: usize, max_wait: Duration) -> Self {
        self.on_full(OnFull::Queue {
            max_queued,
            max_wait,
        })
    }

    /// Shorthand for `on_full(OnFull::Reject)`.
    pub fn reject(self) -> Self {
        self.on_full(OnFull::Reject)
    }

    /// How outcomes are classified; an outcome marked overloaded is a drop.
    pub fn classify<C2>(self, classify: C2) -> AdaptiveLimitBuilder<C2> {
        AdaptiveLimitBuilder {
            algorithm: self.algorithm,
            on_full: self.on_full,
            classify,
            min_window: self.min_window,
            min_samples: self.min_samples,
            rtt_floor: self.rtt_floor,
            name: self.name,
        }
    }

    /// A window closes once it is at least `min_time` old and holds `min_samples` calls
    /// (defaults 100 ms, 10).
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
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidAdaptiveLimit`] for an invalid queue configuration, an algorithm whose
    /// settings cannot work ([`Algorithm::validate`]), or a window of 0 samples.
    pub fn build(self) -> Result<AdaptiveLimitLayer<C>, InvalidAdaptiveLimit> {
        self.algorithm
            .validate()
            .map_err(InvalidAdaptiveLimit::Algorithm)?;
        if self.min_samples == 0 {
            return Err(InvalidAdaptiveLimit::Algorithm(InvalidAlgorithm::Zero(
                "window's minimum samples",
            )));
        }
        let limit = ConcurrencyLimitLayer::builder(self.algorithm.initial_limit())
            .on_full(self.on_full)
            .name(self.name)
            .build()
            .map_err(InvalidAdaptiveLimit::Limit)?;
        let handle = limit.handle();
        Ok(AdaptiveLimitLayer {
            limit,
            shared: Arc::new(Shared {
                window: Window::new(self.min_window, self.min_samples, self.rtt_floor),
                algorithm: Mutex::new(self.algorithm),
                handle,
                classify: self.classify,
            }),
        })
    }
}

/// An adaptive concurrency limit around `S`; built by [`AdaptiveLimitLayer`].
pub struct AdaptiveLimit<S, C = ErrorsAsFailures> {
    inner: ConcurrencyLimit<S>,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for AdaptiveLimit<S, C> {
    fn clone(&self) -> Self {
        // The inner limit's Clone resets any reservation.
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, C> AdaptiveLimit<S, C> {
    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, C, Req> Service<Req> for AdaptiveLimit<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: HasDeadline,
    C: Classify<S::Response, BoxError> + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let in_flight = self.shared.handle.in_flight();
        ResponseFuture {
            inner: self.inner.call(req),
            start: None,
            in_flight,
            shared: Arc::clone(&self.shared),
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
    /// any RTT floor, so it is not a sample (unless it was a drop).
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: LimitFuture<S, Req>,
        start: Option<Instant>,
        in_flight: usize,
        shared: Arc<Shared<C>>,
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let out = match this.inner.as_mut().poll(cx) {
            Poll::Ready(out) => out,
            Poll::Pending => {
                // Admitted and now waiting on the dependency: its RTT starts here.
                if this.start.is_none() && this.inner.as_ref().get_ref().admitted() {
                    *this.start = Some(Instant::now());
                }
                return Poll::Pending;
            }
        };
        // Only admitted calls are samples: a local shed says nothing about the dependency.
        if this.inner.as_ref().get_ref().admitted() {
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
                this.shared
                    .record(rtt, *this.in_flight, outcome.is_overloaded(), now);
            }
        }
        Poll::Ready(out)
    }
}

impl<S, Req, C> fmt::Debug for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
