//! Every value a builder accepts can be served: random durations (`Duration::MAX`
//! included) and floats (NaN, infinities, negatives included) go into every builder; each
//! either refuses them with a typed error or serves calls that trip, hedge, retry and wait
//! without a panic.

use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

use palisade_breaker::{CircuitBreakerLayer, FailureModel, OpenBackoff};
use palisade_core::{BoxError, WithDeadline};
use palisade_deadline::{DeadlineLayer, TimeoutLayer};
use palisade_fanout::{HedgeDelay, HedgeLayer};
use palisade_limit::adaptive::{AdaptiveLimitLayer, Aimd, Gradient2, Vegas};
use palisade_limit::throttle::ThrottleLayer;
use palisade_limit::ConcurrencyLimitLayer;
use palisade_rate::RateLimitLayer;
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use proptest::prelude::*;
use tokio::time::sleep;
use tower::{service_fn, Layer, Service, ServiceExt};

type Req = WithDeadline<u8>;

/// 0 = succeed at once, 1 = fail at once, 2 = succeed after 50 ms, 3 = fail after 50 ms.
fn dependency() -> impl Service<Req, Response = u8, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|req: Req| async move {
        if req.request >= 2 {
            sleep(Duration::from_millis(50)).await;
        }
        if req.request.is_multiple_of(2) {
            Ok(req.request)
        } else {
            Err::<u8, BoxError>("boom".into())
        }
    })
}

/// Runs `f` on a fresh paused runtime.
fn paused<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

/// Sends a mix of calls (failing ones first, so breakers trip), with time moving between
/// them; every call is bounded so an enormous configured wait cannot hang the test.
async fn exercise<S>(svc: S)
where
    S: Service<Req, Response = u8, Error = BoxError> + Clone,
{
    for round in 0..4u64 {
        for kind in [1, 1, 1, 3, 0, 2, 0, 1] {
            let call = svc.clone().oneshot(WithDeadline::new(kind));
            let _ = tokio::time::timeout(Duration::from_secs(5), call).await;
        }
        tokio::time::advance(Duration::from_secs(60 * (round + 1))).await;
    }
}

