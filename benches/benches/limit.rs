//! Concurrency limit: per-call overhead on the happy path (a permit is free, the inner
//! service is ready and answers at once), side by side with tower's `ConcurrencyLimit`,
//! tower-resilience's bulkhead and the bare service.

use std::future::{ready, Ready};
use std::hint::black_box;

use criterion::Criterion;
use palisade_benches::{call_once, count_allocations, Report};
use palisade_core::BoxError;
use palisade_limit::ConcurrencyLimitLayer;
use tower::{service_fn, Layer};
use tower_service::Service;

const GROUP: &str = "limit-concurrency";
const LIMIT: usize = 1024;
const ALLOC_CALLS: u64 = 10_000;

fn bare(
) -> impl Service<u64, Response = u64, Error = BoxError, Future = Ready<Result<u64, BoxError>>> + Clone
{
    service_fn(|r: u64| ready(Ok::<_, BoxError>(r)))
}

/// Measures one contender: its time per call with criterion, its allocations per call
/// with the counting allocator.
fn contender<S>(c: &mut Criterion, report: &mut Report, id: &str, baseline: bool, mut svc: S)
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let allocs = count_allocations(ALLOC_CALLS, || {
        call_once(&mut svc, black_box(7)).unwrap();
    });
    report.record(GROUP, id, allocs, baseline);
    let mut group = c.benchmark_group(GROUP);
    group.bench_function(id, |b| {
        b.iter(|| call_once(&mut svc, black_box(7)).unwrap())
    });
    group.finish();
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    // tower-resilience reads tokio time; give every contender the same runtime context.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _enter = rt.enter();

    contender(c, report, "bare", false, bare());
    contender(
        c,
        report,
        "tower",
        true,
        tower::limit::ConcurrencyLimit::new(bare(), LIMIT),
    );
    contender(
        c,
        report,
        "palisade-wait",
        false,
        ConcurrencyLimitLayer::new(LIMIT).layer(bare()),
    );
    contender(
        c,
        report,
        "palisade-reject",
        false,
        ConcurrencyLimitLayer::builder(LIMIT)
            .reject()
            .build()
            .expect("valid")
            .layer(bare()),
    );
    contender(
        c,
        report,
        "palisade-queue",
        false,
        ConcurrencyLimitLayer::builder(LIMIT)
            .queue(64, std::time::Duration::from_millis(50))
            .build()
            .expect("valid")
            .layer(bare()),
    );
    contender(
        c,
        report,
        "tower-resilience-bulkhead",
        false,
        tower_resilience::bulkhead::BulkheadLayer::builder()
            .max_concurrent_calls(LIMIT)
            .backpressure()
            .build()
            .expect("valid")
            .layer(bare()),
    );
}
