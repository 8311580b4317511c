//! A circuit breaker through an outage: the upstream fails every call from 2 s to 5 s.
//! The breaker opens after 5 failures in a row, fails fast (no upstream call) while open,
//! probes every second, and closes on the first success after the outage.
//!
//! ```text
//! cargo run -p palisade-examples --bin breaker_outage
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::breaker::{CircuitBreakerLayer, FailureModel};
use palisade::{BoxError, ServiceBuilderExt};
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let upstream_calls = Arc::new(AtomicU64::new(0));
    let calls = upstream_calls.clone();
    let upstream = service_fn(move |_: ()| {
        calls.fetch_add(1, Ordering::SeqCst);
        let t = start.elapsed();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if t >= Duration::from_secs(2) && t < Duration::from_secs(5) {
                Err::<(), BoxError>("upstream down".into())
            } else {
                Ok(())
            }
        }
    });
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let log = transitions.clone();
    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(5))
        .open_duration(Duration::from_secs(1))
        .on_transition(move |t| {
            log.lock()
                .unwrap()
                .push((start.elapsed(), format!("{:?} → {:?}", t.from, t.to)))
        })
        .build()?;
    let svc = ServiceBuilder::new()
        .circuit_breaker(breaker)
        .service(upstream);

    // One call every 50 ms for 7 s.
    let (mut ok, mut failed, mut fast) = (0, 0, 0);
    for i in 0..140u64 {
        tokio::time::sleep_until(start + Duration::from_millis(50 * i)).await;
        match svc.clone().oneshot(()).await {
            Ok(()) => ok += 1,
            Err(e) if e.is::<palisade::CircuitOpen>() => fast += 1,
            Err(_) => failed += 1,
        }
    }
    println!("140 calls over 7 s, the upstream down from 2 s to 5 s (paused time)\n");
    for (at, t) in transitions.lock().unwrap().iter() {
        println!("  {:>5.2} s  {t}", at.as_secs_f64());
    }
    println!(
        "\nsucceeded {ok}, failed at the upstream {failed}, failed fast while open {fast}; the upstream saw {} calls, not 140",
        upstream_calls.load(Ordering::SeqCst)
    );
    Ok(())
}
