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
///
/// A deadline made where the clock was just read ([`Deadline::after`],
/// [`Deadline::at_from`]) also remembers how much time was left then: an upper bound on
/// what is left now, which lets a policy rule out work that needs more than that (a copy
/// of the request for a retry or a hedge) without reading the clock again
/// ([`Deadline::may_leave_more_than`]). Deadlines compare, order and hash by their instant
/// only.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    // Nanoseconds left when the deadline was made; `u64::MAX` when not known.
    left_at_most: u64,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl std::hash::Hash for Deadline {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.at.hash(state);
    }
}

const UNKNOWN: u64 = u64::MAX;

#[inline]
fn nanos(d: Duration) -> u64 {
    // Saturating at `UNKNOWN` is right: a bound of 584 years rules nothing out.
    u64::try_from(d.as_nanos()).unwrap_or(UNKNOWN)
}

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Self {
            at: instant,
            left_at_most: UNKNOWN,
        }
    }

    /// A deadline at `instant`, made at `now` (a clock reading the caller already has):
    /// it remembers that at most `instant - now` is left.
    #[inline]
    pub fn at_from(instant: Instant, now: Instant) -> Self {
        Self {
            at: instant,
            left_at_most: nanos(instant.saturating_duration_since(now)),
        }
    }

    /// A deadline `timeout` from now (saturating far in the future on overflow).
    pub fn after(timeout: Duration) -> Self {
        Self::after_from(Instant::now(), timeout)
    }

    /// A deadline `timeout` after `now` (a clock reading the caller already has),
    /// saturating far in the future on overflow: it remembers that at most `timeout` is
    /// left. The same as `at_from(now + timeout, now)` without the subtraction.
    #[inline]
    pub fn after_from(now: Instant, timeout: Duration) -> Self {
        Self {
            at: crate::time::add(now, timeout),
            // An instant that saturated is nearer than `timeout`: still an upper bound.
            left_at_most: nanos(timeout),
        }
    }

    /// The instant.
    pub const fn instant(&self) -> Instant {
        self.at
    }

    /// The clock reading this deadline was made at, when it remembers one
    /// ([`Deadline::after`], [`Deadline::at_from`]); for a deadline that had already passed
    /// then, its own (earlier) instant. A policy that only needs a rough date (a retry
    /// budget dating its deposits) may take it instead of reading the clock: it is at most
    /// the request's age old.
    #[inline]
    pub fn reading(&self) -> Option<Instant> {
        if self.left_at_most == UNKNOWN {
            return None;
        }
        self.at.checked_sub(Duration::from_nanos(self.left_at_most))
    }

    /// Time left until the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether more than `d` may still be left: `false` only when at most `d` is left
    /// for certain. Answered without reading the clock when the deadline remembers it had
    /// `d` or less left when it was made (or more than `d`, in which case the answer is a
    /// cheap "maybe": time may have passed since). Otherwise exact, from the clock. For
    /// decisions that only save work when the answer is `false`; a decision that must be
    /// exact (sleep or not, send or not) reads [`Deadline::remaining`].
    #[inline]
    pub fn may_leave_more_than(&self, d: Duration) -> bool {
        if self.left_at_most == UNKNOWN {
            self.remaining() > d
        } else {
            self.left_at_most > nanos(d)
        }
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.at
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
    async fn may_leave_more_than_never_rules_out_time_that_is_left() {
        let d = Deadline::after(Duration::from_millis(300));
        // The bound remembered at creation decides without the clock...
        assert!(!d.may_leave_more_than(Duration::from_millis(300)));
        assert!(d.may_leave_more_than(Duration::from_millis(299)));
        // ...so after time passes it may say "maybe" where only 100ms are left, but it
        // never says "no" while more than `d` is left.
        time::advance(Duration::from_millis(200)).await;
        assert!(d.may_leave_more_than(Duration::from_millis(150)));
        assert!(!d.may_leave_more_than(Duration::from_millis(300)));
        // Without a remembered bound, it is exact.
        let at = Deadline::at(d.instant());
        assert!(!at.may_leave_more_than(Duration::from_millis(150)));
        assert!(at.may_leave_more_than(Duration::from_millis(99)));
        // A bound does not take part in comparisons.
        assert_eq!(at, d);
        let now = Instant::now();
        assert_eq!(Deadline::at_from(d.instant(), now), at);
        assert!(
            !Deadline::at_from(d.instant(), now).may_leave_more_than(Duration::from_millis(100))
        );
        assert!(!Deadline::at_from(now, now + Duration::from_secs(1))
            .may_leave_more_than(Duration::ZERO));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn reading_is_when_the_deadline_was_made() {
        let made = Instant::now();
        let d = Deadline::after(Duration::from_millis(300));
        time::advance(Duration::from_millis(200)).await;
        assert_eq!(d.reading(), Some(made));
        assert_eq!(
            Deadline::at_from(
                made + Duration::from_secs(1),
                made + Duration::from_millis(7)
            )
            .reading(),
            Some(made + Duration::from_millis(7))
        );
        // Already passed when made: its own instant, earlier than the reading.
        assert_eq!(
            Deadline::at_from(made, made + Duration::from_secs(1)).reading(),
            Some(made)
        );
        assert_eq!(Deadline::at(made).reading(), None);
        // `after_from` is `at_from` without the subtraction.
        let a = Deadline::after_from(made, Duration::from_millis(300));
        let b = Deadline::at_from(made + Duration::from_millis(300), made);
        assert_eq!((a, a.reading()), (b, b.reading()));
        assert!(!a.may_leave_more_than(Duration::from_millis(300)));
        assert!(a.may_leave_more_than(Duration::from_millis(299)));
        assert!(Deadline::after_from(made, Duration::MAX) > a, "saturates");
    }

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
