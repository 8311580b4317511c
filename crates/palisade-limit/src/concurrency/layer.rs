use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::discipline::{ByClass, Fifo, NoQueue};
use super::semaphore::FastSemaphore;
use super::service::ConcurrencyLimit;
use super::shared::{LimitHandle, Shared, SharedLanes};

/// What a call does when the limit is full (core's one bounded-resource choice). See the
/// [module docs](super).
pub use palisade_core::admission::OnFull;

/// Invalid configuration of a concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidConcurrencyLimit {
    /// The limit was 0: nothing could ever run.
    ZeroLimit,
    /// The limit exceeds what the semaphore can count (`usize::MAX >> 3`).
    TooLarge(usize),
    /// A queue of 0 places: use [`OnFull::Reject`].
    ZeroQueue,
    /// A queue wait of 0: use [`OnFull::Reject`].
    ZeroWait,
    /// A queue served [by criticality](ConcurrencyLimitBuilder::criticality) without a
    /// queue: criticality orders a queue, so set one with
    /// [`queue`](ConcurrencyLimitBuilder::queue).
    CriticalityWithoutQueue,
}

impl InvalidConcurrencyLimit {
    pub(crate) fn check_limit(limit: usize) -> Result<(), Self> {
        if limit == 0 {
            Err(Self::ZeroLimit)
        } else if limit > FastSemaphore::MAX_PERMITS {
            Err(Self::TooLarge(limit))
        } else {
            Ok(())
        }
    }

    fn check(limit: usize, on_full: OnFull) -> Result<(), Self> {
        Self::check_limit(limit)?;
        match on_full.check_queue() {
            Err("queue") => Err(Self::ZeroQueue),
            Err(_) => Err(Self::ZeroWait),
            Ok(()) => Ok(()),
        }
    }
}

impl fmt::Display for InvalidConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroLimit => f.write_str("concurrency limit must be at least 1"),
            Self::TooLarge(n) => write!(
                f,
                "concurrency limit {n} exceeds the maximum of {}",
                FastSemaphore::MAX_PERMITS
            ),
            Self::ZeroQueue => f.write_str("a queue needs at least 1 place; use OnFull::Reject"),
            Self::ZeroWait => f.write_str("a queue wait must be longer than 0; use OnFull::Reject"),
            Self::CriticalityWithoutQueue => {
                f.write_str("criticality orders a queue: set one with queue(max_queued, max_wait)")
            }
        }
    }
}

impl std::error::Error for InvalidConcurrencyLimit {}

/// Limits the calls in flight through every service it builds to one shared limit.
///
/// Cloning the layer shares the limit too. `Q` is the queue
/// [discipline](super::discipline): [`Fifo`] (the default), [`ByClass`] (by criticality),
/// or [`NoQueue`] (wait or reject only, which needs nothing of the request or the inner
/// service: what [`new`](Self::new) and a [`builder`](Self::builder) without a queue
/// make). See the [module docs](super).
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer<Q = Fifo> {
    shared: SharedLanes,
    on_full: OnFull,
    queue: Q,
}

/// Builds a [`ConcurrencyLimitLayer`]; see [`ConcurrencyLimitLayer::builder`]. `Q` is the
/// queue discipline the layer will have.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConcurrencyLimitBuilder<Q = Fifo> {
    limit: usize,
    on_full: OnFull,
    name: Arc<str>,
    queue: Q,
}

// === impl ConcurrencyLimitLayer ===

impl ConcurrencyLimitLayer<NoQueue> {
    /// At most `limit` calls in flight; callers wait in `poll_ready` when it is full
    /// ([`OnFull::Wait`], tower's behaviour).
    ///
    /// # Panics
    ///
    /// If `limit` is 0 or too large; use [`ConcurrencyLimitLayer::builder`] to get an error
    /// instead.
    pub fn new(limit: usize) -> Self {
        match Self::builder(limit).build() {
            Ok(layer) => layer,
            Err(e) => panic!("invalid concurrency limit: {e}"),
        }
    }

    /// Configures a limit of `limit` calls in flight (waiting when full, until
    /// [`reject`](ConcurrencyLimitBuilder::reject), [`queue`](ConcurrencyLimitBuilder::queue)
    /// or [`on_full`](ConcurrencyLimitBuilder::on_full) says otherwise).
    pub fn builder(limit: usize) -> ConcurrencyLimitBuilder<NoQueue> {
        ConcurrencyLimitBuilder {
            limit,
            on_full: OnFull::Wait,
            name: Arc::from(""),
            queue: NoQueue,
        }
    }
}

impl<Q> ConcurrencyLimitLayer<Q> {
    /// A handle on this layer's limit: live counts, and resizing.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, Q: Clone> Layer<S> for ConcurrencyLimitLayer<Q> {
    type Service = ConcurrencyLimit<S, Q>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_parts(inner, self.shared.clone(), self.on_full, self.queue.clone())
    }
}

