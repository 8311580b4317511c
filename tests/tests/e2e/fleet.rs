//! The fleet-wide concurrency limit against real Redis servers: worker processes sharing a
//! limit of 8 against a loopback upstream, a holder killed mid-call, Redis stopped, killed
//! and restarted under load, and a 3-node Cluster. Real time throughout: the tests assert
//! upper bounds and invariants, and print what they measure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, Overloaded};
use palisade_limit::fleet::{FailurePolicy, FleetLimitLayer, Grant, LeaseStore};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

use crate::redis_support::{finish, worker, RedisCluster, RedisServer, Upstream, WorkerSpec};

const LIMIT: usize = 8;

/// Four worker processes, each with 6 callers (24 for 8 slots), share one fleet limit:
/// the upstream never sees more than 8 at once, and under saturation the slots are used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_a_limit_of_8() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let url = redis.url();
    let spec = WorkerSpec {
        redis_url: &url,
        upstream: &upstream.addr,
        key: "share",
        limit: LIMIT,
        concurrency: 6,
        hold_ms: 50,
        run_ms: 3000,
        ttl_ms: 2000,
        renew_ms: 500,
    };
    let start = Instant::now();
    let workers: Vec<_> = (0..4).map(|_| worker(&spec)).collect();
    let mut outs = Vec::new();
    for w in workers {
        outs.push(finish(w, Duration::from_secs(30)).await);
    }
    let end = Instant::now();
    // Saturation window: after every process has started and before the first stops.
    let from = start + Duration::from_millis(1000);
    let to = start + Duration::from_millis(2800);
    let mean = upstream.mean_in_flight(from, to.min(end));
    let peak = upstream.peak.load(Ordering::SeqCst);
    println!(
        "fleet share: peak {peak} of {LIMIT}; mean in flight {mean:.2} = {:.1}% slot use; workers: {outs:?}",
        100.0 * mean / LIMIT as f64
    );
    assert!(peak <= LIMIT, "upstream saw {peak} > {LIMIT}");
    // Every worker got calls through (the limit is shared, not taken by one).
    for out in &outs {
        let admitted: u64 = out
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("admitted="))
            .and_then(|n| n.parse().ok())
            .expect("a count");
        assert!(admitted > 0, "a worker starved: {out}");
    }
    // A weak floor (a loaded 2-core box runs 4 processes, Redis and the test): the measured
    // figure is printed above and quoted in the changelog with its command.
    assert!(mean >= 0.5 * LIMIT as f64, "slot use {mean:.2} of {LIMIT}");
}

/// Four worker processes under load while Redis is SIGSTOPped for a second, then resumed:
/// nobody hangs, every process fails open within its bound (8 / 4 replicas = 2), and the
/// upstream never sees more than the documented N + replicas × fail-open limit = 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_fail_open_within_the_bound_while_redis_is_stopped() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let url = redis.url();
    let spec = WorkerSpec {
        redis_url: &url,
        upstream: &upstream.addr,
        key: "outage",
        limit: LIMIT,
        concurrency: 6,
        hold_ms: 50,
        run_ms: 4000,
        ttl_ms: 2000,
        renew_ms: 500,
    };
    let workers: Vec<_> = (0..4).map(|_| worker(&spec)).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = upstream.peak.swap(0, Ordering::SeqCst);
    redis.pause();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = upstream.peak.swap(0, Ordering::SeqCst);
    redis.resume();
    let mut outs = Vec::new();
    for w in workers {
        outs.push(finish(w, Duration::from_secs(30)).await);
    }
    let after = upstream.peak.load(Ordering::SeqCst);
    println!(
        "fleet outage: peak {before} before, {during} while Redis was stopped, {after} after (bound 16); workers: {outs:?}"
    );
    assert!(before <= LIMIT, "{before} before the outage");
    assert!(during <= LIMIT + 4 * 2, "{during} during the outage");
    assert!(after <= LIMIT + 4 * 2, "{after} after the outage");
    let failed_open: u64 = outs
        .iter()
        .filter_map(|o| {
            o.split_whitespace()
                .find_map(|kv| kv.strip_prefix("failed_open="))
        })
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert!(failed_open > 0, "nobody failed open during the outage");
}

