//! Shared pieces: a gated upstream whose calls wait until the test lets them go, so
//! concurrency can be observed without timing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::Router;
use tokio::sync::Semaphore;

/// Counts calls in flight and their peak; each call waits for a permit of `gate`.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    pub(crate) in_flight: AtomicUsize,
    pub(crate) peak: AtomicUsize,
    pub(crate) done: AtomicUsize,
}

#[derive(Debug, Clone)]
pub(crate) struct Gated {
    pub(crate) gauge: Arc<Gauge>,
    pub(crate) gate: Arc<Semaphore>,
}

impl Gated {
    pub(crate) fn new() -> Self {
        Self {
            gauge: Arc::new(Gauge::default()),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    /// One call: enter, wait at the gate, leave.
    pub(crate) async fn pass(&self) {
        let now = self.gauge.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.gauge.peak.fetch_max(now, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        self.gauge.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.gauge.done.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits (yielding, not sleeping) until `n` calls are inside.
    pub(crate) async fn wait_in_flight(&self, n: usize) {
        while self.gauge.in_flight.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    }

    /// A router whose `GET /` passes through this gate and answers "ok".
    pub(crate) fn router(&self) -> Router {
        let gated = self.clone();
        Router::new().route(
            "/",
            axum::routing::get(move || {
                let g = gated.clone();
                async move {
                    g.pass().await;
                    "ok"
                }
            }),
        )
    }

    pub(crate) fn peak(&self) -> usize {
        self.gauge.peak.load(Ordering::SeqCst)
    }
}

/// Serves `app` on `127.0.0.1:0`; the server task ends with the test's runtime.
pub(crate) async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
