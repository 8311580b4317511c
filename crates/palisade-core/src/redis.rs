//! One Redis connection over a standalone server (or Valkey) and a Redis Cluster (feature
//! `redis`): [`RedisConnection`], what the fleet-wide stores (the rate store of
//! `palisade-rate`, the lease store of `palisade-limit`) send their scripts through.
//!
//! Both variants are multiplexed, cheap to clone and reconnect by themselves. Each of the
//! stores' Lua scripts touches exactly one key, so in a Cluster every script runs on the
//! one node that owns that key's slot; `redis`'s cluster connection routes `EVALSHA` by its
//! first key and follows `MOVED`/`ASK` redirections. [`hash_tag`] builds keys whose
//! `{…}` part picks the slot, for callers that want related keys on one node.
//!
//! # Example
//!
//! ```no_run
//! use palisade_core::redis::RedisConnection;
//!
//! # async fn run() -> redis::RedisResult<()> {
//! // A standalone server (or Valkey) ...
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let standalone = RedisConnection::from(redis::aio::ConnectionManager::new(client).await?);
//! // ... or a Cluster, through the same type.
//! let cluster = redis::cluster::ClusterClient::new(vec!["redis://127.0.0.1:7000/"])?;
//! let cluster = RedisConnection::from(cluster.get_async_connection().await?);
//! # let _ = (standalone, cluster);
//! # Ok(()) }
//! ```

use std::fmt;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to a standalone Redis server or to a Redis Cluster; see the
/// [module docs](self).
#[derive(Clone)]
pub enum RedisConnection {
    /// A standalone server (or Valkey), through a reconnecting [`ConnectionManager`].
    Standalone(ConnectionManager),
    /// A Redis Cluster, routing each command to the node that owns its key's slot.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Whether this is a Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        Self::Standalone(conn)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(conn: ClusterConnection) -> Self {
        Self::Cluster(conn)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standalone(_) => f.write_str("RedisConnection::Standalone"),
            Self::Cluster(_) => f.write_str("RedisConnection::Cluster"),
        }
    }
}

/// `prefix` followed by `key` in a Cluster hash tag: `prefix{key}`. Every key built with
/// the same `key` maps to the same slot whatever its prefix or suffix. A `key` holding `{`
/// or `}` has those replaced by `_`, so the tag is always exactly `key`.
///
/// ```
/// assert_eq!(palisade_core::redis::hash_tag("palisade:lease:", "vendor"), "palisade:lease:{vendor}");
/// ```
pub fn hash_tag(prefix: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + key.len() + 2);
    out.push_str(prefix);
    out.push('{');
    out.extend(
        key.chars()
            .map(|c| if c == '{' || c == '}' { '_' } else { c }),
    );
    out.push('}');
    out
}
