//! Breaker configuration: plain data, validated once when the layer is built.

use std::fmt;
use std::time::Duration;

/// How the breaker remembers recent outcomes and decides to trip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailureModel {
    /// The last `size` outcomes (a true ring: old outcomes slide out). Trips when at least
    /// `minimum_calls` are in the window and a rate reaches its threshold.
    Count {
        /// Number of outcomes remembered.
        size: usize,
    },
    /// The outcomes of the last `buckets × bucket_width`, kept in fixed buckets (O(1) per
    /// call, evicted as time moves). Trips like [`FailureModel::Count`].
    Time {
        /// Number of buckets.
        buckets: usize,
        /// Width of one bucket; the window is `buckets × bucket_width`.
        bucket_width: Duration,
    },
    /// Trips after `failures` failures in a row (a success resets the run). Rates,
    /// `minimum_calls` and slow calls do not apply to this model.
    Consecutive {
        /// Failures in a row that trip the breaker.
        failures: u64,
    },
}

impl FailureModel {
    /// A count window of the last `size` outcomes.
    pub const fn count(size: usize) -> Self {
        Self::Count { size }
    }

    /// A time window of `window` split into `buckets` buckets (`window / buckets` each).
    ///
    /// A bucket count over 2^16 (or zero) is kept as given, and `build()`
    /// rejects it.
    pub fn time(window: Duration, buckets: usize) -> Self {
        let bucket_width = match u32::try_from(buckets) {
            Ok(n) if n > 0 => window / n,
            _ => window,
        };
        Self::Time {
            buckets,
            bucket_width,
        }
    }

    /// Trip after `failures` consecutive failures.
    pub const fn consecutive(failures: u64) -> Self {
        Self::Consecutive { failures }
    }
}

/// Growth of the open duration over consecutive trips: `open_duration × multiplier^(trips-1)`,
/// capped at `max`, scaled by a random factor in `[1 - jitter, 1]`, and back to the base
/// once the breaker stayed closed for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenBackoff {
    pub(crate) multiplier: f64,
    pub(crate) max: Duration,
    pub(crate) jitter: f64,
    pub(crate) reset_after: Duration,
}

impl OpenBackoff {
    /// Exponential growth by `multiplier` (≥ 1), capped at `max`, no jitter, reset after
    /// 60 s closed.
    pub const fn exponential(multiplier: f64, max: Duration) -> Self {
        Self {
            multiplier,
            max,
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
        }
    }

    /// Random reduction of each open duration by up to this fraction (in `[0, 1]`), so a
    /// fleet of clients does not probe in lockstep.
    #[must_use]
    pub const fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// How long the breaker must stay closed before the trip count (and so the open
    /// duration) resets.
    #[must_use]
    pub const fn reset_after(mut self, healthy: Duration) -> Self {
        self.reset_after = healthy;
        self
    }
}

/// The validated settings the state machine runs on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) model: FailureModel,
    pub(crate) failure_rate: f64,
    pub(crate) minimum_calls: u64,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) open_duration: Duration,
    pub(crate) backoff: Option<OpenBackoff>,
    pub(crate) permitted_probes: u32,
    pub(crate) max_half_open: Option<Duration>,
    pub(crate) seed: u64,
}

