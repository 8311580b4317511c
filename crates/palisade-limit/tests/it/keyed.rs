//! Per-key concurrency limits: isolation, the global limit, the deadline cap, the memory
//! cap, and the per-key bound under two threads.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Deadline, Overloaded, WithDeadline};
use palisade_limit::keyed::KeyedConcurrencyLimitLayer;
use tokio::time::{advance, sleep};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

type Req = WithDeadline<(u32, u64)>;

fn key(req: &Req) -> u32 {
    req.request.0
}

/// Tracks calls in flight per key and their peak; each call sleeps `latency`.
#[derive(Clone, Default)]
struct Tracker {
    now: Arc<Mutex<HashMap<u32, usize>>>,
    peak: Arc<Mutex<HashMap<u32, usize>>>,
    total: Arc<AtomicUsize>,
    total_peak: Arc<AtomicUsize>,
}

impl Tracker {
    fn enter(&self, k: u32) {
        let mut now = self.now.lock().unwrap();
        let n = now.entry(k).or_default();
        *n += 1;
        let mut peak = self.peak.lock().unwrap();
        let p = peak.entry(k).or_default();
        *p = (*p).max(*n);
        let t = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        self.total_peak.fetch_max(t, Ordering::SeqCst);
    }

    fn leave(&self, k: u32) {
        *self.now.lock().unwrap().get_mut(&k).unwrap() -= 1;
        self.total.fetch_sub(1, Ordering::SeqCst);
    }

    fn peak(&self, k: u32) -> usize {
        self.peak.lock().unwrap().get(&k).copied().unwrap_or(0)
    }

    fn service(
        &self,
        latency: Duration,
    ) -> impl Service<Req, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
        let t = self.clone();
        service_fn(move |req: Req| {
            let t = t.clone();
            async move {
                let (k, v) = req.request;
                t.enter(k);
                if latency.is_zero() {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                } else {
                    sleep(latency).await;
                }
                t.leave(k);
                Ok::<_, BoxError>(v)
            }
        })
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_key_full_does_not_block_another() {
    let tracker = Tracker::default();
    let layer = KeyedConcurrencyLimitLayer::builder(2, key).build().unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tracker.service(Duration::from_millis(100)));
    let calls: Vec<_> = (0..6u64)
        .map(|i| tokio::spawn(svc.clone().oneshot(WithDeadline::new((1, i)))))
        .collect();
    tokio::task::yield_now().await;
    // Key 2 is not held back by key 1's burst.
    let other = tokio::spawn(svc.clone().oneshot(WithDeadline::new((2, 9))));
    let mut shed = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => {}
            Err(e) if e.is::<Overloaded>() => shed += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(shed, 4, "key 1 is limited to 2");
    assert_eq!(other.await.unwrap().unwrap(), 9);
    assert_eq!(tracker.peak(1), 2);
    assert_eq!(handle.in_flight(&1), Some(0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_global_limit_bounds_all_keys() {
    let tracker = Tracker::default();
    let layer = KeyedConcurrencyLimitLayer::builder(3, key)
        .global(4)
        .queue(10, Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tracker.service(Duration::from_millis(10)));
    let calls: Vec<_> = (0..40u64)
        .map(|i| tokio::spawn(svc.clone().oneshot(WithDeadline::new(((i % 4) as u32, i)))))
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(tracker.total_peak.load(Ordering::SeqCst), 4);
    assert!((0..4).all(|k| tracker.peak(k) <= 3));
    assert_eq!(handle.global_in_flight(), Some(0));
}

/// A queued wait never outlasts the request's deadline, and the wait leaves the queue.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_waits_are_capped_by_the_deadline() {
    let tracker = Tracker::default();
    let layer = KeyedConcurrencyLimitLayer::builder(1, key)
        .queue(10, Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tracker.service(Duration::from_secs(5)));
    let running = tokio::spawn(svc.clone().oneshot(WithDeadline::new((1, 0))));
    tokio::task::yield_now().await;
    let t0 = tokio::time::Instant::now();
    let req = WithDeadline::until((1, 1), Deadline::after(Duration::from_millis(100)));
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert!(err.is::<Overloaded>());
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    assert_eq!(handle.queued(&1), Some(0));
    advance(Duration::from_secs(5)).await;
    running.await.unwrap().unwrap();
}

/// A million distinct keys pass through a cap of 10,000: memory stays bounded.
#[tokio::test(flavor = "current_thread")]
async fn a_million_keys_stay_under_the_cap() {
    let layer = KeyedConcurrencyLimitLayer::builder(1, key)
        .max_keys(NonZeroUsize::new(10_000).unwrap())
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|req: Req| async move {
        Ok::<_, BoxError>(req.request.1)
    }));
    for i in 0..1_000_000u32 {
        let req = WithDeadline::new((i, 0));
        svc.ready().await.unwrap().call(req).await.unwrap();
    }
    assert!(handle.keys() <= 10_000, "{} keys", handle.keys());
    assert!(handle.capacity() < 40_000, "capacity {}", handle.capacity());
}

/// Two worker threads, 4 keys of 3, 4,000 calls in queue mode: no key ever has more than 3
/// in flight, and afterwards nothing is left held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_key_bound_holds_under_two_threads() {
    let tracker = Tracker::default();
    let layer = KeyedConcurrencyLimitLayer::builder(3, key)
        .queue(4_000, Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tracker.service(Duration::ZERO));
    let calls: Vec<_> = (0..4_000u64)
        .map(|i| tokio::spawn(svc.clone().oneshot(WithDeadline::new(((i % 4) as u32, i)))))
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    for k in 0..4 {
        assert!(
            tracker.peak(k) <= 3,
            "key {k} peaked at {}",
            tracker.peak(k)
        );
        assert_eq!(handle.in_flight(&k).unwrap_or(0), 0);
        assert_eq!(handle.queued(&k).unwrap_or(0), 0);
    }
}
