//! Budget exhaustion and recovery through the service, shared by clones.

use std::time::Duration;

use palisade_retry::{Backoff, CloneAll, Jitter, RetryBudget, RetryLayer};
use tokio::time;
use tower::{Layer, ServiceExt};

use crate::support::{ms, Backend};

fn layer(budget: RetryBudget) -> RetryLayer<CloneAll> {
    RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::exponential(ms(10)))
        .jitter(Jitter::none())
        .budget(budget)
        .policy(CloneAll)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ttl_budget_exhausts_and_recovers_across_clones() {
    let backend = Backend::<u64, u64>::new(|_| (Duration::ZERO, Err("refused".into())));
    // One retry per second of reserve, nothing from traffic.
    let layer = layer(RetryBudget::ttl(Duration::from_secs(1), 1, 0.0));
    let handle = layer.handle();
    let a = layer.layer(backend.clone());
    let b = a.clone();
    let c = layer.layer(backend.clone());

    a.oneshot(1).await.unwrap_err();
    assert_eq!(backend.calls(), 2, "the first request retries");
    assert_eq!(handle.budget_available(), Some(0.0));
    // A clone and a second service of the same layer see the spent budget.
    let err = b.clone().oneshot(2).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "refused",
        "the real error, not a budget error"
    );
    c.clone().oneshot(3).await.unwrap_err();
    assert_eq!(backend.calls(), 4, "no retries while the budget is spent");
    assert_eq!(handle.budget_exhausted(), 2);
    assert_eq!(handle.retries(), 1);

    // After the ttl the withdrawal has expired: retries are allowed again.
    time::advance(Duration::from_millis(1200)).await;
    b.oneshot(4).await.unwrap_err();
    assert_eq!(backend.calls(), 6);
    assert_eq!(handle.retries(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ttl_budget_counts_a_refusal_at_retry_time() {
    // Reserve of one retry; two requests in flight both fail: only one may retry, the
    // other is refused when it asks (its copy was kept because the budget had room).
    let backend =
        Backend::<u64, u64>::new(|n| (if n < 2 { ms(50) } else { ms(0) }, Err("reset".into())));
    let layer = layer(RetryBudget::ttl(Duration::from_secs(1), 1, 0.0));
    let handle = layer.handle();
    let svc = layer.layer(backend.clone());
    let (x, y) = tokio::join!(svc.clone().oneshot(1), svc.oneshot(2));
    assert!(x.is_err() && y.is_err());
    assert_eq!(backend.calls(), 3);
    assert_eq!(handle.retries(), 1);
    assert_eq!(handle.budget_exhausted(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_throttle_exhausts_and_recovers_with_successes() {
    // Fail while `failing` is set.
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    let backend = Backend::<u64, u64>::new(move |_| {
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            (Duration::ZERO, Err("unavailable".into()))
        } else {
            (Duration::ZERO, Ok(1))
        }
    });
    // 4 tokens, retries allowed while > 2.
    let layer = layer(RetryBudget::throttle(4, 0.5));
    let handle = layer.handle();
    let svc = layer.layer(backend.clone());

    svc.clone().oneshot(1).await.unwrap_err(); // 4 -> 3, retry, -> 2
    assert_eq!(backend.calls(), 2);
    assert_eq!(handle.budget_available(), Some(2.0));
    svc.clone().oneshot(2).await.unwrap_err(); // throttled: 2 -> 1, no retry
    assert_eq!(backend.calls(), 3);
    assert_eq!(handle.budget_exhausted(), 1);

    // Successes refill at 0.5 a call: five bring 1 to 3.5, so that after the next
    // failure takes one, 2.5 is still above half.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        svc.clone().oneshot(3).await.unwrap();
    }
    assert_eq!(handle.budget_available(), Some(3.5));
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = backend.calls();
    svc.oneshot(4).await.unwrap_err();
    assert_eq!(backend.calls() - before, 2, "retrying again after recovery");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ttl_budget_is_earned_by_traffic() {
    // No reserve: only traffic pays for retries, half a retry per request.
    let backend = Backend::<u64, u64>::new(|n| {
        if n < 2 {
            (Duration::ZERO, Ok(1))
        } else {
            (Duration::ZERO, Err("refused".into()))
        }
    });
    let layer = layer(RetryBudget::ttl(Duration::from_secs(1), 0, 0.5));
    let handle = layer.handle();
    let svc = layer.layer(backend.clone());
    svc.clone().oneshot(1).await.unwrap();
    svc.clone().oneshot(2).await.unwrap();
    // Three requests paid for 1.5 retries; the third one's failure spends one.
    svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(backend.calls(), 4);
    assert_eq!(handle.retries(), 1);
    assert_eq!(handle.budget_available(), Some(0.5));
    // The fourth request's deposit brings it back to one retry ...
    svc.clone().oneshot(4).await.unwrap_err();
    assert_eq!(backend.calls(), 6);
    assert_eq!(handle.retries(), 2);
    // ... the fifth has only half a retry: sent once, the refusal counted.
    svc.oneshot(5).await.unwrap_err();
    assert_eq!(backend.calls(), 7);
    assert_eq!(handle.budget_exhausted(), 1);
}
