//! A scripted backend that records when each call started and what it was sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::BoxError;
use tokio::time::Instant;
use tower::Service;

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Script<Res> = dyn Fn(usize) -> (Duration, Result<Res, BoxError>) + Send + Sync;

/// A service whose call number `n` (from 0) sleeps and returns `script(n)`.
pub(crate) struct Backend<Req, Res> {
    script: Arc<Script<Res>>,
    log: Arc<Mutex<Vec<(Instant, Req)>>>,
}

impl<Req, Res> Clone for Backend<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            script: Arc::clone(&self.script),
            log: Arc::clone(&self.log),
        }
    }
}

impl<Req, Res> Backend<Req, Res> {
    pub(crate) fn new(
        script: impl Fn(usize) -> (Duration, Result<Res, BoxError>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            script: Arc::new(script),
            log: Arc::default(),
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// When each call started, relative to `t0`.
    pub(crate) fn times(&self, t0: Instant) -> Vec<Duration> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| at.duration_since(t0))
            .collect()
    }

    /// Runs `f` over the requests received, in order.
    pub(crate) fn requests<T>(&self, f: impl Fn(&Req) -> T) -> Vec<T> {
        self.log.lock().unwrap().iter().map(|(_, r)| f(r)).collect()
    }
}

impl<Req, Res: Send + 'static> Service<Req> for Backend<Req, Res> {
    type Response = Res;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let n = {
            let mut log = self.log.lock().unwrap();
            log.push((Instant::now(), req));
            log.len() - 1
        };
        let (latency, result) = (self.script)(n);
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            result
        })
    }
}