/// A holder process is SIGKILLed with 4 leases: they are reclaimed within TTL + one
/// renewal period, and the other processes then fill the freed slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_leases_are_reclaimed_within_ttl() {
    const TTL_MS: u64 = 1000;
    const RENEW_MS: u64 = 300;
    let redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let url = redis.url();
    let mut holder = worker(&holder_spec(&url, &upstream.addr, TTL_MS, RENEW_MS));
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.in_flight.load(Ordering::SeqCst) < 4 {
        assert!(
            Instant::now() < deadline,
            "the holder never got its 4 calls in"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Hold past several renewals: the holder's slow calls must not expire meanwhile.
    tokio::time::sleep(Duration::from_millis(3 * TTL_MS)).await;
    let others_spec = WorkerSpec {
        hold_ms: 30,
        run_ms: 5000,
        concurrency: 4,
        ..holder_spec(&url, &upstream.addr, TTL_MS, RENEW_MS)
    };
    let others: Vec<_> = (0..3).map(|_| worker(&others_spec)).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // With the holder alive, the others share only the 4 slots it leaves.
    let before = upstream.peak.load(Ordering::SeqCst);
    assert!(before <= LIMIT, "peak {before}");
    let killed = Instant::now();
    holder.kill();
    let refilled = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Look for 8 in flight again among calls that started after the kill.
        if let Some(t) = upstream.first_reaching(killed + Duration::from_millis(20), LIMIT) {
            break t;
        }
        assert!(
            killed.elapsed() < Duration::from_millis(TTL_MS + RENEW_MS + 3000),
            "the killed holder's slots were never reused"
        );
    };
    let reclaim = refilled - killed;
    println!(
        "fleet reclaim: slots back in use {reclaim:?} after SIGKILL (ttl {TTL_MS} ms, renew {RENEW_MS} ms)"
    );
    for w in others {
        finish(w, Duration::from_secs(30)).await;
    }
    assert!(upstream.peak.load(Ordering::SeqCst) <= LIMIT);
    // TTL + one renewal period, plus slack for a loaded box (never a speed claim).
    assert!(
        reclaim <= Duration::from_millis(TTL_MS + RENEW_MS + 1000),
        "reclaim took {reclaim:?}"
    );
}

/// A process holding 4 calls for a minute.
fn holder_spec<'a>(url: &'a str, upstream: &'a str, ttl_ms: u64, renew_ms: u64) -> WorkerSpec<'a> {
    WorkerSpec {
        redis_url: url,
        upstream,
        key: "reclaim",
        limit: LIMIT,
        concurrency: 4,
        hold_ms: 60_000,
        run_ms: 60_000,
        ttl_ms,
        renew_ms,
    }
}

