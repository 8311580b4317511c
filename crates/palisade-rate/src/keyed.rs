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

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::Quota;
use palisade_core::{BoxError, HasDeadline, RateLimited};
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
    hasher: RandomState,
    shards: Box<[Mutex<Shard<K>>]>,
    shard_cap: usize,
    global: Option<Limiter>,
    decisions: Decisions,
}

struct Shard<K> {
    // key -> theoretical arrival time (nanoseconds on `clock`)
    tats: HashMap<K, u64>,
}

impl<K: Hash + Eq> KeyedLimiter<K> {
    /// A keyed limiter for `quota` per key, holding at most about `max_keys` live keys
    /// (rounded up to a multiple of the shard count).
    #[must_use]
    pub fn new(quota: Quota, max_keys: NonZeroUsize) -> Self {
        // Small caps use one shard so the cap stays exact; large ones spread contention.
        let shard_count = if max_keys.get() >= 4096 { 16 } else { 1 };
        let shard_cap = max_keys.get().div_ceil(shard_count);
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    tats: HashMap::new(),
                })
            })
            .collect();
        Self {
            gcra: Gcra::new(quota),
            clock: TokioClock::new(),
            hasher: RandomState::new(),
            shards,
            shard_cap,
            global: None,
            decisions: Decisions::register("keyed_rate_limit"),
        }
    }

    fn with_global(mut self, global: Quota) -> Self {
        self.global = Some(Limiter::for_policy(global, "keyed_rate_limit_global"));
        self
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // The critical sections below cannot panic half-way, so a poisoned shard is intact.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `cost` cells from `key`'s bucket (and the global one, if any), reserving a
    /// slot up to `max_wait` ahead when they are empty.
    pub fn acquire(&self, key: K, cost: u32, max_wait: Duration) -> Acquire {
        self.decisions.count(self.decide(key, cost, max_wait))
    }

    fn decide(&self, key: K, cost: u32, max_wait: Duration) -> Acquire {
        let max_wait_ns = duration_to_nanos(max_wait);
        let now = self.clock.now_nanos();
        let mut shard = self.shard(&key);
        let tat = shard.tats.get(&key).copied().unwrap_or(0);
        let (new_tat, key_wait) = match self.gcra.decide(tat, now, cost, max_wait_ns) {
            Decision::Admit { tat, wait } => (tat, wait),
            Decision::Deny { retry_after } => {
                return Acquire::Rejected(RateLimited::with_retry_after(Duration::from_nanos(
                    retry_after,
                )))
            }
            Decision::TooCostly => return Acquire::Rejected(RateLimited::new()),
        };
        // The key admits; the global bucket must too before the key is charged (the shard
        // lock is held, so no other request of this shard slips in between).
        let global_wait = match &self.global {
            None => Duration::ZERO,
            Some(global) => match global.acquire(cost, max_wait) {
                Acquire::Now => Duration::ZERO,
                Acquire::After(wait) => wait,
                rejected @ Acquire::Rejected(_) => return rejected,
            },
        };
        if new_tat != tat || cost > 0 {
            shard.insert(key, new_tat, now, self.shard_cap);
        }
        let wait = Duration::from_nanos(key_wait).max(global_wait);
        if wait.is_zero() {
            Acquire::Now
        } else {
            Acquire::After(wait)
        }
    }

    /// Live keys held right now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries the maps have room for (their allocated size), to check memory stays
    /// bounded.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .tats
                    .capacity()
            })
            .sum()
    }

    /// The most live keys this limiter holds.
    #[must_use]
    pub fn max_keys(&self) -> usize {
        self.shard_cap * self.shards.len()
    }
}

impl<K: Hash + Eq> Shard<K> {
    fn insert(&mut self, key: K, tat: u64, now: u64, cap: usize) {
        if let Some(slot) = self.tats.get_mut(&key) {
            *slot = tat;
            return;
        }
        if self.tats.len() >= cap {
            self.sweep(now, cap);
        }
        self.tats.insert(key, tat);
    }

