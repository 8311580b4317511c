//! Backoff between attempts: exponential with full jitter, or decorrelated jitter, between
//! a minimum and a maximum.
//!
//! Pure arithmetic: [`Backoff::delay`] takes the retry number, the previous delay and a
//! uniform sample `u` in `[0, 1)`, so it is tested without a runtime or a random number
//! generator. Where `u` comes from is a [`Jitter`]: random (the default), none (`u = 1`,
//! always the upper bound, for deterministic tests), or a seeded sequence.
//!
//! The two schedules are those of the AWS Architecture Blog's "Exponential Backoff And
//! Jitter":
//! - full jitter: `delay = u * min(max, base * 2^n)`, then at least `min`;
//! - decorrelated jitter: `delay = min(max, base + u * (3 * prev - base))`, where `prev`
//!   starts at `base`; the schedule wanders instead of doubling, which spreads retries of
//!   many clients apart better.

use palisade_core::rand::SeededRng;
use std::time::Duration;

/// The shape of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    FullJitter,
    Decorrelated,
}

/// A backoff schedule; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    kind: Kind,
    base: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Exponential with full jitter: the `n`th retry (from 0) waits a uniform random time
    /// in `[0, min(max, base * 2^n)]`, and at least `min` (default: 0; `max` default 10 s).
    pub const fn exponential(base: Duration) -> Self {
        Self {
            kind: Kind::FullJitter,
            base,
            min: Duration::ZERO,
            max: Duration::from_secs(10),
        }
    }

    /// Decorrelated jitter: each retry waits a uniform random time in
    /// `[base, 3 * previous]`, capped at `max` (default 10 s) and at least `min`.
    pub const fn decorrelated(base: Duration) -> Self {
        Self {
            kind: Kind::Decorrelated,
            base,
            min: Duration::ZERO,
            max: Duration::from_secs(10),
        }
    }

    /// No retry waits less than this.
    #[must_use]
    pub const fn min(mut self, min: Duration) -> Self {
        self.min = min;
        self
    }

    /// No retry waits more than this.
    #[must_use]
    pub const fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The base delay.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The lower cap.
    pub const fn min_delay(&self) -> Duration {
        self.min
    }

    /// The upper cap.
    pub const fn max_delay(&self) -> Duration {
        self.max
    }

    /// Whether the caps are consistent (`min <= max`, and a non-zero `base`).
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.base.is_zero() {
            return Err("backoff base must be non-zero");
        }
        if self.min > self.max {
            return Err("backoff min must not exceed max");
        }
        Ok(())
    }

    /// The wait before retry number `retry` (0 for the first retry), given the previous
    /// wait (`Duration::ZERO` before the first) and a uniform sample `u` in `[0, 1]`
    /// (clamped). Never below `min` nor above `max` (unless `min > max`, which the
    /// builder rejects).
    pub fn delay(&self, retry: u32, prev: Duration, u: f64) -> Duration {
        let u = if u.is_nan() { 1.0 } else { u.clamp(0.0, 1.0) };
        let raw = match self.kind {
            Kind::FullJitter => {
                // base * 2^retry, saturating: past 2^32 it is far above any sane max.
                let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
                let ceiling = self.base.saturating_mul(factor).min(self.max);
                ceiling.mul_f64(u)
            }
            Kind::Decorrelated => {
                let prev = if prev < self.base { self.base } else { prev };
                let hi = prev.saturating_mul(3).min(self.max);
                // When the cap is below base, the range is empty: the cap wins below.
                let span = hi.saturating_sub(self.base);
                self.base + span.mul_f64(u)
            }
        };
        raw.clamp(self.min, self.max.max(self.min))
    }
}

/// Where the random sample of a [`Backoff`] comes from.
#[derive(Debug)]
pub struct Jitter {
    kind: JitterKind,
}

#[derive(Debug)]
enum JitterKind {
    Random,
    None,
    /// Core's seedable source: shared by every clone, deterministic given the order of
    /// draws.
    Seeded(SeededRng),
}

impl Default for Jitter {
    fn default() -> Self {
        Self::random()
    }
}

impl Jitter {
    /// Uniform samples from the thread's random number generator (the default).
    pub const fn random() -> Self {
        Self {
            kind: JitterKind::Random,
        }
    }

    /// No jitter: every sample is 1, so every wait is the schedule's upper bound. For
    /// tests that assert exact waits.
    pub const fn none() -> Self {
        Self {
            kind: JitterKind::None,
        }
    }

    /// A reproducible pseudo-random sequence from `seed`.
    pub const fn seeded(seed: u64) -> Self {
        Self {
            kind: JitterKind::Seeded(SeededRng::new(seed)),
        }
    }

