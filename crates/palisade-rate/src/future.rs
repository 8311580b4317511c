//! The response future shared by the local and keyed rate-limit services.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::admission::Admission;
use palisade_core::observe::CallSpan;
use palisade_core::{BoxError, RateLimited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

pin_project! {
    /// Response future of [`RateLimit`](crate::RateLimit) and
    /// [`KeyedRateLimit`](crate::KeyedRateLimit).
    ///
    /// Either the inner call (admitted at once), a wait for a reserved slot followed by the
    /// inner call, or a rejection. A waiting request holds an unready clone of the inner
    /// service and readies it only when its slot is due, so it pins nothing below while it
    /// sleeps (core's [`Admission`]). Dropping it while waiting cancels the call; the
    /// reserved slot is not given back (it simply elapses). Only the waiting state
    /// allocates; admitted and rejected calls do not.
    pub struct ResponseFuture<S, Request>
    where
        S: Service<Request>,
    {
        #[pin]
        kind: Kind<S, Request>,
        // The call's span: the wait for a slot and the inner call run inside it.
        span: CallSpan,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Request>
    where
        S: Service<Request>,
    {
        // Admitted at once: only the inner future is stored, so the future every admitted
        // call moves is the size of the inner one plus a tag.
        Called {
            #[pin]
            fut: S::Future,
        },
        // The rare waiting state (timer, unready clone, request) lives out of line, in the
        // one allocation a waiting call makes.
        Waiting {
            admission: Pin<Box<Admission<S, Request, Slot, (), RateLimited>>>,
        },
        Rejected {
            error: Option<RateLimited>,
        },
    }
}

pin_project! {
    /// The wait for a reserved slot: it always ends in admission.
    #[derive(Debug)]
    pub(crate) struct Slot {
        #[pin]
        sleep: Sleep,
    }
}

impl Future for Slot {
    type Output = Result<(), RateLimited>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().sleep.poll(cx).map(Ok)
    }
}

// === impl ResponseFuture ===

impl<S: Service<Request>, Request> ResponseFuture<S, Request> {
    pub(crate) fn called(fut: S::Future, span: CallSpan) -> Self {
        Self {
            kind: Kind::Called { fut },
            span,
        }
    }

    /// `service` is an unready clone: the ready one stays with the layer.
    pub(crate) fn waiting(sleep: Sleep, service: S, request: Request, span: CallSpan) -> Self {
        Self {
            kind: Kind::Waiting {
                admission: Box::pin(Admission::waiting(Slot { sleep }, service, request)),
            },
            span,
        }
    }

    pub(crate) fn rejected(error: RateLimited, span: CallSpan) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
            span,
        }
    }
}

impl<S, Request> Future for ResponseFuture<S, Request>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        match this.kind.project() {
            KindProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Waiting { admission } => admission.as_mut().poll(cx),
            KindProj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion").into()))
            }
        }
    }
}

impl<S: Service<Request>, Request> std::fmt::Debug for ResponseFuture<S, Request> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "Called",
            Kind::Waiting { .. } => "Waiting",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
