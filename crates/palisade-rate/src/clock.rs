//! A governor [`Clock`] backed by `tokio::time`, so governor honours paused time.

use std::time::Duration;

use governor::clock::Clock;
use tokio::time::Instant;

/// A [`governor::clock::Clock`] that reads `tokio::time::Instant`.
///
/// governor's default clocks read the OS clock, so under `tokio::time::pause` (every
/// time-dependent test in this workspace) they keep running while tokio's time stands
/// still. This clock measures the time elapsed since it was created with
/// `tokio::time::Instant`, as a `Duration` (one of governor's [`Reference`] types), so
/// `tokio::time::advance` moves it. It is also the clock of this crate's own limiters.
///
/// [`Reference`]: governor::clock::Reference
///
/// ```
/// use std::num::NonZeroU32;
/// use governor::{Quota, RateLimiter};
/// use palisade_rate::TokioClock;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let clock = TokioClock::new();
/// let limiter = RateLimiter::direct_with_clock(Quota::per_second(NonZeroU32::MIN), clock);
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_err());
/// tokio::time::advance(std::time::Duration::from_secs(1)).await;
/// assert!(limiter.check().is_ok());
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock whose zero is now (tokio's paused time if the current runtime is paused).
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The tokio instant this clock counts from.
    #[must_use]
    pub const fn origin(&self) -> Instant {
        self.origin
    }

    /// Nanoseconds since the origin.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        crate::gcra::duration_to_nanos(self.origin.elapsed())
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}