    /// The next sample, in `[0, 1)` (exactly 1 for [`Jitter::none`]).
    pub fn sample(&self) -> f64 {
        match &self.kind {
            JitterKind::Random => rand::random::<f64>(),
            JitterKind::None => 1.0,
            JitterKind::Seeded(rng) => rng.next_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_without_jitter_doubles_up_to_max() {
        let b = Backoff::exponential(ms(100)).max(ms(1000));
        let seq: Vec<_> = (0..6).map(|n| b.delay(n, Duration::ZERO, 1.0)).collect();
        assert_eq!(
            seq,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // Huge retry numbers saturate instead of overflowing.
        assert_eq!(b.delay(u32::MAX, Duration::ZERO, 1.0), ms(1000));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling_and_min_holds() {
        let b = Backoff::exponential(ms(100)).max(ms(1000));
        assert_eq!(b.delay(2, Duration::ZERO, 0.0), Duration::ZERO);
        assert_eq!(b.delay(2, Duration::ZERO, 0.5), ms(200));
        let b = b.min(ms(50));
        assert_eq!(b.delay(2, Duration::ZERO, 0.0), ms(50));
        assert_eq!(b.delay(2, Duration::ZERO, 0.1), ms(50));
        assert_eq!(b.delay(2, Duration::ZERO, 0.25), ms(100));
    }

    #[test]
    fn decorrelated_grows_from_previous_and_caps() {
        let b = Backoff::decorrelated(ms(100)).max(ms(1000));
        let first = b.delay(0, Duration::ZERO, 1.0);
        assert_eq!(first, ms(300));
        let second = b.delay(1, first, 1.0);
        assert_eq!(second, ms(900));
        assert_eq!(b.delay(2, second, 1.0), ms(1000));
        // The lowest sample is always base.
        assert_eq!(b.delay(5, ms(900), 0.0), ms(100));
        // A cap below base wins.
        let b = Backoff::decorrelated(ms(100)).max(ms(40));
        assert_eq!(b.delay(0, Duration::ZERO, 0.5), ms(40));
    }

    #[test]
    fn jitter_bounds_hold_for_many_samples() {
        let j = Jitter::seeded(7);
        let full = Backoff::exponential(ms(10)).min(ms(5)).max(ms(500));
        let dec = Backoff::decorrelated(ms(10)).min(ms(5)).max(ms(500));
        let mut prev = Duration::ZERO;
        let mut distinct = std::collections::HashSet::new();
        for n in 0..2000 {
            let u = j.sample();
            assert!((0.0..1.0).contains(&u));
            let d = full.delay(n % 8, Duration::ZERO, u);
            let ceiling = (ms(10) * (1 << (n % 8))).min(ms(500));
            assert!(d >= ms(5) && d <= ceiling.max(ms(5)), "{d:?}");
            let e = dec.delay(n, prev, j.sample());
            // `prev` starts at zero, which the schedule reads as `base`.
            let hi = (prev.max(ms(10)) * 3).min(ms(500));
            assert!(e >= ms(10) && e <= hi, "{e:?}");
            prev = e;
            distinct.insert(d);
        }
        assert!(
            distinct.len() > 100,
            "samples are spread: {}",
            distinct.len()
        );
    }

    #[test]
    fn seeded_is_reproducible_and_none_is_one() {
        let a = Jitter::seeded(42);
        let b = Jitter::seeded(42);
        for _ in 0..10 {
            assert_eq!(a.sample(), b.sample());
        }
        assert_eq!(Jitter::none().sample(), 1.0);
        let r = Jitter::random().sample();
        assert!((0.0..1.0).contains(&r));
    }

    #[test]
    fn odd_samples_are_clamped() {
        let b = Backoff::exponential(ms(100));
        assert_eq!(b.delay(0, Duration::ZERO, f64::NAN), ms(100));
        assert_eq!(b.delay(0, Duration::ZERO, 7.0), ms(100));
        assert_eq!(b.delay(0, Duration::ZERO, -1.0), Duration::ZERO);
    }

    proptest::proptest! {
        #[test]
        fn delay_is_always_within_the_caps(
            full in proptest::bool::ANY,
            base_ms in 1u64..10_000,
            min_ms in 0u64..20_000,
            max_ms in 0u64..20_000,
            retry in 0u32..100,
            prev_ms in 0u64..100_000,
            u in -1.0f64..2.0,
        ) {
            let b = if full { Backoff::exponential(ms(base_ms)) } else { Backoff::decorrelated(ms(base_ms)) };
            let b = b.min(ms(min_ms)).max(ms(max_ms));
            let d = b.delay(retry, ms(prev_ms), u);
            if b.check().is_ok() {
                proptest::prop_assert!(d >= ms(min_ms) && d <= ms(max_ms), "{:?}", d);
            }
        }
    }

    #[test]
    fn check_rejects_bad_caps() {
        assert!(Backoff::exponential(Duration::ZERO).check().is_err());
        assert!(Backoff::exponential(ms(1))
            .min(ms(5))
            .max(ms(2))
            .check()
            .is_err());
        assert!(Backoff::decorrelated(ms(1)).check().is_ok());
    }
}
