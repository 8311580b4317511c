//! Every metric the docs name for the concurrency limit is emitted, with the layer's name,
//! and the gauges follow calls in and out.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use palisade::limit::ConcurrencyLimitLayer;
use palisade::{BoxError, ServiceBuilderExt};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

/// The value of the series `line_start` in Prometheus text, if present.
fn value(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_limit_emits_in_flight_queued_and_queue_wait() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // Layers register their series when built: build under the recorder.
    let layer = metrics::with_local_recorder(&recorder, || {
        ConcurrencyLimitLayer::builder(1)
            .name("db")
            .queue(8, Duration::from_secs(5))
            .build()
            .unwrap()
    });
    let svc = ServiceBuilder::new()
        .concurrency_limiter(layer)
        .service(service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(ms)
        }));

    let mut first = svc.clone();
    let running = first.ready().await.unwrap().call(100);
    let mut second = svc.clone();
    let queued = tokio::spawn(async move { second.ready().await.unwrap().call(0).await });
    tokio::task::yield_now().await;

    let text = handle.render();
    let series = |m: &str| {
        value(
            &text,
            &format!("{m}{{policy=\"concurrency_limit\",name=\"db\"}}"),
        )
    };
    assert_eq!(series("palisade_in_flight"), Some(1.0), "{text}");
    assert_eq!(series("palisade_queued"), Some(1.0), "{text}");
    assert_eq!(series("palisade_limit"), Some(1.0), "{text}");

    running.await.unwrap();
    queued.await.unwrap().unwrap();
    let text = handle.render();
    let series = |m: &str| {
        value(
            &text,
            &format!("{m}{{policy=\"concurrency_limit\",name=\"db\"}}"),
        )
    };
    assert_eq!(series("palisade_in_flight"), Some(0.0), "{text}");
    assert_eq!(series("palisade_queued"), Some(0.0), "{text}");
    // The queued call waited the first one's 100 ms.
    let wait = value(
        &text,
        "palisade_queue_wait_seconds_sum{policy=\"concurrency_limit\",name=\"db\"}",
    );
    assert!(wait.is_some_and(|w| (0.099..=0.101).contains(&w)), "{text}");
    let _ = svc.oneshot(0).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_rate_limit_counts_decisions_under_its_name() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let layer = metrics::with_local_recorder(&recorder, || {
        palisade::rate::RateLimitLayer::new(
            palisade::rate::quota(1, Duration::from_secs(60)).unwrap(),
        )
        .name("api")
    });
    let svc = ServiceBuilder::new()
        .rate_limiter(layer)
        .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    svc.clone().oneshot(1).await.unwrap();
    svc.oneshot(2).await.unwrap_err();
    let text = handle.render();
    let at = |d: &str| {
        value(
            &text,
            &format!(
                "palisade_decisions_total{{policy=\"rate_limit\",name=\"api\",decision=\"{d}\"}}"
            ),
        )
    };
    assert_eq!(at("admitted"), Some(1.0), "{text}");
    assert_eq!(at("rejected"), Some(1.0), "{text}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_criticality_queue_counts_evictions_and_sheds() {
    use palisade::limit::criticality::Criticality;
    use palisade::WithDeadline;

    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let layer = metrics::with_local_recorder(&recorder, || {
        ConcurrencyLimitLayer::builder(1)
            .name("classes")
            .queue(1, Duration::from_secs(5))
            .criticality(|r: &WithDeadline<Criticality>| r.request)
            .build()
            .unwrap()
    });
    let svc = ServiceBuilder::new()
        .concurrency_limiter(layer)
        .service(service_fn(|_: WithDeadline<Criticality>| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, BoxError>(())
        }));
    let call = |c| {
        let mut svc = svc.clone();
        tokio::spawn(async move { svc.ready().await?.call(WithDeadline::new(c)).await })
    };
    let running = call(Criticality::Sheddable);
    tokio::task::yield_now().await;
    let evicted = call(Criticality::Sheddable);
    tokio::task::yield_now().await;
    let critical = call(Criticality::Critical);
    tokio::task::yield_now().await;
    let shed = call(Criticality::Default);
    tokio::task::yield_now().await;
    assert!(evicted.await.unwrap().is_err());
    assert!(shed.await.unwrap().is_err());

    let text = handle.render();
    let series = |m: &str| {
        value(
            &text,
            &format!("{m}{{policy=\"concurrency_limit\",name=\"classes\"}}"),
        )
    };
    let decision = |d: &str| {
        value(
            &text,
            &format!(
                "palisade_decisions_total{{policy=\"concurrency_limit\",name=\"classes\",decision=\"{d}\"}}"
            ),
        )
    };
    assert_eq!(decision("evicted"), Some(1.0), "{text}");
    assert_eq!(decision("shed"), Some(1.0), "{text}");
    assert_eq!(series("palisade_queued"), Some(1.0), "{text}");
    running.await.unwrap().unwrap();
    critical.await.unwrap().unwrap();
    assert_eq!(
        value(
            &handle.render(),
            "palisade_queued{policy=\"concurrency_limit\",name=\"classes\"}"
        ),
        Some(0.0)
    );
}
