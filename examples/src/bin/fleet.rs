//! Four worker processes share one vendor limit through Redis: the upstream answers 429
//! above 20 calls in flight, and each worker alone would happily send 20. Through a
//! `FleetLimitLayer` of 20 shared in Redis, the vendor never sees more than 20 together.
//!
//! ```text
//! cargo run -p palisade-examples --bin fleet
//! ```
//!
//! It starts its own `redis-server` on a free loopback port (and stops it at the end); if
//! `redis-server` is not on PATH it says how to install it and exits. The same binary is
//! the worker: it runs itself four times with `--worker REDIS_URL UPSTREAM_ADDR`.

use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::limit::fleet::{FleetLimitLayer, LeaseStore};
use palisade::BoxError;
use palisade_examples::{CappedUpstream, RedisServer};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

const WORKERS: usize = 4;
const VENDOR_LIMIT: usize = 20;
const CALLS_PER_WORKER: usize = 100;

/// Kills and reaps a child process when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One worker: 100 calls at once to the vendor, through the fleet-wide limit.
async fn worker(redis_url: &str, upstream: &str) -> Result<(), BoxError> {
    let conn = redis::aio::ConnectionManager::new(redis::Client::open(redis_url)?).await?;
    let layer = FleetLimitLayer::builder(LeaseStore::new(conn), "vendor", VENDOR_LIMIT)
        .expected_replicas(WORKERS)
        .queue(CALLS_PER_WORKER, Duration::from_secs(30))
        .name("vendor")
        .build()?;
    let handle = layer.handle();
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let uri = format!("http://{upstream}/embed");
    let mut tasks = Vec::new();
    for i in 0..CALLS_PER_WORKER {
        let client = client.clone();
        let req = Request::post(&uri).body(Full::new(Bytes::from(format!("chunk {i}"))))?;
        tasks.push(tokio::spawn(async move {
            let res = client.oneshot(req).await?;
            let status = res.status();
            res.into_body().collect().await?;
            Ok::<_, BoxError>(status)
        }));
    }
    let (mut ok, mut too_many, mut other) = (0, 0, 0);
    for t in tasks {
        match t.await? {
            Ok(StatusCode::OK) => ok += 1,
            Ok(StatusCode::TOO_MANY_REQUESTS) => too_many += 1,
            _ => other += 1,
        }
    }
    println!(
        "worker {}: {ok} ok, {too_many} x 429, {other} other; {} lease renewals, {} redis errors",
        std::process::id(),
        handle.renewals(),
        handle.redis_errors()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        return match (args.get(2), args.get(3)) {
            (Some(url), Some(upstream)) => worker(url, upstream).await,
            _ => Err("usage: fleet --worker REDIS_URL UPSTREAM_ADDR".into()),
        };
    }

    let Some(redis) = RedisServer::start().await? else {
        return Ok(());
    };
    let port = redis.port();

    let upstream = CappedUpstream::start(VENDOR_LIMIT, Duration::from_millis(30)).await?;
    println!(
        "{WORKERS} workers x {CALLS_PER_WORKER} calls; the vendor answers 429 above \
         {VENDOR_LIMIT} in flight; one fleet limit of {VENDOR_LIMIT} in Redis on port {port}\n"
    );
    let url = redis.url();
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let child = Command::new(&exe)
            .args(["--worker", &url, &upstream.addr.to_string()])
            .spawn()?;
        workers.push(Reaped(child));
    }
    for w in &mut workers {
        let status = tokio::task::block_in_place(|| w.0.wait())?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }
    println!(
        "\nall workers done in {:?}: the vendor served {}, answered 429 to {}, peak in flight {} (limit {VENDOR_LIMIT})",
        start.elapsed(),
        upstream.stats.served(),
        upstream.stats.rejected(),
        upstream.stats.peak()
    );
    drop(redis);
    Ok(())
}
