//! Response futures of [`Fault`](crate::Fault).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::observe::CallSpan;
use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::Aborted;

pin_project! {
    /// An injected delay, if any, polled before anything else.
    #[project = DelayProj]
    pub(crate) enum Delay {
        None,
        Sleep { #[pin] sleep: Sleep },
    }
}

impl Delay {
    pub(crate) fn new(delay: Option<Duration>) -> Self {
        match delay {
            Some(d) if !d.is_zero() => Delay::Sleep {
                sleep: tokio::time::sleep(d),
            },
            _ => Delay::None,
        }
    }

    /// Ready once the delay (if any) has passed; then it is `None` for good.
    pub(crate) fn poll_done(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let DelayProj::Sleep { sleep } = self.as_mut().project() {
            ready!(sleep.poll(cx));
            self.set(Delay::None);
        }
        Poll::Ready(())
    }
}

pin_project! {
    #[project = KindProj]
    pub(crate) enum Kind<F> {
        Call { #[pin] fut: F },
        Abort { #[pin] fut: F },
        Error { err: Option<BoxError> },
        Stall,
    }
}

pin_project! {
    /// The response future of [`Fault`](crate::Fault).
    pub struct ResponseFuture<F> {
        #[pin]
        delay: Delay,
        #[pin]
        kind: Kind<F>,
        span: CallSpan,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(delay: Delay, kind: Kind<F>, span: CallSpan) -> Self {
        Self { delay, kind, span }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        ready!(this.delay.poll_done(cx));
        match this.kind.project() {
            KindProj::Call { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Abort { fut } => {
                // The inner service did its work; the answer is lost on the way back.
                let _lost = ready!(fut.poll(cx));
                Poll::Ready(Err(Box::new(Aborted::new())))
            }
            KindProj::Error { err } => Poll::Ready(Err(err
                .take()
                .unwrap_or_else(|| Box::new(crate::InjectedError::new())))),
            // Never ready and never woken: the caller (or a deadline above) gives up and
            // drops the future, which releases everything.
            KindProj::Stall => Poll::Pending,
        }
    }
}
