//! A sleep that is only armed when it is first needed.
//!
//! Most calls finish in their first poll or long before their deadline; creating a tokio
//! `Sleep` up front (which looks up the runtime's timer and registers an entry) would cost
//! every call. [`LazySleep`] keeps the instant and creates the `Sleep` the first time the
//! inner future is found pending.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pin_project! {
    #[derive(Debug)]
    pub(crate) struct LazySleep {
        at: Instant,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl LazySleep {
    pub(crate) fn until(at: Instant) -> Self {
        Self { at, sleep: None }
    }

    /// Ready once `at` has passed. Arms the timer on first use, registering `cx`'s waker.
    pub(crate) fn poll_elapsed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep_until(*this.at)));
        }
        this.sleep.as_pin_mut().expect("armed above").poll(cx)
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
        sleep: Option<LazySleep>,
    }
}

/// How a [`Race`] ended.
#[derive(Debug)]
pub(crate) enum Raced<T> {
    /// The call finished first.
    Done(T),
    /// The timer ran out first. `in_flight`: the call was running (and measured the
    /// dependency); otherwise it was out of time before it started.
    OutOfTime { in_flight: bool },
}

impl<F> Race<F> {
    /// `inner` (or `None`: out of time already) against a timer at `at` (or none).
    pub(crate) fn new(inner: Option<F>, at: Option<Instant>) -> Self {
        Self {
            inner,
            sleep: at.map(LazySleep::until),
        }
    }
}

impl<F: Future> Race<F> {
    /// Polls the call, then (only while it is pending) the timer.
    pub(crate) fn poll_race(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Raced<F::Output>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Raced::OutOfTime { in_flight: false });
        };
        if let Poll::Ready(out) = inner.poll(cx) {
            return Poll::Ready(Raced::Done(out));
        }
        let Some(sleep) = this.sleep.as_pin_mut() else {
            return Poll::Pending;
        };
        std::task::ready!(sleep.poll_elapsed(cx));
        this.inner.set(None);
        Poll::Ready(Raced::OutOfTime { in_flight: true })
    }
}
