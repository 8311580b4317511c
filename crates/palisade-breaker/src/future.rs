//! [`ResponseFuture`] for [`CircuitBreaker`](crate::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::observe::CallSpan;
use palisade_core::record::{Recorder, Recording};
use palisade_core::{BoxError, CircuitOpen, Classify, Outcome, OutcomeKind};
use pin_project_lite::pin_project;

use crate::core::Guard;

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker): the inner call
    /// whose outcome is recorded when it completes (core's [`Recording`]), or an immediate
    /// [`CircuitOpen`].
    ///
    /// Dropping it before completion records nothing (a half-open probe slot is handed back).
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
        // The call's span.
        span: CallSpan,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Called { #[pin] fut: Recording<F, C, Guard> },
        Rejected { retry_after: Option<Duration> },
    }
}

/// A finished call's outcome goes to the breaker. Local rejections from layers below (a
/// limit's shed, a rate limit, an expired deadline) are ignored: they are the client
/// protecting itself, not news about the dependency.
impl Recorder for Guard {
    fn record(self, outcome: &Outcome) {
        let failed = match outcome.health() {
            OutcomeKind::Success => Some(false),
            OutcomeKind::Failure => Some(true),
            OutcomeKind::Ignored => None,
        };
        self.finish(failed);
    }
}

// === impl ResponseFuture ===

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(fut: F, guard: Guard, classify: C, span: CallSpan) -> Self {
        Self {
            kind: Kind::Called {
                fut: Recording::new(fut, classify, guard),
            },
            span,
        }
    }

    pub(crate) fn rejected(retry_after: Option<Duration>, span: CallSpan) -> Self {
        Self {
            kind: Kind::Rejected { retry_after },
            span,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        match this.kind.project() {
            KindProj::Rejected { retry_after } => {
                let err = match *retry_after {
                    Some(d) => CircuitOpen::with_retry_after(d),
                    None => CircuitOpen::new(),
                };
                Poll::Ready(Err(err.into()))
            }
            KindProj::Called { fut } => fut.poll(cx),
        }
    }
}