// === impl ConcurrencyLimitBuilder ===

impl<Q> ConcurrencyLimitBuilder<Q> {
    /// Names this limit in tracing events and metrics labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Shorthand for `on_full(OnFull::Reject)`.
    pub fn reject(mut self) -> Self {
        self.on_full = OnFull::Reject;
        self
    }

    fn with_queue<Q2>(self, on_full: OnFull, queue: Q2) -> ConcurrencyLimitBuilder<Q2> {
        ConcurrencyLimitBuilder {
            limit: self.limit,
            on_full,
            name: self.name,
            queue,
        }
    }

    /// Serves the queue by criticality, `classify` telling each request's
    /// [`Criticality`](crate::criticality::Criticality)
    /// (see [`ByClass`]; with feature `http`,
    /// [`criticality::from_header`](crate::criticality) and `from_extension` read it from
    /// an `http::Request`). Needs a [`queue`](Self::queue): `build()` refuses it otherwise.
    ///
    /// ```
    /// use palisade_core::WithDeadline;
    /// use palisade_limit::criticality::Criticality;
    /// use palisade_limit::ConcurrencyLimitLayer;
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), palisade_limit::InvalidConcurrencyLimit> {
    /// let layer = ConcurrencyLimitLayer::builder(64)
    ///     .queue(256, Duration::from_millis(100))
    ///     .criticality(|req: &WithDeadline<&str>| {
    ///         if req.request.starts_with("user:") { Criticality::Critical } else { Criticality::Sheddable }
    ///     })
    ///     .name("embeddings")
    ///     .build()?;
    /// assert_eq!(layer.handle().queued_by(Criticality::Sheddable), 0);
    /// # Ok(()) }
    /// ```
    pub fn criticality<F>(self, classify: F) -> ConcurrencyLimitBuilder<ByClass<F>>
    where
        F: Clone,
    {
        let on_full = self.on_full;
        self.with_queue(on_full, ByClass::new(classify))
    }
}

impl ConcurrencyLimitBuilder<NoQueue> {
    /// Sets what happens when the limit is full (default [`OnFull::Wait`]). The mode is a
    /// run-time value, so the limit keeps what a queue needs ([`Fifo`]).
    pub fn on_full(self, on_full: OnFull) -> ConcurrencyLimitBuilder<Fifo> {
        self.with_queue(on_full, Fifo)
    }

    /// Shorthand for `on_full(OnFull::Queue { max_queued, max_wait })`.
    pub fn queue(self, max_queued: usize, max_wait: Duration) -> ConcurrencyLimitBuilder<Fifo> {
        self.on_full(OnFull::Queue {
            max_queued,
            max_wait,
        })
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidConcurrencyLimit`] for a zero or too large limit.
    pub fn build(self) -> Result<ConcurrencyLimitLayer<NoQueue>, InvalidConcurrencyLimit> {
        self.build_with(Shared::new)
    }
}

impl ConcurrencyLimitBuilder<Fifo> {
    /// Sets what happens when the limit is full (default [`OnFull::Wait`]).
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

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidConcurrencyLimit`] for a zero or too large limit, or a queue of zero places
    /// or zero wait.
    pub fn build(self) -> Result<ConcurrencyLimitLayer<Fifo>, InvalidConcurrencyLimit> {
        self.build_with(Shared::new)
    }
}

impl<F> ConcurrencyLimitBuilder<ByClass<F>> {
    /// At most `max_queued` calls wait, each at most `max_wait` and never past its
    /// request's deadline; served by criticality.
    pub fn queue(mut self, max_queued: usize, max_wait: Duration) -> Self {
        self.on_full = OnFull::Queue {
            max_queued,
            max_wait,
        };
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidConcurrencyLimit`] for a zero or too large limit, a queue of zero places or
    /// zero wait, or no queue at all ([`InvalidConcurrencyLimit::CriticalityWithoutQueue`]).
    pub fn build(self) -> Result<ConcurrencyLimitLayer<ByClass<F>>, InvalidConcurrencyLimit> {
        if !matches!(self.on_full, OnFull::Queue { .. }) {
            return Err(InvalidConcurrencyLimit::CriticalityWithoutQueue);
        }
        self.build_with(Shared::by_class)
    }
}

impl<Q> ConcurrencyLimitBuilder<Q> {
    fn build_with(
        self,
        shared: fn(usize, Arc<str>) -> SharedLanes,
    ) -> Result<ConcurrencyLimitLayer<Q>, InvalidConcurrencyLimit> {
        InvalidConcurrencyLimit::check(self.limit, self.on_full)?;
        Ok(ConcurrencyLimitLayer {
            shared: shared(self.limit, self.name),
            on_full: self.on_full,
            queue: self.queue,
        })
    }
}
