use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{BoxError, Outcome, Overloaded};
use palisade_limit::adaptive::{AdaptiveLimitLayer, Aimd, Algorithm, Sample};
use tokio::time;
use tokio_test::{assert_pending, task};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_test::mock;

/// An algorithm that records the samples it is fed and returns a fixed limit.
#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Sample>>>, usize);
impl Algorithm for Recorder {
    fn initial_limit(&self) -> usize {
        4
    }
    fn update(&mut self, s: &Sample) -> usize {
        self.0.lock().unwrap().push(*s);
        self.1
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn windows_fold_into_samples_and_resize_the_limit() {
    let rec = Recorder(Default::default(), 7);
    let layer = AdaptiveLimitLayer::builder(rec.clone())
        .window(Duration::from_millis(100), 3)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|ms: u64| async move {
        time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(())
    }));
    assert_eq!(handle.limit(), 4);
    // Three calls of 10, 20, 30 ms, then the window is old enough: one sample, RTT averaged.
    for ms in [10, 20, 30] {
        svc.clone().oneshot(ms).await.unwrap();
    }
    assert!(
        rec.0.lock().unwrap().is_empty(),
        "window not yet 100 ms old"
    );
    time::advance(Duration::from_millis(100)).await;
    svc.clone().oneshot(40).await.unwrap();
    let samples = rec.0.lock().unwrap().clone();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].rtt, Duration::from_millis(25)); // (10+20+30+40)/4
    assert!(!samples[0].dropped);
    assert_eq!(handle.limit(), 7);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn overloaded_outcomes_are_drops_and_local_sheds_are_not_samples() {
    let rec = Recorder(Default::default(), 1);
    let layer = AdaptiveLimitLayer::builder(rec.clone())
        .reject()
        .window(Duration::ZERO, 1)
        .classify(|r: &Result<(), BoxError>| match r {
            Ok(()) => Outcome::success(),
            Err(_) => Outcome::failure().with_overloaded(true),
        })
        .build()
        .unwrap();
    let (mut svc, mut upstream) = mock::spawn_layer::<(), (), _>(layer);
    upstream.allow(10);
    // Fill the limit of 4 and shed a fifth call locally: the shed is not a sample.
    let mut held = Vec::new();
    for _ in 0..4 {
        assert!(svc.poll_ready().is_ready());
        held.push(task::spawn(svc.call(())));
    }
    for h in &mut held {
        assert_pending!(h.poll());
    }
    assert!(svc.poll_ready().is_ready());
    let shed = svc.call(()).await.unwrap_err();
    assert!(shed.is::<Overloaded>());
    assert!(rec.0.lock().unwrap().is_empty());
    // The upstream answers one with an error: a drop.
    let (_, send) = upstream.next_request().await.unwrap();
    send.send_error("429");
    let _ = held[0].poll();
    let samples = rec.0.lock().unwrap().clone();
    assert_eq!(samples.len(), 1);
    assert!(samples[0].dropped);
    // A future dropped before completing records nothing.
    drop(held.pop());
    assert_eq!(rec.0.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_backs_off_on_drops_in_a_window() {
    let layer = AdaptiveLimitLayer::builder(Aimd::new(50, 1, 100))
        .window(Duration::ZERO, 1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>(Box::new(palisade_core::Elapsed::new()))
        } else {
            Ok(())
        }
    }));
    // `Elapsed` is classified (ErrorsAsFailures) as overloaded: each one is a drop.
    let _ = svc.clone().oneshot(true).await;
    assert_eq!(handle.limit(), 40); // 50 × the default backoff, 0.8
}

/// The happy path allocates nothing per call.
#[test]
fn happy_path_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let layer = AdaptiveLimitLayer::builder(Aimd::default())
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|r: u64| {
        std::future::ready(Ok::<_, BoxError>(r))
    }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut one = |i: u64| {
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        assert!(matches!(pin!(svc.call(i)).poll(&mut cx), Poll::Ready(Ok(n)) if n == i));
    };
    one(0);
    let info = allocation_counter::measure(|| {
        for i in 0..1_000 {
            one(i);
        }
    });
    assert_eq!(info.count_total, 0);
}

