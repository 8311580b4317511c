use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, Deadline, Overloaded, WithDeadline};
use palisade_limit::concurrency::ByClass;
use palisade_limit::criticality::Criticality;
use palisade_limit::{ConcurrencyLimitLayer, InvalidConcurrencyLimit};
use tokio::time;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_test::mock;

type Req = WithDeadline<(Criticality, u32)>;

fn r(c: Criticality, i: u32) -> Req {
    WithDeadline::new((c, i))
}

type Classify = fn(&Req) -> Criticality;

fn layer(limit: usize, queue: usize) -> ConcurrencyLimitLayer<ByClass<Classify>> {
    ConcurrencyLimitLayer::builder(limit)
        .queue(queue, Duration::from_secs(1))
        .criticality((|r: &Req| r.request.0) as Classify)
        .build()
        .unwrap()
}

/// Under saturation (4 in flight, 4 queue places, each call 10 ms), a steady mix with many
/// sheddable requests: critical ones are never rejected, sheddable ones absorb every
/// rejection.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn critical_requests_keep_capacity_under_saturation() {
    let svc = layer(4, 4).layer(service_fn(|_: Req| async {
        time::sleep(Duration::from_millis(10)).await;
        Ok::<_, BoxError>(())
    }));
    let rejected = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let served = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    // 2,000 arrivals, one every 1 ms: 4× what 4 slots of 10 ms can take. 1 in 5 critical,
    // 1 in 5 default, the rest sheddable.
    let calls = (0..2_000u32).map(|i| {
        let class = match i % 5 {
            0 => Criticality::Critical,
            1 => Criticality::Default,
            _ => Criticality::Sheddable,
        };
        let (svc, rejected, served) = (svc.clone(), rejected.clone(), served.clone());
        async move {
            time::sleep(Duration::from_millis(u64::from(i))).await;
            match svc.oneshot(r(class, i)).await {
                Ok(()) => served[class as usize].fetch_add(1, Ordering::SeqCst),
                Err(e) => {
                    assert!(e.is::<Overloaded>());
                    rejected[class as usize].fetch_add(1, Ordering::SeqCst)
                }
            };
        }
    });
    futures_util::future::join_all(calls).await;
    let r = |c: Criticality| rejected[c as usize].load(Ordering::SeqCst);
    let s = |c: Criticality| served[c as usize].load(Ordering::SeqCst);
    assert_eq!(r(Criticality::Critical), 0, "critical requests were shed");
    assert_eq!(s(Criticality::Critical), 400);
    assert!(
        r(Criticality::Sheddable) > 900,
        "sheddable absorbed only {}",
        r(Criticality::Sheddable)
    );
    // Capacity is used: 2 s of 4 slots of 10 ms is about 800 calls.
    let total: usize = (0..3).map(|c| served[c].load(Ordering::SeqCst)).sum();
    assert!(total >= 780, "only {total} served: capacity wasted");
}

/// Work-conserving: with only sheddable traffic, every permit is used.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_capacity_is_never_held_back() {
    // A queue of 0 places is refused (as the concurrency limit refuses it): use 1.
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, (), _>(layer(3, 1));
    upstream.allow(10);
    let mut calls = Vec::new();
    for i in 0..3 {
        assert!(svc.poll_ready().is_ready());
        let mut f = task::spawn(svc.call(r(Criticality::Sheddable, i)));
        assert_pending!(f.poll());
        calls.push(f);
    }
    // All three permits went to sheddable requests: none was held back for a class
    // that was not asking. The next request waits in the one queue place.
    assert!(svc.poll_ready().is_ready());
    let mut fourth = task::spawn(svc.call(r(Criticality::Critical, 8)));
    assert_pending!(fourth.poll());
    assert!(svc.poll_ready().is_ready());
    let mut fifth = task::spawn(svc.call(r(Criticality::Critical, 9)));
    // Full, queue full of its own class: even a critical request is shed (nothing to evict).
    assert!(assert_ready_err!(fifth.poll()).is::<Overloaded>());
}

