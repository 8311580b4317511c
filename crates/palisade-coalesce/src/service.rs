use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, HasDeadline};
use tower_service::Service;

use crate::flight::Lookup;
use crate::future::ResponseFuture;
use crate::registry::Registry;

/// Joins concurrent requests to `S` with the same key; built by
/// [`CoalesceLayer`](crate::CoalesceLayer). See the [crate docs](crate).
pub struct Coalesce<S, K, KF> {
    inner: S,
    registry: Arc<Registry<K>>,
    key: Arc<KF>,
}

impl<S, K, KF> Coalesce<S, K, KF> {
    palisade_core::inner_accessors!(S);
}

impl<S: Clone, K, KF> Clone for Coalesce<S, K, KF> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: Arc::clone(&self.registry),
            key: Arc::clone(&self.key),
        }
    }
}

impl<S: std::fmt::Debug, K, KF> std::fmt::Debug for Coalesce<S, K, KF> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("name", self.registry.name())
            .finish_non_exhaustive()
    }
}

impl<S, K, KF> Coalesce<S, K, KF> {
    pub(crate) fn from_parts(inner: S, registry: Arc<Registry<K>>, key: Arc<KF>) -> Self {
        Self {
            inner,
            registry,
            key,
        }
    }
}

impl<S, K, KF, Req> Service<Req> for Coalesce<S, K, KF>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Clone + Send + 'static,
    S::Error: Into<BoxError>,
    Req: HasDeadline,
    K: Hash + Eq + Send + 'static,
    KF: Fn(&Req) -> Option<K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readied even for a request that will join another's call: which it will be is
        // known only from the request. A joiner leaves the readiness (and any reservation
        // the inner service made for it) unused, for this service's next call, as tower's
        // contract allows; a dropped clone releases it.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(key) = (self.key)(&req) else {
            return ResponseFuture::bypass(self.inner.call(req));
        };
        let Some(flights) = self.registry.flights::<S::Future, S::Response>() else {
            // This layer already coalesces another service type's calls.
            return ResponseFuture::bypass(self.inner.call(req));
        };
        let deadline = req.deadline();
        match flights.join_or_lead(key) {
            Lookup::Join(ticket) => {
                // The request itself is dropped: the leader's request speaks for it.
                ResponseFuture::waiter(flights, ticket, None, deadline)
            }
            Lookup::Bypass => ResponseFuture::bypass(self.inner.call(req)),
            Lookup::Lead(ticket, boxed) => {
                // The inner call is made outside the table lock (it is user code);
                // joiners meanwhile wait for it to start.
                ResponseFuture::waiter(flights, ticket, Some(boxed), deadline)
                    .start(self.inner.call(req))
            }
        }
    }
}
