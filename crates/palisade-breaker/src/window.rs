//! The failure models: pure data structures that remember recent outcomes.
//!
//! Nothing here reads a clock or takes a lock: time is passed in as a [`Duration`] since
//! the breaker's origin, so every model is tested without a runtime (and against a naive
//! reference model in the property tests).
//!
//! - [`CountWindow`]: the last `size` outcomes, a true ring. Recording the `size + 1`-th
//!   outcome evicts the oldest one, so old failures slide out (unlike a cumulative counter).
//! - [`TimeWindow`]: `buckets` fixed buckets of `bucket_width` each. A record lands in the
//!   bucket of its epoch (`now / bucket_width`); moving to a later epoch clears the buckets
//!   that fell out of the window. The window covers the current (partial) bucket and the
//!   `buckets - 1` before it. Each operation clears at most `buckets` buckets, and only
//!   when time moves on, so the cost is O(1) amortised and bounded by `buckets`.
//! - [`Consecutive`]: a run of failures, reset by a success.

use std::time::Duration;

/// What a window reports: how many calls it holds and how many of them failed or were slow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Recorded calls (ignored outcomes are never recorded).
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which were slower than the slow-call duration (failed or not).
    pub slow: u64,
}

impl WindowStats {
    /// Failures over calls, `0.0` when empty.
    pub fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }

    /// Slow calls over calls, `0.0` when empty.
    pub fn slow_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.slow as f64 / self.calls as f64
        }
    }
}

const PRESENT: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// The last `size` outcomes, in a ring of one byte per slot.
#[derive(Debug, Clone)]
pub(crate) struct CountWindow {
    slots: Box<[u8]>,
    // Next slot to write; the oldest record when the ring is full.
    next: usize,
    stats: WindowStats,
}

impl CountWindow {
    /// A window of `size` slots; `size` must be at least 1 (checked by the config).
    pub(crate) fn new(size: usize) -> Self {
        Self {
            slots: vec![0; size.max(1)].into_boxed_slice(),
            next: 0,
            stats: WindowStats::default(),
        }
    }

    /// Records one outcome, evicting the oldest if the ring is full.
    pub(crate) fn record(&mut self, failed: bool, slow: bool) {
        let slot = &mut self.slots[self.next];
        // Evict what the slot held: this is what makes the window slide.
        if *slot & PRESENT != 0 {
            self.stats.calls -= 1;
            self.stats.failures -= u64::from(*slot & FAILED != 0);
            self.stats.slow -= u64::from(*slot & SLOW != 0);
        }
        *slot = PRESENT | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        self.stats.calls += 1;
        self.stats.failures += u64::from(failed);
        self.stats.slow += u64::from(slow);
        self.next += 1;
        if self.next == self.slots.len() {
            self.next = 0;
        }
    }

    pub(crate) fn stats(&self) -> WindowStats {
        self.stats
    }

    /// How many outcomes the ring holds when full.
    pub(crate) fn size(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = 0);
        self.next = 0;
        self.stats = WindowStats::default();
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

/// Fixed time buckets with running totals.
#[derive(Debug, Clone)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    width_nanos: u64,
    // The latest epoch the buckets were advanced to.
    head: u64,
    stats: WindowStats,
}

impl TimeWindow {
    /// `buckets` buckets of `width` each (both non-zero, checked by the config).
    pub(crate) fn new(buckets: usize, width: Duration) -> Self {
        Self {
            buckets: vec![Bucket::default(); buckets.max(1)].into_boxed_slice(),
            width_nanos: (width.as_nanos() as u64).max(1),
            head: 0,
            stats: WindowStats::default(),
        }
    }

    fn epoch(&self, now: Duration) -> u64 {
        (now.as_nanos() / u128::from(self.width_nanos)) as u64
    }

    /// Moves the window to `now`, clearing the buckets whose epochs slid out. Time that
    /// goes backwards (it cannot with tokio's monotonic clock) is treated as `head`.
    pub(crate) fn advance(&mut self, now: Duration) {
        let epoch = self.epoch(now);
        if epoch <= self.head {
            return;
        }
        let n = self.buckets.len() as u64;
        // Only the last `n` epochs up to `epoch` can be live; clear their slots (at most
        // `n` of them), subtracting whatever older epoch each slot still held.
        let steps = (epoch - self.head).min(n);
        for i in 0..steps {
            let e = epoch - i;
            let b = &mut self.buckets[(e % n) as usize];
            self.stats.calls -= b.calls;
            self.stats.failures -= b.failures;
            self.stats.slow -= b.slow;
            *b = Bucket {
                epoch: e,
                ..Bucket::default()
            };
        }
        self.head = epoch;
    }

    /// Records one outcome at `now`.
    pub(crate) fn record(&mut self, now: Duration, failed: bool, slow: bool) {
        self.advance(now);
        let n = self.buckets.len() as u64;
        let b = &mut self.buckets[(self.head % n) as usize];
        debug_assert_eq!(b.epoch, self.head);
        b.calls += 1;
        b.failures += u64::from(failed);
        b.slow += u64::from(slow);
        self.stats.calls += 1;
        self.stats.failures += u64::from(failed);
        self.stats.slow += u64::from(slow);
    }

