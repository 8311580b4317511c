//! What an uncontended keyed call allocates: nothing once the layer has warmed up (its
//! entry lives in the table, and the box its inner future is pinned in is reused from the
//! last call); an unkeyed call allocates nothing.

use std::future::{ready, Future};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use palisade_coalesce::CoalesceLayer;
use palisade_core::BoxError;
use tower::{service_fn, Layer, Service};

fn call<S: Service<u64, Response = u64, Error = BoxError>>(svc: &mut S, i: u64) {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let fut = pin!(svc.call(i));
    assert!(matches!(fut.poll(&mut cx), Poll::Ready(Ok(n)) if n == i));
}

#[test]
fn an_uncontended_keyed_call_allocates_nothing_once_warm() {
    let layer = CoalesceLayer::builder(|k: &u64| k.is_multiple_of(2).then_some(*k))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|r: u64| ready(Ok::<_, BoxError>(r))));
    // Warm up: the map's table is allocated once and then reused.
    for i in 0..64 {
        call(&mut svc, i);
    }
    let keyed = allocation_counter::measure(|| {
        for i in 0..100 {
            call(&mut svc, i * 2);
        }
    });
    assert_eq!(
        keyed.count_total, 0,
        "a keyed call with no duplicate in flight reuses its table slot and call box"
    );
    let unkeyed = allocation_counter::measure(|| {
        for i in 0..100 {
            call(&mut svc, i * 2 + 1);
        }
    });
    assert_eq!(unkeyed.count_total, 0);
    assert_eq!(handle.keys_in_flight(), 0);
}
