//! Against a real `redis-server`, started here on a free loopback port and killed on drop.
//! Redis's clock is real, so these tests use real time; they assert counts, and bound
//! waits only generously.

use std::net::TcpListener;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::BoxError;
use palisade_rate::redis::{FailurePolicy, RedisRateLimitLayer, RedisStore};
use palisade_rate::{Acquire, Quota};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

use crate::retry_after;

/// A `redis-server` child process; killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    async fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `redis-server` ({e}): the redis tests need it on PATH \
                     (apt-get install -y redis-server)"
                )
            });
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn connect(&self) -> ConnectionManager {
        let client = redis::Client::open(self.url()).unwrap();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(200)))
            .set_response_timeout(Some(Duration::from_millis(200)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        ConnectionManager::new_with_config(client, config)
            .await
            .unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap())
}

/// Four clients with separate connections share R/s for a few seconds: they get no more
/// than GCRA's bound (burst + R·t). How close they come depends on how fast a loaded
/// machine lets them ask, so the only lower bound asserted is the burst (always admitted
/// to whoever asks first); the share of the bound is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clients_share_one_limit_accurately() {
    const RATE: u32 = 200;
    const BURST: u32 = 20;
    const RUN: Duration = Duration::from_secs(3);
    let server = RedisServer::start().await;
    let quota = per_second(RATE).allow_burst(NonZeroU32::new(BURST).unwrap());
    let admitted = Arc::new(AtomicU64::new(0));
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(RedisStore::new(server.connect().await, quota).prefix("accuracy:"));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for store in stores {
        let admitted = Arc::clone(&admitted);
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < RUN {
                match store.acquire("shared", 1, Duration::ZERO).await {
                    Acquire::Now => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    Acquire::Rejected(e) => {
                        // A polite client comes back when told to.
                        let wait = e.retry_after().expect("a wait");
                        tokio::time::sleep(wait).await;
                    }
                    Acquire::After(w) => panic!("no waiting was allowed, got {w:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bound = f64::from(RATE).mul_add(elapsed, f64::from(BURST));
    let got = admitted.load(Ordering::Relaxed) as f64;
    println!(
        "redis accuracy: admitted {got} of bound {bound:.1} ({:.2}%) over {elapsed:.3}s",
        100.0 * got / bound
    );
    assert!(got <= bound.ceil(), "admitted {got} > bound {bound}");
    assert!(
        got >= f64::from(BURST),
        "admitted {got}, not even the burst"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_semantics_prefix_and_deny_cache() {
    let server = RedisServer::start().await;
    let conn = server.connect().await;
    let store = RedisStore::new(conn.clone(), per_second(2)).prefix("t1:");
    assert_eq!(store.acquire("k", 1, Duration::ZERO).await, Acquire::Now);
    assert_eq!(store.acquire("k", 1, Duration::ZERO).await, Acquire::Now);
    let Acquire::Rejected(e) = store.acquire("k", 1, Duration::ZERO).await else {
        panic!("the third of a burst of 2 is rejected")
    };
    let first = e.retry_after().unwrap();
    // At most one emission interval (500 ms); how much of it is left depends on how
    // long the first two round trips took, so only "some wait" is asserted below it.
    assert!(
        first > Duration::ZERO && first <= Duration::from_millis(500),
        "{first:?}"
    );
    assert_eq!(store.round_trips(), 3);
    // The deny-cache answers without a round trip, with a retry-after no longer.
    let Acquire::Rejected(e) = store.acquire("k", 1, Duration::ZERO).await else {
        panic!("still limited")
    };
    assert!(e.retry_after().unwrap() <= first);
    assert_eq!(store.round_trips(), 3);
    // Waiting: a slot is reserved on the server (bypassing the cache).
    assert!(matches!(
        store.acquire("k", 1, Duration::from_secs(5)).await,
        Acquire::After(w) if w > Duration::ZERO && w <= Duration::from_millis(1000)
    ));
    // Cost above the burst never passes; keys carry the prefix and expire.
    assert_eq!(
        store.acquire("k", 3, Duration::MAX).await,
        Acquire::Rejected(palisade_core::RateLimited::new())
    );
    let mut c = conn.clone();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("t1:k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 2_001, "ttl {ttl}");

    // Through the layer, as a tower service.
    let svc = RedisRateLimitLayer::new(store.clone().prefix("svc:"), |req: &String| req.clone())
        .layer(service_fn(
            |req: String| async move { Ok::<_, BoxError>(req) },
        ));
    svc.clone().oneshot("a".to_owned()).await.unwrap();
    svc.clone().oneshot("a".to_owned()).await.unwrap();
    let err = svc.clone().oneshot("a".to_owned()).await.unwrap_err();
    assert!(retry_after(&err).unwrap() > Duration::ZERO);
    svc.clone().oneshot("b".to_owned()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_or_closed_quickly_then_recovers() {
    let mut server = RedisServer::start().await;
    let conn = server.connect().await;
    let timeout = Duration::from_millis(50);
    let open = RedisStore::new(conn.clone(), per_second(1))
        .timeout(timeout)
        .failure_policy(FailurePolicy::Open);
    let closed = open.clone().failure_policy(FailurePolicy::Closed);
    assert_eq!(open.acquire("x", 1, Duration::ZERO).await, Acquire::Now);
    assert!(matches!(
        closed.acquire("x", 1, Duration::ZERO).await,
        Acquire::Rejected(_)
    ));

    server.stop();
    for i in 0..10 {
        let key = format!("down{i}");
        let started = Instant::now();
        assert_eq!(open.acquire(&key, 1, Duration::ZERO).await, Acquire::Now);
        let rejected = closed.acquire(&key, 1, Duration::ZERO).await;
        assert!(
            matches!(&rejected, Acquire::Rejected(e) if e.retry_after().is_none()),
            "{rejected:?}"
        );
        // Two decisions, each bounded by the 50ms timeout (generous slack for a busy box).
        assert!(started.elapsed() < Duration::from_millis(1000));
    }
    assert!(open.failures() >= 10 && closed.failures() >= 10);

    // Redis back on the same port: real decisions resume.
    let _server = RedisServer::start_on(server.port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if closed.acquire("back", 1, Duration::ZERO).await == Acquire::Now {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // From here on every decision is Redis's own: no failure is counted, and the limit
    // (1/s) applies again with a real retry-after.
    let failures = closed.failures();
    let trips = closed.round_trips();
    let Acquire::Rejected(e) = closed.acquire("back", 1, Duration::ZERO).await else {
        panic!("the limit applies again")
    };
    assert!(e.retry_after().unwrap() > Duration::ZERO);
    assert_eq!(closed.failures(), failures);
    assert_eq!(closed.round_trips(), trips + 1);
}

/// The deny-cache remembers what a denial was for: a denied cost-10 request does not make
/// a cost-1 request (which Redis would admit after a short wait) fail locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_cache_remembers_the_denied_cost() {
    let server = RedisServer::start().await;
    // 10 per second, burst 10: one emission interval is 100 ms.
    let store = RedisStore::new(server.connect().await, per_second(10)).prefix("cost:");
    assert_eq!(store.acquire("k", 10, Duration::ZERO).await, Acquire::Now);
    let Acquire::Rejected(e) = store.acquire("k", 10, Duration::ZERO).await else {
        panic!("the bucket is empty")
    };
    assert!(e.retry_after().unwrap() > Duration::from_millis(500));
    let trips = store.round_trips();
    // Another cost-10 request is refused from the cache, without a round trip.
    assert!(matches!(
        store.acquire("k", 10, Duration::from_millis(500)).await,
        Acquire::Rejected(_)
    ));
    assert_eq!(store.round_trips(), trips);
    // A cost-1 request needs only one interval: it goes to Redis, which reserves its slot.
    let small = store.acquire("k", 1, Duration::from_millis(500)).await;
    assert_eq!(store.round_trips(), trips + 1);
    assert!(
        matches!(small, Acquire::After(w) if w <= Duration::from_millis(100)),
        "{small:?}"
    );
}
