//! Per-key (tenant) rate limits with bounded memory: [`KeyedRateLimitLayer`].
//!
//! A closure extracts a key from each request (a header, an API key, the peer address);
//! each key has its own GCRA bucket with the same quota, and an optional global bucket
//! applies on top (a request passes only if both admit it; neither is charged otherwise).
//! Waiting, deadlines, cost weights and `retry_after` behave as in [`crate::local`].
//!
//! # Memory
//! Live keys are capped ([`KeyedRateLimitLayer::max_keys`], default 100 000). The map is
//! split in shards, each with its share of the cap. When an insert finds its shard full,
//! the shard is swept inline: every key whose bucket is full again is dropped first, which
//! changes no decision (a full bucket and a missing key are the same state). If that frees
//! less than an eighth of the shard, the keys closest to full are dropped as well (those
//! keys get a fresh bucket if they return: lenient, never stricter). A sweep costs O(shard)
//! and happens at most once per eighth-of-a-shard inserts, so eviction is O(1) amortized,
//! with no background task. A flood of distinct keys thus never holds more than the cap.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use palisade_core::{BoxError, RateLimited};
//! use palisade_rate::{KeyedRateLimitLayer, Quota};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // two requests per second per tenant, the tenant being the text before ':'
//! let layer = KeyedRateLimitLayer::new(Quota::per_second(NonZeroU32::new(2).unwrap()), |req: &String| {
//!     req.split(':').next().unwrap_or_default().to_owned()
//! })
//! .max_keys(std::num::NonZeroUsize::new(10_000).unwrap());
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: String| async move { Ok::<_, BoxError>(req) }));
//!
//! svc.clone().oneshot("a:1".to_owned()).await?;
//! svc.clone().oneshot("a:2".to_owned()).await?;
//! let err = svc.clone().oneshot("a:3".to_owned()).await.unwrap_err();
//! assert!(err.is::<RateLimited>());
//! svc.clone().oneshot("b:1".to_owned()).await?; // another tenant is unaffected
//! # Ok(()) }
//! ```

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::Quota;
use palisade_core::keyed::{Eviction, KeyedStore, StoreEntry};
use palisade_core::{call_span, BoxError, HasDeadline, RateLimited};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::gcra::{duration_to_nanos, Decision, Gcra};
use crate::limiter::{Acquire, Decisions, Limiter};
use crate::local::{allowed_wait, reject, wait_then_call};
use crate::{Cost, TokioClock, UnitCost};

const DEFAULT_MAX_KEYS: usize = 100_000;

/// A store of per-key GCRA state with a cap on live keys; the state behind
/// [`KeyedRateLimitLayer`], usable on its own.
pub struct KeyedLimiter<K> {
    gcra: Gcra,
    clock: TokioClock,
    // key -> theoretical arrival time, in core's one keyed store.
    store: KeyedStore<K, Tat>,
    global: Option<Limiter>,
    decisions: Decisions,
}

/// A key's theoretical arrival time (nanoseconds on the limiter's clock).
#[derive(Debug, Clone, Copy)]
struct Tat(u64);

impl StoreEntry for Tat {
    /// A bucket full again (TAT passed) is idle: forgetting it changes no decision. Others
    /// go closest-to-full first if room is needed (lenient: that key gets its burst back).
    fn eviction(&self, now: u64) -> Eviction {
        if self.0 <= now {
            Eviction::Idle
        } else {
            Eviction::Rank(self.0)
        }
    }
}

impl<K: Hash + Eq> KeyedLimiter<K> {
    /// A keyed limiter for `quota` per key, holding at most `max_keys` live keys.
    #[must_use]
    pub fn new(quota: Quota, max_keys: NonZeroUsize) -> Self {
        Self {
            gcra: Gcra::new(quota),
            clock: TokioClock::new(),
            store: KeyedStore::new(max_keys),
            global: None,
            decisions: Decisions::register("keyed_rate_limit", ""),
        }
    }

    fn with_global(mut self, global: Quota) -> Self {
        self.global = Some(Limiter::for_policy(global, "keyed_rate_limit_global", ""));
        self
    }

    /// Takes `cost` cells from `key`'s bucket (and the global one, if any), reserving a
    /// slot up to `max_wait` ahead when they are empty.
    pub fn acquire(&self, key: K, cost: u32, max_wait: Duration) -> Acquire {
        self.decisions.count(self.decide(key, cost, max_wait))
    }

