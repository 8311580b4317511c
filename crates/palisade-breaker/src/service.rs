//! [`CircuitBreaker`], the service.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::stripe::Lanes;
use palisade_core::{call_span, BoxError, Classify};
use tokio::time::Sleep;
use tower_service::Service;

use crate::core::{Core, Guard};
use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;

/// A circuit breaker around `inner`; see the [crate docs](crate).
pub struct CircuitBreaker<S, C> {
    inner: S,
    /// The breaker, behind one lane per stripe: a call's [`Guard`] holds its thread's lane,
    /// so admitting and finishing calls on several cores writes no shared cache line.
    core: Lanes<Core>,
    classify: C,
    // The decision `poll_ready` made for the next `call`: an admission (held until `call`,
    // so the `poll_ready`/`call` contract holds whatever the breaker does in between) or,
    // in the default mode, a rejection. A clone never inherits it.
    reserved: Option<Reserved>,
    // Not-ready mode only: the timer that wakes the task when the breaker may admit again
    // (boxed once per service, the first time it is needed).
    sleep: Option<Pin<Box<Sleep>>>,
}

/// What `poll_ready` reserved for the next `call`.
#[derive(Debug)]
enum Reserved {
    /// Admitted, and the inner service is ready.
    Admitted(Guard),
    /// Admitted (not a probe), the inner service not ready yet: kept so a re-poll does not
    /// count a second admission. A probe slot is never held this way.
    Waiting(Guard),
    /// Open (default mode): `call` rejects, without the inner service being polled.
    Rejected(Option<Duration>),
}

// === impl CircuitBreaker ===

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_parts(inner: S, core: Lanes<Core>, classify: C) -> Self {
        Self {
            inner,
            core,
            classify,
            reserved: None,
            sleep: None,
        }
    }

    /// Not-ready mode, breaker refusing: parks this task until the next state change (a
    /// probe closing the breaker, a reset, a probe slot handed back) or the time the
    /// breaker may admit again, whichever comes first; then admits if it can.
    fn park(&mut self, cx: &mut Context<'_>) -> Poll<Guard> {
        // Park first, then ask again: a change published in between is seen by this
        // second look, one published after it wakes us.
        self.core.park(cx.waker());
        let retry_after = match self.core.acquire() {
            Ok(ticket) => return Poll::Ready(Guard::new(self.core.lane().clone(), ticket)),
            Err(retry_after) => retry_after,
        };
        // A known time (open until, half-open deadline): the change it brings is made
        // lazily by the next caller, so a timer must make that caller us.
        if let Some(after) = retry_after {
            let at = palisade_core::time::from_now(after);
            let sleep = match &mut self.sleep {
                Some(s) => {
                    s.as_mut().reset(at);
                    s
                }
                None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
            };
            // Register the wake-up; if the time is already here, ask to be polled again.
            if sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }

    /// A handle on the shared breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.core.shared().clone())
    }

    palisade_core::inner_accessors!(S);
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        // A clone shares the breaker but not this service's reservation: the admission
        // was taken for one call on this service, and a clone must poll_ready on its own.
        Self::from_parts(self.inner.clone(), self.core.clone(), self.classify.clone())
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    // poll_ready, step by step:
    //
    //   1. A reservation from an earlier poll is reused (a rejection is ready at once).
    //   2. Otherwise ask the breaker. Open, default mode: reserve the rejection and report
    //      ready *without polling the inner service* (an open breaker must not wait on, or
    //      reserve capacity in, a dependency it will not call). Open, not-ready mode: park
    //      until the next state change (or the time it may admit), then ask again.
    //   3. Admitted: keep the admission in a local until the inner service is ready too,
    //      so a stalled inner service never pins a probe slot.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let guard = match self.reserved.take() {
            Some(Reserved::Admitted(guard) | Reserved::Waiting(guard)) => guard,
            Some(rejected @ Reserved::Rejected(_)) => {
                self.reserved = Some(rejected);
                return Poll::Ready(Ok(()));
            }
            None => match self.core.acquire() {
                Ok(ticket) => Guard::new(self.core.lane().clone(), ticket),
                Err(retry_after) if !self.core.not_ready_when_open => {
                    self.reserved = Some(Reserved::Rejected(retry_after));
                    return Poll::Ready(Ok(()));
                }
                Err(_) => ready!(self.park(cx)),
            },
        };
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.reserved = Some(Reserved::Admitted(guard));
                Poll::Ready(Ok(()))
            }
            // Dropping `guard` hands a probe slot back.
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => {
                if !guard.is_probe() {
                    self.reserved = Some(Reserved::Waiting(guard));
                }
                Poll::Pending
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span =
            call_span!("palisade::breaker", "palisade.circuit_breaker", name = %self.core.name());
        let _scope = span.scope();
        match self.reserved.take() {
            Some(Reserved::Admitted(mut guard)) => {
                guard.start();
                ResponseFuture::called(self.inner.call(req), guard, self.classify.clone(), span)
            }
            // Open when `poll_ready` looked: fail at once, without calling the inner service.
            Some(Reserved::Rejected(retry_after)) => {
                tracing::debug!(target: "palisade::breaker", "circuit open: rejected");
                ResponseFuture::rejected(retry_after, span)
            }
            Some(Reserved::Waiting(_)) | None => panic!("poll_ready must be called first"),
        }
    }
}
