//! Windowed sampling: calls record into atomics; one caller per window boundary folds the
//! window into a [`Sample`] for the algorithm.
//!
//! A window is due when it is at least `min_time` old and holds `min_samples` calls, or at
//! once when it holds a *fresh* drop: one from a call that started after the last window
//! that reported a drop closed. The limit so reacts to overload within one round trip, not
//! after a whole window of calls sent into it, and a burst of drops from calls already in
//! flight when it reacted counts once (TCP's rule: one decrease per round trip).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use super::algorithm::Sample;

#[derive(Debug)]
pub(crate) struct Window {
    epoch: Instant,
    /// Nanoseconds since `epoch` when the current window opened.
    opened: AtomicU64,
    rtt_sum_nanos: AtomicU64,
    /// Calls whose RTT is in the sum.
    rtt_count: AtomicU64,
    /// Calls recorded (drops included).
    count: AtomicU64,
    max_in_flight: AtomicUsize,
    dropped: AtomicBool,
    /// Nanoseconds since `epoch` when the last window reporting a drop closed (0: never).
    /// Drops from calls started before then are already answered by that decrease.
    drop_closed: AtomicU64,
    min_time: Duration,
    min_samples: u64,
    rtt_floor: Duration,
}

impl Window {
    pub(crate) fn new(min_time: Duration, min_samples: u64, rtt_floor: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            opened: AtomicU64::new(0),
            rtt_sum_nanos: AtomicU64::new(0),
            rtt_count: AtomicU64::new(0),
            count: AtomicU64::new(0),
            max_in_flight: AtomicUsize::new(0),
            dropped: AtomicBool::new(false),
            drop_closed: AtomicU64::new(0),
            min_time,
            min_samples,
            rtt_floor,
        }
    }

    pub(crate) fn rtt_floor(&self) -> Duration {
        self.rtt_floor
    }

    fn nanos_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records one call that took `rtt` up to `now`. Returns true when the window is due
    /// to close.
    pub(crate) fn record(
        &self,
        rtt: Duration,
        in_flight: usize,
        dropped: bool,
        now: Instant,
    ) -> bool {
        if dropped {
            // A drop counts whatever its RTT (a fast 429 is still a 429), but only a call
            // sent after the last decrease can show that the decreased limit is still too
            // high; an older one is a sample without the drop.
            let started = self.nanos_since_epoch(now.checked_sub(rtt).unwrap_or(self.epoch));
            let closed = self.drop_closed.load(Relaxed);
            if closed == 0 || started > closed {
                self.dropped.store(true, Relaxed);
            }
            self.count.fetch_add(1, Relaxed);
        } else if rtt >= self.rtt_floor {
            // RTTs under the floor (cache hits, local answers) say nothing about load.
            let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
            self.rtt_sum_nanos.fetch_add(nanos, Relaxed);
            self.rtt_count.fetch_add(1, Relaxed);
            self.count.fetch_add(1, Relaxed);
        } else {
            return false;
        }
        self.max_in_flight.fetch_max(in_flight, Relaxed);
        // A fresh drop makes the window due at once.
        if self.dropped.load(Relaxed) {
            return true;
        }
        let opened = self.opened.load(Relaxed);
        self.count.load(Relaxed) >= self.min_samples
            && self.nanos_since_epoch(now).saturating_sub(opened)
                >= u64::try_from(self.min_time.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Closes the window (the caller holds the update lock) and returns its sample, if it
    /// has one.
    pub(crate) fn close(&self, now: Instant) -> Option<Sample> {
        self.opened.store(self.nanos_since_epoch(now), Relaxed);
        let count = self.count.swap(0, Relaxed);
        let rtt_count = self.rtt_count.swap(0, Relaxed);
        let sum = self.rtt_sum_nanos.swap(0, Relaxed);
        let in_flight = self.max_in_flight.swap(0, Relaxed);
        let dropped = self.dropped.swap(false, Relaxed);
        if dropped {
            // At least 1, so that 0 keeps meaning "never".
            self.drop_closed
                .store(self.nanos_since_epoch(now).max(1), Relaxed);
        }
        if count == 0 {
            return None;
        }
        Some(Sample {
            // A window of drops only has no RTT: report zero, which no algorithm reads as
            // queueing (and the drop flag decides anyway).
            rtt: Duration::from_nanos(sum.checked_div(rtt_count).unwrap_or(0)),
            in_flight,
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn window() -> (Window, Instant) {
        let w = Window::new(100 * MS, 10, Duration::from_micros(100));
        let epoch = w.epoch;
        (w, epoch)
    }

    #[test]
    fn a_fresh_drop_closes_the_window_at_once() {
        let (w, t0) = window();
        // Two calls, 5 ms in: far from 100 ms and 10 samples.
        assert!(!w.record(10 * MS, 3, false, t0 + 5 * MS));
        // A fast 429 makes the window due now, and its sample reports the drop.
        assert!(w.record(Duration::ZERO, 4, true, t0 + 5 * MS));
        let s = w.close(t0 + 5 * MS).unwrap();
        assert!(s.dropped);
        assert_eq!((s.rtt, s.in_flight), (10 * MS, 4));
    }

    #[test]
    fn drops_from_calls_sent_before_the_decrease_count_once() {
        let (w, t0) = window();
        assert!(w.record(Duration::ZERO, 4, true, t0 + 50 * MS));
        assert!(w.close(t0 + 50 * MS).unwrap().dropped);
        // Calls that were in flight when the limit reacted (sent at 45 ms) drop too: they
        // are samples, not new drops, so the window waits its time.
        for _ in 0..9 {
            assert!(!w.record(20 * MS, 4, true, t0 + 65 * MS));
        }
        assert!(w.record(10 * MS, 4, false, t0 + 150 * MS));
        assert!(!w.close(t0 + 150 * MS).unwrap().dropped);
        // A call sent after the decrease that drops is fresh evidence: due at once.
        assert!(w.record(5 * MS, 4, true, t0 + 160 * MS));
        assert!(w.close(t0 + 160 * MS).unwrap().dropped);
    }
}
