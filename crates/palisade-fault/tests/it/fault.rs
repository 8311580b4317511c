use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, Overloaded};
use palisade_fault::{Aborted, FaultKind, FaultLayer, InjectedError, InvalidFault, Latency};
use tokio_test::task;
use tower::{service_fn, Layer, Service, ServiceExt};

/// What one call came to, polled once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Ok,
    Error,
    Abort,
    Stall,
}

/// A service counting its calls and answering at once.
fn counted() -> (
    Arc<AtomicUsize>,
    impl Service<
            u32,
            Response = u32,
            Error = BoxError,
            Future = std::future::Ready<Result<u32, BoxError>>,
        > + Clone,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let svc = service_fn(move |n: u32| {
        c.fetch_add(1, SeqCst);
        std::future::ready(Ok::<_, BoxError>(n))
    });
    (calls, svc)
}

fn poll_once<S>(svc: &mut S, n: u32) -> Seen
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let mut fut = task::spawn(svc.call(n));
    match fut.poll() {
        std::task::Poll::Ready(Ok(_)) => Seen::Ok,
        std::task::Poll::Ready(Err(e)) if e.is::<InjectedError>() => Seen::Error,
        std::task::Poll::Ready(Err(e)) if e.is::<Aborted>() => Seen::Abort,
        std::task::Poll::Ready(Err(e)) => panic!("unexpected error {e}"),
        std::task::Poll::Pending => Seen::Stall,
    }
}

/// `count` is within 5 standard deviations of Binomial(n, p)'s mean.
fn within_binomial(count: u64, n: u64, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (mean * (1.0 - p)).sqrt();
    (count as f64 - mean).abs() <= 5.0 * sd
}

