//! A lock-free rolling latency window that answers "what is the p-th percentile of recent
//! successful latencies?" without a lock on any path.
//!
//! Latencies are counted in log-linear buckets (microseconds: 16 exact buckets below 16 µs,
//! then 8 buckets per power of two, so any value is over-estimated by at most 12.5%). Two
//! generations of buckets each cover half the window: samples go into the generation of the
//! current half-window, and the percentile reads both, so it always sees between half a
//! window and a whole window of history. When time moves into a new half-window the first
//! recorder to notice (one compare-and-swap) clears the older generation.
//!
//! Computing a percentile walks the buckets, so it is not done per call: the recorder
//! stores the answer in one atomic, and callers read that. It recomputes at each rotation,
//! on every record while the window is still warming up, and whenever the bucket it just
//! incremented reaches a multiple of [`RECOMPUTE_EVERY`]: so about one record in eight
//! recomputes, and a record costs one counter update, not two.
//!
//! Samples recorded by another thread during a clear may be lost: the window is an
//! estimate, and a handful of lost samples in thousands changes nothing.
//!
//! Everything here takes time as "nanoseconds since the window's origin", so it is tested
//! without a runtime.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Exact buckets for 0..16 µs.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two, as a bit count (8).
const SUB_BITS: u32 = 3;
/// Values are clamped below 2^36 µs (about 19 hours).
const MAX_MICROS: u64 = (1 << 36) - 1;
/// Number of buckets: 16 linear + 8 per power of two from 2^4 to 2^35.
pub(crate) const BUCKETS: usize = 16 + (36 - 4) * 8;
/// A bucket reaching a multiple of this recomputes the percentile.
pub(crate) const RECOMPUTE_EVERY: u64 = 8;
/// The cached delay while the window is still warming up.
const NOT_WARM: u64 = u64::MAX;

/// The bucket a latency (in µs) falls in.
pub(crate) fn bucket_of(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < LINEAR {
        return v as usize;
    }
    // v >= 16, so its highest set bit `e` is at least 4.
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (LINEAR as usize) + ((e - 4) as usize) * 8 + sub as usize
}

/// The largest latency (in µs) that falls in `bucket`: what a percentile answers, so the
/// estimate errs on the late side (a hedge fired a little late, never early).
pub(crate) fn bucket_upper(bucket: usize) -> u64 {
    if (bucket as u64) < LINEAR {
        return bucket as u64;
    }
    let i = bucket as u64 - LINEAR;
    let e = i / 8 + 4;
    let sub = i % 8;
    ((8 + sub + 1) << (e - u64::from(SUB_BITS))) - 1
}

/// One half-window of counts.
struct Generation {
    buckets: Box<[AtomicU32]>,
}

impl Generation {
    fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn clear(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// The rolling window (see the module doc).
pub(crate) struct LatencyWindow {
    percentile: f64,
    half_nanos: u64,
    min_samples: u64,
    /// The half-window index the current generation belongs to.
    epoch: AtomicU64,
    generations: [Generation; 2],
    /// The last computed percentile in µs, or `NOT_WARM`.
    cached: AtomicU64,
}

impl std::fmt::Debug for LatencyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyWindow")
            .field("percentile", &self.percentile)
            .field("half_window_ns", &self.half_nanos)
            .field("min_samples", &self.min_samples)
            .field("delay", &self.delay())
            .finish()
    }
}

impl LatencyWindow {
    /// `percentile` in (0, 1], `window` > 0, `min_samples` >= 1 (checked by the builder).
    pub(crate) fn new(percentile: f64, window: Duration, min_samples: u64) -> Self {
        let half = (window.as_nanos() / 2).clamp(1, u128::from(u64::MAX)) as u64;
        Self {
            percentile,
            half_nanos: half,
            min_samples: min_samples.max(1),
            epoch: AtomicU64::new(0),
            generations: [Generation::new(), Generation::new()],
            cached: AtomicU64::new(NOT_WARM),
        }
    }

