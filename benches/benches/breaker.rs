//! Circuit breaker: the per-call cost in Closed, and of a rejection in Open.
//!
//! Contenders: palisade's `CircuitBreaker`, tower-resilience's circuit breaker (count
//! window of 100, as palisade's), tower's `ConcurrencyLimit` as the cost reference of a
//! minimal tower middleware, and the bare service. Every call is driven synchronously
//! (`call_once`: poll_ready, call, poll the future once with a no-op waker);
//! tower-resilience's breaker takes an uncontended `tokio::sync::Mutex`, which completes
//! on the first poll, so it can be driven the same way.

use std::hint::black_box;

use criterion::Criterion;
use palisade_benches::{call_once, count_allocations, now_or_never, Report};
use palisade_breaker::{CircuitBreakerLayer, FailureModel};
use palisade_core::BoxError;
use tower::limit::ConcurrencyLimitLayer;
use tower_layer::Layer;
use tower_service::Service;

fn bare() -> palisade_benches::Echo<BoxError> {
    palisade_benches::echo()
}

fn bench_one<S>(
    c: &mut Criterion,
    report: &mut Report,
    group: &str,
    id: &str,
    baseline: bool,
    mut svc: S,
    ok: bool,
) where
    S: Service<u64>,
{
    let allocs = count_allocations(10_000, || {
        let r = call_once(&mut svc, black_box(1));
        assert_eq!(r.is_ok(), ok);
        black_box(r.is_ok());
    });
    report.record(group, id, allocs, baseline);
    c.benchmark_group(group).bench_function(id, |b| {
        b.iter(|| black_box(call_once(&mut svc, black_box(1)).is_ok()))
    });
}

fn palisade_layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(100))
        .minimum_calls(100)
        .failure_rate(0.5)
        .build()
        .expect("valid config")
}

fn resilience_layer() -> tower_resilience::circuitbreaker::CircuitBreakerLayer<
    tower_resilience::circuitbreaker::DefaultClassifier,
> {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(100)
        .build()
        .expect("valid config")
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    // Closed: every call passes and its outcome is recorded.
    let group = "breaker-closed";
    bench_one(c, report, group, "bare", false, bare(), true);
    bench_one(
        c,
        report,
        group,
        "tower",
        true,
        ConcurrencyLimitLayer::new(1_000).layer(bare()),
        true,
    );
    bench_one(
        c,
        report,
        group,
        "palisade",
        false,
        palisade_layer().layer(bare()),
        true,
    );
    bench_one(
        c,
        report,
        group,
        "tower-resilience",
        false,
        resilience_layer().layer(bare()),
        true,
    );

    // Open: every call is rejected without reaching the inner service.
    let group = "breaker-rejection";
    let layer = palisade_layer();
    layer.handle().force_open();
    bench_one(
        c,
        report,
        group,
        "palisade",
        true,
        layer.layer(bare()),
        false,
    );
    let svc = resilience_layer().layer(bare());
    now_or_never(svc.force_open());
    bench_one(c, report, group, "tower-resilience", false, svc, false);
}