/// Durations from zero to `Duration::MAX`, edges weighted in.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        (0u64..10_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Floats of every kind, edges weighted in.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(1.0),
        Just(f64::MAX),
        0.0f64..2.0,
        any::<f64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn breaker_builder_errors_or_serves(
        open in duration(), half in duration(), backoff_max in duration(), slow in duration(),
        mult in float(), jitter in float(), rate in float(), slow_rate in float(),
        buckets in prop_oneof![Just(0usize), Just(1usize << 40), 1usize..100],
        window in duration(), count in prop_oneof![Just(0usize), Just(usize::MAX), 1usize..50],
    ) {
        // One value at a time over a valid base (so a bad value is never hidden behind
        // another one's error), then all of them at once.
        let base = || {
            CircuitBreakerLayer::builder()
                .failure_model(FailureModel::consecutive(2))
                .minimum_calls(2)
        };
        let backoff = OpenBackoff::exponential(2.0, Duration::from_secs(3600));
        let builders = [
            base().open_duration(open),
            base().max_half_open(Some(half)),
            base().open_backoff(OpenBackoff::exponential(mult, backoff_max)),
            base().open_duration(open).open_backoff(OpenBackoff::exponential(2.0, backoff_max)),
            base().open_backoff(backoff.jitter(jitter)),
            base().failure_model(FailureModel::count(20)).failure_rate(rate),
            base().failure_model(FailureModel::count(20)).slow_calls(slow, slow_rate),
            base().failure_model(FailureModel::count(20)).slow_calls(slow, 0.5),
            base().failure_model(FailureModel::time(window, buckets)),
            base().failure_model(FailureModel::count(count)),
            base()
                .failure_model(FailureModel::time(window, buckets))
                .failure_rate(rate)
                .slow_calls(slow, slow_rate)
                .open_duration(open)
                .max_half_open(Some(half))
                .open_backoff(OpenBackoff::exponential(mult, backoff_max).jitter(jitter)),
        ];
        for builder in builders {
            if let Ok(layer) = builder.build() {
                paused(exercise(layer.layer(dependency())));
            }
        }
    }

    #[test]
    fn hedge_builder_errors_or_serves(
        delay in duration(), window in duration(), min_remaining in duration(),
        percentile in float(), ratio in float(), extra in 0u32..4,
    ) {
        let base = |d: HedgeDelay| {
            HedgeLayer::builder(d)
                .max_extra(1)
                .policy(palisade_fanout::hedge::CloneAll)
        };
        let fixed = HedgeDelay::fixed(Duration::from_millis(10));
        let builders = [
            base(HedgeDelay::fixed(delay)).max_extra(extra),
            base(HedgeDelay::percentile(percentile)),
            base(HedgeDelay::percentile(0.9).window(window).min_samples(1)),
            base(fixed).budget(ratio, 5),
            base(fixed).min_remaining(min_remaining),
            base(HedgeDelay::percentile(percentile).window(window))
                .max_extra(extra)
                .budget(ratio, 5)
                .min_remaining(min_remaining),
        ];
        for builder in builders {
            if let Ok(layer) = builder.build() {
                paused(exercise(layer.layer(dependency())));
            }
        }
    }

    #[test]
    fn retry_builder_errors_or_serves(
        base_delay in duration(), min in duration(), max in duration(), hint in duration(),
        remaining in duration(), ttl in duration(), percent in float(), ratio in float(),
        attempts in 0u32..6,
    ) {
        let base = || {
            RetryLayer::builder()
                .max_attempts(3)
                .jitter(Jitter::seeded(1))
                .budget(RetryBudget::unlimited())
                .policy(palisade_retry::CloneAll)
        };
        let ms = Duration::from_millis;
        let builders = [
            base().max_attempts(attempts),
            base().backoff(Backoff::exponential(base_delay)),
            base().backoff(Backoff::decorrelated(base_delay)),
            base().backoff(Backoff::exponential(ms(10)).min(min)),
            base().backoff(Backoff::exponential(ms(10)).max(max)),
            base().backoff(Backoff::decorrelated(ms(10)).max(max)),
            base().max_retry_after(hint),
            base().min_remaining(remaining),
            base().budget(RetryBudget::ttl(ttl, 3, 0.2)),
            base().budget(RetryBudget::ttl(Duration::from_secs(10), 3, percent)),
            base().budget(RetryBudget::throttle(10, ratio)),
            base()
                .max_attempts(attempts)
                .backoff(Backoff::decorrelated(base_delay).min(min).max(max))
                .budget(RetryBudget::ttl(ttl, 3, percent))
                .max_retry_after(hint)
                .min_remaining(remaining),
        ];
        for builder in builders {
            if let Ok(layer) = builder.build() {
                paused(exercise(layer.layer(dependency())));
            }
        }
    }

    #[test]
    fn limit_rate_and_timer_builders_error_or_serve(
        wait in duration(), period in duration(), timeout in duration(),
        queued in prop_oneof![Just(0usize), Just(usize::MAX), 1usize..10],
        limit in prop_oneof![Just(0usize), Just(usize::MAX), 1usize..10],
        cells in 1u32..100,
    ) {
        if let Ok(layer) = ConcurrencyLimitLayer::builder(limit).queue(queued, wait).build() {
            paused(exercise(layer.layer(dependency())));
        }
        if let Ok(quota) = palisade_rate::quota(cells, period) {
            paused(exercise(RateLimitLayer::new(quota).wait(wait).layer(dependency())));
        }
        let quota = palisade_rate::Quota::per_second(NonZeroU32::MIN);
        paused(exercise(RateLimitLayer::new(quota).wait(wait).layer(dependency())));
        paused(exercise(DeadlineLayer::new(timeout).layer(dependency())));
        paused(exercise(TimeoutLayer::new(timeout).layer(dependency())));
    }

    #[test]
    fn adaptive_and_throttle_builders_error_or_serve(
        k in float(), window in duration(), backoff in float(), smoothing in float(),
        tolerance in float(), rtt_timeout in duration(), min_time in duration(),
        initial in 0usize..300, min in 0usize..300, max in 0usize..300, samples in 0u64..20,
    ) {
        let throttles = [
            ThrottleLayer::builder().k(k).build(),
            ThrottleLayer::builder().window(window).build(),
        ];
        for layer in throttles.into_iter().flatten() {
            paused(exercise(layer.layer(dependency())));
        }
        let ms = Duration::from_millis;
        let adaptive = [
            AdaptiveLimitLayer::builder(Aimd::new(initial, min, max)).build(),
            AdaptiveLimitLayer::builder(Aimd::default().backoff(backoff)).build(),
            AdaptiveLimitLayer::builder(Aimd::default().timeout(rtt_timeout)).build(),
            AdaptiveLimitLayer::builder(Aimd::default()).window(min_time, samples).build(),
            AdaptiveLimitLayer::builder(Vegas::new(initial, max)).reject().build(),
            AdaptiveLimitLayer::builder(Vegas::default().smoothing(smoothing)).build(),
            AdaptiveLimitLayer::builder(Gradient2::new(initial, min, max)).build(),
            AdaptiveLimitLayer::builder(Gradient2::default().tolerance(tolerance)).build(),
            AdaptiveLimitLayer::builder(Gradient2::default().smoothing(smoothing))
                .window(ms(1), 1)
                .build(),
        ];
        for layer in adaptive.into_iter().flatten() {
            paused(exercise(layer.layer(dependency())));
        }
    }
}

/// The values the issue names, one by one: each is refused with a typed error.
#[test]
fn named_bad_values_are_refused() {
    assert!(CircuitBreakerLayer::builder()
        .failure_model(FailureModel::time(Duration::from_secs(10), 1 << 32))
        .build()
        .is_err());
    assert!(CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(5))
        .minimum_calls(10)
        .build()
        .is_err());
    assert!(CircuitBreakerLayer::builder()
        .build_keyed::<u8, _>(|_: &Req| 0u8, 10, Duration::ZERO)
        .is_err());
    let err = AdaptiveLimitLayer::builder(Aimd::new(100, 10, 200).backoff(f64::NAN))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("backoff"), "{err}");
    assert!(AdaptiveLimitLayer::builder(Aimd::new(5, 10, 200))
        .build()
        .is_err());
    assert!(AdaptiveLimitLayer::builder(Gradient2::new(20, 30, 10))
        .build()
        .is_err());
    assert!(AdaptiveLimitLayer::builder(Vegas::new(0, 10))
        .build()
        .is_err());
    assert!(ConcurrencyLimitLayer::builder(4)
        .queue(0, Duration::from_secs(1))
        .criticality(|_: &Req| palisade_limit::criticality::Criticality::Default)
        .build()
        .is_err());
}
