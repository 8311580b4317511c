//! Runnable examples of Palisade, and the loopback upstreams they run against.
//!
//! - `embeddings` (`cargo run -p palisade-examples --bin embeddings`): the seeds' first
//!   scenario. 1,000 "embedding" calls against an upstream that answers 429 when more than
//!   20 calls are in flight, unbounded vs limited to 10 by a shared
//!   [`ConcurrencyLimitLayer`](palisade::limit::ConcurrencyLimitLayer).
//! - `gateway` (`cargo run -p palisade-examples --bin gateway`): the seeds' gateway. 8
//!   concurrent requests, each a legacy blocking call on a
//!   [`BlockingPool`](palisade::offload::BlockingPool) and a CPU-heavy computation on a
//!   [`CpuPool`](palisade::offload::CpuPool), with a printed timeline and a 1 ms ticker on the
//!   one event-loop thread.
//! - `fleet` (`cargo run -p palisade-examples --bin fleet`): 4 worker processes share one
//!   vendor limit of 20 through a
//!   [`FleetLimitLayer`](palisade::limit::fleet::FleetLimitLayer) in a `redis-server` it
//!   starts itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

/// What a [`CappedUpstream`] saw.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    served: AtomicUsize,
    rejected: AtomicUsize,
}

impl UpstreamStats {
    /// The most calls it held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Calls answered 200.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Calls answered 429.
    pub fn rejected(&self) -> usize {
        self.rejected.load(Ordering::SeqCst)
    }
}

/// An HTTP upstream on loopback that takes `latency` per call and answers 429 (with
/// `Retry-After: 1`) to any call that arrives while `capacity` calls are already in flight,
/// like an embedding API's per-key concurrency cap.
#[derive(Debug)]
pub struct CappedUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub stats: Arc<UpstreamStats>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Upstream {
    stats: Arc<UpstreamStats>,
    capacity: usize,
    latency: Duration,
}

async fn embed(
    State(up): State<Upstream>,
) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    let now = up.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    if now > up.capacity {
        up.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        up.stats.rejected.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        );
    }
    up.stats.peak.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(up.latency).await;
    up.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    up.stats.served.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        "[0.1,0.2,0.3]",
    )
}

impl CappedUpstream {
    /// Starts it on `127.0.0.1:0`.
    ///
    /// # Errors
    /// If the listener cannot be bound.
    pub async fn start(capacity: usize, latency: Duration) -> std::io::Result<Self> {
        let stats = Arc::new(UpstreamStats::default());
        let app = Router::new()
            .route("/embed", post(embed))
            .with_state(Upstream {
                stats: stats.clone(),
                capacity,
                latency,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Ends when the task is aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, stats, task })
    }
}

impl Drop for CappedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` on `127.0.0.1:0` in a background task; returns where.
///
/// # Panics
/// If no loopback port can be bound.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The `p`-th percentile (0–100) of `samples` (sorted in place); zero if empty.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// A hyper-util client for plain HTTP/1 on loopback.
pub fn http_client<B>(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A `redis-server` on a free loopback port, stopped (killed and reaped) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections; `Ok(None)` (after saying how to
    /// install it) when `redis-server` is not on PATH.
    ///
    /// # Errors
    /// If no port can be bound or the server does not come up within 10 s.
    pub async fn start() -> Result<Option<Self>, palisade::BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = match std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                println!(
                    "this example needs `redis-server` on PATH ({e}); install it with \
                     `apt-get install -y redis-server` (or `brew install redis`) and run it again"
                );
                return Ok(None);
            }
        };
        let server = Self { child, port };
        let started = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(10) {
                return Err("redis-server did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some(server))
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
