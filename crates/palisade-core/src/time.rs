//! Saturating time arithmetic: the one place Palisade adds durations to instants.
//!
//! Builders accept any [`Duration`], `Duration::MAX` included, so arithmetic on the request
//! path must never overflow: `Instant + Duration` panics past the platform's range, and
//! `Duration::from_secs_f64` panics on NaN, infinities, negatives and overflow. These
//! helpers saturate instead — an instant too far away becomes [`far_future`] (about 30
//! years ahead, as tokio's own timers do), a duration too long becomes `Duration::MAX` —
//! and float conversions that cannot be represented are refused as `None`, so a builder
//! can turn them into a typed error.
//!
//! # Example
//!
//! ```
//! use palisade_core::time;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let now = tokio::time::Instant::now();
//! assert_eq!(time::add(now, Duration::from_secs(1)), now + Duration::from_secs(1));
//! assert_eq!(time::add(now, Duration::MAX), time::far_future(now));
//! assert_eq!(time::secs_f64(f64::NAN), None);
//! assert_eq!(time::mul_f64(Duration::MAX, 2.0), Duration::MAX);
//! # }
//! ```

use std::time::Duration;

use tokio::time::Instant;

/// How far ahead an unrepresentable instant lands: about 30 years.
pub const FAR: Duration = Duration::from_secs(86400 * 365 * 30);

/// About 30 years after `now`: what an instant too far away saturates to.
#[inline]
pub fn far_future(now: Instant) -> Instant {
    now.checked_add(FAR).unwrap_or(now)
}

/// `at + d`, saturating to [`far_future`]`(at)` (never panics). A duration longer than
/// [`FAR`] is treated as [`FAR`], so every instant this returns can arm a tokio timer.
#[inline]
pub fn add(at: Instant, d: Duration) -> Instant {
    if d >= FAR {
        return far_future(at);
    }
    at.checked_add(d).unwrap_or_else(|| far_future(at))
}

/// `Instant::now() + d`, saturating like [`add`].
pub fn from_now(d: Duration) -> Instant {
    add(Instant::now(), d)
}

/// `secs` seconds as a `Duration`; `None` for NaN, infinities, negatives, and values too
/// large to represent.
pub fn secs_f64(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// `d * factor`, saturating to `Duration::MAX`; a NaN or negative factor gives zero.
pub fn mul_f64(d: Duration, factor: f64) -> Duration {
    if factor.is_nan() || factor <= 0.0 {
        return Duration::ZERO;
    }
    secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Whether `x` is a finite, non-negative float (what every rate, ratio and factor in a
/// builder must be).
pub fn is_finite_non_negative(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn float_conversions_refuse_what_they_cannot_represent() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 1e30] {
            assert_eq!(secs_f64(bad), None, "{bad}");
        }
        assert_eq!(secs_f64(0.25), Some(Duration::from_millis(250)));
        assert_eq!(mul_f64(Duration::from_secs(2), 1.5), Duration::from_secs(3));
        assert_eq!(mul_f64(Duration::from_secs(2), f64::NAN), Duration::ZERO);
        assert_eq!(
            mul_f64(Duration::from_secs(2), f64::INFINITY),
            Duration::MAX
        );
    }

    proptest! {
        #[test]
        fn add_never_panics_and_never_goes_back(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let now = Instant::now();
            let d = Duration::new(secs, nanos);
            let at = add(now, d);
            prop_assert!(at >= now);
            prop_assert!(at <= far_future(now));
            if d < FAR {
                prop_assert_eq!(at, now + d);
            }
        }

        #[test]
        fn mul_never_panics(secs in any::<u64>(), factor in any::<f64>()) {
            let _ = mul_f64(Duration::from_secs(secs), factor);
        }
    }
}
