use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{call_span, BoxError, HasDeadline};
use tower_service::Service;

use crate::flight::{Lookup, ShareFn};
use crate::future::{ResponseFuture, ShareFuture};
use crate::registry::Registry;
use crate::share::{Share, ShareAll, ShareIf};

/// Joins concurrent requests to `S` with the same key; built by
/// [`CoalesceLayer`](crate::CoalesceLayer). See the [crate docs](crate).
pub struct Coalesce<S, K, KF, M = ShareAll> {
    inner: S,
    registry: Arc<Registry<K>>,
    key: Arc<KF>,
    mode: M,
}

impl<S, K, KF, M> Coalesce<S, K, KF, M> {
    palisade_core::inner_accessors!(S);
}

impl<S: Clone, K, KF, M: Clone> Clone for Coalesce<S, K, KF, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: Arc::clone(&self.registry),
            key: Arc::clone(&self.key),
            mode: self.mode.clone(),
        }
    }
}

impl<S: std::fmt::Debug, K, KF, M> std::fmt::Debug for Coalesce<S, K, KF, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("name", self.registry.name())
            .finish_non_exhaustive()
    }
}

impl<S, K, KF, M> Coalesce<S, K, KF, M> {
    pub(crate) fn from_parts(inner: S, registry: Arc<Registry<K>>, key: Arc<KF>, mode: M) -> Self {
        Self {
            inner,
            registry,
            key,
            mode,
        }
    }

    /// The keyed call: joins, leads, or bypasses. `share` gives the layer's share rule
    /// when the table is made; `keep` what a follower keeps (into `kept`) to make its own
    /// call. (An out-parameter rather than a returned pair: the future is then built in
    /// the caller's place instead of being copied out of a tuple.)
    #[inline]
    fn coalesce<Req, X>(
        &mut self,
        req: Req,
        share: impl FnOnce() -> Option<ShareFn<S::Response>>,
        keep: impl FnOnce(&S, Req) -> X,
        kept: &mut Option<X>,
    ) -> ResponseFuture<S::Future, S::Response, K>
    where
        S: Service<Req>,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        Req: HasDeadline,
        K: Hash + Eq + Send + 'static,
        KF: Fn(&Req) -> Option<K>,
    {
        let span = call_span!("palisade::coalesce", "palisade.coalesce");
        let _scope = span.scope();
        let Some(key) = (self.key)(&req) else {
            return ResponseFuture::bypass(self.inner.call(req), span);
        };
        let Some(flights) = self.registry.flights::<S::Future, S::Response>(share) else {
            // This layer already coalesces another service type's calls.
            return ResponseFuture::bypass(self.inner.call(req), span);
        };
        let deadline = req.deadline();
        match flights.join_or_lead(key) {
            Lookup::Join(ticket) => {
                // The request itself is dropped (or kept for an unshared answer): the
                // leader's request speaks for it.
                *kept = Some(keep(&self.inner, req));
                tracing::debug!(target: "palisade::coalesce", "joined a call in flight");
                ResponseFuture::waiter(flights, ticket, deadline, span)
            }
            Lookup::Bypass => ResponseFuture::bypass(self.inner.call(req), span),
            Lookup::Lead(ticket, boxed) => {
                // The inner call is made outside the table lock (it is user code);
                // joiners meanwhile wait for it to start.
                let inner = &mut self.inner;
                ResponseFuture::lead(flights, ticket, boxed, deadline, span, || inner.call(req))
            }
        }
    }
}

impl<S, K, KF, Req> Service<Req> for Coalesce<S, K, KF, ShareAll>
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
        self.coalesce(req, || None, |_, _| (), &mut None)
    }
}

impl<S, K, KF, P, Req> Service<Req> for Coalesce<S, K, KF, ShareIf<P>>
where
    S: Service<Req> + Clone,
    S::Future: Send + 'static,
    S::Response: Clone + Send + 'static,
    S::Error: Into<BoxError>,
    Req: HasDeadline,
    K: Hash + Eq + Send + 'static,
    KF: Fn(&Req) -> Option<K>,
    P: Share<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ShareFuture<S, Req, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // As without a share rule: see the impl above.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let rule = Arc::clone(&self.mode.rule);
        let share = move || Some(Arc::new(move |res: &S::Response| rule.share(res)) as ShareFn<_>);
        // A follower keeps its request and an (unready) clone of the inner service, to
        // make its own call if the shared answer is refused.
        let mut kept = None;
        let fut = self.coalesce(
            req,
            share,
            |inner, req| Box::new((inner.clone(), req)),
            &mut kept,
        );
        ShareFuture::new(fut, kept)
    }
}
