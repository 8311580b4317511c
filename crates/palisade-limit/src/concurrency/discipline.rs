//! Queue disciplines: whether a limit has a queue, and in what order it serves it.
//!
//! A concurrency limit's type says what it needs of a request:
//!
//! | discipline | modes | needs |
//! |---|---|---|
//! | [`NoQueue`] | wait, reject | nothing: any request, any inner service |
//! | [`Fifo`] (the default) | wait, queue, reject | `Req:` [`HasDeadline`] (the wait is capped by it), `S: Clone` (a waiting request readies its own clone) |
//! | [`ByClass`] | queue | as [`Fifo`], and a [`Criticality`] for each request |
//!
//! So `ConcurrencyLimitLayer::new(n)` (wait mode) limits a service that is not `Clone` and
//! takes plain requests:
//!
//! ```
//! use palisade_limit::ConcurrencyLimitLayer;
//! use tower::{Service, ServiceExt, Layer};
//!
//! /// Neither `Clone` nor a request with a deadline.
//! struct Doubler;
//! impl Service<u32> for Doubler {
//!     type Response = u32;
//!     type Error = std::convert::Infallible;
//!     type Future = std::future::Ready<Result<u32, Self::Error>>;
//!     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
//!         std::task::Poll::Ready(Ok(()))
//!     }
//!     fn call(&mut self, n: u32) -> Self::Future {
//!         std::future::ready(Ok(n * 2))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! let mut wait = ConcurrencyLimitLayer::new(4).layer(Doubler);
//! assert_eq!(wait.ready().await?.call(21).await?, 42);
//! let mut reject = ConcurrencyLimitLayer::builder(4).reject().build()?.layer(Doubler);
//! assert_eq!(reject.ready().await?.call(4).await?, 8);
//! # Ok(()) }
//! ```

use std::fmt;

use palisade_core::HasDeadline;

use crate::criticality::Criticality;

mod sealed {
    pub trait Sealed {}
}

/// No queue: the limit waits in `poll_ready` or rejects in `call`, so it needs nothing of
/// the request or the inner service. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQueue;

/// A queue served first come first served (the default discipline); the limit may also
/// wait or reject, chosen at run time by [`OnFull`](super::OnFull).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

/// A queue served by [`Criticality`]: a freed permit goes to the oldest waiter of the
/// highest class waiting; a full queue makes room for a newcomer by evicting the newest
/// waiter of a lower class (which fails with [`Overloaded`](palisade_core::Overloaded)),
/// or else sheds the newcomer. Work-conserving: a free permit goes to whoever asks. Made by
/// [`ConcurrencyLimitBuilder::criticality`](super::ConcurrencyLimitBuilder::criticality).
#[derive(Clone)]
pub struct ByClass<F> {
    classify: F,
}

impl<F> ByClass<F> {
    pub(crate) fn new(classify: F) -> Self {
        Self { classify }
    }
}

impl<F> fmt::Debug for ByClass<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ByClass")
    }
}

/// What a request that waits takes with it: an unready clone of the inner service, its
/// deadline and its class. Opaque: made by a [`Discipline`].
pub struct Waiting<S> {
    pub(crate) svc: S,
    pub(crate) deadline: Option<palisade_core::Deadline>,
    pub(crate) class: Option<Criticality>,
}

impl<S> fmt::Debug for Waiting<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiting")
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

/// A queue discipline of a concurrency limit (sealed: [`NoQueue`], [`Fifo`], [`ByClass`]),
/// and what it needs of the inner service `S` and the request `Req`. See the
/// [module docs](self).
pub trait Discipline<S, Req>: sealed::Sealed {
    /// The request's class, where the queue serves by class.
    fn class(&self, req: &Req) -> Option<Criticality>;

    /// For a request that must wait in the queue: what it waits with. `None` where there
    /// is no queue (the request is then rejected; a [`NoQueue`] limit never queues).
    fn waiting(&self, inner: &S, req: &Req) -> Option<Waiting<S>>;
}

impl sealed::Sealed for NoQueue {}
impl sealed::Sealed for Fifo {}
impl<F> sealed::Sealed for ByClass<F> {}

impl<S, Req> Discipline<S, Req> for NoQueue {
    fn class(&self, _: &Req) -> Option<Criticality> {
        None
    }

    fn waiting(&self, _: &S, _: &Req) -> Option<Waiting<S>> {
        None
    }
}

impl<S: Clone, Req: HasDeadline> Discipline<S, Req> for Fifo {
    fn class(&self, _: &Req) -> Option<Criticality> {
        None
    }

    fn waiting(&self, inner: &S, req: &Req) -> Option<Waiting<S>> {
        Some(Waiting {
            svc: inner.clone(),
            deadline: req.deadline(),
            class: None,
        })
    }
}

impl<S, Req, F> Discipline<S, Req> for ByClass<F>
where
    S: Clone,
    Req: HasDeadline,
    F: Fn(&Req) -> Criticality,
{
    fn class(&self, req: &Req) -> Option<Criticality> {
        Some((self.classify)(req))
    }

    fn waiting(&self, inner: &S, req: &Req) -> Option<Waiting<S>> {
        Some(Waiting {
            svc: inner.clone(),
            deadline: req.deadline(),
            class: Some((self.classify)(req)),
        })
    }
}
