//! The state one fleet limit shares across its layer, services and leases: the local limit
//! in front, the registry of leases this layer holds, counters, and the channel to the one
//! renewal task.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_core::observe::{Counter, Gauge};
use palisade_core::{Deadline, Overloaded};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::layer::FailurePolicy;
use super::store::{Grant, LeaseStore};
use crate::concurrency::shared::{Permit, Shared as Local, SharedLanes};

/// A validated configuration (see the builder for each field's meaning).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) key: String,
    pub(crate) limit: usize,
    pub(crate) local_limit: usize,
    pub(crate) queue: Option<(usize, Duration)>,
    pub(crate) ttl: Duration,
    pub(crate) renew_every: Duration,
    pub(crate) failure: FailurePolicy,
    pub(crate) fail_open_limit: usize,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) name: Arc<str>,
}

/// Counters shared with the renewal task (which holds no `Fleet`, so that dropping the
/// last layer, service and lease ends it).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    fleet_held: AtomicU64,
    renewals: AtomicU64,
    reregistered: AtomicU64,
    expirations: AtomicU64,
    errors: AtomicU64,
    failed_open: AtomicU64,
    releases: AtomicU64,
}

/// Lease ids this layer holds now: what the renewal task renews.
type Registry = Mutex<HashSet<Arc<str>>>;

/// Most earlier (failed-open) leases one acquire registers in passing.
const RECONCILE: usize = 64;

enum Msg {
    Release(Arc<str>),
}

pub(crate) struct Fleet {
    store: LeaseStore,
    pub(crate) config: Config,
    local: SharedLanes,
    registry: Arc<Registry>,
    /// The leases admitted failing open that no acquire has registered yet: the next
    /// successful acquire registers them first (the renewal task does, at the latest).
    unregistered: Arc<Registry>,
    stats: Arc<Stats>,
    /// Woken each time a release of ours lands in Redis: our own waiters try again at once
    /// instead of at the end of their backoff.
    released: Arc<Notify>,
    /// The renewal task's channel; `None` until the first call spawns it.
    task: Mutex<Option<mpsc::UnboundedSender<Msg>>>,
    id_base: u64,
    next_id: AtomicU64,
    admitted: Counter,
    rejected: Counter,
    timed_out: Counter,
    failed_open: Counter,
    _limit_gauge: Gauge,
}

impl Fleet {
    pub(crate) fn new(store: LeaseStore, config: Config) -> Arc<Self> {
        let name = &config.name;
        let counter = |decision| {
            Counter::register(
                "palisade_decisions_total",
                "fleet_limit",
                name,
                &[("decision", decision)],
            )
        };
        let limit_gauge = Gauge::register("palisade_limit", "fleet_limit", name, &[]);
        limit_gauge.set(config.limit as f64);
        Arc::new(Self {
            _limit_gauge: limit_gauge,
            local: Local::new(config.local_limit, Arc::clone(name)),
            registry: Arc::default(),
            unregistered: Arc::default(),
            stats: Arc::default(),
            released: Arc::default(),
            task: Mutex::new(None),
            id_base: RandomState::new().build_hasher().finish(),
            next_id: AtomicU64::new(0),
            admitted: counter("admitted"),
            rejected: counter("rejected"),
            timed_out: counter("timed_out"),
            failed_open: counter("failed_open"),
            store,
            config,
        })
    }

    /// The renewal task's channel, spawning the task on first use. Called from inside the
    /// admission future, so a Tokio runtime is running. If the task is gone (the runtime it
    /// ran on was shut down while this layer lives on, as with a layer shared by several
    /// `#[tokio::test]`s), a new one is spawned here rather than leaving leases unrenewed.
    fn sender(&self) -> mpsc::UnboundedSender<Msg> {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = task.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let renewer = Renewer {
            store: self.store.clone(),
            key: self.config.key.clone(),
            limit: self.config.limit as u64,
            ttl: self.config.ttl,
            every: self.config.renew_every,
            registry: Arc::clone(&self.registry),
            stats: Arc::clone(&self.stats),
            released: Arc::clone(&self.released),
            name: Arc::clone(&self.config.name),
        };
        tokio::spawn(renewer.run(rx));
        *task = Some(tx.clone());
        tx
    }

