//! Hedging a bimodal upstream: 2 % of calls take ~400 ms instead of ~10 ms. A hedge after
//! the p95 of recent latencies sends a spare attempt for the slow ones and takes whichever
//! answers first, within a 10 % budget of extra calls.
//!
//! ```text
//! cargo run -p palisade-examples --bin hedging
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::hedge::{HedgeDelay, HedgeLayer};
use palisade::replay::CloneAll;
use palisade::{BoxError, ServiceBuilderExt};
use palisade_examples::percentile;
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

/// ~10 ms, or ~400 ms for one call in 50 (by a counter, so every run is the same).
fn upstream(
    calls: Arc<AtomicU64>,
) -> impl Service<u64, Response = u64, Error = BoxError, Future = impl Send> + Clone {
    service_fn(move |n: u64| {
        let i = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let ms = if i % 50 == 7 { 400 } else { 10 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(n)
        }
    })
}

async fn drive<S>(name: &str, svc: S, calls: &AtomicU64) -> Result<(), BoxError>
where
    S: Service<u64, Response = u64, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut latencies = Vec::new();
    let t0 = Instant::now();
    // 50 calls/s for 10 s, open loop.
    let mut tasks = Vec::new();
    for n in 0..500u64 {
        tokio::time::sleep_until(t0 + Duration::from_millis(20 * n)).await;
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            svc.oneshot(n).await.map(|_| t.elapsed())
        }));
    }
    for t in tasks {
        latencies.push(t.await??);
    }
    let upstream = calls.load(Ordering::SeqCst);
    println!(
        "{name:<24} p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms   upstream calls {upstream} (+{:.1} %)",
        percentile(&mut latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&mut latencies, 99.0).as_secs_f64() * 1e3,
        percentile(&mut latencies, 100.0).as_secs_f64() * 1e3,
        (upstream as f64 / 500.0 - 1.0) * 100.0
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    println!("500 calls at 50/s; 2 % of upstream calls take 400 ms (paused time: the same numbers every run)\n");
    let calls = Arc::new(AtomicU64::new(0));
    drive("no hedge", upstream(calls.clone()), &calls).await?;

    let calls = Arc::new(AtomicU64::new(0));
    let hedged = ServiceBuilder::new()
        .hedge(
            HedgeLayer::builder(HedgeDelay::percentile(0.95).min_samples(20))
                .policy(CloneAll)
                .budget(0.1, 10)
                .build()?,
        )
        .service(upstream(calls.clone()));
    drive("hedge at p95 (10 % cap)", hedged, &calls).await
}
