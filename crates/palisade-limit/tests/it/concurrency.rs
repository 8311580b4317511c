use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{BoxError, Deadline, Overloaded, WithDeadline};
use palisade_limit::{ConcurrencyLimitLayer, InvalidConcurrencyLimit, OnFull};
use tokio::time;
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_test::mock;

type Req = &'static str;

fn is_overloaded(e: &BoxError) -> bool {
    e.downcast_ref::<Overloaded>().is_some()
}

// --- release paths -------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn permit_released_on_completion() {
    let layer = ConcurrencyLimitLayer::new(1);
    let handle = layer.handle();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("a");
    // The one permit is held by the call in flight.
    assert_eq!(handle.in_flight(), 1);
    assert_pending!(svc.poll_ready());

    let (_, send) = upstream.next_request().await.unwrap();
    send.send_response("A");
    assert_eq!(fut.await.unwrap(), "A");
    // The permit went straight to the service waiting in poll_ready: still 1 held.
    assert_eq!(handle.in_flight(), 1);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(handle.queued(), 0);
    drop(svc);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn permit_released_on_error() {
    let layer = ConcurrencyLimitLayer::new(1);
    let handle = layer.handle();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("a");
    let (_, send) = upstream.next_request().await.unwrap();
    send.send_error("boom");
    assert_eq!(fut.await.unwrap_err().to_string(), "boom");
    assert_eq!(handle.in_flight(), 0);
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(flavor = "current_thread")]
async fn permit_released_when_future_dropped() {
    let layer = ConcurrencyLimitLayer::new(1);
    let handle = layer.handle();
    let (mut svc, _upstream) = mock::spawn_layer::<Req, Req, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("a");
    assert_pending!(svc.poll_ready());
    drop(fut);
    // Handed to the waiting service, which now holds it as its reservation.
    assert_eq!(handle.in_flight(), 1);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
    drop(svc);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn permit_released_when_service_dropped_with_reservation() {
    let layer = ConcurrencyLimitLayer::new(1);
    let handle = layer.handle();
    let (mut svc1, _upstream) = mock::spawn_layer::<Req, Req, _>(layer.clone());
    let (mut svc2, _upstream2) = mock::spawn_layer::<Req, Req, _>(layer);

    // svc1 reserves the only permit in poll_ready, then is dropped without calling.
    assert_ready_ok!(svc1.poll_ready());
    assert_eq!(handle.available(), 0);
    assert_pending!(svc2.poll_ready());
    drop(svc1);
    assert!(svc2.is_woken());
    assert_ready_ok!(svc2.poll_ready());
}

// --- sharing ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn limit_shared_by_clones_and_layer_calls() {
    let layer = ConcurrencyLimitLayer::new(2);
    let handle = layer.handle();
    let (inner, mut upstream) = mock::pair::<Req, Req>();
    upstream.allow(10);

    // Two services from two `layer()` calls of one layer value, and a clone of one.
    let mut a = layer.layer(inner.clone());
    let mut b = layer.layer(inner);
    let mut c = a.clone();

    let fa = a.ready().await.unwrap().call("a");
    let fb = b.ready().await.unwrap().call("b");
    assert_eq!(handle.in_flight(), 2);

    // The third caller, through a clone, finds the shared limit full.
    let mut c_ready = task::spawn(c.ready());
    assert_pending!(c_ready.poll());

    drop(fa);
    assert!(c_ready.is_woken());
    assert_ready_ok!(c_ready.poll());
    drop(c_ready);
    drop(fb);
}

#[tokio::test(flavor = "current_thread")]
async fn clone_does_not_inherit_reservation() {
    let layer = ConcurrencyLimitLayer::new(1);
    let handle = layer.handle();
    let (inner, mut upstream) = mock::pair::<Req, Req>();
    upstream.allow(10);
    let mut svc = layer.layer(inner);
    svc.ready().await.unwrap();
    assert_eq!(handle.available(), 0);

    // The clone holds no permit: it must wait, and calling it unready panics.
    let mut clone = svc.clone();
    let mut ready = task::spawn(clone.ready());
    assert_pending!(ready.poll());
    drop(ready);
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(clone.call("x"));
    }));
    assert!(called.is_err(), "call without poll_ready must panic");
}