    /// A lease id unique across the fleet (a random base per layer, then a counter), and a
    /// seed for that call's backoff jitter.
    fn lease_id(&self) -> (Arc<str>, u64) {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = Arc::from(format!("{:016x}-{n}", self.id_base));
        (id, self.id_base ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Decides one call: a local permit first (queueing for it if configured), then a lease
    /// from Redis, retried with jittered backoff while the limit is full and time is left.
    pub(crate) async fn admit(
        self: Arc<Self>,
        deadline: Option<Deadline>,
    ) -> Result<Lease, Overloaded> {
        let wait = match self.config.queue {
            Some((_, max_wait)) => Deadline::cap(deadline, max_wait),
            None => Duration::ZERO,
        };
        let until = palisade_core::time::from_now(wait);
        let permit = match Local::try_acquire(&self.local) {
            Some(permit) => permit,
            None => self.local_wait(wait).await?,
        };
        let tx = self.sender();
        let (mut id, seed) = self.lease_id();
        let mut backoff = Backoff::new(self.config.backoff, seed);
        // Releases `id` if this future is dropped while Redis may have granted it.
        let mut pending = Pending {
            id: None,
            tx: tx.clone(),
        };
        loop {
            // Registered before asking, so a release of ours landing meanwhile still wakes us.
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let earlier: Vec<Arc<str>> = self
                .unregistered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .take(RECONCILE)
                .cloned()
                .collect();
            pending.id = Some(Arc::clone(&id));
            let attempt = self
                .store
                .try_acquire_after(
                    &self.config.key,
                    self.config.limit as u64,
                    self.config.ttl,
                    &id,
                    &earlier,
                )
                .await;
            if attempt.is_ok() && !earlier.is_empty() {
                // Registered now if the limit had room; the renewal task retries the rest.
                let mut unregistered = self
                    .unregistered
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for id in &earlier {
                    unregistered.remove(id);
                }
            }
            match attempt {
                Ok(Grant::Granted { held }) => {
                    pending.id = None;
                    self.stats.fleet_held.store(held, Ordering::Relaxed);
                    self.admitted.increment(1);
                    self.register(&id, None);
                    return Ok(self.lease(id, permit, tx));
                }
                Ok(Grant::Full { held }) => {
                    // Redis said no: nothing to release.
                    pending.id = None;
                    self.stats.fleet_held.store(held, Ordering::Relaxed);
                }
                Err(error) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "palisade::limit", name = %self.config.name, %error, policy = ?self.config.failure, "fleet limit: redis lease store failed");
                    if self.config.failure == FailurePolicy::Open {
                        // Held under an id Redis may or may not have: the next acquire
                        // registers it first once Redis is back (the renewal task at the
                        // latest), while the limit has room.
                        if self.register(&id, Some(self.config.fail_open_limit)) {
                            pending.id = None;
                            self.unregistered
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(Arc::clone(&id));
                            self.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                            self.failed_open.increment(1);
                            return Ok(self.lease(id, permit, tx));
                        }
                    }
                    // The timed-out script may have run: hand the id back in the background,
                    // and ask again under a fresh one, so that release can never land after
                    // (and undo) a later grant.
                    pending.release();
                    id = self.lease_id().0;
                    if self.config.failure == FailurePolicy::Closed {
                        return Err(self.reject());
                    }
                }
            }
            let now = Instant::now();
            if now >= until {
                return Err(if wait.is_zero() {
                    self.reject()
                } else {
                    self.time_out()
                });
            }
            // Not a fixed-interval poll: a jittered, growing pause, cut short when a
            // release of ours lands (that slot is most likely free for us).
            let pause = backoff.next().min(until - now);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = notified => {}
            }
        }
    }

    async fn local_wait(&self, wait: Duration) -> Result<Permit, Overloaded> {
        let Some((max_queued, _)) = self.config.queue else {
            return Err(self.reject());
        };
        if wait.is_zero() {
            return Err(self.reject());
        }
        let Some(slot) = Local::enqueue(&self.local, Some(max_queued)) else {
            return Err(self.reject());
        };
        match Local::acquire(slot, Some(wait)).await {
            Ok(permit) => Ok(permit),
            Err(_) => Err(self.time_out()),
        }
    }

    /// Registers lease `id` for renewal. With `max`, only if this layer holds fewer than
    /// `max` leases: checked and inserted under one lock, so failing open admits exactly up
    /// to the bound however many calls decide at once.
    fn register(&self, id: &Arc<str>, max: Option<usize>) -> bool {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if max.is_some_and(|max| registry.len() >= max) {
            return false;
        }
        registry.insert(Arc::clone(id));
        true
    }

    /// The guard of a registered lease.
    fn lease(&self, id: Arc<str>, permit: Permit, tx: mpsc::UnboundedSender<Msg>) -> Lease {
        Lease {
            id,
            registry: Arc::clone(&self.registry),
            unregistered: Arc::clone(&self.unregistered),
            tx,
            _permit: permit,
        }
    }

    fn reject(&self) -> Overloaded {
        self.rejected.increment(1);
        tracing::debug!(target: "palisade::limit", name = %self.config.name, "fleet limit full: rejected");
        Overloaded::new()
    }

    fn time_out(&self) -> Overloaded {
        self.timed_out.increment(1);
        tracing::debug!(target: "palisade::limit", name = %self.config.name, "fleet limit wait exceeded: rejected");
        Overloaded::new()
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A lease id Redis may have granted to a call that has not got it yet (its request is out,
/// or timed out). Released in the background if the call gives up or is dropped.
struct Pending {
    id: Option<Arc<str>>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Pending {
    fn release(&mut self) {
        if let Some(id) = self.id.take() {
            // A closed channel leaves the lease to its TTL.
            let _ = self.tx.send(Msg::Release(id));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.release();
    }
}

/// One admitted call's hold on the limit: a lease id and a local permit. Dropping it (on
/// completion, error, or drop of the response future) releases both: the permit at once,
/// the lease by handing its id to the renewal task, which releases it in Redis. If even
/// that fails (the runtime is shutting down, Redis is unreachable), the lease's TTL
/// reclaims it.
pub struct Lease {
    id: Arc<str>,
    registry: Arc<Registry>,
    unregistered: Arc<Registry>,
    tx: mpsc::UnboundedSender<Msg>,
    _permit: Permit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.unregistered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        // Never blocks, never panics: a closed channel leaves the lease to its TTL.
        let _ = self.tx.send(Msg::Release(Arc::clone(&self.id)));
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).finish()
    }
}

/// The one renewal task of a layer: releases leases as they are dropped (batched), and
/// every renewal period extends the leases still held. It ends when the layer, its
/// services and their leases are all gone (the channel closes).
struct Renewer {
    store: LeaseStore,
    key: String,
    limit: u64,
    ttl: Duration,
    every: Duration,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    released: Arc<Notify>,
    name: Arc<str>,
}

/// Ids per script call, so one renewal never builds an unbounded command.
const BATCH: usize = 512;

impl Renewer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick =
            tokio::time::interval_at(palisade_core::time::from_now(self.every), self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(Msg::Release(id)) = msg else { break };
                    let mut batch = vec![id];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(Msg::Release(id)) => batch.push(id),
                            Err(_) => break,
                        }
                    }
                    self.release(&batch).await;
                }
                _ = tick.tick() => self.renew().await,
            }
        }
        tracing::debug!(target: "palisade::limit", name = %self.name, "fleet limit: renewal task ended");
    }

    async fn release(&self, ids: &[Arc<str>]) {
        match self.store.release(&self.key, ids).await {
            Ok(held) => {
                self.stats.fleet_held.store(held, Ordering::Relaxed);
                self.stats
                    .releases
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "palisade::limit", name = %self.name, %error, leases = ids.len(), "fleet limit: release failed; the leases expire by their ttl");
            }
        }
        self.released.notify_waiters();
    }

    async fn renew(&self) {
        let ids: Vec<Arc<str>> = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        for chunk in ids.chunks(BATCH) {
            match self
                .store
                .renew(&self.key, self.limit, self.ttl, chunk)
                .await
            {
                Ok(r) => {
                    self.stats.fleet_held.store(r.held, Ordering::Relaxed);
                    self.stats
                        .renewals
                        .fetch_add(r.renewed + r.reregistered, Ordering::Relaxed);
                    self.stats
                        .reregistered
                        .fetch_add(r.reregistered, Ordering::Relaxed);
                    if r.lost > 0 || r.reregistered > 0 {
                        self.stats
                            .expirations
                            .fetch_add(r.lost + r.reregistered, Ordering::Relaxed);
                        tracing::warn!(target: "palisade::limit", name = %self.name, reregistered = r.reregistered, lost = r.lost, "fleet limit: leases had expired");
                    }
                }
                Err(error) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "palisade::limit", name = %self.name, %error, "fleet limit: renewal failed");
                }
            }
        }
    }
}

