//! The shared, lock-free local limiter: one atomic TAT driven by [`TokioClock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::Quota;
use palisade_core::observe::Counter;
use palisade_core::RateLimited;

use crate::gcra::{duration_to_nanos, Decision, Gcra};
use crate::TokioClock;

/// A keyless GCRA limiter shared by every service a [`RateLimitLayer`](crate::RateLimitLayer)
/// builds. Cheap to query for live state; also usable on its own.
///
/// Decisions are one compare-and-swap on an `AtomicU64`; no lock, no allocation.
#[derive(Debug)]
pub struct Limiter {
    quota: Quota,
    gcra: Gcra,
    clock: TokioClock,
    tat: AtomicU64,
    decisions: Decisions,
}

/// `palisade_decisions_total` handles (no-ops without the `metrics` feature), registered
/// once per limiter.
#[derive(Debug)]
pub(crate) struct Decisions {
    admitted: Counter,
    queued: Counter,
    rejected: Counter,
}

impl Decisions {
    pub(crate) fn register(policy: &'static str, name: &str) -> Self {
        let counter = |decision| {
            Counter::register(
                "palisade_decisions_total",
                policy,
                name,
                &[("decision", decision)],
            )
        };
        Self {
            admitted: counter("admitted"),
            queued: counter("queued"),
            rejected: counter("rejected"),
        }
    }

    /// Counts `outcome` and passes it on.
    pub(crate) fn count(&self, outcome: Acquire) -> Acquire {
        match &outcome {
            Acquire::Now => self.admitted.increment(1),
            Acquire::After(_) => self.queued.increment(1),
            Acquire::Rejected(_) => self.rejected.increment(1),
        }
        outcome
    }
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
        Self::for_policy(quota, "rate_limit", "")
    }

    /// A limiter for `quota` whose metrics carry the instance name `name`.
    #[must_use]
    pub fn named(quota: Quota, name: &str) -> Self {
        Self::for_policy(quota, "rate_limit", name)
    }

    /// The quota it enforces.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// A limiter whose decisions are counted under metric labels `policy` and `name`.
    pub(crate) fn for_policy(quota: Quota, policy: &'static str, name: &str) -> Self {
        Self {
            quota,
            gcra: Gcra::new(quota),
            clock: TokioClock::new(),
            tat: AtomicU64::new(0),
            decisions: Decisions::register(policy, name),
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
    #[inline]
    pub fn acquire(&self, cost: u32, max_wait: Duration) -> Acquire {
        self.decisions.count(self.decide(cost, max_wait))
    }

    #[inline]
    fn decide(&self, cost: u32, max_wait: Duration) -> Acquire {
        let max_wait = duration_to_nanos(max_wait);
        // The one clock reading of the decision, taken before the state is loaded: a CAS
        // retry reuses it (the decision is for this arrival time, whoever won the race).
        let now = self.clock.now_nanos();
        let mut current = self.tat.load(Ordering::Relaxed);
        loop {
            match self.gcra.decide(current, now, cost, max_wait) {
                // The common case, a cell taken now: one compare-and-swap, then done.
                Decision::Admit { tat, wait: 0 } if tat != current => {
                    match self.tat.compare_exchange_weak(
                        current,
                        tat,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Acquire::Now,
                        // Another caller took cells since we read: decide again on their
                        // state so both decisions count.
                        Err(actual) => current = actual,
                    }
                }
                Decision::Admit { tat, wait } => {
                    if tat != current {
                        if let Err(actual) = self.tat.compare_exchange_weak(
                            current,
                            tat,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
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
