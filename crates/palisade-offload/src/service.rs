use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, HasDeadline};
use tokio::sync::OwnedSemaphorePermit;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::job::Job;
use crate::shared::{finish_job, JobState, Reservation, Shared};
use crate::{CancelToken, Panicked};

/// A synchronous [`Job`] as an async [`Service`], run on a pool's threads.
///
/// Built by [`BlockingPool::service_fn`](crate::BlockingPool::service_fn) and
/// [`CpuPool::service_fn`](crate::CpuPool::service_fn) (and their `service_with_state` and
/// `service`); every service and clone built on one pool shares its threads and queue.
/// See the [crate docs](crate).
pub struct Offload<J> {
    job: Arc<J>,
    shared: Arc<Shared>,
    reservation: Reservation,
}

impl<J> Offload<J> {
    pub(crate) fn new(job: J, shared: Arc<Shared>) -> Self {
        Self {
            job: Arc::new(job),
            reservation: Reservation::new(&shared),
            shared,
        }
    }

    /// The job this service runs.
    pub fn get_ref(&self) -> &J {
        &self.job
    }
}

// Manual: a clone shares the job and the pool, but never the slot this service reserved
// in `poll_ready` (that belongs to this service's next call).
impl<J> Clone for Offload<J> {
    fn clone(&self) -> Self {
        Self {
            job: Arc::clone(&self.job),
            reservation: Reservation::new(&self.shared),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<J: fmt::Debug> fmt::Debug for Offload<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offload")
            .field("job", &self.job)
            .field("pool", &self.shared.name)
            .field("reserved", &self.reservation.is_reserved())
            .finish()
    }
}

impl<J, Req> Service<Req> for Offload<J>
where
    J: Job<Req>,
    Req: HasDeadline + Send + 'static,
{
    type Response = J::Response;
    type Error = BoxError;
    type Future = ResponseFuture<J::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.reservation.poll_reserve(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let reserved = self.reservation.take();
        let deadline = req.deadline();
        let job = Arc::clone(&self.job);
        let work: Work<J::Response> =
            Box::new(move |cancel| job.run(req, cancel).map_err(Into::into));
        ResponseFuture::new(&self.shared, reserved, deadline, work)
    }
}

/// One call's job, erased: run once on a pool thread with the call's cancel token.
pub(crate) type Work<T> = Box<dyn FnOnce(&CancelToken) -> Result<T, BoxError> + Send>;

/// Hands `work` to the pool's executor, holding `permit` (the pool thread) until it ends.
/// The result goes to `tx`; a job dropped unrun (the pool shut down) drops `tx` unsent.
pub(crate) fn dispatch<T: Send + 'static>(
    shared: &Arc<Shared>,
    permit: OwnedSemaphorePermit,
    work: Work<T>,
    job: Arc<JobState>,
    tx: tokio::sync::oneshot::Sender<Result<T, BoxError>>,
) {
    shared.start_running();
    // The guard ends the job's accounting and frees its thread when the job returns, or
    // when the closure is dropped without running.
    let guard = RunGuard {
        shared: Arc::clone(shared),
        job,
        permit: Some(permit),
        ran: false,
    };
    shared.executor.execute(move || {
        let mut guard = guard;
        let cancel = CancelToken {
            job: Arc::clone(&guard.job),
        };
        let out = match catch_unwind(AssertUnwindSafe(|| work(&cancel))) {
            Ok(out) => out,
            Err(payload) => {
                let panicked = Panicked::from_payload(payload.as_ref());
                guard.shared.count_panic(panicked.message());
                Err(panicked.into())
            }
        };
        guard.ran = true;
        // Free the thread's slot before answering, so a caller that sees the answer sees
        // the pool's counts already settled.
        drop(guard);
        let _ = tx.send(out);
    });
}

struct RunGuard {
    shared: Arc<Shared>,
    job: Arc<JobState>,
    permit: Option<OwnedSemaphorePermit>,
    ran: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        // The thread is free before the counts say so: whoever sees `running` drop sees
        // the slot available too.
        drop(self.permit.take());
        finish_job(&self.shared, &self.job, self.ran);
    }
}
