//! The hot paths allocate nothing (the rejection allocates only its boxed error).

use std::future::{ready, Future};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use palisade_breaker::{CircuitBreakerLayer, FailureModel};
use palisade_core::BoxError;
use tower::{Layer, Service};

fn call_once<S: Service<bool>>(svc: &mut S, req: bool) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("pending"),
    }
}

fn service() -> (
    impl Service<bool, Response = (), Error = BoxError>,
    palisade_breaker::BreakerHandle,
) {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(100))
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let inner = tower::service_fn(|fail: bool| {
        ready(if fail {
            Err::<(), BoxError>(BoxError::from("x"))
        } else {
            Ok(())
        })
    });
    (layer.layer(inner), handle)
}

#[test]
fn closed_path_allocates_nothing() {
    let (mut svc, _h) = service();
    call_once(&mut svc, false).unwrap();
    let allocs = allocation_counter::measure(|| {
        for _ in 0..1000 {
            call_once(&mut svc, false).unwrap();
        }
    });
    assert_eq!(allocs.count_total, 0);
}

#[test]
fn rejection_allocates_only_its_error() {
    let (mut svc, handle) = service();
    handle.force_open();
    let allocs = allocation_counter::measure(|| {
        for _ in 0..1000 {
            assert!(call_once(&mut svc, false).is_err());
        }
    });
    // One Box<CircuitOpen> per rejection: the BoxError itself.
    assert_eq!(allocs.count_total, 1000);
}
