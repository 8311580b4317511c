//! A timer that is only armed when it is first needed, and the race of a call against it.
//!
//! Most calls finish in their first poll or long before their deadline; creating a tokio
//! `Sleep` up front (which looks up the runtime's timer and registers an entry) would cost
//! every call. A [`Timer`] keeps when it is [`Due`] and creates the `Sleep` the first time
//! the inner future is found pending. A timer due a duration *after* it starts (the
//! per-attempt timeout) does not even read the clock until then: a call that finishes in
//! its first poll never reads it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// When a [`Timer`] fires.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Due {
    /// At the request's deadline.
    Deadline(Instant),
    /// `timeout` after the timer is armed (the call's first pending poll), or at the
    /// request's deadline if that comes first.
    After {
        timeout: Duration,
        deadline: Option<Instant>,
    },
}

/// Why a [`Timer`] fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fired {
    /// The deadline ended the call, not the per-attempt timeout.
    pub(crate) by_deadline: bool,
    /// The deadline had passed already when the timer was armed (a `Due::After` timer,
    /// whose call started without reading the clock): the call never had time to run.
    pub(crate) before_armed: bool,
}

pin_project! {
    /// The states of a lazy timer: `Unarmed` until the call is first pending, then
    /// `Armed` with the tokio `Sleep` and what its firing will mean.
    #[project = TimerProj]
    #[derive(Debug)]
    pub(crate) enum Timer {
        Unarmed { due: Due },
        Armed { #[pin] sleep: Sleep, fired: Fired },
    }
}

impl Timer {
    pub(crate) fn new(due: Due) -> Self {
        Timer::Unarmed { due }
    }

    /// Ready once the timer is due. Arms it on first use (reading the clock for a
    /// `Due::After`), registering `cx`'s waker.
    pub(crate) fn poll_fired(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Fired> {
        if let TimerProj::Unarmed { due } = self.as_mut().project() {
            let (at, fired) = match *due {
                Due::Deadline(at) => (
                    at,
                    Fired {
                        by_deadline: true,
                        before_armed: false,
                    },
                ),
                Due::After { timeout, deadline } => {
                    // The only clock read of a per-attempt timeout, and only for a call
                    // that did not finish in its first poll.
                    let now = Instant::now();
                    let own = palisade_core::time::add(now, timeout);
                    match deadline {
                        Some(d) if d <= own => (
                            d,
                            Fired {
                                by_deadline: true,
                                before_armed: d <= now,
                            },
                        ),
                        _ => (
                            own,
                            Fired {
                                by_deadline: false,
                                before_armed: false,
                            },
                        ),
                    }
                }
            };
            self.set(Timer::Armed {
                sleep: tokio::time::sleep_until(at),
                fired,
            });
        }
        match self.project() {
            TimerProj::Armed { sleep, fired } => {
                ready!(sleep.poll(cx));
                Poll::Ready(*fired)
            }
            TimerProj::Unarmed { .. } => unreachable!("armed above"),
        }
    }
}

pin_project! {
    /// A call raced against a timer: the one timer race of this crate, behind the
    /// per-attempt timeout, the overall deadline and the server deadline. When the timer
    /// wins, the call is dropped (cancelled) at once.
    #[derive(Debug)]
    pub(crate) struct Race<F> {
        // `None`: out of time before the call started, or already cancelled.
        #[pin]
        inner: Option<F>,
        // `None`: no timer (a server request without a deadline): the call just runs.
        #[pin]
        timer: Option<Timer>,
    }
}

/// How a [`Race`] ended.
#[derive(Debug)]
pub(crate) enum Raced<T> {
    /// The call finished first.
    Done(T),
    /// The timer ran out first. `in_flight`: the call was running (and measured the
    /// dependency); otherwise it was out of time before it started. `by_deadline`: the
    /// request's deadline ran out (always, for a call that never started), not the
    /// per-attempt timeout.
    OutOfTime { in_flight: bool, by_deadline: bool },
}

impl<F> Race<F> {
    /// `inner` (or `None`: out of time already) against a timer (or none).
    pub(crate) fn new(inner: Option<F>, due: Option<Due>) -> Self {
        Self {
            inner,
            timer: due.map(Timer::new),
        }
    }
}

impl<F: Future> Race<F> {
    /// Polls the call, then (only while it is pending) the timer.
    pub(crate) fn poll_race(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Raced<F::Output>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Raced::OutOfTime {
                in_flight: false,
                by_deadline: true,
            });
        };
        if let Poll::Ready(out) = inner.poll(cx) {
            return Poll::Ready(Raced::Done(out));
        }
        let Some(timer) = this.timer.as_pin_mut() else {
            return Poll::Pending;
        };
        let fired = ready!(timer.poll_fired(cx));
        this.inner.set(None);
        Poll::Ready(Raced::OutOfTime {
            in_flight: !fired.before_armed,
            by_deadline: fired.by_deadline,
        })
    }
}
