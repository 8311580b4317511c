//! The misbehaving upstream: an HTTP service with a capacity, a latency distribution and an
//! optional outage window, reached in process (`--virtual`, paused time) or over loopback
//! TCP (real time).
//!
//! It is palisade-fault's [`HttpFaultLayer`]s over a fixed [`FaultUpstream`], behind a
//! gate that counts what arrives and enforces the capacity:
//!
//! ```text
//! gate (in flight, capacity: 429 or queueing) → outage faults (windowed)
//!      → slow-share faults → latency faults → 200
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use palisade_core::BoxError;
use palisade_fault::{FaultHandle, FaultLayer, FaultService, HttpFaultLayer, Latency};
use palisade_fault::{HttpFault, Upstream as FaultUpstream};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::LabError;

/// The request every scenario sends.
pub type Req = Request<Full<Bytes>>;
/// The response every client stack returns: the upstream's status, headers and whole body.
pub type Res = Response<Bytes>;
/// A client of the upstream, in process or over loopback; policies go on top of it.
pub type Client = BoxCloneSyncService<Req, Res, BoxError>;

/// A `GET` of `path`, the request every scenario sends (idempotent, so retries and hedges
/// may repeat it).
pub fn get(path: &str) -> Req {
    Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("a path is a valid URI")
}

/// How the upstream was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In process, on whatever clock the runtime has (paused in `--virtual` runs).
    Virtual,
    /// An axum server on `127.0.0.1:0` and a hyper client, on real time.
    Loopback,
}

impl Mode {
    /// `virtual` or `loopback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Virtual => "virtual",
            Mode::Loopback => "loopback",
        }
    }
}

/// What the upstream does with calls past its capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Overload {
    /// Answers 429 at once to any call that arrives while `capacity` are in flight (an
    /// embedding API's per-key concurrency cap).
    Reject,
    /// Serves them slower (latency × in flight / capacity, a queue), and answers 429 at once
    /// past `drop_at × capacity` in flight.
    Queue {
        /// The multiple of the capacity past which calls are rejected.
        drop_at: f64,
    },
}

/// What goes wrong during an outage window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutageKind {
    /// Every call answers 503 (no `Retry-After`), after its usual latency.
    Unavailable,
    /// This share of calls answers 503, the rest as usual.
    Failing(f64),
    /// Every call hangs until the caller gives up.
    Stall,
}

/// An outage from `after` to `after + length` (from the upstream's start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    /// What goes wrong.
    pub kind: OutageKind,
    /// When it starts.
    pub after: Duration,
    /// How long it lasts.
    pub length: Duration,
}

/// The slow 1% of the tail-latency and partial-fanout scenarios: 1% of calls take
/// 0.9-1.1 s more (the bench `fanout-tail`'s upstream).
pub const SLOW_ONE_PERCENT: (f64, Latency) = (
    0.01,
    Latency::Uniform {
        min: Duration::from_millis(900),
        max: Duration::from_millis(1100),
    },
);

/// How the upstream behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamConfig {
    /// Calls it serves at once at its usual latency.
    pub capacity: usize,
    /// What happens past the capacity.
    pub overload: Overload,
    /// Its usual latency per call.
    pub latency: Latency,
    /// A slow share of calls: with this probability a call takes this much longer (a GC
    /// pause, a cold cache), drawn after the usual latency.
    pub tail: Option<(f64, Latency)>,
    /// An outage window, if any.
    pub outage: Option<Outage>,
    /// Seed of the latency and fault draws.
    pub seed: u64,
}

impl UpstreamConfig {
    /// `capacity` calls at once, `latency` each, 429 past the capacity, no outage.
    pub fn new(capacity: usize, latency: Latency) -> Self {
        Self {
            capacity,
            overload: Overload::Reject,
            latency,
            tail: None,
            outage: None,
            seed: 1,
        }
    }
}

/// What the upstream saw; shared by every clone of it.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    served: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    /// When each call arrived, for counting load in a time window.
    arrivals: Mutex<Vec<Instant>>,
}

impl UpstreamStats {
    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// The most calls it held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }

    /// Calls that arrived.
    pub fn arrived(&self) -> u64 {
        self.lock_arrivals().len() as u64
    }

    /// Calls that arrived in `[from, to)`.
    pub fn arrived_between(&self, from: Instant, to: Instant) -> u64 {
        self.lock_arrivals()
            .iter()
            .filter(|t| **t >= from && **t < to)
            .count() as u64
    }

    /// Calls answered 2xx.
    pub fn served(&self) -> u64 {
        self.served.load(SeqCst)
    }

