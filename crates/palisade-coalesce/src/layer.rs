use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tower_layer::Layer;

use crate::registry::Registry;
use crate::service::Coalesce;
use crate::share::{ShareAll, ShareIf};

/// Invalid configuration of a coalescing layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidCoalesce {
    /// A bound of 0 keys in flight: nothing would ever be coalesced.
    ZeroKeys,
}

impl fmt::Display for InvalidCoalesce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroKeys => f.write_str("at least one key must be allowed in flight"),
        }
    }
}

impl std::error::Error for InvalidCoalesce {}

/// Joins concurrent requests with the same key into one call; see the
/// [crate docs](crate).
///
/// Every service the layer builds, and every clone of those, shares one map of calls in
/// flight (one policy instance per layer value).
pub struct CoalesceLayer<K, KF, M = ShareAll> {
    registry: Arc<Registry<K>>,
    key: Arc<KF>,
    mode: M,
}

impl<K, KF, M: Clone> Clone for CoalesceLayer<K, KF, M> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            key: Arc::clone(&self.key),
            mode: self.mode.clone(),
        }
    }
}

impl<K, KF, M> fmt::Debug for CoalesceLayer<K, KF, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceLayer")
            .field("name", self.registry.name())
            .finish_non_exhaustive()
    }
}

/// Builds a [`CoalesceLayer`]; see [`CoalesceLayer::builder`].
#[must_use]
pub struct CoalesceBuilder<K, KF, M = ShareAll> {
    key: KF,
    max_keys: usize,
    name: Arc<str>,
    mode: M,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K, KF, M> fmt::Debug for CoalesceBuilder<K, KF, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceBuilder")
            .field("max_keys", &self.max_keys)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Default bound on keys in flight.
const DEFAULT_MAX_KEYS: usize = 10_000;

// === impl CoalesceLayer ===

impl<K, KF> CoalesceLayer<K, KF> {
    /// Coalesces requests by `key`: `Some(k)` joins other requests with key `k` in flight,
    /// `None` always calls the inner service on its own (e.g. a write).
    pub fn builder<Req>(key: KF) -> CoalesceBuilder<K, KF>
    where
        KF: Fn(&Req) -> Option<K>,
    {
        CoalesceBuilder {
            key,
            max_keys: DEFAULT_MAX_KEYS,
            name: Arc::from(""),
            mode: ShareAll,
            _key: std::marker::PhantomData,
        }
    }
}

impl<K, KF, M> CoalesceLayer<K, KF, M> {
    /// A handle on this layer's calls in flight.
    pub fn handle(&self) -> CoalesceHandle<K> {
        CoalesceHandle {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S, K, KF, M: Clone> Layer<S> for CoalesceLayer<K, KF, M> {
    type Service = Coalesce<S, K, KF, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Coalesce::from_parts(
            inner,
            Arc::clone(&self.registry),
            Arc::clone(&self.key),
            self.mode.clone(),
        )
    }
}

// === impl CoalesceBuilder ===

impl<K: Hash + Eq, KF> CoalesceBuilder<K, KF> {
    /// Shares a completed call's response only if `rule` accepts it (default: every
    /// response). When it refuses, one waiter gets the response whole (the leader, if it
    /// still waits) and every other waiter makes its own call to the inner service, with
    /// its own request: e.g. [`http::BufferedOnly`](crate::http::BufferedOnly), so an HTTP
    /// body over the buffering cap streams to one waiter and the others fetch their own.
    ///
    /// Each follower then keeps its request and a clone of the inner service while it
    /// waits (one allocation per follower), so the service must be `Clone`.
    pub fn share_if<P>(self, rule: P) -> CoalesceBuilder<K, KF, ShareIf<P>> {
        CoalesceBuilder {
            key: self.key,
            max_keys: self.max_keys,
            name: self.name,
            mode: ShareIf {
                rule: Arc::new(rule),
            },
            _key: std::marker::PhantomData,
        }
    }
}

impl<K: Hash + Eq, KF, M> CoalesceBuilder<K, KF, M> {
    /// At most `max_keys` keys in flight at once (default 10 000); a request for another
    /// key while the map is full calls the inner service uncoalesced.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Names this layer in tracing events and metrics labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidCoalesce::ZeroKeys`] for a bound of 0 keys.
    pub fn build(self) -> Result<CoalesceLayer<K, KF, M>, InvalidCoalesce> {
        if self.max_keys == 0 {
            return Err(InvalidCoalesce::ZeroKeys);
        }
        Ok(CoalesceLayer {
            registry: Arc::new(Registry::new(self.max_keys, self.name)),
            key: Arc::new(self.key),
            mode: self.mode,
        })
    }
}

/// Live state of a [`CoalesceLayer`]: keys in flight, waiters per key, and counts.
pub struct CoalesceHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K> Clone for CoalesceHandle<K> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<K> fmt::Debug for CoalesceHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceHandle")
            .field("name", self.registry.name())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq> CoalesceHandle<K> {
    /// Keys with a call in flight now.
    pub fn keys_in_flight(&self) -> usize {
        self.registry.counts().0
    }

    /// Requests waiting on `key`'s call now, its leader included (0 if none in flight).
    pub fn waiters(&self, key: &K) -> usize {
        self.registry.waiters(key)
    }

    /// Calls led so far: requests that found no call for their key and made one.
    pub fn led(&self) -> u64 {
        self.registry.counts().1
    }

    /// Requests that joined a call in flight so far.
    pub fn joined(&self) -> u64 {
        self.registry.counts().2
    }

    /// Keyed requests that called uncoalesced because the key bound was reached.
    pub fn bypassed(&self) -> u64 {
        self.registry.counts().4
    }

    /// Calls whose response the share rule refused
    /// ([`share_if`](CoalesceBuilder::share_if)): their followers made their own calls.
    pub fn unshared(&self) -> u64 {
        self.registry.counts().3
    }
}
