//! Hedged requests: per-call overhead when the first attempt wins, and a tail-latency
//! simulation of an upstream with a slow 1%.
//!
//! - `fanout-hedge`: one call through each hedge whose inner service answers at once,
//!   polled by hand (`call_once`) inside a runtime context (tower's and Palisade's hedges
//!   read tokio time; tower's also builds a `Sleep` per call). Contenders: `bare` (the
//!   inner service alone), `palisade`, `tower` (baseline), `tower-resilience`.
//! - tail latency (printed, and written to `target/palisade-fanout-tail.json`): 20,000
//!   requests on paused tokio time against an upstream where 99% of calls take ~10 ms and
//!   1% take ~1 s, with no hedge, tower's hedge (p95, no budget) and Palisade's hedge (p95,
//!   5% budget). Deterministic: same seed, paused clock.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use futures_util::stream::{FuturesUnordered, StreamExt};
use palisade_benches::{call_once, count_allocations, wanted, Report};
use palisade_fanout::hedge::{CloneAll, HedgeDelay, HedgeLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const GROUP: &str = "fanout-hedge";

type Echo = palisade_benches::Echo<Infallible>;

fn echo() -> Echo {
    palisade_benches::echo()
}

#[derive(Clone)]
struct ClonePolicy;

impl tower::hedge::Policy<u64> for ClonePolicy {
    fn clone_request(&self, req: &u64) -> Option<u64> {
        Some(*req)
    }

    fn can_retry(&self, _req: &u64) -> bool {
        true
    }
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    overhead(c, report);
}

/// The tail-latency simulation, on paused time: `main` runs it after every per-call group
/// (see there).
pub(crate) fn simulations() {
    if wanted("fanout-tail") {
        tail_latency();
    }
}

/// Whether the command line's filter (if any) selects `name`.
fn overhead(c: &mut Criterion, report: &mut Report) {
    // A runtime context for tokio time (not paused: the hedges never wait here).
    let rt = palisade_benches::runtime();
    let _enter = rt.enter();
    let mut group = c.benchmark_group(GROUP);

    let mut bare = echo();
    group.bench_function("bare", |b| {
        b.iter_batched(|| 1u64, |r| call_once(&mut bare, r), BatchSize::SmallInput)
    });
    report.record(
        GROUP,
        "bare",
        count_allocations(10_000, || {
            let _ = call_once(&mut bare, 1);
        }),
        false,
    );

    // A learned delay, warm and far above the (instant) latencies, and a 5% budget: the
    // configuration of the tail-latency run.
    let layer = HedgeLayer::builder(HedgeDelay::percentile(0.95).min_samples(1))
        .policy(CloneAll)
        .budget(0.05, 10)
        .build()
        .expect("valid");
    let mut palisade = layer.layer(echo());
    group.bench_function("palisade", |b| {
        b.iter_batched(
            || 1u64,
            |r| call_once(&mut palisade, r),
            BatchSize::SmallInput,
        )
    });
    report.record(
        GROUP,
        "palisade",
        count_allocations(10_000, || {
            let _ = call_once(&mut palisade, 1);
        }),
        false,
    );

    let mut tower_hedge =
        tower::hedge::Hedge::new(echo(), ClonePolicy, 1, 0.95, Duration::from_secs(10));
    group.bench_function("tower", |b| {
        b.iter_batched(
            || 1u64,
            |r| call_once(&mut tower_hedge, r),
            BatchSize::SmallInput,
        )
    });
    report.record(
        GROUP,
        "tower",
        count_allocations(10_000, || {
            let _ = call_once(&mut tower_hedge, 1);
        }),
        true,
    );

    let mut resilience = tower_resilience::hedge::HedgeLayer::builder()
        .delay(Duration::from_millis(10))
        .max_hedged_attempts(2)
        .build()
        .layer(echo());
    group.bench_function("tower-resilience", |b| {
        b.iter_batched(
            || 1u64,
            |r| call_once(&mut resilience, r),
            BatchSize::SmallInput,
        )
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

// === tail latency ===

const REQUESTS: u64 = 20_000;
/// One request every 100 µs: ~100 in flight at 10 ms each.
const GAP: Duration = Duration::from_micros(100);

/// The simulated upstream: 99% of calls ~10 ms (9-11 ms), 1% ~1 s (0.9-1.1 s), drawn from
/// a seeded generator so every contender sees the same sequence of latencies.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicU64>,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Service<u64> for Upstream {
    type Response = u64;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, Infallible>>>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let r = splitmix(n);
        let jitter = (r >> 32) % 2001; // 0..=2000 units
        let latency = if r.is_multiple_of(100) {
            Duration::from_micros(900_000 + jitter * 100)
        } else {
            Duration::from_micros(9_000 + jitter)
        };
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(req)
        })
    }
}

