//! The service on paused time: every transition and knob.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_breaker::{CircuitBreakerLayer, FailureModel, OpenBackoff, State, Transition};
use palisade_core::{BoxError, CircuitOpen};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

use crate::support::{inner, run, Do};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn window_slides_200_successes_then_60_failures_opens() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(100))
        .minimum_calls(100)
        .failure_rate(0.5)
        .open_duration(secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(inner(calls.clone()));
    for _ in 0..200 {
        assert_eq!(run(&mut svc, Do::Ok).await, Ok(true));
    }
    let mut rejected = 0;
    for _ in 0..60 {
        if run(&mut svc, Do::Fail).await.is_err() {
            rejected += 1;
        }
    }
    // The 50th failure opens it (50 of the last 100); the other 10 are rejected.
    assert_eq!(handle.state(), State::Open);
    assert_eq!(rejected, 10);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        250,
        "rejected calls never reach the inner service"
    );
    // Rejection carries the time until half-open.
    advance(secs(4)).await;
    assert_eq!(run(&mut svc, Do::Ok).await, Err(Some(secs(6))));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failures_that_slid_out_do_not_open() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(100))
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner(Arc::default()));
    for _ in 0..40 {
        run(&mut svc, Do::Fail).await.unwrap();
    }
    for _ in 0..100 {
        run(&mut svc, Do::Ok).await.unwrap();
    }
    for _ in 0..40 {
        run(&mut svc, Do::Fail).await.unwrap();
    }
    // A cumulative count would hold 80 failures of 180; the window holds 40 of 100.
    let stats = handle.stats();
    assert_eq!(stats.state, State::Closed);
    assert_eq!((stats.window.calls, stats.window.failures), (100, 40));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn time_window_evicts_on_time_not_calls() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::time(secs(10), 10))
        .minimum_calls(4)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner(Arc::default()));
    for _ in 0..3 {
        run(&mut svc, Do::Fail).await.unwrap();
    }
    assert_eq!(handle.stats().window.failures, 3);
    // Ten seconds later, with no call in between, they are gone.
    advance(secs(10)).await;
    assert_eq!(handle.stats().window.calls, 0);
    // So a fourth failure does not trip (1 call < minimum 4).
    run(&mut svc, Do::Fail).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    for _ in 0..3 {
        let _ = run(&mut svc, Do::Fail).await;
    }
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn slow_successes_trip() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::count(10))
        .minimum_calls(4)
        .slow_calls(secs(1), 0.5)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner(Arc::default()));
    run(&mut svc, Do::Slow(Duration::from_millis(900)))
        .await
        .unwrap();
    run(&mut svc, Do::Ok).await.unwrap();
    run(&mut svc, Do::Slow(secs(2))).await.unwrap();
    assert_eq!(handle.stats().window.slow, 1);
    assert_eq!(handle.state(), State::Closed);
    // Second slow call: 2 of 4 slow (all succeeded) reaches 0.5.
    assert_eq!(run(&mut svc, Do::Slow(secs(2))).await, Ok(true));
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn exactly_n_probes_under_100_concurrent_callers() {
    const PROBES: u32 = 3;
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .permitted_probes(PROBES)
        .open_duration(secs(5))
        .max_half_open(None)
        .build()
        .unwrap();
    let handle = layer.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let inner = {
        let (calls, gate) = (calls.clone(), gate.clone());
        tower::service_fn(move |fail: bool| {
            calls.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            async move {
                // Probes hang until the test opens the gate.
                gate.acquire().await.unwrap().forget();
                if fail {
                    Err(std::io::Error::other("boom"))
                } else {
                    Ok(())
                }
            }
        })
    };
    let svc = layer.layer(inner);
    gate.add_permits(1);
    assert!(svc.clone().oneshot(true).await.is_err());
    assert_eq!(handle.state(), State::Open);
    advance(secs(5)).await;

    let mut tasks = Vec::new();
    for _ in 0..100 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { svc.oneshot(false).await }));
    }
    // Let every caller reach the breaker.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1 + PROBES as usize);
    assert_eq!(handle.state(), State::HalfOpen);
    gate.add_permits(100);
    let mut open = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => {}
            Err(e) => {
                assert!(e.is::<CircuitOpen>());
                open += 1;
            }
        }
    }
    assert_eq!(open, 100 - PROBES as usize);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn max_half_open_reopens_when_probes_never_finish() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(secs(5))
        .max_half_open(Some(secs(3)))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner(Arc::default()));
    run(&mut svc, Do::Fail).await.unwrap();
    advance(secs(5)).await;
    // A probe that hangs (kept alive, never polled to completion).
    let probe = svc.ready().await.unwrap().call(Do::Slow(secs(3600)));
    assert_eq!(handle.state(), State::HalfOpen);
    advance(secs(3)).await;
    assert_eq!(handle.state(), State::Open);
    assert_eq!(run(&mut svc, Do::Ok).await, Err(Some(secs(5))));
    drop(probe);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_calls_are_not_recorded_and_free_probe_slots() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(secs(5))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner(Arc::default()));
    drop(svc.ready().await.unwrap().call(Do::Fail));
    assert_eq!(handle.stats().window.calls, 0);
    assert_eq!(handle.state(), State::Closed);
    run(&mut svc, Do::Fail).await.unwrap();
    advance(secs(5)).await;
    let probe = svc.ready().await.unwrap().call(Do::Ok);
    assert!(run(&mut svc, Do::Ok).await.is_err(), "one probe only");
    drop(probe);
    // The dropped probe handed its slot back.
    assert_eq!(run(&mut svc, Do::Ok).await, Ok(true));
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn open_durations_grow_and_reset_after_healthy_period() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(secs(1))
        .open_backoff(OpenBackoff::exponential(2.0, secs(5)).reset_after(secs(30)))
        .build()
        .unwrap();
    let mut svc = layer.layer(inner(Arc::default()));
    run(&mut svc, Do::Fail).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let Err(Some(d)) = run(&mut svc, Do::Ok).await else {
            panic!("open")
        };
        seen.push(d);
        advance(d).await;
        // The probe fails: open again, longer.
        assert_eq!(run(&mut svc, Do::Fail).await, Ok(false));
    }
    assert_eq!(seen, [secs(1), secs(2), secs(4), secs(5)]);
    advance(secs(5)).await;
    assert_eq!(run(&mut svc, Do::Ok).await, Ok(true));
    // Healthy for 30 s: the next trip is back to one second.
    advance(secs(30)).await;
    run(&mut svc, Do::Fail).await.unwrap();
    assert_eq!(run(&mut svc, Do::Ok).await, Err(Some(secs(1))));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn manual_states_and_transition_callback() {
    let seen: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .on_transition({
            let seen = seen.clone();
            move |t| seen.lock().unwrap().push(*t)
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(inner(calls.clone()));

    handle.force_open();
    assert_eq!(run(&mut svc, Do::Ok).await, Err(None));
    advance(secs(3600)).await;
    assert_eq!(
        run(&mut svc, Do::Ok).await,
        Err(None),
        "forced open never probes"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    handle.disable();
    for _ in 0..5 {
        assert_eq!(run(&mut svc, Do::Fail).await, Ok(false));
    }
    assert_eq!(handle.stats().window.calls, 0, "disabled records nothing");

    handle.metrics_only();
    for _ in 0..5 {
        assert_eq!(run(&mut svc, Do::Fail).await, Ok(false));
    }
    assert_eq!(handle.state(), State::MetricsOnly);
    assert_eq!(
        handle.stats().window.failures,
        5,
        "recorded: a run of five, never tripped"
    );

    handle.reset();
    assert_eq!(run(&mut svc, Do::Fail).await, Ok(false));
    assert_eq!(handle.state(), State::Open);

    let seen: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        seen,
        [
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Disabled),
            (State::Disabled, State::MetricsOnly),
            (State::MetricsOnly, State::Closed),
            (State::Closed, State::Open),
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn not_ready_when_open_routes_around() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(secs(5))
        .not_ready_when_open(true)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner(Arc::default()));
    let mut task = tokio_test::task::spawn(());
    tokio_test::assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    let _ = svc.call(Do::Fail).await;
    assert_eq!(handle.state(), State::Open);
    tokio_test::assert_pending!(task.enter(|cx, _| svc.poll_ready(cx)));
    advance(secs(4)).await;
    assert!(!task.is_woken());
    advance(secs(1)).await;
    // Woken when it turns half-open; the probe is reserved in poll_ready.
    assert!(task.is_woken());
    tokio_test::assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(handle.state(), State::HalfOpen);
    // A clone does not inherit the reservation: it is not ready (no probe slot left).
    let mut clone = svc.clone();
    let mut clone_task = tokio_test::task::spawn(());
    tokio_test::assert_pending!(clone_task.enter(|cx, _| clone.poll_ready(cx)));
    assert!(!clone_task.is_woken());
    assert!(svc.call(Do::Ok).await.is_ok());
    assert_eq!(handle.state(), State::Closed);
    // The parked clone is woken by the transition itself, not by a timer.
    assert!(clone_task.is_woken());
    tokio_test::assert_ready_ok!(clone_task.enter(|cx, _| clone.poll_ready(cx)));
}

/// A parked not-ready clone is woken by every state change: a reset through the handle,
/// and a forced open ended by the handle (no timer could wake it: the wait is unknown).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn not_ready_clone_is_woken_by_manual_transitions() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(secs(3600))
        .not_ready_when_open(true)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner(Arc::default()));
    handle.force_open();
    let mut task = tokio_test::task::spawn(());
    tokio_test::assert_pending!(task.enter(|cx, _| svc.poll_ready(cx)));
    advance(secs(7200)).await;
    assert!(!task.is_woken(), "forced open has no timer");
    handle.reset();
    assert!(task.is_woken());
    tokio_test::assert_ready_ok!(task.enter(|cx, _| svc.poll_ready(cx)));
    let _ = svc.call(Do::Fail).await;
    assert_eq!(handle.state(), State::Open);
    tokio_test::assert_pending!(task.enter(|cx, _| svc.poll_ready(cx)));
    handle.reset();
    assert!(
        task.is_woken(),
        "a reset wakes a task parked on an open breaker"
    );
}

