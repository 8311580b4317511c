//! [`CircuitBreaker`], the service.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Classify};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::core::{Core, Guard};
use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;

/// How long a not-ready service waits before checking again when no time is known (a
/// forced-open breaker, or a half-open one whose probes are all out with no deadline).
const RECHECK: Duration = Duration::from_secs(1);

/// A circuit breaker around `inner`; see the [crate docs](crate).
pub struct CircuitBreaker<S, C> {
    inner: S,
    core: Arc<Core>,
    classify: C,
    // Only with `not_ready_when_open`: the admission taken in `poll_ready`, and the timer
    // that wakes the task when the breaker may admit again (boxed once per service, the
    // first time it is needed).
    reserved: Option<Guard>,
    sleep: Option<Pin<Box<Sleep>>>,
}

// === impl CircuitBreaker ===

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_parts(inner: S, core: Arc<Core>, classify: C) -> Self {
        Self {
            inner,
            core,
            classify,
            reserved: None,
            sleep: None,
        }
    }

    /// A handle on the shared breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.core.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Default: always ready as far as the breaker goes; an open breaker fails in `call`
        // (load-shedding style).
        if !self.core.not_ready_when_open || self.reserved.is_some() {
            return self.inner.poll_ready(cx).map_err(Into::into);
        }
        // Not-ready mode: take the admission first, but keep it in a local until the inner
        // service is ready too, so a stalled inner service does not pin a probe slot.
        let guard = match self.core.acquire() {
            Ok(ticket) => Guard::new(self.core.clone(), ticket),
            Err(retry_after) => {
                let deadline = Instant::now() + retry_after.unwrap_or(RECHECK);
                let sleep = match &mut self.sleep {
                    Some(s) => {
                        s.as_mut().reset(deadline);
                        s
                    }
                    None => self
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                // Register the wake-up; if the deadline is already here, ask to be polled again.
                if sleep.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        };
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.reserved = Some(guard);
                Poll::Ready(Ok(()))
            }
            // Dropping `guard` hands a probe slot back.
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let mut guard = if self.core.not_ready_when_open {
            self.reserved
                .take()
                .expect("poll_ready must be called first")
        } else {
            match self.core.acquire() {
                Ok(ticket) => Guard::new(self.core.clone(), ticket),
                // Open: fail at once, without calling the inner service.
                Err(retry_after) => return ResponseFuture::rejected(retry_after),
            }
        };
        guard.start();
        ResponseFuture::called(self.inner.call(req), guard, self.classify.clone())
    }
}
