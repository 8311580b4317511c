//! The request's overall deadline, and how it rides on a request.
//!
//! A [`Deadline`] is an absolute [`tokio::time::Instant`]: the time by which the whole
//! call, retries and hedges included, must finish. Every policy that waits (a queue, a
//! rate limit, a retry backoff) reads it and never waits past it.
//!
//! It rides on the request:
//! - `http::Request<B>`: in the request's `Extensions`. tonic channels and
//!   hyper clients are services of `http::Request`, so this covers them.
//! - any other request type: wrap it in [`WithDeadline`], or implement [`HasDeadline`]
//!   (and [`SetDeadline`]) for it.
//! - plain types that never carry one (`String`, `&str`, `Vec<u8>`, integers, `()`)
//!   implement [`HasDeadline`] returning `None`, so policies work on them unchanged.
//!
//! The layers that set deadlines and propagate them hop to hop live in
//! `palisade-deadline`; the type lives here so every policy can read it.
//!
//! # Example
//!
//! ```
//! use palisade_core::{Deadline, HasDeadline, SetDeadline, WithDeadline};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let mut req = WithDeadline::new("query");
//! assert_eq!(req.deadline(), None);
//! req.set_deadline(Deadline::after(Duration::from_millis(300)));
//! tokio::time::advance(Duration::from_millis(100)).await;
//! assert_eq!(req.deadline().unwrap().remaining(), Duration::from_millis(200));
//! # }
//! ```

use std::time::Duration;

use tokio::time::Instant;

/// An absolute point in (tokio) time by which a call must be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// A deadline `timeout` from now (saturating far in the future on overflow).
    pub fn after(timeout: Duration) -> Self {
        Self(crate::time::from_now(timeout))
    }

    /// The instant.
    pub const fn instant(&self) -> Instant {
        self.0
    }

    /// Time left until the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The earlier of two deadlines: a policy may shorten a caller's deadline, never
    /// extend it.
    #[must_use]
    pub fn min(self, other: Deadline) -> Deadline {
        std::cmp::min(self, other)
    }

    /// `min(wait, remaining())`: the longest a policy may wait on behalf of a request that
    /// may or may not carry a deadline.
    pub fn cap(deadline: Option<Deadline>, wait: Duration) -> Duration {
        match deadline {
            Some(d) => wait.min(d.remaining()),
            None => wait,
        }
    }
}

/// A request that may carry a [`Deadline`].
pub trait HasDeadline {
    /// The request's deadline, if it has one.
    fn deadline(&self) -> Option<Deadline>;
}

/// A request that can be given a [`Deadline`].
pub trait SetDeadline: HasDeadline {
    /// Sets (replaces) the request's deadline.
    fn set_deadline(&mut self, deadline: Deadline);
}

/// Any request type with an optional deadline beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WithDeadline<T> {
    /// The request itself.
    pub request: T,
    deadline: Option<Deadline>,
}

impl<T> WithDeadline<T> {
    /// `request` with no deadline yet.
    pub const fn new(request: T) -> Self {
        Self {
            request,
            deadline: None,
        }
    }

    /// `request` with `deadline`.
    pub const fn until(request: T, deadline: Deadline) -> Self {
        Self {
            request,
            deadline: Some(deadline),
        }
    }

    /// Drops the deadline and returns the request.
    pub fn into_inner(self) -> T {
        self.request
    }
}

impl<T> HasDeadline for WithDeadline<T> {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }
}

impl<T> SetDeadline for WithDeadline<T> {
    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

impl<B> HasDeadline for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }
}

impl<B> SetDeadline for http::Request<B> {
    fn set_deadline(&mut self, deadline: Deadline) {
        self.extensions_mut().insert(deadline);
    }
}

/// Plain request types never carry a deadline.
macro_rules! no_deadline {
    ($($t:ty),* $(,)?) => {$(
        impl HasDeadline for $t {
            fn deadline(&self) -> Option<Deadline> {
                None
            }
        }
    )*};
}

no_deadline!(
    (),
    bool,
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64,
    isize,
    String,
    &'static str,
    Vec<u8>,
);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn remaining_counts_down_and_saturates() {
        let d = Deadline::after(Duration::from_secs(1));
        assert_eq!(d.remaining(), Duration::from_secs(1));
        assert!(!d.is_expired());
        time::advance(Duration::from_millis(400)).await;
        assert_eq!(d.remaining(), Duration::from_millis(600));
        time::advance(Duration::from_secs(5)).await;
        assert_eq!(d.remaining(), Duration::ZERO);
        assert!(d.is_expired());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn min_and_cap() {
        let a = Deadline::after(Duration::from_secs(1));
        let b = Deadline::after(Duration::from_secs(2));
        assert_eq!(a.min(b), a);
        assert_eq!(b.min(a), a);
        assert_eq!(
            Deadline::cap(Some(a), Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            Deadline::cap(None, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        // Overflow saturates instead of panicking.
        let far = Deadline::after(Duration::MAX);
        assert!(far > b);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn http_request_carries_deadline_in_extensions() {
        let mut req = http::Request::new(());
        assert_eq!(req.deadline(), None);
        let d = Deadline::after(Duration::from_millis(5));
        req.set_deadline(d);
        assert_eq!(req.deadline(), Some(d));
        assert_eq!(req.extensions().get::<Deadline>(), Some(&d));
    }
}
