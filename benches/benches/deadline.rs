//! Deadlines and per-attempt timeouts: per-call overhead on the happy path (the inner
//! service answers at once, well within the time allowed), side by side with tower's
//! `Timeout`, tower-resilience's time limiter and the bare service.

use std::future::{ready, Ready};
use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use palisade_benches::{contender, Report};
use palisade_core::{BoxError, WithDeadline};
use palisade_deadline::{DeadlineLayer, TimeoutLayer};
use tower::{service_fn, Layer};
use tower_service::Service;

const GROUP: &str = "deadline-timeout";
const TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) type Req = WithDeadline<u64>;

/// The inner service of the groups whose requests carry a deadline: answers at once.
pub(crate) fn bare(
) -> impl Service<Req, Response = u64, Error = BoxError, Future = Ready<Result<u64, BoxError>>> + Clone
{
    service_fn(|r: Req| ready(Ok::<_, BoxError>(r.request)))
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    // Every contender reads tokio time; give them all the same runtime context.
    let rt = palisade_benches::runtime();
    let _enter = rt.enter();

    contender(c, report, GROUP, "bare", false, bare(), || {
        WithDeadline::new(black_box(7))
    });
    contender(
        c,
        report,
        GROUP,
        "tower",
        true,
        tower::timeout::Timeout::new(bare(), TIMEOUT),
        || WithDeadline::new(black_box(7)),
    );
    contender(
        c,
        report,
        GROUP,
        "palisade-timeout",
        false,
        TimeoutLayer::new(TIMEOUT).layer(bare()),
        || WithDeadline::new(black_box(7)),
    );
    contender(
        c,
        report,
        GROUP,
        "palisade-deadline",
        false,
        DeadlineLayer::new(TIMEOUT).layer(bare()),
        || WithDeadline::new(black_box(7)),
    );
    contender(
        c,
        report,
        GROUP,
        "tower-resilience-timelimiter",
        false,
        tower_resilience::timelimiter::TimeLimiterLayer::builder()
            .timeout_duration(TIMEOUT)
            .build()
            .layer(bare()),
        || WithDeadline::new(black_box(7)),
    );
}
