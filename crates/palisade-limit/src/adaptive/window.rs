//! Windowed sampling: calls record into atomics; one caller per window boundary folds the
//! window into a [`Sample`] for the algorithm.

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

    /// Records one call. Returns true when the window is due to close.
    pub(crate) fn record(
        &self,
        rtt: Duration,
        in_flight: usize,
        dropped: bool,
        now: Instant,
    ) -> bool {
        if dropped {
            // A drop counts whatever its RTT (a fast 429 is still a 429).
            self.dropped.store(true, Relaxed);
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
