use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::admission::Admission;
use palisade_core::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::shared::{Permit, Shared};

type Acquire = Pin<Box<dyn Future<Output = Option<Permit>> + Send + Sync + 'static>>;

pin_project! {
    /// Response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).
    ///
    /// Holds the call's permit, so completing, failing or dropping it releases the permit.
    /// In queue mode a waiting request holds an unready clone of the inner service and
    /// readies it only once it has a permit (core's [`Admission`]): it pins nothing below
    /// while it waits.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        // The life of one call:
        //
        //   admitted at once ──────────────────────────────────▶ done (permit released)
        //   queued ──permit──▶ inner clone readied, called ─────▶ done (permit released)
        //      └─────timeout / deadline──▶ Overloaded
        //   rejected ──────────────────────────────────────────▶ Overloaded
        #[pin]
        inner: Admission<S, Req, QueueWait, Permit, Overloaded>,
    }
}

/// A place in the queue: a permit, or [`Overloaded`] when the wait (capped by the
/// deadline) runs out. Dropping it leaves the queue.
pub(crate) struct QueueWait {
    acquire: Acquire,
    shared: Arc<Shared>,
}

impl Future for QueueWait {
    type Output = Result<Permit, Overloaded>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.acquire.as_mut().poll(cx)) {
            Some(permit) => Poll::Ready(Ok(permit)),
            None => {
                self.shared.timed_out.increment(1);
                tracing::debug!(target: "palisade::limit", name = %self.shared.name, "queue wait exceeded: rejected");
                Poll::Ready(Err(Overloaded::new()))
            }
        }
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(crate) fn running(fut: S::Future, permit: Permit) -> Self {
        Self {
            inner: Admission::called(fut, permit),
        }
    }

    /// `svc` is an unready clone of the inner service: the ready one stays with the layer.
    pub(crate) fn queued(acquire: Acquire, svc: S, req: Req, shared: Arc<Shared>) -> Self {
        Self {
            inner: Admission::waiting(QueueWait { acquire, shared }, svc, req),
        }
    }

    /// Whether the call got a permit (so its outcome says something about the dependency),
    /// as opposed to being shed or timing out in the queue.
    pub(crate) fn admitted(&self) -> bool {
        self.inner.is_admitted()
    }

    pub(crate) fn rejected(error: Overloaded) -> Self {
        Self {
            inner: Admission::rejected(error),
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