    /// Frees room: drops every idle key (bucket full again: no decision changes), then,
    /// if that freed less than an eighth of the cap, the keys closest to idle.
    fn sweep(&mut self, now: u64, cap: usize) {
        self.tats.retain(|_, tat| *tat > now);
        let target = cap - (cap / 8).max(1);
        if self.tats.len() > target {
            // The k-th smallest TAT splits "closest to idle" from the rest. This Vec is
            // the only allocation, once per sweep, so amortized over cap/8 inserts.
            let mut tats: Vec<u64> = self.tats.values().copied().collect();
            let excess = self.tats.len() - target;
            let (_, &mut threshold, _) = tats.select_nth_unstable(excess - 1);
            let mut to_drop = excess;
            self.tats.retain(|_, tat| {
                if to_drop > 0 && *tat <= threshold {
                    to_drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

impl<K> fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("gcra", &self.gcra)
            .field("shards", &self.shards.len())
            .field("shard_cap", &self.shard_cap)
            .field("global", &self.global)
            .finish_non_exhaustive()
    }
}

/// Applies per-key rate limits; see the [module docs](crate::keyed).
pub struct KeyedRateLimitLayer<K, F, C = UnitCost> {
    quota: Quota,
    global: Option<Quota>,
    max_keys: NonZeroUsize,
    max_wait: Duration,
    key: F,
    cost: C,
    // Built on first `layer` and shared from then on by every service of this value.
    shared: Arc<std::sync::OnceLock<Arc<KeyedLimiter<K>>>>,
}

// === impl KeyedRateLimitLayer ===

impl<K, F> KeyedRateLimitLayer<K, F> {
    /// `quota` per key, the key being `key(&request)`.
    #[must_use]
    pub fn new<Request>(quota: Quota, key: F) -> Self
    where
        F: Fn(&Request) -> K,
    {
        Self {
            quota,
            global: None,
            max_keys: NonZeroUsize::new(DEFAULT_MAX_KEYS).unwrap_or(NonZeroUsize::MIN),
            max_wait: Duration::ZERO,
            key,
            cost: UnitCost,
            shared: Arc::default(),
        }
    }
}

impl<K, F, C> KeyedRateLimitLayer<K, F, C> {
    fn reset(mut self) -> Self {
        // A configuration change after a `layer` call makes a new limiter for later calls.
        self.shared = Arc::default();
        self
    }

    /// Also limit all keys together to `quota`.
    #[must_use]
    pub fn global(mut self, quota: Quota) -> Self {
        self.global = Some(quota);
        self.reset()
    }

    /// Hold at most `max_keys` live keys (default 100 000). A `NonZeroUsize`: a cap of 0
    /// could hold no key at all.
    #[must_use]
    pub fn max_keys(mut self, max_keys: NonZeroUsize) -> Self {
        self.max_keys = max_keys;
        self.reset()
    }

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

    /// The shared keyed limiter (built on first use).
    pub fn limiter(&self) -> Arc<KeyedLimiter<K>>
    where
        K: Hash + Eq,
    {
        Arc::clone(self.shared.get_or_init(|| {
            let limiter = KeyedLimiter::new(self.quota, self.max_keys);
            Arc::new(match self.global {
                Some(global) => limiter.with_global(global),
                None => limiter,
            })
        }))
    }
}

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
        let key = (self.key)(&request);
        let cost = self.cost.cost(&request);
        let max_wait = allowed_wait(self.max_wait, request.deadline());
        match self.limiter.acquire(key, cost, max_wait) {
            Acquire::Now => ResponseFuture::called(self.inner.call(request)),
            Acquire::After(wait) => wait_then_call(&self.inner, wait, request),
            Acquire::Rejected(error) => reject(error, cost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn sweep_drops_idle_first_then_closest_to_idle() {
        let mut shard = Shard {
            tats: HashMap::new(),
        };
        // cap 16, now 100: keys 0..8 idle (tat <= 100), keys 8..16 live with rising tats.
        for k in 0..8u32 {
            shard.tats.insert(k, 50);
        }
        for k in 8..16u32 {
            shard.tats.insert(k, 1_000 + u64::from(k));
        }
        shard.insert(99, 5_000, 100, 16);
        assert_eq!(shard.tats.len(), 9);
        assert!((0..8).all(|k| !shard.tats.contains_key(&k)));

        // All live: the sweep drops the one closest to idle (cap 8 -> target 7).
        let mut shard = Shard {
            tats: (0..8u32).map(|k| (k, 1_000 + u64::from(k))).collect(),
        };
        shard.insert(99, 5_000, 100, 8);
        assert_eq!(shard.tats.len(), 8);
        assert!(!shard.tats.contains_key(&0));
        assert!(shard.tats.contains_key(&1) && shard.tats.contains_key(&99));
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