    /// Calls answered 429 because it was over capacity.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(SeqCst)
    }

    /// Calls answered with any other status (the outage's 503s).
    pub fn failed(&self) -> u64 {
        self.failed.load(SeqCst)
    }

    fn lock_arrivals(&self) -> std::sync::MutexGuard<'_, Vec<Instant>> {
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Live control of a running upstream.
#[derive(Debug, Clone)]
pub struct UpstreamHandle {
    stats: Arc<UpstreamStats>,
    capacity: Arc<AtomicUsize>,
    latency: FaultHandle,
    outage: FaultHandle,
    started: Instant,
}

impl UpstreamHandle {
    /// What it saw so far.
    pub fn stats(&self) -> &UpstreamStats {
        &self.stats
    }

    /// Changes its capacity (it lost or gained machines).
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), SeqCst);
    }

    /// Its capacity now.
    pub fn capacity(&self) -> usize {
        self.capacity.load(SeqCst)
    }

    /// The latency layer's handle (counts of delayed calls).
    pub fn latency_faults(&self) -> &FaultHandle {
        &self.latency
    }

    /// The outage layer's handle (counts of injected faults).
    pub fn outage_faults(&self) -> &FaultHandle {
        &self.outage
    }

    /// When it started (the origin of the outage window).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A handle counting the calls of a server that is not a fault upstream (the gateway
    /// scenario's own server counts its calls with [`UpstreamHandle::enter`]).
    pub(crate) fn standalone() -> Result<Self, LabError> {
        let off = || {
            FaultLayer::builder()
                .enabled(false)
                .build_http()
                .map_err(|e| LabError::Config(e.to_string()))
        };
        Ok(Self {
            stats: Arc::default(),
            capacity: Arc::new(AtomicUsize::new(usize::MAX)),
            latency: off()?.handle(),
            outage: off()?.handle(),
            started: Instant::now(),
        })
    }

    /// Counts one call arriving; the guard counts it out when dropped.
    pub(crate) fn enter(&self) -> InFlight {
        self.stats.lock_arrivals().push(Instant::now());
        let n = self.stats.in_flight.fetch_add(1, SeqCst) + 1;
        self.stats.peak.fetch_max(n, SeqCst);
        InFlight(self.stats.clone())
    }

    /// Counts one call answered 2xx.
    pub(crate) fn count_served(&self) {
        self.stats.served.fetch_add(1, SeqCst);
    }
}

/// A running upstream and a client of it.
#[derive(Debug)]
pub struct Upstream {
    handle: UpstreamHandle,
    client: Client,
    addr: Option<SocketAddr>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream with `config`, reached as `mode` says.
    ///
    /// # Errors
    ///
    /// [`LabError::Config`] for an invalid latency or outage, [`LabError::Io`] if the
    /// loopback listener cannot be bound.
    pub async fn start(config: UpstreamConfig, mode: Mode) -> Result<Self, LabError> {
        let (gate, handle) = build(config)?;
        let (client, addr, server) = match mode {
            Mode::Virtual => {
                let client = BoxCloneSyncService::new(ServiceExt::<Req>::map_err(
                    gate,
                    |never: Infallible| -> BoxError { match never {} },
                ));
                (client, None, None)
            }
            Mode::Loopback => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| LabError::Io(format!("binding the upstream: {e}")))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| LabError::Io(format!("the upstream's address: {e}")))?;
                let app = axum::Router::new().fallback_service(tower::service_fn(
                    move |req: Request<axum::body::Body>| {
                        let res = gate.clone().oneshot(req);
                        async move { res.await.map(|r| r.map(Full::new)) }
                    },
                ));
                let server = tokio::spawn(async move {
                    // Runs until the task is aborted when the upstream is dropped.
                    let _ = axum::serve(listener, app).await;
                });
                (loopback_client(addr), Some(addr), Some(server))
            }
        };
        Ok(Self {
            handle,
            client,
            addr,
            server,
        })
    }

    /// A client of it (every clone reaches the same upstream).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Its live handle.
    pub fn handle(&self) -> &UpstreamHandle {
        &self.handle
    }

    /// Where it listens, over loopback.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// A hyper client that sends each request's path to `addr`, and reads whole bodies.
pub(crate) fn loopback_client(addr: SocketAddr) -> Client {
    let hyper = HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build_http::<Full<Bytes>>();
    let svc = tower::service_fn(move |mut req: Req| {
        let hyper = hyper.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *req.uri_mut() = format!("http://{addr}{path}").parse()?;
            let res = hyper.request(req).await?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, body))
        }
    });
    BoxCloneSyncService::new(svc)
}