/// An in-process inner service: each request is a hold time in ms (or an error when
/// `u64::MAX`); counts calls in flight and their peak.
#[derive(Clone, Default)]
struct Probe {
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Probe {
    fn service<R: Into<u64> + Send + 'static>(
        &self,
    ) -> impl Service<R, Response = (), Error = BoxError, Future = impl Send> + Clone + Send + 'static
    {
        let probe = self.clone();
        service_fn(move |req: R| {
            let probe = probe.clone();
            async move {
                let hold = req.into();
                if hold == u64::MAX {
                    return Err::<(), BoxError>("upstream error".into());
                }
                let now = probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                probe.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(hold)).await;
                probe.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
    }
}

/// Polls `held(name)` until it equals `want`, for at most `within`.
async fn held_becomes(store: &LeaseStore, name: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let held = store.held(name).await.unwrap();
        if held == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {held} leases held, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every release path returns the lease well before its TTL; a dead holder's lease
/// expires by TTL; a slow call's lease is renewed while it runs; queue waits are capped by
/// the request's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_released_renewed_and_expired() {
    let redis = RedisServer::start().await;
    let store = LeaseStore::new(redis.connect().await)
        .prefix("sem:")
        .timeout(Duration::from_millis(200));
    // Renewals every quarter TTL: a renewal may be up to ~900 ms late (a loaded CI
    // machine running the other real-time tests beside this one) before a lease lapses.
    let ttl = Duration::from_millis(1200);
    let probe = Probe::default();
    let layer = FleetLimitLayer::builder(store.clone(), "paths", 2)
        .ttl(ttl)
        .renew_every(Duration::from_millis(300))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(probe.service::<u64>());
    assert_eq!(store.key("paths"), "sem:{paths}");

    // Completion and error both release (through the renewal task, well within the TTL).
    svc.clone().oneshot(0).await.unwrap();
    held_becomes(&store, "paths", 0, Duration::from_millis(300)).await;
    assert!(svc.clone().oneshot(u64::MAX).await.is_err());
    held_becomes(&store, "paths", 0, Duration::from_millis(300)).await;

    // Two slow calls fill the limit; a third is refused with `Overloaded`.
    let a = tokio::spawn(svc.clone().oneshot(10_000));
    let b = tokio::spawn(svc.clone().oneshot(10_000));
    held_becomes(&store, "paths", 2, Duration::from_secs(2)).await;
    let err = svc.clone().oneshot(0).await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");
    assert_eq!(handle.local_in_flight(), 2);
    // Held across several TTLs: renewals keep them, nobody else gets in.
    tokio::time::sleep(3 * ttl).await;
    assert_eq!(store.held("paths").await.unwrap(), 2);
    assert!(handle.renewals() >= 4, "renewals {}", handle.renewals());
    assert_eq!(handle.expirations(), 0);
    // Dropping the response futures (aborting the tasks) releases at once, not at the TTL.
    a.abort();
    b.abort();
    held_becomes(&store, "paths", 0, Duration::from_millis(300)).await;
    assert_eq!(handle.local_in_flight(), 0);
    assert_eq!(handle.local_permits(), 0);

    // A holder that died: its leases are only in Redis, unrenewed; they expire by TTL.
    for id in ["ghost-1", "ghost-2"] {
        let grant = store.try_acquire("paths", 2, ttl, id).await.unwrap();
        assert!(matches!(grant, Grant::Granted { .. }), "{grant:?}");
    }
    assert!(svc.clone().oneshot(0).await.is_err());
    let died = Instant::now();
    let deadline = died + ttl + Duration::from_secs(2);
    while svc.clone().oneshot(0).await.is_err() {
        assert!(Instant::now() < deadline, "ghost leases never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "fleet ttl: ghost leases reclaimed {:?} after the check",
        died.elapsed()
    );

    // Queue mode: a waiter gets the slot a finishing call frees; a deadline caps the wait.
    let queued = FleetLimitLayer::builder(store.clone(), "queue", 1)
        .ttl(ttl)
        .renew_every(Duration::from_millis(150))
        .queue(4, Duration::from_secs(10))
        .build()
        .unwrap()
        .layer(service_fn(
            |req: palisade_core::WithDeadline<u64>| async move {
                tokio::time::sleep(Duration::from_millis(req.request)).await;
                Ok::<_, BoxError>(())
            },
        ));
    let long = tokio::spawn(
        queued
            .clone()
            .oneshot(palisade_core::WithDeadline::new(300)),
    );
    held_becomes(&store, "queue", 1, Duration::from_secs(2)).await;
    let waited = queued.clone().oneshot(palisade_core::WithDeadline::new(0));
    let started = Instant::now();
    let capped = queued.clone().oneshot(palisade_core::WithDeadline::until(
        0,
        palisade_core::Deadline::after(Duration::from_millis(50)),
    ));
    let err = capped.await.unwrap_err();
    assert!(err.is::<Overloaded>());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the deadline capped the wait"
    );
    waited.await.unwrap();
    long.await.unwrap().unwrap();
}

/// Redis SIGSTOPped, then SIGKILLed, then restarted, under a fail-open and a fail-closed
/// layer: every decision comes within the timeout (plus slack) with the configured answer,
/// fail-open admits at most its local bound, and after recovery decisions are Redis's again
/// and a call held across the restart has its lease re-registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_decide_within_the_timeout_and_recover() {
    let timeout = Duration::from_millis(50);
    let slack = Duration::from_millis(750);
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let store = LeaseStore::new(redis.connect().await)
        .prefix("faults:")
        .timeout(timeout);
    let build = |name: &str, policy| {
        FleetLimitLayer::builder(store.clone(), name, LIMIT)
            .ttl(Duration::from_millis(1000))
            .renew_every(Duration::from_millis(200))
            .expected_replicas(2) // failing open: at most 8 / 2 = 4 here
            .failure_policy(policy)
            .build()
            .unwrap()
    };
    let open_layer = build("open", FailurePolicy::Open);
    let open_handle = open_layer.handle();
    let probe = Probe::default();
    let open = open_layer.layer(probe.service::<u64>());
    let closed = build("closed", FailurePolicy::Closed).layer(Probe::default().service::<u64>());
    open.clone().oneshot(0).await.unwrap();
    closed.clone().oneshot(0).await.unwrap();
    // Held across every fault below; its lease must survive (renewed, then re-registered).
    let held = tokio::spawn(open.clone().oneshot(60_000));
    held_becomes(&store, "open", 1, Duration::from_secs(2)).await;

    let recover = |what: &'static str| {
        let closed = closed.clone();
        async move {
            let t = Instant::now();
            while closed.clone().oneshot(0).await.is_err() {
                assert!(t.elapsed() < Duration::from_secs(10), "{what}: no recovery");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!(
                "fleet {what}: normal decisions {:?} after recovery",
                t.elapsed()
            );
        }
    };

    redis.pause();
    let mut worst = check_down("SIGSTOP", &open, &closed, &probe).await;
    redis.resume();
    recover("SIGCONT").await;

    redis.kill();
    worst = worst.max(check_down("SIGKILL", &open, &closed, &probe).await);
    let _restarted = RedisServer::start_on(port).await;
    recover("restart").await;
    // The restarted server is empty: the held call's lease is registered again.
    held_becomes(&store, "open", 1, Duration::from_secs(3)).await;
    assert!(open_handle.reregistered() >= 1);
    assert!(open_handle.redis_errors() > 0);
    println!("fleet faults: worst decision {worst:?} with a {timeout:?} timeout");
    assert!(worst <= timeout + slack, "a decision took {worst:?}");
    held.abort();
    held_becomes(&store, "open", 0, Duration::from_secs(2)).await;
}

/// With Redis down: each decision of both layers, timed; then 8 at once through the
/// fail-open layer (whose bound is 4, one of them held already). Returns the slowest.
async fn check_down<A, B>(what: &str, open: &A, closed: &B, probe: &Probe) -> Duration
where
    A: Service<u64, Response = (), Error = BoxError> + Clone + Send + 'static,
    A::Future: Send,
    B: Service<u64, Response = (), Error = BoxError> + Clone + Send + 'static,
    B::Future: Send,
{
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        open.clone().oneshot(0).await.expect("fail-open admits");
        worst = worst.max(t.elapsed());
        let t = Instant::now();
        let err = closed.clone().oneshot(0).await.unwrap_err();
        assert!(err.is::<Overloaded>(), "{what}: {err}");
        worst = worst.max(t.elapsed());
    }
    probe.peak.store(0, Ordering::SeqCst);
    let t = Instant::now();
    let burst: Vec<_> = (0..LIMIT)
        .map(|_| {
            let call = open.clone().oneshot(200);
            tokio::spawn(async move {
                let t = Instant::now();
                let ok = call.await.is_ok();
                (ok, t.elapsed())
            })
        })
        .collect();
    let mut admitted = 0;
    for task in burst {
        let (ok, took) = task.await.unwrap();
        if ok {
            admitted += 1;
        } else {
            worst = worst.max(took);
        }
    }
    let peak = probe.peak.load(Ordering::SeqCst);
    println!(
        "fleet {what}: worst decision {worst:?}; failing open {admitted}/8 admitted, peak {peak} (bound 4, 1 held) in {:?}",
        t.elapsed()
    );
    assert!(admitted >= 1, "{what}: fail-open admitted nothing");
    assert!(peak <= 4, "{what}: {peak} in flight failing open, bound 4");
    worst
}

