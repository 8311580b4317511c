//! Response futures of [`Coalesce`](crate::Coalesce).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::admission::Admission;
use palisade_core::observe::CallSpan;
use palisade_core::{BoxError, Deadline, DeadlineExceeded};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use tower_service::Service;

use crate::flight::{CallBox, Flights, Ticket, Unshared};

/// One waiter's attachment to a shared call; leaving (drop before completion) detaches it,
/// and the last to leave drops the call.
struct Waiter<K, F, T> {
    flights: Arc<Flights<K, F, T>>,
    ticket: Ticket,
    /// The leader's call until its first poll: polled then without the table's lock.
    checked_out: Option<CallBox<F>>,
    done: bool,
}

impl<K, F, T> Drop for Waiter<K, F, T> {
    fn drop(&mut self) {
        if !self.done {
            // A leader dropped before polling its call (or making it, if that panicked)
            // gives it to the other waiters, if any, as it leaves.
            self.flights.leave(&self.ticket, self.checked_out.take());
        }
    }
}

pin_project! {
    #[project = DeadlineProj]
    enum DeadlineTimer {
        None,
        Sleep { #[pin] sleep: Sleep },
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T, K> {
        Bypass { #[pin] fut: F },
        Waiting { waiter: Waiter<K, F, T>, #[pin] timer: DeadlineTimer },
        Done,
    }
}

pin_project! {
    /// The response future of [`Coalesce`](crate::Coalesce): the request's own call (a
    /// request without a key, or over the key bound), or a place among the waiters of a
    /// shared call.
    pub struct ResponseFuture<F, T, K> {
        #[pin]
        state: State<F, T, K>,
        // The call's span (a waiter's too: it waits inside it).
        span: CallSpan,
    }
}

impl<F, T, K> fmt::Debug for ResponseFuture<F, T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Bypass { .. } => "bypass",
            State::Waiting { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T, K> ResponseFuture<F, T, K> {
    pub(crate) fn bypass(fut: F, span: CallSpan) -> Self {
        Self {
            state: State::Bypass { fut },
            span,
        }
    }

    /// A follower of `ticket`'s call.
    pub(crate) fn waiter(
        flights: Arc<Flights<K, F, T>>,
        ticket: Ticket,
        deadline: Option<Deadline>,
        span: CallSpan,
    ) -> Self {
        Self::attached(
            Waiter {
                flights,
                ticket,
                checked_out: None,
                done: false,
            },
            deadline,
            span,
        )
    }

    /// The leader of `ticket`'s call, which `call` makes and puts in its (empty) box. The
    /// waiter exists first, so if making the call panics, the waiter's drop releases its
    /// entry and fails its joiners.
    #[inline]
    pub(crate) fn lead(
        flights: Arc<Flights<K, F, T>>,
        ticket: Ticket,
        boxed: CallBox<F>,
        deadline: Option<Deadline>,
        span: CallSpan,
        call: impl FnOnce() -> F,
    ) -> Self {
        let mut waiter = Waiter {
            flights,
            ticket,
            checked_out: Some(boxed),
            done: false,
        };
        if let Some(boxed) = &mut waiter.checked_out {
            boxed.set(Some(call()));
        }
        Self::attached(waiter, deadline, span)
    }

    #[inline]
    fn attached(waiter: Waiter<K, F, T>, deadline: Option<Deadline>, span: CallSpan) -> Self {
        let timer = match deadline {
            Some(d) => DeadlineTimer::Sleep {
                sleep: tokio::time::sleep_until(d.instant()),
            },
            None => DeadlineTimer::None,
        };
        Self {
            state: State::Waiting { waiter, timer },
            span,
        }
    }
}

impl<F, T, E, K> Future for ResponseFuture<F, T, K>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Clone + Send + 'static,
    E: Into<BoxError>,
    K: Hash + Eq + Send + 'static,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        match this.state.as_mut().project() {
            StateProj::Bypass { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Waiting { waiter, timer } => {
                if let Poll::Ready(out) =
                    waiter
                        .flights
                        .poll(&waiter.ticket, &mut waiter.checked_out, cx)
                {
                    // Served: the table has forgotten this waiter.
                    waiter.done = true;
                    this.state.set(State::Done);
                    return Poll::Ready(out);
                }
                if let DeadlineProj::Sleep { sleep } = timer.project() {
                    if sleep.poll(cx).is_ready() {
                        // Out of time: leave (dropping the waiter) without cancelling the
                        // call for the others.
                        this.state.set(State::Done);
                        return Poll::Ready(Err(Box::new(DeadlineExceeded::new())));
                    }
                }
                Poll::Pending
            }
            // Polled after completion: stay pending rather than panic.
            StateProj::Done => Poll::Pending,
        }
    }
}

/// A follower's own call, made when the shared answer was refused: its kept clone of the
/// inner service is readied, then called with its kept request (core's admission future,
/// admitted at once).
type OwnCall<S, Req> =
    Admission<S, Req, std::future::Ready<Result<(), Infallible>>, (), Infallible>;

pin_project! {
    /// The response future of a [`Coalesce`](crate::Coalesce) with a share rule
    /// ([`share_if`](crate::CoalesceBuilder::share_if)): a [`ResponseFuture`], then, for a
    /// follower whose shared answer the rule refused, its own call.
    pub struct ShareFuture<S, Req, K>
    where
        S: Service<Req>,
    {
        #[pin]
        shared: ResponseFuture<S::Future, S::Response, K>,
        // A follower's clone of the inner service and its request.
        kept: Option<Box<(S, Req)>>,
        own: Option<Pin<Box<OwnCall<S, Req>>>>,
    }
}

impl<S: Service<Req>, Req, K> fmt::Debug for ShareFuture<S, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareFuture")
            .field("shared", &self.shared)
            .field("own_call", &self.own.is_some())
            .finish()
    }
}

impl<S: Service<Req>, Req, K> ShareFuture<S, Req, K> {
    pub(crate) fn new(
        shared: ResponseFuture<S::Future, S::Response, K>,
        kept: Option<Box<(S, Req)>>,
    ) -> Self {
        Self {
            shared,
            kept,
            own: None,
        }
    }
}

impl<S, Req, K, E> Future for ShareFuture<S, Req, K>
where
    S: Service<Req, Error = E>,
    S::Future: Send + 'static,
    S::Response: Clone + Send + 'static,
    E: Into<BoxError>,
    K: Hash + Eq + Send + 'static,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(own) = this.own {
            return own.as_mut().poll(cx);
        }
        let out = ready!(this.shared.poll(cx));
        match out {
            Err(e) if e.is::<Unshared>() => match this.kept.take() {
                Some(kept) => {
                    // Refused (e.g. a body over the buffering cap, streaming to the
                    // leader): call on our own, with our own request.
                    let (svc, req) = *kept;
                    let own = this.own.insert(Box::pin(Admission::waiting(
                        std::future::ready(Ok(())),
                        svc,
                        req,
                    )));
                    own.as_mut().poll(cx)
                }
                // Only followers are refused, and each keeps its request.
                None => Poll::Ready(Err(e)),
            },
            out => Poll::Ready(out),
        }
    }
}