fn outcomes(seed: u64, calls: u32) -> Vec<Seen> {
    let layer = FaultLayer::builder()
        .seed(seed)
        .error(0.1)
        .abort(0.05)
        .stall(0.02)
        .build()
        .unwrap();
    let (_, inner) = counted();
    let mut svc = layer.layer(inner);
    (0..calls).map(|n| poll_once(&mut svc, n)).collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rates_are_within_binomial_bounds_over_1e5_seeded_calls() {
    const N: u32 = 100_000;
    let layer = FaultLayer::builder()
        .seed(11)
        .latency(0.3, Latency::Fixed(Duration::from_millis(5)))
        .error(0.1)
        .abort(0.05)
        .stall(0.02)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (calls, inner) = counted();
    let mut svc = layer.layer(inner);
    let mut seen = [0u64; 4];
    for n in 0..N {
        // Delayed calls are pending on their sleep: read the decision from the handle's
        // counts instead, and poll only the undelayed ones.
        let delayed_before = handle.delayed();
        let fut = svc.call(n);
        if handle.delayed() > delayed_before {
            drop(fut);
            continue;
        }
        let mut fut = task::spawn(fut);
        let s = match fut.poll() {
            std::task::Poll::Ready(Ok(_)) => Seen::Ok,
            std::task::Poll::Ready(Err(e)) if e.is::<InjectedError>() => Seen::Error,
            std::task::Poll::Ready(Err(e)) if e.is::<Aborted>() => Seen::Abort,
            std::task::Poll::Ready(Err(e)) => panic!("unexpected {e}"),
            std::task::Poll::Pending => Seen::Stall,
        };
        seen[s as usize] += 1;
    }
    let n = u64::from(N);
    assert!(
        within_binomial(handle.delayed(), n, 0.3),
        "delayed {}",
        handle.delayed()
    );
    for (kind, p) in [
        (FaultKind::Error, 0.1),
        (FaultKind::Abort, 0.05),
        (FaultKind::Stall, 0.02),
    ] {
        let got = handle.injected(kind);
        assert!(within_binomial(got, n, p), "{kind}: {got}");
    }
    assert_eq!(
        handle.passed()
            + handle.injected(FaultKind::Error)
            + handle.injected(FaultKind::Abort)
            + handle.injected(FaultKind::Stall),
        n
    );
    // Among the undelayed calls the handle's counts match what callers saw (latency is an
    // independent draw, so the same proportions hold there).
    let undelayed = n - handle.delayed();
    assert_eq!(seen.iter().sum::<u64>(), undelayed);
    assert!(within_binomial(seen[Seen::Error as usize], undelayed, 0.1));
    assert!(within_binomial(seen[Seen::Stall as usize], undelayed, 0.02));
    // Errors and stalls never reach the inner service; passes and aborts always do.
    let reached = (handle.passed() + handle.injected(FaultKind::Abort)) as usize;
    assert_eq!(calls.load(SeqCst), reached);
}

#[test]
fn same_seed_same_faults_other_seed_other_faults() {
    let a = outcomes(42, 2_000);
    assert_eq!(a, outcomes(42, 2_000));
    assert_ne!(a, outcomes(43, 2_000));
    assert!(a.contains(&Seen::Error) && a.contains(&Seen::Abort) && a.contains(&Seen::Stall));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn outage_window_on_paused_time() {
    let layer = FaultLayer::builder().error(1.0).build().unwrap();
    let handle = layer.handle();
    let (_, inner) = counted();
    let mut svc = layer.layer(inner);
    handle.schedule_outage(Duration::from_secs(10), Duration::from_secs(5));

    assert_eq!(poll_once(&mut svc, 0), Seen::Ok, "before t1");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(poll_once(&mut svc, 0), Seen::Error, "at t1");
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert_eq!(poll_once(&mut svc, 0), Seen::Error, "just before t2");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(poll_once(&mut svc, 0), Seen::Ok, "at t2");

    handle.clear_window();
    assert_eq!(poll_once(&mut svc, 0), Seen::Error, "no window: always on");
    handle.set_enabled(false);
    assert!(!handle.is_enabled());
    assert_eq!(poll_once(&mut svc, 0), Seen::Ok, "switched off");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fixed_latency_delays_exactly_and_the_inner_runs_after() {
    let layer = FaultLayer::builder()
        .latency(1.0, Latency::Fixed(Duration::from_millis(10)))
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    let mut fut = task::spawn(svc.ready().await.unwrap().call(3));
    assert!(fut.poll().is_pending());
    tokio::time::advance(Duration::from_millis(9)).await;
    assert!(fut.poll().is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(fut.is_woken());
    assert_eq!(fut.poll().map(|r| r.unwrap()), std::task::Poll::Ready(3));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stall_never_answers_and_a_timeout_drops_it_cleanly() {
    let layer = FaultLayer::builder().stall(1.0).build().unwrap();
    let (calls, inner) = counted();
    let svc = layer.layer(inner);
    let res = tokio::time::timeout(Duration::from_secs(30), svc.oneshot(1)).await;
    assert!(res.is_err(), "stalled until the timeout");
    assert_eq!(calls.load(SeqCst), 0, "a stall is injected before the call");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn abort_calls_the_inner_and_loses_the_answer() {
    let layer = FaultLayer::builder().abort(1.0).build().unwrap();
    let (calls, inner) = counted();
    let err = layer.layer(inner).oneshot(1).await.unwrap_err();
    assert!(err.is::<Aborted>());
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn error_with_injects_the_given_error() {
    let layer = FaultLayer::builder()
        .error_with(1.0, Overloaded::new)
        .build()
        .unwrap();
    let (calls, inner) = counted();
    let err = layer.layer(inner).oneshot(1).await.unwrap_err();
    assert!(err.is::<Overloaded>());
    assert_eq!(calls.load(SeqCst), 0);
}

#[test]
fn invalid_plans_are_typed_errors() {
    let err = FaultLayer::builder()
        .error(0.7)
        .abort(0.4)
        .build()
        .unwrap_err();
    assert!(matches!(err, InvalidFault::RatesExceedOne(_)));
    assert_eq!(
        FaultLayer::builder().stall(-0.1).build().unwrap_err(),
        InvalidFault::Rate(-0.1)
    );
    assert!(matches!(
        FaultLayer::builder().error(f64::NAN).build().unwrap_err(),
        InvalidFault::Rate(_)
    ));
    assert!(matches!(
        FaultLayer::builder()
            .latency(2.0, Latency::Fixed(Duration::ZERO))
            .build()
            .unwrap_err(),
        InvalidFault::Rate(_)
    ));
}

#[test]
fn handle_changes_rates_within_the_rules() {
    let layer = FaultLayer::builder()
        .error(0.5)
        .abort(0.25)
        .build()
        .unwrap();
    let handle = layer.handle();
    assert!(matches!(
        handle.set_rate(FaultKind::Error, 0.9),
        Err(InvalidFault::RatesExceedOne(_))
    ));
    assert_eq!(
        handle.set_rate(FaultKind::Error, 1.5),
        Err(InvalidFault::Rate(1.5))
    );
    assert_eq!(
        handle.set_rate(FaultKind::Stall, 0.1),
        Err(InvalidFault::NotConfigured(FaultKind::Stall))
    );
    handle.set_rate(FaultKind::Error, 0.75).unwrap();
    assert_eq!(handle.rate(FaultKind::Error), 0.75);
    handle.set_latency_rate(0.5).unwrap();
    assert_eq!(handle.latency_rate(), 0.5);
    assert_eq!(handle.set_latency_rate(-1.0), Err(InvalidFault::Rate(-1.0)));

    // Rates changed at run time take effect on the next call: all errors now.
    handle.set_rate(FaultKind::Abort, 0.0).unwrap();
    handle.set_rate(FaultKind::Error, 1.0).unwrap();
    let (_, inner) = counted();
    let mut svc = layer.layer(inner);
    assert!((0..100).all(|n| poll_once(&mut svc, n) == Seen::Error));
    // And reseeding replays the sequence.
    handle.set_rate(FaultKind::Error, 0.5).unwrap();
    handle.reseed(9);
    let first: Vec<Seen> = (0..50).map(|n| poll_once(&mut svc, n)).collect();
    handle.reseed(9);
    let again: Vec<Seen> = (0..50).map(|n| poll_once(&mut svc, n)).collect();
    assert_eq!(first, again);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_delayed_call_releases_everything() {
    let layer = FaultLayer::builder()
        .latency(1.0, Latency::Fixed(Duration::from_secs(1)))
        .build()
        .unwrap();
    let inner_state = Arc::new(());
    let held = Arc::clone(&inner_state);
    let mut svc = layer.layer(service_fn(move |n: u32| {
        let held = Arc::clone(&held);
        async move {
            let _held = held;
            Ok::<_, BoxError>(n)
        }
    }));
    let mut fut = task::spawn(svc.ready().await.unwrap().call(1));
    assert!(fut.poll().is_pending());
    assert_eq!(Arc::strong_count(&inner_state), 3);
    drop(fut);
    drop(svc);
    assert_eq!(Arc::strong_count(&inner_state), 1, "nothing kept alive");
}
