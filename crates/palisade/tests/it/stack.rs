//! The canonical stack from a TOML file and the same stack written with
//! `ServiceBuilderExt`, side by side against one scripted upstream on paused time: the
//! caller sees the same outcomes and the upstream the same calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::breaker::{CircuitBreakerLayer, FailureModel};
use palisade::hedge::{HedgeDelay, HedgeLayer};
use palisade::limit::ConcurrencyLimitLayer;
use palisade::rate::{quota, RateLimitLayer};
use palisade::replay::CloneAll;
use palisade::retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use palisade::{BoxError, ClientPolicy, ServiceBuilderExt, WithDeadline};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

/// The canonical client stack as a TOML policy (also traced in `tracing.rs`).
pub(crate) const POLICY: &str = r#"
deadline = "2s"
attempt_timeout = "300ms"

[retry]
max_attempts = 3
jitter = false
backoff = { base = "10ms", max = "100ms" }
budget = { unlimited = true }

[hedge]
delay = "100ms"
budget_percent = 100

[breaker]
consecutive_failures = 5
open_for = "30s"

[rate_limit]
requests = 1000
per = "1s"
wait = "100ms"

[concurrency]
max = 8
queue = 16
max_wait = "1s"
"#;

/// What the caller saw for one request.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Ok(u32),
    Elapsed,
    CircuitOpen,
    Other(String),
}

fn seen(r: Result<u32, BoxError>) -> Seen {
    match r {
        Ok(n) => Seen::Ok(n),
        Err(e) if e.is::<palisade::Elapsed>() => Seen::Elapsed,
        Err(e) if e.is::<palisade::CircuitOpen>() => Seen::CircuitOpen,
        Err(e) => Seen::Other(e.to_string()),
    }
}

/// The upstream: `0..10` answer at once; `100` fails its first attempt; `200` hangs;
/// `500` always fails.
fn upstream(
    calls: Arc<AtomicUsize>,
    flaky: Arc<AtomicUsize>,
) -> impl Service<WithDeadline<u32>, Response = u32, Error = BoxError, Future = impl Send> + Clone {
    service_fn(move |req: WithDeadline<u32>| {
        let n = req.request;
        calls.fetch_add(1, Ordering::SeqCst);
        let first = n == 100 && flaky.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            match n {
                200 => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(n)
                }
                500 => Err::<u32, BoxError>("upstream failed".into()),
                100 if first => Err("flaky".into()),
                n => Ok(n),
            }
        }
    })
}

async fn script<S>(stack: S) -> Vec<Seen>
where
    S: Service<WithDeadline<u32>, Response = u32, Error = BoxError> + Clone,
{
    let mut out = Vec::new();
    for n in [1, 100, 200] {
        out.push(seen(stack.clone().oneshot(WithDeadline::new(n)).await));
    }
    for _ in 0..7 {
        out.push(seen(stack.clone().oneshot(WithDeadline::new(500)).await));
    }
    out.push(seen(stack.clone().oneshot(WithDeadline::new(2)).await));
    out
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_toml_stack_behaves_as_the_hand_written_one() {
    let policy = ClientPolicy::from_toml(POLICY).unwrap();

    let (calls_a, flaky_a) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let from_file = ServiceBuilder::new()
        .layer(policy.layer().unwrap())
        .service(upstream(calls_a.clone(), flaky_a));

    let (calls_b, flaky_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let by_hand = ServiceBuilder::new()
        .deadline(Duration::from_secs(2))
        .retries(
            RetryLayer::builder()
                .policy(CloneAll)
                .max_attempts(3)
                .jitter(Jitter::none())
                .backoff(
                    Backoff::exponential(Duration::from_millis(10)).max(Duration::from_millis(100)),
                )
                .budget(RetryBudget::unlimited())
                .build()
                .unwrap(),
        )
        .hedge(
            HedgeLayer::builder(HedgeDelay::fixed(Duration::from_millis(100)))
                .policy(CloneAll)
                .budget(1.0, 10)
                .build()
                .unwrap(),
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .failure_model(FailureModel::consecutive(5))
                .open_duration(Duration::from_secs(30))
                .build()
                .unwrap(),
        )
        .rate_limiter(
            RateLimitLayer::new(quota(1000, Duration::from_secs(1)).unwrap())
                .wait(Duration::from_millis(100)),
        )
        .concurrency_limiter(
            ConcurrencyLimitLayer::builder(8)
                .queue(16, Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .attempt_timeout(Duration::from_millis(300))
        .service(upstream(calls_b.clone(), flaky_b));

    let t0 = tokio::time::Instant::now();
    let a = script(from_file).await;
    let elapsed_a = t0.elapsed();
    let t0 = tokio::time::Instant::now();
    let b = script(by_hand).await;
    let elapsed_b = t0.elapsed();

    assert_eq!(a, b);
    assert_eq!(
        calls_a.load(Ordering::SeqCst),
        calls_b.load(Ordering::SeqCst)
    );
    assert_eq!(elapsed_a, elapsed_b, "paused time: the same waits");

    // And what they saw is the canonical stack's behaviour.
    assert_eq!(a[0], Seen::Ok(1));
    assert_eq!(a[1], Seen::Ok(100), "the flaky call is retried");
    assert_eq!(
        a[2],
        Seen::Elapsed,
        "the hung call times out per attempt, within the deadline"
    );
    assert!(a[3..].contains(&Seen::CircuitOpen), "{a:?}");
    assert_eq!(
        a.last(),
        Some(&Seen::CircuitOpen),
        "still open: 30 s have not passed"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sections_left_out_are_not_layers() {
    // An empty policy is a pass-through (with the error boxed).
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(ClientPolicy::default().layer().unwrap())
        .service(upstream(calls.clone(), Arc::default()));
    assert!(matches!(
        seen(svc.clone().oneshot(WithDeadline::new(500)).await),
        Seen::Other(_)
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no retry without a retry section"
    );
}
