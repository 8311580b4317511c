use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::service::FleetLimit;
use super::shared::{Config, Fleet, FleetHandle};
use super::store::LeaseStore;
use crate::concurrency::semaphore::FastSemaphore;

/// What to do when Redis errors or does not answer within the store's timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Admit while this process has fewer calls in flight than its fail-open limit
    /// ([`FleetLimitBuilder::expected_replicas`] / [`FleetLimitBuilder::fail_open_limit`]):
    /// availability, with the fleet bounded by replicas × that limit. The default.
    #[default]
    Open,
    /// Reject with [`Overloaded`](palisade_core::Overloaded): the limit over availability.
    Closed,
}

/// Invalid configuration of a fleet limit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidFleetLimit {
    /// The fleet limit was 0: nothing could ever run.
    ZeroLimit,
    /// The limit exceeds what the local semaphore can count.
    TooLarge(usize),
    /// An empty key name.
    EmptyKey,
    /// A local limit of 0, or above the fleet limit (one process never runs more than N).
    LocalLimit(usize),
    /// A fail-open limit of 0 or above the local limit.
    FailOpenLimit(usize),
    /// Zero expected replicas.
    ZeroReplicas,
    /// A lease TTL of 0, or not longer than the renewal period plus the store's timeout
    /// (a lease would expire before its renewal could land).
    Ttl {
        /// The TTL asked for.
        ttl: Duration,
        /// The renewal period.
        renew_every: Duration,
    },
    /// A renewal period of 0.
    ZeroRenewal,
    /// A queue of 0 places (use reject mode) or a queue wait of 0.
    EmptyQueue,
    /// A store timeout of 0: every decision would fail.
    ZeroTimeout,
    /// Backoff bounds of 0, or a first backoff above the largest.
    Backoff,
}

impl fmt::Display for InvalidFleetLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroLimit => f.write_str("fleet limit must be at least 1"),
            Self::TooLarge(n) => write!(f, "fleet limit {n} exceeds {}", FastSemaphore::MAX_PERMITS),
            Self::EmptyKey => f.write_str("fleet limit key must not be empty"),
            Self::LocalLimit(n) => write!(f, "local limit {n} must be between 1 and the fleet limit"),
            Self::FailOpenLimit(n) => {
                write!(f, "fail-open limit {n} must be between 1 and the local limit")
            }
            Self::ZeroReplicas => f.write_str("expected replicas must be at least 1"),
            Self::Ttl { ttl, renew_every } => write!(
                f,
                "lease ttl {ttl:?} must exceed the renewal period {renew_every:?} plus the store timeout"
            ),
            Self::ZeroRenewal => f.write_str("renewal period must be longer than 0"),
            Self::EmptyQueue => f.write_str("a queue needs at least 1 place and a wait above 0; use reject"),
            Self::ZeroTimeout => f.write_str("the lease store's timeout must be longer than 0"),
            Self::Backoff => f.write_str("backoff bounds must be above 0, the first not above the largest"),
        }
    }
}

impl std::error::Error for InvalidFleetLimit {}

/// Limits the calls in flight across a fleet of processes to one shared limit in Redis.
///
/// Cloning the layer shares the limit, the local limit in front of it, and the renewal
/// task. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct FleetLimitLayer {
    fleet: Arc<Fleet>,
}

/// Builds a [`FleetLimitLayer`]; see [`FleetLimitLayer::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct FleetLimitBuilder {
    store: LeaseStore,
    key: String,
    limit: usize,
    local_limit: Option<usize>,
    queue: Option<(usize, Duration)>,
    ttl: Duration,
    renew_every: Option<Duration>,
    failure: FailurePolicy,
    replicas: usize,
    fail_open_limit: Option<usize>,
    backoff: (Duration, Duration),
    name: Arc<str>,
}

// === impl FleetLimitLayer ===

impl FleetLimitLayer {
    /// Configures a limit of `limit` calls in flight across every process sharing `key` in
    /// `store`.
    pub fn builder(store: LeaseStore, key: impl Into<String>, limit: usize) -> FleetLimitBuilder {
        FleetLimitBuilder {
            store,
            key: key.into(),
            limit,
            local_limit: None,
            queue: None,
            ttl: Duration::from_secs(10),
            renew_every: None,
            failure: FailurePolicy::Open,
            replicas: 1,
            fail_open_limit: None,
            backoff: (Duration::from_millis(5), Duration::from_millis(100)),
            name: Arc::from(""),
        }
    }

    /// A handle on this layer's live state.
    pub fn handle(&self) -> FleetHandle {
        FleetHandle::new(Arc::clone(&self.fleet))
    }
}