/// A 3-node Redis Cluster started here: the rate store's four-client accuracy check
/// (upper bound only) and the fleet limit shared by four layers on four connections, over
/// keys spread across the nodes' slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_lease_stores_work_against_a_cluster() {
    use palisade_rate::redis::RedisStore;
    use palisade_rate::{Acquire, Quota};
    use std::num::NonZeroU32;

    let cluster = RedisCluster::start().await;

    // Rate: 4 clients, 200/s with a burst of 20, for 2 s: never more than burst + R·t.
    let quota =
        Quota::per_second(NonZeroU32::new(200).unwrap()).allow_burst(NonZeroU32::new(20).unwrap());
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(RedisStore::new(cluster.connect().await, quota).prefix("crate:"));
    }
    let admitted = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let run = Duration::from_secs(2);
    let mut tasks = Vec::new();
    for store in stores {
        let admitted = Arc::clone(&admitted);
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < run {
                match store.acquire("shared", 1, Duration::ZERO).await {
                    Acquire::Now => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    Acquire::Rejected(e) => {
                        tokio::time::sleep(e.retry_after().unwrap_or(Duration::from_millis(5)))
                            .await;
                    }
                    Acquire::After(w) => panic!("no wait was allowed, got {w:?}"),
                }
            }
            store.failures()
        }));
    }
    let mut failures = 0;
    for t in tasks {
        failures += t.await.unwrap();
    }
    let bound = 200.0f64.mul_add(start.elapsed().as_secs_f64(), 20.0);
    let got = admitted.load(Ordering::Relaxed) as f64;
    println!(
        "cluster rate: admitted {got} of bound {bound:.1} ({:.1}%), {failures} store failures",
        100.0 * got / bound
    );
    assert!(got <= bound.ceil(), "admitted {got} > {bound}");
    assert!(got >= 20.0, "not even the burst: {got}");
    assert_eq!(failures, 0, "every decision was the cluster's");

    // Leases: three limits (three keys, so three slots; spread over the nodes), each of 8,
    // shared by four layers with their own connections and 6 callers each.
    let mut peaks = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let probe = Probe::default();
        let mut callers = Vec::new();
        for _ in 0..4 {
            let store = LeaseStore::new(cluster.connect().await)
                .prefix("clease:")
                .timeout(Duration::from_millis(200));
            let svc = FleetLimitLayer::builder(store, name, LIMIT)
                .ttl(Duration::from_secs(2))
                .queue(6, Duration::from_secs(5))
                .failure_policy(FailurePolicy::Closed)
                .build()
                .unwrap()
                .layer(probe.service::<u64>());
            for _ in 0..6 {
                let svc = svc.clone();
                callers.push(tokio::spawn(async move {
                    let mut ok = 0u32;
                    for _ in 0..8 {
                        if svc.clone().oneshot(20).await.is_ok() {
                            ok += 1;
                        }
                    }
                    ok
                }));
            }
        }
        let mut ok = 0;
        for c in callers {
            ok += c.await.unwrap();
        }
        let peak = probe.peak.load(Ordering::SeqCst);
        peaks.push(peak);
        assert!(peak <= LIMIT, "{name}: peak {peak}");
        assert_eq!(ok, 4 * 6 * 8, "{name}: every call fits in the 5 s wait");
    }
    println!("cluster leases: peaks {peaks:?} of {LIMIT}");
    let check = LeaseStore::new(cluster.connect().await).prefix("clease:");
    for name in ["alpha", "beta", "gamma"] {
        held_becomes(&check, name, 0, Duration::from_secs(2)).await;
    }
}