type Inner = HttpFault<HttpFault<HttpFault<FaultUpstream>>>;

fn build(config: UpstreamConfig) -> Result<(Gate<Inner>, UpstreamHandle), LabError> {
    let latency = FaultLayer::builder()
        .seed(config.seed)
        .latency(1.0, config.latency)
        .name("upstream-latency")
        .build_http()
        .map_err(|e| LabError::Config(format!("upstream latency: {e}")))?;
    let (tail_rate, tail_latency) = config.tail.unwrap_or((0.0, Latency::Fixed(Duration::ZERO)));
    let tail = FaultLayer::builder()
        .seed(config.seed.wrapping_add(2))
        .latency(tail_rate, tail_latency)
        .name("upstream-tail")
        .build_http()
        .map_err(|e| LabError::Config(format!("upstream tail: {e}")))?;
    let outage = outage_layer(config.outage, config.seed.wrapping_add(1))?;
    let inner: FaultService = latency.layer(FaultUpstream::ok("[0.1,0.2,0.3]"));
    let inner = outage.layer(tail.layer(inner));
    let handle = UpstreamHandle {
        stats: Arc::default(),
        capacity: Arc::new(AtomicUsize::new(config.capacity.max(1))),
        latency: latency.handle(),
        outage: outage.handle(),
        started: Instant::now(),
    };
    let gate = Gate {
        inner,
        stats: handle.stats.clone(),
        capacity: handle.capacity.clone(),
        overload: config.overload,
    };
    Ok((gate, handle))
}

/// The outage layer: faults only inside the window (off when there is no outage).
fn outage_layer(outage: Option<Outage>, seed: u64) -> Result<HttpFaultLayer, LabError> {
    let builder = FaultLayer::builder().seed(seed).name("upstream-outage");
    let Some(outage) = outage else {
        return builder
            .enabled(false)
            .build_http()
            .map_err(|e| LabError::Config(e.to_string()));
    };
    let builder = match outage.kind {
        OutageKind::Unavailable => builder.status(1.0, StatusCode::SERVICE_UNAVAILABLE),
        OutageKind::Failing(rate) => builder.status(rate, StatusCode::SERVICE_UNAVAILABLE),
        OutageKind::Stall => builder.stall(1.0),
    };
    let layer = builder
        .build_http()
        .map_err(|e| LabError::Config(format!("upstream outage: {e}")))?;
    layer.handle().schedule_outage(outage.after, outage.length);
    Ok(layer)
}

/// Counts calls, enforces the capacity, and reads the whole response.
#[derive(Debug, Clone)]
struct Gate<S> {
    inner: S,
    stats: Arc<UpstreamStats>,
    capacity: Arc<AtomicUsize>,
    overload: Overload,
}

/// Takes one call off the in-flight count when dropped: when it is answered, or when the
/// caller gives up on it (a stalled call).
pub(crate) struct InFlight(Arc<UpstreamStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

fn too_many() -> Response<Bytes> {
    let mut res = Response::new(Bytes::from_static(b"over capacity"));
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    res
}

impl<S, B, RB> Service<Request<B>> for Gate<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send,
    RB::Error: std::fmt::Display,
{
    type Response = Response<Bytes>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let stats = self.stats.clone();
        stats.lock_arrivals().push(Instant::now());
        let n = stats.in_flight.fetch_add(1, SeqCst) + 1;
        let guard = InFlight(stats.clone());
        let capacity = self.capacity.load(SeqCst);
        let over = match self.overload {
            Overload::Reject => n > capacity,
            Overload::Queue { drop_at } => n as f64 > capacity as f64 * drop_at,
        };
        let overload = self.overload;
        let inner = self.inner.clone();
        Box::pin(async move {
            if over {
                drop(guard);
                stats.rejected.fetch_add(1, SeqCst);
                return Ok(too_many());
            }
            stats.peak.fetch_max(n, SeqCst);
            let start = Instant::now();
            let Ok(res) = inner.oneshot(req).await;
            let (parts, body) = res.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => Bytes::from(e.to_string()),
            };
            // Queueing: past its capacity, each call takes longer in proportion.
            if matches!(overload, Overload::Queue { .. }) && n > capacity {
                let extra = start.elapsed().mul_f64(n as f64 / capacity as f64 - 1.0);
                tokio::time::sleep(extra).await;
            }
            drop(guard);
            if parts.status.is_success() {
                stats.served.fetch_add(1, SeqCst);
            } else {
                stats.failed.fetch_add(1, SeqCst);
            }
            Ok(Response::from_parts(parts, body))
        })
    }
}
