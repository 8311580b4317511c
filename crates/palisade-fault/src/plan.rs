//! The plan every fault layer follows: which faults, at what rates, when; the live state a
//! [`FaultHandle`] changes; and the per-call decision.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_core::observe::Counter;
use palisade_core::rand::SeededRng;
use tokio::time::Instant;

/// One kind of fault a layer can inject, with its own rate.
///
/// At most one of these happens per call, chosen by one draw against the configured rates
/// (so their sum is at most 1); [latency](crate::Latency) is drawn independently and comes
/// first, so a call can be both slow and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// Fail without calling the inner service, with [`InjectedError`](crate::InjectedError)
    /// or the configured error (generic layer only).
    Error,
    /// Call the inner service, then lose its response: the caller gets
    /// [`Aborted`](crate::Aborted) (generic layer), or a body that fails so hyper closes the
    /// connection (HTTP layer).
    Abort,
    /// Never answer: the response future stays pending until dropped.
    Stall,
    /// Answer `503 Service Unavailable`, with `Retry-After` if configured (HTTP only).
    Unavailable,
    /// Answer `429 Too Many Requests`, with `Retry-After` if configured (HTTP only).
    TooManyRequests,
    /// Answer a configured status code (HTTP only).
    Status,
    /// Answer a trailers-only gRPC response with `grpc-status: 14` (`UNAVAILABLE`) (HTTP
    /// only).
    GrpcUnavailable,
}

impl FaultKind {
    pub(crate) const ALL: [FaultKind; 7] = [
        FaultKind::Error,
        FaultKind::Abort,
        FaultKind::Stall,
        FaultKind::Unavailable,
        FaultKind::TooManyRequests,
        FaultKind::Status,
        FaultKind::GrpcUnavailable,
    ];

    const fn index(self) -> usize {
        self as usize
    }

    /// The label used in metrics and tracing.
    pub const fn as_str(self) -> &'static str {
        match self {
            FaultKind::Error => "error",
            FaultKind::Abort => "abort",
            FaultKind::Stall => "stall",
            FaultKind::Unavailable => "unavailable",
            FaultKind::TooManyRequests => "too_many_requests",
            FaultKind::Status => "status",
            FaultKind::GrpcUnavailable => "grpc_unavailable",
        }
    }

    pub(crate) const fn http_only(self) -> bool {
        matches!(
            self,
            FaultKind::Unavailable
                | FaultKind::TooManyRequests
                | FaultKind::Status
                | FaultKind::GrpcUnavailable
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long an injected delay lasts, drawn per delayed call.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniform between `min` and `max` (inclusive of `min`).
    Uniform {
        /// Shortest delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
    /// Two modes: `slow` with probability `slow_fraction`, `fast` otherwise (a cache miss,
    /// a GC pause, a retransmit).
    Bimodal {
        /// The usual delay.
        fast: Duration,
        /// The occasional delay.
        slow: Duration,
        /// Probability of `slow`, in `[0, 1]`.
        slow_fraction: f64,
    },
    /// A long tail: log-normal with the given median and 99th percentile, each sample
    /// capped at `max`.
    LongTail {
        /// Half the delays are shorter than this.
        median: Duration,
        /// 99% of the delays are shorter than this.
        p99: Duration,
        /// No delay is longer than this.
        max: Duration,
    },
}

/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874;

impl Latency {
    fn check(&self) -> Result<(), InvalidFault> {
        let ok = match *self {
            Latency::Fixed(_) => true,
            Latency::Uniform { min, max } => min <= max,
            Latency::Bimodal { slow_fraction, .. } => (0.0..=1.0).contains(&slow_fraction),
            Latency::LongTail { median, p99, max } => {
                !median.is_zero() && median <= p99 && p99 <= max
            }
        };
        if ok {
            Ok(())
        } else {
            Err(InvalidFault::Latency(*self))
        }
    }

    /// One delay drawn from `rng`.
    pub(crate) fn sample(&self, rng: &SeededRng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => min + (max - min).mul_f64(rng.next_f64()),
            Latency::Bimodal {
                fast,
                slow,
                slow_fraction,
            } => {
                if rng.chance(slow_fraction) {
                    slow
                } else {
                    fast
                }
            }
            Latency::LongTail { median, p99, max } => {
                // Box-Muller: a standard normal z from two uniforms (1 - u is in (0, 1]).
                let (u1, u2) = (1.0 - rng.next_f64(), rng.next_f64());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / Z99;
                let secs = median.as_secs_f64() * (sigma * z).exp();
                Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
            }
        }
    }
}

/// Invalid configuration of a fault layer, from `build()` or a [`FaultHandle`] setter.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum InvalidFault {
    /// A rate outside `[0, 1]` (or NaN).
    Rate(f64),
    /// The rates of the faults (latency aside) add up to more than 1.
    RatesExceedOne(f64),
    /// A latency distribution that cannot be sampled (min above max, median above p99, a
    /// zero median, a fraction outside `[0, 1]`).
    Latency(Latency),
    /// The fault cannot be injected by this layer (an HTTP fault on the generic layer, a
    /// generic error on the HTTP layer).
    Unsupported(FaultKind),
    /// A handle was asked to change a fault the layer was not built with.
    NotConfigured(FaultKind),
    /// An outage window that ends before it starts.
    Window,
}

