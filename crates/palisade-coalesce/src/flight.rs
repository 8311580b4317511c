//! One call in flight, shared by every waiter for its key, driven by whichever polls.
//!
//! A [`Flight`] owns the inner service's future (boxed: it must stay pinned while shared)
//! and a waker slot per waiter. A waiter that polls takes the future out under the lock,
//! polls it unlocked with the flight's own waker (which wakes every waiter), and puts it
//! back. A waiter that finds it taken (another is polling now) registers its waker and
//! waits. When the future completes its output is stored, every other waiter is woken,
//! and each takes a clone (the last takes the value itself).
//!
//! # Release paths
//!
//! - completion or error: the output replaces the future, which is dropped at once;
//! - every waiter gone: [`Flight::cancel`] drops the future. This must be explicit: the
//!   future's own registrations (timers, sockets) hold the flight's waker, an `Arc` back to
//!   the flight, so waiting for the last `Arc` would leak a stalled call;
//! - a waiter leaving while others wait: [`Flight::leave`] forgets its waker and wakes the
//!   others, since the wake it may have taken was meant to drive the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use palisade_core::BoxError;

use crate::error::CoalescedError;

/// Where the shared call is.
enum Call<F, T> {
    /// Running; `None` while a waiter has it out to poll.
    Running(Option<Pin<Box<F>>>),
    /// Completed: each waiter gets a clone of the value or the shared error.
    Done(Result<T, Arc<BoxError>>),
    /// Every waiter left: the call was dropped.
    Cancelled,
}

struct State<F, T> {
    call: Call<F, T>,
    /// Waker of slot 0 (the first waiter), kept inline so a lone call allocates nothing
    /// for it.
    first: Option<Waker>,
    /// Wakers of slots 1.., grown as followers register.
    rest: Vec<Option<Waker>>,
}

impl<F, T> State<F, T> {
    fn register(&mut self, slot: usize, waker: &Waker) {
        let cell = if slot == 0 {
            &mut self.first
        } else {
            let i = slot - 1;
            if self.rest.len() <= i {
                self.rest.resize_with(i + 1, || None);
            }
            &mut self.rest[i]
        };
        match cell {
            Some(w) if w.will_wake(waker) => {}
            _ => *cell = Some(waker.clone()),
        }
    }

    fn forget(&mut self, slot: usize) {
        if slot == 0 {
            self.first = None;
        } else if let Some(cell) = self.rest.get_mut(slot - 1) {
            *cell = None;
        }
    }

    /// Wakes every registered waiter but `except`; each re-registers when it polls.
    fn wake_all(&mut self, except: Option<usize>) {
        if except != Some(0) {
            if let Some(w) = self.first.take() {
                w.wake();
            }
        }
        for (i, cell) in self.rest.iter_mut().enumerate() {
            if except != Some(i + 1) {
                if let Some(w) = cell.take() {
                    w.wake();
                }
            }
        }
    }
}

/// A shared call with success type `T`; see the [module docs](self).
pub(crate) struct Flight<F, T> {
    state: Mutex<State<F, T>>,
    next_slot: AtomicUsize,
}

impl<F, T, E> Flight<F, T>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Clone + Send + 'static,
    E: Into<BoxError>,
{
    /// A flight for `fut`, with slot 0 taken by its first waiter.
    pub(crate) fn new(fut: F) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                call: Call::Running(Some(Box::pin(fut))),
                first: None,
                rest: Vec::new(),
            }),
            next_slot: AtomicUsize::new(1),
        })
    }

    /// Polls the shared call for the waiter in `slot`.
    /// Ready with the output and whether this poll completed the call.
    pub(crate) fn poll(
        self: &Arc<Self>,
        slot: usize,
        cx: &mut Context<'_>,
    ) -> Poll<(Result<T, BoxError>, bool)> {
        let mut fut = {
            let mut state = self.lock();
            match &mut state.call {
                Call::Done(_) => return Poll::Ready((self.take(state), false)),
                Call::Cancelled => return Poll::Ready((Err(CoalescedError::cancelled()), false)),
                Call::Running(fut) => match fut.take() {
                    Some(fut) => {
                        // Registered before polling, so a wake during the poll reaches us.
                        state.register(slot, cx.waker());
                        fut
                    }
                    None => {
                        // Another waiter is polling it now; it, or the call's wake, will
                        // wake us.
                        state.register(slot, cx.waker());
                        return Poll::Pending;
                    }
                },
            }
        };

        // Poll unlocked: the call may wake its waker (and so lock the state) from inside.
        let waker = Waker::from(Arc::clone(self));
        let mut guard = PollGuard {
            flight: self,
            armed: true,
        };
        let polled = fut.as_mut().poll(&mut Context::from_waker(&waker));
        guard.armed = false;

        let mut state = self.lock();
        match polled {
            Poll::Pending => {
                state.call = Call::Running(Some(fut));
                Poll::Pending
            }
            Poll::Ready(out) => {
                state.call = Call::Done(out.map_err(|e| Arc::new(e.into())));
                state.wake_all(Some(slot));
                drop(state);
                // Drop the completed future, and with it every clone of our waker it
                // handed out, before counting who else holds the flight.
                drop(fut);
                drop(waker);
                Poll::Ready((self.take(self.lock()), true))
            }
        }
    }

    /// The output for one waiter: moved out if no other holds the flight, else cloned.
    fn take(self: &Arc<Self>, mut state: MutexGuard<'_, State<F, T>>) -> Result<T, BoxError> {
        let Call::Done(out) = &state.call else {
            return Err(CoalescedError::cancelled());
        };
        // Only waiters hold the flight now (the registry keeps a `Weak`, and the future
        // with its wakers is gone): alone, we may move the value out.
        let last = Arc::strong_count(self) == 1;
        match out {
            Ok(v) if !last => Ok(v.clone()),
            Err(e) => Err(CoalescedError::shared(Arc::clone(e))),
            Ok(_) => match std::mem::replace(&mut state.call, Call::Cancelled) {
                Call::Done(Ok(v)) => Ok(v),
                _ => Err(CoalescedError::cancelled()),
            },
        }
    }
}

impl<F, T> Flight<F, T> {
    /// A slot for one more waiter.
    pub(crate) fn join(&self) -> usize {
        self.next_slot.fetch_add(1, Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State<F, T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The waiter in `slot` leaves before completion; `last` when no waiter remains, and
    /// then the call is dropped (outside the lock).
    pub(crate) fn leave(&self, slot: usize, last: bool) {
        let dropped = {
            let mut state = self.lock();
            state.forget(slot);
            if last {
                match std::mem::replace(&mut state.call, Call::Cancelled) {
                    Call::Running(fut) => fut,
                    other => {
                        state.call = other;
                        None
                    }
                }
            } else {
                // The wake we may have consumed was meant to drive the call: pass it on.
                state.wake_all(None);
                None
            }
        };
        drop(dropped);
    }
}

impl<F, T> Wake for Flight<F, T>
where
    F: Send + 'static,
    T: Send + 'static,
{
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wake_all(None);
    }
}

/// Marks the call failed if polling it panics, so the other waiters are not left waiting
/// for a future that no longer exists.
struct PollGuard<'a, F, T> {
    flight: &'a Flight<F, T>,
    armed: bool,
}

impl<F, T> Drop for PollGuard<'_, F, T> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self
                .flight
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.call = Call::Cancelled;
            state.wake_all(None);
        }
    }
}
