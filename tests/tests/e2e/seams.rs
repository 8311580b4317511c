//! The seams between layers, with real layers stacked (paused time, in process): no layer
//! mistakes another's local rejection for the dependency's failure, and no wait pins the
//! capacity of the layer below it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_breaker::{CircuitBreakerLayer, FailureModel, State};
use palisade_core::response::RejectionResponseLayer;
use palisade_core::{BoxError, CircuitOpen, Overloaded, RateLimited, WithDeadline};
use palisade_limit::adaptive::{AdaptiveLimitLayer, Aimd};
use palisade_limit::throttle::ThrottleLayer;
use palisade_limit::ConcurrencyLimitLayer;
use palisade_rate::{Quota, RateLimitLayer};
use palisade_retry::{Backoff, CloneAll, Jitter, RetryBudget, RetryLayer};
use tokio::time::{advance, sleep};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

type Req = WithDeadline<u32>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A healthy dependency: every call succeeds after `latency`; counts its calls.
fn healthy(
    latency: Duration,
    calls: Arc<AtomicUsize>,
) -> impl Service<Req, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            sleep(latency).await;
            Ok::<_, BoxError>(req.request)
        }
    })
}

/// Fires `n` concurrent calls through clones of `svc` and sorts the results.
async fn burst<S>(svc: &S, n: u32) -> (usize, usize, usize, usize)
where
    S: Service<Req, Response = u32, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let calls: Vec<_> = (0..n)
        .map(|i| tokio::spawn(svc.clone().oneshot(WithDeadline::new(i))))
        .collect();
    let (mut ok, mut shed, mut limited, mut open) = (0, 0, 0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.is::<Overloaded>() => shed += 1,
            Err(e) if e.is::<RateLimited>() => limited += 1,
            Err(e) if e.is::<CircuitOpen>() => open += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    (ok, shed, limited, open)
}

/// The reproduction: a breaker above a reject-mode limit of 2, 20 concurrent calls
/// to a healthy 50 ms dependency. The limit sheds 18; the breaker must not open.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn breaker_ignores_sheds_of_a_limit_below_it() {
    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(20))
        .minimum_calls(5)
        .failure_rate(0.5)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let limit = ConcurrencyLimitLayer::builder(2).reject().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(limit)
        .service(healthy(ms(50), calls.clone()));
    for round in 0..3 {
        let (ok, shed, limited, open) = burst(&svc, 20).await;
        assert_eq!((ok, shed, limited, open), (2, 18, 0, 0), "round {round}");
        assert_eq!(handle.state(), State::Closed, "round {round}");
    }
    let stats = handle.stats();
    assert_eq!(stats.window.failures, 0);
    assert_eq!(stats.window.calls, 6, "only admitted calls are recorded");
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

/// Rate-limit rejections under a default breaker: the breaker stays closed.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn breaker_ignores_local_rate_limit_rejections() {
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    let handle = breaker.handle();
    let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(RateLimitLayer::new(quota))
        .service(healthy(ms(1), Arc::default()));
    let (ok, _, limited, open) = burst(&svc, 50).await;
    assert_eq!((ok, limited, open), (1, 49, 0));
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.stats().window.failures, 0);
}

/// A per-attempt timeout *below* the breaker measured the dependency: it still counts.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn breaker_counts_timeouts_below_it() {
    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(3))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(palisade_deadline::TimeoutLayer::new(ms(100)))
        .service(healthy(ms(500), Arc::default()));
    for _ in 0..3 {
        let err = svc.clone().oneshot(WithDeadline::new(0)).await.unwrap_err();
        assert!(err.is::<palisade_core::Elapsed>());
    }
    assert_eq!(handle.state(), State::Open);
}

/// The adaptive limit above a reject-mode rate limit: the rate limit's rejections are not
/// drops, so the limit does not shrink under a healthy dependency.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn adaptive_limit_does_not_shrink_on_local_rejections() {
    let adaptive = AdaptiveLimitLayer::builder(Aimd::new(20, 5, 200))
        .reject()
        .window(ms(10), 1)
        .build()
        .unwrap();
    let handle = adaptive.handle();
    let quota = Quota::per_second(NonZeroU32::new(100).unwrap());
    let svc = ServiceBuilder::new()
        .layer(adaptive)
        .layer(RateLimitLayer::new(quota))
        .service(healthy(ms(5), Arc::default()));
    let mut limited = 0;
    for _ in 0..20 {
        limited += burst(&svc, 30).await.2;
        advance(ms(20)).await;
    }
    assert!(limited > 200, "the rate limit did reject ({limited})");
    assert!(handle.limit() >= 20, "limit shrank to {}", handle.limit());
}

/// The SRE throttle above a reject-mode limit with a healthy dependency: sheds below it
/// are not backend rejections, so it never throttles.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn throttle_ignores_local_rejections_below_it() {
    let throttle = ThrottleLayer::builder().build().unwrap();
    let limit = ConcurrencyLimitLayer::builder(2).reject().build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(throttle.clone())
        .layer(limit)
        .service(healthy(ms(50), Arc::default()));
    for _ in 0..5 {
        let (ok, shed, _, _) = burst(&svc, 20).await;
        assert_eq!((ok, shed), (2, 18));
    }
    assert_eq!(throttle.reject_probability(), 0.0);
}

