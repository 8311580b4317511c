use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_rate::keyed::KeyedLimiter;
use palisade_rate::{Acquire, KeyedRateLimitLayer, Quota};
use tokio::time::advance;
use tower::{service_fn, Layer, ServiceExt};

use crate::retry_after;

fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap())
}

fn rejected_after(a: Acquire) -> Duration {
    match a {
        Acquire::Rejected(e) => e.retry_after().unwrap(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn keys_are_independent_and_the_global_limit_applies_on_top() {
    let layer =
        KeyedRateLimitLayer::new(per_second(2), |req: &u32| *req / 10).global(per_second(5));
    let svc = layer.layer(service_fn(|req: u32| async move { Ok::<_, BoxError>(req) }));
    // Requests are tenant * 10 + n. Tenant 1 takes its 2, tenant 2 its 2.
    for t in [1, 1, 2, 2] {
        svc.clone().oneshot(t * 10).await.unwrap();
    }
    let err = svc.clone().oneshot(10).await.unwrap_err();
    assert_eq!(retry_after(&err), Some(Duration::from_millis(500)));
    // A third tenant gets one cell, then the global bucket (5) is empty.
    svc.clone().oneshot(30).await.unwrap();
    let err = svc.clone().oneshot(30).await.unwrap_err();
    assert_eq!(retry_after(&err), Some(Duration::from_millis(200)));
    // The global rejection did not charge tenant 3's own bucket.
    advance(Duration::from_millis(200)).await;
    svc.clone().oneshot(30).await.unwrap();
    assert_eq!(layer.limiter().len(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_flood_of_a_million_keys_stays_under_the_cap() {
    const CAP: usize = 10_000;
    let limiter: KeyedLimiter<u64> =
        KeyedLimiter::new(per_second(1), NonZeroUsize::new(CAP).unwrap());
    for key in 0..1_000_000u64 {
        // Every key is fresh, so every request passes and leaves live state behind.
        assert_eq!(limiter.acquire(key, 1, Duration::ZERO), Acquire::Now);
        if key % 50_000 == 0 {
            assert!(limiter.len() <= CAP);
            advance(Duration::from_micros(1)).await;
        }
    }
    assert!(limiter.len() <= CAP, "{} live keys", limiter.len());
    assert!(
        limiter.len() >= CAP * 7 / 8,
        "the cap is used, not thrown away"
    );
    // Memory: the maps never grew past what the cap needs (hashbrown rounds up to a
    // power of two with 7/8 load, so at most ~2x).
    assert!(
        limiter.capacity() <= 2 * CAP + 64,
        "{} slots",
        limiter.capacity()
    );
    // The latest keys are still limited.
    rejected_after(limiter.acquire(999_999, 1, Duration::ZERO));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_state_is_reclaimed_and_returning_keys_are_treated_correctly() {
    // One shard of 8 keys; 2 requests per second per key.
    let limiter: KeyedLimiter<&'static str> =
        KeyedLimiter::new(per_second(2), NonZeroUsize::new(8).unwrap());
    let others = ["b", "c", "d", "e", "f", "g", "h"];
    limiter.acquire("a", 1, Duration::ZERO);
    limiter.acquire("a", 1, Duration::ZERO);
    assert_eq!(
        rejected_after(limiter.acquire("a", 1, Duration::ZERO)),
        Duration::from_millis(500)
    );
    for k in others {
        limiter.acquire(k, 1, Duration::ZERO); // idle again 500ms later
    }
    assert_eq!(limiter.len(), 8);

    // At 600ms the others are idle, "a" is not (its bucket is full again at 1s).
    advance(Duration::from_millis(600)).await;
    limiter.acquire("new", 1, Duration::ZERO);
    assert_eq!(limiter.len(), 2, "the seven idle keys were reclaimed");
    // "a" earned one cell back in 600ms; a fresh key would have two.
    assert_eq!(limiter.acquire("a", 1, Duration::ZERO), Acquire::Now);
    assert_eq!(
        rejected_after(limiter.acquire("a", 1, Duration::ZERO)),
        Duration::from_millis(400),
        "live state survived the sweep"
    );

    // Later "a" is idle too; a flood of new keys reclaims it.
    advance(Duration::from_secs(2)).await;
    for k in ["i", "j", "k", "l", "m", "n", "o"] {
        limiter.acquire(k, 1, Duration::ZERO);
    }
    limiter.acquire("p", 1, Duration::ZERO);
    assert!(limiter.len() <= 8);
    assert_eq!(limiter.len(), 8, "a and new reclaimed, i..p live");
    // "a" comes back with a full bucket, exactly like a fresh key, and no more.
    assert_eq!(limiter.acquire("a", 1, Duration::ZERO), Acquire::Now);
    assert_eq!(limiter.acquire("a", 1, Duration::ZERO), Acquire::Now);
    assert_eq!(
        rejected_after(limiter.acquire("a", 1, Duration::ZERO)),
        Duration::from_millis(500)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn keyed_waits_per_key() {
    let layer =
        KeyedRateLimitLayer::new(per_second(1), |req: &u32| *req % 2).wait(Duration::from_secs(5));
    let svc = layer.layer(service_fn(|req: u32| async move { Ok::<_, BoxError>(req) }));
    let start = tokio::time::Instant::now();
    svc.clone().oneshot(0).await.unwrap();
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    svc.clone().oneshot(2).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_known_key_call_allocates_nothing() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use tower::Service;

    let mut svc = KeyedRateLimitLayer::new(per_second(1_000_000), |req: &u32| *req % 64)
        .max_keys(std::num::NonZeroUsize::new(1_000).unwrap())
        .layer(service_fn(|req: u32| {
            std::future::ready(Ok::<_, BoxError>(req))
        }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = |svc: &mut palisade_rate::KeyedRateLimit<_, u32, _>, req: u32| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = std::pin::pin!(svc.call(req));
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    };
    for k in 0..64 {
        call(&mut svc, k); // every key is now live
    }
    let allocations = allocation_counter::measure(|| {
        for k in 0..1_000 {
            call(&mut svc, k);
        }
    });
    assert_eq!(allocations.count_total, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_layer_its_clones_and_their_services_share_one_limiter() {
    let layer = KeyedRateLimitLayer::new(per_second(1), |req: &u32| *req)
        .max_keys(NonZeroUsize::new(10).unwrap())
        .global(per_second(100));
    let copy = layer.clone();
    let inner = || service_fn(|req: u32| async move { Ok::<_, BoxError>(req) });
    let (a, b) = (layer.layer(inner()), copy.layer(inner()));
    assert!(std::sync::Arc::ptr_eq(&layer.limiter(), a.limiter()));
    assert!(std::sync::Arc::ptr_eq(&layer.limiter(), b.limiter()));
    assert_eq!(layer.limiter().max_keys(), 10);
    // Key 7's one cell, taken through one service, is gone for the other.
    a.oneshot(7).await.unwrap();
    assert!(b.oneshot(7).await.is_err());
    // A setter makes a new limiter: the reconfigured value limits apart.
    let apart = copy.max_keys(NonZeroUsize::new(20).unwrap());
    assert!(!std::sync::Arc::ptr_eq(&layer.limiter(), &apart.limiter()));
    apart.layer(inner()).oneshot(7).await.unwrap();
}
