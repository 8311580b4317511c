//! Shared helpers: a gate a blocking job waits on, and waiting for pool threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use palisade_core::WithDeadline;
use palisade_offload::CancelToken;

/// The request of the gated jobs: a number, maybe with a deadline.
pub(crate) type Req = WithDeadline<u32>;

/// A job that counts its runs in `runs` and, for a request above 0, waits at `gate`.
pub(crate) fn gated_job(
    gate: &Gate,
    runs: &Arc<AtomicUsize>,
) -> impl Fn(Req, CancelToken) -> Result<u32, std::io::Error> + Send + Sync + 'static {
    let (gate, runs) = (gate.clone(), Arc::clone(runs));
    move |req: Req, _: CancelToken| {
        runs.fetch_add(1, Ordering::SeqCst);
        if req.request > 0 {
            gate.wait();
        }
        Ok(req.request)
    }
}

/// A gate pool jobs block on until the test opens it; counts the jobs that reached it.
#[derive(Clone, Default)]
pub(crate) struct Gate {
    inner: Arc<(Mutex<bool>, Condvar)>,
    arrived: Arc<AtomicUsize>,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Blocks the calling (pool) thread until the gate opens.
    pub(crate) fn wait(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let (open, cv) = &*self.inner;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }

    /// Blocks until the gate opens or `until` says stop, checking it every millisecond of
    /// real time (a job checking its cancel token).
    pub(crate) fn wait_while(&self, keep_waiting: impl Fn() -> bool) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let (open, cv) = &*self.inner;
        let mut open = open.lock().unwrap();
        while !*open && keep_waiting() {
            open = cv.wait_timeout(open, Duration::from_millis(1)).unwrap().0;
        }
    }

    pub(crate) fn open(&self) {
        let (open, cv) = &*self.inner;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Jobs that reached the gate so far.
    pub(crate) fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}

/// Yields to the runtime until `cond` holds: for states a pool thread (real time) reaches,
/// without sleeping on the paused clock. Panics after many rounds rather than hang.
pub(crate) async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..10_000_000u32 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
        // Let the OS run the pool thread we wait for (tests run in parallel on few cores).
        std::thread::yield_now();
    }
    panic!("timed out waiting until {what}");
}

/// Opens its gate when dropped, so a failing test never leaves a pool thread blocked (the
/// runtime waits for its blocking threads when it shuts down).
pub(crate) struct OpenOnDrop(Gate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

impl Gate {
    pub(crate) fn guard(&self) -> OpenOnDrop {
        OpenOnDrop(self.clone())
    }
}
