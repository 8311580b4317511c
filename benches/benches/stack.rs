//! The canonical client stack as one service: deadline → retry (budgeted) → hedge →
//! circuit breaker → rate limit → concurrency limit → per-attempt timeout → an inner
//! service that answers at once. What a user pays per call for the whole policy stack on
//! the happy path (no retry, no hedge, nothing waits), next to the bare call and to the
//! cheapest single layer (tower's `ConcurrencyLimit`), so the sum of the parts can be read
//! against the other groups.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::Criterion;
use palisade_benches::{contender, Report};
use palisade_breaker::CircuitBreakerLayer;
use palisade_core::WithDeadline;
use palisade_deadline::{DeadlineLayer, TimeoutLayer};
use palisade_fanout::{HedgeDelay, HedgeLayer};
use palisade_limit::ConcurrencyLimitLayer;
use palisade_rate::{Quota, RateLimitLayer};
use palisade_retry::{RetryBudget, RetryLayer};
use tower::ServiceBuilder;

const GROUP: &str = "stack-canonical";

use crate::deadline::bare;

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    let rt = palisade_benches::runtime();
    let _enter = rt.enter();

    contender(c, report, GROUP, "bare", false, bare(), || {
        WithDeadline::new(black_box(7))
    });
    contender(
        c,
        report,
        GROUP,
        "tower-concurrency-limit",
        true,
        tower::limit::ConcurrencyLimit::new(bare(), 1000),
        || WithDeadline::new(black_box(7)),
    );
    let stack = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                .budget(RetryBudget::ttl(Duration::from_secs(10), 10, 0.2))
                .policy(palisade_retry::CloneAll)
                .build()
                .expect("valid retry"),
        )
        .layer(
            HedgeLayer::builder(HedgeDelay::fixed(Duration::from_millis(50)))
                .policy(palisade_fanout::hedge::CloneAll)
                .build()
                .expect("valid hedge"),
        )
        .layer(
            CircuitBreakerLayer::builder()
                .build()
                .expect("valid breaker"),
        )
        .layer(RateLimitLayer::new(
            Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
                .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
        ))
        .layer(ConcurrencyLimitLayer::new(1000))
        .layer(TimeoutLayer::new(Duration::from_millis(500)))
        .service(bare());
    contender(c, report, GROUP, "palisade-7-layers", false, stack, || {
        WithDeadline::new(black_box(7))
    });
}
