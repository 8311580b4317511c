use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, Overloaded, WithDeadline};
use palisade_limit::concurrency::ByClass;
use palisade_limit::criticality::Criticality;
use palisade_limit::ConcurrencyLimitLayer;
use tokio::time;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{service_fn, Layer, ServiceExt};
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