/// A freed permit goes to the highest criticality waiting, and a full queue evicts the
/// newest lower-criticality waiter to make room.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grants_by_criticality_and_evicts_lower_classes() {
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, (), _>(layer(1, 2));
    upstream.allow(100);
    assert!(svc.poll_ready().is_ready());
    let mut running = task::spawn(svc.call(r(Criticality::Default, 0)));
    assert_pending!(running.poll());

    let mut shed1 = task::spawn(svc.call(r(Criticality::Sheddable, 1)));
    let mut shed2 = task::spawn(svc.call(r(Criticality::Sheddable, 2)));
    assert_pending!(shed1.poll());
    assert_pending!(shed2.poll());
    // Queue full (2): a critical request evicts the newest sheddable waiter.
    let mut crit = task::spawn(svc.call(r(Criticality::Critical, 3)));
    assert_pending!(crit.poll());
    assert!(shed2.is_woken());
    assert!(assert_ready_err!(shed2.poll()).is::<Overloaded>());

    // The running call ends: the critical waiter, not the older sheddable one, gets in.
    let (_, send) = upstream.next_request().await.unwrap();
    send.send_response(());
    assert_ready_ok!(running.poll());
    assert!(crit.is_woken());
    assert_pending!(crit.poll());
    let (req, send) = upstream.next_request().await.unwrap();
    assert_eq!(req.request.1, 3);
    assert_pending!(shed1.poll());
    send.send_response(());
    assert_ready_ok!(crit.poll());
    // Then the sheddable one.
    assert!(shed1.is_woken());
    assert_pending!(shed1.poll());
    let (req, _send) = upstream.next_request().await.unwrap();
    assert_eq!(req.request.1, 1);
}

/// A waiter dropped after being granted a permit hands it on; the limit is whole again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_waiters_lose_nothing() {
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, (), _>(layer(1, 4));
    upstream.allow(100);
    assert!(svc.poll_ready().is_ready());
    let mut running = task::spawn(svc.call(r(Criticality::Default, 0)));
    assert_pending!(running.poll());
    let mut waiter = task::spawn(svc.call(r(Criticality::Default, 1)));
    assert_pending!(waiter.poll());
    let mut next = task::spawn(svc.call(r(Criticality::Default, 2)));
    assert_pending!(next.poll());
    drop(running); // grants the permit to `waiter`...
    drop(waiter); // ...which is dropped before using it: it must pass to `next`.
    assert!(next.is_woken());
    assert_pending!(next.poll());
    let (req, _) = upstream.next_request().await.unwrap();
    let (req2, _) = upstream.next_request().await.unwrap();
    assert_eq!((req.request.1, req2.request.1), (0, 2));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waits_at_most_max_wait() {
    let (mut svc, mut upstream) = mock::spawn_layer::<Req, (), _>(layer(1, 4));
    upstream.allow(100);
    assert!(svc.poll_ready().is_ready());
    let mut running = task::spawn(svc.call(r(Criticality::Critical, 0)));
    assert_pending!(running.poll());
    let mut waiter = task::spawn(svc.call(r(Criticality::Critical, 1)));
    assert_pending!(waiter.poll());
    time::advance(Duration::from_secs(1)).await;
    assert!(assert_ready_err!(waiter.poll()).is::<Overloaded>());
}

#[cfg(feature = "http")]
#[test]
fn header_parsing_and_config() {
    let f = palisade_limit::criticality::from_header::<()>(http::HeaderName::from_static(
        "x-criticality",
    ));
    let req = |v: &'static str| {
        http::Request::builder()
            .header("x-criticality", v)
            .body(())
            .unwrap()
    };
    assert_eq!(f(&req("CRITICAL")), Criticality::Critical);
    assert_eq!(f(&req("sheddable")), Criticality::Sheddable);
    assert_eq!(f(&req("root-please")), Criticality::Default);
    assert_eq!(f(&http::Request::new(())), Criticality::Default);
    assert!(matches!(
        ConcurrencyLimitLayer::builder(0)
            .queue(1, Duration::from_secs(1))
            .criticality(|_: &()| Criticality::Default)
            .build(),
        Err(palisade_limit::InvalidConcurrencyLimit::ZeroLimit)
    ));
}

/// Readies the (mock) service, then calls it: the inner mock panics on a call it was not
/// readied for, which a call admitted at once makes.
fn ready_call<S: Service<Req>>(svc: &mut mock::Spawn<S>, req: Req) -> S::Future
where
    S::Error: std::fmt::Debug,
{
    assert!(svc.poll_ready().is_ready());
    svc.call(req)
}

/// The layer over a mock service that accepts 100 calls.
fn spawn<L: Layer<mock::Mock<Req, ()>>>(
    layer: L,
) -> (mock::Spawn<L::Service>, mock::Handle<Req, ()>) {
    let (svc, mut upstream) = mock::spawn_layer(layer);
    upstream.allow(100);
    (svc, upstream)
}

/// Calls and polls once: the call is now in flight or waiting.
fn start<S: Service<Req>>(svc: &mut mock::Spawn<S>, req: Req) -> task::Spawn<S::Future>
where
    S::Response: std::fmt::Debug,
    S::Error: std::fmt::Debug,
{
    let mut call = task::spawn(ready_call(svc, req));
    assert_pending!(call.poll());
    call
}

