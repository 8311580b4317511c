//! Two threads on one shared policy: does it scale across cores?
//!
//! Each group (`contention-<policy>`) measures one shared instance (every service a layer
//! builds, and every clone, shares its state) driven by one thread, then by two threads at
//! once, each on its own clone. The figure is wall time per call over all threads, so
//! `2-threads` ÷ `1-thread` (the ratio column, `1-thread` the baseline) is the inverse of
//! the throughput gained: 0.50× is perfect scaling (2.0× the throughput), 1.00× no gain,
//! above 1.00× a policy that gets slower with a second core. The bare service shows what
//! the machine allows. Each call is driven by hand (`call_once`), outside any runtime
//! (tokio time falls back to the OS clock there), so no scheduler takes part.
//!
//! Besides criterion's output, the run writes `target/palisade-contention.json`: per
//! policy, ns per call with one and two threads and the throughput ratio (2 threads ÷ 1),
//! which `scripts/benchmarks_md.py` turns into its own table.

use std::sync::Barrier;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use palisade_benches::{call_once, Report};
use palisade_breaker::{CircuitBreakerLayer, FailureModel};
use palisade_core::BoxError;
use palisade_limit::adaptive::{AdaptiveLimitLayer, Aimd};
use palisade_limit::ConcurrencyLimitLayer;
use palisade_rate::{Quota, RateLimitLayer};
use palisade_retry::{CloneAll, RetryBudget, RetryLayer};
use serde_json::{json, Value};
use tower::{Layer, Service};

fn bare() -> palisade_benches::Echo<BoxError> {
    palisade_benches::echo()
}

/// `iters` calls in all, split over `threads` threads started together on clones of
/// `svc`; the wall time of the slowest.
fn run<S>(svc: &S, threads: u64, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let per_thread = (iters / threads).max(1);
    let barrier = Barrier::new(threads as usize);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    // Outside a runtime, tokio's clock is the OS clock: wall time.
                    let start = tokio::time::Instant::now();
                    for i in 0..per_thread {
                        std::hint::black_box(call_once(&mut svc, i).expect("call"));
                    }
                    start.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .max()
            .unwrap_or_default()
    })
}

/// Measures one policy with one and two threads; its row for the JSON file, if it ran.
fn policy<S>(c: &mut Criterion, report: &Report, name: &str, svc: S) -> Option<Value>
where
    S: Service<u64> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let group_name = format!("contention-{name}");
    let mut group = c.benchmark_group(&group_name);
    group.throughput(Throughput::Elements(1));
    for (threads, id) in [(1u64, "1-thread"), (2, "2-threads")] {
        group.bench_function(id, |b| b.iter_custom(|iters| run(&svc, threads, iters)));
    }
    group.finish();
    let one = report.median(&group_name, "1-thread")?;
    let two = report.median(&group_name, "2-threads")?;
    Some(json!({
        "policy": name,
        "ns_per_call_1_thread": one,
        "ns_per_call_2_threads": two,
        "throughput_2t_over_1t": one / two,
    }))
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    let rows = [
        policy(c, report, "bare", bare()),
        policy(
            c,
            report,
            "concurrency-limit",
            ConcurrencyLimitLayer::new(1024).layer(bare()),
        ),
        policy(
            c,
            report,
            "rate-limit",
            RateLimitLayer::new(Quota::per_second(
                std::num::NonZeroU32::new(1_000_000_000).expect("non-zero"),
            ))
            .layer(bare()),
        ),
        policy(
            c,
            report,
            "breaker",
            CircuitBreakerLayer::builder()
                .failure_model(FailureModel::count(100))
                .build()
                .expect("valid breaker")
                .layer(bare()),
        ),
        policy(
            c,
            report,
            "adaptive-limit",
            AdaptiveLimitLayer::builder(Aimd::new(500, 1, 1000))
                .build()
                .expect("valid limit")
                .layer(bare()),
        ),
        policy(
            c,
            report,
            "retry-budget",
            RetryLayer::builder()
                .max_attempts(3)
                .budget(RetryBudget::ttl(Duration::from_secs(10), 10, 0.2))
                .policy(CloneAll)
                .build()
                .expect("valid retry")
                .layer(bare()),
        ),
    ];
    let rows: Vec<Value> = rows.into_iter().flatten().collect();
    if rows.is_empty() {
        return; // filtered out
    }
    let path = Report::target_dir().join("palisade-contention.json");
    let text = serde_json::to_string_pretty(&rows).expect("plain values");
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("could not write {}: {e}", path.display());
    }
}
