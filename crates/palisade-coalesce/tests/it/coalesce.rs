use std::task::Poll;
use std::time::Duration;

use palisade_coalesce::{CoalesceLayer, CoalescedError, InvalidCoalesce};
use palisade_core::{
    find_rejection, BoxError, Deadline, DeadlineExceeded, Rejection, WithDeadline,
};
use tokio_test::task::{self, Spawn};
use tower::{Layer, Service};

use crate::support::{Answer, Manual};

type Fut =
    Spawn<std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, BoxError>> + Send>>>;

/// Calls `svc` and boxes the future, so tests can keep many of them.
fn start<S, R>(svc: &mut S, req: R) -> Fut
where
    S: Service<R, Response = u64, Error = BoxError>,
    S::Future: Send + 'static,
{
    task::spawn(Box::pin(svc.call(req)))
}

fn ready(fut: &mut Fut) -> Result<u64, BoxError> {
    match fut.poll() {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("expected the call to be ready"),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_thousand_identical_requests_make_one_inner_call() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut futs: Vec<Fut> = (0..1_000).map(|_| start(&mut svc, 7u64)).collect();
    for f in &mut futs {
        assert!(f.poll().is_pending());
    }
    assert_eq!(inner.calls(), 1);
    assert_eq!(handle.waiters(&7), 1_000);
    assert_eq!((handle.led(), handle.joined()), (1, 999));

    inner.answer_all(42);
    for f in &mut futs {
        assert_eq!(ready(f).unwrap(), 42);
    }
    assert_eq!(inner.calls(), 1);
    assert_eq!(handle.keys_in_flight(), 0);
    assert_eq!(inner.live(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn mixed_keys_make_one_call_per_key() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut futs: Vec<(u64, Fut)> = (0..1_000u64)
        .map(|i| (i % 10, start(&mut svc, i % 10)))
        .collect();
    for (_, f) in &mut futs {
        assert!(f.poll().is_pending());
    }
    assert_eq!(inner.calls(), 10);
    assert_eq!(handle.keys_in_flight(), 10);
    assert!((0..10).all(|k| handle.waiters(&k) == 100));
    for k in 0..10 {
        assert!(inner.answer(k, Answer::Value(k * 100)));
    }
    for (k, f) in &mut futs {
        assert_eq!(ready(f).unwrap(), *k * 100);
    }
    assert_eq!(handle.keys_in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_leader_cancelled_still_serves_the_followers() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut leader = start(&mut svc, 1u64);
    assert!(leader.poll().is_pending());
    let mut followers: Vec<Fut> = (0..3).map(|_| start(&mut svc, 1u64)).collect();
    for f in &mut followers {
        assert!(f.poll().is_pending());
    }
    drop(leader);
    assert_eq!(handle.waiters(&1), 3);
    assert_eq!(inner.live(), 1, "the call survives its leader");

    inner.answer_all(5);
    // Any follower's poll drives the call now; all are woken.
    for f in &mut followers {
        assert!(f.is_woken());
        assert_eq!(ready(f).unwrap(), 5);
    }
    assert_eq!(inner.calls(), 1);
    assert_eq!(handle.keys_in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_waiter_dropped_drops_the_call_even_a_stalled_one() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut futs: Vec<Fut> = (0..4).map(|_| start(&mut svc, 3u64)).collect();
    for f in &mut futs {
        assert!(f.poll().is_pending());
    }
    assert_eq!(inner.live(), 1);
    // The inner future's channel holds the shared call's waker (an Arc back to it): the
    // call must still be dropped when its waiters are.
    futs.clear();
    assert_eq!(inner.live(), 0, "the inner future was dropped");
    assert_eq!(handle.keys_in_flight(), 0);

    // The next request for the key starts a new call.
    let mut again = start(&mut svc, 3u64);
    assert!(again.poll().is_pending());
    assert_eq!(inner.calls(), 2);
    // (The abandoned call's sender is still queued first: answer both.)
    inner.answer_all(9);
    assert_eq!(ready(&mut again).unwrap(), 9);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_error_reaches_every_waiter_and_keeps_its_rejection() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut futs: Vec<Fut> = (0..3).map(|_| start(&mut svc, 2u64)).collect();
    for f in &mut futs {
        assert!(f.poll().is_pending());
    }
    inner.answer(2, Answer::Fail);
    for f in &mut futs {
        let err = ready(f).unwrap_err();
        let coalesced = err.downcast_ref::<CoalescedError>().expect("shared error");
        assert!(coalesced.inner().unwrap().is::<palisade_core::Overloaded>());
        assert!(matches!(
            find_rejection(err.as_ref()),
            Some(Rejection::Overloaded(_))
        ));
    }
    assert_eq!(handle.keys_in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiter_out_of_time_leaves_without_cancelling_the_call() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|r: &WithDeadline<u64>| Some(r.request))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut patient = start(&mut svc, WithDeadline::new(4u64));
    let mut hasty = start(
        &mut svc,
        WithDeadline::until(4u64, Deadline::after(Duration::from_millis(100))),
    );
    assert!(patient.poll().is_pending());
    assert!(hasty.poll().is_pending());
    assert_eq!(handle.waiters(&4), 2);

    tokio::time::advance(Duration::from_millis(100)).await;
    let err = ready(&mut hasty).unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(handle.waiters(&4), 1);
    assert_eq!(inner.live(), 1, "the call goes on for the others");

    inner.answer(4, Answer::Value(1));
    assert_eq!(ready(&mut patient).unwrap(), 1);
    assert_eq!(handle.keys_in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn over_the_key_bound_requests_pass_through_uncoalesced() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k))
        .max_keys(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut futs: Vec<Fut> = [0u64, 1, 2, 2, 0]
        .iter()
        .map(|k| start(&mut svc, *k))
        .collect();
    for f in &mut futs {
        assert!(f.poll().is_pending());
    }
    // Keys 0 and 1 are in flight; both requests for key 2 call on their own.
    assert_eq!(inner.calls(), 4);
    assert_eq!(handle.keys_in_flight(), 2);
    assert_eq!(
        (handle.led(), handle.joined(), handle.bypassed()),
        (2, 1, 2)
    );
    inner.answer_all(0);
    for f in &mut futs {
        ready(f).unwrap();
    }
    assert_eq!(handle.keys_in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_without_a_key_are_never_coalesced() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|k: &u64| (*k != 0).then_some(*k))
        .build()
        .unwrap();
    let mut svc = layer.layer(inner.clone());
    let mut futs: Vec<Fut> = (0..3).map(|_| start(&mut svc, 0u64)).collect();
    for f in &mut futs {
        assert!(f.poll().is_pending());
    }
    assert_eq!(inner.calls(), 3);
    assert_eq!(layer.handle().keys_in_flight(), 0);
}

#[test]
fn zero_keys_is_a_typed_error() {
    let err = CoalesceLayer::builder(|k: &u64| Some(*k))
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(err, InvalidCoalesce::ZeroKeys);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_call_that_panics_fails_every_waiter_and_leaves_no_entry() {
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(|_: u64| async {
        tokio::task::yield_now().await;
        if true {
            panic!("inner call panicked");
        }
        Ok::<u64, BoxError>(0)
    }));
    let mut a = start(&mut svc, 1u64);
    let mut b = start(&mut svc, 1u64);
    assert!(a.poll().is_pending());
    // The second poll of the call panics, in whichever waiter makes it: here `a`.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.poll()));
    assert!(panicked.is_err());
    drop(a);
    let err = ready(&mut b).unwrap_err();
    assert!(err
        .downcast_ref::<CoalescedError>()
        .unwrap()
        .inner()
        .is_none());
    assert_eq!(handle.keys_in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refused_answer_goes_to_the_leader_and_followers_make_their_own_calls() {
    let inner = Manual::default();
    // Values of 100 or more are not shared (think: a body over a buffering cap).
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k))
        .share_if(|v: &u64| *v < 100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut leader = start(&mut svc, 1u64);
    assert!(leader.poll().is_pending());
    let mut followers: Vec<Fut> = (0..2).map(|_| start(&mut svc, 1u64)).collect();
    for f in &mut followers {
        assert!(f.poll().is_pending());
    }
    assert!(inner.answer(1, Answer::Value(500)));
    assert_eq!(ready(&mut leader).unwrap(), 500, "the leader's own answer");
    // The followers call on their own, with their own requests.
    for f in &mut followers {
        assert!(f.poll().is_pending());
    }
    assert_eq!(inner.calls(), 3);
    assert_eq!(handle.unshared(), 1);
    assert_eq!(handle.keys_in_flight(), 0, "own calls are not coalesced");
    inner.answer_all(7);
    for f in &mut followers {
        assert_eq!(ready(f).unwrap(), 7);
    }

    // A shareable answer is shared as usual.
    let mut futs: Vec<Fut> = (0..3).map(|_| start(&mut svc, 2u64)).collect();
    for f in &mut futs {
        assert!(f.poll().is_pending());
    }
    inner.answer_all(5);
    for f in &mut futs {
        assert_eq!(ready(f).unwrap(), 5);
    }
    assert_eq!(inner.calls(), 4);
    assert_eq!(inner.live(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refused_answer_without_its_leader_goes_to_the_waiter_that_drove_it() {
    let inner = Manual::default();
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k))
        .share_if(|v: &u64| *v < 100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner.clone());
    let mut leader = start(&mut svc, 1u64);
    assert!(leader.poll().is_pending());
    let mut a = start(&mut svc, 1u64);
    let mut b = start(&mut svc, 1u64);
    assert!(a.poll().is_pending() && b.poll().is_pending());
    drop(leader);
    assert!(inner.answer(1, Answer::Value(500)));
    assert_eq!(ready(&mut a).unwrap(), 500);
    assert!(b.poll().is_pending(), "b makes its own call");
    assert_eq!(inner.calls(), 2);
    inner.answer_all(8);
    assert_eq!(ready(&mut b).unwrap(), 8);
    assert_eq!((handle.keys_in_flight(), handle.unshared()), (0, 1));
    assert_eq!(inner.live(), 0);
}