impl fmt::Display for InvalidFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rate(r) => write!(f, "fault rate {r} is outside [0, 1]"),
            Self::RatesExceedOne(s) => write!(f, "fault rates add up to {s}, more than 1"),
            Self::Latency(l) => write!(f, "invalid latency distribution {l:?}"),
            Self::Unsupported(k) => write!(f, "this layer cannot inject `{k}` faults"),
            Self::NotConfigured(k) => write!(f, "the layer was built without `{k}` faults"),
            Self::Window => f.write_str("an outage window must end after it starts"),
        }
    }
}

impl std::error::Error for InvalidFault {}

fn check_rate(rate: f64) -> Result<f64, InvalidFault> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(InvalidFault::Rate(rate))
    }
}

/// A rate stored as the bits of an `f64`, so the handle can change it without a lock.
#[derive(Debug)]
struct Rate(AtomicU64);

impl Rate {
    fn new(rate: f64) -> Self {
        Self(AtomicU64::new(rate.to_bits()))
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    fn set(&self, rate: f64) {
        self.0.store(rate.to_bits(), Relaxed);
    }
}

/// One fault kind's live rate and count.
#[derive(Debug)]
struct Slot {
    configured: bool,
    rate: Rate,
    injected: AtomicU64,
    counter: Counter,
}

/// The configuration shared by the generic and HTTP builders.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) seed: u64,
    pub(crate) enabled: bool,
    pub(crate) latency: Option<(f64, Latency)>,
    pub(crate) rates: [Option<f64>; 7],
    pub(crate) name: Arc<str>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            seed: 0x5EED_FA17_u64,
            enabled: true,
            latency: None,
            rates: [None; 7],
            name: Arc::from(""),
        }
    }
}

impl Plan {
    pub(crate) fn set(&mut self, kind: FaultKind, rate: f64) {
        self.rates[kind.index()] = Some(rate);
    }

    /// Validates the plan for a layer that supports `supported` kinds.
    pub(crate) fn check(&self, supported: impl Fn(FaultKind) -> bool) -> Result<(), InvalidFault> {
        if let Some((rate, latency)) = &self.latency {
            check_rate(*rate)?;
            latency.check()?;
        }
        let mut sum = 0.0;
        for kind in FaultKind::ALL {
            if let Some(rate) = self.rates[kind.index()] {
                if !supported(kind) {
                    return Err(InvalidFault::Unsupported(kind));
                }
                sum += check_rate(rate)?;
            }
        }
        if sum > 1.0 + 1e-9 {
            return Err(InvalidFault::RatesExceedOne(sum));
        }
        Ok(())
    }

    pub(crate) fn into_shared(self) -> Arc<Shared> {
        let counter = |decision| {
            Counter::register(
                "palisade_decisions_total",
                "fault",
                &self.name,
                &[("decision", decision)],
            )
        };
        let slots = FaultKind::ALL.map(|kind| {
            let rate = self.rates[kind.index()];
            Slot {
                configured: rate.is_some(),
                rate: Rate::new(rate.unwrap_or(0.0)),
                injected: AtomicU64::new(0),
                counter: if rate.is_some() {
                    counter(kind.as_str())
                } else {
                    Counter::noop()
                },
            }
        });
        Arc::new(Shared {
            enabled: AtomicBool::new(self.enabled),
            has_window: AtomicBool::new(false),
            window: Mutex::new(None),
            rng: SeededRng::new(self.seed),
            latency_rate: Rate::new(self.latency.map_or(0.0, |(r, _)| r)),
            latency: self.latency.map(|(_, l)| l),
            delayed: AtomicU64::new(0),
            delayed_counter: counter("delayed"),
            passed: AtomicU64::new(0),
            passed_counter: counter("passed"),
            slots,
            name: self.name,
        })
    }
}

