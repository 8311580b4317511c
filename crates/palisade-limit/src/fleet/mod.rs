//! At most N calls in flight across a fleet of processes (feature `redis`):
//! [`FleetLimitLayer`].
//!
//! Per-process limits multiply by the number of replicas: 20 workers each limited to 10
//! send 200 concurrent calls to a vendor that allows 20. A fleet limit keeps one count in
//! Redis (standalone, Cluster or Valkey) that every process shares.
//!
//! # How it works
//!
//! - **Leases.** Each limit is a sorted set of lease ids scored by their expiry, on the
//!   Redis server's clock ([`LeaseStore`]). A call is admitted when one atomic Lua script
//!   drops the expired leases, counts the rest and, if fewer than N, adds its own: one round
//!   trip per admission. A lease is released when the response future completes, fails or
//!   is dropped.
//! - **Crash safety.** A lease lives for a TTL (default 10 s) unless renewed, so the leases
//!   of a process that dies (SIGKILL) are reclaimed within TTL + one renewal period.
//! - **One renewal task per layer**, spawned by the layer's first call (inside the Tokio
//!   runtime; again if that runtime has since shut down) and ending when the layer, every
//!   service built from it, every [`FleetHandle`] and every lease are dropped. Every renewal period (default TTL / 3) it extends all the layer's leases in
//!   one script call, so a slow call never expires while it runs. It also performs the
//!   releases: a dropped lease cannot `await`, so its `Drop` hands the id to the task's
//!   channel (never blocking, never panicking); the task releases batches in one script
//!   call. If that fails too (Redis unreachable, runtime shut down), the TTL reclaims the
//!   lease. A call dropped (or timed out) while its acquire is out hands its lease id over
//!   the same way, since Redis may grant it after all; a retry after an error asks under a
//!   fresh id, so a background release never undoes a later grant.
//! - **A local limit in front** (default N, never more): calls over it never ask Redis, so
//!   one process alone never exceeds N either, and the local count bounds how many ask at
//!   once. It is palisade's own [`ConcurrencyLimit`](crate::ConcurrencyLimit) semaphore.
//! - **Waiting.** By default a full limit rejects at once with
//!   [`Overloaded`](palisade_core::Overloaded). With [`queue`](FleetLimitBuilder::queue),
//!   at most `max_queued` calls per process wait, each at most `max_wait` and never past its
//!   request's [`Deadline`](palisade_core::Deadline). A waiting call retries with
//!   **jittered exponential backoff** (default 5 ms doubling to 100 ms, each pause uniform
//!   in [d/2, d]), cut short when one of this process's own releases lands. Backoff rather
//!   than pub/sub or a list pop: it needs no extra connection per process (a blocking pop
//!   or a subscription would hold one, and in a Cluster be tied to one node), it behaves the
//!   same on standalone, Cluster and Valkey, and it keeps no state in Redis that a crash
//!   could strand (a notification a dead process never sends). The local wake-up recovers
//!   the common case — a slot freed by this process — without any polling, and the jitter
//!   keeps waiters of different processes from asking in lock step. Like every waiting
//!   layer here, a waiting request holds an unready clone of the inner service and readies
//!   it only once admitted (core's [`Admission`](palisade_core::admission::Admission)), so
//!   it pins nothing below.
//! - **Failure policy.** Each round trip is bounded by the store's timeout (default 50 ms).
//!   On an error or timeout, [`FailurePolicy::Open`] admits while this process has at most
//!   its fail-open limit in flight (default N / [`expected_replicas`](FleetLimitBuilder::expected_replicas),
//!   at least 1). [`FailurePolicy::Closed`] rejects. Either way the decision comes within
//!   the timeout. When Redis returns, the process's next acquire first registers the
//!   leases it admitted failing open (while the limit has room), then decides the new
//!   call; the renewal task registers again any lease it finds expired (Redis restarted
//!   empty, or unreachable for longer than the TTL) and counts expirations. The bound:
//!   during an outage, and for the length of a call after it, the fleet runs at most
//!   N + replicas × fail-open limit calls (leases taken before it, plus each process's
//!   fail-open calls not yet registered); N again once those calls end.
//!
//! - **Observability.** [`FleetHandle`]: calls holding a lease here, local permits and
//!   queue, fleet-wide leases as Redis last reported them, renewals, expirations,
//!   re-registrations, releases, Redis errors, fail-open admissions. Metrics (feature
//!   `metrics`) under `policy="fleet_limit"`: `palisade_decisions_total` with `decision` =
//!   `admitted` / `rejected` / `timed_out` / `failed_open`, and `palisade_limit`. Tracing
//!   events under `palisade::limit`: rejections at `debug`, store failures and expired
//!   leases at `warn`.
//!
//! Keys are `prefix{name}` (default prefix `palisade:lease:`): each script touches one key,
//! so in a Cluster it runs on the node owning that key's slot.
//!
//! # Example
//!
//! ```no_run
//! use palisade_core::BoxError;
//! use palisade_limit::fleet::{FleetLimitLayer, LeaseStore};
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), BoxError> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let store = LeaseStore::new(redis::aio::ConnectionManager::new(client).await?);
//! // 20 calls to the vendor across every replica; wait up to 1 s for a slot.
//! let layer = FleetLimitLayer::builder(store, "vendor", 20)
//!     .expected_replicas(4)
//!     .queue(100, Duration::from_secs(1))
//!     .build()?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: &'static str| async move { Ok::<_, BoxError>(req.len()) }));
//! assert_eq!(svc.oneshot("embed").await?, 5);
//! println!("fleet in flight: {}", handle.fleet_in_flight());
//! # Ok(()) }
//! ```

mod layer;
mod service;
mod shared;
mod store;

pub use self::layer::{FailurePolicy, FleetLimitBuilder, FleetLimitLayer, InvalidFleetLimit};
pub use self::service::FleetLimit;
pub use self::shared::FleetHandle;
pub use self::store::{Grant, LeaseStore, Renewal, StoreError};

/// Response futures of [`FleetLimit`].
pub mod future {
    pub use super::service::ResponseFuture;
}
