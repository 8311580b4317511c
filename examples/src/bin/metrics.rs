//! Palisade's metrics in Prometheus text: a recorder from `metrics-exporter-prometheus`
//! installed before the layers are built, a named stack driven through a shed, a breaker
//! trip and some retries, then the series it printed — and a check that each one the docs
//! name for these layers is there.
//!
//! ```text
//! cargo run -p palisade-examples --bin metrics
//! ```

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use palisade::breaker::{CircuitBreakerLayer, FailureModel};
use palisade::limit::ConcurrencyLimitLayer;
use palisade::replay::CloneAll;
use palisade::retry::{Backoff, RetryLayer};
use palisade::{BoxError, ServiceBuilderExt, WithDeadline};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Install first: layers register their series when they are built.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let stack = ServiceBuilder::new()
        .retries(
            RetryLayer::builder()
                .policy(CloneAll)
                .name("catalog")
                .backoff(Backoff::exponential(Duration::from_millis(1)))
                .build()?,
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .name("catalog")
                .failure_model(FailureModel::count(20))
                .failure_rate(0.3)
                .minimum_calls(10)
                .build()?,
        )
        .concurrency_limiter(
            ConcurrencyLimitLayer::builder(4)
                .name("catalog")
                .queue(16, Duration::from_millis(25))
                .build()?,
        )
        .service(service_fn(|req: WithDeadline<u32>| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if req.request.is_multiple_of(3) {
                Err::<u32, std::io::Error>(std::io::Error::other("flaky"))
            } else {
                Ok(req.request)
            }
        }));

    // 30 calls at once: some queue, some are shed, a third fail (and fail again when
    // retried), and the breaker trips at 30 % failures.
    let mut tasks = Vec::new();
    for n in 0..30 {
        tasks.push(tokio::spawn(stack.clone().oneshot(WithDeadline::new(n))));
    }
    let mut outcomes = (0, 0);
    for t in tasks {
        match t.await? {
            Ok(_) => outcomes.0 += 1,
            Err(_) => outcomes.1 += 1,
        }
    }
    println!("30 calls: {} ok, {} failed\n", outcomes.0, outcomes.1);

    let text = prometheus.render();
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("palisade_") && l.contains("name=\"catalog\""))
        .collect();
    for line in &ours {
        println!("{line}");
    }
    for series in [
        "palisade_decisions_total",
        "palisade_in_flight",
        "palisade_queued",
        "palisade_limit",
        "palisade_queue_wait_seconds",
        "palisade_state",
        "palisade_transitions_total",
        "palisade_attempts_total",
    ] {
        if !ours.iter().any(|l| l.starts_with(series)) {
            return Err(format!("{series} was not exported").into());
        }
    }
    println!("\nevery series the docs name for a limit, a breaker and a retry was exported");
    Ok(())
}
