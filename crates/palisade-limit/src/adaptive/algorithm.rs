//! Limit algorithms: pure functions of samples, testable without a runtime.
//!
//! Each follows Netflix's `concurrency-limits` semantics and defaults:
//!
//! - [`Aimd`]: additive increase (+1 while the limit is in use), multiplicative decrease
//!   (×0.8, where Netflix uses 0.9) on a drop or an RTT over a timeout. Simple, reacts only
//!   to drops, so it rides up to the point where the dependency starts shedding and backs
//!   off from there: its limit averages about `(1 + backoff) / 2` of that point (0.9 with
//!   0.8; Netflix's 0.9 averaged 0.95, 14 % over capacity for a dependency that sheds at
//!   1.2× it).
//! - [`Vegas`]: estimates the queue at the dependency as `limit × (1 − rtt_noload / rtt)`
//!   and keeps it between `alpha = 3·log10(limit)` and `beta = 6·log10(limit)` (log10
//!   rounded down, as Netflix's);
//!   re-probes the no-load RTT now and then, so a faster path is found again.
//! - [`Gradient2`]: compares a short-term RTT with a long-term (exponentially averaged)
//!   one; while the short one stays within `tolerance ×` the long one the limit grows by a
//!   small queue allowance, past it the limit shrinks by the gradient. Unlike Netflix's, a
//!   drop also shrinks it, by the same factor as AIMD's (×0.8, unsmoothed), so a
//!   dependency that sheds load with fast 429s, showing no latency to read, still pulls the
//!   limit down.

use std::time::Duration;

use palisade_core::rand::SeededRng;

/// One aggregated observation: what a window of calls saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Round-trip time (the window's average); zero when the window holds drops only, which
    /// measured no round trip.
    pub rtt: Duration,
    /// Calls in flight when the call started (the window's maximum).
    pub in_flight: usize,
    /// Whether any call was dropped: overloaded (429, 503, `RESOURCE_EXHAUSTED`), timed out.
    pub dropped: bool,
}

/// A concurrency limit algorithm.
pub trait Algorithm: Send + 'static {
    /// The limit to start from.
    fn initial_limit(&self) -> usize;

    /// Feeds one sample; returns the new limit.
    fn update(&mut self, sample: &Sample) -> usize;

    /// Whether the configuration can work; the adaptive layer's `build()` reports the
    /// error. The built-in algorithms refuse inverted or zero bounds and any NaN,
    /// infinite or out-of-range factor instead of clamping them silently.
    ///
    /// # Errors
    ///
    /// The first invalid setting, as [`InvalidAlgorithm`].
    fn validate(&self) -> Result<(), InvalidAlgorithm> {
        Ok(())
    }
}

/// An adaptive algorithm's setting that cannot work, reported by `build()`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum InvalidAlgorithm {
    /// The bounds must satisfy `1 <= min <= initial <= max`.
    Bounds {
        /// The initial limit.
        initial: usize,
        /// The lower bound.
        min: usize,
        /// The upper bound.
        max: usize,
    },
    /// A factor outside its range, or NaN / infinite.
    Factor {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The range it must lie in, as text.
        range: &'static str,
    },
    /// A count that must be at least 1 was 0.
    Zero(&'static str),
}

impl std::fmt::Display for InvalidAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bounds { initial, min, max } => write!(
                f,
                "adaptive limit bounds must satisfy 1 <= min <= initial <= max, got min {min}, initial {initial}, max {max}"
            ),
            Self::Factor { name, value, range } => {
                write!(f, "adaptive limit {name} must be within {range}, got {value}")
            }
            Self::Zero(name) => write!(f, "adaptive limit {name} must be at least 1"),
        }
    }
}

impl std::error::Error for InvalidAlgorithm {}

fn check_bounds(initial: usize, min: usize, max: usize) -> Result<(), InvalidAlgorithm> {
    if min >= 1 && min <= initial && initial <= max {
        Ok(())
    } else {
        Err(InvalidAlgorithm::Bounds { initial, min, max })
    }
}

