//! A worker process for the fleet-limit end-to-end tests: `concurrency` loops call a
//! loopback upstream through one `FleetLimitLayer` for `run_ms`, then it prints its counts.
//!
//! Usage: `fleet-worker REDIS_URL UPSTREAM_ADDR KEY LIMIT CONCURRENCY HOLD_MS RUN_MS TTL_MS
//! RENEW_MS`. The upstream protocol: the worker sends the hold time as a line, the upstream
//! holds the call that long and answers one byte.

use std::time::Duration;

use palisade_core::BoxError;
use palisade_limit::fleet::{FleetLimitLayer, LeaseStore};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} ({what}) missing or invalid"))
}

/// One upstream call over its own TCP connection.
async fn call_upstream(addr: String, hold_ms: u64) -> Result<(), BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(format!("{hold_ms}\n").as_bytes()).await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let url: String = arg(&args, 1, "redis url");
    let upstream: String = arg(&args, 2, "upstream address");
    let key: String = arg(&args, 3, "key");
    let limit: usize = arg(&args, 4, "limit");
    let concurrency: usize = arg(&args, 5, "concurrency");
    let hold_ms: u64 = arg(&args, 6, "hold ms");
    let run = Duration::from_millis(arg(&args, 7, "run ms"));
    let ttl = Duration::from_millis(arg(&args, 8, "ttl ms"));
    let renew = Duration::from_millis(arg(&args, 9, "renew ms"));

    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)));
    let conn = ConnectionManager::new_with_config(redis::Client::open(url)?, config).await?;
    let store = LeaseStore::new(conn).timeout(Duration::from_millis(100));
    let layer = FleetLimitLayer::builder(store, key, limit)
        .ttl(ttl)
        .renew_every(renew)
        .expected_replicas(4)
        .queue(concurrency, Duration::from_secs(5))
        .backoff(Duration::from_millis(2), Duration::from_millis(20))
        .build()?;
    let handle = layer.handle();
    let svc = layer.layer(service_fn(move |(): ()| {
        call_upstream(upstream.clone(), hold_ms)
    }));

    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            while start.elapsed() < run {
                match svc.clone().oneshot(()).await {
                    Ok(()) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (o, r) = task.await?;
        ok += o;
        refused += r;
    }
    println!(
        "admitted={ok} refused={refused} renewals={} redis_errors={} failed_open={}",
        handle.renewals(),
        handle.redis_errors(),
        handle.failed_open()
    );
    Ok(())
}
