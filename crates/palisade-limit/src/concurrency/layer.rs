use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::semaphore::FastSemaphore;
use super::service::ConcurrencyLimit;
use super::shared::{LimitHandle, Shared};

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
        }
    }
}

impl std::error::Error for InvalidConcurrencyLimit {}

/// Limits the calls in flight through every service it builds to one shared limit.
///
/// Cloning the layer shares the limit too. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    shared: Arc<Shared>,
    on_full: OnFull,
}

/// Builds a [`ConcurrencyLimitLayer`]; see [`ConcurrencyLimitLayer::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ConcurrencyLimitBuilder {
    limit: usize,
    on_full: OnFull,
    name: Arc<str>,
}

// === impl ConcurrencyLimitLayer ===

impl ConcurrencyLimitLayer {
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

    /// Configures a limit of `limit` calls in flight.
    pub fn builder(limit: usize) -> ConcurrencyLimitBuilder {
        ConcurrencyLimitBuilder {
            limit,
            on_full: OnFull::Wait,
            name: Arc::from(""),
        }
    }

    /// A handle on this layer's limit: live counts, and resizing.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_parts(inner, Arc::clone(&self.shared), self.on_full)
    }
}

// === impl ConcurrencyLimitBuilder ===

impl ConcurrencyLimitBuilder {
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

    /// Shorthand for `on_full(OnFull::Reject)`.
    pub fn reject(self) -> Self {
        self.on_full(OnFull::Reject)
    }

    /// Names this limit in tracing events and metrics labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidConcurrencyLimit`] for a zero or too large limit, or a queue of zero places
    /// or zero wait.
    pub fn build(self) -> Result<ConcurrencyLimitLayer, InvalidConcurrencyLimit> {
        InvalidConcurrencyLimit::check(self.limit, self.on_full)?;
        Ok(ConcurrencyLimitLayer {
            shared: Arc::new(Shared::new(self.limit, self.name)),
            on_full: self.on_full,
        })
    }
}
