//! Response futures of [`FanOut`](super::FanOut), [`Reduce`](super::Reduce) and
//! [`Then`](super::Then).

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use palisade_core::observe::CallSpan;
use palisade_core::{BoxError, Classify, Deadline};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::gathered::{Branch, Completion, Gathered, Mode, Tally};

pub use super::compose::{ReduceFuture, ThenFuture};

pin_project! {
    /// One branch: readies its service, calls it, and reports `(index, result)`.
    struct BranchFuture<S, R>
    where
        S: Service<R>,
    {
        index: usize,
        // Until the service is ready.
        pending: Option<(S, R)>,
        #[pin]
        call: Option<S::Future>,
    }
}

impl<S, R> Future for BranchFuture<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = (usize, Result<S::Response, BoxError>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some((svc, _)) = this.pending.as_mut() {
            if let Err(e) = ready!(svc.poll_ready(cx)) {
                *this.pending = None;
                return Poll::Ready((*this.index, Err(e.into())));
            }
            let (mut svc, req) = this.pending.take().expect("checked above");
            this.call.set(Some(svc.call(req)));
        }
        let call = this
            .call
            .as_pin_mut()
            .expect("BranchFuture polled after completion");
        let result = ready!(call.poll(cx)).map_err(Into::into);
        Poll::Ready((*this.index, result))
    }
}

pin_project! {
    /// Response future of [`FanOut`](super::FanOut).
    ///
    /// Owns every branch: running ones in a `FuturesUnordered` (so a wake-up polls only
    /// the branch that woke), waiting ones in a queue. Returning, or being dropped, drops
    /// them all, which cancels them.
    pub struct ResponseFuture<S, R, C>
    where
        S: Service<R>,
    {
        queue: std::iter::Enumerate<std::vec::IntoIter<(S, R)>>,
        running: FuturesUnordered<BranchFuture<S, R>>,
        branches: Vec<Branch<S::Response>>,
        tally: Tally,
        mode: Mode,
        width: NonZeroUsize,
        #[pin]
        timer: Option<Sleep>,
        classify: C,
        // The call's span: every branch starts and runs inside it.
        span: CallSpan,
    }
}

impl<S, R, C> ResponseFuture<S, R, C>
where
    S: Service<R>,
{
    pub(crate) fn new(
        branches: Vec<(S, R)>,
        mode: Mode,
        width: NonZeroUsize,
        deadline: Option<Deadline>,
        classify: C,
        span: CallSpan,
    ) -> Self {
        let n = branches.len();
        Self {
            queue: branches.into_iter().enumerate(),
            running: FuturesUnordered::new(),
            branches: (0..n).map(|_| Branch::NotStarted).collect(),
            tally: Tally::new(n),
            mode,
            width,
            timer: deadline.map(|d| tokio::time::sleep_until(d.instant())),
            classify,
            span,
        }
    }
}

impl<S, R, C> fmt::Debug for ResponseFuture<S, R, C>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("branches", &self.branches.len())
            .field("running", &self.running.len())
            .field("finished", &self.tally.finished)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S, R, C> Future for ResponseFuture<S, R, C>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Output = Result<Gathered<S::Response>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        // A fan-out of nothing, or a quorum bigger than the fan-out, is decided at once.
        if let Some(done) = this.tally.check(*this.mode) {
            return Poll::Ready(Ok(finish(this.branches, this.running, done)));
        }
        loop {
            // Start branches in order while there are free slots.
            while this.running.len() < this.width.get() {
                let Some((i, (svc, req))) = this.queue.next() else {
                    break;
                };
                // Marked cancelled now: it stays so unless it finishes.
                this.branches[i] = Branch::Cancelled;
                this.running.push(BranchFuture {
                    index: i,
                    pending: Some((svc, req)),
                    call: None,
                });
            }
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some((i, result))) => {
                    let success = this.classify.classify(&result).is_success();
                    this.branches[i] = Branch::Done(result);
                    this.tally.finish(success);
                    if let Some(done) = this.tally.check(*this.mode) {
                        return Poll::Ready(Ok(finish(this.branches, this.running, done)));
                    }
                }
                // Nothing running and nothing queued (the queue is drained before
                // polling), so every branch finished; the tally said so already.
                Poll::Ready(None) => {
                    return Poll::Ready(Ok(finish(
                        this.branches,
                        this.running,
                        Completion::AllFinished,
                    )));
                }
                Poll::Pending => break,
            }
        }
        // Branches that are ready at the deadline instant were gathered above.
        if let Some(timer) = this.timer.as_pin_mut() {
            if timer.poll(cx).is_ready() {
                tracing::debug!(
                    target: "palisade::fanout",
                    finished = this.tally.finished,
                    total = this.tally.total,
                    "fan-out deadline reached, returning partial results"
                );
                return Poll::Ready(Ok(finish(
                    this.branches,
                    this.running,
                    Completion::DeadlineReached,
                )));
            }
        }
        Poll::Pending
    }
}

/// Cancels what still runs and hands the branches over.
fn finish<S, R>(
    branches: &mut Vec<Branch<S::Response>>,
    running: &mut FuturesUnordered<BranchFuture<S, R>>,
    completion: Completion,
) -> Gathered<S::Response>
where
    S: Service<R>,
{
    // Dropping the running branch futures cancels them now, not when this future is
    // dropped.
    running.clear();
    Gathered::new(std::mem::take(branches), completion)
}
