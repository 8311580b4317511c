//! Deadlines and per-attempt timeouts: per-call overhead on the happy path (the inner
//! service answers at once, well within the time allowed), side by side with tower's
//! `Timeout`, tower-resilience's time limiter and the bare service.

use std::future::{ready, Ready};
use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use palisade_benches::{call_once, count_allocations, Report};
use palisade_core::{BoxError, WithDeadline};
use palisade_deadline::{DeadlineLayer, TimeoutLayer};
use tower::{service_fn, Layer};
use tower_service::Service;

const GROUP: &str = "deadline-timeout";
const ALLOC_CALLS: u64 = 10_000;
const TIMEOUT: Duration = Duration::from_secs(1);

type Req = WithDeadline<u64>;

fn bare(
) -> impl Service<Req, Response = u64, Error = BoxError, Future = Ready<Result<u64, BoxError>>> + Clone
{
    service_fn(|r: Req| ready(Ok::<_, BoxError>(r.request)))
}

fn contender<S>(c: &mut Criterion, report: &mut Report, id: &str, baseline: bool, mut svc: S)
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let allocs = count_allocations(ALLOC_CALLS, || {
        call_once(&mut svc, WithDeadline::new(black_box(7))).unwrap();
    });
    report.record(GROUP, id, allocs, baseline);
    let mut group = c.benchmark_group(GROUP);
    group.bench_function(id, |b| {
        b.iter(|| call_once(&mut svc, WithDeadline::new(black_box(7))).unwrap())
    });
    group.finish();
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    // Every contender reads tokio time; give them all the same runtime context.
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
        tower::timeout::Timeout::new(bare(), TIMEOUT),
    );
    contender(
        c,
        report,
        "palisade-timeout",
        false,
        TimeoutLayer::new(TIMEOUT).layer(bare()),
    );
    contender(
        c,
        report,
        "palisade-deadline",
        false,
        DeadlineLayer::new(TIMEOUT).layer(bare()),
    );
    contender(
        c,
        report,
        "tower-resilience-timelimiter",
        false,
        tower_resilience::timelimiter::TimeLimiterLayer::builder()
            .timeout_duration(TIMEOUT)
            .build()
            .layer(bare()),
    );
}