/// Invalid configurations are typed errors from `build()`, never a later panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_fleet_configs_are_refused_by_build() {
    use palisade_limit::fleet::InvalidFleetLimit as E;
    let redis = RedisServer::start().await;
    let store = LeaseStore::new(redis.connect().await);
    let b = |limit| FleetLimitLayer::builder(store.clone(), "k", limit);
    let ms = Duration::from_millis;
    assert_eq!(b(0).build().unwrap_err(), E::ZeroLimit);
    assert_eq!(b(usize::MAX).build().unwrap_err(), E::TooLarge(usize::MAX));
    assert_eq!(
        FleetLimitLayer::builder(store.clone(), "", 1)
            .build()
            .unwrap_err(),
        E::EmptyKey
    );
    assert_eq!(b(4).local_limit(5).build().unwrap_err(), E::LocalLimit(5));
    assert_eq!(b(4).local_limit(0).build().unwrap_err(), E::LocalLimit(0));
    assert_eq!(
        b(4).expected_replicas(0).build().unwrap_err(),
        E::ZeroReplicas
    );
    assert_eq!(
        b(4).local_limit(2).fail_open_limit(3).build().unwrap_err(),
        E::FailOpenLimit(3)
    );
    assert!(matches!(
        b(4).ttl(Duration::ZERO).build(),
        Err(E::Ttl { .. })
    ));
    assert!(matches!(
        b(4).ttl(ms(100)).renew_every(ms(100)).build(),
        Err(E::Ttl { .. })
    ));
    assert_eq!(
        b(4).renew_every(Duration::ZERO).build().unwrap_err(),
        E::ZeroRenewal
    );
    assert_eq!(b(4).queue(0, ms(10)).build().unwrap_err(), E::EmptyQueue);
    assert_eq!(
        b(4).queue(1, Duration::ZERO).build().unwrap_err(),
        E::EmptyQueue
    );
    assert_eq!(b(4).backoff(ms(5), ms(1)).build().unwrap_err(), E::Backoff);
    assert_eq!(
        FleetLimitLayer::builder(store.clone().timeout(Duration::ZERO), "k", 1)
            .build()
            .unwrap_err(),
        E::ZeroTimeout
    );
    // Extreme but valid durations build (saturating arithmetic, no panic).
    b(4).ttl(Duration::MAX)
        .renew_every(Duration::MAX / 2)
        .build()
        .unwrap();
    b(4).queue(usize::MAX, Duration::MAX).build().unwrap();
    // 8 / 3 replicas fails open at 2 per process; a limit below the replicas at 1.
    b(8).expected_replicas(3).build().unwrap();
    b(2).expected_replicas(5).build().unwrap();
}

