//! Response futures of [`Coalesce`](crate::Coalesce).

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, Deadline, DeadlineExceeded};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::flight::Flight;
use crate::registry::Registry;

/// One waiter's attachment to a shared call; leaving (drop before completion) detaches it,
/// and the last to leave drops the call.
struct Waiter<F, T, K: Hash + Eq> {
    flight: Arc<Flight<F, T>>,
    /// The leader's call until its first poll: polled then without the flight's lock.
    checked_out: Option<Pin<Box<F>>>,
    /// Whether this is a leader that has not polled its call yet.
    unpolled_leader: bool,
    slot: usize,
    key: K,
    registry: Arc<Registry<K>>,
    done: bool,
}

impl<F, T, K: Hash + Eq> Drop for Waiter<F, T, K> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.unpolled_leader {
            // Dropped before polling its call (or making it, if that panicked): give it
            // to the other waiters, if any, before leaving.
            self.flight.hand_back(self.checked_out.take());
        }
        self.registry.leave(&self.key, Arc::as_ptr(&self.flight));
        self.flight.leave(self.slot);
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
    enum State<F, T, K>
    where
        K: Hash,
        K: Eq,
    {
        Bypass { #[pin] fut: F },
        Waiting { waiter: Waiter<F, T, K>, #[pin] timer: DeadlineTimer },
        Done,
    }
}

pin_project! {
    /// The response future of [`Coalesce`](crate::Coalesce): the request's own call (a
    /// request without a key, or over the key bound), or a place among the waiters of a
    /// shared call.
    pub struct ResponseFuture<F, T, K>
    where
        K: Hash,
        K: Eq,
    {
        #[pin]
        state: State<F, T, K>,
    }
}

impl<F, T, K: Hash + Eq> fmt::Debug for ResponseFuture<F, T, K> {
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

impl<F, T, K: Hash + Eq> ResponseFuture<F, T, K> {
    pub(crate) fn bypass(fut: F) -> Self {
        Self {
            state: State::Bypass { fut },
        }
    }

    pub(crate) fn waiter(
        flight: Arc<Flight<F, T>>,
        slot: usize,
        key: K,
        registry: Arc<Registry<K>>,
        deadline: Option<Deadline>,
    ) -> Self {
        let timer = match deadline {
            Some(d) => DeadlineTimer::Sleep {
                sleep: tokio::time::sleep_until(d.instant()),
            },
            None => DeadlineTimer::None,
        };
        Self {
            state: State::Waiting {
                waiter: Waiter {
                    flight,
                    checked_out: None,
                    unpolled_leader: slot == 0,
                    slot,
                    key,
                    registry,
                    done: false,
                },
                timer,
            },
        }
    }
}

impl<F, T, K: Hash + Eq> ResponseFuture<F, T, K> {
    /// Hands this leader its call. The waiter exists first, so if making the call
    /// panicked, the waiter's drop would release its entry and fail its joiners.
    pub(crate) fn start(mut self, fut: F) -> Self {
        if let State::Waiting { waiter, .. } = &mut self.state {
            waiter.checked_out = Some(Box::pin(fut));
        }
        self
    }
}

impl<F, T, E, K> Future for ResponseFuture<F, T, K>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Clone + Send + 'static,
    E: Into<BoxError>,
    K: Hash + Eq,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.state.as_mut().project() {
            StateProj::Bypass { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Waiting { waiter, timer } => {
                waiter.unpolled_leader = false;
                if let Poll::Ready((out, retire)) =
                    waiter.flight.poll(waiter.slot, &mut waiter.checked_out, cx)
                {
                    waiter.done = true;
                    if retire {
                        // We drove it to the end (or found it gone): the next request for
                        // the key starts anew.
                        waiter
                            .registry
                            .finish(&waiter.key, Arc::as_ptr(&waiter.flight));
                    }
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
