use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{call_span, BoxError, Classify};
use tower_service::Service;

use crate::fallback::Fallback;
use crate::future::ResponseFuture;
use crate::layer::Shared;

/// Answers failed calls to `S` from a fallback; built by
/// [`FallbackLayer`](crate::FallbackLayer). See the [crate docs](crate).
pub struct FallbackService<S, Fb, C> {
    inner: S,
    shared: Arc<Shared<Fb, C>>,
}

impl<S, Fb, C> FallbackService<S, Fb, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared<Fb, C>>) -> Self {
        Self { inner, shared }
    }

    palisade_core::inner_accessors!(S);
}

impl<S: Clone, Fb, C> Clone for FallbackService<S, Fb, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: std::fmt::Debug, Fb, C> std::fmt::Debug for FallbackService<S, Fb, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackService")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, Fb, C, Req> Service<Req> for FallbackService<S, Fb, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Fb: Fallback<Req, S::Response>,
    C: Classify<S::Response, BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Fb, C, Req, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An inner service that fails to become ready fails the call: the fallback
        // answers only calls, so that error is returned as it is.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span = call_span!("palisade::fallback", "palisade.fallback", name = %self.shared.name);
        let _scope = span.scope();
        let saved = self.shared.fallback.save(&req);
        ResponseFuture::new(self.inner.call(req), saved, Arc::clone(&self.shared), span)
    }
}