    /// The totals of the window as of `now`.
    pub(crate) fn stats(&mut self, now: Duration) -> WindowStats {
        self.advance(now);
        self.stats
    }

    /// The totals as of the last advance, without moving the window.
    pub(crate) fn stats_stale(&self) -> WindowStats {
        self.stats
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = Bucket::default());
        self.head = 0;
        self.stats = WindowStats::default();
    }
}

/// A run of consecutive failures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Consecutive {
    failures: u64,
    stats: WindowStats,
}

impl Consecutive {
    pub(crate) fn record(&mut self, failed: bool, slow: bool) {
        if failed {
            self.failures += 1;
        } else {
            self.failures = 0;
        }
        // The stats of a consecutive model describe the current run only.
        self.stats = WindowStats {
            calls: self.failures.max(1),
            failures: self.failures,
            slow: u64::from(slow),
        };
    }

    #[cfg(test)]
    pub(crate) fn failures(&self) -> u64 {
        self.failures
    }

    pub(crate) fn stats(&self) -> WindowStats {
        self.stats
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn count_window_slides() {
        let mut w = CountWindow::new(100);
        for _ in 0..200 {
            w.record(false, false);
        }
        for _ in 0..60 {
            w.record(true, false);
        }
        assert_eq!(
            w.stats(),
            WindowStats {
                calls: 100,
                failures: 60,
                slow: 0
            }
        );
        // 100 more successes push every failure out.
        for _ in 0..100 {
            w.record(false, true);
        }
        assert_eq!(
            w.stats(),
            WindowStats {
                calls: 100,
                failures: 0,
                slow: 100
            }
        );
        w.clear();
        assert_eq!(w.stats(), WindowStats::default());
    }

    #[test]
    fn time_window_evicts_on_time_not_calls() {
        // 10 buckets of 100ms: a one-second window.
        let mut w = TimeWindow::new(10, ms(100));
        w.record(ms(50), true, false);
        w.record(ms(950), true, true);
        assert_eq!(w.stats(ms(999)).failures, 2);
        // At 1000ms, epoch 0 (0..100ms) slid out; no call needed to evict it.
        assert_eq!(
            w.stats(ms(1000)),
            WindowStats {
                calls: 1,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(w.stats(ms(1899)).calls, 1);
        assert_eq!(w.stats(ms(1900)).calls, 0);
        // A long jump clears everything without looping per epoch.
        w.record(ms(1950), false, false);
        assert_eq!(w.stats(Duration::from_secs(1_000_000)).calls, 0);
    }

    #[test]
    fn consecutive_resets_on_success() {
        let mut c = Consecutive::default();
        c.record(true, false);
        c.record(true, false);
        assert_eq!(c.failures(), 2);
        c.record(false, false);
        assert_eq!(c.failures(), 0);
    }

    #[test]
    fn rates() {
        let s = WindowStats {
            calls: 4,
            failures: 1,
            slow: 2,
        };
        assert!((s.failure_rate() - 0.25).abs() < 1e-9);
        assert!((s.slow_rate() - 0.5).abs() < 1e-9);
        assert!(WindowStats::default().failure_rate().abs() < 1e-9);
    }
}

/// Property tests: each window against a naive model that keeps every record and
/// recomputes the totals from scratch.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn naive(records: &[(bool, bool)]) -> WindowStats {
        WindowStats {
            calls: records.len() as u64,
            failures: records.iter().filter(|r| r.0).count() as u64,
            slow: records.iter().filter(|r| r.1).count() as u64,
        }
    }

    proptest! {
        #[test]
        fn count_window_matches_last_n(
            size in 1usize..40,
            outcomes in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..300),
        ) {
            let mut w = CountWindow::new(size);
            for (i, &(f, s)) in outcomes.iter().enumerate() {
                w.record(f, s);
                let start = (i + 1).saturating_sub(size);
                prop_assert_eq!(w.stats(), naive(&outcomes[start..=i]));
            }
        }

        #[test]
        fn time_window_matches_records_in_live_epochs(
            buckets in 1usize..12,
            width_ms in 1u64..50,
            // (time step, failed, slow, record or only read)
            steps in proptest::collection::vec((0u64..120, any::<bool>(), any::<bool>(), any::<bool>()), 0..300),
        ) {
            let width = Duration::from_millis(width_ms);
            let mut w = TimeWindow::new(buckets, width);
            let mut all: Vec<(u64, bool, bool)> = Vec::new();
            let mut now = 0u64;
            for (dt, f, s, record) in steps {
                now += dt;
                let t = Duration::from_millis(now);
                if record {
                    w.record(t, f, s);
                    all.push((now, f, s));
                }
                // Live: the record's epoch is one of the last `buckets` epochs up to now.
                let epoch = now / width_ms;
                let live: Vec<(bool, bool)> = all
                    .iter()
                    .filter(|(at, _, _)| at / width_ms + buckets as u64 > epoch)
                    .map(|&(_, f, s)| (f, s))
                    .collect();
                prop_assert_eq!(w.stats(t), naive(&live));
            }
        }
    }
}
