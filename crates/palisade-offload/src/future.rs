//! Response futures of the thread pools' services.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::observe::CallSpan;
use palisade_core::{call_span, BoxError, Deadline, DeadlineExceeded};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::service::{dispatch, Work};
use crate::shared::{count_orphan, Admission, JobState, Shared};
use crate::PoolShutdown;

/// Response future of [`Offload`](crate::Offload).
///
/// While the call waits for a thread, dropping the future frees its queue place and the
/// job never runs. Once the job runs, dropping the future cannot stop it: the job's
/// [`CancelToken`](crate::CancelToken) turns cancelled and the call is counted as an
/// orphan ([`OffloadHandle::orphaned`](crate::OffloadHandle::orphaned)).
pub struct ResponseFuture<T> {
    state: State<T>,
    // The call's span: entered in every poll (the job's thread does not enter it).
    span: CallSpan,
}

enum State<T> {
    // Waiting for a thread of the pool; the job has not started.
    Admitting {
        admission: Admission,
        deadline: Option<Deadline>,
        work: Option<Work<T>>,
        shared: Arc<Shared>,
    },
    // The job runs on a pool thread; its result comes back through `rx`.
    Running {
        rx: oneshot::Receiver<Result<T, BoxError>>,
        job: Arc<JobState>,
        shared: Arc<Shared>,
    },
    Done,
}

impl<T> ResponseFuture<T> {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        reserved: Option<OwnedSemaphorePermit>,
        deadline: Option<Deadline>,
        work: Work<T>,
    ) -> Self {
        let span = call_span!("palisade::offload", "palisade.offload", name = %shared.name);
        Self {
            state: State::Admitting {
                admission: Admission::start(shared, reserved, deadline),
                deadline,
                work: Some(work),
                shared: Arc::clone(shared),
            },
            span,
        }
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Admitting { .. } => "Admitting",
            State::Running { .. } => "Running",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

// Every field is boxed or a channel end: nothing needs pinning.
impl<T> Unpin for ResponseFuture<T> {}

impl<T: Send + 'static> Future for ResponseFuture<T> {
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        loop {
            match &mut this.state {
                State::Admitting {
                    admission,
                    deadline,
                    work,
                    shared,
                } => {
                    let permit = match admission.poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(permit)) => permit,
                        Poll::Ready(Err(e)) => {
                            this.state = State::Done;
                            return Poll::Ready(Err(e));
                        }
                    };
                    // Admitted after a wait that used up the deadline: do not start work
                    // nobody can use.
                    if deadline.is_some_and(|d| d.is_expired()) {
                        this.state = State::Done;
                        return Poll::Ready(Err(Box::new(DeadlineExceeded::new())));
                    }
                    let work = work.take().expect("work taken once");
                    let shared = Arc::clone(shared);
                    let job = JobState::new();
                    let (tx, rx) = oneshot::channel();
                    dispatch(&shared, permit, work, Arc::clone(&job), tx);
                    this.state = State::Running { rx, job, shared };
                }
                State::Running { rx, .. } => {
                    let out = match Pin::new(rx).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(out)) => out,
                        Poll::Ready(Err(_)) => Err(Box::new(PoolShutdown::new()) as BoxError),
                    };
                    this.state = State::Done;
                    return Poll::Ready(out);
                }
                State::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

impl<T> Drop for ResponseFuture<T> {
    fn drop(&mut self) {
        if let State::Running { job, shared, .. } = &self.state {
            count_orphan(shared, job);
        }
    }
}
