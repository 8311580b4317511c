//! A hedge that does not fire allocates nothing per call.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use palisade_core::BoxError;
use palisade_fanout::hedge::{CloneAll, HedgeDelay, HedgeLayer};
use tower::{Layer, Service};

use crate::support::ms;

/// Pending on the first poll (waking itself), ready on the second: a primary that takes
/// "a while" but wins before the hedge delay.
struct YieldOnce(Option<u64>, bool);

impl Future for YieldOnce {
    type Output = Result<u64, BoxError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.1 {
            Poll::Ready(Ok(self.0.take().unwrap()))
        } else {
            self.1 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn one_call<S: Service<u64, Response = u64>>(svc: &mut S, pending_polls: usize) {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = pin!(svc.call(3));
    for _ in 0..pending_polls {
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(3))));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn ready_primary_allocates_nothing() {
    let rt = runtime();
    let _enter = rt.enter();
    for delay in [
        HedgeDelay::fixed(ms(50)),
        HedgeDelay::percentile(0.95).min_samples(1),
    ] {
        let layer = HedgeLayer::builder(delay)
            .policy(CloneAll)
            .budget(0.05, 10)
            .build()
            .unwrap();
        let mut svc = layer.layer(tower::service_fn(|r: u64| {
            std::future::ready(Ok::<_, BoxError>(r))
        }));
        for _ in 0..100 {
            one_call(&mut svc, 0);
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..1000 {
                one_call(&mut svc, 0);
            }
        });
        assert_eq!(info.count_total, 0, "{delay:?}");
        assert!(
            layer.handle().delay().is_some(),
            "the percentile window is warm"
        );
    }
}

#[test]
fn pending_primary_that_wins_before_the_delay_allocates_nothing() {
    let rt = runtime();
    let _enter = rt.enter();
    let layer = HedgeLayer::builder(HedgeDelay::fixed(ms(50)))
        .policy(CloneAll)
        .unlimited()
        .build()
        .unwrap();
    // The timer is armed on the first `Pending`; it must not allocate either.
    let mut svc = layer.layer(tower::service_fn(|r: u64| YieldOnce(Some(r), false)));
    for _ in 0..100 {
        one_call(&mut svc, 1);
    }
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            one_call(&mut svc, 1);
        }
    });
    assert_eq!(info.count_total, 0);
    assert_eq!(layer.handle().hedges(), 0);
}
