use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{HeaderName, Request};
use palisade_core::{
    BoxError, Deadline, DeadlineExceeded, Elapsed, HasDeadline, Origin, SetDeadline, WithDeadline,
};
use palisade_deadline::{DeadlineLayer, PropagateDeadlineLayer, TimeoutLayer};
use tokio::time::{self, Instant};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::mock;

/// Sets a flag when dropped: proves the inner future was cancelled.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deadline_fails_and_cancels_the_inner_call() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let svc = DeadlineLayer::new(Duration::from_millis(300)).layer(service_fn(
        move |_: WithDeadline<()>| {
            let guard = DropFlag(flag.clone());
            async move {
                let _guard = guard;
                time::sleep(Duration::from_secs(10)).await;
                Ok::<_, BoxError>(())
            }
        },
    ));
    let mut fut = task::spawn(svc.oneshot(WithDeadline::new(())));
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(299)).await;
    assert_pending!(fut.poll());
    assert!(!dropped.load(Ordering::SeqCst));
    time::advance(Duration::from_millis(1)).await;
    let err = assert_ready_err!(fut.poll());
    assert!(err.is::<DeadlineExceeded>());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the inner future must be dropped at the deadline"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deadline_only_shortens_an_existing_one() {
    let (svc, mut handle) = mock::pair::<WithDeadline<&str>, ()>();
    let mut svc = DeadlineLayer::new(Duration::from_secs(1)).layer(svc);
    handle.allow(10);

    // Earlier deadline from the caller: kept.
    let early = Deadline::after(Duration::from_millis(100));
    let _a = svc
        .ready()
        .await
        .unwrap()
        .call(WithDeadline::until("a", early));
    let (req, _) = handle.next_request().await.unwrap();
    assert_eq!(req.deadline(), Some(early));

    // Later deadline from the caller: shortened to ours.
    let late = Deadline::after(Duration::from_secs(5));
    let _b = svc
        .ready()
        .await
        .unwrap()
        .call(WithDeadline::until("b", late));
    let (req, _) = handle.next_request().await.unwrap();
    assert_eq!(
        req.deadline().unwrap().instant(),
        Instant::now() + Duration::from_secs(1)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn expired_deadline_is_rejected_without_calling_inner() {
    let (svc, mut handle) = mock::pair::<WithDeadline<&str>, ()>();
    let mut svc = DeadlineLayer::new(Duration::from_secs(1)).layer(svc);
    handle.allow(10);
    let past = Deadline::after(Duration::from_millis(5));
    time::advance(Duration::from_millis(10)).await;
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(WithDeadline::until("x", past))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_pending!(task::spawn(handle.next_request()).poll());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_ready_response_wins_at_the_deadline() {
    let svc = DeadlineLayer::new(Duration::from_millis(10)).layer(service_fn(
        |_: WithDeadline<()>| async {
            time::sleep(Duration::from_millis(10)).await;
            Ok::<_, BoxError>("done")
        },
    ));
    let mut fut = task::spawn(svc.oneshot(WithDeadline::new(())));
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(10)).await;
    // Both the inner sleep and the deadline are due: the response is taken.
    assert_eq!(assert_ready_ok!(fut.poll()), "done");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeout_is_elapsed_and_distinct_from_the_deadline() {
    let slow = || {
        service_fn(|_: WithDeadline<()>| async {
            time::sleep(Duration::from_secs(10)).await;
            Ok::<_, BoxError>(())
        })
    };
    // Own timeout first: Elapsed.
    let svc = TimeoutLayer::new(Duration::from_millis(100)).layer(slow());
    let mut fut = task::spawn(svc.oneshot(WithDeadline::new(())));
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(100)).await;
    assert!(assert_ready_err!(fut.poll()).is::<Elapsed>());

    // Deadline first: the attempt gets only what is left, and fails with DeadlineExceeded.
    let svc = TimeoutLayer::new(Duration::from_secs(5)).layer(slow());
    let req = WithDeadline::until((), Deadline::after(Duration::from_millis(40)));
    let mut fut = task::spawn(svc.oneshot(req));
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(39)).await;
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(1)).await;
    assert!(assert_ready_err!(fut.poll()).is::<DeadlineExceeded>());

    // Deadline already passed: rejected at once.
    let svc = TimeoutLayer::new(Duration::from_secs(5)).layer(slow());
    let req = WithDeadline::until((), Deadline::after(Duration::ZERO));
    assert!(svc.oneshot(req).await.unwrap_err().is::<DeadlineExceeded>());
}

