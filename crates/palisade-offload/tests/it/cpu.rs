use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use palisade_core::{BoxError, Overloaded, WithDeadline};
use palisade_offload::{CancelToken, CpuPool, InvalidPool, Panicked};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Service, ServiceExt};

use crate::support::{gated_job, until, Gate, Req};

fn gated(
    pool: &CpuPool,
    gate: &Gate,
    runs: &Arc<AtomicUsize>,
) -> impl Service<Req, Response = u32, Error = BoxError, Future: Send> + Clone {
    pool.service_fn(gated_job(gate, runs))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn runs_on_the_rayon_pool_not_the_event_loop() {
    let pool = CpuPool::builder().threads(2).name("hash").build().unwrap();
    let mut svc = pool.service_fn(|n: u64, _: CancelToken| {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        Ok::<_, std::io::Error>((name, (0..n).sum::<u64>()))
    });
    let (thread, sum) = svc.ready().await.unwrap().call(1000).await.unwrap();
    assert!(thread.starts_with("hash-"), "ran on {thread:?}");
    assert_eq!(sum, 499_500);
    assert_eq!(pool.handle().size(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn jobs_run_in_parallel() {
    // Each job waits for the other at a barrier: both finish only if both run at once.
    let pool = CpuPool::builder().threads(2).build().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let svc = pool.service_fn(move |n: u32, _: CancelToken| {
        barrier.wait();
        Ok::<_, std::io::Error>(n)
    });
    let (a, b) = tokio::join!(svc.clone().oneshot(1), svc.clone().oneshot(2));
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn backpressure_in_poll_ready_hands_rayon_no_more_than_its_threads() {
    let pool = CpuPool::builder().threads(1).build().unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let mut svc = gated(&pool, &gate, &runs);
    let mut other = svc.clone();
    let handle = pool.handle();

    let a = tokio::spawn(svc.ready().await.unwrap().call(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let mut ready = task::spawn(std::future::poll_fn(|cx| {
        Service::<Req>::poll_ready(&mut other, cx)
    }));
    assert_pending!(ready.poll());
    assert_eq!(
        (handle.running(), handle.queued(), handle.available()),
        (1, 0, 0)
    );

    gate.open();
    a.await.unwrap().unwrap();
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    drop(ready);
    assert_eq!(other.call(WithDeadline::new(0)).await.unwrap(), 0);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn bounded_queue_rejects_times_out_and_never_runs_the_rejected() {
    let pool = CpuPool::builder()
        .threads(1)
        .queue(1, Duration::from_millis(100))
        .build()
        .unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let svc = gated(&pool, &gate, &runs);
    let handle = pool.handle();

    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let start = Instant::now();
    let mut b = task::spawn(svc.clone().oneshot(WithDeadline::new(2)));
    assert_pending!(b.poll());
    let err = svc.clone().oneshot(WithDeadline::new(3)).await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");

    // Paused time jumps to the queue's timer (rayon threads do not hold it back).
    let err = b.await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!((handle.queued(), handle.rejected()), (0, 2));

    gate.open();
    a.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_while_queued_never_runs() {
    let pool = CpuPool::builder()
        .threads(1)
        .queue(4, Duration::from_secs(10))
        .build()
        .unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let svc = gated(&pool, &gate, &runs);

    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let mut b = task::spawn(svc.clone().oneshot(WithDeadline::new(2)));
    assert_pending!(b.poll());
    drop(b);
    assert_eq!(pool.handle().queued(), 0);
    gate.open();
    a.await.unwrap().unwrap();
    svc.clone().oneshot(WithDeadline::new(0)).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the dropped call ran");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn panic_is_an_error_and_the_pool_keeps_serving() {
    let pool = CpuPool::builder().threads(1).build().unwrap();
    let mut svc = pool.service_fn(|n: u32, _: CancelToken| {
        assert!(n != 0, "division by {n}");
        Ok::<_, std::io::Error>(100 / n)
    });
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Panicked>().unwrap().message(),
        "division by 0"
    );
    for _ in 0..3 {
        assert_eq!(svc.ready().await.unwrap().call(4).await.unwrap(), 25);
    }
    assert_eq!(pool.handle().panicked(), 1);
}

#[test]
fn bound_is_the_rayon_pool_size() {
    let mine = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap(),
    );
    let pool = CpuPool::builder().pool(mine).build().unwrap();
    assert_eq!(pool.handle().size(), 3);
    let global = CpuPool::builder().global().build().unwrap();
    assert_eq!(global.handle().size(), rayon::current_num_threads());
    assert_eq!(
        CpuPool::builder().threads(0).build().unwrap_err(),
        InvalidPool::ZeroThreads
    );
    assert_eq!(
        CpuPool::builder()
            .queue(0, Duration::from_secs(1))
            .build()
            .unwrap_err(),
        InvalidPool::ZeroQueue
    );
}