/// Calls abandoned by their callers (an outer 5 ms timeout on a healthy 50 ms backend)
/// are forgotten, not counted as rejections.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn throttle_forgets_dropped_calls() {
    let throttle = ThrottleLayer::builder().build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(healthy(ms(50), Arc::default()));
    for i in 0..1000 {
        let call = svc.clone().oneshot(WithDeadline::new(i));
        assert!(tokio::time::timeout(ms(5), call).await.is_err());
    }
    assert_eq!(throttle.reject_probability(), 0.0);
    // And a burst of 20 to the cold, healthy backend: nothing is shed locally while the
    // calls are in flight.
    let (ok, shed, _, _) = burst(&svc, 20).await;
    assert_eq!((ok, shed), (20, 0));
}

/// Retry and local rejections: a local rate limit is waited out exactly, without budget;
/// an open breaker below is never retried into.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_waits_out_local_rate_limits_and_never_retries_an_open_breaker() {
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(ms(10)))
        .jitter(Jitter::none())
        // An empty budget: any budgeted retry would be refused.
        .budget(RetryBudget::ttl(Duration::from_secs(10), 0, 0.0))
        .policy(CloneAll)
        .build()
        .unwrap();
    let retries = retry.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let quota = Quota::per_second(NonZeroU32::new(10).unwrap()).allow_burst(NonZeroU32::MIN);
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(RateLimitLayer::new(quota))
        .service(healthy(ms(1), calls.clone()));
    svc.clone().oneshot(WithDeadline::new(1)).await.unwrap();
    let t0 = tokio::time::Instant::now();
    // Rejected locally (100 ms to the next slot), waited out, then admitted.
    svc.clone().oneshot(WithDeadline::new(2)).await.unwrap();
    let waited = t0.elapsed();
    assert!(waited >= ms(99) && waited <= ms(102), "{waited:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(retries.budget_exhausted(), 0);

    // An open breaker: the retry layer gives the rejection back at once.
    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .build()
        .unwrap();
    breaker.handle().force_open();
    let retry = RetryLayer::builder()
        .max_attempts(5)
        .budget(RetryBudget::unlimited())
        .policy(CloneAll)
        .build()
        .unwrap();
    let counted = retry.handle();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .service(healthy(ms(1), Arc::default()));
    let t0 = tokio::time::Instant::now();
    let err = svc.oneshot(WithDeadline::new(3)).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(counted.retries(), 0);
}

/// Waiting never pins: requests sleeping for a rate slot above a wait-mode concurrency
/// limit of 2 hold none of its permits.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rate_limit_waits_hold_nothing_below() {
    let limit = ConcurrencyLimitLayer::new(2);
    let below = limit.handle();
    let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(quota).wait(Duration::from_secs(10)))
        .layer(limit)
        .service(healthy(ms(100), calls.clone()));
    let tasks: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot(WithDeadline::new(i))))
        .collect();
    advance(ms(1)).await;
    assert_eq!(
        below.in_flight(),
        1,
        "only the admitted call holds a permit"
    );
    // (A sleep, not `advance`: the finished call's task must run to release its permit.)
    sleep(ms(200)).await;
    // The first call is done; three only wait for their slots (1 s, 2 s, 3 s).
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        below.in_flight(),
        0,
        "a waiting request pinned a permit below"
    );
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(below.in_flight(), 0);
}

/// Queue mode above another limit: queued requests hold no permit of the lower limit.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queued_requests_hold_nothing_below() {
    let upper = ConcurrencyLimitLayer::builder(1)
        .queue(10, Duration::from_secs(10))
        .build()
        .unwrap();
    let queue = upper.handle();
    let lower = ConcurrencyLimitLayer::new(5);
    let below = lower.handle();
    let svc = ServiceBuilder::new()
        .layer(upper)
        .layer(lower)
        .service(healthy(ms(100), Arc::default()));
    let tasks: Vec<_> = (0..5)
        .map(|i| tokio::spawn(svc.clone().oneshot(WithDeadline::new(i))))
        .collect();
    advance(ms(1)).await;
    assert_eq!(queue.queued(), 4);
    assert_eq!(below.in_flight(), 1, "queued requests pinned permits below");
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        (queue.in_flight(), queue.queued(), below.in_flight()),
        (0, 0, 0)
    );
}

/// A readiness error through the response layer is answered, and the inner service's
/// `call` is never reached.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn readiness_errors_are_answered_without_calling() {
    #[derive(Clone)]
    struct BrokenReady(Arc<AtomicUsize>);
    impl Service<http::Request<()>> for BrokenReady {
        type Response = http::Response<String>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<http::Response<String>, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("connection pool closed".into()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(http::Response::new(String::new())))
        }
    }
    let called = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(RejectionResponseLayer::new())
        .layer(ConcurrencyLimitLayer::new(4))
        .service(BrokenReady(called.clone()));
    for _ in 0..3 {
        let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(res.status(), 500);
        assert_eq!(res.body(), "500 Internal Server Error: internal error\n");
    }
    assert_eq!(called.load(Ordering::SeqCst), 0);
}
