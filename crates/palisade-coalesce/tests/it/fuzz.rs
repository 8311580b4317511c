//! Random interleavings of new requests, polls, drops and answers, seeded: whatever
//! happens, no entry outlives its call and no inner future outlives its waiters.

use std::task::Poll;

use palisade_coalesce::{CoalesceHandle, CoalesceLayer};
use palisade_core::rand::SeededRng;
use palisade_core::BoxError;
use tokio_test::task::{self, Spawn};
use tower::{Layer, Service};

use crate::support::{Answer, Manual};

type Fut =
    Spawn<std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, BoxError>> + Send>>>;

const KEYS: u64 = 4;

fn pick(rng: &SeededRng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn random_drops_of_waiters_and_leaders_leave_no_entries() {
    for seed in 0..200 {
        let inner = Manual::default();
        let layer = CoalesceLayer::builder(|k: &u64| Some(*k)).build().unwrap();
        let handle = layer.handle();
        interleave(seed, layer.layer(inner.clone()), &inner, &handle);
    }
}

/// The same with a share rule refusing the answers of odd keys: their followers make
/// their own calls, and still nothing is left behind.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn random_drops_with_refused_answers_leave_no_entries() {
    let mut unshared = 0;
    for seed in 0..200 {
        let inner = Manual::default();
        let layer = CoalesceLayer::builder(|k: &u64| Some(*k))
            .share_if(|v: &u64| v.is_multiple_of(2))
            .build()
            .unwrap();
        let handle = layer.handle();
        interleave(seed, layer.layer(inner.clone()), &inner, &handle);
        unshared += handle.unshared();
    }
    assert!(unshared > 0, "the refused path was taken");
}

/// Random interleavings of new requests, polls, drops and answers through `svc`, calling
/// `inner`; then no entry and no inner future may be left.
fn interleave<S>(seed: u64, mut svc: S, inner: &Manual, handle: &CoalesceHandle<u64>)
where
    S: Service<u64, Response = u64, Error = BoxError>,
    S::Future: Send + 'static,
{
    let rng = SeededRng::new(seed);
    let mut live: Vec<(u64, Fut)> = Vec::new();

    for _ in 0..200 {
        match pick(&rng, 10) {
            0..=2 => {
                let key = rng.next_u64() % KEYS;
                let mut fut: Fut = task::spawn(Box::pin(svc.call(key)));
                // Poll at once or not at all: a waiter may be dropped unpolled.
                if rng.chance(0.5) {
                    if let Poll::Ready(r) = fut.poll() {
                        assert_eq!(r.unwrap_or(key), key);
                        continue;
                    }
                }
                live.push((key, fut));
            }
            3..=4 if !live.is_empty() => {
                let i = pick(&rng, live.len());
                let (key, mut fut) = live.swap_remove(i);
                match fut.poll() {
                    // Each call answers its own key, or fails.
                    Poll::Ready(Ok(v)) => assert_eq!(v, key),
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => live.push((key, fut)),
                }
            }
            5..=6 if !live.is_empty() => {
                let i = pick(&rng, live.len());
                drop(live.swap_remove(i));
            }
            7..=8 => {
                let key = rng.next_u64() % KEYS;
                inner.answer(key, Answer::Value(key));
            }
            _ => {
                let key = rng.next_u64() % KEYS;
                inner.answer(key, Answer::Fail);
            }
        }
        // Waiters counted are waiters alive (some alive ones may already be served).
        for key in 0..KEYS {
            let alive = live.iter().filter(|(k, _)| *k == key).count();
            assert!(handle.waiters(&key) <= alive, "seed {seed}: key {key}");
        }
        assert!(inner.live() <= handle.keys_in_flight() + live.len());
    }

    // Half the time finish the calls, half the time abandon them.
    if rng.chance(0.5) {
        for key in 0..KEYS {
            while inner.answer(key, Answer::Value(key)) {}
        }
        for (key, fut) in &mut live {
            if let Poll::Ready(r) = fut.poll() {
                assert_eq!(r.unwrap_or(*key), *key);
            }
        }
    }
    live.clear();
    assert_eq!(handle.keys_in_flight(), 0, "seed {seed}: stale entry");
    assert_eq!(inner.live(), 0, "seed {seed}: inner future leaked");
}

/// Real threads racing joins, completions and drops (time-outs and aborts): only
/// invariants are asserted, never timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_racing_joins_completions_and_drops_leave_nothing_behind() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;
    use tower::ServiceExt;

    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let layer = CoalesceLayer::builder(|k: &u64| Some(*k)).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(tower::service_fn(move |k: u64| {
        c.fetch_add(1, SeqCst);
        async move {
            for _ in 0..(k % 5) {
                tokio::task::yield_now().await;
            }
            Ok::<_, BoxError>(k)
        }
    }));
    let rng = SeededRng::new(5);
    let mut tasks = Vec::new();
    for i in 0..2_000u64 {
        let key = i % 16;
        let budget = Duration::from_micros(rng.next_u64() % 200);
        // Boxed outside the task: the call's future type, named, is plainly `Send`.
        let call: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<u64, BoxError>> + Send>,
        > = Box::pin(svc.clone().oneshot(key));
        let task = tokio::spawn(async move {
            // Out of budget, the call is dropped while waiting.
            if let Ok(r) = tokio::time::timeout(budget, call).await {
                assert_eq!(r.unwrap(), key);
            }
        });
        if rng.chance(0.1) {
            task.abort();
        }
        tasks.push(task);
    }
    for t in tasks {
        let _ = t.await;
    }
    assert_eq!(handle.keys_in_flight(), 0);
    // Aborted tasks may never have called; every call led, joined or bypassed, and only
    // leaders reached the inner service.
    let decided = handle.led() + handle.joined() + handle.bypassed();
    assert!(decided <= 2_000);
    assert_eq!(calls.load(SeqCst) as u64, handle.led() + handle.bypassed());
}
