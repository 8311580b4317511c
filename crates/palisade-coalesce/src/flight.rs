//! One call in flight, shared by every waiter for its key, driven by whichever polls.
//!
//! A [`Flight`] owns the inner service's future (boxed: it must stay pinned while shared)
//! and a waker slot per waiter. A waiter that polls takes the future out under the lock,
//! polls it unlocked, and puts it back. A lone waiter polls with its own waker; with
//! company, the flight's own waker is used, which wakes every waiter. A waiter that finds
//! the future taken (another is polling it now) registers its waker and waits. When the
//! future completes its output is stored, every other waiter is woken, and each takes a
//! clone (the last takes the value itself).
//!
//! # Release paths
//!
//! - completion or error: the output replaces the future, which is dropped at once;
//! - every waiter gone: the last [`Flight::leave`] drops the future. This must be
//!   explicit: the future's own registrations (timers, sockets) may hold the flight's
//!   waker, an `Arc` back to the flight, so waiting for the last `Arc` would leak a stalled
//!   call;
//! - a waiter leaving while others wait: it forgets its waker and wakes the others, since
//!   the wake it may have taken was meant to drive the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use palisade_core::BoxError;

use crate::error::CoalescedError;

/// Where the shared call is.
enum Call<F, T> {
    /// Running; `None` while a waiter has it out to poll (the leader, from the call until
    /// its first poll).
    Running(Option<Pin<Box<F>>>),
    /// Completed: each waiter gets a clone of the value or the shared error.
    Done(Result<T, Arc<BoxError>>),
    /// The value was moved out to the last waiter, or the call was dropped (every waiter
    /// left, or polling it panicked).
    Gone,
}

struct State<F, T> {
    call: Call<F, T>,
    /// Waiters attached and not yet served: the last one served moves the value out.
    waiters: usize,
    next_slot: usize,
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

    /// One waiter's share of the output: a clone, or the value itself for the last.
    fn take(&mut self) -> Result<T, BoxError>
    where
        T: Clone,
    {
        self.waiters = self.waiters.saturating_sub(1);
        match &self.call {
            Call::Done(Ok(v)) if self.waiters > 0 => Ok(v.clone()),
            Call::Done(Err(e)) => Err(CoalescedError::shared(Arc::clone(e))),
            Call::Done(Ok(_)) => match std::mem::replace(&mut self.call, Call::Gone) {
                Call::Done(Ok(v)) => Ok(v),
                _ => Err(CoalescedError::cancelled()),
            },
            Call::Running(_) | Call::Gone => Err(CoalescedError::cancelled()),
        }
    }
}

/// A shared call with success type `T`; see the [module docs](self).
pub(crate) struct Flight<F, T> {
    state: Mutex<State<F, T>>,
}

impl<F, T> Flight<F, T> {
    /// A flight not started yet, its first waiter (slot 0) attached.
    pub(crate) fn pending() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                call: Call::Running(None),
                waiters: 1,
                next_slot: 1,
                first: None,
                rest: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<F, T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches one more waiter and returns its slot, or `None` if the call already
    /// completed (its entry is about to go; the caller starts a new call instead of
    /// getting an answer that may already have been moved out).
    pub(crate) fn join(&self) -> Option<usize> {
        let mut state = self.lock();
        if !matches!(state.call, Call::Running(_)) {
            return None;
        }
        state.waiters += 1;
        state.next_slot += 1;
        Some(state.next_slot - 1)
    }

    /// Gives back a call its leader checked out but will not poll (it is being dropped),
    /// so the other waiters can drive it; `None` if the leader never made the call, which
    /// then fails them.
    pub(crate) fn hand_back(&self, fut: Option<Pin<Box<F>>>) {
        let mut state = self.lock();
        if let Call::Running(slot @ None) = &mut state.call {
            match fut {
                Some(fut) => *slot = Some(fut),
                None => state.call = Call::Gone,
            }
            state.wake_all(Some(0));
        }
    }

    /// The waiter in `slot` leaves before it was served; the last one drops the call
    /// (outside the lock).
    pub(crate) fn leave(&self, slot: usize) {
        let dropped = {
            let mut state = self.lock();
            state.forget(slot);
            state.waiters = state.waiters.saturating_sub(1);
            if state.waiters == 0 {
                std::mem::replace(&mut state.call, Call::Gone)
            } else {
                // The wake we may have consumed was meant to drive the call: pass it on.
                state.wake_all(None);
                Call::Gone
            }
        };
        drop(dropped);
    }
}

impl<F, T, E> Flight<F, T>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Clone + Send + 'static,
    E: Into<BoxError>,
{
    /// Polls the shared call for the waiter in `slot`: ready with its share of the output
    /// and whether the caller must retire the call's entry (this poll completed it, or it
    /// is gone after a panic).
    ///
    /// A leader that still holds its call checked out (`checked_out`: it has not polled
    /// it yet) polls it without taking the lock, with its own waker.
    pub(crate) fn poll(
        self: &Arc<Self>,
        slot: usize,
        checked_out: &mut Option<Pin<Box<F>>>,
        cx: &mut Context<'_>,
    ) -> Poll<(Result<T, BoxError>, bool)> {
        let (mut fut, alone) = if let Some(fut) = checked_out.take() {
            // Nobody else can poll it: it is ours until we put it back below.
            (fut, true)
        } else {
            let mut state = self.lock();
            match &mut state.call {
                Call::Done(_) => return Poll::Ready((state.take(), false)),
                Call::Gone => return Poll::Ready((Err(CoalescedError::cancelled()), true)),
                Call::Running(fut) => {
                    let fut = fut.take();
                    // Registered before polling, so a wake during the poll reaches us.
                    state.register(slot, cx.waker());
                    match fut {
                        Some(fut) => (fut, state.waiters == 1),
                        // Another waiter is polling it now; it, or the call's wake, will
                        // wake us.
                        None => return Poll::Pending,
                    }
                }
            }
        };

        // Poll unlocked: the call may wake its waker (and so lock the state) from inside.
        // Alone, our own waker will do; otherwise the flight's, which wakes everyone.
        let shared;
        let waker = if alone {
            cx.waker()
        } else {
            shared = Waker::from(Arc::clone(self));
            &shared
        };
        let mut guard = PollGuard {
            flight: self,
            armed: true,
        };
        let polled = fut.as_mut().poll(&mut Context::from_waker(waker));
        guard.armed = false;

        let mut state = self.lock();
        match polled {
            Poll::Pending => {
                // Registered now (if not before), so whoever polls it next can wake us.
                state.register(slot, cx.waker());
                state.call = Call::Running(Some(fut));
                Poll::Pending
            }
            Poll::Ready(out) => {
                state.call = Call::Done(out.map_err(|e| Arc::new(e.into())));
                state.wake_all(Some(slot));
                let mine = state.take();
                drop(state);
                // The completed future is dropped outside the lock.
                drop(fut);
                Poll::Ready((mine, true))
            }
        }
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
        self.lock().wake_all(None);
    }
}

/// Marks the call gone if polling it panics, so the other waiters are not left waiting
/// for a future that no longer exists.
struct PollGuard<'a, F, T> {
    flight: &'a Flight<F, T>,
    armed: bool,
}

impl<F, T> Drop for PollGuard<'_, F, T> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.flight.lock();
            state.call = Call::Gone;
            state.wake_all(None);
        }
    }
}
