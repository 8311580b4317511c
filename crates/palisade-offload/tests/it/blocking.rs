use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, Deadline, DeadlineExceeded, Elapsed, Overloaded, WithDeadline};
use palisade_offload::{BlockingPool, CancelToken, InvalidPool, OnFull, Panicked};
use tokio::time::{advance, Instant};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::support::{gated_job, until, Gate, Req};

/// A pool of `threads` whose job waits at `gate` (for requests > 0) and counts its runs.
fn gated(
    pool: &BlockingPool,
    gate: &Gate,
    runs: &Arc<AtomicUsize>,
) -> impl Service<Req, Response = u32, Error = BoxError, Future: Send> + Clone {
    pool.service_fn(gated_job(gate, runs))
}

fn is<E: std::error::Error + 'static>(err: &BoxError) -> bool {
    err.downcast_ref::<E>().is_some()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn runs_a_blocking_call_off_the_runtime_thread() {
    let pool = BlockingPool::builder(2).build().unwrap();
    let caller = std::thread::current().id();
    let mut svc = pool.service_fn(move |n: u32, _: CancelToken| {
        assert_ne!(std::thread::current().id(), caller, "ran on the event loop");
        Ok::<_, std::io::Error>(n + 1)
    });
    assert_eq!(svc.ready().await.unwrap().call(41).await.unwrap(), 42);
    let handle = pool.handle();
    assert_eq!(
        (handle.completed(), handle.running(), handle.available()),
        (1, 0, 2)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_is_bounded_and_full_queue_rejects_at_once() {
    let pool = BlockingPool::builder(1)
        .queue(1, Duration::from_secs(10))
        .build()
        .unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let svc = gated(&pool, &gate, &runs);
    let handle = pool.handle();

    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let mut b = task::spawn(svc.clone().oneshot(WithDeadline::new(2)));
    assert_pending!(b.poll());
    assert_eq!((handle.running(), handle.queued()), (1, 1));

    // The one place is taken: the next call fails at once, without running.
    let err = svc.clone().oneshot(WithDeadline::new(3)).await.unwrap_err();
    assert!(is::<Overloaded>(&err), "{err}");
    assert_eq!(handle.rejected(), 1);

    gate.open();
    assert_eq!(a.await.unwrap().unwrap(), 1);
    assert_eq!(b.await.unwrap(), 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!((handle.running(), handle.queued()), (0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queued_call_waits_at_most_max_wait_and_never_runs() {
    let pool = BlockingPool::builder(1)
        .queue(4, Duration::from_millis(100))
        .build()
        .unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let svc = gated(&pool, &gate, &runs);

    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let start = Instant::now();
    let mut b = task::spawn(svc.clone().oneshot(WithDeadline::new(2)));
    assert_pending!(b.poll());
    // tokio does not auto-advance paused time while a blocking task runs: time moves only here.
    advance(Duration::from_millis(99)).await;
    assert_pending!(b.poll());
    advance(Duration::from_millis(1)).await;
    let err = b.await.unwrap_err();
    assert!(is::<Overloaded>(&err), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(pool.handle().queued(), 0);

    gate.open();
    a.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the timed-out call ran");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_wait_is_capped_by_the_request_deadline() {
    let pool = BlockingPool::builder(1)
        .queue(4, Duration::from_secs(10))
        .build()
        .unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let svc = gated(&pool, &gate, &runs);

    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let req = WithDeadline::until(2, Deadline::after(Duration::from_millis(50)));
    let mut b = task::spawn(svc.clone().oneshot(req));
    assert_pending!(b.poll());
    advance(Duration::from_millis(49)).await;
    assert_pending!(b.poll());
    advance(Duration::from_millis(1)).await;
    let err = b.await.unwrap_err();
    assert!(is::<Overloaded>(&err), "{err}");

    // A request whose deadline has passed never starts.
    let expired = WithDeadline::until(0, Deadline::after(Duration::ZERO));
    let err = svc.clone().oneshot(expired).await.unwrap_err();
    assert!(is::<DeadlineExceeded>(&err), "{err}");

    gate.open();
    a.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn call_dropped_while_queued_never_runs() {
    let pool = BlockingPool::builder(1)
        .queue(4, Duration::from_secs(10))
        .build()
        .unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let svc = gated(&pool, &gate, &runs);
    let handle = pool.handle();

    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let mut b = task::spawn(svc.clone().oneshot(WithDeadline::new(2)));
    assert_pending!(b.poll());
    assert_eq!(handle.queued(), 1);
    drop(b);
    assert_eq!(handle.queued(), 0, "the dropped call kept its queue place");

    gate.open();
    a.await.unwrap().unwrap();
    // Give a wrongly dispatched job every chance to run before counting.
    svc.clone().oneshot(WithDeadline::new(0)).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the dropped call ran");
    assert_eq!(handle.orphaned(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn panic_is_an_error_and_the_pool_keeps_serving() {
    let pool = BlockingPool::builder(1).build().unwrap();
    let mut svc = pool.service_fn(|n: u32, _: CancelToken| {
        if n == 0 {
            panic!("legacy library gave up on {n}");
        }
        Ok::<_, std::io::Error>(n)
    });
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    let panicked = err.downcast_ref::<Panicked>().expect("a Panicked error");
    assert_eq!(panicked.message(), "legacy library gave up on 0");

    // The one thread is free again and serves.
    assert_eq!(svc.ready().await.unwrap().call(5).await.unwrap(), 5);
    let handle = pool.handle();
    assert_eq!(
        (handle.panicked(), handle.completed(), handle.available()),
        (1, 2, 1)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn callers_timed_out_above_leave_counted_orphans() {
    // The report: a timeout above a blocking pool returns `Elapsed` while the
    // calls run on. Here they are counted, and their tokens say the caller left.
    let pool = BlockingPool::builder(4).build().unwrap();
    let gate = Gate::new();
    let _open = gate.guard();
    let job_gate = gate.clone();
    let stopped_early = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::clone(&stopped_early);
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(10))
        .service(pool.service_fn(move |n: u32, cancel: CancelToken| {
            job_gate.wait_while(|| !cancel.is_cancelled() || n.is_multiple_of(2));
            if cancel.is_cancelled() {
                stopped.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, std::io::Error>(n)
        }));
    let handle = pool.handle();

    let calls: Vec<_> = (0..4)
        .map(|n| tokio::spawn(svc.clone().oneshot(n)))
        .collect();
    until("all four run", || gate.arrived() == 4).await;
    advance(Duration::from_millis(10)).await;
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    }
    assert_eq!(handle.orphaned(), 4);
    // The two odd calls check their token and stop; the even ones ignore it.
    until("odd orphans stop", || handle.orphans_running() == 2).await;
    assert_eq!(stopped_early.load(Ordering::SeqCst), 2);
    assert_eq!(handle.running(), 2);
    gate.open();
    until("even orphans end", || handle.running() == 0).await;
    assert_eq!((handle.orphans_running(), handle.orphaned()), (0, 4));
    assert_eq!(handle.available(), 4);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn wait_mode_backpressures_in_poll_ready() {
    let pool = BlockingPool::builder(1).build().unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let mut svc = gated(&pool, &gate, &runs);
    let mut other = svc.clone();

    let a = tokio::spawn(svc.ready().await.unwrap().call(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let mut ready = task::spawn(poll_fn_ready::<Req, _>(&mut other));
    assert_pending!(ready.poll());
    gate.open();
    a.await.unwrap().unwrap();
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    drop(ready);
    assert_eq!(other.call(WithDeadline::new(0)).await.unwrap(), 0);
}

async fn poll_fn_ready<R, S: Service<R>>(svc: &mut S) -> Result<(), S::Error> {
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn clone_does_not_inherit_a_reserved_thread() {
    let pool = BlockingPool::builder(1).build().unwrap();
    let mut svc = pool.service_fn(|n: u32, _: CancelToken| Ok::<_, std::io::Error>(n));
    poll_fn_ready::<u32, _>(&mut svc).await.unwrap();
    assert_eq!(pool.handle().available(), 0);
    let mut clone = svc.clone();
    let mut ready = task::spawn(poll_fn_ready::<u32, _>(&mut clone));
    assert_pending!(ready.poll());
    drop(ready);
    // Dropping the service that holds the reservation frees it for the clone.
    drop(svc);
    assert_eq!(clone.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(pool.handle().available(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reject_mode_sheds_when_every_thread_is_busy() {
    let pool = BlockingPool::builder(1).reject().build().unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let svc = gated(&pool, &gate, &runs);
    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let err = svc.clone().oneshot(WithDeadline::new(2)).await.unwrap_err();
    assert!(is::<Overloaded>(&err), "{err}");
    gate.open();
    a.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn state_is_reused_and_replaced_after_a_panic() {
    let pool = BlockingPool::builder(2).build().unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let made2 = Arc::clone(&made);
    let mut svc = pool.service_with_state(
        move || {
            made2.fetch_add(1, Ordering::SeqCst);
            Vec::<u32>::new()
        },
        |seen: &mut Vec<u32>, n: u32, _: CancelToken| {
            if n == 0 {
                panic!("corrupted");
            }
            seen.push(n);
            Ok::<_, std::io::Error>(seen.len())
        },
    );
    for expect in 1..=3 {
        assert_eq!(svc.ready().await.unwrap().call(9).await.unwrap(), expect);
    }
    assert_eq!(
        made.load(Ordering::SeqCst),
        1,
        "sequential calls share one state"
    );
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert!(is::<Panicked>(&err));
    assert_eq!(
        svc.ready().await.unwrap().call(9).await.unwrap(),
        1,
        "a fresh state"
    );
    assert_eq!(made.load(Ordering::SeqCst), 2);
}

#[test]
fn invalid_config_is_a_typed_error() {
    assert_eq!(
        BlockingPool::builder(0).build().unwrap_err(),
        InvalidPool::ZeroThreads
    );
    assert_eq!(
        BlockingPool::builder(1)
            .queue(0, Duration::from_secs(1))
            .build()
            .unwrap_err(),
        InvalidPool::ZeroQueue
    );
    assert_eq!(
        BlockingPool::builder(1)
            .on_full(OnFull::Queue {
                max_queued: 1,
                max_wait: Duration::ZERO
            })
            .build()
            .unwrap_err(),
        InvalidPool::ZeroWait
    );
    assert!(matches!(
        BlockingPool::builder(usize::MAX).build().unwrap_err(),
        InvalidPool::TooManyThreads(_)
    ));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_timeout_is_a_core_rejection() {
    // The pool's own queue timeout is core's `Overloaded` (found by `find_rejection`, so
    // server adapters answer 503), not a timeout of the call.
    let pool = BlockingPool::builder(1)
        .queue(1, Duration::from_millis(5))
        .build()
        .unwrap();
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let _open = gate.guard();
    let svc = gated(&pool, &gate, &runs);
    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let mut b = task::spawn(svc.clone().oneshot(WithDeadline::new(2)));
    assert_pending!(b.poll());
    advance(Duration::from_millis(5)).await;
    let err = b.await.unwrap_err();
    assert!(palisade_core::find_rejection(err.as_ref()).is_some());
    assert!(!is::<Elapsed>(&err));
    gate.open();
    a.await.unwrap().unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn closures_may_fail_with_box_error() {
    // The token is passed by value: no higher-ranked lifetime for the error type to trip on.
    let pool = BlockingPool::builder(1).build().unwrap();
    let plain = pool.service_fn(|n: u32, _: CancelToken| {
        if n == 0 {
            return Err::<u32, BoxError>("zero".into());
        }
        Ok(n)
    });
    assert_eq!(plain.clone().oneshot(2).await.unwrap(), 2);
    assert_eq!(plain.oneshot(0).await.unwrap_err().to_string(), "zero");
    let stateful = pool.service_with_state(
        || 10u32,
        |base: &mut u32, n: u32, _: CancelToken| Ok::<_, BoxError>(*base + n),
    );
    assert_eq!(stateful.oneshot(5).await.unwrap(), 15);
}

fn named_job(n: u32, _: CancelToken) -> Result<u32, BoxError> {
    Ok(n)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn spawned_calls_with_box_error() {
    let pool = BlockingPool::builder(1).build().unwrap();
    let svc = pool.service_fn(named_job);
    assert_eq!(tokio::spawn(svc.oneshot(3)).await.unwrap().unwrap(), 3);
    let svc = pool.service_fn(|n: u32, _: CancelToken| Ok::<_, BoxError>(n));
    assert_eq!(tokio::spawn(svc.oneshot(4)).await.unwrap().unwrap(), 4);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stacked_under_palisade_deadline_layer() {
    // DeadlineLayer sets the request's deadline; the pool caps its queue wait by it, and a
    // call still running when it passes is counted as an orphan and told through its token.
    let pool = BlockingPool::builder(1)
        .queue(4, Duration::from_secs(10))
        .build()
        .unwrap();
    let gate = Gate::new();
    let _open = gate.guard();
    let job_gate = gate.clone();
    let runs = Arc::new(AtomicUsize::new(0));
    let job_runs = Arc::clone(&runs);
    let svc = ServiceBuilder::new()
        .layer(palisade_deadline::DeadlineLayer::new(
            Duration::from_millis(50),
        ))
        .service(pool.service_fn(move |req: Req, cancel: CancelToken| {
            job_runs.fetch_add(1, Ordering::SeqCst);
            job_gate.wait_while(|| !cancel.is_cancelled());
            Ok::<_, std::io::Error>(req.request)
        }));
    let handle = pool.handle();

    let start = Instant::now();
    let a = tokio::spawn(svc.clone().oneshot(WithDeadline::new(1)));
    until("a runs", || gate.arrived() == 1).await;
    let b = tokio::spawn(svc.clone().oneshot(WithDeadline::new(2)));
    until("b queued", || handle.queued() == 1).await;
    advance(Duration::from_millis(50)).await;
    for call in [a, b] {
        let err = call.await.unwrap().unwrap_err();
        assert!(
            palisade_core::find_rejection(err.as_ref()).is_some(),
            "{err}"
        );
    }
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    // `a` ran and was orphaned; its token told it to stop. `b` never ran.
    assert_eq!((handle.orphaned(), handle.queued()), (1, 0));
    until("a stops", || handle.running() == 0).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
