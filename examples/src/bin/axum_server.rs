//! An axum server behind Palisade's server stack: rejections answered as 429/503/504 with
//! `Retry-After`, the caller's deadline read from `x-timeout-ms`, a rate limit and a
//! concurrency limit; then 40 requests at once from a hyper client, and what they got.
//!
//! ```text
//! cargo run -p palisade-examples --bin axum_server
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::header::HeaderName;
use http_body_util::Empty;
use palisade::deadline::ServerDeadlineLayer;
use palisade::http::RejectionResponseLayer;
use palisade::limit::ConcurrencyLimitLayer;
use palisade::rate::{quota, RateLimitLayer};
use palisade::{BoxError, ServiceBuilderExt};
use palisade_examples::{http_client, serve};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Outermost first: answer rejections, read the caller's budget, rate limit, then
    // at most 8 handlers at once (16 more wait up to 50 ms for a slot).
    let policy = ServiceBuilder::new()
        .rejection_responses(RejectionResponseLayer::new().problem_json())
        .server_deadline(
            ServerDeadlineLayer::new()
                .header(HeaderName::from_static("x-timeout-ms"))
                .max(Duration::from_secs(10)),
        )
        .rate_limiter(RateLimitLayer::new(quota(30, Duration::from_secs(1))?).reject())
        .concurrency_limiter(
            ConcurrencyLimitLayer::builder(8)
                .queue(16, Duration::from_millis(50))
                .build()?,
        );
    let app = Router::new()
        .route(
            "/work",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                "done"
            }),
        )
        .layer(policy);
    let addr = serve(app).await;
    println!(
        "axum on {addr}: rate 30/s, 8 at once + 16 queued for 50 ms, deadline from x-timeout-ms\n"
    );

    let client = http_client::<Empty<Bytes>>();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        // Every fifth caller gives the server only 20 ms.
        let budget = if i % 5 == 4 { "20" } else { "5000" };
        let req = http::Request::get(format!("http://{addr}/work"))
            .header("x-timeout-ms", budget)
            .body(Empty::new())?;
        tasks.push(tokio::spawn(async move { client.oneshot(req).await }));
    }
    let mut seen: BTreeMap<u16, (usize, Option<String>)> = BTreeMap::new();
    for t in tasks {
        let res = t.await??;
        let entry = seen.entry(res.status().as_u16()).or_default();
        entry.0 += 1;
        if entry.1.is_none() {
            entry.1 = res
                .headers()
                .get("retry-after")
                .map(|v| format!("retry-after: {}", v.to_str().unwrap_or("?")));
        }
    }
    println!("{:<8} {:>6}  first header seen", "status", "calls");
    for (status, (n, header)) in &seen {
        println!("{status:<8} {n:>6}  {}", header.as_deref().unwrap_or("-"));
    }
    println!("\n200: served; 503: shed by the limit (queue full or 50 ms wait over); 504: the caller's 20 ms budget ran out; 429: over 30/s");
    Ok(())
}
