//! The generic cell rate algorithm, as pure arithmetic on nanosecond timestamps.
//!
//! This is governor's GCRA (`governor/src/gcra.rs`) restated so that it can also *reserve*:
//! a request that must wait takes its slot at once and sleeps until the slot is due. The
//! reservations are ordered by arrival, which is what makes waiting FIFO-fair. The same
//! arithmetic runs in the keyed store and, in Lua, in the Redis script.
//!
//! State is one number, the *theoretical arrival time* (TAT): the instant at which the
//! bucket would be full again. A TAT at or before `now` means "full bucket", so a state
//! whose TAT has passed is indistinguishable from no state at all; that is what lets the
//! keyed store drop idle keys without changing any decision.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

/// What the algorithm decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted: store `tat`; the request may proceed after `wait` nanoseconds (0 = now).
    Admit { tat: u64, wait: u64 },
    /// Not admitted: the request would have to wait `retry_after` nanoseconds, more than
    /// it may. The state is unchanged.
    Deny { retry_after: u64 },
    /// The request costs more cells than the burst: it can never be admitted.
    TooCostly,
}

/// GCRA parameters: the emission interval `t` and the burst tolerance `tau = t * burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    t: u64,
    tau: u64,
    burst: u32,
}

impl Gcra {
    pub(crate) fn new(quota: Quota) -> Self {
        // A quota's replenish interval is at least 1ns (governor rejects zero periods).
        let t = duration_to_nanos(quota.replenish_interval()).max(1);
        let burst = quota.burst_size().get();
        Self {
            t,
            tau: t.saturating_mul(u64::from(burst)),
            burst,
        }
    }

    pub(crate) fn emission_interval(&self) -> u64 {
        self.t
    }

    pub(crate) fn burst(&self) -> NonZeroU32 {
        NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN)
    }

    /// Decides a request of `cost` cells arriving at `now`, given the stored `tat` (0 for a
    /// fresh key), allowing it to wait at most `max_wait` nanoseconds.
    ///
    /// The request is conforming when, after adding its cells, the bucket does not
    /// overflow: `max(tat, now) + cost * t <= now + tau`. The overflow is the wait.
    #[inline]
    pub(crate) fn decide(&self, tat: u64, now: u64, cost: u32, max_wait: u64) -> Decision {
        if cost > self.burst {
            return Decision::TooCostly;
        }
        // A zero-cost request always passes and leaves the state alone.
        let new_tat = tat
            .max(now)
            .saturating_add(self.t.saturating_mul(u64::from(cost)));
        let wait = new_tat.saturating_sub(now.saturating_add(self.tau));
        if wait <= max_wait {
            Decision::Admit {
                tat: if cost == 0 { tat } else { new_tat },
                wait,
            }
        } else {
            Decision::Deny { retry_after: wait }
        }
    }

    /// Cells still available at `now` for a key in state `tat` (for `RateLimit` headers).
    pub(crate) fn remaining(&self, tat: u64, now: u64) -> u32 {
        let used = tat.saturating_sub(now);
        let free = self.tau.saturating_sub(used) / self.t;
        u32::try_from(free).unwrap_or(u32::MAX).min(self.burst)
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (584 years), without `u128` arithmetic.
#[inline]
pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn per_second(n: u32) -> Gcra {
        Gcra::new(Quota::per_second(NonZeroU32::new(n).unwrap()))
    }

    #[test]
    fn burst_then_one_per_interval() {
        let g = per_second(10); // t = 100ms, burst 10
        let mut tat = 0;
        let now = 5 * MS;
        for _ in 0..10 {
            match g.decide(tat, now, 1, 0) {
                Decision::Admit { tat: t, wait: 0 } => tat = t,
                other => panic!("burst should pass: {other:?}"),
            }
        }
        // The 11th waits exactly one emission interval.
        assert_eq!(
            g.decide(tat, now, 1, 0),
            Decision::Deny {
                retry_after: 100 * MS
            }
        );
        // 30ms later, 70ms remain.
        assert_eq!(
            g.decide(tat, now + 30 * MS, 1, 0),
            Decision::Deny {
                retry_after: 70 * MS
            }
        );
        assert!(matches!(
            g.decide(tat, now + 100 * MS, 1, 0),
            Decision::Admit { wait: 0, .. }
        ));
    }

    #[test]
    fn sub_millisecond_retry_after_is_exact() {
        let g = Gcra::new(Quota::with_period(Duration::from_nanos(333_333)).unwrap());
        let Decision::Admit { tat, .. } = g.decide(0, 1_000, 1, 0) else {
            panic!()
        };
        assert_eq!(
            g.decide(tat, 1_000 + 1, 1, 0),
            Decision::Deny {
                retry_after: 333_332
            }
        );
    }

    #[test]
    fn reservations_queue_in_arrival_order() {
        let g = per_second(1); // t = 1s, burst 1
        let s = 1_000 * MS;
        let Decision::Admit { tat, wait: 0 } = g.decide(0, s, 1, 10 * s) else {
            panic!()
        };
        let Decision::Admit { tat, wait } = g.decide(tat, s, 1, 10 * s) else {
            panic!()
        };
        assert_eq!(wait, s);
        let Decision::Admit { wait, .. } = g.decide(tat, s, 1, 10 * s) else {
            panic!()
        };
        assert_eq!(wait, 2 * s, "the third waits behind the second");
        // One that may not wait that long is denied and reserves nothing.
        assert_eq!(
            g.decide(tat, s, 1, s),
            Decision::Deny { retry_after: 2 * s }
        );
    }

    #[test]
    fn cost_weights_and_too_costly() {
        let g = per_second(10);
        let Decision::Admit { tat, wait: 0 } = g.decide(0, 0, 7, 0) else {
            panic!()
        };
        assert_eq!(g.remaining(tat, 0), 3);
        assert_eq!(
            g.decide(tat, 0, 4, 0),
            Decision::Deny {
                retry_after: 100 * MS
            }
        );
        assert_eq!(g.decide(tat, 0, 11, u64::MAX), Decision::TooCostly);
        assert_eq!(
            g.decide(tat, 0, 0, 0),
            Decision::Admit { tat, wait: 0 },
            "zero cost passes without touching state"
        );
    }

    #[test]
    fn nanos_saturate_like_u128() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::new(1, 999_999_999),
            Duration::from_nanos(u64::MAX),
            Duration::from_nanos(u64::MAX) + Duration::from_nanos(1),
            Duration::new(u64::MAX / 1_000_000_000, 999_999_999),
            Duration::MAX,
        ] {
            let want = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            assert_eq!(duration_to_nanos(d), want, "{d:?}");
        }
    }

    #[test]
    fn stale_state_equals_fresh_state() {
        let g = per_second(5);
        let now = 10_000 * MS;
        for tat in [0, 1, now - 1, now] {
            assert_eq!(g.decide(tat, now, 3, 0), g.decide(0, now, 3, 0));
        }
    }
}
