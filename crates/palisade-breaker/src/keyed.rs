//! Per-key breakers: one breaker per key (host, authority, method...), bounded in number.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::keyed::{Eviction, KeyedStore, StoreEntry};
use palisade_core::stripe::Lane;
use palisade_core::{call_span, BoxError, Classify};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::InvalidBreaker;
use crate::core::{Core, Guard, Template};
use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;
use crate::machine::State;

struct Entry {
    /// One lane per key (per-key state is many and small).
    core: Lane<Core>,
    /// Nanoseconds since the registry's origin.
    last_used: u64,
    idle_timeout: u64,
}

impl StoreEntry for Entry {
    /// State-aware: a closed breaker idle for `idle_timeout` goes freely (it holds no news
    /// about its dependency), so an open or half-open breaker is never evicted while an
    /// idle closed one exists; beyond those, the least recently used goes first.
    fn eviction(&self, now: u64) -> Eviction {
        let idle = now.saturating_sub(self.last_used) >= self.idle_timeout;
        match self.core.published_state() {
            State::Closed | State::Disabled | State::MetricsOnly if idle => Eviction::Idle,
            _ => Eviction::Rank(self.last_used),
        }
    }
}

/// The breakers of a keyed layer, shared by every service it builds.
struct Registry<K> {
    template: Template,
    store: KeyedStore<K, Entry>,
    idle_timeout: u64,
    origin: Instant,
}

impl<K: Hash + Eq> Registry<K> {
    /// The breaker of `key`, created on first use; at the cap, room is made by core's
    /// keyed store (idle closed breakers first, open ones last).
    fn get(&self, key: K) -> Lane<Core> {
        let now = nanos(Instant::now().saturating_duration_since(self.origin));
        let got = self.store.update(key, now, |entry| match entry {
            Some(e) => {
                e.last_used = now;
                (e.core.clone(), None)
            }
            None => {
                let core = Lane::new(Core::new(&self.template));
                let entry = Entry {
                    core: core.clone(),
                    last_used: now,
                    idle_timeout: self.idle_timeout,
                };
                (core, Some(entry))
            }
        });
        // Breakers are never pinned, so there is always room; should that change, an
        // unkept breaker still protects this call.
        got.unwrap_or_else(|_| Lane::new(Core::new(&self.template)))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Builds [`KeyedCircuitBreaker`] services; from
/// [`CircuitBreakerBuilder::build_keyed`](crate::CircuitBreakerBuilder::build_keyed).
pub struct KeyedCircuitBreakerLayer<K, F, C> {
    registry: Arc<Registry<K>>,
    key: F,
    classify: C,
}

/// A breaker per key of the request; see [`CircuitBreakerBuilder::build_keyed`](crate::CircuitBreakerBuilder::build_keyed).
///
/// An open breaker fails in `call` (the not-ready mode does not apply: readiness cannot
/// depend on a request not seen yet).
pub struct KeyedCircuitBreaker<S, K, F, C> {
    inner: S,
    registry: Arc<Registry<K>>,
    key: F,
    classify: C,
}

/// A handle on the breakers of a keyed layer.
pub struct KeyedHandle<K> {
    registry: Arc<Registry<K>>,
}

// === impl KeyedCircuitBreakerLayer ===

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    pub(crate) fn new(
        template: Template,
        classify: C,
        key: F,
        max_keys: usize,
        idle_timeout: Duration,
    ) -> Result<Self, InvalidBreaker> {
        if idle_timeout.is_zero() {
            return Err(InvalidBreaker::ZeroIdleTimeout);
        }
        let Some(max_keys) = NonZeroUsize::new(max_keys) else {
            return Err(InvalidBreaker::ZeroMaxKeys);
        };
        Ok(Self {
            registry: Arc::new(Registry {
                template,
                store: KeyedStore::new(max_keys),
                idle_timeout: nanos(idle_timeout),
                origin: Instant::now(),
            }),
            key,
            classify,
        })
    }

    /// A handle on the per-key breakers.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<K, F: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<K, F, C> std::fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("template", &self.registry.template)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            registry: self.registry.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
        }
    }
}

// === impl KeyedCircuitBreaker ===

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// A handle on the per-key breakers.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle {
            registry: self.registry.clone(),
        }
    }

    palisade_core::inner_accessors!(S);
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: std::fmt::Debug, K, F, C> std::fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq,
    F: Fn(&Req) -> K,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let core = self.registry.get((self.key)(&req));
        let span =
            call_span!("palisade::breaker", "palisade.keyed_circuit_breaker", name = %core.name());
        let _scope = span.scope();
        match core.acquire() {
            Ok(ticket) => {
                let mut guard = Guard::new(core, ticket);
                guard.start();
                ResponseFuture::called(self.inner.call(req), guard, self.classify.clone(), span)
            }
            Err(retry_after) => {
                tracing::debug!(target: "palisade::breaker", "circuit open for this key: rejected");
                ResponseFuture::rejected(retry_after, span)
            }
        }
    }
}

// === impl KeyedHandle ===

impl<K: Hash + Eq> KeyedHandle<K> {
    /// The breaker of `key`, if one is kept.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        self.registry
            .store
            .get(key, |e| BreakerHandle::new(e.core.shared().clone()))
    }

    /// How many per-key breakers are kept.
    pub fn len(&self) -> usize {
        self.registry.store.len()
    }

    /// Whether no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
        }
    }
}

impl<K> std::fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedHandle").finish_non_exhaustive()
    }
}
