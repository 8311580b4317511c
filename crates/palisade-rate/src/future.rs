//! The response future shared by the local and keyed rate-limit services.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::admission::Admission;
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
    /// allocates (its timer); admitted and rejected calls do not.
    pub struct ResponseFuture<S, Request>
    where
        S: Service<Request>,
    {
        #[pin]
        inner: Admission<S, Request, Slot, (), RateLimited>,
    }
}

/// The wait for a reserved slot: it always ends in admission. The timer is boxed: it is
/// large, and keeping it inline would make every admitted call move a future sized for
/// the rare waiting one.
#[derive(Debug)]
pub(crate) struct Slot(Pin<Box<Sleep>>);

impl Future for Slot {
    type Output = Result<(), RateLimited>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

// === impl ResponseFuture ===

impl<S: Service<Request>, Request> ResponseFuture<S, Request> {
    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            inner: Admission::called(future, ()),
        }
    }

    /// `service` is an unready clone: the ready one stays with the layer.
    pub(crate) fn waiting(sleep: Sleep, service: S, request: Request) -> Self {
        Self {
            inner: Admission::waiting(Slot(Box::pin(sleep)), service, request),
        }
    }

    pub(crate) fn rejected(error: RateLimited) -> Self {
        Self {
            inner: Admission::rejected(error),
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
        self.project().inner.poll(cx)
    }
}

impl<S: Service<Request>, Request> std::fmt::Debug for ResponseFuture<S, Request> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
