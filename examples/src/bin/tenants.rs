//! Per-tenant limits on an axum server: each tenant (the `x-tenant` header) gets 5
//! requests per second and 2 at once, so a noisy tenant is throttled without touching the
//! others.
//!
//! ```text
//! cargo run -p palisade-examples --bin tenants
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::HeaderName;
use http_body_util::Empty;
use palisade::http::{key, RejectionResponseLayer};
use palisade::limit::keyed::KeyedConcurrencyLimitLayer;
use palisade::rate::{quota, KeyedRateLimitLayer};
use palisade::{BoxError, ServiceBuilderExt};
use palisade_examples::{http_client, serve};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let tenant = key::header(HeaderName::from_static("x-tenant"));
    let policy = ServiceBuilder::new()
        .rejection_responses(RejectionResponseLayer::new())
        .layer(KeyedRateLimitLayer::new(
            quota(5, Duration::from_secs(1))?,
            tenant.clone(),
        ))
        .layer(KeyedConcurrencyLimitLayer::builder(2, tenant).build()?);
    let app = Router::new()
        .route(
            "/report",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "report"
            }),
        )
        .layer(policy);
    let addr = serve(app).await;

    // "noisy" sends 30 requests at once; "quiet-a" and "quiet-b" send 2 each.
    let client = http_client::<Empty<Bytes>>();
    let mut tasks = Vec::new();
    for (tenant, n) in [("noisy", 30), ("quiet-a", 2), ("quiet-b", 2)] {
        for _ in 0..n {
            let client = client.clone();
            let req = http::Request::get(format!("http://{addr}/report"))
                .header("x-tenant", tenant)
                .body(Empty::new())?;
            tasks.push(tokio::spawn(async move {
                (
                    tenant,
                    client.oneshot(req).await.map(|r| r.status().as_u16()),
                )
            }));
        }
    }
    let mut seen: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for t in tasks {
        let (tenant, status) = t.await?;
        *seen.entry((tenant, status?)).or_default() += 1;
    }
    println!("per tenant: 5 requests/s, 2 at once (keyed by x-tenant)\n");
    println!("{:<10} {:>6} {:>6}", "tenant", "status", "calls");
    for ((tenant, status), n) in &seen {
        println!("{tenant:<10} {status:>6} {n:>6}");
    }
    println!(
        "\nthe noisy tenant got 429s (rate) and 503s (concurrency); the quiet ones were all served"
    );
    Ok(())
}