    fn decide(&self, key: K, cost: u32, max_wait: Duration) -> Acquire {
        let max_wait_ns = duration_to_nanos(max_wait);
        let now = self.clock.now_nanos();
        // Decided under the key's shard lock, so no other request of this key slips in
        // between the key's decision, the global one and the key's charge.
        let decided = self.store.update(key, now, |entry| {
            let tat = entry.as_ref().map_or(0, |t| t.0);
            let (new_tat, key_wait) = match self.gcra.decide(tat, now, cost, max_wait_ns) {
                Decision::Admit { tat, wait } => (tat, wait),
                Decision::Deny { retry_after } => {
                    let wait = Duration::from_nanos(retry_after);
                    return (Acquire::Rejected(RateLimited::with_retry_after(wait)), None);
                }
                Decision::TooCostly => return (Acquire::Rejected(RateLimited::new()), None),
            };
            // The key admits; the global bucket must too before the key is charged.
            let global_wait = match &self.global {
                None => Duration::ZERO,
                Some(global) => match global.acquire(cost, max_wait) {
                    Acquire::Now => Duration::ZERO,
                    Acquire::After(wait) => wait,
                    rejected @ Acquire::Rejected(_) => return (rejected, None),
                },
            };
            let charged = (new_tat != tat || cost > 0).then_some(Tat(new_tat));
            let charged = match entry {
                Some(slot) => {
                    if let Some(t) = charged {
                        *slot = t;
                    }
                    None
                }
                None => charged,
            };
            // The common case, both buckets admitting now, without Duration arithmetic.
            let acquire = if key_wait == 0 && global_wait.is_zero() {
                Acquire::Now
            } else {
                Acquire::After(Duration::from_nanos(key_wait).max(global_wait))
            };
            (acquire, charged)
        });
        // A rate store never pins an entry, so there is always room for a new key.
        decided.unwrap_or_else(|_| Acquire::Rejected(RateLimited::new()))
    }

    /// Live keys held right now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Entries the maps have room for (their allocated size), to check memory stays
    /// bounded.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.store.capacity()
    }

    /// The most live keys this limiter holds (exactly the configured cap).
    #[must_use]
    pub fn max_keys(&self) -> usize {
        self.store.max_keys()
    }
}

impl<K> fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("gcra", &self.gcra)
            .field("store", &self.store)
            .field("global", &self.global)
            .finish_non_exhaustive()
    }
}

/// Applies per-key rate limits; see the [module docs](crate::keyed).
///
/// The layer owns one [`KeyedLimiter`], made by [`new`](Self::new): every service it
/// builds, and every clone of the layer, shares it. [`global`](Self::global) and
/// [`max_keys`](Self::max_keys) shape that limiter, so they replace it with a new one:
/// call them before the layer is applied or cloned (a value reconfigured later limits
/// apart from the services already built).
pub struct KeyedRateLimitLayer<K, F, C = UnitCost> {
    quota: Quota,
    global: Option<Quota>,
    max_keys: NonZeroUsize,
    max_wait: Duration,
    key: F,
    cost: C,
    shared: Arc<KeyedLimiter<K>>,
}

// === impl KeyedRateLimitLayer ===

impl<K, F> KeyedRateLimitLayer<K, F> {
    /// `quota` per key, the key being `key(&request)`; the layer's limiter is made here.
    #[must_use]
    pub fn new<Request>(quota: Quota, key: F) -> Self
    where
        F: Fn(&Request) -> K,
        K: Hash + Eq,
    {
        let max_keys = NonZeroUsize::new(DEFAULT_MAX_KEYS).unwrap_or(NonZeroUsize::MIN);
        Self {
            quota,
            global: None,
            max_keys,
            max_wait: Duration::ZERO,
            key,
            cost: UnitCost,
            shared: Arc::new(KeyedLimiter::new(quota, max_keys)),
        }
    }
}

impl<K: Hash + Eq, F, C> KeyedRateLimitLayer<K, F, C> {
    /// Replaces the limiter with one of the current configuration: see the
    /// [type docs](Self) on when to call the setters that do.
    fn rebuild(mut self) -> Self {
        let limiter = KeyedLimiter::new(self.quota, self.max_keys);
        self.shared = Arc::new(match self.global {
            Some(global) => limiter.with_global(global),
            None => limiter,
        });
        self
    }

    /// Also limit all keys together to `quota`.
    #[must_use]
    pub fn global(mut self, quota: Quota) -> Self {
        self.global = Some(quota);
        self.rebuild()
    }

    /// Hold at most `max_keys` live keys (default 100 000). A `NonZeroUsize`: a cap of 0
    /// could hold no key at all.
    #[must_use]
    pub fn max_keys(mut self, max_keys: NonZeroUsize) -> Self {
        self.max_keys = max_keys;
        self.rebuild()
    }
}

