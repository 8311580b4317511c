use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{call_span, BoxError, HasDeadline, Overloaded};
use tower_service::Service;

use super::shared::{Fleet, Lease};

/// A boxed decision: a local permit, then a lease from Redis (or a rejection).
pub(crate) type Admit = Pin<Box<dyn Future<Output = Result<Lease, Overloaded>> + Send>>;

/// Limits the calls in flight across the fleet; built by
/// [`FleetLimitLayer`](super::FleetLimitLayer). See the [module docs](super).
///
/// Holds no reservation (every decision is made in `call`, where the request's deadline is
/// known), so the derived `Clone` is right.
#[derive(Clone)]
pub struct FleetLimit<S> {
    inner: S,
    fleet: Arc<Fleet>,
}

// === impl FleetLimit ===

impl<S> FleetLimit<S> {
    pub(crate) fn from_parts(inner: S, fleet: Arc<Fleet>) -> Self {
        Self { inner, fleet }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for FleetLimit<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A load-shedding layer: ready when the inner service is, decides in `call`.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span =
            call_span!("palisade::limit", "palisade.fleet_limit", name = %self.fleet.config.name);
        let admit: Admit = Box::pin(Arc::clone(&self.fleet).admit(req.deadline()));
        // Every decision takes a Redis round trip: the request carries an unready clone,
        // readied only once it holds a lease, so nothing below is pinned while it waits and
        // the ready service stays here for the next call.
        ResponseFuture::waiting(admit, self.inner.clone(), req, span)
    }
}

impl<S: fmt::Debug> fmt::Debug for FleetLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLimit")
            .field("inner", &self.inner)
            .field("fleet", &self.fleet)
            .finish()
    }
}

/// Response future of [`FleetLimit`].
///
/// Holds the call's lease and local permit from admission to completion, so completing,
/// failing or dropping it releases both (see the [module docs](super)). An alias of the
/// crate's one limit future (shared with the concurrency and keyed limits): only what the
/// call waits on and holds differs.
pub type ResponseFuture<S, Req> = crate::future::ResponseFuture<S, Req, Admit, Lease>;
