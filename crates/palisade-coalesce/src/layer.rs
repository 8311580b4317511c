use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tower_layer::Layer;

use crate::registry::Registry;
use crate::service::Coalesce;

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
pub struct CoalesceLayer<K, KF> {
    registry: Arc<Registry<K>>,
    key: Arc<KF>,
}

impl<K, KF> Clone for CoalesceLayer<K, KF> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            key: Arc::clone(&self.key),
        }
    }
}

impl<K, KF> fmt::Debug for CoalesceLayer<K, KF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceLayer")
            .field("name", self.registry.name())
            .finish_non_exhaustive()
    }
}

/// Builds a [`CoalesceLayer`]; see [`CoalesceLayer::builder`].
#[must_use]
pub struct CoalesceBuilder<K, KF> {
    key: KF,
    max_keys: usize,
    name: Arc<str>,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K, KF> fmt::Debug for CoalesceBuilder<K, KF> {
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
            _key: std::marker::PhantomData,
        }
    }

    /// A handle on this layer's calls in flight.
    pub fn handle(&self) -> CoalesceHandle<K> {
        CoalesceHandle {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S, K, KF> Layer<S> for CoalesceLayer<K, KF> {
    type Service = Coalesce<S, K, KF>;

    fn layer(&self, inner: S) -> Self::Service {
        Coalesce::from_parts(inner, Arc::clone(&self.registry), Arc::clone(&self.key))
    }
}

// === impl CoalesceBuilder ===

impl<K: Hash + Eq, KF> CoalesceBuilder<K, KF> {
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
    pub fn build(self) -> Result<CoalesceLayer<K, KF>, InvalidCoalesce> {
        if self.max_keys == 0 {
            return Err(InvalidCoalesce::ZeroKeys);
        }
        Ok(CoalesceLayer {
            registry: Arc::new(Registry::new(self.max_keys, self.name)),
            key: Arc::new(self.key),
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
        self.registry.counts().3
    }
}