/// The per-attempt timeout reads no clock at `call`: its timer starts at the attempt's
/// first pending poll, and a deadline that passed since the layer above read the clock is
/// found then, ending the attempt as a *local* rejection (breakers do not count it).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeout_starts_at_first_pending_poll_and_finds_a_stale_deadline() {
    let slow = |dropped: Arc<AtomicBool>| {
        service_fn(move |_: WithDeadline<()>| {
            let flag = DropFlag(dropped.clone());
            async move {
                let _flag = flag;
                time::sleep(Duration::from_secs(10)).await;
                Ok::<_, BoxError>(())
            }
        })
    };
    // Counted from the first poll, not from `call`.
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = TimeoutLayer::new(Duration::from_millis(100)).layer(slow(dropped.clone()));
    let fut = svc.call(WithDeadline::new(()));
    time::advance(Duration::from_millis(60)).await;
    let mut fut = task::spawn(fut);
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(99)).await;
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(1)).await;
    assert!(assert_ready_err!(fut.poll()).is::<Elapsed>());
    assert!(dropped.load(Ordering::SeqCst), "the attempt was cancelled");

    // A deadline made with 5 ms left, passed 10 ms later: the attempt is called (the
    // remembered bound says "maybe"), found out of time at its first pending poll, and
    // cancelled as a local rejection.
    let dropped = Arc::new(AtomicBool::new(false));
    let svc = TimeoutLayer::new(Duration::from_secs(5)).layer(slow(dropped.clone()));
    let stale = Deadline::after(Duration::from_millis(5));
    time::advance(Duration::from_millis(10)).await;
    let mut fut = task::spawn(svc.oneshot(WithDeadline::until((), stale)));
    let err = assert_ready_err!(fut.poll());
    let exceeded = err.downcast_ref::<DeadlineExceeded>().expect("deadline");
    assert_eq!(exceeded.origin(), Origin::Local);
    assert!(dropped.load(Ordering::SeqCst), "the attempt was cancelled");

    // The deadline running out while the dependency holds the call is its fault.
    let svc = TimeoutLayer::new(Duration::from_secs(5)).layer(slow(Arc::default()));
    let req = WithDeadline::until((), Deadline::after(Duration::from_millis(40)));
    let mut fut = task::spawn(svc.oneshot(req));
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(40)).await;
    let err = assert_ready_err!(fut.poll());
    let exceeded = err.downcast_ref::<DeadlineExceeded>().expect("deadline");
    assert_eq!(exceeded.origin(), Origin::Dependency);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn propagates_remaining_budget_minus_margin() {
    let echo = service_fn(|req: Request<()>| async move { Ok::<_, BoxError>(req) });
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_millis(1500)))
        .layer(
            PropagateDeadlineLayer::grpc()
                .with_header(HeaderName::from_static("x-timeout-ms"))
                .safety_margin(Duration::from_millis(20)),
        )
        .service(echo);
    let sent = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(sent.headers()["grpc-timeout"], "1480000u");
    assert_eq!(sent.headers()["x-timeout-ms"], "1480");

    // No deadline: nothing written.
    let echo = service_fn(|req: Request<()>| async move { Ok::<_, BoxError>(req) });
    let sent = PropagateDeadlineLayer::grpc()
        .layer(echo)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert!(sent.headers().get("grpc-timeout").is_none());

    // Less budget than the margin: not sent at all.
    let echo = service_fn(|_: Request<()>| async move { Ok::<_, BoxError>(()) });
    let mut req = Request::new(());
    req.set_deadline(Deadline::after(Duration::from_millis(10)));
    let err = PropagateDeadlineLayer::grpc()
        .safety_margin(Duration::from_millis(20))
        .layer(echo)
        .oneshot(req)
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
}

/// A call that completes at once allocates nothing, through each client layer.
#[test]
fn happy_path_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let inner = service_fn(|r: WithDeadline<u32>| std::future::ready(Ok::<_, BoxError>(r.request)));
    let mut deadline = DeadlineLayer::new(Duration::from_secs(1)).layer(inner);
    let mut timeout = TimeoutLayer::new(Duration::from_secs(1)).layer(inner);
    let mut cx = Context::from_waker(Waker::noop());
    let call = |svc: &mut dyn FnMut(WithDeadline<u32>) -> Poll<Result<u32, BoxError>>| {
        for i in 0..1000 {
            assert!(matches!(svc(WithDeadline::new(i)), Poll::Ready(Ok(n)) if n == i));
        }
    };
    let mut via_deadline = |r: WithDeadline<u32>| {
        assert!(deadline.poll_ready(&mut cx).is_ready());
        pin!(deadline.call(r)).poll(&mut cx)
    };
    let _ = via_deadline(WithDeadline::new(0)); // warm-up
    let info = allocation_counter::measure(|| call(&mut via_deadline));
    assert_eq!(info.count_total, 0, "DeadlineLayer allocated");
    let mut cx = Context::from_waker(Waker::noop());
    let mut via_timeout = |r: WithDeadline<u32>| {
        assert!(timeout.poll_ready(&mut cx).is_ready());
        pin!(timeout.call(r)).poll(&mut cx)
    };
    let info = allocation_counter::measure(|| call(&mut via_timeout));
    assert_eq!(info.count_total, 0, "TimeoutLayer allocated");
}
