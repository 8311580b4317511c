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
