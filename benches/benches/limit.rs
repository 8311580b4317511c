//! Concurrency limit: per-call overhead on the happy path (a permit is free, the inner
//! service is ready and answers at once), side by side with tower's `ConcurrencyLimit`,
//! tower-resilience's bulkhead and the bare service.

use std::hint::black_box;

use criterion::Criterion;
use palisade_benches::{contender, Report};
use palisade_core::BoxError;
use palisade_limit::ConcurrencyLimitLayer;
use tower::Layer;

const GROUP: &str = "limit-concurrency";
const LIMIT: usize = 1024;

fn bare() -> palisade_benches::Echo<BoxError> {
    palisade_benches::echo()
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    // tower-resilience reads tokio time; give every contender the same runtime context.
    let rt = palisade_benches::runtime();
    let _enter = rt.enter();

    contender(c, report, GROUP, "bare", false, bare(), || black_box(7));
    contender(
        c,
        report,
        GROUP,
        "tower",
        true,
        tower::limit::ConcurrencyLimit::new(bare(), LIMIT),
        || black_box(7),
    );
    contender(
        c,
        report,
        GROUP,
        "palisade-wait",
        false,
        ConcurrencyLimitLayer::new(LIMIT).layer(bare()),
        || black_box(7),
    );
    contender(
        c,
        report,
        GROUP,
        "palisade-reject",
        false,
        ConcurrencyLimitLayer::builder(LIMIT)
            .reject()
            .build()
            .expect("valid")
            .layer(bare()),
        || black_box(7),
    );
    contender(
        c,
        report,
        GROUP,
        "palisade-queue",
        false,
        ConcurrencyLimitLayer::builder(LIMIT)
            .queue(64, std::time::Duration::from_millis(50))
            .build()
            .expect("valid")
            .layer(bare()),
        || black_box(7),
    );
    contender(
        c,
        report,
        GROUP,
        "tower-resilience-bulkhead",
        false,
        tower_resilience::bulkhead::BulkheadLayer::builder()
            .max_concurrent_calls(LIMIT)
            .backpressure()
            .build()
            .expect("valid")
            .layer(bare()),
        || black_box(7),
    );
}
