//! Rate limiting: palisade-rate against governor, tower and tower-resilience.
//!
//! - `rate-keyless`: one admitted call through each limiter (huge quota, never rejects).
//!   tower's `RateLimit` and tower-resilience's limiter create tokio timers, so every
//!   contender of this group is driven by hand inside a current_thread runtime's context
//!   (same for all, so the comparison stays fair). `governor` is its direct `check()`
//!   with its default clock, the floor any wrapper can reach.
//! - `rate-keyed`: one admitted call with 10k live keys, vs governor's keyed
//!   `check_key` on its `HashMap` store; `palisade-limiter` is the keyed limiter's
//!   `acquire` alone, the like-for-like peer of `check_key`.
//! - `rate-redis`: decisions per second against a local `redis-server` on one
//!   multiplexed connection, sequential and with 64 in flight. Skipped (with a message)
//!   when `redis-server` is not on PATH.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use palisade_benches::{call_once, count_allocations, Report};
use palisade_rate::{KeyedRateLimitLayer, Quota, RateLimitLayer};
use tower::{service_fn, Layer};

type Ready = std::future::Ready<Result<u64, std::convert::Infallible>>;

fn ready_ok(req: u64) -> Ready {
    std::future::ready(Ok(req))
}

fn echo() -> tower::util::ServiceFn<fn(u64) -> Ready> {
    service_fn(ready_ok as fn(u64) -> Ready)
}

fn huge() -> Quota {
    Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    keyless(c, report);
    keyed(c, report);
    redis(c);
}

fn keyless(c: &mut Criterion, report: &mut Report) {
    const GROUP: &str = "rate-keyless";
    let rt = palisade_benches::runtime();
    let _context = rt.enter();
    let mut group = c.benchmark_group(GROUP);

    let mut bare = echo();
    group.bench_function("bare", |b| b.iter(|| call_once(&mut bare, black_box(1))));
    report.record(
        GROUP,
        "bare",
        count_allocations(10_000, || {
            call_once(&mut bare, 1).unwrap();
        }),
        false,
    );

    let limiter = governor::RateLimiter::direct(huge());
    group.bench_function("governor", |b| b.iter(|| black_box(limiter.check())));
    report.record(
        GROUP,
        "governor",
        count_allocations(10_000, || {
            limiter.check().unwrap();
        }),
        true,
    );

    let mut palisade = RateLimitLayer::new(huge()).layer(echo());
    group.bench_function("palisade", |b| {
        b.iter(|| call_once(&mut palisade, black_box(1)))
    });
    report.record(
        GROUP,
        "palisade",
        count_allocations(10_000, || {
            call_once(&mut palisade, 1).unwrap();
        }),
        false,
    );

    // The shared limiter alone, without the service around it.
    let direct = palisade_rate::Limiter::new(huge());
    group.bench_function("palisade-limiter", |b| {
        b.iter(|| black_box(direct.check(1)))
    });
    report.record(
        GROUP,
        "palisade-limiter",
        count_allocations(10_000, || {
            direct.check(1).unwrap();
        }),
        false,
    );

    let mut tower_rl = tower::limit::RateLimit::new(
        echo(),
        tower::limit::rate::Rate::new(u64::MAX / 4, Duration::from_secs(1)),
    );
    group.bench_function("tower", |b| {
        b.iter(|| call_once(&mut tower_rl, black_box(1)))
    });
    report.record(
        GROUP,
        "tower",
        count_allocations(10_000, || {
            call_once(&mut tower_rl, 1).unwrap();
        }),
        false,
    );

    let mut resilience = tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(1 << 40)
        .refresh_period(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(echo());
    group.bench_function("tower-resilience", |b| {
        b.iter(|| call_once(&mut resilience, black_box(1)))
    });
    report.record(
        GROUP,
        "tower-resilience",
        count_allocations(10_000, || {
            let _ = call_once(&mut resilience, 1);
        }),
        false,
    );
    group.finish();
}

fn keyed(c: &mut Criterion, report: &mut Report) {
    const GROUP: &str = "rate-keyed";
    const KEYS: u64 = 10_000;
    let mut group = c.benchmark_group(GROUP);

    let layer = KeyedRateLimitLayer::new(huge(), |req: &u64| *req % KEYS)
        .max_keys(std::num::NonZeroUsize::new(100_000).unwrap());
    let mut palisade = layer.layer(echo());
    for k in 0..KEYS {
        call_once(&mut palisade, k).unwrap();
    }
    assert_eq!(layer.limiter().len(), KEYS as usize);
    let mut next = 0u64;
    group.bench_function("palisade", |b| {
        b.iter(|| {
            next = next.wrapping_add(7919);
            call_once(&mut palisade, black_box(next))
        })
    });
    report.record(
        GROUP,
        "palisade",
        count_allocations(10_000, || {
            next = next.wrapping_add(7919);
            call_once(&mut palisade, next).unwrap();
        }),
        false,
    );

    // The shared keyed limiter alone, without the service around it: the like-for-like
    // peer of governor's `check_key`.
    let direct = layer.limiter();
    group.bench_function("palisade-limiter", |b| {
        b.iter(|| {
            next = next.wrapping_add(7919);
            black_box(direct.acquire(next % KEYS, 1, Duration::ZERO))
        })
    });
    report.record(
        GROUP,
        "palisade-limiter",
        count_allocations(10_000, || {
            next = next.wrapping_add(7919);
            black_box(direct.acquire(next % KEYS, 1, Duration::ZERO));
        }),
        false,
    );

    // governor's fastest single-threaded keyed store: its default `HashMap` behind a
    // parking_lot mutex (its DashMap store shards for concurrency, at a cost per call).
    let governor = governor::RateLimiter::hashmap(huge());
    for k in 0..KEYS {
        governor.check_key(&k).unwrap();
    }
    group.bench_function("governor", |b| {
        b.iter(|| {
            next = next.wrapping_add(7919);
            black_box(governor.check_key(&(next % KEYS)))
        })
    });
    report.record(
        GROUP,
        "governor",
        count_allocations(10_000, || {
            next = next.wrapping_add(7919);
            governor.check_key(&(next % KEYS)).unwrap();
        }),
        true,
    );
    group.finish();
}

/// A throwaway `redis-server` on a free loopback port, killed on drop.
struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let Ok(child) = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!("rate-redis: skipped, `redis-server` is not on PATH");
        return;
    };
    let _server = RedisServer(child);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(async {
        let url = format!("redis://127.0.0.1:{port}/");
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let conn = redis::aio::ConnectionManager::new(redis::Client::open(url).unwrap())
            .await
            .unwrap();
        // A real timeout: the bench measures decisions, not the fail-open path.
        palisade_rate::redis::RedisStore::new(conn, huge()).timeout(Duration::from_secs(5))
    });
    let mut group = c.benchmark_group("rate-redis");
    group.throughput(Throughput::Elements(1));
    group.bench_function("palisade-sequential", |b| {
        b.iter(|| rt.block_on(async { black_box(store.acquire("bench", 1, Duration::ZERO).await) }))
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("palisade-64-inflight", |b| {
        b.iter(|| {
            rt.block_on(async {
                let decisions = (0..64).map(|_| store.acquire("bench", 1, Duration::ZERO));
                black_box(futures_util::future::join_all(decisions).await)
            })
        })
    });
    group.finish();
    assert_eq!(store.failures(), 0, "every decision came from Redis");
}
