use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::{BoxError, CircuitOpen, Deadline, WithDeadline};
use palisade_fanout::hedge::{CloneAll, HedgeDelay, HedgeLayer, InvalidHedge};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready};
use tower::{Layer, ServiceExt};

use crate::support::{ms, Backend};

fn fixed(delay: u64) -> palisade_fanout::hedge::HedgeBuilder<CloneAll> {
    HedgeLayer::builder(HedgeDelay::fixed(ms(delay)))
        .policy(CloneAll)
        .unlimited()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fixed_delay_hedge_wins_and_the_loser_is_dropped() {
    // First call takes 500 ms, the hedge 10 ms.
    let backend = Backend::new(|n, req| (ms(if n == 0 { 500 } else { 10 }), Ok(req + n as u64)));
    let layer = fixed(20).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend.clone());

    let start = Instant::now();
    let out = svc.oneshot(1).await.unwrap();
    assert_eq!(out, 2, "the hedge (call #1) answered");
    assert_eq!(
        start.elapsed(),
        ms(30),
        "hedge sent at 20 ms, answered 10 ms later"
    );
    assert_eq!(backend.calls(), 2);
    assert_eq!(handle.hedges(), 1);
    assert_eq!(handle.hedge_wins(), 1);
    // The slow primary was cancelled by dropping its future, not left running.
    assert_eq!(backend.stats.cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(backend.stats.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_hedge_when_the_primary_answers_before_the_delay() {
    let backend = Backend::fixed(ms(15));
    let layer = fixed(20).build().unwrap();
    let handle = layer.handle();
    let start = Instant::now();
    assert_eq!(layer.layer(backend.clone()).oneshot(7).await.unwrap(), 7);
    assert_eq!(start.elapsed(), ms(15));
    assert_eq!(backend.calls(), 1);
    assert_eq!(handle.hedges(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn up_to_max_extra_attempts_each_one_delay_apart() {
    let backend = Backend::fixed(ms(1000));
    let svc = fixed(20)
        .max_extra(3)
        .build()
        .unwrap()
        .layer(backend.clone());
    let t0 = Instant::now();
    let mut fut = tokio_test::task::spawn(svc.oneshot(1));
    assert_pending!(fut.poll());
    for (at, calls) in [(19, 1), (20, 2), (39, 2), (40, 3), (60, 4), (200, 4)] {
        tokio::time::advance(t0 + ms(at) - Instant::now()).await;
        let _ = fut.poll();
        assert_eq!(backend.calls(), calls, "at {at} ms");
    }
    tokio::time::advance(t0 + ms(1000) - Instant::now()).await;
    assert_eq!(assert_ready!(fut.poll()).unwrap(), 1);
    // The primary won at 1000 ms; the three hedges were cancelled.
    assert_eq!(backend.stats.cancelled.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn percentile_delay_learns_from_successes_after_warm_up() {
    let backend = Backend::new(|n, req| {
        (
            ms(if n < 20 {
                10
            } else if n == 20 {
                900
            } else {
                10
            }),
            Ok(req),
        )
    });
    let layer = HedgeLayer::builder(
        HedgeDelay::percentile(0.9)
            .min_samples(16)
            .window(Duration::from_secs(10)),
    )
    .policy(CloneAll)
    .unlimited()
    .build()
    .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend.clone());
    assert_eq!(handle.delay(), None, "cold");
    for i in 0..20 {
        svc.clone().oneshot(i).await.unwrap();
    }
    assert_eq!(handle.hedges(), 0, "no hedge while warming up or fast");
    let d = handle.delay().expect("warm after 16 samples");
    assert!(d >= ms(10) && d <= ms(12), "p90 of 10 ms samples: {d:?}");

    // Call #20 is slow: hedged after the learned delay, answered by the hedge.
    let start = Instant::now();
    svc.clone().oneshot(99).await.unwrap();
    assert_eq!(handle.hedges(), 1);
    // tokio timers have millisecond resolution: the hedge fires at the next whole ms.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= d + ms(10) && elapsed <= d + ms(11),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn budget_is_shared_by_clones_and_runs_out() {
    let backend = Backend::fixed(ms(100));
    // No deposits (ratio 0), two hedges saved up.
    let layer = HedgeLayer::builder(HedgeDelay::fixed(ms(10)))
        .policy(CloneAll)
        .budget(0.0, 2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let a = layer.layer(backend.clone());
    let b = layer.layer(backend.clone());
    a.clone().oneshot(1).await.unwrap();
    b.clone().oneshot(2).await.unwrap();
    assert_eq!(handle.hedges(), 2);
    let before = backend.calls();
    a.oneshot(3).await.unwrap();
    assert_eq!(backend.calls() - before, 1, "budget spent: no hedge");
    assert_eq!(handle.hedges(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retryable_failure_fires_the_next_attempt_at_once() {
    // The primary fails after 5 ms with a plain (retryable) error; the next attempt is
    // sent then, not at the 50 ms delay, and its success wins over the earlier failure.
    let backend = Backend::new(|n, req| {
        if n == 0 {
            (ms(5), Err("connection reset".into()))
        } else {
            (ms(10), Ok(req))
        }
    });
    let start = Instant::now();
    let out = fixed(50)
        .build()
        .unwrap()
        .layer(backend.clone())
        .oneshot(4)
        .await;
    assert_eq!(out.unwrap(), 4);
    assert_eq!(start.elapsed(), ms(15));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failure_does_not_end_the_call_while_others_run() {
    // Primary: success at 100 ms. Hedge (sent at 20 ms): a fatal failure at 25 ms.
    let backend = Backend::new(|n, req| {
        if n == 0 {
            (ms(100), Ok(req))
        } else {
            (ms(5), Err(CircuitOpen::new().into()))
        }
    });
    let start = Instant::now();
    let out = fixed(20)
        .build()
        .unwrap()
        .layer(backend.clone())
        .oneshot(8)
        .await;
    assert_eq!(out.unwrap(), 8);
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn when_all_attempts_fail_the_last_error_is_returned() {
    let backend = Backend::new(|n, _| {
        let e: BoxError = if n == 0 {
            "first".into()
        } else {
            "second".into()
        };
        (ms(if n == 0 { 30 } else { 40 }), Err(e))
    });
    // Primary fails at 30 ms (retryable): the hedge goes at once and fails at 70 ms.
    let err = fixed(20)
        .build()
        .unwrap()
        .layer(backend.clone())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "second");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_hedge_when_the_deadline_is_too_close() {
    let backend = Backend::fixed(ms(100));
    let layer = fixed(20).min_remaining(ms(5)).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend.clone());

    // 24 ms left: the hedge would start at 20 ms with 4 ms left (< 5): not worth it.
    let req = WithDeadline::until(1, Deadline::after(ms(24)));
    svc.clone().oneshot(req).await.unwrap();
    assert_eq!(handle.hedges(), 0);

    // 30 ms left: 10 ms remain at the hedge, enough.
    let req = WithDeadline::until(2, Deadline::after(ms(30)));
    svc.clone().oneshot(req).await.unwrap();
    assert_eq!(handle.hedges(), 1);

    // Past the deadline already: never.
    let req = WithDeadline::until(3, Deadline::after(ms(0)));
    svc.oneshot(req).await.unwrap();
    assert_eq!(handle.hedges(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_the_policy_refuses_are_sent_once() {
    let backend = Backend::fixed(ms(100));
    let only_even = |r: &u64| r.is_multiple_of(2).then_some(*r);
    let layer = HedgeLayer::builder(HedgeDelay::fixed(ms(10)))
        .policy(only_even)
        .unlimited()
        .build()
        .unwrap();
    let svc = layer.layer(backend.clone());
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(backend.calls(), 1);
    svc.oneshot(2).await.unwrap();
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_response_future_cancels_every_attempt() {
    let backend = Backend::fixed(ms(1000));
    let svc = fixed(10)
        .max_extra(2)
        .build()
        .unwrap()
        .layer(backend.clone());
    let mut fut = tokio_test::task::spawn(svc.oneshot(1));
    assert_pending!(fut.poll());
    for _ in 0..2 {
        tokio::time::advance(ms(10)).await;
        assert_pending!(fut.poll());
    }
    assert_eq!(backend.stats.in_flight.load(Ordering::SeqCst), 3);
    drop(fut);
    assert_eq!(backend.stats.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(backend.stats.cancelled.load(Ordering::SeqCst), 3);
}

#[test]
fn invalid_config_is_a_typed_error() {
    let b = |d| HedgeLayer::builder(d).build().map(|_| ());
    assert_eq!(
        b(HedgeDelay::percentile(0.0)),
        Err(InvalidHedge::Percentile(0.0))
    );
    assert_eq!(
        b(HedgeDelay::percentile(1.5)),
        Err(InvalidHedge::Percentile(1.5))
    );
    assert_eq!(
        b(HedgeDelay::percentile(0.9).window(Duration::ZERO)),
        Err(InvalidHedge::ZeroWindow)
    );
    assert_eq!(
        b(HedgeDelay::percentile(0.9).min_samples(0)),
        Err(InvalidHedge::ZeroMinSamples)
    );
    assert_eq!(
        HedgeLayer::builder(HedgeDelay::fixed(ms(1)))
            .budget(1.5, 1)
            .build()
            .map(|_| ()),
        Err(InvalidHedge::BudgetRatio(1.5))
    );
    assert!(matches!(
        HedgeLayer::builder(HedgeDelay::fixed(ms(1)))
            .budget(f64::NAN, 1)
            .build(),
        Err(InvalidHedge::BudgetRatio(_))
    ));
}

#[cfg(feature = "http")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn http_posts_are_not_hedged_by_default() {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let inner = tower::service_fn(move |_req: http::Request<()>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(ms(100)).await;
            Ok::<_, BoxError>(())
        }
    });
    let layer = HedgeLayer::builder(HedgeDelay::fixed(ms(10)))
        .unlimited()
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    let post = http::Request::post("/x").body(()).unwrap();
    svc.clone().oneshot(post).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let get = http::Request::get("/x").body(()).unwrap();
    svc.oneshot(get).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// One replay policy for retries and hedges: the gRPC policy marks each hedge with
/// `grpc-previous-rpc-attempts`, and a streaming body wrapped for replay is hedged too.
#[cfg(feature = "http")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_hedges_carry_previous_attempts_and_streaming_bodies_replay() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use palisade_core::replay::body::{ReplayBody, ReplayBodyLayer};
    use palisade_fanout::hedge::Grpc;
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let inner = tower::service_fn(move |req: http::Request<ReplayBody<Full<Bytes>>>| {
        let s = Arc::clone(&s);
        async move {
            let attempt = req
                .headers()
                .get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().unwrap().to_owned());
            let first = attempt.is_none();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            s.lock().unwrap().push((attempt, body));
            // The first attempt is slow: the hedge wins.
            tokio::time::sleep(ms(if first { 500 } else { 5 })).await;
            Ok::<_, BoxError>(())
        }
    });
    let layer = HedgeLayer::builder(HedgeDelay::fixed(ms(10)))
        .policy(Grpc)
        .unlimited()
        .build()
        .unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(ReplayBodyLayer::new(1024))
        .layer(layer)
        .service(inner);
    let req = http::Request::post("/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    svc.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], (None, Bytes::from_static(b"payload")));
    assert_eq!(
        seen[1],
        (Some("1".to_owned()), Bytes::from_static(b"payload"))
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_response_classified_as_a_failure_loses_to_a_later_success() {
    // Responses of 0 are failures the server says are retryable (think gRPC UNAVAILABLE
    // in a trailers-only response): the next attempt goes at once.
    let classify = |r: &Result<u64, BoxError>| match r {
        Ok(0) => palisade_core::Outcome::failure().with_retryable(true),
        Ok(_) => palisade_core::Outcome::success(),
        Err(e) => palisade_core::Outcome::from_error(e.as_ref()),
    };
    let backend = Backend::new(|n, req| (ms(5), Ok(if n == 0 { 0 } else { req })));
    let layer = fixed(50).classify(classify).build().unwrap();
    let start = Instant::now();
    assert_eq!(layer.layer(backend.clone()).oneshot(9).await.unwrap(), 9);
    assert_eq!(start.elapsed(), ms(10));

    // When every attempt "fails" that way, the last response is returned as it is.
    let backend = Backend::new(|_, _| (ms(5), Ok(0)));
    let layer = fixed(50).max_extra(2).classify(classify).build().unwrap();
    assert_eq!(layer.layer(backend.clone()).oneshot(9).await.unwrap(), 0);
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hedge_waits_for_the_spare_service_to_be_ready_before_paying() {
    let (mock, mut upstream) = tower_test::mock::pair::<u64, u64>();
    let layer = fixed(10).budget(0.0, 1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(mock);

    upstream.allow(1);
    tokio_test::assert_ready_ok!(
        tokio_test::task::spawn(()).enter(|cx, _| { tower::Service::poll_ready(&mut svc, cx) })
    );
    let mut fut = tokio_test::task::spawn(tower::Service::call(&mut svc, 1));
    assert_pending!(fut.poll());
    let (_, primary) = upstream.next_request().await.unwrap();

    // The delay passes, but the service has no capacity: no hedge, and no budget spent.
    tokio::time::advance(ms(10)).await;
    assert_pending!(fut.poll());
    assert_eq!(handle.hedges(), 0);
    assert_eq!(handle.budget_available(), Some(1.0));

    // Capacity comes back: the hedge goes, and its answer wins.
    upstream.allow(1);
    assert!(fut.is_woken());
    assert_pending!(fut.poll());
    assert_eq!(handle.hedges(), 1);
    let (req, hedge) = upstream.next_request().await.unwrap();
    assert_eq!(req, 1);
    hedge.send_response(42);
    assert_eq!(assert_ready!(fut.poll()).unwrap(), 42);
    // The primary's responder sees its caller gone.
    drop(primary);
}