struct Run {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    extra_pct: f64,
}

/// Sends `REQUESTS` requests at a fixed rate through `svc` and measures each one.
async fn drive<S>(name: &'static str, mut svc: S, upstream_calls: Arc<AtomicU64>) -> Run
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let mut latencies = Vec::with_capacity(REQUESTS as usize);
    let mut in_flight = FuturesUnordered::new();
    let t0 = Instant::now();
    for i in 0..REQUESTS {
        // Let what is in flight progress until this request's arrival time.
        let arrival = tokio::time::sleep_until(t0 + GAP * i as u32);
        tokio::pin!(arrival);
        loop {
            tokio::select! {
                biased;
                () = &mut arrival => break,
                Some(lat) = in_flight.next(), if !in_flight.is_empty() => latencies.push(lat),
            }
        }
        let fut = svc.ready().await.expect("ready").call(i);
        let start = Instant::now();
        in_flight.push(async move {
            fut.await.expect("upstream never fails");
            start.elapsed()
        });
    }
    while let Some(lat) = in_flight.next().await {
        latencies.push(lat);
    }
    latencies.sort_unstable();
    let at =
        |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).min(latencies.len()) - 1];
    let calls = upstream_calls.load(Ordering::Relaxed);
    Run {
        name,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        extra_pct: (calls as f64 / REQUESTS as f64 - 1.0) * 100.0,
    }
}

fn upstream() -> (Upstream, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    (
        Upstream {
            calls: Arc::clone(&calls),
        },
        calls,
    )
}

fn tail_latency() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let runs = rt.block_on(async {
        let mut runs = Vec::new();

        let (up, calls) = upstream();
        runs.push(drive("no hedge", up, calls).await);

        // tower's hedge estimates its p95 from a histogram rotated every `period`, and
        // hedges nothing until the first rotation: give it a sweep of periods, so its best
        // one is in the table (a long period leaves it unhedged for much of the run).
        for (period, name) in [
            (
                Duration::from_millis(100),
                "tower hedge (p95, 100 ms rotation)",
            ),
            (
                Duration::from_millis(300),
                "tower hedge (p95, 300 ms rotation)",
            ),
            (Duration::from_secs(1), "tower hedge (p95, 1 s rotation)"),
        ] {
            let (up, calls) = upstream();
            let tower_hedge = tower::hedge::Hedge::new(up, ClonePolicy, 100, 0.95, period);
            runs.push(drive(name, tower_hedge, calls).await);
        }

        let (up, calls) = upstream();
        let palisade = HedgeLayer::builder(HedgeDelay::percentile(0.95))
            .policy(CloneAll)
            .budget(0.05, 10)
            .build()
            .expect("valid")
            .layer(up);
        runs.push(drive("palisade hedge (p95, 5% budget)", palisade, calls).await);
        runs
    });

    println!("\nfanout-tail: {REQUESTS} requests, upstream 99% ~10 ms / 1% ~1 s, paused time");
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>9}",
        "contender", "p50", "p99", "p99.9", "extra %"
    );
    let mut rows = Vec::new();
    for r in &runs {
        println!(
            "{:<34} {:>10.1?} {:>10.1?} {:>10.1?} {:>8.2}%",
            r.name, r.p50, r.p99, r.p999, r.extra_pct
        );
        rows.push(serde_json::json!({
            "contender": r.name,
            "p50_ms": r.p50.as_secs_f64() * 1e3,
            "p99_ms": r.p99.as_secs_f64() * 1e3,
            "p999_ms": r.p999.as_secs_f64() * 1e3,
            "extra_requests_pct": r.extra_pct,
        }));
    }
    let path = Report::target_dir().join("palisade-fanout-tail.json");
    let json = serde_json::to_string_pretty(&serde_json::json!({ "fanout-tail": rows }))
        .expect("plain values");
    if let Err(e) = std::fs::write(&path, json) {
        eprintln!("could not write {}: {e}", path.display());
    }
}