impl<S> Layer<S> for FleetLimitLayer {
    type Service = FleetLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FleetLimit::from_parts(inner, Arc::clone(&self.fleet))
    }
}

// === impl FleetLimitBuilder ===

impl FleetLimitBuilder {
    /// At most `local_limit` calls in flight (or deciding) in this process (default: the
    /// fleet limit). Calls over it never ask Redis.
    pub fn local_limit(mut self, local_limit: usize) -> Self {
        self.local_limit = Some(local_limit);
        self
    }

    /// Wait when full: at most `max_queued` calls wait in this process, each at most
    /// `max_wait` (and never past its request's deadline), then fail with
    /// [`Overloaded`](palisade_core::Overloaded). Without it, a full limit rejects at once.
    pub fn queue(mut self, max_queued: usize, max_wait: Duration) -> Self {
        self.queue = Some((max_queued, max_wait));
        self
    }

    /// Reject at once when full (the default).
    pub fn reject(mut self) -> Self {
        self.queue = None;
        self
    }

    /// How long a lease lives without renewal (default 10 s): a crashed process's leases
    /// are reclaimed at most this long (plus one renewal period) after it died.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How often the layer's renewal task extends its leases (default a third of the TTL).
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// What to do when Redis fails (default [`FailurePolicy::Open`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// Replicas expected to share the limit (default 1): failing open, each admits at most
    /// `limit / replicas` (at least 1) calls at once.
    pub fn expected_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The calls this process admits at once while failing open (overrides
    /// [`expected_replicas`](Self::expected_replicas)).
    pub fn fail_open_limit(mut self, limit: usize) -> Self {
        self.fail_open_limit = Some(limit);
        self
    }

    /// Bounds of the jittered exponential backoff between a waiting call's attempts
    /// (default 5 ms doubling to 100 ms).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max);
        self
    }

    /// Names this limit in tracing events and metrics labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the configuration and builds the layer. The renewal task is spawned on
    /// the first call (which runs inside a Tokio runtime), not here.
    ///
    /// # Errors
    ///
    /// [`InvalidFleetLimit`] for a zero or too large limit, an empty key, a local or
    /// fail-open limit out of range, a TTL not above the renewal period plus the store's
    /// timeout, an empty queue, or invalid backoff bounds.
    pub fn build(self) -> Result<FleetLimitLayer, InvalidFleetLimit> {
        let config = self.check()?;
        Ok(FleetLimitLayer {
            fleet: Fleet::new(self.store, config),
        })
    }

    fn check(&self) -> Result<Config, InvalidFleetLimit> {
        if self.limit == 0 {
            return Err(InvalidFleetLimit::ZeroLimit);
        }
        if self.limit > FastSemaphore::MAX_PERMITS {
            return Err(InvalidFleetLimit::TooLarge(self.limit));
        }
        if self.key.is_empty() {
            return Err(InvalidFleetLimit::EmptyKey);
        }
        let local = self.local_limit.unwrap_or(self.limit);
        if local == 0 || local > self.limit {
            return Err(InvalidFleetLimit::LocalLimit(local));
        }
        if self.replicas == 0 {
            return Err(InvalidFleetLimit::ZeroReplicas);
        }
        let fail_open = self
            .fail_open_limit
            .unwrap_or_else(|| (self.limit / self.replicas).clamp(1, local));
        if fail_open == 0 || fail_open > local {
            return Err(InvalidFleetLimit::FailOpenLimit(fail_open));
        }
        let timeout = self.store.get_timeout();
        if timeout.is_zero() {
            return Err(InvalidFleetLimit::ZeroTimeout);
        }
        let renew_every = self.renew_every.unwrap_or(self.ttl / 3);
        if renew_every.is_zero() && !self.ttl.is_zero() {
            return Err(InvalidFleetLimit::ZeroRenewal);
        }
        if self.ttl.is_zero() || self.ttl <= renew_every.saturating_add(timeout) {
            return Err(InvalidFleetLimit::Ttl {
                ttl: self.ttl,
                renew_every,
            });
        }
        if let Some((max_queued, max_wait)) = self.queue {
            if max_queued == 0 || max_wait.is_zero() {
                return Err(InvalidFleetLimit::EmptyQueue);
            }
        }
        let (first, max) = self.backoff;
        if first.is_zero() || first > max {
            return Err(InvalidFleetLimit::Backoff);
        }
        Ok(Config {
            key: self.key.clone(),
            limit: self.limit,
            local_limit: local,
            queue: self.queue,
            ttl: self.ttl,
            renew_every,
            failure: self.failure,
            fail_open_limit: fail_open,
            backoff: self.backoff,
            name: Arc::clone(&self.name),
        })
    }
}
