use std::fmt;
use std::num::NonZeroUsize;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{call_span, BoxError, Classify, Deadline, ErrorsAsFailures, HasDeadline};
use tower_layer::Layer;
use tower_service::Service;

use super::compose::{Reduce, Then};
use super::future::ResponseFuture;
use super::scatter::{Scatter, Split};
use super::Mode;

/// Scatter-gather: sends one request to N branches and gathers their results into a
/// [`Gathered`](super::Gathered). See the [module docs](super).
#[derive(Clone)]
pub struct FanOut<T, C = ErrorsAsFailures> {
    scatter: T,
    mode: Mode,
    width: NonZeroUsize,
    timeout: Option<Duration>,
    classify: C,
}

/// The default width of a fan-out: at most 32 branches in flight at once per request.
/// Wide enough for a search over shards or a page of lookups; a bound, because unbounded
/// fan-out is what the project exists to stop. Set [`FanOut::width`] for more.
pub const DEFAULT_WIDTH: NonZeroUsize = NonZeroUsize::new(32).expect("32 is not zero");

// === impl FanOut ===

impl<T> FanOut<T> {
    /// A fan-out over `scatter` ([`Broadcast`](super::Broadcast), [`Split`] or your own),
    /// in [`Mode::All`], at most [`DEFAULT_WIDTH`] branches in flight, no timeout of its
    /// own.
    pub const fn new(scatter: T) -> Self {
        Self {
            scatter,
            mode: Mode::All,
            width: DEFAULT_WIDTH,
            timeout: None,
            classify: ErrorsAsFailures,
        }
    }
}

impl<S, F> FanOut<Split<S, F>> {
    /// One service, N requests: `split` turns each request into the branches' requests.
    pub const fn split(service: S, split: F) -> Self {
        Self::new(Split::new(service, split))
    }
}

impl<T, C> FanOut<T, C> {
    /// When to return (default [`Mode::All`]).
    #[must_use]
    pub const fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// At most `width` branches in flight at once (default [`DEFAULT_WIDTH`]: unbounded
    /// fan-out is what melts a dependency); the others start in order as slots free.
    #[must_use]
    pub const fn width(mut self, width: NonZeroUsize) -> Self {
        self.width = width;
        self
    }

    /// Return what finished after `timeout` (or at the request's own
    /// [`Deadline`], whichever is sooner), cancelling the rest.
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Which results count as successes for [`Mode::FirstSuccess`] and [`Mode::Quorum`]
    /// (default [`ErrorsAsFailures`]).
    #[must_use]
    pub fn classify<D>(self, classify: D) -> FanOut<T, D> {
        FanOut {
            scatter: self.scatter,
            mode: self.mode,
            width: self.width,
            timeout: self.timeout,
            classify,
        }
    }

    /// Maps the gathered result (a reducer: merge shard answers, count votes, pick the
    /// best...). `reduce` runs once per call.
    pub fn reduce<G>(self, reduce: G) -> Reduce<Self, G> {
        Reduce::new(self, reduce)
    }

    /// A second phase: the (usually reduced) result of this one is the request of
    /// `next`, e.g. another fan-out built from the first phase's answers.
    pub fn then<B>(self, next: B) -> Then<Self, B> {
        Then::new(self, next)
    }

    /// The scatter (the branches' services, or the split service). Not named `get_ref`:
    /// a fan-out has no single inner service.
    pub fn scatter(&self) -> &T {
        &self.scatter
    }

    /// The scatter, mutably.
    pub fn scatter_mut(&mut self) -> &mut T {
        &mut self.scatter
    }

    /// Consumes `self`, returning the scatter.
    pub fn into_scatter(self) -> T {
        self.scatter
    }

    /// The scatter, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.scatter
    }

    /// Consumes `self`, returning the scatter.
    pub fn into_inner(self) -> T {
        self.scatter
    }
}

impl<T: fmt::Debug, C: fmt::Debug> fmt::Debug for FanOut<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("scatter", &self.scatter)
            .field("mode", &self.mode)
            .field("width", &self.width)
            .field("timeout", &self.timeout)
            .field("classify", &self.classify)
            .finish()
    }
}

impl<T, C, Req> Service<Req> for FanOut<T, C>
where
    Req: HasDeadline,
    T: Scatter<Req>,
    <T::Service as Service<T::Request>>::Error: Into<BoxError>,
    C: Classify<<T::Service as Service<T::Request>>::Response, BoxError> + Clone,
{
    type Response = super::Gathered<<T::Service as Service<T::Request>>::Response>;
    type Error = BoxError;
    type Future = ResponseFuture<T::Service, T::Request, C>;

    /// Always ready: each branch readies its own service when it starts.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let deadline = match (req.deadline(), self.timeout.map(Deadline::after)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let span = call_span!("palisade::fanout", "palisade.fan_out");
        let _scope = span.scope();
        let branches = self.scatter.scatter(req);
        ResponseFuture::new(
            branches,
            self.mode,
            self.width,
            deadline,
            self.classify.clone(),
            span,
        )
    }
}

/// Builds a [`FanOut`] over a [`Split`] of the wrapped service.
#[derive(Clone)]
pub struct FanOutLayer<F> {
    split: F,
    mode: Mode,
    width: NonZeroUsize,
    timeout: Option<Duration>,
}

impl<F> FanOutLayer<F> {
    /// Each request becomes the requests `split` yields, one branch each.
    pub const fn split(split: F) -> Self {
        Self {
            split,
            mode: Mode::All,
            width: DEFAULT_WIDTH,
            timeout: None,
        }
    }

    /// See [`FanOut::mode`].
    #[must_use]
    pub const fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// See [`FanOut::width`].
    #[must_use]
    pub const fn width(mut self, width: NonZeroUsize) -> Self {
        self.width = width;
        self
    }

    /// See [`FanOut::timeout`].
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<F> fmt::Debug for FanOutLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOutLayer")
            .field("mode", &self.mode)
            .field("width", &self.width)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for FanOutLayer<F> {
    type Service = FanOut<Split<S, F>>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut f = FanOut::split(inner, self.split.clone())
            .mode(self.mode)
            .width(self.width);
        f.timeout = self.timeout;
        f
    }
}
