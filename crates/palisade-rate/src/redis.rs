//! A fleet-wide rate limit kept in Redis (feature `redis`): [`RedisRateLimitLayer`].
//!
//! Every decision is one atomic Lua script (`EVALSHA`) on the Redis server: it reads the
//! server's clock with `TIME`, runs the same GCRA as the local limiter (see
//! [`crate::local`]) on the key's stored TAT, writes it back with an expiry at the moment
//! the bucket is full again (so idle keys cost Redis no memory), and returns the decision
//! and the wait in microseconds. All processes therefore share one limit whatever their
//! own clocks say. Keys are `prefix + key` (default prefix `palisade:rate:`).
//!
//! Redis is never allowed to hang a request: each round trip is bounded by a short timeout
//! (default 50ms), and on a Redis error or timeout the [`FailurePolicy`] decides: `Open`
//! admits, `Closed` rejects with [`RateLimited`] (without a retry-after). A local
//! deny-cache remembers keys Redis has just rejected and rejects them again without a
//! round trip until their retry-after has passed.
//!
//! The store uses one multiplexed [`RedisConnection`] (cheap to clone, reconnects by
//! itself): a [`ConnectionManager`](redis::aio::ConnectionManager) for a standalone server
//! or Valkey, or a cluster connection for a Redis Cluster, through the same API. The script
//! touches one key, so in a Cluster it runs on the node owning that key's slot. Unlike the local limiters, this path allocates (the key string and a boxed
//! future per call); it costs a network round trip anyway.
//!
//! # Example
//!
//! ```no_run
//! use std::num::NonZeroU32;
//! use palisade_core::BoxError;
//! use palisade_rate::redis::{FailurePolicy, RedisRateLimitLayer, RedisStore};
//! use palisade_rate::Quota;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), BoxError> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let conn = redis::aio::ConnectionManager::new(client).await?;
//! let store = RedisStore::new(conn, Quota::per_second(NonZeroU32::new(100).unwrap()))
//!     .prefix("myapp:rl:")
//!     .failure_policy(FailurePolicy::Open);
//! let svc = ServiceBuilder::new()
//!     .layer(RedisRateLimitLayer::new(store, |req: &String| req.clone()))
//!     .service(service_fn(|req: String| async move { Ok::<_, BoxError>(req) }));
//! svc.oneshot("tenant-a".to_owned()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::Quota;
use palisade_core::redis::RedisConnection;
use palisade_core::{BoxError, HasDeadline, RateLimited};
use redis::Script;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::local::allowed_wait;
use crate::{Acquire, Cost, UnitCost};

/// The GCRA decision, atomically, on the server's clock. Times in microseconds (floats:
/// Lua numbers are doubles, exact to well below a microsecond at today's epoch).
///
/// KEYS[1] = bucket key; ARGV = emission interval, tolerance (interval * burst), cost,
/// max wait. Returns { admitted (1/0), wait as a string } (strings keep the fraction:
/// Redis truncates Lua numbers to integers on return).
const GCRA_LUA: &str = r"
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000000 + tonumber(now_t[2])
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost * t
local wait = new_tat - now - tau
if wait < 0 then wait = 0 end
if wait > max_wait then
  return { 0, string.format('%.3f', wait) }
end
if cost > 0 then
  local ttl = math.ceil((new_tat - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
end
return { 1, string.format('%.3f', wait) }
";

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const DENY_CACHE_CAP: usize = 10_000;

/// What to do when Redis errors or does not answer within the timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Admit the request (availability over the limit). The default.
    #[default]
    Open,
    /// Reject the request with [`RateLimited`] (the limit over availability).
    Closed,
}

/// A GCRA store in Redis; cheap to clone (clones share the connection and deny-cache).
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    shared: Arc<Shared>,
    prefix: Arc<str>,
    timeout: Duration,
    failure: FailurePolicy,
}

struct Shared {
    script: Script,
    t_us: f64,
    tau_us: f64,
    burst: u32,
    /// Key → (when the denied request would have been admitted, its cost).
    deny: Mutex<HashMap<String, (Instant, u32)>>,
    round_trips: AtomicU64,
    failures: AtomicU64,
}

