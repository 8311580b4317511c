use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use palisade_core::Overloaded;

use super::shared::{Acquire, Permit, Refused, Shared};
use palisade_core::stripe::Lane;

/// Response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).
///
/// Holds the call's permit, so completing, failing or dropping it releases the permit. In
/// queue mode a waiting request holds an unready clone of the inner service and readies it
/// only once it has a permit: it pins nothing below while it waits.
///
/// An alias of the crate's one limit future (shared with the keyed and fleet limits): only
/// what the call waits on and holds differs.
pub type ResponseFuture<S, Req> = crate::future::ResponseFuture<S, Req, QueueWait, Permit>;

/// A place in the queue: a permit, or [`Overloaded`] when the wait (capped by the deadline)
/// runs out or a higher-criticality request takes the place. Dropping it leaves the queue.
pub struct QueueWait {
    acquire: Acquire,
    shared: Lane<Shared>,
}

impl QueueWait {
    pub(crate) fn new(acquire: Acquire, shared: Lane<Shared>) -> Self {
        Self { acquire, shared }
    }
}

impl Future for QueueWait {
    type Output = Result<Permit, Overloaded>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.acquire.as_mut().poll(cx)) {
            Ok(permit) => Poll::Ready(Ok(permit)),
            // Counted (and traced) where the eviction happened.
            Err(Refused::Evicted) => Poll::Ready(Err(Overloaded::new())),
            Err(Refused::TimedOut) => {
                self.shared.timed_out.increment(1);
                tracing::debug!(target: "palisade::limit", name = %self.shared.name, "queue wait exceeded: rejected");
                Poll::Ready(Err(Overloaded::new()))
            }
        }
    }
}

impl fmt::Debug for QueueWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueueWait")
    }
}
