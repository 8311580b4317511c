//! The one response future of the limits that may make a request wait (the concurrency
//! limit, the keyed limit, the fleet limit): core's
//! [`Admission`](palisade_core::admission::Admission) holding the limit's guard (its
//! permits, or its lease) from admission to completion.
//!
//! Each limit names it `future::ResponseFuture<S, Req>`, a type alias that fills in its
//! admission future `A` and guard `G`: the state machine is written once (in core), and so
//! is this wrapper; only what is held differs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::admission::Admission;
use palisade_core::observe::CallSpan;
use palisade_core::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use tower_service::Service;

pin_project! {
    /// A limited call: admitted at once, waiting for admission with an unready clone of the
    /// inner service (readied only once admitted, so it pins nothing below while it
    /// waits), or refused with [`Overloaded`].
    ///
    /// Holds the call's guard `G` from admission to completion, so completing, failing or
    /// dropping the future releases it; dropping a waiting future drops its admission
    /// future `A`, which leaves the queue.
    pub struct ResponseFuture<S, Req, A, G>
    where
        S: Service<Req>,
    {
        // The life of one call:
        //
        //   admitted at once ──────────────────────────────────▶ done (guard released)
        //   waiting ──admitted──▶ inner clone readied, called ──▶ done (guard released)
        //      └─────out of time / evicted / refused──▶ Overloaded
        //   refused at once ───────────────────────────────────▶ Overloaded
        #[pin]
        inner: Admission<S, Req, A, G, Overloaded>,
        // The call's span: the wait and the inner call run inside it.
        span: CallSpan,
    }
}

impl<S, Req, A, G> ResponseFuture<S, Req, A, G>
where
    S: Service<Req>,
{
    /// Admitted at once: `fut` is the inner call, `guard` is held until it completes.
    pub(crate) fn called(fut: S::Future, guard: G, span: CallSpan) -> Self {
        Self {
            inner: Admission::called(fut, guard),
            span,
        }
    }

    /// Must wait for `admit`; `svc` is an unready clone of the inner service.
    pub(crate) fn waiting(admit: A, svc: S, req: Req, span: CallSpan) -> Self {
        Self {
            inner: Admission::waiting(admit, svc, req),
            span,
        }
    }

    /// Refused at once.
    pub(crate) fn rejected(span: CallSpan) -> Self {
        Self {
            inner: Admission::rejected(Overloaded::new()),
            span,
        }
    }

    /// Whether the call was admitted (so its outcome says something about the dependency),
    /// as opposed to waiting, or shed by the limit.
    pub(crate) fn admitted(&self) -> bool {
        self.inner.is_admitted()
    }
}

impl<S, Req, A, G> Future for ResponseFuture<S, Req, A, G>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: Future<Output = Result<G, Overloaded>>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll(cx)
    }
}

impl<S, Req, A, G> fmt::Debug for ResponseFuture<S, Req, A, G>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