/// What one call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) delay: Option<Duration>,
    pub(crate) fault: Option<FaultKind>,
}

/// The live state of one fault layer, shared by its services and handles.
#[derive(Debug)]
pub(crate) struct Shared {
    enabled: AtomicBool,
    /// Whether `window` is set: read first, so calls outside any window take no lock.
    has_window: AtomicBool,
    window: Mutex<Option<(Instant, Instant)>>,
    rng: SeededRng,
    latency_rate: Rate,
    latency: Option<Latency>,
    delayed: AtomicU64,
    delayed_counter: Counter,
    passed: AtomicU64,
    passed_counter: Counter,
    slots: [Slot; 7],
    pub(crate) name: Arc<str>,
}

impl Shared {
    fn active(&self) -> bool {
        if !self.enabled.load(Relaxed) {
            return false;
        }
        if !self.has_window.load(Relaxed) {
            return true;
        }
        let window = *self.window.lock().unwrap_or_else(PoisonError::into_inner);
        match window {
            Some((start, end)) => {
                let now = Instant::now();
                start <= now && now < end
            }
            None => true,
        }
    }

    /// Decides one call's faults and counts them.
    pub(crate) fn decide(&self) -> Decision {
        let mut decision = Decision {
            delay: None,
            fault: None,
        };
        if self.active() {
            if let Some(latency) = &self.latency {
                if self.rng.chance(self.latency_rate.get()) {
                    decision.delay = Some(latency.sample(&self.rng));
                    self.delayed.fetch_add(1, Relaxed);
                    self.delayed_counter.increment(1);
                }
            }
            // One draw picks at most one fault: the rates partition [0, 1).
            let u = self.rng.next_f64();
            let mut acc = 0.0;
            for (kind, slot) in FaultKind::ALL.iter().zip(&self.slots) {
                if !slot.configured {
                    continue;
                }
                acc += slot.rate.get();
                if u < acc {
                    slot.injected.fetch_add(1, Relaxed);
                    slot.counter.increment(1);
                    decision.fault = Some(*kind);
                    break;
                }
            }
        }
        if decision.fault.is_none() {
            self.passed.fetch_add(1, Relaxed);
            self.passed_counter.increment(1);
        }
        if decision.delay.is_some() || decision.fault.is_some() {
            tracing::debug!(
                target: "palisade::fault",
                name = %self.name,
                delay = ?decision.delay,
                fault = decision.fault.map(FaultKind::as_str),
                "injecting fault"
            );
        }
        decision
    }
}

/// A handle on one fault layer: switch it on and off, schedule an outage, change rates,
/// and read what it injected. Cheap to clone; every clone controls the same layer.
#[derive(Debug, Clone)]
pub struct FaultHandle {
    pub(crate) shared: Arc<Shared>,
}

impl FaultHandle {
    /// Switches faults on (the default) or off. Off, every call passes untouched.
    pub fn set_enabled(&self, enabled: bool) {
        self.shared.enabled.store(enabled, Relaxed);
    }

