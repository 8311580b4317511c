//! HTTP over loopback: requests per second through an axum server, bare, behind
//! Palisade's server stack, and behind tower-resilience's closest one, driven by a load
//! generator written with hyper's client connections (64 keep-alive HTTP/1.1 connections,
//! each sending its next request when the last one answered). Writes
//! `target/palisade-http-loopback.json`.
//!
//! `cargo bench -p palisade-benches --bench main -- http-loopback`
//!
//! Real time and real sockets, unavoidably: the absolute figures depend on the machine and
//! on what else it runs, so the servers are measured interleaved, round after round, and
//! the table gives each one's median throughput and its ratio to bare axum's in the same
//! rounds. Nothing is ever rejected: every limit is far above the offered load, so what
//! is measured is the stack's cost on the happy path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade::deadline::ServerDeadlineLayer;
use palisade::http::RejectionResponseLayer;
use palisade::limit::ConcurrencyLimitLayer;
use palisade::rate::{quota, RateLimitLayer};
use palisade::{BoxError, ServiceBuilderExt};
use palisade_benches::Report;
use tokio::time::Instant;
use tower::ServiceBuilder;

const GROUP: &str = "http-loopback";
const CONNECTIONS: usize = 64;
const RUN: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Bare,
    Palisade,
    TowerResilience,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Bare => "axum bare",
            Server::Palisade => "palisade server stack (responses, deadline, rate, concurrency)",
            Server::TowerResilience => "tower-resilience (rate limiter, bulkhead, time limiter)",
        }
    }
}

fn app() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// The app behind `server`'s stack, served on a free loopback port.
async fn serve(server: Server) -> SocketAddr {
    let app = match server {
        Server::Bare => app(),
        // The axum_server example's stack, with limits far above the load.
        Server::Palisade => app().layer(
            ServiceBuilder::new()
                .rejection_responses(RejectionResponseLayer::new())
                .server_deadline(
                    ServerDeadlineLayer::new().default_timeout(Duration::from_secs(30)),
                )
                .rate_limiter(
                    RateLimitLayer::new(quota(1_000_000_000, Duration::from_secs(1)).unwrap())
                        .reject(),
                )
                .concurrency_limiter(
                    ConcurrencyLimitLayer::builder(4096)
                        .reject()
                        .build()
                        .unwrap(),
                ),
        ),
        // Its closest equivalent: the same three policies, errors answered as a 503 by
        // axum's `HandleErrorLayer` (tower-resilience has no response layer).
        Server::TowerResilience => app().layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    http::StatusCode::SERVICE_UNAVAILABLE
                }))
                .map_err(BoxError::from)
                .layer(
                    tower_resilience::ratelimiter::RateLimiterLayer::builder()
                        .limit_for_period(1_000_000_000)
                        .refresh_period(Duration::from_secs(1))
                        .build()
                        .unwrap(),
                )
                .layer(
                    tower_resilience::bulkhead::BulkheadLayer::builder()
                        .max_concurrent_calls(4096)
                        .build()
                        .unwrap(),
                )
                .layer(
                    tower_resilience::timelimiter::TimeLimiterLayer::builder()
                        .timeout_duration(Duration::from_secs(30))
                        .build(),
                ),
        ),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Requests answered 200 within `RUN` over [`CONNECTIONS`] connections to `addr`.
async fn load(addr: SocketAddr) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get("/")
                    .header("host", "127.0.0.1")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let res = send.send_request(req).await.unwrap();
                assert_eq!(res.status(), http::StatusCode::OK);
                res.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    (n as f64 / elapsed.as_secs_f64()) as u64
}

fn loopback() {
    // Server and load generator share the machine's cores, as a sidecar would.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    const SERVERS: [Server; 3] = [Server::Bare, Server::Palisade, Server::TowerResilience];
    let load_avg = palisade_benches::load_average();
    println!(
        "\n{GROUP}: {CONNECTIONS} keep-alive connections, {} ms per run, {ROUNDS} rounds interleaved (1-min load {load_avg} before)",
        RUN.as_millis()
    );
    let addrs: Vec<SocketAddr> = SERVERS.iter().map(|s| rt.block_on(serve(*s))).collect();
    // Warm-up: connections, allocator, the servers' first requests.
    for addr in &addrs {
        rt.block_on(load(*addr));
    }
    let mut rps: Vec<Vec<u64>> = vec![Vec::new(); SERVERS.len()];
    for _ in 0..ROUNDS {
        for (i, addr) in addrs.iter().enumerate() {
            rps[i].push(rt.block_on(load(*addr)));
        }
    }
    let mut results = Vec::new();
    println!("{:<66} {:>10} {:>9}", "server", "req/s", "÷ bare");
    for (i, server) in SERVERS.into_iter().enumerate() {
        // The ratio per round (same minute of machine load), then the median over rounds.
        let mut ratios: Vec<f64> = rps[i]
            .iter()
            .zip(&rps[0])
            .map(|(r, b)| *r as f64 / *b as f64)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let mut sorted = rps[i].clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let ratio = ratios[ratios.len() / 2];
        println!("{:<66} {:>10} {:>8.3}x", server.label(), median, ratio);
        results.push(serde_json::json!({
            "contender": server.label(),
            "ratio to bare axum (median of per-round ratios)": format!("{ratio:.3}x"),
            "req/s (median of rounds)": median,
        }));
    }
    let json = serde_json::json!({
        "connections": CONNECTIONS,
        "run ms": RUN.as_millis() as u64,
        "rounds": ROUNDS,
        "results": results,
    });
    let path = Report::target_dir().join("palisade-http-loopback.json");
    if let Ok(text) = serde_json::to_string_pretty(&json) {
        let _ = std::fs::write(path, text);
    }
}

pub(crate) fn benches() {
    // Not a criterion benchmark: run it when its group is selected (or nothing is filtered).
    if palisade_benches::wanted(GROUP) {
        loopback();
    }
}
