//! Fallback stacked over a real circuit breaker.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::{CircuitBreakerLayer, FailureModel, State};
use palisade_core::BoxError;
use palisade_fallback::{value, FallbackLayer, RejectionKind};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_open_breaker_is_answered_by_the_fallback_without_calling_the_inner() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let inner = service_fn(move |_: u32| {
        c.fetch_add(1, SeqCst);
        async { Err::<&str, BoxError>(Box::new(std::io::Error::other("reset"))) }
    });
    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::Consecutive { failures: 3 })
        .open_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let fallback = FallbackLayer::builder(value("degraded"))
        .on_rejections(&[RejectionKind::CircuitOpen])
        .build()
        .unwrap();
    let fallback_handle = fallback.handle();
    let svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(breaker)
        .service(inner);

    // Three real failures reach the caller (not selected) and trip the breaker.
    for _ in 0..3 {
        assert!(svc.clone().oneshot(1).await.is_err());
    }
    assert_eq!(breaker_handle.state(), State::Open);
    assert_eq!(calls.load(SeqCst), 3);

    // Open: the fallback answers and the inner service is not called.
    for _ in 0..5 {
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), "degraded");
    }
    assert_eq!(calls.load(SeqCst), 3);
    assert_eq!(fallback_handle.served(), 5);

    // Forced open by an operator: the same.
    breaker_handle.force_open();
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "degraded");
    assert_eq!(calls.load(SeqCst), 3);
}
