//! The lease store: a sorted set per limit in Redis, lease ids scored by their expiry on the
//! server's clock, changed only by two atomic Lua scripts.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::redis::{hash_tag, RedisConnection};
use redis::Script;

/// Takes a lease if fewer than `limit` live ones exist. Times in milliseconds of the
/// server's `TIME`, so the fleet shares one clock whatever the hosts' clocks say.
///
/// KEYS[1] = the limit's sorted set; ARGV = limit, ttl, lease id, then ids this process
/// already admitted while Redis was unreachable (failing open). Expired leases (score at
/// or before now) are dropped first: that is how a dead process's leases are reclaimed.
/// The earlier ids are registered (or renewed) before the new one is decided, while the
/// limit has room: calls already running count before a new one is let in.
/// Re-sending an id that is already held renews it instead of taking a second slot, so a
/// retried acquire is idempotent. The key's own expiry follows the newest lease, so an idle
/// limit costs Redis no memory. Returns { granted (1/0), leases held after }.
const ACQUIRE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
for i = 4, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  elseif n < limit then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    n = n + 1
  end
end
if #ARGV >= 4 then redis.call('PEXPIRE', KEYS[1], ttl) end
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return { 1, n }
end
if n < limit then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return { 1, n + 1 }
end
return { 0, n }
";

/// Releases (ttl = 0) or renews (ttl > 0) a batch of leases.
///
/// KEYS[1] = the sorted set; ARGV = limit, ttl, lease ids... A renewal finds a lease gone
/// when it expired (Redis was unreachable longer than the TTL, or restarted empty): it is
/// re-registered if the limit has room, and counted lost otherwise (the call keeps running;
/// the next renewal tries again). Returns { renewed, re-registered, lost, leases held }.
const SETTLE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ttl == 0 then
  for i = 3, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
  return { 0, 0, 0, redis.call('ZCARD', KEYS[1]) }
end
local renewed, readded, lost = 0, 0, 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    renewed = renewed + 1
  elseif redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    readded = readded + 1
  else
    lost = lost + 1
  end
end
if renewed + readded > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return { renewed, readded, lost, redis.call('ZCARD', KEYS[1]) }
";

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// Leases in Redis (standalone, Cluster or Valkey); cheap to clone (clones share the
/// connection). See the [module docs](super).
///
/// Each limit is one sorted set at `prefix{name}` (default prefix `palisade:lease:`): one
/// key per script, hash-tagged, so in a Cluster each script runs on the node owning it.
#[derive(Clone)]
pub struct LeaseStore {
    conn: RedisConnection,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    timeout: Duration,
}

struct Scripts {
    acquire: Script,
    settle: Script,
    round_trips: AtomicU64,
}

/// The answer to [`LeaseStore::try_acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grant {
    /// The lease is held; `held` leases (this one included) exist now.
    Granted {
        /// Live leases after this one was taken.
        held: u64,
    },
    /// The limit is full: `held` live leases exist.
    Full {
        /// Live leases.
        held: u64,
    },
}

/// What one renewal found; see [`LeaseStore::renew`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Renewal {
    /// Leases found and extended.
    pub renewed: u64,
    /// Leases found expired and taken again (the limit had room).
    pub reregistered: u64,
    /// Leases found expired with the limit full: not held in Redis now.
    pub lost: u64,
    /// Live leases after the renewal.
    pub held: u64,
}

/// Redis failed to answer: an error, or no answer within the store's timeout.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// No answer within [`LeaseStore::timeout`].
    Timeout,
    /// Redis answered with an error, or the connection failed.
    Redis(redis::RedisError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("redis lease store timed out"),
            Self::Redis(e) => write!(f, "redis lease store failed: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Timeout => None,
            Self::Redis(e) => Some(e),
        }
    }
}

// === impl LeaseStore ===