fn layer_waiting(
    limit: usize,
    queue: usize,
    wait: Duration,
) -> ConcurrencyLimitLayer<ByClass<Classify>> {
    ConcurrencyLimitLayer::builder(limit)
        .queue(queue, wait)
        .criticality((|r: &Req| r.request.0) as Classify)
        .build()
        .unwrap()
}

/// Grants go class by class, oldest first within a class: with one of each class waiting
/// (queued in the worst order), the permits come back critical, default, sheddable.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grants_follow_class_then_arrival_order() {
    let layer = layer(1, 6);
    let handle = layer.handle();
    let (mut svc, mut upstream) = spawn(layer);
    let mut running = start(&mut svc, r(Criticality::Default, 0));
    let order = [
        (Criticality::Sheddable, 1),
        (Criticality::Default, 2),
        (Criticality::Critical, 3),
        (Criticality::Sheddable, 4),
        (Criticality::Critical, 5),
        (Criticality::Default, 6),
    ];
    let mut waiting: Vec<_> = order
        .iter()
        .map(|&(c, i)| Some(start(&mut svc, r(c, i))))
        .collect();
    assert_eq!(handle.queued(), 6);
    assert_eq!(handle.queued_by(Criticality::Critical), 2);
    assert_eq!(handle.queued_by(Criticality::Default), 2);
    assert_eq!(handle.queued_by(Criticality::Sheddable), 2);

    // Finish the running call, then each admitted one in turn, recording who got in.
    let (_, send) = upstream.next_request().await.unwrap();
    send.send_response(());
    assert_ready_ok!(running.poll());
    let mut served = Vec::new();
    for _ in 0..order.len() {
        // Poll every waiter still waiting: exactly one was granted the permit.
        for f in &mut waiting {
            if let Some(f) = f.as_mut() {
                assert_pending!(f.poll());
            }
        }
        let (req, send) = upstream.next_request().await.unwrap();
        let i = req.request.1;
        served.push(i);
        send.send_response(());
        let mut done = waiting[i as usize - 1].take().unwrap();
        assert_ready_ok!(done.poll());
    }
    assert_eq!(served, [3, 5, 2, 6, 1, 4]);
    assert_eq!((handle.queued(), handle.in_flight()), (0, 0));
}

/// A full queue evicts the newest waiter of the lowest class below the newcomer (which
/// fails with `Overloaded` and leaves the queue); a newcomer of the lowest class finds
/// nobody to evict and is shed at once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn eviction_takes_the_newest_of_the_lowest_class() {
    let layer = layer(1, 3);
    let handle = layer.handle();
    let (mut svc, mut upstream) = spawn(layer);
    let running = start(&mut svc, r(Criticality::Critical, 0));
    let mut default = task::spawn(ready_call(&mut svc, r(Criticality::Default, 1)));
    let mut old_shed = task::spawn(ready_call(&mut svc, r(Criticality::Sheddable, 2)));
    let mut new_shed = task::spawn(ready_call(&mut svc, r(Criticality::Sheddable, 3)));
    assert_pending!(default.poll());
    assert_pending!(old_shed.poll());
    assert_pending!(new_shed.poll());

    // Full: a sheddable newcomer cannot evict its own class.
    let mut shed = task::spawn(ready_call(&mut svc, r(Criticality::Sheddable, 4)));
    assert!(assert_ready_err!(shed.poll()).is::<Overloaded>());
    assert_eq!(handle.queued(), 3);

    // A default newcomer evicts the newest sheddable, not the older one nor a default.
    let _second_default = start(&mut svc, r(Criticality::Default, 5));
    assert!(new_shed.is_woken());
    assert!(assert_ready_err!(new_shed.poll()).is::<Overloaded>());
    assert_pending!(old_shed.poll());
    assert_eq!(handle.queued_by(Criticality::Sheddable), 1);
    assert_eq!(handle.queued_by(Criticality::Default), 2);

    // A critical newcomer evicts the last sheddable before any default.
    let mut critical = start(&mut svc, r(Criticality::Critical, 6));
    assert!(assert_ready_err!(old_shed.poll()).is::<Overloaded>());
    assert_eq!(handle.queued_by(Criticality::Sheddable), 0);
    assert_eq!(handle.queued(), 3);
    // And nothing was lost: the limit is still one permit, held by the running call.
    assert_eq!((handle.in_flight(), handle.available()), (1, 0));
    drop(running);
    assert!(critical.is_woken());
    assert_pending!(critical.poll());
    let (req, _send) = upstream.next_request().await.unwrap();
    assert_eq!(req.request.1, 0);
    let (req, _send) = upstream.next_request().await.unwrap();
    assert_eq!(req.request.1, 6);
}

