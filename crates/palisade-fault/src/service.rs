use std::task::{Context, Poll};

use palisade_core::{call_span, BoxError};
use tower_service::Service;

use crate::future::{Delay, Kind, ResponseFuture};
use crate::layer::FaultLayer;
use crate::plan::FaultKind;
use crate::InjectedError;

/// Injects faults into calls to `S`; built by [`FaultLayer`]. See the [crate docs](crate).
#[derive(Clone, Debug)]
pub struct Fault<S> {
    inner: S,
    layer: FaultLayer,
}

impl<S> Fault<S> {
    palisade_core::inner_accessors!(S);
}

impl<S> Fault<S> {
    pub(crate) fn from_parts(inner: S, layer: FaultLayer) -> Self {
        Self { inner, layer }
    }
}

impl<S, Req> Service<Req> for Fault<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span = call_span!("palisade::fault", "palisade.faults");
        let _scope = span.scope();
        let decision = self.layer.shared.decide();
        // Faults that answer instead of the inner service do not call it: the request
        // never leaves (injected before the call). A delayed call is made at once but its
        // future is first polled after the delay.
        let kind = match decision.fault {
            Some(FaultKind::Error) => Kind::Error {
                err: Some(match &self.layer.make_error {
                    Some(make) => make(),
                    None => Box::new(InjectedError::new()),
                }),
            },
            Some(FaultKind::Stall) => Kind::Stall,
            Some(FaultKind::Abort) => Kind::Abort {
                fut: self.inner.call(req),
            },
            // HTTP-only kinds are refused by `build()`; anything else passes.
            _ => Kind::Call {
                fut: self.inner.call(req),
            },
        };
        ResponseFuture::new(Delay::new(decision.delay), kind, span)
    }
}