fn check_factor(
    name: &'static str,
    value: f64,
    ok: bool,
    range: &'static str,
) -> Result<(), InvalidAlgorithm> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(InvalidAlgorithm::Factor { name, value, range })
    }
}

/// The factor [`Aimd`] and [`Gradient2`] apply to the limit on a drop by default.
const DEFAULT_BACKOFF: f64 = 0.8;

/// Additive increase, multiplicative decrease (Netflix `AIMDLimit`).
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: usize,
    min: usize,
    max: usize,
    backoff: f64,
    timeout: Duration,
}

impl Default for Aimd {
    /// Netflix's defaults (initial 20, min 20, max 200, timeout 5 s) but backoff 0.8, not
    /// 0.9: see the [module docs](self).
    fn default() -> Self {
        Self {
            limit: 20,
            min: 20,
            max: 200,
            backoff: DEFAULT_BACKOFF,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Aimd {
    /// AIMD between `min` and `max`, starting at `initial`; `build()` refuses bounds that
    /// do not satisfy `1 <= min <= initial <= max`.
    pub fn new(initial: usize, min: usize, max: usize) -> Self {
        Self {
            limit: initial,
            min,
            max,
            ..Self::default()
        }
    }

    /// The factor applied on a drop (default 0.8); `build()` refuses one outside `[0.5, 1)`.
    #[must_use]
    pub fn backoff(mut self, ratio: f64) -> Self {
        self.backoff = ratio;
        self
    }

    /// An RTT above this counts as a drop (default 5 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Algorithm for Aimd {
    fn initial_limit(&self) -> usize {
        self.limit
    }

    fn validate(&self) -> Result<(), InvalidAlgorithm> {
        check_bounds(self.limit, self.min, self.max)?;
        let b = self.backoff;
        check_factor("backoff", b, (0.5..1.0).contains(&b), "[0.5, 1)")
    }

    fn update(&mut self, s: &Sample) -> usize {
        if s.dropped || s.rtt > self.timeout {
            self.limit = ((self.limit as f64 * self.backoff) as usize).max(self.min);
        } else if s.in_flight * 2 >= self.limit {
            // Grow only while the limit is actually in use (not app-limited).
            self.limit = (self.limit + 1).min(self.max);
        }
        self.limit
    }
}

/// Delay-based, TCP Vegas style (Netflix `VegasLimit`).
#[derive(Debug, Clone)]
pub struct Vegas {
    estimated: f64,
    max: usize,
    smoothing: f64,
    rtt_noload: Option<Duration>,
    probe_multiplier: usize,
    probe_count: usize,
    probe_jitter: f64,
    rng: SeededRng,
    /// `alpha` and `beta` as multiples of `log10(limit)`.
    alpha: f64,
    beta: f64,
}

/// `log10(limit)` rounded down, at least 1: Netflix's `Log10RootFunction`, from which Vegas
/// takes its queue bounds and its steps.
fn log10_root(limit: f64) -> f64 {
    limit.max(1.0).log10().floor().max(1.0)
}

impl Default for Vegas {
    /// Netflix's defaults: initial 20, max 1000, smoothing 1.0, probe multiplier 30.
    fn default() -> Self {
        Self::new(20, 1000)
    }
}

impl Vegas {
    /// Vegas starting at `initial`, never above `max`.
    pub fn new(initial: usize, max: usize) -> Self {
        let mut v = Self {
            estimated: initial as f64,
            max,
            smoothing: 1.0,
            rtt_noload: None,
            probe_multiplier: 30,
            probe_count: 0,
            probe_jitter: 0.5,
            rng: SeededRng::new(0x9E37_79B9_7F4A_7C15),
            alpha: 3.0,
            beta: 6.0,
        };
        v.reset_probe_jitter();
        v
    }

    /// Weight of a new estimate against the old one (default 1.0: no smoothing).
    #[must_use]
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// Re-probe the no-load RTT about every `multiplier × limit` samples (default 30).
    #[must_use]
    pub fn probe_multiplier(mut self, multiplier: usize) -> Self {
        self.probe_multiplier = multiplier;
        self
    }

    /// Keep between `alpha × log10(limit)` and `beta × log10(limit)` calls queued at the
    /// dependency (log10 rounded down, at least 1; defaults 3 and 6, Netflix's). The limit
    /// settles that many calls above the dependency's capacity: 3–6 at a capacity of 50
    /// (+6–12 %), 6–12 at 100. `queue(2.0, 4.0)` keeps within 10 % of any capacity from 40
    /// up when the dependency's RTT is steady, but reads RTT jitter as queueing sooner: with
    /// a few % of jitter it holds the limit well under capacity (about 60 % of it in the
    /// benchmark's real-clock run). `build()` refuses bounds that do not satisfy
    /// `1 <= alpha <= beta`.
    #[must_use]
    pub fn queue(mut self, alpha: f64, beta: f64) -> Self {
        self.alpha = alpha;
        self.beta = beta;
        self
    }

    /// Seeds the jitter of the probe interval (for reproducible runs).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = SeededRng::new(seed);
        self.reset_probe_jitter();
        self
    }

    fn reset_probe_jitter(&mut self) {
        // Jitter in [0.5, 1.0), as Netflix's ThreadLocalRandom does.
        self.probe_jitter = 0.5 + self.rng.next_f64() / 2.0;
    }

    fn limit(&self) -> usize {
        self.estimated as usize
    }
}

impl Algorithm for Vegas {
    fn initial_limit(&self) -> usize {
        self.limit()
    }

    fn validate(&self) -> Result<(), InvalidAlgorithm> {
        check_bounds(self.limit(), 1, self.max)?;
        let s = self.smoothing;
        check_factor("smoothing", s, s > 0.0 && s <= 1.0, "(0, 1]")?;
        if self.probe_multiplier == 0 {
            return Err(InvalidAlgorithm::Zero("probe multiplier"));
        }
        let a = self.alpha;
        check_factor("alpha", a, a >= 1.0, "[1, inf)")?;
        let b = self.beta;
        check_factor("beta", b, b >= a, "[alpha, inf)")?;
        Ok(())
    }

    fn update(&mut self, s: &Sample) -> usize {
        let rtt = s.rtt;
        if rtt.is_zero() {
            // Drops only: no RTT to learn from (taking 0 as the no-load RTT would read every
            // later sample as all queue). The drop still shrinks the limit.
            if s.dropped {
                let limit = self.estimated;
                let new = (limit - log10_root(limit)).clamp(1.0, self.max as f64);
                self.estimated = (1.0 - self.smoothing).mul_add(limit, self.smoothing * new);
            }
            return self.limit();
        }
        self.probe_count += 1;
        // Periodically forget the no-load RTT, so a path that got faster is noticed.
        let probe_every = self.probe_jitter * self.probe_multiplier as f64 * self.estimated;
        if self.probe_count as f64 >= probe_every {
            self.reset_probe_jitter();
            self.probe_count = 0;
            self.rtt_noload = Some(rtt);
            return self.limit();
        }
        let noload = match self.rtt_noload {
            Some(n) if rtt >= n => n,
            _ => {
                self.rtt_noload = Some(rtt);
                return self.limit();
            }
        };
        let limit = self.estimated;
        let log = log10_root(limit);
        let (alpha, beta, threshold) = (self.alpha * log, self.beta * log, log);
        let queue = (limit * (1.0 - noload.as_secs_f64() / rtt.as_secs_f64().max(1e-9))).ceil();
        let new = if s.dropped {
            limit - log
        } else if (s.in_flight as f64) * 2.0 < limit {
            // App-limited: the limit is not what holds calls back.
            return self.limit();
        } else if queue <= threshold {
            limit + beta
        } else if queue < alpha {
            limit + log
        } else if queue > beta {
            limit - log
        } else {
            return self.limit();
        };
        let new = new.clamp(1.0, self.max as f64);
        self.estimated = (1.0 - self.smoothing).mul_add(self.estimated, self.smoothing * new);
        self.limit()
    }
}

/// Gradient of long-term vs short-term RTT (Netflix `Gradient2Limit`).
#[derive(Debug, Clone)]
pub struct Gradient2 {
    estimated: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    tolerance: f64,
    queue_size: usize,
    long_window: usize,
    long_rtt: Ema,
    backoff: f64,
}

impl Default for Gradient2 {
    /// Netflix's defaults: initial 20, min 20, max 200, smoothing 0.2, tolerance 1.5,
    /// long window 600 samples, queue size 4; and a backoff of 0.8 on a drop.
    fn default() -> Self {
        Self::new(20, 20, 200)
    }
}

impl Gradient2 {
    /// Gradient2 between `min` and `max`, starting at `initial`.
    pub fn new(initial: usize, min: usize, max: usize) -> Self {
        Self {
            estimated: initial as f64,
            min,
            max,
            smoothing: 0.2,
            tolerance: 1.5,
            queue_size: 4,
            long_window: 600,
            long_rtt: Ema::new(600, 10),
            backoff: DEFAULT_BACKOFF,
        }
    }

    /// The factor applied on a drop, unsmoothed (default 0.8); `build()` refuses one
    /// outside `[0.5, 1)`.
    #[must_use]
    pub fn backoff(mut self, ratio: f64) -> Self {
        self.backoff = ratio;
        self
    }

    /// How much larger than the long-term RTT the short-term one may grow before the limit
    /// shrinks (default 1.5).
    #[must_use]
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Weight of a new estimate (default 0.2).
    #[must_use]
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The growth allowance added each update (default 4).
    #[must_use]
    pub fn queue_size(mut self, queue: usize) -> Self {
        self.queue_size = queue;
        self
    }

    /// Samples in the long-term average (default 600).
    #[must_use]
    pub fn long_window(mut self, samples: usize) -> Self {
        // A zero-sample window is refused by `validate`; the EMA itself needs one.
        self.long_window = samples;
        self.long_rtt = Ema::new(samples.max(1), 10.min(samples.max(1)));
        self
    }
}

impl Algorithm for Gradient2 {
    fn initial_limit(&self) -> usize {
        self.estimated as usize
    }

    fn validate(&self) -> Result<(), InvalidAlgorithm> {
        check_bounds(self.estimated as usize, self.min, self.max)?;
        let s = self.smoothing;
        check_factor("smoothing", s, s > 0.0 && s <= 1.0, "(0, 1]")?;
        let t = self.tolerance;
        check_factor("tolerance", t, t >= 1.0, "[1, inf)")?;
        let b = self.backoff;
        check_factor("backoff", b, (0.5..1.0).contains(&b), "[0.5, 1)")?;
        if self.long_window == 0 {
            return Err(InvalidAlgorithm::Zero("long window"));
        }
        Ok(())
    }

    fn update(&mut self, s: &Sample) -> usize {
        // A window of drops only measured no RTT: it must not pull the long-term RTT
        // towards 0 (after which every real RTT would read as a 2× spike).
        let gradient = if s.rtt.is_zero() {
            None
        } else {
            self.gradient(s)
        };
        if s.dropped {
            // A drop is the strongest sign of overload: back off at once, as AIMD does.
            // (Netflix's Gradient2 ignores drops and reads only latency; a dependency that
            // sheds with fast 429s shows no latency to read, so here drops count too.)
            self.estimated =
                (self.estimated * self.backoff).clamp(self.min as f64, self.max as f64);
            return self.estimated as usize;
        }
        let Some(gradient) = gradient else {
            return self.estimated as usize;
        };
        let new = self.estimated.mul_add(gradient, self.queue_size as f64);
        let new = self
            .estimated
            .mul_add(1.0 - self.smoothing, new * self.smoothing);
        self.estimated = new.clamp(self.min as f64, self.max as f64);
        self.estimated as usize
    }
}

impl Gradient2 {
    /// Feeds a sample's RTT into the long-term average and returns the gradient to apply,
    /// or `None` to hold the limit (app-limited).
    fn gradient(&mut self, s: &Sample) -> Option<f64> {
        let short = s.rtt.as_secs_f64().max(1e-9);
        let mut long = self.long_rtt.add(short);
        // After a long stretch of high latency, let the baseline come down quickly.
        if long / short > 2.0 {
            long = self.long_rtt.scale(0.95);
        }
        if (s.in_flight as f64) < self.estimated / 2.0 {
            // Don't grow while app-limited.
            None
        } else {
            Some((self.tolerance * long / short).clamp(0.5, 1.0))
        }
    }
}

/// Exponential moving average with a simple-average warm-up (Netflix `ExpAvgMeasurement`).
#[derive(Debug, Clone)]
struct Ema {
    value: f64,
    window: usize,
    warmup: usize,
    count: usize,
}

impl Ema {
    fn new(window: usize, warmup: usize) -> Self {
        Self {
            value: 0.0,
            window,
            warmup,
            count: 0,
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (sample - self.value) / self.count as f64;
        } else {
            let f = 2.0 / (self.window as f64 + 1.0);
            self.value = self.value.mul_add(1.0 - f, sample * f);
        }
        self.value
    }

    fn scale(&mut self, by: f64) -> f64 {
        self.value *= by;
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rtt_ms: u64, in_flight: usize, dropped: bool) -> Sample {
        Sample {
            rtt: Duration::from_millis(rtt_ms),
            in_flight,
            dropped,
        }
    }

    #[test]
    fn aimd_grows_when_used_and_backs_off_on_drop() {
        let mut a = Aimd::new(20, 1, 100);
        assert_eq!(a.update(&sample(10, 20, false)), 21);
        // App-limited: 5 in flight of 21 does not grow the limit.
        assert_eq!(a.update(&sample(10, 5, false)), 21);
        // floor(21 * 0.8)
        assert_eq!(a.update(&sample(10, 21, true)), 16);
        // An RTT over the timeout counts as a drop.
        let mut a = Aimd::new(20, 1, 100).timeout(Duration::from_millis(50));
        assert_eq!(a.update(&sample(60, 20, false)), 16);
        // Bounds hold.
        let mut a = Aimd::new(100, 1, 100);
        assert_eq!(a.update(&sample(10, 100, false)), 100);
        let mut a = Aimd::new(2, 2, 100);
        assert_eq!(a.update(&sample(10, 2, true)), 2);
    }

    #[test]
    fn vegas_grows_without_queue_and_shrinks_with_one() {
        let mut v = Vegas::new(20, 1000).probe_multiplier(1_000_000);
        // First sample sets the no-load RTT.
        assert_eq!(v.update(&sample(10, 20, false)), 20);
        // No queueing (rtt == noload): grow by beta = 6 × ⌊log10(20)⌋ = 6.
        let grown = v.update(&sample(10, 20, false));
        assert!(grown > 20, "{grown}");
        // Heavy queueing (rtt 4× noload): queue = limit·0.75 > beta → shrink by log10.
        let before = grown;
        let shrunk = v.update(&sample(40, before, false));
        assert!(shrunk < before, "{shrunk} !< {before}");
        // A drop shrinks too.
        let d = v.update(&sample(10, shrunk, true));
        assert!(d < shrunk);
    }

    #[test]
    fn vegas_reprobes_the_noload_rtt() {
        let mut v = Vegas::new(10, 1000).probe_multiplier(1).seed(7);
        v.update(&sample(10, 10, false));
        // The path got slower for good; after a probe, 30 ms becomes the new no-load RTT.
        for _ in 0..40 {
            v.update(&sample(30, v.limit(), false));
        }
        assert_eq!(v.rtt_noload, Some(Duration::from_millis(30)));
    }

    #[test]
    fn gradient2_grows_at_steady_rtt_and_shrinks_when_rtt_rises() {
        let mut g = Gradient2::new(20, 1, 1000);
        let mut limit = 20;
        for _ in 0..50 {
            limit = g.update(&sample(10, limit, false));
        }
        assert!(limit > 40, "steady RTT should let the limit grow: {limit}");
        let before = limit;
        for _ in 0..20 {
            limit = g.update(&sample(50, limit, false));
        }
        assert!(
            limit < before,
            "a 5× RTT should shrink the limit: {limit} vs {before}"
        );
    }

    /// A window of drops only has no RTT (0): it shrinks the limit but must not become
    /// Vegas's no-load RTT, or every later sample would read as all queue.
    #[test]
    fn vegas_does_not_learn_a_zero_rtt_from_drops() {
        let mut v = Vegas::new(50, 1000).probe_multiplier(1_000_000);
        v.update(&sample(10, 50, false));
        let after_drop = v.update(&sample(0, 50, true));
        assert!(after_drop < 50, "{after_drop}");
        assert_eq!(v.rtt_noload, Some(Duration::from_millis(10)));
        // No queueing at the old no-load RTT: grows again.
        assert!(v.update(&sample(10, after_drop, false)) > after_drop);
    }

    /// Likewise for Gradient2's long-term RTT: after drops-only windows, a steady RTT still
    /// reads as steady (gradient 1) and the limit grows back.
    #[test]
    fn gradient2_does_not_average_in_a_zero_rtt_from_drops() {
        let mut g = Gradient2::new(100, 1, 1000);
        for _ in 0..5 {
            g.update(&sample(10, 100, false));
        }
        let mut limit = 0;
        for _ in 0..5 {
            limit = g.update(&sample(0, 100, true));
        }
        assert!(limit < 100, "{limit}");
        let mut grown = limit;
        for _ in 0..10 {
            grown = g.update(&sample(10, grown, false));
        }
        assert!(grown > limit, "{grown} !> {limit}");
        assert!(
            (g.long_rtt.value - 0.010).abs() < 1e-9,
            "{}",
            g.long_rtt.value
        );
    }

    /// After a drop at limit L, the next limit is at most L × the backoff (0.8 by default),
    /// for AIMD and for Gradient2 (whose smoothing does not soften a drop).
    #[test]
    fn a_drop_backs_off_by_the_ratio() {
        for l in [10, 57, 100, 240] {
            let mut a = Aimd::new(l, 1, 1000);
            assert!(a.update(&sample(10, l, true)) as f64 <= l as f64 * 0.8);
            let mut a = Aimd::new(l, 1, 1000).backoff(0.5);
            assert!(a.update(&sample(10, l, true)) as f64 <= l as f64 * 0.5);
            let mut g = Gradient2::new(l, 1, 1000);
            assert!(g.update(&sample(10, l, true)) as f64 <= l as f64 * 0.8);
            let mut g = Gradient2::new(l, 1, 1000);
            assert!(g.update(&sample(0, l, true)) as f64 <= l as f64 * 0.8);
            let mut g = Gradient2::new(l, 1, 1000).backoff(0.6);
            assert!(g.update(&sample(10, l, true)) as f64 <= l as f64 * 0.6);
        }
    }

    /// A dependency of capacity `c` that queues above it (RTT `10 ms × limit / c`) and sheds
    /// above `1.2 × c`, one window per step with the limit in use: from 5× above capacity
    /// the limit is under the shedding point within 10 windows, and then averages within
    /// ±10 % of `c` (Netflix's 0.9 backoff averaged about +14 %).
    #[test]
    fn loss_based_limits_average_within_ten_percent_of_capacity() {
        fn window(limit: usize, c: usize) -> Sample {
            let load = limit as f64 / c as f64;
            Sample {
                rtt: Duration::from_secs_f64(0.010 * load.max(1.0)),
                in_flight: limit,
                dropped: load > 1.2,
            }
        }
        for c in [50, 100, 200] {
            let algos: Vec<(&str, Box<dyn Algorithm>)> = vec![
                ("aimd", Box::new(Aimd::new(5 * c, 1, 1000))),
                ("gradient2", Box::new(Gradient2::new(5 * c, 1, 1000))),
            ];
            for (name, mut a) in algos {
                let mut limit = a.initial_limit();
                let mut n = 0;
                while limit as f64 > 1.2 * c as f64 {
                    limit = a.update(&window(limit, c));
                    n += 1;
                }
                assert!(n <= 10, "{name} at {c}: {n} windows to come down");
                let steps = 5_000;
                let mut sum = 0;
                for _ in 0..steps {
                    limit = a.update(&window(limit, c));
                    sum += limit;
                }
                let mean = sum as f64 / steps as f64 / c as f64;
                assert!(
                    (0.9..=1.1).contains(&mean),
                    "{name} at {c}: mean {mean:.3}× c"
                );
            }
        }
    }

    /// On a dependency of capacity `c` whose RTT grows as `limit / c` above it (so its
    /// queue is `limit − c`), Vegas settles `alpha..=beta × ⌊log10⌋` calls above `c`,
    /// whether it comes from below or from above: Netflix's 3–6 by default, and within 10 %
    /// of any capacity from 40 up with `queue(2.0, 4.0)`.
    #[test]
    fn vegas_settles_its_queue_bounds_above_capacity() {
        fn settle(mut v: Vegas, c: usize) -> usize {
            let mut limit = v.initial_limit();
            for _ in 0..500 {
                let load = limit as f64 / c as f64;
                let rtt = Duration::from_secs_f64(0.010 * load.max(1.0));
                limit = v.update(&Sample {
                    rtt,
                    in_flight: limit,
                    dropped: false,
                });
            }
            limit
        }
        for c in [40, 50, 100, 200, 500] {
            let log = log10_root(c as f64) as usize;
            for initial in [c / 4, 3 * c] {
                let fresh = || Vegas::new(initial, 1000).probe_multiplier(1_000_000);
                // The first sample sets the no-load RTT: start it unloaded.
                let warm = |mut v: Vegas| {
                    v.update(&sample(10, initial, false));
                    v
                };
                let l = settle(warm(fresh()), c);
                // One either side: the queue estimate is rounded up, and the last step
                // may overshoot by one `log`.
                assert!(
                    (c + 3 * log - 1..=c + 7 * log).contains(&l),
                    "default at {c} from {initial}: {l}"
                );
                let l = settle(warm(fresh().queue(2.0, 4.0)), c);
                let within = (l as f64 / c as f64 - 1.0).abs();
                assert!(
                    within <= 0.1 + 1e-9,
                    "queue(2, 4) at {c} from {initial}: {l}"
                );
            }
        }
    }

    #[test]
    fn algorithms_respect_bounds_on_any_input() {
        let mut algos: Vec<Box<dyn Algorithm>> = vec![
            Box::new(Aimd::new(10, 5, 50)),
            Box::new(Vegas::new(10, 50)),
            Box::new(Gradient2::new(10, 5, 50)),
        ];
        let mut x: u64 = 42;
        for a in &mut algos {
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let s = Sample {
                    rtt: Duration::from_micros(x % 100_000 + 1),
                    in_flight: (x >> 20) as usize % 80,
                    dropped: x.is_multiple_of(7),
                };
                let l = a.update(&s);
                assert!((1..=50).contains(&l), "{l}");
            }
        }
    }
}
