use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use palisade_core::{BoxError, CircuitOpen, DeadlineExceeded, Outcome, Overloaded};
use palisade_fallback::{
    from_fn, service, service_with, value, FallbackFailed, FallbackLayer, InvalidFallback,
    NoStaleEntry, Reason, RejectionKind, StaleCache,
};
use tower::{service_fn, Layer, ServiceExt};

/// An error wrapping another, as a retry or buffer layer would.
#[derive(Debug)]
struct Wrapped(BoxError);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wrapped: {}", self.0)
    }
}

impl Error for Wrapped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// A service failing every call with `make()`.
fn failing(
    make: fn() -> BoxError,
) -> impl tower::Service<
    u32,
    Response = u32,
    Error = BoxError,
    Future = std::future::Ready<Result<u32, BoxError>>,
> + Clone {
    service_fn(move |_: u32| std::future::ready(Err(make())))
}

#[tokio::test]
async fn any_error_triggers_by_default() {
    let layer = FallbackLayer::builder(value(7u32)).build().unwrap();
    let handle = layer.handle();
    let io = || -> BoxError { Box::new(std::io::Error::other("reset")) };
    assert_eq!(layer.layer(failing(io)).oneshot(1).await.unwrap(), 7);
    assert_eq!(
        (handle.triggered(), handle.served(), handle.failed()),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn a_success_passes_untouched() {
    let layer = FallbackLayer::builder(value(7u32)).build().unwrap();
    let handle = layer.handle();
    let ok = service_fn(|n: u32| async move { Ok::<_, BoxError>(n) });
    assert_eq!(layer.layer(ok).oneshot(3).await.unwrap(), 3);
    assert_eq!(handle.triggered(), 0);
}

#[tokio::test]
async fn selected_rejections_trigger_even_wrapped_and_others_do_not() {
    let layer = FallbackLayer::builder(value(0u32))
        .on_rejections(&[
            RejectionKind::CircuitOpen,
            RejectionKind::Overloaded,
            RejectionKind::DeadlineExceeded,
        ])
        .build()
        .unwrap();
    let handle = layer.handle();
    let cases: [fn() -> BoxError; 3] = [
        || Box::new(CircuitOpen::new()),
        || Box::new(Overloaded::new()),
        || Box::new(Wrapped(Box::new(DeadlineExceeded::new()))),
    ];
    for make in cases {
        assert_eq!(layer.layer(failing(make)).oneshot(1).await.unwrap(), 0);
    }
    assert_eq!(handle.served(), 3);

    // Not selected: the error goes through as it is.
    let rate_limited = || -> BoxError { Box::new(palisade_core::RateLimited::new()) };
    let err = layer
        .layer(failing(rate_limited))
        .oneshot(1)
        .await
        .unwrap_err();
    assert!(err.is::<palisade_core::RateLimited>());
    let io = || -> BoxError { Box::new(std::io::Error::other("reset")) };
    assert!(layer
        .layer(failing(io))
        .oneshot(1)
        .await
        .unwrap_err()
        .is::<std::io::Error>());
    assert_eq!(handle.triggered(), 3);
}

#[tokio::test]
async fn a_classified_failure_triggers_with_the_response_in_hand() {
    // Responses over 100 are failures (as an HTTP 503 is with core's HttpClassifier).
    let classify = |r: &Result<u32, BoxError>| match r {
        Ok(n) if *n > 100 => Outcome::failure(),
        Ok(_) => Outcome::success(),
        Err(e) => Outcome::from_error(e.as_ref()),
    };
    let layer = FallbackLayer::builder(from_fn(|failure: &palisade_fallback::Failure<u32>| {
        assert_eq!(failure.reason(), Reason::Classified);
        Ok(failure.response().copied().unwrap_or(0) / 100)
    }))
    .on_rejections(&[RejectionKind::Overloaded])
    .classify(classify)
    .build()
    .unwrap();
    let echo = service_fn(|n: u32| async move { Ok::<_, BoxError>(n) });
    assert_eq!(layer.layer(echo).oneshot(50).await.unwrap(), 50);
    assert_eq!(layer.layer(echo).oneshot(500).await.unwrap(), 5);
    assert_eq!(layer.handle().served(), 1);
}

#[tokio::test]
async fn a_closure_of_the_error_answers() {
    let layer = FallbackLayer::builder(from_fn(|failure: &palisade_fallback::Failure<u32>| {
        let err = failure.error().expect("an error");
        Ok(u32::try_from(err.to_string().len()).unwrap_or(0))
    }))
    .build()
    .unwrap();
    let io = || -> BoxError { Box::new(std::io::Error::other("12345")) };
    assert_eq!(layer.layer(failing(io)).oneshot(1).await.unwrap(), 5);
}

#[tokio::test]
async fn another_service_answers_with_the_request() {
    let degraded = service_fn(|n: u32| async move { Ok::<_, BoxError>(n + 1_000) });
    let layer = FallbackLayer::builder(service(degraded)).build().unwrap();
    let io = || -> BoxError { Box::new(std::io::Error::other("down")) };
    assert_eq!(layer.layer(failing(io)).oneshot(5).await.unwrap(), 1_005);

    // A request that is not Clone: save what the fallback needs.
    struct NotClone(u32);
    let degraded = service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) });
    let layer = FallbackLayer::builder(service_with(degraded, |r: &NotClone| r.0))
        .build()
        .unwrap();
    let down = service_fn(|_: NotClone| async { Err::<u32, BoxError>("down".into()) });
    assert_eq!(layer.layer(down).oneshot(NotClone(21)).await.unwrap(), 42);
}

#[tokio::test]
async fn the_fallbacks_own_failure_is_reported_with_the_original() {
    let broken = service_fn(|_: u32| async { Err::<u32, BoxError>("cache down too".into()) });
    let layer = FallbackLayer::builder(service(broken)).build().unwrap();
    let handle = layer.handle();
    let overloaded = || -> BoxError { Box::new(Overloaded::new()) };
    let err = layer
        .layer(failing(overloaded))
        .oneshot(1)
        .await
        .unwrap_err();
    let failed = err.downcast_ref::<FallbackFailed>().expect("reported");
    assert_eq!(failed.fallback_error().to_string(), "cache down too");
    assert!(failed.original().unwrap().is::<Overloaded>());
    assert_eq!(err.source().unwrap().to_string(), "cache down too");
    assert_eq!(
        (handle.triggered(), handle.served(), handle.failed()),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn a_stale_cache_serves_the_last_good_answer() {
    let healthy = Arc::new(AtomicUsize::new(1));
    let h = Arc::clone(&healthy);
    let inner = service_fn(move |n: u32| {
        let up = h.load(SeqCst) == 1;
        async move {
            if up {
                Ok::<_, BoxError>(format!("fresh {n}"))
            } else {
                Err("down".into())
            }
        }
    });
    let layer = FallbackLayer::builder(StaleCache::new(16, |n: &u32| Some(*n)))
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "fresh 1");
    healthy.store(0, SeqCst);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "fresh 1", "stale");
    let err = svc.clone().oneshot(2).await.unwrap_err();
    let failed = err.downcast_ref::<FallbackFailed>().unwrap();
    assert!(failed.fallback_error().is::<NoStaleEntry>());
}

#[test]
fn no_trigger_is_a_typed_error() {
    let err = FallbackLayer::builder(value(1u32))
        .on_rejections(&[])
        .build()
        .unwrap_err();
    assert_eq!(err, InvalidFallback::NoTrigger);
}