/// A waiter waits at most `max_wait`, and never past its request's deadline; a request
/// whose deadline has already passed is shed at once and evicts nobody.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waits_are_capped_by_max_wait_and_the_deadline() {
    let layer = layer_waiting(1, 2, Duration::from_millis(100));
    let handle = layer.handle();
    let (mut svc, _upstream) = spawn(layer);
    let running = start(&mut svc, r(Criticality::Critical, 0));

    let mut patient = task::spawn(ready_call(&mut svc, r(Criticality::Sheddable, 1)));
    let soon = Deadline::after(Duration::from_millis(30));
    let mut hurried = task::spawn(ready_call(
        &mut svc,
        WithDeadline::until((Criticality::Critical, 2), soon),
    ));
    assert_pending!(patient.poll());
    assert_pending!(hurried.poll());

    // Queue full (2); an expired critical request would evict the sheddable waiter if it
    // queued: it is shed instead.
    let late = WithDeadline::until((Criticality::Critical, 3), Deadline::after(Duration::ZERO));
    let mut late = task::spawn(ready_call(&mut svc, late));
    assert!(assert_ready_err!(late.poll()).is::<Overloaded>());
    assert_pending!(patient.poll());
    assert_eq!(handle.queued(), 2);

    time::advance(Duration::from_millis(30)).await;
    assert!(assert_ready_err!(hurried.poll()).is::<Overloaded>());
    assert_pending!(patient.poll());
    assert_eq!(handle.queued(), 1);

    time::advance(Duration::from_millis(70)).await;
    assert!(assert_ready_err!(patient.poll()).is::<Overloaded>());
    assert_eq!(handle.queued(), 0);
    // Timed-out waiters took no permit with them.
    drop(running);
    assert_eq!((handle.in_flight(), handle.available()), (0, 1));
}

/// Dropping a waiting future leaves the queue at once (its place is free for the next
/// newcomer) and never leaks a permit: neither one granted to it before it was polled, nor
/// one it never got.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_waiting_futures_leave_the_queue_and_leak_nothing() {
    let layer = layer(2, 2);
    let handle = layer.handle();
    let (mut svc, _upstream) = spawn(layer);
    let mut a = task::spawn(ready_call(&mut svc, r(Criticality::Default, 0)));
    let mut b = task::spawn(ready_call(&mut svc, r(Criticality::Default, 1)));
    assert_pending!(a.poll());
    assert_pending!(b.poll());

    // Dropped while waiting, never granted: the place is freed.
    let mut w1 = task::spawn(ready_call(&mut svc, r(Criticality::Critical, 2)));
    let mut w2 = task::spawn(ready_call(&mut svc, r(Criticality::Sheddable, 3)));
    assert_pending!(w1.poll());
    assert_pending!(w2.poll());
    assert_eq!(handle.queued(), 2);
    drop(w2);
    assert_eq!(handle.queued(), 1);
    assert_eq!(handle.queued_by(Criticality::Sheddable), 0);
    // Dropped unpolled: the same.
    let unpolled = ready_call(&mut svc, r(Criticality::Sheddable, 4));
    assert_eq!(handle.queued(), 2);
    drop(unpolled);
    assert_eq!(handle.queued(), 1);

    // Granted a permit, then dropped before it used it: the permit is given back.
    drop(a);
    drop(w1);
    assert_eq!(
        (handle.queued(), handle.in_flight(), handle.available()),
        (0, 1, 1)
    );
    drop(b);
    assert_eq!((handle.in_flight(), handle.available()), (0, 2));
    // Both permits work again.
    let mut c = task::spawn(ready_call(&mut svc, r(Criticality::Sheddable, 5)));
    let mut d = task::spawn(ready_call(&mut svc, r(Criticality::Sheddable, 6)));
    assert_pending!(c.poll());
    assert_pending!(d.poll());
    assert_eq!((handle.in_flight(), handle.queued()), (2, 0));
}