    /// Whether faults are switched on (a window, if set, still limits when).
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Relaxed)
    }

    /// Injects faults only from `start` to `end` on `tokio::time` (an outage from t1 to
    /// t2); outside the window every call passes.
    ///
    /// # Errors
    ///
    /// [`InvalidFault::Window`] if `end` is before `start`.
    pub fn set_window(&self, start: Instant, end: Instant) -> Result<(), InvalidFault> {
        if end < start {
            return Err(InvalidFault::Window);
        }
        *self
            .shared
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((start, end));
        self.shared.has_window.store(true, Relaxed);
        Ok(())
    }

    /// An outage window starting `after` from now and lasting `length`.
    pub fn schedule_outage(&self, after: Duration, length: Duration) {
        // Through core's saturating deadline arithmetic: a huge duration means "far
        // future", never an overflow panic.
        let start = palisade_core::Deadline::after(after).instant();
        let end = palisade_core::Deadline::after(after.saturating_add(length)).instant();
        // `end >= start` by construction.
        let _ = self.set_window(start, end);
    }

    /// Removes the window: faults apply whenever enabled.
    pub fn clear_window(&self) {
        self.shared.has_window.store(false, Relaxed);
        *self
            .shared
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Changes the rate of a configured fault.
    ///
    /// # Errors
    ///
    /// [`InvalidFault::NotConfigured`] if the layer was built without `kind`,
    /// [`InvalidFault::Rate`] for a rate outside `[0, 1]`, [`InvalidFault::RatesExceedOne`]
    /// if the fault rates would add up to more than 1.
    pub fn set_rate(&self, kind: FaultKind, rate: f64) -> Result<(), InvalidFault> {
        let slot = &self.shared.slots[kind.index()];
        if !slot.configured {
            return Err(InvalidFault::NotConfigured(kind));
        }
        check_rate(rate)?;
        let others: f64 = FaultKind::ALL
            .iter()
            .filter(|k| **k != kind)
            .map(|k| self.shared.slots[k.index()].rate.get())
            .sum();
        if others + rate > 1.0 + 1e-9 {
            return Err(InvalidFault::RatesExceedOne(others + rate));
        }
        slot.rate.set(rate);
        Ok(())
    }

    /// The current rate of `kind` (0 if not configured).
    pub fn rate(&self, kind: FaultKind) -> f64 {
        self.shared.slots[kind.index()].rate.get()
    }

    /// Changes the rate of injected latency.
    ///
    /// # Errors
    ///
    /// [`InvalidFault::Rate`] for a rate outside `[0, 1]`. A layer built without
    /// [latency](crate::FaultBuilder::latency) injects none whatever the rate.
    pub fn set_latency_rate(&self, rate: f64) -> Result<(), InvalidFault> {
        self.shared.latency_rate.set(check_rate(rate)?);
        Ok(())
    }

    /// The current rate of injected latency.
    pub fn latency_rate(&self) -> f64 {
        self.shared.latency_rate.get()
    }

    /// Restarts the random sequence from `seed`.
    pub fn reseed(&self, seed: u64) {
        self.shared.rng.reseed(seed);
    }

    /// Calls that got fault `kind` so far.
    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.shared.slots[kind.index()].injected.load(Relaxed)
    }

    /// Calls that were delayed so far.
    pub fn delayed(&self) -> u64 {
        self.shared.delayed.load(Relaxed)
    }

    /// Calls that got no fault (possibly delayed) so far.
    pub fn passed(&self) -> u64 {
        self.shared.passed.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sorted(latency: Latency, n: usize) -> Vec<Duration> {
        let rng = SeededRng::new(3);
        let mut v: Vec<Duration> = (0..n).map(|_| latency.sample(&rng)).collect();
        v.sort();
        v
    }

    #[test]
    fn uniform_stays_within_bounds_and_covers_them() {
        let v = sorted(
            Latency::Uniform {
                min: ms(10),
                max: ms(20),
            },
            10_000,
        );
        assert!(v[0] >= ms(10) && v[v.len() - 1] <= ms(20));
        // The extreme deciles are populated: not a constant.
        assert!(v[1_000] < ms(12) && v[9_000] > ms(18));
    }

    #[test]
    fn bimodal_picks_slow_at_its_fraction() {
        let v = sorted(
            Latency::Bimodal {
                fast: ms(1),
                slow: ms(100),
                slow_fraction: 0.2,
            },
            100_000,
        );
        let slow = v.iter().filter(|d| **d == ms(100)).count();
        assert!(v.iter().all(|d| *d == ms(1) || *d == ms(100)));
        // Binomial(1e5, 0.2): sd ~126, 5 sd either side.
        assert!((19_370..=20_630).contains(&slow), "slow {slow}");
    }

    #[test]
    fn long_tail_has_the_configured_median_and_p99_and_cap() {
        let latency = Latency::LongTail {
            median: ms(10),
            p99: ms(100),
            max: ms(200),
        };
        let v = sorted(latency, 100_000);
        let (median, p99) = (v[50_000], v[99_000]);
        assert!(median > ms(9) && median < ms(11), "median {median:?}");
        assert!(p99 > ms(85) && p99 < ms(115), "p99 {p99:?}");
        assert!(*v.last().unwrap() <= ms(200));
    }

    #[test]
    fn invalid_distributions_are_refused() {
        for bad in [
            Latency::Uniform {
                min: ms(2),
                max: ms(1),
            },
            Latency::Bimodal {
                fast: ms(1),
                slow: ms(2),
                slow_fraction: 1.5,
            },
            Latency::LongTail {
                median: ms(0),
                p99: ms(1),
                max: ms(1),
            },
            Latency::LongTail {
                median: ms(5),
                p99: ms(1),
                max: ms(10),
            },
        ] {
            assert_eq!(bad.check(), Err(InvalidFault::Latency(bad)));
        }
        assert_eq!(Latency::Fixed(ms(1)).check(), Ok(()));
    }
}