impl RedisStore {
    /// A store for `quota` per key over `conn` (a `ConnectionManager`, a cluster
    /// connection, or a [`RedisConnection`] of either).
    #[must_use]
    pub fn new(conn: impl Into<RedisConnection>, quota: Quota) -> Self {
        let conn = conn.into();
        let t_us = quota.replenish_interval().as_secs_f64() * 1e6;
        let burst = quota.burst_size().get();
        Self {
            conn,
            shared: Arc::new(Shared {
                script: Script::new(GCRA_LUA),
                t_us,
                tau_us: t_us * f64::from(burst),
                burst,
                deny: Mutex::new(HashMap::new()),
                round_trips: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
            prefix: Arc::from("palisade:rate:"),
            timeout: DEFAULT_TIMEOUT,
            failure: FailurePolicy::Open,
        }
    }

    /// Prefix of every Redis key (default `palisade:rate:`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// Longest wait for Redis per decision (default 50ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis fails (default [`FailurePolicy::Open`]).
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// Round trips made to Redis so far (deny-cache hits make none).
    #[must_use]
    pub fn round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::Relaxed)
    }

    /// Decisions Redis failed to make (errors and timeouts) so far.
    #[must_use]
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Takes `cost` cells from `key`'s bucket, reserving a slot up to `max_wait` ahead.
    pub async fn acquire(&self, key: &str, cost: u32, max_wait: Duration) -> Acquire {
        if cost > self.shared.burst {
            return Acquire::Rejected(RateLimited::new());
        }
        if let Some(retry_after) = self.denied(key, cost, max_wait) {
            return Acquire::Rejected(RateLimited::with_retry_after(retry_after));
        }
        self.shared.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        let full_key = format!("{}{key}", self.prefix);
        let mut invocation = self.shared.script.key(&full_key);
        invocation
            .arg(self.shared.t_us)
            .arg(self.shared.tau_us)
            .arg(cost)
            .arg(max_wait.as_secs_f64() * 1e6);
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, String)>(&mut conn),
        )
        .await;
        let (admitted, wait_us) = match answer {
            Ok(Ok((admitted, wait))) => (admitted == 1, wait.parse::<f64>().unwrap_or(0.0)),
            Ok(Err(error)) => return self.failed(&error),
            Err(_elapsed) => return self.failed(&"timed out"),
        };
        let wait = Duration::from_nanos((wait_us * 1e3).round() as u64);
        if !admitted {
            self.remember_denial(key, cost, wait);
            Acquire::Rejected(RateLimited::with_retry_after(wait))
        } else if wait.is_zero() {
            Acquire::Now
        } else {
            Acquire::After(wait)
        }
    }

    fn failed(&self, error: &dyn fmt::Display) -> Acquire {
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "palisade::rate",
            %error,
            policy = ?self.failure,
            "rate limit: redis store failed"
        );
        match self.failure {
            FailurePolicy::Open => Acquire::Now,
            FailurePolicy::Closed => Acquire::Rejected(RateLimited::new()),
        }
    }

    /// The remaining retry-after of a cached denial, for a request of `cost`, if it is
    /// longer than the caller may wait.
    ///
    /// A denial of cost `c` due at `until` says the bucket frees `c` cells then; a request
    /// of cost `c'` needs `(c - c')` emission intervals less (or more). Other processes can
    /// only have pushed the bucket further since, so this never refuses a request Redis
    /// would admit: at worst it asks Redis.
    fn denied(&self, key: &str, cost: u32, max_wait: Duration) -> Option<Duration> {
        let deny = self
            .shared
            .deny
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (until, denied_cost) = *deny.get(key)?;
        drop(deny);
        // Signed: a denial already due may still cover a larger request.
        let now = Instant::now();
        let due_us = until.saturating_duration_since(now).as_secs_f64() * 1e6
            - now.saturating_duration_since(until).as_secs_f64() * 1e6;
        let left_us = due_us + (f64::from(cost) - f64::from(denied_cost)) * self.shared.t_us;
        let left = palisade_core::time::secs_f64(left_us / 1e6).unwrap_or(Duration::ZERO);
        (left > max_wait).then_some(left)
    }

    fn remember_denial(&self, key: &str, cost: u32, retry_after: Duration) {
        let now = Instant::now();
        let mut deny = self
            .shared
            .deny
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if deny.len() >= DENY_CACHE_CAP {
            // Bounded: drop what has expired, and everything if that was not enough.
            deny.retain(|_, (until, _)| *until > now);
            if deny.len() >= DENY_CACHE_CAP {
                deny.clear();
            }
        }
        deny.insert(
            key.to_owned(),
            (palisade_core::time::add(now, retry_after), cost),
        );
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .field("burst", &self.shared.burst)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

/// Applies a Redis-backed per-key limit; see the [module docs](crate::redis).
#[derive(Clone, Debug)]
pub struct RedisRateLimitLayer<F, C = UnitCost> {
    store: RedisStore,
    key: F,
    cost: C,
    max_wait: Duration,
}

// === impl RedisRateLimitLayer ===

impl<F> RedisRateLimitLayer<F> {
    /// Limits each key `key(&request)` through `store`.
    #[must_use]
    pub fn new(store: RedisStore, key: F) -> Self {
        Self {
            store,
            key,
            cost: UnitCost,
            max_wait: Duration::ZERO,
        }
    }
}

impl<F, C> RedisRateLimitLayer<F, C> {
    /// Wait up to `max_wait` for a reserved slot instead of rejecting at once (never past
    /// the request's deadline).
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Charge each request `cost(&request)` cells instead of one.
    #[must_use]
    pub fn cost<C2>(self, cost: C2) -> RedisRateLimitLayer<F, C2> {
        RedisRateLimitLayer {
            store: self.store,
            key: self.key,
            cost,
            max_wait: self.max_wait,
        }
    }
}

impl<S, F: Clone, C: Clone> Layer<S> for RedisRateLimitLayer<F, C> {
    type Service = RedisRateLimit<S, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RedisRateLimit {
            inner,
            store: self.store.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
        }
    }
}

