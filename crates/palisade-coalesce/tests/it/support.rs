//! An inner service whose calls the test completes by hand, counting calls and live
//! futures.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use palisade_core::{BoxError, Overloaded};
use tokio::sync::oneshot;
use tower::Service;

/// One live inner future: dropped with it.
pub(crate) struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// How the test answers one call.
pub(crate) enum Answer {
    Value(u64),
    Fail,
}

#[derive(Clone, Default)]
pub(crate) struct Manual {
    pub(crate) calls: Arc<AtomicUsize>,
    pub(crate) live: Arc<AtomicUsize>,
    /// Senders of calls not answered yet, with their key.
    pub(crate) pending: Arc<Mutex<Vec<(u64, oneshot::Sender<Answer>)>>>,
}

impl Manual {
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(SeqCst)
    }

    /// Answers the oldest call for `key` (if any); returns whether there was one.
    pub(crate) fn answer(&self, key: u64, answer: Answer) -> bool {
        let mut pending = self.pending.lock().unwrap();
        match pending.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let (_, tx) = pending.remove(i);
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    pub(crate) fn answer_all(&self, value: u64) {
        for (_, tx) in self.pending.lock().unwrap().drain(..) {
            let _ = tx.send(Answer::Value(value));
        }
    }
}

/// A request with a numeric key.
pub(crate) trait Keyed {
    fn key(&self) -> u64;
}

impl Keyed for u64 {
    fn key(&self) -> u64 {
        *self
    }
}

impl Keyed for palisade_core::WithDeadline<u64> {
    fn key(&self) -> u64 {
        self.request
    }
}

impl<R: Keyed> Service<R> for Manual {
    type Response = u64;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let key = req.key();
        self.calls.fetch_add(1, SeqCst);
        self.live.fetch_add(1, SeqCst);
        let live = Live(Arc::clone(&self.live));
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().push((key, tx));
        Box::pin(async move {
            let _live = live;
            match rx.await {
                Ok(Answer::Value(v)) => Ok(v),
                Ok(Answer::Fail) => Err(Box::new(Overloaded::new()) as BoxError),
                Err(_) => Err("inner call abandoned".into()),
            }
        })
    }
}
