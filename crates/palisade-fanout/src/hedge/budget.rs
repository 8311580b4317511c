//! The hedge budget: extra attempts limited to a fraction of requests.
//!
//! A token bucket in one atomic, in millionths of a hedge: every request deposits
//! `ratio` of a hedge, every hedge withdraws a whole one, and the balance is capped at
//! `burst` hedges so a quiet period cannot save up a storm (Finagle's `maxExtraLoad`).
//! The bucket starts full, so the first requests may hedge before any deposit.
//!
//! Over any long run, hedges <= ratio * requests + burst.

use std::sync::atomic::{AtomicI64, Ordering};

/// One hedge, in the budget's units.
const UNIT: i64 = 1_000_000;

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Budget {
    balance: AtomicI64,
    deposit: i64,
    max: i64,
}

impl Budget {
    /// `ratio` in [0, 1] and `burst` >= 0 (checked by the builder).
    pub(crate) fn new(ratio: f64, burst: u32) -> Self {
        let max = i64::from(burst) * UNIT;
        Self {
            balance: AtomicI64::new(max),
            deposit: (ratio * UNIT as f64).round() as i64,
            max,
        }
    }

    /// Called once per request.
    pub(crate) fn deposit(&self) {
        // A load before the add keeps a saturated bucket from taking a write per call; two
        // racing deposits may overshoot the cap by one deposit, which is harmless.
        if self.balance.load(Ordering::Relaxed) < self.max {
            self.balance.fetch_add(self.deposit, Ordering::Relaxed);
        }
    }

    /// Whether a hedge could be paid for right now (no withdrawal).
    pub(crate) fn can_afford(&self) -> bool {
        self.balance.load(Ordering::Relaxed) >= UNIT
    }

    /// Pays for one hedge, or says the budget is spent.
    pub(crate) fn try_withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= UNIT).then_some(b - UNIT)
            })
            .is_ok()
    }

    /// The balance in whole hedges.
    pub(crate) fn available(&self) -> f64 {
        self.balance.load(Ordering::Relaxed) as f64 / UNIT as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_then_limits_to_the_ratio() {
        let b = Budget::new(0.05, 2);
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw(), "burst spent");
        // 19 requests are not enough for a hedge at 5%, the 20th is.
        for _ in 0..19 {
            b.deposit();
        }
        assert!(!b.can_afford());
        b.deposit();
        assert!(b.can_afford());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[test]
    fn balance_is_capped_at_burst() {
        let b = Budget::new(0.5, 3);
        for _ in 0..1000 {
            b.deposit();
        }
        assert!(b.available() <= 3.5, "{}", b.available());
        let mut n = 0;
        while b.try_withdraw() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn zero_ratio_allows_only_the_burst() {
        let b = Budget::new(0.0, 1);
        for _ in 0..1000 {
            b.deposit();
        }
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }
}
