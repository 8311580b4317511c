//! Response futures of [`FallbackService`](crate::FallbackService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::observe::CallSpan;
use palisade_core::{BoxError, Classify};
use pin_project_lite::pin_project;

use crate::error::FallbackFailed;
use crate::fallback::{Failure, Fallback};
use crate::layer::Shared;

pin_project! {
    #[project = StateProj]
    enum State<F, Fut, Saved> {
        Inner { #[pin] fut: F, saved: Option<Saved> },
        Fallback { #[pin] fut: Fut, original: Option<BoxError> },
        Done,
    }
}

pin_project! {
    /// The response future of [`FallbackService`](crate::FallbackService): the call, then
    /// the fallback if the call failed.
    pub struct ResponseFuture<F, Fb, C, Req, T>
    where
        Fb: Fallback<Req, T>,
    {
        #[pin]
        state: State<F, Fb::Future, Fb::Saved>,
        shared: Arc<Shared<Fb, C>>,
        // The call's span: the inner call and the fallback run inside it.
        span: CallSpan,
    }
}

impl<F, Fb, C, Req, T> fmt::Debug for ResponseFuture<F, Fb, C, Req, T>
where
    Fb: Fallback<Req, T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, Fb, C, Req, T> ResponseFuture<F, Fb, C, Req, T>
where
    Fb: Fallback<Req, T>,
{
    pub(crate) fn new(
        fut: F,
        saved: Fb::Saved,
        shared: Arc<Shared<Fb, C>>,
        span: CallSpan,
    ) -> Self {
        Self {
            state: State::Inner {
                fut,
                saved: Some(saved),
            },
            shared,
            span,
        }
    }
}

impl<F, T, E, Fb, C, Req> Future for ResponseFuture<F, Fb, C, Req, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    Fb: Fallback<Req, T>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { fut, saved } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    let Some(saved) = saved.take() else {
                        return Poll::Pending;
                    };
                    let Some(reason) = this.shared.trigger(&result) else {
                        if let Ok(res) = &result {
                            this.shared.fallback.succeeded(saved, res);
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(result);
                    };
                    this.shared.record_trigger(reason);
                    if this.shared.fallback.declines(&saved) {
                        // No answer here (e.g. nothing cached): the call's own result
                        // goes on, so layers above still read its rejection.
                        this.shared.record_declined();
                        this.state.set(State::Done);
                        return Poll::Ready(result);
                    }
                    let failure = Failure { result, reason };
                    let fut = this.shared.fallback.fallback(saved, &failure);
                    // The original error is kept for the report if the fallback fails
                    // too; a failed response is dropped now.
                    let original = failure.result.err();
                    this.state.set(State::Fallback { fut, original });
                }
                StateProj::Fallback { fut, original } => {
                    let answer = ready!(fut.poll(cx));
                    this.shared.record_answer(answer.is_ok());
                    let answer = answer
                        .map_err(|e| Box::new(FallbackFailed::new(e, original.take())) as BoxError);
                    this.state.set(State::Done);
                    return Poll::Ready(answer);
                }
                // Polled after completion: stay pending rather than panic.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}
