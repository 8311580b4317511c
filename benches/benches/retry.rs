//! Retries: per-call overhead when the first attempt succeeds (no retry needed).
//!
//! `retry-none`: one call through each retry layer whose inner service answers at once,
//! polled by hand (`call_once`) inside a runtime context (Palisade's TTL budget reads
//! tokio time). Every contender is configured for 3 attempts with exponential backoff and
//! keeps a copy of the request. Contenders: `bare` (the inner service alone), `palisade`
//! (default TTL budget: 20% over 10 s plus 10/s), `palisade-throttle` (gRPC-style token
//! bucket), `tower` (baseline: `tower::retry::Retry` with a minimal policy that clones
//! the request and retries errors), `tower-resilience` (its retry layer, which boxes
//! every call).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use palisade_benches::{call_once, count_allocations, Report};
use palisade_retry::{Backoff, CloneAll, RetryBudget, RetryLayer};
use tower::{Layer, Service};

const GROUP: &str = "retry-none";

type Echo = palisade_benches::Echo<Infallible>;

fn echo() -> Echo {
    palisade_benches::echo()
}

/// tower's retry needs a hand-written policy: retry errors, up to 3 attempts.
#[derive(Clone)]
struct Attempts(u32);

impl tower::retry::Policy<u64, u64, Infallible> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, Infallible>) -> Option<Ready<()>> {
        match result {
            Ok(_) => None,
            Err(_) if self.0 > 1 => {
                self.0 -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// Measures one contender: time per call and allocations per call.
fn contender<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    report: &mut Report,
    id: &str,
    mut svc: S,
    baseline: bool,
) where
    S: Service<u64>,
{
    group.bench_function(id, |b| {
        b.iter_batched(|| 1u64, |r| call_once(&mut svc, r), BatchSize::SmallInput)
    });
    report.record(
        GROUP,
        id,
        count_allocations(10_000, || {
            let _ = call_once(&mut svc, 1);
        }),
        baseline,
    );
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    // A runtime context for tokio time (not paused: nothing waits here).
    let rt = palisade_benches::runtime();
    let _enter = rt.enter();
    let mut group = c.benchmark_group(GROUP);

    contender(&mut group, report, "bare", echo(), false);

    let backoff = Backoff::exponential(Duration::from_millis(100));
    let palisade = RetryLayer::builder()
        .max_attempts(3)
        .backoff(backoff)
        .policy(CloneAll)
        .build()
        .expect("valid");
    contender(
        &mut group,
        report,
        "palisade",
        palisade.layer(echo()),
        false,
    );

    let throttle = RetryLayer::builder()
        .max_attempts(3)
        .backoff(backoff)
        .budget(RetryBudget::throttle(10, 0.1))
        .policy(CloneAll)
        .build()
        .expect("valid");
    contender(
        &mut group,
        report,
        "palisade-throttle",
        throttle.layer(echo()),
        false,
    );

    let tower_retry = tower::retry::RetryLayer::new(Attempts(3)).layer(echo());
    contender(&mut group, report, "tower", tower_retry, true);

    let resilience = tower_resilience::retry::RetryLayer::<u64, u64, Infallible>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
        .layer(echo());
    contender(&mut group, report, "tower-resilience", resilience, false);

    group.finish();
}