/// A half-open probe slot handed back (the probe's future dropped) wakes a parked clone,
/// which then takes the slot.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn not_ready_clone_is_woken_when_a_probe_slot_frees() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(secs(5))
        .max_half_open(None)
        .not_ready_when_open(true)
        .build()
        .unwrap();
    let mut svc = layer.layer(inner(Arc::default()));
    let _ = run(&mut svc, Do::Fail).await;
    advance(secs(5)).await;
    let mut prober = svc.clone();
    tokio_test::assert_ready_ok!(tokio_test::task::spawn(()).enter(|cx, _| prober.poll_ready(cx)));
    let probe = prober.call(Do::Slow(secs(1000)));
    let mut clone = svc.clone();
    let mut task = tokio_test::task::spawn(());
    tokio_test::assert_pending!(task.enter(|cx, _| clone.poll_ready(cx)));
    drop(probe);
    assert!(task.is_woken());
    tokio_test::assert_ready_ok!(task.enter(|cx, _| clone.poll_ready(cx)));
}

/// Default mode: an open breaker is ready without polling the inner service, so over a
/// stalled dependency (never ready) callers are rejected at once instead of waiting, and
/// nothing below is polled (or reserved) for a call that will not be made.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn open_breaker_rejects_at_once_over_a_stalled_inner_service() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(secs(30))
        .build()
        .unwrap();
    let handle = layer.handle();
    let polls = Arc::new(AtomicUsize::new(0));
    let (mock, mut upstream) = tower_test::mock::pair::<Do, ()>();
    let counted = Arc::clone(&polls);
    let inner = PollCounter {
        inner: mock,
        polls: counted,
    };
    let mut svc = tower_test::mock::Spawn::new(layer.layer(inner));
    upstream.allow(1);
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let failed = tokio::spawn(svc.call(Do::Fail));
    let (_, send) = upstream.next_request().await.unwrap();
    send.send_error("boom");
    assert!(failed.await.unwrap().is_err());
    assert_eq!(handle.state(), State::Open);
    // The dependency now never becomes ready.
    upstream.allow(0);
    let before = polls.load(Ordering::SeqCst);
    for _ in 0..3 {
        tokio_test::assert_ready_ok!(svc.poll_ready());
        let err = svc.call(Do::Ok).await.unwrap_err();
        assert!(err.is::<CircuitOpen>());
    }
    assert_eq!(
        polls.load(Ordering::SeqCst),
        before,
        "inner polled while open"
    );
}