/// An adaptive limit whose queue serves by criticality, under 4× overload of a dependency
/// that sheds (fast `Overloaded` from the dependency) above its capacity: the limit adapts
/// to the capacity, critical calls are never shed locally, sheddable ones absorb the
/// sheds.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn adaptive_with_criticality_sheds_sheddable_first_under_overload() {
    use palisade_core::{Origin, WithDeadline};
    use palisade_limit::adaptive::{AdaptiveLimitLayer, Aimd};
    use palisade_limit::criticality::Criticality;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::{ServiceBuilder, ServiceExt};

    const CAPACITY: usize = 20;
    type Req = WithDeadline<Criticality>;
    let in_flight = Arc::new(AtomicUsize::new(0));
    // A named async fn, not a closure returning `BoxError`: closures of that shape hit
    // rustc's "implementation of `From` is not general enough" inside `tokio::spawn`.
    async fn serve(in_flight: Arc<AtomicUsize>) -> Result<(), palisade_core::BoxError> {
        let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let result = if n > CAPACITY {
            // The dependency's own "too busy": evidence, not a local shed.
            let busy = palisade_core::Overloaded::new().with_origin(Origin::Dependency);
            Err(busy.into())
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        };
        in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
    let upstream = {
        let in_flight = Arc::clone(&in_flight);
        tower::service_fn(move |_req: Req| serve(Arc::clone(&in_flight)))
    };
    let layer = AdaptiveLimitLayer::builder(Aimd::new(10, 1, 200))
        .window(Duration::from_millis(20), 5)
        .queue(40, Duration::from_millis(200))
        .criticality(|r: &Req| r.request)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(upstream);

    // 80 closed-loop clients (4x capacity): 1/5 critical, 1/5 default, 3/5 sheddable.
    let stop = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut clients = Vec::new();
    for i in 0..80 {
        let class = match i % 5 {
            0 => Criticality::Critical,
            1 => Criticality::Default,
            _ => Criticality::Sheddable,
        };
        let svc = svc.clone();
        clients.push(tokio::spawn(async move {
            let (mut ok, mut shed, mut upstream_busy) = (0u32, 0u32, 0u32);
            while tokio::time::Instant::now() < stop {
                match svc.clone().oneshot(WithDeadline::new(class)).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        let local =
                            palisade_core::find_rejection(e.as_ref()).is_some_and(|r| r.is_local());
                        if local {
                            shed += 1;
                        } else {
                            upstream_busy += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (class, ok, shed, upstream_busy)
        }));
    }
    let mut by_class = std::collections::HashMap::new();
    for c in clients {
        let (class, ok, shed, busy) = c.await.unwrap();
        let e = by_class.entry(class).or_insert((0u32, 0u32, 0u32));
        e.0 += ok;
        e.1 += shed;
        e.2 += busy;
    }
    let critical = by_class[&Criticality::Critical];
    let sheddable = by_class[&Criticality::Sheddable];
    println!(
        "critical {critical:?}, default {:?}, sheddable {sheddable:?}, limit {}",
        by_class[&Criticality::Default],
        handle.limit()
    );
    assert_eq!(critical.1, 0, "a critical call was shed locally");
    assert!(
        critical.0 > 1000,
        "critical calls were served: {critical:?}"
    );
    assert!(
        sheddable.1 > 100,
        "sheddable calls absorbed the sheds: {sheddable:?}"
    );
    assert!(
        handle.limit() <= 2 * CAPACITY,
        "the limit adapted to the capacity: {}",
        handle.limit()
    );
    assert_eq!(handle.in_flight(), 0);
}