impl Default for Settings {
    /// A count window of 100, failure rate 0.5, at least 10 calls, no slow-call rule,
    /// open 30 s, one probe, at most 60 s in half-open.
    fn default() -> Self {
        Self {
            model: FailureModel::count(100),
            failure_rate: 0.5,
            minimum_calls: 10,
            slow_call: None,
            open_duration: Duration::from_secs(30),
            backoff: None,
            permitted_probes: 1,
            max_half_open: Some(Duration::from_secs(60)),
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

/// The most outcomes a count window may remember (its ring is allocated up front).
pub(crate) const MAX_WINDOW: usize = 1 << 20;
/// The most buckets a time window may have (they are allocated up front).
pub(crate) const MAX_BUCKETS: usize = 1 << 16;

impl Settings {
    pub(crate) fn validate(&self) -> Result<(), InvalidBreaker> {
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        match self.model {
            FailureModel::Count { size: 0 } => return Err(InvalidBreaker::ZeroWindow),
            FailureModel::Count { size } if size > MAX_WINDOW => {
                return Err(InvalidBreaker::WindowTooLarge)
            }
            FailureModel::Count { size } if (size as u64) < self.minimum_calls => {
                return Err(InvalidBreaker::WindowBelowMinimumCalls)
            }
            FailureModel::Time { buckets, .. } if buckets > MAX_BUCKETS => {
                return Err(InvalidBreaker::TooManyBuckets)
            }
            FailureModel::Time {
                buckets,
                bucket_width,
            } if buckets == 0 || bucket_width.is_zero() => {
                return Err(InvalidBreaker::EmptyTimeWindow)
            }
            FailureModel::Consecutive { failures: 0 } => {
                return Err(InvalidBreaker::ZeroConsecutiveFailures)
            }
            _ => {}
        }
        if !rate_ok(self.failure_rate) {
            return Err(InvalidBreaker::FailureRate);
        }
        if let Some((_, rate)) = self.slow_call {
            if !rate_ok(rate) {
                return Err(InvalidBreaker::SlowCallRate);
            }
        }
        if self.minimum_calls == 0 {
            return Err(InvalidBreaker::ZeroMinimumCalls);
        }
        if self.permitted_probes == 0 {
            return Err(InvalidBreaker::ZeroProbes);
        }
        if self.open_duration.is_zero() {
            return Err(InvalidBreaker::ZeroOpenDuration);
        }
        if let Some(b) = self.backoff {
            if b.max.is_zero() {
                return Err(InvalidBreaker::ZeroBackoffMax);
            }
            if !(b.multiplier >= 1.0 && b.multiplier.is_finite()) {
                return Err(InvalidBreaker::BackoffMultiplier);
            }
            if !(0.0..=1.0).contains(&b.jitter) {
                return Err(InvalidBreaker::BackoffJitter);
            }
            if b.max < self.open_duration {
                return Err(InvalidBreaker::BackoffMaxBelowOpenDuration);
            }
        }
        if self.max_half_open.is_some_and(|d| d.is_zero()) {
            return Err(InvalidBreaker::ZeroMaxHalfOpen);
        }
        Ok(())
    }
}

/// An invalid breaker configuration, reported by `build()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidBreaker {
    /// The count window holds no outcome.
    ZeroWindow,
    /// The count window is over 2^20 outcomes (it is allocated up front).
    WindowTooLarge,
    /// The count window is smaller than `minimum_calls`, so the breaker could never trip.
    WindowBelowMinimumCalls,
    /// The time window has over 2^16 buckets (they are allocated up front).
    TooManyBuckets,
    /// The time window has no bucket, or buckets of zero width.
    EmptyTimeWindow,
    /// The consecutive-failures model trips after 0 failures.
    ZeroConsecutiveFailures,
    /// The failure-rate threshold is outside (0, 1] (or NaN).
    FailureRate,
    /// The slow-call-rate threshold is outside (0, 1] (or NaN).
    SlowCallRate,
    /// `minimum_calls` is 0.
    ZeroMinimumCalls,
    /// `permitted_probes` is 0: the breaker could never close again.
    ZeroProbes,
    /// The open duration is 0.
    ZeroOpenDuration,
    /// The open-duration backoff's maximum is 0.
    ZeroBackoffMax,
    /// The open-duration backoff's multiplier is below 1, or not finite.
    BackoffMultiplier,
    /// The open-duration backoff's jitter is outside [0, 1] (or NaN).
    BackoffJitter,
    /// The open-duration backoff's maximum is below the open duration.
    BackoffMaxBelowOpenDuration,
    /// The maximum half-open time is 0.
    ZeroMaxHalfOpen,
    /// A per-key breaker's idle timeout is 0.
    ZeroIdleTimeout,
    /// A per-key breaker's `max_keys` is 0.
    ZeroMaxKeys,
}

impl fmt::Display for InvalidBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self {
            Self::ZeroWindow => "window size must be > 0",
            Self::WindowTooLarge => "window size must be at most 2^20 outcomes",
            Self::WindowBelowMinimumCalls => {
                "a count window smaller than minimum_calls never trips"
            }
            Self::TooManyBuckets => "a time window has at most 2^16 buckets",
            Self::EmptyTimeWindow => "time window needs > 0 buckets of non-zero width",
            Self::ZeroConsecutiveFailures => "consecutive failures must be > 0",
            Self::FailureRate => "failure rate threshold must be in (0, 1]",
            Self::SlowCallRate => "slow-call rate threshold must be in (0, 1]",
            Self::ZeroMinimumCalls => "minimum_calls must be > 0",
            Self::ZeroProbes => "permitted_probes must be > 0",
            Self::ZeroOpenDuration => "open duration must be > 0",
            Self::ZeroBackoffMax => "backoff max must be > 0",
            Self::BackoffMultiplier => "backoff multiplier must be finite and >= 1",
            Self::BackoffJitter => "backoff jitter must be in [0, 1]",
            Self::BackoffMaxBelowOpenDuration => "backoff max must be >= the open duration",
            Self::ZeroMaxHalfOpen => "max half-open time must be > 0",
            Self::ZeroIdleTimeout => "idle_timeout must be > 0",
            Self::ZeroMaxKeys => "max_keys must be > 0",
        };
        write!(f, "invalid circuit breaker configuration: {why}")
    }
}

impl std::error::Error for InvalidBreaker {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_rejected() {
        assert!(Settings::default().validate().is_ok());
        let bad = [
            Settings {
                model: FailureModel::count(0),
                ..Settings::default()
            },
            Settings {
                model: FailureModel::time(Duration::ZERO, 10),
                ..Settings::default()
            },
            Settings {
                model: FailureModel::consecutive(0),
                ..Settings::default()
            },
            Settings {
                failure_rate: 0.0,
                ..Settings::default()
            },
            Settings {
                failure_rate: 1.5,
                ..Settings::default()
            },
            Settings {
                slow_call: Some((Duration::from_secs(1), 2.0)),
                ..Settings::default()
            },
            Settings {
                minimum_calls: 0,
                ..Settings::default()
            },
            Settings {
                permitted_probes: 0,
                ..Settings::default()
            },
            Settings {
                open_duration: Duration::ZERO,
                ..Settings::default()
            },
            Settings {
                backoff: Some(OpenBackoff::exponential(0.5, Duration::from_secs(60))),
                ..Settings::default()
            },
            Settings {
                backoff: Some(OpenBackoff::exponential(2.0, Duration::from_secs(1))),
                ..Settings::default()
            },
            Settings {
                backoff: Some(OpenBackoff::exponential(2.0, Duration::from_secs(60)).jitter(2.0)),
                ..Settings::default()
            },
            Settings {
                max_half_open: Some(Duration::ZERO),
                ..Settings::default()
            },
        ];
        for s in bad {
            let err = s.validate().unwrap_err();
            assert!(err
                .to_string()
                .starts_with("invalid circuit breaker configuration"));
        }
    }
}
