//! A call that needs no retry allocates nothing.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use palisade_core::BoxError;
use palisade_retry::{CloneAll, RetryBudget, RetryLayer};
use tower::{Layer, Service};

fn one_call<S: Service<u64, Response = u64>>(svc: &mut S) {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = pin!(svc.call(3));
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(3))));
}

#[test]
fn no_retry_path_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _enter = rt.enter();
    for budget in [
        RetryBudget::default(),
        RetryBudget::throttle(10, 0.1),
        RetryBudget::unlimited(),
    ] {
        let layer = RetryLayer::builder()
            .budget(budget)
            .policy(CloneAll)
            .build()
            .unwrap();
        let mut svc = layer.layer(tower::service_fn(|r: u64| {
            std::future::ready(Ok::<_, BoxError>(r))
        }));
        for _ in 0..100 {
            one_call(&mut svc);
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..1000 {
                one_call(&mut svc);
            }
        });
        assert_eq!(info.count_total, 0, "{budget:?}");
        assert_eq!(layer.handle().retries(), 0);
    }
}