impl<K, F, C> KeyedRateLimitLayer<K, F, C> {
    /// Wait up to `max_wait` (FIFO per key) instead of rejecting at once.
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Charge each request `cost(&request)` cells instead of one.
    #[must_use]
    pub fn cost<C2>(self, cost: C2) -> KeyedRateLimitLayer<K, F, C2> {
        KeyedRateLimitLayer {
            quota: self.quota,
            global: self.global,
            max_keys: self.max_keys,
            max_wait: self.max_wait,
            key: self.key,
            cost,
            shared: self.shared,
        }
    }

    /// The layer's keyed limiter, shared by every service it builds and by its clones.
    #[must_use]
    pub fn limiter(&self) -> Arc<KeyedLimiter<K>> {
        Arc::clone(&self.shared)
    }
}

/// A clone shares the limiter (one policy instance per layer value and its clones).
impl<K, F: Clone, C: Clone> Clone for KeyedRateLimitLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            quota: self.quota,
            global: self.global,
            max_keys: self.max_keys,
            max_wait: self.max_wait,
            key: self.key.clone(),
            cost: self.cost.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedRateLimitLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("quota", &self.quota)
            .field("global", &self.global)
            .field("max_keys", &self.max_keys)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl<S, K: Hash + Eq, F: Clone, C: Clone> Layer<S> for KeyedRateLimitLayer<K, F, C> {
    type Service = KeyedRateLimit<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            limiter: self.limiter(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
        }
    }
}

/// A service under per-key rate limits; built by [`KeyedRateLimitLayer`].
///
/// Holds no reservation, so the derived `Clone` is right: clones share the limiter.
pub struct KeyedRateLimit<S, K, F, C = UnitCost> {
    inner: S,
    limiter: Arc<KeyedLimiter<K>>,
    key: F,
    cost: C,
    max_wait: Duration,
}

// === impl KeyedRateLimit ===

impl<S, K, F, C> KeyedRateLimit<S, K, F, C> {
    palisade_core::inner_accessors!(S);

    /// The shared keyed limiter.
    #[must_use]
    pub fn limiter(&self) -> &Arc<KeyedLimiter<K>> {
        &self.limiter
    }
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedRateLimit<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            key: self.key.clone(),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedRateLimit<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, Request> Service<Request> for KeyedRateLimit<S, K, F, C>
where
    S: Service<Request> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq,
    F: Fn(&Request) -> K,
    C: Cost<Request>,
    Request: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span = call_span!("palisade::rate", "palisade.keyed_rate_limit");
        let _scope = span.scope();
        let key = (self.key)(&request);
        let cost = self.cost.cost(&request);
        let max_wait = allowed_wait(self.max_wait, request.deadline());
        match self.limiter.acquire(key, cost, max_wait) {
            Acquire::Now => ResponseFuture::called(self.inner.call(request), span),
            Acquire::After(wait) => wait_then_call(&self.inner, wait, request, span),
            Acquire::Rejected(error) => reject(error, cost, span),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn sweep_drops_idle_first_then_closest_to_idle() {
        let put = |store: &KeyedStore<u32, Tat>, k: u32, tat: u64, now: u64| {
            store.update(k, now, |_| ((), Some(Tat(tat)))).unwrap();
        };
        // cap 16, now 100: keys 0..8 idle (tat <= 100), keys 8..16 live with rising tats.
        let store = KeyedStore::new(NonZeroUsize::new(16).unwrap());
        for k in 0..8u32 {
            put(&store, k, 50, 0);
        }
        for k in 8..16u32 {
            put(&store, k, 1_000 + u64::from(k), 0);
        }
        put(&store, 99, 5_000, 100);
        assert_eq!(store.len(), 9);
        assert!((0..8).all(|k| store.get(&k, |_| ()).is_none()));

        // All live: the sweep drops the one closest to idle (cap 8 -> target 7).
        let store = KeyedStore::new(NonZeroUsize::new(8).unwrap());
        for k in 0..8u32 {
            put(&store, k, 1_000 + u64::from(k), 0);
        }
        put(&store, 99, 5_000, 100);
        assert_eq!(store.len(), 8);
        assert!(store.get(&0, |_| ()).is_none());
        assert!(store.get(&1, |_| ()).is_some() && store.get(&99, |_| ()).is_some());
    }

    #[test]
    fn shards_split_the_cap() {
        let q = Quota::per_second(NonZeroU32::MIN);
        let l: KeyedLimiter<u64> = KeyedLimiter::new(q, NonZeroUsize::new(10_000).unwrap());
        assert_eq!(l.max_keys(), 10_000);
        let l: KeyedLimiter<u64> = KeyedLimiter::new(q, NonZeroUsize::new(3).unwrap());
        assert_eq!(l.max_keys(), 3);
    }
}