/// Full-jitter exponential backoff: each pause is uniform in [d/2, d], d doubling from the
/// first bound to the largest. Core's seedable source, seeded per call, is all the
/// randomness it needs (de-synchronising waiters of different processes).
struct Backoff {
    next: Duration,
    max: Duration,
    rng: palisade_core::rand::SeededRng,
}

impl Backoff {
    fn new((first, max): (Duration, Duration), seed: u64) -> Self {
        Self {
            next: first,
            max,
            rng: palisade_core::rand::SeededRng::new(seed),
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        palisade_core::time::mul_f64(d, 0.5 + self.rng.next_f64() / 2.0)
    }
}

/// A handle on one fleet limit's live state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FleetHandle {
    fleet: Arc<Fleet>,
}

impl FleetHandle {
    pub(crate) fn new(fleet: Arc<Fleet>) -> Self {
        Self { fleet }
    }

    /// The fleet-wide limit.
    pub fn limit(&self) -> usize {
        self.fleet.config.limit
    }

    /// Calls of this layer holding a lease now.
    pub fn local_in_flight(&self) -> usize {
        self.fleet
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Local permits taken now: calls in flight plus calls asking Redis for a lease.
    pub fn local_permits(&self) -> usize {
        self.fleet.local.in_flight()
    }

    /// Calls waiting for a local permit now.
    pub fn queued(&self) -> usize {
        self.fleet.local.queued_now()
    }

    /// Leases held across the fleet, as Redis last reported them.
    pub fn fleet_in_flight(&self) -> u64 {
        self.fleet.stats.fleet_held.load(Ordering::Relaxed)
    }

    /// Leases renewed so far (re-registrations included).
    pub fn renewals(&self) -> u64 {
        self.fleet.stats.renewals.load(Ordering::Relaxed)
    }

    /// Leases a renewal found expired (Redis unreachable for longer than the TTL, or
    /// restarted): re-registered or lost.
    pub fn expirations(&self) -> u64 {
        self.fleet.stats.expirations.load(Ordering::Relaxed)
    }

    /// Expired leases registered again by a renewal.
    pub fn reregistered(&self) -> u64 {
        self.fleet.stats.reregistered.load(Ordering::Relaxed)
    }

    /// Leases released in Redis so far.
    pub fn releases(&self) -> u64 {
        self.fleet.stats.releases.load(Ordering::Relaxed)
    }

    /// Redis failures (errors and timeouts) so far, on every path.
    pub fn redis_errors(&self) -> u64 {
        self.fleet.stats.errors.load(Ordering::Relaxed)
    }

    /// Calls admitted by the fail-open policy so far.
    pub fn failed_open(&self) -> u64 {
        self.fleet.stats.failed_open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_within_jittered_bounds_up_to_the_cap() {
        let (first, max) = (Duration::from_millis(4), Duration::from_millis(50));
        let mut backoff = Backoff::new((first, max), 0x5eed);
        let mut nominal = first;
        for _ in 0..20 {
            let pause = backoff.next();
            assert!(
                pause >= nominal / 2 && pause <= nominal,
                "{pause:?} vs {nominal:?}"
            );
            nominal = (nominal * 2).min(max);
        }
        // Different seeds give different pauses: waiters do not move in lock step.
        let a: Vec<_> = (0..8)
            .map({
                let mut b = Backoff::new((first, max), 1);
                move |_| b.next()
            })
            .collect();
        let b: Vec<_> = (0..8)
            .map({
                let mut b = Backoff::new((first, max), 2);
                move |_| b.next()
            })
            .collect();
        assert_ne!(a, b);
    }
}
