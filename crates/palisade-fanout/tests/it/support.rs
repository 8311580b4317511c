//! A scripted backend that records what happened to each call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::BoxError;
use tower::Service;

/// What a call does: sleep this long, then return this.
pub(crate) type Script = dyn Fn(usize, u64) -> (Duration, Result<u64, BoxError>) + Send + Sync;

#[derive(Default, Debug)]
pub(crate) struct Stats {
    pub(crate) calls: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: AtomicUsize,
    pub(crate) completed: AtomicUsize,
    /// Futures dropped before they finished: cancelled.
    pub(crate) cancelled: AtomicUsize,
    /// Requests in the order their calls started.
    pub(crate) started: Mutex<Vec<u64>>,
    /// Requests whose futures were cancelled.
    pub(crate) cancelled_reqs: Mutex<Vec<u64>>,
}

/// A service whose every call follows `script(call_number, request)`.
#[derive(Clone)]
pub(crate) struct Backend {
    script: Arc<Script>,
    pub(crate) stats: Arc<Stats>,
}

impl Backend {
    pub(crate) fn new(
        script: impl Fn(usize, u64) -> (Duration, Result<u64, BoxError>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            script: Arc::new(script),
            stats: Arc::default(),
        }
    }

    /// Every call sleeps `latency` and echoes its request.
    pub(crate) fn fixed(latency: Duration) -> Self {
        Self::new(move |_, req| (latency, Ok(req)))
    }

    pub(crate) fn calls(&self) -> usize {
        self.stats.calls.load(Ordering::SeqCst)
    }
}

struct Guard {
    stats: Arc<Stats>,
    req: u64,
    done: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.done {
            self.stats.completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
            self.stats.cancelled_reqs.lock().unwrap().push(self.req);
        }
    }
}

impl Service<u64> for Backend {
    type Response = u64;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        let n = self.stats.calls.fetch_add(1, Ordering::SeqCst);
        let (latency, result) = (self.script)(n, req);
        let now = self.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.stats.started.lock().unwrap().push(req);
        let mut guard = Guard {
            stats: Arc::clone(&self.stats),
            req,
            done: false,
        };
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            guard.done = true;
            drop(guard);
            result
        })
    }
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Service<palisade_core::WithDeadline<u64>> for Backend {
    type Response = u64;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<u64>::poll_ready(self, cx)
    }

    fn call(&mut self, req: palisade_core::WithDeadline<u64>) -> Self::Future {
        Service::<u64>::call(self, req.request)
    }
}