/// Growing the limit grants waiters by class; shrinking it retires permits as they come
/// back, so the waiters keep waiting.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn resizing_grants_by_class() {
    let layer = layer(1, 4);
    let handle = layer.handle();
    let (mut svc, mut upstream) = spawn(layer);
    let running = start(&mut svc, r(Criticality::Default, 0));
    let mut shed = task::spawn(ready_call(&mut svc, r(Criticality::Sheddable, 1)));
    let mut crit = task::spawn(ready_call(&mut svc, r(Criticality::Critical, 2)));
    assert_pending!(shed.poll());
    assert_pending!(crit.poll());

    handle.set_limit(2).unwrap();
    assert!(crit.is_woken());
    assert_pending!(crit.poll());
    assert_pending!(shed.poll());
    assert_eq!((handle.in_flight(), handle.queued()), (2, 1));

    handle.set_limit(1).unwrap();
    drop(running);
    // The returned permit paid the shrink's debt: the sheddable waiter still waits.
    assert_pending!(shed.poll());
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    let _ = upstream.next_request().await.unwrap();
}

/// Criticality orders a queue: without one, `build()` refuses it.
#[test]
fn criticality_needs_a_queue() {
    let classify = |r: &Req| r.request.0;
    assert_eq!(
        ConcurrencyLimitLayer::builder(4)
            .criticality(classify)
            .build()
            .unwrap_err(),
        InvalidConcurrencyLimit::CriticalityWithoutQueue
    );
    assert_eq!(
        ConcurrencyLimitLayer::builder(4)
            .queue(8, Duration::from_secs(1))
            .reject()
            .criticality(classify)
            .build()
            .unwrap_err(),
        InvalidConcurrencyLimit::CriticalityWithoutQueue
    );
    assert_eq!(
        ConcurrencyLimitLayer::builder(4)
            .criticality(classify)
            .queue(8, Duration::ZERO)
            .build()
            .unwrap_err(),
        InvalidConcurrencyLimit::ZeroWait
    );
}

/// The keyed limit serves each key's queue by class too.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn keyed_queues_serve_by_class() {
    use palisade_limit::keyed::KeyedConcurrencyLimitLayer;

    // Key: the request number's parity; one call per key at a time.
    let layer = KeyedConcurrencyLimitLayer::builder(1, |r: &Req| r.request.1 % 2)
        .queue(1, Duration::from_secs(1))
        .criticality(|r: &Req| r.request.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (mut svc, mut upstream) = spawn(layer);
    let mut running = start(&mut svc, r(Criticality::Default, 0));
    let mut shed = start(&mut svc, r(Criticality::Sheddable, 2));
    // Key 0's queue (1 place) is full: a critical call of key 0 evicts the sheddable one.
    let mut crit = start(&mut svc, r(Criticality::Critical, 4));
    assert!(assert_ready_err!(shed.poll()).is::<Overloaded>());
    // Key 1 is untouched by key 0's queue.
    let _other = start(&mut svc, r(Criticality::Sheddable, 1));
    assert_eq!(handle.queued(&0), Some(1));
    assert_eq!(handle.in_flight(&1), Some(1));

    let (_, send) = upstream.next_request().await.unwrap();
    send.send_response(());
    assert_ready_ok!(running.poll());
    assert_pending!(crit.poll());
    let mut seen = Vec::new();
    seen.push(upstream.next_request().await.unwrap().0.request.1);
    seen.push(upstream.next_request().await.unwrap().0.request.1);
    seen.sort_unstable();
    assert_eq!(seen, [1, 4]);
}

/// A plain limit in wait or reject mode needs neither a request deadline nor a `Clone`
/// inner service (only a queue does).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn wait_and_reject_modes_take_plain_requests_and_unclonable_services() {
    struct NotClone(u32);
    impl tower::Service<u32> for NotClone {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u32, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, n: u32) -> Self::Future {
            std::future::ready(Ok(n + self.0))
        }
    }
    let wait = ConcurrencyLimitLayer::new(1);
    let handle = wait.handle();
    let mut svc = wait.layer(NotClone(1));
    assert_eq!(svc.ready().await.unwrap().call(41).await.unwrap(), 42);
    assert_eq!(handle.in_flight(), 0);
    let reject = ConcurrencyLimitLayer::builder(1).reject().build().unwrap();
    let mut svc = reject.layer(NotClone(2));
    assert_eq!(svc.ready().await.unwrap().call(40).await.unwrap(), 42);
}

/// Idle capacity and the fast path: with nobody waiting a by-class limit admits at once,
/// and its handle counts nothing queued.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn free_permits_go_to_any_class_at_once() {
    let layer = layer(2, 2);
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|req: Req| async move {
        Ok::<_, BoxError>(req.request.1)
    }));
    assert_eq!(
        svc.clone()
            .oneshot(r(Criticality::Sheddable, 7))
            .await
            .unwrap(),
        7
    );
    assert_eq!(svc.oneshot(r(Criticality::Critical, 8)).await.unwrap(), 8);
    assert_eq!(
        (handle.in_flight(), handle.queued(), handle.available()),
        (0, 0, 2)
    );
}