/// A service under a Redis-backed limit; built by [`RedisRateLimitLayer`].
///
/// Holds no reservation, so the derived `Clone` is right.
#[derive(Clone, Debug)]
pub struct RedisRateLimit<S, F, C = UnitCost> {
    inner: S,
    store: RedisStore,
    key: F,
    cost: C,
    max_wait: Duration,
}

// === impl RedisRateLimit ===

impl<S, F, C> RedisRateLimit<S, F, C> {
    palisade_core::inner_accessors!(S);
}

impl<S, F, C, K, Request> Service<Request> for RedisRateLimit<S, F, C>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    F: Fn(&Request) -> K,
    K: AsRef<str> + Send + 'static,
    C: Cost<Request>,
    Request: HasDeadline + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let key = (self.key)(&request);
        let cost = self.cost.cost(&request);
        let max_wait = allowed_wait(self.max_wait, request.deadline());
        let store = self.store.clone();
        // The decision takes a round trip (and maybe a wait): the request carries an
        // unready clone, readied only once admitted, so the ready service stays here for
        // the next call and nothing below is pinned while Redis answers.
        let mut svc = self.inner.clone();
        // The decision and the call run in the call's span (already boxed: no extra cost).
        let span = tracing::debug_span!(target: "palisade::rate", "palisade.fleet_rate_limit");
        Box::pin(tracing::Instrument::instrument(
            async move {
                match store.acquire(key.as_ref(), cost, max_wait).await {
                    Acquire::Now => {}
                    Acquire::After(wait) => tokio::time::sleep(wait).await,
                    Acquire::Rejected(error) => return Err(error.into()),
                }
                std::future::poll_fn(|cx| svc.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                svc.call(request).await.map_err(Into::into)
            },
            span,
        ))
    }
}
