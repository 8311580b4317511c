//! The canonical client stack around a hyper-util client, against an upstream that sheds
//! once (503 + `Retry-After: 1`), hangs, and fails: what the caller saw and how often the
//! upstream was called.
//!
//! ```text
//! cargo run -p palisade-examples --bin hyper_client
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use palisade::breaker::{CircuitBreakerLayer, FailureModel};
use palisade::classify::HttpClassifier;
use palisade::hedge::{HedgeDelay, HedgeLayer};
use palisade::limit::ConcurrencyLimitLayer;
use palisade::rate::{quota, RateLimitLayer};
use palisade::retry::RetryLayer;
use palisade::{BoxError, ServiceBuilderExt};
use palisade_examples::{http_client, serve};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let (c1, c2, c3) = (calls.clone(), calls.clone(), calls.clone());
    let shed_once = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/shed",
            get(move || {
                c1.fetch_add(1, Ordering::SeqCst);
                let first = shed_once.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "1")],
                            "busy",
                        )
                            .into_response()
                    } else {
                        "ok".into_response()
                    }
                }
            }),
        )
        .route(
            "/hang",
            get(move || {
                c2.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }
            }),
        )
        .route(
            "/fail",
            get(move || {
                c3.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::INTERNAL_SERVER_ERROR }
            }),
        );
    let addr = serve(app).await;

    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(8))
        .classify(HttpClassifier::new())
        .build()?;
    let state = breaker.handle();
    let stack = ServiceBuilder::new()
        .deadline(Duration::from_secs(3))
        .retries(
            RetryLayer::builder()
                .classify(HttpClassifier::new())
                .build()?,
        )
        .hedge(
            HedgeLayer::builder(HedgeDelay::fixed(Duration::from_millis(200)))
                .classify(HttpClassifier::new())
                .build()?,
        )
        .circuit_breaker(breaker)
        .rate_limiter(
            RateLimitLayer::new(quota(100, Duration::from_secs(1))?)
                .wait(Duration::from_millis(100)),
        )
        .concurrency_limiter(ConcurrencyLimitLayer::new(32))
        .attempt_timeout(Duration::from_millis(500))
        .service(http_client::<Empty<Bytes>>());

    println!("deadline 3 s → retry (3 attempts, budgeted) → hedge after 200 ms → breaker (8 in a row) → rate 100/s → limit 32 → 500 ms per attempt\n");
    for path in [
        "/shed", "/hang", "/fail", "/fail", "/fail", "/fail", "/fail", "/fail",
    ] {
        let before = calls.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let req = http::Request::get(format!("http://{addr}{path}")).body(Empty::new())?;
        let outcome = match stack.clone().oneshot(req).await {
            Ok(res) => format!("HTTP {}", res.status().as_u16()),
            Err(e) if e.is::<palisade::CircuitOpen>() => "error: circuit open".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        println!(
            "GET {path:<6} → {outcome:<28} in {:>7.1} ms, {} upstream call(s), breaker {:?}",
            t0.elapsed().as_secs_f64() * 1e3,
            calls.load(Ordering::SeqCst) - before,
            state.state()
        );
    }
    println!("\n/shed: the 503's Retry-After is waited out, then served; /hang: each attempt times out at 500 ms (hedged after 200 ms), within the 3 s deadline; /fail: a 500 is not retried, and once 8 attempts in a row have failed (the hung ones count: they measured the upstream) the breaker fails fast without calling");
    Ok(())
}