/// Many calls through many clones spawn one renewal task for the layer, and it ends once
/// the layer, its services and their leases are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_renewal_task_per_layer_ending_with_the_layer() {
    let redis = RedisServer::start().await;
    let store = LeaseStore::new(redis.connect().await).prefix("task:");
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let settles_at = |want: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive() != want {
            assert!(
                Instant::now() < deadline,
                "{} tasks alive, want {want}",
                alive()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let before = alive();
    let layer = FleetLimitLayer::builder(store.clone(), "t", LIMIT)
        .ttl(Duration::from_secs(1))
        .queue(64, Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = layer.layer(Probe::default().service::<u64>());
    let second = layer.layer(Probe::default().service::<u64>());
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let call = if i % 2 == 0 {
                svc.clone()
            } else {
                second.clone()
            }
            .oneshot(5);
            tokio::spawn(call)
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    // The callers' tasks are gone; one renewal task remains for the layer.
    settles_at(before + 1).await;
    held_becomes(&store, "t", 0, Duration::from_secs(2)).await;
    drop((layer, svc, second));
    settles_at(before).await;
}

/// A call dropped while its acquire is out (Redis stopped, so the script runs only once it
/// resumes) does not strand the lease Redis then grants: it is released in the background,
/// long before its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_decision_releases_what_redis_grants_later() {
    let redis = RedisServer::start().await;
    let store = LeaseStore::new(redis.connect().await)
        .prefix("cancel:")
        .timeout(Duration::from_secs(3));
    let svc = FleetLimitLayer::builder(store.clone(), "c", LIMIT)
        .ttl(Duration::from_secs(30))
        .build()
        .unwrap()
        .layer(Probe::default().service::<u64>());
    // Start the renewal task (and warm the connection) with one normal call.
    svc.clone().oneshot(0).await.unwrap();
    held_becomes(&store, "c", 0, Duration::from_secs(2)).await;
    redis.pause();
    let call = tokio::spawn(svc.clone().oneshot(60_000));
    // Dropped before any timeout (the connection's own is 200 ms, the store's 3 s) fires.
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.abort();
    let _ = call.await;
    redis.resume();
    // The acquire ran on resume and granted a lease; the release queued behind it removes it.
    held_becomes(&store, "c", 0, Duration::from_secs(3)).await;
}
