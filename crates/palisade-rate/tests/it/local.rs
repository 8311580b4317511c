use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use governor::RateLimiter;
use palisade_core::{BoxError, Deadline, WithDeadline};
use palisade_rate::{quota, Limiter, Quota, RateLimitLayer, TokioClock};
use tokio::time::{advance, Instant};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

use crate::retry_after;

fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap())
}

fn echo() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(|req: u32| async move { Ok::<_, BoxError>(req) })
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn burst_then_steady_rate_with_exact_retry_after() {
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(per_second(10)))
        .service(echo());
    for i in 0..10 {
        svc.clone().oneshot(i).await.expect("burst passes");
    }
    let err = svc.clone().oneshot(10).await.unwrap_err();
    assert_eq!(retry_after(&err), Some(100 * MS));

    advance(Duration::from_nanos(30_000_123)).await;
    let err = svc.clone().oneshot(10).await.unwrap_err();
    assert_eq!(
        retry_after(&err),
        Some(Duration::from_nanos(69_999_877)),
        "sub-millisecond precision"
    );

    // Steady state: exactly one request per 100ms.
    advance(Duration::from_nanos(69_999_877)).await;
    for _ in 0..5 {
        svc.clone().oneshot(0).await.expect("one per interval");
        assert!(svc.clone().oneshot(0).await.is_err());
        advance(100 * MS).await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_service_and_clone_of_a_layer_shares_one_bucket() {
    let layer = RateLimitLayer::new(per_second(2));
    let a = layer.layer(echo());
    let b = layer.layer(echo());
    a.clone().oneshot(1).await.unwrap();
    b.clone().oneshot(2).await.unwrap();
    assert!(a.clone().oneshot(3).await.is_err());
    assert!(b.oneshot(4).await.is_err());
    assert_eq!(layer.limiter().remaining(), 0);
    // A second layer value is a separate bucket.
    let other = RateLimitLayer::new(per_second(2)).layer(echo());
    other.oneshot(5).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiting_is_fifo_and_bounded_by_max_wait() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let inner = {
        let log = Arc::clone(&log);
        service_fn(move |req: u32| {
            log.lock().unwrap().push((req, start.elapsed()));
            async move { Ok::<_, BoxError>(req) }
        })
    };
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(per_second(1)).wait(Duration::from_millis(2500)))
        .service(inner);
    // 1 passes now, 2 and 3 reserve the 1s and 2s slots, 4 would need 3s > 2.5s.
    let mut tasks = Vec::new();
    for i in 1..=3 {
        tasks.push(tokio::spawn(svc.clone().oneshot(i)));
        tokio::task::yield_now().await;
    }
    let err = svc.clone().oneshot(4).await.unwrap_err();
    assert_eq!(retry_after(&err), Some(Duration::from_secs(3)));
    // Nothing reached the inner service before its slot.
    tokio::task::yield_now().await;
    assert_eq!(log.lock().unwrap().len(), 1);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (1, Duration::ZERO),
            (2, Duration::from_secs(1)),
            (3, Duration::from_secs(2))
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn wait_never_exceeds_the_request_deadline() {
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(per_second(10)).wait(Duration::from_secs(10)))
        .service(service_fn(|req: WithDeadline<u32>| async move {
            Ok::<_, BoxError>(req.into_inner())
        }));
    for i in 0..10 {
        svc.clone().oneshot(WithDeadline::new(i)).await.unwrap();
    }
    // Needs 100ms, has 50ms: rejected at once, reserving nothing.
    let started = Instant::now();
    let req = WithDeadline::until(10, Deadline::after(Duration::from_millis(50)));
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert_eq!(retry_after(&err), Some(100 * MS));
    assert_eq!(started.elapsed(), Duration::ZERO);
    // With 150ms left it waits its 100ms.
    let req = WithDeadline::until(11, Deadline::after(Duration::from_millis(150)));
    assert_eq!(svc.clone().oneshot(req).await.unwrap(), 11);
    assert_eq!(started.elapsed(), 100 * MS);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn cost_weights_take_several_cells() {
    let layer = RateLimitLayer::new(per_second(10)).cost(|req: &u32| *req);
    let svc = layer.layer(echo());
    svc.clone().oneshot(6).await.unwrap();
    assert_eq!(layer.limiter().remaining(), 4);
    let err = svc.clone().oneshot(5).await.unwrap_err();
    assert_eq!(retry_after(&err), Some(100 * MS));
    svc.clone().oneshot(4).await.unwrap();
    // More than the burst can never pass: no retry-after to promise.
    advance(Duration::from_secs(60)).await;
    let err = svc.clone().oneshot(11).await.unwrap_err();
    assert_eq!(retry_after(&err), None);
    // Zero cost always passes.
    for _ in 0..100 {
        svc.clone().oneshot(0).await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn typed_quota_errors() {
    assert_eq!(
        quota(0, Duration::from_secs(1)).unwrap_err(),
        palisade_rate::InvalidQuota::ZeroCells
    );
    assert_eq!(
        quota(10, Duration::from_nanos(5)).unwrap_err(),
        palisade_rate::InvalidQuota::PeriodTooShort
    );
    let q = quota(3, Duration::from_secs(3)).unwrap();
    let l = Limiter::new(q);
    assert_eq!(l.burst(), 3);
    assert_eq!(l.emission_interval(), Duration::from_secs(1));
}

/// Our reserving GCRA decides exactly like governor's `check()` on the same clock.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn decides_like_governor_on_a_tokio_clock() {
    let q = Quota::with_period(Duration::from_micros(7_300))
        .unwrap()
        .allow_burst(NonZeroU32::new(5).unwrap());
    let clock = TokioClock::new();
    let governor = RateLimiter::direct_with_clock(q, clock);
    let ours = Limiter::new(q);
    // A deterministic pseudo-random walk of arrivals.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rejected = 0;
    for _ in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        advance(Duration::from_nanos(x % 4_000_000)).await;
        let g = governor
            .check()
            .map_err(|nu| nu.wait_time_from(governor::clock::Clock::now(&clock)));
        let o = ours.check(1).map_err(|e| e.retry_after().unwrap());
        assert_eq!(g, o);
        rejected += usize::from(o.is_err());
    }
    assert!(
        rejected > 100,
        "the walk must exercise rejections: {rejected}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn admitted_call_allocates_nothing() {
    let mut svc = RateLimitLayer::new(per_second(1_000_000)).layer(service_fn(|req: u32| {
        std::future::ready(Ok::<_, BoxError>(req))
    }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = |svc: &mut _| {
        let svc: &mut palisade_rate::RateLimit<_> = svc;
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = std::pin::pin!(svc.call(7));
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    };
    call(&mut svc);
    let allocations = allocation_counter::measure(|| {
        for _ in 0..1_000 {
            call(&mut svc);
        }
    });
    assert_eq!(allocations.count_total, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_waiting_future_never_reaches_the_inner_service() {
    let calls = Arc::new(Mutex::new(0));
    let inner = {
        let calls = Arc::clone(&calls);
        service_fn(move |req: u32| {
            *calls.lock().unwrap() += 1;
            std::future::ready(Ok::<_, BoxError>(req))
        })
    };
    let mut svc = RateLimitLayer::new(per_second(1))
        .wait(Duration::from_secs(5))
        .layer(inner);
    svc.ready().await.unwrap().call(1).await.unwrap();
    let waiting = svc.ready().await.unwrap().call(2);
    advance(Duration::from_millis(500)).await;
    drop(waiting);
    advance(Duration::from_secs(5)).await;
    assert_eq!(*calls.lock().unwrap(), 1);
}