impl LeaseStore {
    /// A store over `conn` (a `ConnectionManager`, a cluster connection, or a
    /// [`RedisConnection`] of either).
    #[must_use]
    pub fn new(conn: impl Into<RedisConnection>) -> Self {
        Self {
            conn: conn.into(),
            scripts: Arc::new(Scripts {
                acquire: Script::new(ACQUIRE_LUA),
                settle: Script::new(SETTLE_LUA),
                round_trips: AtomicU64::new(0),
            }),
            prefix: Arc::from("palisade:lease:"),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Prefix of every Redis key (default `palisade:lease:`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// Longest wait for Redis per round trip (default 50ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest wait for Redis per round trip.
    #[must_use]
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The Redis key of the limit `name`: `prefix{name}`.
    #[must_use]
    pub fn key(&self, name: &str) -> String {
        hash_tag(&self.prefix, name)
    }

    /// Round trips made to Redis so far.
    #[must_use]
    pub fn round_trips(&self) -> u64 {
        self.scripts.round_trips.load(Ordering::Relaxed)
    }

    /// Takes lease `id` of limit `name` for `ttl` if fewer than `limit` are held.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if Redis fails or does not answer within the timeout; the lease may
    /// then have been taken all the same (release it, or let its TTL reclaim it).
    pub async fn try_acquire(
        &self,
        name: &str,
        limit: u64,
        ttl: Duration,
        id: &str,
    ) -> Result<Grant, StoreError> {
        self.try_acquire_after(name, limit, ttl, id, &[] as &[&str])
            .await
    }

    /// [`try_acquire`](Self::try_acquire), registering (or renewing) the leases `earlier`
    /// first, while the limit has room: leases of calls admitted while Redis was
    /// unreachable, so they count before the new call is decided.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    pub async fn try_acquire_after(
        &self,
        name: &str,
        limit: u64,
        ttl: Duration,
        id: &str,
        earlier: &[impl AsRef<str>],
    ) -> Result<Grant, StoreError> {
        let key = self.key(name);
        let mut invocation = self.scripts.acquire.key(&key);
        invocation.arg(limit).arg(ttl_ms(ttl)).arg(id);
        for id in earlier {
            invocation.arg(id.as_ref());
        }
        let (granted, held): (i64, u64) = self.run(&invocation).await?;
        Ok(if granted == 1 {
            Grant::Granted { held }
        } else {
            Grant::Full { held }
        })
    }

    /// Releases leases `ids` of limit `name`; returns the leases still held. Unknown or
    /// expired ids are ignored.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if Redis fails or times out (the leases then expire by their TTL).
    pub async fn release(&self, name: &str, ids: &[impl AsRef<str>]) -> Result<u64, StoreError> {
        let renewal = self.settle(name, 0, 0, ids).await?;
        Ok(renewal.held)
    }

    /// Extends leases `ids` of limit `name` to `ttl` from now, re-registering those that
    /// expired if fewer than `limit` are held (see [`Renewal`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if Redis fails or times out.
    pub async fn renew(
        &self,
        name: &str,
        limit: u64,
        ttl: Duration,
        ids: &[impl AsRef<str>],
    ) -> Result<Renewal, StoreError> {
        self.settle(name, limit, ttl_ms(ttl), ids).await
    }

    /// Live leases of limit `name` now (expired ones are dropped first).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if Redis fails or times out.
    pub async fn held(&self, name: &str) -> Result<u64, StoreError> {
        self.release(name, &[] as &[&str]).await
    }

    async fn settle(
        &self,
        name: &str,
        limit: u64,
        ttl_ms: u64,
        ids: &[impl AsRef<str>],
    ) -> Result<Renewal, StoreError> {
        let key = self.key(name);
        let mut invocation = self.scripts.settle.key(&key);
        invocation.arg(limit).arg(ttl_ms);
        for id in ids {
            invocation.arg(id.as_ref());
        }
        let (renewed, reregistered, lost, held) = self.run(&invocation).await?;
        Ok(Renewal {
            renewed,
            reregistered,
            lost,
            held,
        })
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.scripts.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_elapsed) => Err(StoreError::Timeout),
        }
    }
}

/// Longest TTL sent to Redis (about 34 years): `PEXPIRE` refuses times that overflow, and
/// Lua's doubles stay exact well past this.
const MAX_TTL_MS: u64 = 1 << 40;

/// Whole milliseconds, at least 1 (a TTL of 0 would mean "release" to the script), at
/// most [`MAX_TTL_MS`].
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

impl fmt::Debug for LeaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}
