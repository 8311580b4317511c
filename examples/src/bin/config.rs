//! Stacks from config files: `examples/policy/client.toml` (the canonical client stack)
//! around a hyper client, and `examples/policy/server.yaml` around an axum server; then a
//! policy with a mistake, and the error that names the field.
//!
//! ```text
//! cargo run -p palisade-examples --bin config
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use palisade::{BoxError, ClientPolicy, Format, ServerPolicy};
use palisade_examples::{http_client, serve};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
    let server = ServerPolicy::from_file(dir.join("server.yaml"))?;
    let client = ClientPolicy::from_file(dir.join("client.toml"))?;
    println!(
        "client policy, as read back (TOML):\n\n{}",
        client.to_string_in(Format::Toml)
    );

    let app = Router::new()
        .route("/item", get(|| async { "item" }))
        .layer(server.layer()?);
    let addr = serve(app).await;

    let stack = ServiceBuilder::new()
        .layer(client.http_layer()?)
        .service(http_client::<Empty<Bytes>>());
    let mut seen = BTreeMap::new();
    let mut ratelimit = None;
    let t0 = tokio::time::Instant::now();
    for _ in 0..30 {
        let req = http::Request::get(format!("http://{addr}/item")).body(Empty::new())?;
        let res = stack.clone().oneshot(req).await?;
        if ratelimit.is_none() {
            ratelimit = res
                .headers()
                .get("ratelimit")
                .map(|v| v.to_str().unwrap_or("").to_owned());
        }
        *seen.entry(res.status().as_u16()).or_insert(0) += 1;
    }
    println!(
        "30 calls through the client stack to the server stack (20/s there): {seen:?} in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    println!("(the server's 429s carry Retry-After; the client's retry waited them out within its 2 s deadline)");
    println!(
        "RateLimit field on a success: {}",
        ratelimit.as_deref().unwrap_or("-")
    );

    let typo = "[retry.budget]\npercent = 1500\n";
    match ClientPolicy::from_toml(typo) {
        Ok(_) => unreachable!("1500 % is refused"),
        Err(e) => println!("\na bad policy is refused at build time: {e}"),
    }
    let unknown = "[retry]\nmax_attempt = 3\n";
    if let Err(e) = ClientPolicy::from_toml(unknown) {
        println!("and so is an unknown key: {e}");
    }
    Ok(())
}