    /// The cached percentile, or `None` while fewer than `min_samples` are in the window.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.cached.load(Ordering::Relaxed) {
            NOT_WARM => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Records one successful latency observed at `now` (nanoseconds since the origin).
    pub(crate) fn record(&self, now_nanos: u64, latency: Duration) {
        let epoch = now_nanos / self.half_nanos;
        let mut current = self.epoch.load(Ordering::Acquire);
        let mut rotated = false;
        // Move into a new half-window: whoever wins the CAS clears what is now too old.
        while epoch > current {
            match self
                .epoch
                .compare_exchange(current, epoch, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if epoch - current >= 2 {
                        // Both generations are older than a whole window.
                        self.generations[0].clear();
                        self.generations[1].clear();
                    } else {
                        self.generations[(epoch % 2) as usize].clear();
                    }
                    current = epoch;
                    rotated = true;
                }
                Err(seen) => current = seen,
            }
        }
        // A recorder with an older clock reading than the current epoch counts into the
        // current generation: it is recent either way.
        self.count(current, latency, rotated);
    }

    fn count(&self, epoch: u64, latency: Duration, rotated: bool) {
        let generation = &self.generations[(epoch % 2) as usize];
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let before = generation.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);

        let warm = self.cached.load(Ordering::Relaxed) != NOT_WARM;
        if rotated || !warm || (u64::from(before) + 1).is_multiple_of(RECOMPUTE_EVERY) {
            self.recompute();
        }
    }

    /// Records a latency into the current half-window without reading the time: for
    /// attempts that completed at once, where no clock was read. The window still rotates
    /// on the next timed record.
    pub(crate) fn record_current(&self, latency: Duration) {
        let current = self.epoch.load(Ordering::Acquire);
        self.count(current, latency, false);
    }

    /// Walks both generations and stores the percentile (or `NOT_WARM`).
    fn recompute(&self) {
        let [a, b] = &self.generations;
        let total: u64 = a
            .buckets
            .iter()
            .zip(b.buckets.iter())
            .map(|(x, y)| {
                u64::from(x.load(Ordering::Relaxed)) + u64::from(y.load(Ordering::Relaxed))
            })
            .sum();
        if total < self.min_samples {
            self.cached.store(NOT_WARM, Ordering::Relaxed);
            return;
        }
        // The rank of the percentile sample, 1-based: ceil(p * total), at least 1.
        let rank = ((self.percentile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, (x, y)) in a.buckets.iter().zip(b.buckets.iter()).enumerate() {
            seen += u64::from(x.load(Ordering::Relaxed)) + u64::from(y.load(Ordering::Relaxed));
            if seen >= rank {
                self.cached.store(bucket_upper(i), Ordering::Relaxed);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in 0..200_000u64 {
            let b = bucket_of(us);
            assert!(b >= last, "bucket order at {us}");
            last = b;
            // The bucket's upper edge is >= the value and within 12.5% of it.
            let up = bucket_upper(b);
            assert!(up >= us, "{us} > upper {up}");
            assert!(up as f64 <= (us as f64).mul_add(1.125, 1.0), "{us} vs {up}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert!(bucket_upper(BUCKETS - 1) >= MAX_MICROS);
    }

    #[test]
    fn not_warm_until_min_samples() {
        let w = LatencyWindow::new(0.9, Duration::from_secs(10), 16);
        for _ in 0..15 {
            w.record(0, Duration::from_millis(10));
        }
        assert_eq!(w.delay(), None);
        w.record(0, Duration::from_millis(10));
        let d = w.delay().expect("warm after 16 samples");
        assert!(
            d >= Duration::from_millis(10) && d <= Duration::from_micros(11_250),
            "{d:?}"
        );
    }

    #[test]
    fn percentile_splits_a_bimodal_distribution() {
        let w = LatencyWindow::new(0.95, Duration::from_secs(10), 8);
        // 90 fast (10 ms), 10 slow (1 s): p95 lands in the slow mode, p80 in the fast one.
        for i in 0..100 {
            let lat = if i % 10 == 0 { 1000 } else { 10 };
            w.record(0, Duration::from_millis(lat));
        }
        assert!(w.delay().unwrap() >= Duration::from_millis(1000));
        let w = LatencyWindow::new(0.8, Duration::from_secs(10), 8);
        for i in 0..96 {
            let lat = if i % 10 == 0 { 1000 } else { 10 };
            w.record(0, Duration::from_millis(lat));
        }
        assert!(w.delay().unwrap() < Duration::from_millis(12));
    }

    #[test]
    fn immediate_records_count_without_a_clock() {
        let w = LatencyWindow::new(0.5, Duration::from_secs(2), 4);
        for _ in 0..4 {
            w.record_current(Duration::ZERO);
        }
        assert_eq!(w.delay(), Some(Duration::ZERO));
        // They age out like any other sample once timed records move the window on.
        for _ in 0..4 {
            w.record(2_100 * MS, Duration::from_millis(5));
        }
        assert!(w.delay().unwrap() >= Duration::from_millis(5));
    }

    #[test]
    fn old_samples_roll_out_of_the_window() {
        // Window 2 s: half-windows of 1 s.
        let w = LatencyWindow::new(0.5, Duration::from_secs(2), 8);
        for _ in 0..64 {
            w.record(100 * MS, Duration::from_millis(500));
        }
        assert!(w.delay().unwrap() >= Duration::from_millis(500));
        // One half-window later the old samples still count (a whole window of history).
        for _ in 0..8 {
            w.record(1_100 * MS, Duration::from_millis(5));
        }
        assert!(w.delay().unwrap() >= Duration::from_millis(500));
        // Two half-windows later the 500 ms samples are gone.
        for _ in 0..8 {
            w.record(2_100 * MS, Duration::from_millis(5));
        }
        let d = w.delay().unwrap();
        assert!(d < Duration::from_millis(6), "{d:?}");
        // After a long silence everything is cleared: back to warming up.
        w.record(60_000 * MS, Duration::from_millis(5));
        assert_eq!(w.delay(), None);
    }
}
