use std::fmt;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::observe::CallSpan;
use palisade_core::{call_span, BoxError, Deadline};
use tower_service::Service;

use super::discipline::{Discipline, Fifo, Waiting};
use super::future_impl::{QueueWait, ResponseFuture};
use super::layer::OnFull;
use super::shared::{Permit, Place, Shared, SharedLanes};
use tokio_util::sync::ReusableBoxFuture;

/// Limits the calls in flight through the inner service; built by
/// [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer). `Q` is its queue
/// [discipline](super::discipline), which says what it needs of the request and of `S`.
/// See the [module docs](super).
pub struct ConcurrencyLimit<S, Q = Fifo> {
    inner: S,
    shared: SharedLanes,
    on_full: OnFull,
    queue: Q,
    /// `OnFull::Wait` only: the permit `poll_ready` reserved for the next `call`.
    permit: Option<Permit>,
    /// `OnFull::Wait` only: the wait for a permit. Boxed once per service, the first time
    /// it waits, and reused by every later wait (same future type, same allocation), so a
    /// contended wait allocates nothing; linkerd's gate keeps its boxed future the same way.
    wait: Option<ReusableBoxFuture<'static, Option<Permit>>>,
    /// Whether `wait` holds a wait in progress (else it is a finished one, kept for reuse).
    waiting: bool,
}

// === impl ConcurrencyLimit ===

impl<S, Q> ConcurrencyLimit<S, Q> {
    pub(crate) fn from_parts(inner: S, shared: SharedLanes, on_full: OnFull, queue: Q) -> Self {
        Self {
            inner,
            shared,
            on_full,
            queue,
            permit: None,
            wait: None,
            waiting: false,
        }
    }

    palisade_core::inner_accessors!(S);

    /// Backpressure: a permit now, or a place in line and `Pending`.
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<Permit> {
        if !self.waiting {
            if let Some(permit) = Shared::try_acquire(&self.shared) {
                return Poll::Ready(permit);
            }
            let slot =
                Shared::enqueue(&self.shared, None).expect("an unbounded queue always has room");
            let wait = Shared::wait_for(slot, None);
            match &mut self.wait {
                // Same future type every time: `set` reuses the allocation.
                Some(boxed) => boxed.set(wait),
                None => self.wait = Some(ReusableBoxFuture::new(wait)),
            }
            self.waiting = true;
        }
        let wait = self.wait.as_mut().expect("set above");
        let permit = ready!(wait.poll(cx));
        // The finished future (it holds nothing: its slot is gone) stays for the next wait.
        self.waiting = false;
        Poll::Ready(permit.expect("a wait without a maximum only ends with a permit"))
    }

    /// Turns a call away at once (counted and traced as the discipline says).
    fn reject<Req>(&self, waiting: Option<&Waiting<S>>, span: CallSpan) -> ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        self.shared.turned_away(waiting.and_then(|w| w.class));
        ResponseFuture::rejected(span)
    }

    /// Queue mode, the limit full: wait in the queue (in the discipline's order), never
    /// longer than the request's deadline allows.
    #[inline(never)]
    fn queue<Req>(
        &mut self,
        req: Req,
        max_queued: usize,
        max_wait: Duration,
        span: CallSpan,
    ) -> ResponseFuture<S, Req>
    where
        S: Service<Req>,
        Q: Discipline<S, Req>,
    {
        // Waiting never pins: the ready inner service stays here for the next call, and
        // the request waits with an unready clone (made here), readied once admitted.
        let Some(waiting) = self.queue.waiting(&self.inner, &req) else {
            return self.reject(None, span);
        };
        let wait = Deadline::cap(waiting.deadline, max_wait);
        if wait.is_zero() {
            return self.reject(Some(&waiting), span);
        }
        let place = match waiting.class {
            None => Shared::enqueue(&self.shared, Some(max_queued)).map(Place::Fifo),
            Some(class) => Shared::enqueue_class(&self.shared, class, max_queued),
        };
        match place {
            None => self.reject(Some(&waiting), span),
            // A permit came free meanwhile: the ready inner service takes the call.
            Some(Place::Admitted(permit)) => {
                ResponseFuture::called(self.inner.call(req), permit, span)
            }
            Some(place) => {
                let acquire = Shared::acquire(place, Some(wait));
                let wait = QueueWait::new(acquire, self.shared.lane().clone());
                ResponseFuture::waiting(wait, waiting.svc, req, span)
            }
        }
    }
}

impl<S, Q, Req> Service<Req> for ConcurrencyLimit<S, Q>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Q: Discipline<S, Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.on_full != OnFull::Wait {
            // Queue and reject modes decide in `call`, where the request (and its deadline)
            // is known; a load-shedding layer reports ready and fails in `call`.
            return self.inner.poll_ready(cx).map_err(Into::into);
        }
        // Take our own permit first, but keep it in a local until the inner service is
        // ready too: a stalled inner service must not pin capacity other callers could use.
        let permit = match self.permit.take() {
            Some(permit) => permit,
            None => ready!(self.poll_permit(cx)),
        };
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.permit = Some(permit);
                Poll::Ready(Ok(()))
            }
            // The permit is dropped (released) on both paths below.
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span =
            call_span!("palisade::limit", "palisade.concurrency_limit", name = %self.shared.name);
        let _scope = span.scope();
        match self.on_full {
            OnFull::Wait => {
                let permit = self.permit.take().expect("poll_ready must be called first");
                ResponseFuture::called(self.inner.call(req), permit, span)
            }
            OnFull::Reject => match Shared::try_acquire(&self.shared) {
                Some(permit) => ResponseFuture::called(self.inner.call(req), permit, span),
                None => self.reject(None, span),
            },
            OnFull::Queue {
                max_queued,
                max_wait,
            } => match Shared::try_acquire(&self.shared) {
                Some(permit) => ResponseFuture::called(self.inner.call(req), permit, span),
                None => self.queue(req, max_queued, max_wait, span),
            },
        }
    }
}

impl<S: Clone, Q: Clone> Clone for ConcurrencyLimit<S, Q> {
    fn clone(&self) -> Self {
        // A clone shares the limit but never inherits a reservation: the permit (or place
        // in line) belongs to the service that will make the next `call`.
        Self::from_parts(
            self.inner.clone(),
            self.shared.clone(),
            self.on_full,
            self.queue.clone(),
        )
    }
}

impl<S: fmt::Debug, Q> fmt::Debug for ConcurrencyLimit<S, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("on_full", &self.on_full)
            .field("reserved", &self.permit.is_some())
            .field("waiting", &self.waiting)
            .finish()
    }
}
