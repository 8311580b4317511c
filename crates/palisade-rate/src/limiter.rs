//! The shared, lock-free local limiter: one atomic TAT driven by [`TokioClock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::Quota;
use palisade_core::RateLimited;

use crate::gcra::{duration_to_nanos, Decision, Gcra};
use crate::TokioClock;

/// A keyless GCRA limiter shared by every service a [`RateLimitLayer`](crate::RateLimitLayer)
/// builds. Cheap to query for live state; also usable on its own.
///
/// Decisions are one compare-and-swap on an `AtomicU64`; no lock, no allocation.
#[derive(Debug)]
pub struct Limiter {
    gcra: Gcra,
    clock: TokioClock,
    tat: AtomicU64,
}

/// The outcome of [`Limiter::acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Go now.
    Now,
    /// A slot is reserved; go after this wait.
    After(Duration),
    /// Rejected; the error says how long the request would have had to wait.
    Rejected(RateLimited),
}

impl Limiter {
    /// A limiter for `quota`, with its clock starting now.
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self {
            gcra: Gcra::new(quota),
            clock: TokioClock::new(),
            tat: AtomicU64::new(0),
        }
    }

    /// Takes `cost` cells now if they are available.
    ///
    /// # Errors
    /// [`RateLimited`] with the exact time until they would be.
    pub fn check(&self, cost: u32) -> Result<(), RateLimited> {
        match self.acquire(cost, Duration::ZERO) {
            Acquire::Rejected(e) => Err(e),
            Acquire::Now | Acquire::After(_) => Ok(()),
        }
    }

    /// Takes `cost` cells, reserving a slot up to `max_wait` ahead when the bucket is empty.
    /// Reservations are handed out in call order, so waiters are served first come, first
    /// served.
    pub fn acquire(&self, cost: u32, max_wait: Duration) -> Acquire {
        let max_wait = duration_to_nanos(max_wait);
        let now = self.clock.now_nanos();
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            match self.gcra.decide(current, now, cost, max_wait) {
                Decision::Admit { tat, wait } => {
                    if tat != current {
                        // Another caller may have taken cells since we read: retry on
                        // their state so both decisions count.
                        if let Err(actual) = self.tat.compare_exchange_weak(
                            current,
                            tat,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            current = actual;
                            continue;
                        }
                    }
                    return if wait == 0 {
                        Acquire::Now
                    } else {
                        Acquire::After(Duration::from_nanos(wait))
                    };
                }
                Decision::Deny { retry_after } => {
                    return Acquire::Rejected(RateLimited::with_retry_after(Duration::from_nanos(
                        retry_after,
                    )))
                }
                Decision::TooCostly => return Acquire::Rejected(RateLimited::new()),
            }
        }
    }

    /// Cells available right now (at most the burst).
    #[must_use]
    pub fn remaining(&self) -> u32 {
        self.gcra
            .remaining(self.tat.load(Ordering::Acquire), self.clock.now_nanos())
    }

    /// The quota's burst size.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.gcra.burst().get()
    }

    /// Time to earn one cell back.
    #[must_use]
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.gcra.emission_interval())
    }
}