#[derive(Clone)]
struct PollCounter<S> {
    inner: S,
    polls: Arc<AtomicUsize>,
}

impl<S: Service<Do>> Service<Do> for PollCounter<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Do) -> S::Future {
        self.inner.call(req)
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn http_classifier_counts_5xx() {
    use palisade_core::classify::HttpClassifier;
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(2))
        .classify(HttpClassifier::default())
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(|status: u16| async move {
        Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
    }));
    // Each call is preceded by its own `poll_ready` (tower's contract: the breaker
    // reserves its decision there).
    for status in [503, 404] {
        svc.ready().await.unwrap().call(status).await.unwrap();
    }
    assert_eq!(
        handle.stats().window.failures,
        0,
        "4xx is a success for the breaker"
    );
    for status in [500, 502] {
        svc.ready().await.unwrap().call(status).await.unwrap();
    }
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn clones_and_services_of_one_layer_share_the_breaker() {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(2))
        .build()
        .unwrap();
    let mut a = layer.layer(inner(Arc::default()));
    let mut b = layer.layer(inner(Arc::default())).clone();
    run(&mut a, Do::Fail).await.unwrap();
    run(&mut b, Do::Fail).await.unwrap();
    assert!(run(&mut a, Do::Ok).await.is_err());
    assert_eq!(a.handle().state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ignored_outcomes_count_as_neither_and_free_probe_slots() {
    use palisade_core::Outcome;
    // Requests that succeed are successes; `Do::Fail` is ignored (e.g. a client error).
    let classify = |r: &Result<(), BoxError>| match r {
        Ok(()) => Outcome::success(),
        Err(e) if e.to_string() == "boom" => Outcome::ignored(),
        Err(_) => Outcome::failure(),
    };
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(1))
        .open_duration(secs(1))
        .classify(classify)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(inner(Arc::default()));
    for _ in 0..10 {
        assert_eq!(run(&mut svc, Do::Fail).await, Ok(false));
    }
    assert_eq!(handle.stats().window.calls, 0);
    assert_eq!(handle.state(), State::Closed);
    handle.trip();
    advance(secs(1)).await;
    // An ignored probe hands its slot back: the next call may probe and close it.
    assert_eq!(run(&mut svc, Do::Fail).await, Ok(false));
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(run(&mut svc, Do::Ok).await, Ok(true));
    assert_eq!(handle.state(), State::Closed);
}
