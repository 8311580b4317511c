//! [`BreakerHandle`]: the live state of a breaker, its statistics, and its manual states.

use std::sync::Arc;
use std::time::Duration;

use crate::core::Core;
use crate::machine::State;
use crate::window::WindowStats;

/// A cheap, cloneable handle on one breaker, from
/// [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle) or
/// [`KeyedHandle::get`](crate::KeyedHandle::get).
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    core: Arc<Core>,
}

/// A snapshot of a breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerStats {
    /// The current state.
    pub state: State,
    /// The window's totals (in half-open: the finished probes).
    pub window: WindowStats,
    /// Consecutive trips counted for the open-duration growth.
    pub consecutive_trips: u32,
    /// When open: the time until it turns half-open.
    pub retry_after: Option<Duration>,
    /// Half-open probes admitted and not finished yet (a dropped probe gives its slot
    /// back, so this is 0 whenever no probe call is alive).
    pub probes_in_flight: u32,
}

impl BreakerHandle {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The current state (applying time-driven changes first: an open breaker whose open
    /// duration elapsed reports [`State::HalfOpen`]).
    pub fn state(&self) -> State {
        self.core.with_machine(|m, now| {
            let t = m.tick(now);
            (m.state(), t)
        })
    }

    /// The state and the window statistics.
    pub fn stats(&self) -> BreakerStats {
        self.core.with_machine(|m, now| {
            let t = m.tick(now);
            let s = BreakerStats {
                state: m.state(),
                window: m.stats(now),
                consecutive_trips: m.trips(),
                retry_after: m.retry_after(now),
                probes_in_flight: m.probes_in_flight(),
            };
            (s, t)
        })
    }

    /// Rejects every call until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.set(State::ForcedOpen);
    }

    /// Admits every call and records nothing until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.set(State::Disabled);
    }

    /// Records outcomes (for statistics and metrics) but never trips, until
    /// [`reset`](Self::reset).
    pub fn metrics_only(&self) {
        self.set(State::MetricsOnly);
    }

    /// Back to Closed with an empty window and no trip history, from any state.
    pub fn reset(&self) {
        self.set(State::Closed);
    }

    /// Trips the breaker now, as if its rule had been met (open for the next duration).
    pub fn trip(&self) {
        self.set(State::Open);
    }

    fn set(&self, to: State) {
        self.core.with_machine(|m, now| ((), m.set(to, now)));
    }
}
