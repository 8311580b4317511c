//! Backoff schedules, caps, jitter bounds, deadlines and cancellation, on paused time.

use std::time::Duration;

use palisade_core::{BoxError, Deadline, DeadlineExceeded, WithDeadline};
use palisade_retry::{Backoff, CloneAll, InvalidRetry, Jitter, RetryBudget, RetryLayer};
use tokio::time::{self, Instant};
use tower::{Layer, ServiceExt};

use crate::support::{ms, Backend};

/// Fails every call at once with "fail <n>".
fn always_failing<Req>() -> Backend<Req, u64> {
    Backend::new(|n| (Duration::ZERO, Err(format!("fail {n}").into())))
}

fn layer(max_attempts: u32, backoff: Backoff) -> RetryLayer<CloneAll> {
    RetryLayer::builder()
        .max_attempts(max_attempts)
        .backoff(backoff)
        .jitter(Jitter::none())
        .budget(RetryBudget::unlimited())
        .policy(CloneAll)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn exponential_sequence_and_max_cap_without_jitter() {
    let backend = always_failing::<u64>();
    let layer = layer(5, Backoff::exponential(ms(100)).max(ms(300)));
    let handle = layer.handle();
    let t0 = Instant::now();
    let err = layer.layer(backend.clone()).oneshot(1).await.unwrap_err();
    // Waits of 100, 200, then capped at 300, 300.
    assert_eq!(
        backend.times(t0),
        [ms(0), ms(100), ms(300), ms(600), ms(900)]
    );
    // The last real error comes back, not a synthetic one.
    assert_eq!(err.to_string(), "fail 4");
    assert_eq!(handle.retries(), 4);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn decorrelated_sequence_without_jitter() {
    let backend = always_failing::<u64>();
    let layer = layer(4, Backoff::decorrelated(ms(100)).max(ms(1000)));
    let t0 = Instant::now();
    layer.layer(backend.clone()).oneshot(1).await.unwrap_err();
    // 3 * base, then 3 * previous, capped.
    assert_eq!(backend.times(t0), [ms(0), ms(300), ms(1200), ms(2200)]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn min_cap_and_jitter_bounds() {
    for seed in 0..20 {
        let backend = always_failing::<u64>();
        let layer = RetryLayer::builder()
            .max_attempts(6)
            .backoff(Backoff::exponential(ms(40)).min(ms(25)).max(ms(400)))
            .jitter(Jitter::seeded(seed))
            .budget(RetryBudget::unlimited())
            .policy(CloneAll)
            .build()
            .unwrap();
        let t0 = Instant::now();
        layer.layer(backend.clone()).oneshot(1).await.unwrap_err();
        let times = backend.times(t0);
        assert_eq!(times.len(), 6);
        for (n, w) in times.windows(2).enumerate() {
            let gap = w[1] - w[0];
            let ceiling = (ms(40) * (1 << n)).min(ms(400));
            assert!(
                gap >= ms(25) && gap <= ceiling.max(ms(25)),
                "seed {seed} retry {n}: {gap:?}"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn success_ends_retrying() {
    let backend = Backend::<u64, u64>::new(|n| {
        if n < 2 {
            (ms(5), Err("reset".into()))
        } else {
            (ms(5), Ok(42))
        }
    });
    let layer = layer(5, Backoff::exponential(ms(10)));
    assert_eq!(layer.layer(backend.clone()).oneshot(1).await.unwrap(), 42);
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn non_retryable_outcomes_and_single_attempt_are_not_retried() {
    let backend =
        Backend::<u64, u64>::new(|_| (Duration::ZERO, Err(DeadlineExceeded::new().into())));
    let err = layer(5, Backoff::exponential(ms(10)))
        .layer(backend.clone())
        .oneshot(1)
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(backend.calls(), 1);

    // A closure classifier: only errors saying "retry" are retryable.
    let backend = always_failing::<u64>();
    let picky = RetryLayer::builder()
        .max_attempts(3)
        .jitter(Jitter::none())
        .policy(CloneAll)
        .classify(|r: &Result<u64, BoxError>| match r {
            Ok(_) => palisade_core::Outcome::success(),
            Err(e) => {
                palisade_core::Outcome::failure().with_retryable(e.to_string().contains("retry"))
            }
        })
        .build()
        .unwrap();
    picky.layer(backend.clone()).oneshot(1).await.unwrap_err();
    assert_eq!(backend.calls(), 1);

    let backend = always_failing::<u64>();
    layer(1, Backoff::exponential(ms(10)))
        .layer(backend.clone())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn policy_refusal_means_one_attempt() {
    let backend = always_failing::<u64>();
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .jitter(Jitter::none())
        .policy(|r: &u64| (*r != 13).then_some(*r))
        .build()
        .unwrap();
    layer.layer(backend.clone()).oneshot(13).await.unwrap_err();
    assert_eq!(backend.calls(), 1);
    layer.layer(backend.clone()).oneshot(14).await.unwrap_err();
    assert_eq!(backend.calls(), 4);
    assert_eq!(backend.requests(|r| *r), [13, 14, 14, 14]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deadline_cuts_a_backoff_short() {
    let backend = always_failing::<WithDeadline<u64>>();
    let layer = layer(5, Backoff::exponential(ms(100)));
    let t0 = Instant::now();
    let req = WithDeadline::until(1, Deadline::after(ms(250)));
    let err = layer.layer(backend.clone()).oneshot(req).await.unwrap_err();
    // Attempt at 0, wait 100, attempt at 100; the next wait (200) would end past the
    // deadline (250), so it gives up at once with the last real error.
    assert_eq!(backend.times(t0), [ms(0), ms(100)]);
    assert_eq!(t0.elapsed(), ms(100));
    assert_eq!(err.to_string(), "fail 1");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn min_remaining_blocks_a_late_attempt() {
    let backend = always_failing::<WithDeadline<u64>>();
    let layer = RetryLayer::builder()
        .max_attempts(5)
        .backoff(Backoff::exponential(ms(100)))
        .jitter(Jitter::none())
        .budget(RetryBudget::unlimited())
        .min_remaining(ms(60))
        .policy(CloneAll)
        .build()
        .unwrap();
    let svc = layer.layer(backend.clone());
    // 150 - 100 leaves 50 < 60 after the wait: no retry.
    let req = WithDeadline::until(1, Deadline::after(ms(150)));
    svc.clone().oneshot(req).await.unwrap_err();
    assert_eq!(backend.calls(), 1);
    // 170 - 100 leaves 70: one retry, then 200 more would pass the deadline.
    let req = WithDeadline::until(2, Deadline::after(ms(170)));
    svc.clone().oneshot(req).await.unwrap_err();
    assert_eq!(backend.calls(), 3);
    // Less than min_remaining left from the start: not even a copy is kept.
    let req = WithDeadline::until(3, Deadline::after(ms(50)));
    svc.oneshot(req).await.unwrap_err();
    assert_eq!(backend.calls(), 4);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_future_during_backoff_stops_retries() {
    let backend = always_failing::<u64>();
    let svc = layer(5, Backoff::exponential(ms(100))).layer(backend.clone());
    let cut = time::timeout(ms(150), svc.oneshot(1)).await;
    assert!(cut.is_err(), "timed out while waiting out a backoff");
    assert_eq!(backend.calls(), 2);
    time::advance(ms(10_000)).await;
    assert_eq!(backend.calls(), 2, "nothing runs after the drop");
}

#[test]
fn invalid_configurations_are_rejected() {
    let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(err, InvalidRetry::ZeroMaxAttempts);
    let err = RetryLayer::builder()
        .backoff(Backoff::exponential(ms(10)).min(ms(20)).max(ms(15)))
        .build()
        .unwrap_err();
    assert!(matches!(err, InvalidRetry::Backoff(_)), "{err}");
    let err = RetryLayer::builder()
        .backoff(Backoff::decorrelated(Duration::ZERO))
        .build()
        .unwrap_err();
    assert!(matches!(err, InvalidRetry::Backoff(_)), "{err}");
    let err = RetryLayer::builder()
        .budget(RetryBudget::throttle(10, 2.0))
        .build()
        .unwrap_err();
    assert!(matches!(err, InvalidRetry::Budget(_)), "{err}");
    assert!(!err.to_string().is_empty());
}

/// Fails its one call; after that its clones are never ready again.
#[derive(Clone)]
struct BreaksAfterOneCall(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl tower::Service<u64> for BreaksAfterOneCall {
    type Response = u64;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u64, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        let calls = self.0.load(std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(if calls == 0 {
            Ok(())
        } else {
            Err("closed".into())
        })
    }

    fn call(&mut self, _: u64) -> Self::Future {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Err("the real failure".into()))
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_service_that_cannot_take_the_retry_yields_the_last_real_error() {
    let calls = std::sync::Arc::default();
    let layer = layer(3, Backoff::exponential(ms(10)));
    let handle = layer.handle();
    let err = layer
        .layer(BreaksAfterOneCall(std::sync::Arc::clone(&calls)))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "the real failure");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(handle.retries(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_waits_for_the_service_to_be_ready() {
    use tokio_test::{assert_pending, assert_ready_ok, task};
    let (mock, mut handle) = tower_test::mock::pair::<u64, u64>();
    let layer = layer(3, Backoff::exponential(ms(10)));
    let mut svc = task::spawn(layer.layer(mock));

    handle.allow(1);
    assert_ready_ok!(svc.enter(|cx, mut s| tower::Service::poll_ready(&mut *s, cx)));
    let mut fut = task::spawn(svc.enter(|_, mut s| tower::Service::call(&mut *s, 7)));
    assert_pending!(fut.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 7);
    send.send_error("connection reset");

    // Backing off.
    assert_pending!(fut.poll());
    time::advance(ms(10)).await;
    // The backoff is over, but the service admits nothing yet: the retry waits, holding
    // no request in flight.
    assert_pending!(fut.poll());
    handle.allow(1);
    assert!(fut.is_woken(), "readiness wakes the retry");
    assert_pending!(fut.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 7, "the copy is sent");
    send.send_response(9);
    assert_eq!(assert_ready_ok!(fut.poll()), 9);
}