// --- waiting: FIFO, stalled inner ------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn waiters_are_served_in_order() {
    let layer = ConcurrencyLimitLayer::new(1);
    let handle = layer.handle();
    let (inner, mut upstream) = mock::pair::<Req, Req>();
    upstream.allow(100);

    let mut holder = layer.layer(inner.clone());
    let held = holder.ready().await.unwrap().call("held");

    let mut svcs: Vec<_> = (0..3).map(|_| layer.layer(inner.clone())).collect();
    let mut readies: Vec<_> = svcs.iter_mut().map(|s| task::spawn(s.ready())).collect();
    for r in &mut readies {
        assert_pending!(r.poll());
    }
    assert_eq!(handle.queued(), 3);

    // Each release admits exactly the next waiter in arrival order.
    drop(held);
    assert!(readies[0].is_woken());
    assert!(!readies[1].is_woken() && !readies[2].is_woken());
    let first = assert_ready_ok!(readies[0].poll());
    let f0 = first.call("0");
    assert_pending!(readies[1].poll());
    drop(f0);
    assert!(readies[1].is_woken());
    assert_ready_ok!(readies[1].poll());
    assert_pending!(readies[2].poll());
    assert_eq!(handle.queued(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn stalled_inner_does_not_pin_capacity() {
    let layer = ConcurrencyLimitLayer::new(1);
    let handle = layer.handle();
    let (mut stalled, mut stalled_upstream) = mock::spawn_layer::<Req, Req, _>(layer.clone());
    let (mut healthy, mut healthy_upstream) = mock::spawn_layer::<Req, Req, _>(layer);
    stalled_upstream.allow(0);
    healthy_upstream.allow(1);

    // The stalled service's inner is not ready: it must not keep the permit.
    assert_pending!(stalled.poll_ready());
    assert_eq!(handle.available(), 1);
    assert_ready_ok!(healthy.poll_ready());
}

// --- queue mode ------------------------------------------------------------------------

fn queue_layer(limit: usize, max_queued: usize, max_wait: Duration) -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::builder(limit)
        .queue(max_queued, max_wait)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_is_bounded() {
    let layer = queue_layer(1, 2, Duration::from_secs(1));
    let handle = layer.handle();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);
    upstream.allow(100);

    assert_ready_ok!(svc.poll_ready());
    let _running = svc.call("running");
    assert_ready_ok!(svc.poll_ready());
    let mut q1 = task::spawn(svc.call("q1"));
    assert_ready_ok!(svc.poll_ready());
    let mut q2 = task::spawn(svc.call("q2"));
    assert_pending!(q1.poll());
    assert_pending!(q2.poll());
    assert_eq!(handle.queued(), 2);

    // The queue is full: the next call fails at once, without waiting.
    assert_ready_ok!(svc.poll_ready());
    let mut q3 = task::spawn(svc.call("q3"));
    let err = assert_ready_err!(q3.poll());
    assert!(is_overloaded(&err));
    assert_eq!(handle.queued(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_wait_is_bounded_by_max_wait() {
    let layer = queue_layer(1, 10, Duration::from_millis(100));
    let handle = layer.handle();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);
    upstream.allow(100);

    assert_ready_ok!(svc.poll_ready());
    let _running = svc.call("running");
    assert_ready_ok!(svc.poll_ready());
    let mut queued = task::spawn(svc.call("queued"));
    assert_pending!(queued.poll());

    time::advance(Duration::from_millis(99)).await;
    assert_pending!(queued.poll());
    time::advance(Duration::from_millis(1)).await;
    let err = assert_ready_err!(queued.poll());
    assert!(is_overloaded(&err));
    assert_eq!(handle.queued(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queued_call_runs_when_a_permit_frees() {
    let layer = queue_layer(1, 10, Duration::from_secs(1));
    let handle = layer.handle();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);
    upstream.allow(100);

    assert_ready_ok!(svc.poll_ready());
    let running = svc.call("running");
    assert_ready_ok!(svc.poll_ready());
    let mut queued = task::spawn(svc.call("queued"));
    assert_pending!(queued.poll());

    drop(running);
    let (_running_req, _) = upstream.next_request().await.unwrap();
    assert!(queued.is_woken());
    assert_pending!(queued.poll()); // admitted: now calling the inner service
    assert_eq!(handle.in_flight(), 1);
    let (req, send) = upstream.next_request().await.unwrap();
    assert_eq!(req, "queued");
    send.send_response("done");
    assert_eq!(assert_ready_ok!(queued.poll()), "done");
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_wait_never_exceeds_the_deadline() {
    let layer = queue_layer(1, 10, Duration::from_secs(10));
    let (mut svc, mut upstream) = mock::spawn_layer::<WithDeadline<Req>, Req, _>(layer);
    upstream.allow(100);

    assert_ready_ok!(svc.poll_ready());
    let _running = svc.call(WithDeadline::new("running"));

    // A request with 30 ms left waits 30 ms, not the queue's 10 s.
    let req = WithDeadline::until("queued", Deadline::after(Duration::from_millis(30)));
    assert_ready_ok!(svc.poll_ready());
    let mut queued = task::spawn(svc.call(req));
    assert_pending!(queued.poll());
    time::advance(Duration::from_millis(29)).await;
    assert_pending!(queued.poll());
    time::advance(Duration::from_millis(1)).await;
    assert!(is_overloaded(&assert_ready_err!(queued.poll())));

    // A request whose deadline has passed is rejected without queueing.
    let expired = WithDeadline::until("late", Deadline::after(Duration::ZERO));
    assert_ready_ok!(svc.poll_ready());
    let mut late = task::spawn(svc.call(expired));
    assert!(is_overloaded(&assert_ready_err!(late.poll())));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_queued_future_leaves_the_queue() {
    let layer = queue_layer(1, 1, Duration::from_secs(1));
    let handle = layer.handle();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);
    upstream.allow(100);

    assert_ready_ok!(svc.poll_ready());
    let running = svc.call("running");
    assert_ready_ok!(svc.poll_ready());
    let mut queued = task::spawn(svc.call("queued"));
    assert_pending!(queued.poll());
    assert_eq!(handle.queued(), 1);
    drop(queued);
    assert_eq!(handle.queued(), 0);
    // The freed permit is not lost to the cancelled waiter.
    drop(running);
    assert_eq!(handle.available(), 1);
    assert_eq!(handle.in_flight(), 0);
}

// --- reject mode -----------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn reject_mode_sheds_at_once() {
    let layer = ConcurrencyLimitLayer::builder(2)
        .on_full(OnFull::Reject)
        .build()
        .unwrap();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);
    upstream.allow(100);

    assert_ready_ok!(svc.poll_ready());
    let a = svc.call("a");
    assert_ready_ok!(svc.poll_ready());
    let _b = svc.call("b");
    // Always ready; the third call fails in the future, with no retry hint.
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("c").await.unwrap_err();
    let overloaded = err.downcast_ref::<Overloaded>().unwrap();
    assert_eq!(overloaded.retry_after(), None);
    drop(a);
    assert_ready_ok!(svc.poll_ready());
    let mut d = task::spawn(svc.call("d"));
    assert_pending!(d.poll()); // admitted, waiting on the upstream
}

// --- resizing --------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn resize_up_admits_waiters() {
    let layer = ConcurrencyLimitLayer::new(1);
    let handle = layer.handle();
    let (inner, mut upstream) = mock::pair::<Req, Req>();
    upstream.allow(100);

    let mut a = layer.layer(inner.clone());
    let _fa = a.ready().await.unwrap().call("a");
    let mut b = layer.layer(inner.clone());
    let mut c = layer.layer(inner);
    let mut rb = task::spawn(b.ready());
    let mut rc = task::spawn(c.ready());
    assert_pending!(rb.poll());
    assert_pending!(rc.poll());

    handle.set_limit(3).unwrap();
    assert!(rb.is_woken() && rc.is_woken());
    assert_ready_ok!(rb.poll());
    assert_ready_ok!(rc.poll());
    assert_eq!(handle.limit(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn resize_down_under_load_retires_permits_as_they_return() {
    let layer = ConcurrencyLimitLayer::builder(4).reject().build().unwrap();
    let handle = layer.handle();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);
    upstream.allow(100);

    let mut calls = Vec::new();
    for _ in 0..4 {
        assert_ready_ok!(svc.poll_ready());
        calls.push(svc.call("x"));
    }
    assert_eq!(handle.in_flight(), 4);

    // Shrink to 1 with 4 in flight: nothing is revoked, nothing new is admitted.
    handle.set_limit(1).unwrap();
    assert_eq!(handle.limit(), 1);
    assert_eq!(handle.in_flight(), 4);
    assert_ready_ok!(svc.poll_ready());
    assert!(is_overloaded(&svc.call("y").await.unwrap_err()));

    // Three returns pay the debt; only the fourth frees a permit.
    for _ in 0..3 {
        drop(calls.pop());
        assert_eq!(handle.available(), 0);
    }
    assert_ready_ok!(svc.poll_ready());
    assert!(is_overloaded(&svc.call("z").await.unwrap_err()));
    drop(calls.pop());
    assert_eq!(handle.available(), 1);
    assert_eq!(handle.in_flight(), 0);

    // Growing back after a shrink restores exactly the new limit.
    handle.set_limit(3).unwrap();
    assert_eq!(handle.available(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn regrow_before_returns_cancels_debt() {
    let layer = ConcurrencyLimitLayer::builder(4).reject().build().unwrap();
    let handle = layer.handle();
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, Req, _>(layer);
    upstream.allow(100);
    let mut calls = Vec::new();
    for _ in 0..4 {
        assert_ready_ok!(svc.poll_ready());
        calls.push(svc.call("x"));
    }
    handle.set_limit(2).unwrap(); // debt 2
    handle.set_limit(5).unwrap(); // pays the debt, adds 1
    assert_eq!(handle.available(), 1);
    calls.clear();
    assert_eq!(handle.available(), 5);
    assert_eq!(handle.in_flight(), 0);
}

// --- configuration ---------------------------------------------------------------------

#[test]
fn invalid_config_is_a_typed_error() {
    assert_eq!(
        ConcurrencyLimitLayer::builder(0).build().unwrap_err(),
        InvalidConcurrencyLimit::ZeroLimit
    );
    assert!(matches!(
        ConcurrencyLimitLayer::builder(usize::MAX)
            .build()
            .unwrap_err(),
        InvalidConcurrencyLimit::TooLarge(_)
    ));
    assert_eq!(
        ConcurrencyLimitLayer::builder(1)
            .queue(0, Duration::from_secs(1))
            .build()
            .unwrap_err(),
        InvalidConcurrencyLimit::ZeroQueue
    );
    assert_eq!(
        ConcurrencyLimitLayer::builder(1)
            .queue(1, Duration::ZERO)
            .build()
            .unwrap_err(),
        InvalidConcurrencyLimit::ZeroWait
    );
    let handle = ConcurrencyLimitLayer::new(1).handle();
    assert_eq!(handle.set_limit(0), Err(InvalidConcurrencyLimit::ZeroLimit));
    assert_eq!(handle.limit(), 1);
}

// --- cost ------------------------------------------------------------------------------

/// The happy path (permit free, inner ready and immediate) allocates nothing per call, in
/// every mode.
#[test]
fn happy_path_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _enter = rt.enter();
    for on_full in [
        OnFull::Wait,
        OnFull::Reject,
        OnFull::Queue {
            max_queued: 8,
            max_wait: Duration::from_secs(1),
        },
    ] {
        let layer = ConcurrencyLimitLayer::builder(4)
            .on_full(on_full)
            .build()
            .unwrap();
        let mut svc = layer.layer(service_fn(|r: u64| {
            std::future::ready(Ok::<_, BoxError>(r))
        }));
        let mut cx = Context::from_waker(Waker::noop());
        let mut one_call = |i: u64| {
            assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            let fut = pin!(svc.call(i));
            match fut.poll(&mut cx) {
                Poll::Ready(Ok(n)) => assert_eq!(n, i),
                other => panic!("expected an immediate response, got {other:?}"),
            }
        };
        one_call(0); // warm-up: lazily initialised thread locals are not per call
        let info = allocation_counter::measure(|| {
            for i in 0..1_000 {
                one_call(i);
            }
        });
        assert_eq!(
            info.count_total, 0,
            "{on_full:?} allocated on the happy path"
        );
    }
}

/// A contended wait in wait mode allocates nothing: the service boxes its wait once, the
/// first time it waits, and reuses that allocation for every later wait.
#[test]
fn contended_waits_allocate_nothing_after_the_first() {
    let leaf = service_fn(|r: u64| std::future::ready(Ok::<_, BoxError>(r)));
    let layer = ConcurrencyLimitLayer::new(1);
    let mut holder = layer.layer(leaf);
    let mut waiter = layer.layer(leaf);
    let mut cx = Context::from_waker(Waker::noop());
    let mut one_wait = |i: u64| {
        // `holder` takes the only permit and keeps it in its unpolled response future...
        assert!(matches!(holder.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let held = holder.call(i);
        // ...so `waiter` waits in line,
        assert!(waiter.poll_ready(&mut cx).is_pending());
        assert!(waiter.poll_ready(&mut cx).is_pending(), "still waiting");
        // until the permit comes back and goes to it.
        drop(held);
        assert!(matches!(waiter.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let fut = pin!(waiter.call(i));
        assert!(matches!(fut.poll(&mut cx), Poll::Ready(Ok(n)) if n == i));
    };
    one_wait(0); // the first wait boxes the wait once
    let info = allocation_counter::measure(|| {
        for i in 1..=100 {
            one_wait(i);
        }
    });
    assert_eq!(
        info.count_total, 0,
        "100 contended waits allocated: {info:?}"
    );
}

#[test]
fn pending_wait_is_polled_to_readiness_by_the_task() {
    // Sanity: a waiter in poll_ready is woken, not spun.
    let layer = ConcurrencyLimitLayer::new(1);
    let (inner, mut upstream) = mock::pair::<Req, Req>();
    upstream.allow(10);
    let mut a = layer.layer(inner.clone());
    let mut b = layer.layer(inner);
    let mut ra = task::spawn(a.ready());
    assert_ready_ok!(ra.poll());
    drop(ra);
    let mut rb = task::spawn(b.ready());
    assert_pending!(rb.poll());
    assert!(!rb.is_woken());
    drop(a); // releases a's reservation
    assert!(rb.is_woken());
    assert_ready!(rb.poll()).unwrap();
}

// --- many threads ----------------------------------------------------------------------

/// Real threads hammer one limit in every mode while it is resized: in-flight calls never
/// exceed the largest limit set, no permit is lost (everything completes and the limit is
/// whole at the end), no waiter is stranded. Not time-dependent: the timeout only turns a
/// lost wake-up into a failure instead of a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_no_permit_lost_or_exceeded() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    for on_full in [
        OnFull::Wait,
        OnFull::Queue {
            max_queued: 1_000,
            max_wait: Duration::from_secs(3600),
        },
        OnFull::Reject,
    ] {
        let layer = ConcurrencyLimitLayer::builder(4)
            .on_full(on_full)
            .build()
            .unwrap();
        let handle = layer.handle();
        let current = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let inner = {
            let (current, peak) = (current.clone(), peak.clone());
            service_fn(move |_: u32| {
                let (current, peak) = (current.clone(), peak.clone());
                async move {
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    current.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, BoxError>(())
                }
            })
        };
        let svc = layer.layer(inner);
        let mut tasks = Vec::new();
        for t in 0..16 {
            let mut svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                let mut shed = 0;
                for i in 0..500u32 {
                    match svc.ready().await.unwrap().call(t * 1000 + i).await {
                        Ok(()) => {}
                        Err(e) if e.is::<Overloaded>() => shed += 1,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                shed
            }));
        }
        let resizer = {
            let handle = handle.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    handle.set_limit(1 + i % 6).unwrap();
                    tokio::task::yield_now().await;
                }
                handle.set_limit(4).unwrap();
            })
        };
        let all = async {
            resizer.await.unwrap();
            let mut shed = 0;
            for t in tasks {
                shed += t.await.unwrap();
            }
            shed
        };
        let shed = tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("a waiter was stranded");
        assert!(
            peak.load(Ordering::SeqCst) <= 6,
            "{on_full:?}: peak above the largest limit"
        );
        if on_full != OnFull::Reject {
            assert_eq!(shed, 0, "{on_full:?} must not shed");
        }
        // Every permit came back: the whole limit is free again.
        drop(svc);
        assert_eq!(handle.in_flight(), 0, "{on_full:?}");
        assert_eq!(handle.available(), 4, "{on_full:?}");
        assert_eq!(handle.queued(), 0, "{on_full:?}");
    }
}

/// Permits taken on several threads (so from several of the limit's per-core stripes, or
/// stolen across them) and given back on others: resizing in between keeps the total
/// exact, shrinking retires free permits from every stripe, and growing adds them back.
#[test]
fn resizing_across_threads_keeps_the_total() {
    let layer = ConcurrencyLimitLayer::builder(8)
        .on_full(OnFull::Reject)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|r: u64| {
        std::future::ready(Ok::<_, BoxError>(r))
    }));
    // Four threads take two permits each and hand their (unpolled) futures back.
    let held: Vec<_> = std::thread::scope(|scope| {
        let takers: Vec<_> = (0..4)
            .map(|t| {
                let mut svc = svc.clone();
                scope.spawn(move || {
                    let mut cx = Context::from_waker(Waker::noop());
                    (0..2)
                        .map(|i| {
                            assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
                            svc.call(t * 10 + i)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        takers.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    assert_eq!((handle.in_flight(), handle.available()), (8, 0));
    // Full: no thread gets a ninth, whichever stripe it asks first.
    let mut extra = svc.clone();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(extra.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut refused = pin!(extra.call(99));
    assert!(matches!(refused.as_mut().poll(&mut cx), Poll::Ready(Err(ref e)) if is_overloaded(e)));
    // Shrink while everything is out, then give the permits back on other threads.
    handle.set_limit(3).unwrap();
    std::thread::scope(|scope| {
        let mut held = held;
        while !held.is_empty() {
            let batch: Vec<_> = held.drain(..held.len().min(3)).collect();
            scope.spawn(move || drop(batch));
        }
    });
    assert_eq!((handle.in_flight(), handle.available()), (0, 3));
    handle.set_limit(10).unwrap();
    assert_eq!(handle.available(), 10);
    handle.set_limit(1).unwrap();
    assert_eq!(
        handle.available(),
        1,
        "a shrink retires free permits from every stripe"
    );
}
