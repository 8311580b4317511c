//! The breaker's state machine: pure, single-threaded, no clock and no lock.
//!
//! The service keeps one [`Machine`] behind a short mutex and passes the time in (a
//! [`Duration`] since the breaker's origin), so every transition here is tested without a
//! runtime. The states:
//!
//! ```text
//!            trip rule met                 open duration elapsed
//!  Closed ─────────────────────▶ Open ─────────────────────────▶ HalfOpen
//!    ▲                            ▲                                │ │
//!    │                            └── a probe rule met, or the ────┘ │
//!    │                                max half-open time passed      │
//!    └──────────────── every permitted probe finished under the rules ┘
//!
//!  Manual (through the handle): ForcedOpen (reject all), Disabled (admit all, record
//!  nothing), MetricsOnly (record, never trip); `reset` returns to Closed from anywhere.
//! ```
//!
//! Every state entry bumps a *generation*. A [`Ticket`] carries the generation it was
//! admitted in, and an outcome is recorded only if that generation is still current: a
//! slow call admitted while Closed cannot count against the half-open probes, nor a stale
//! probe against the next closed window.

use std::time::Duration;

use palisade_core::rand::SeededRng;

use crate::config::{FailureModel, Settings};
use crate::window::{Consecutive, CountWindow, TimeWindow, WindowStats};

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Calls pass and their outcomes are recorded.
    Closed = 0,
    /// Calls are rejected until the open duration elapses.
    Open = 1,
    /// A limited number of probe calls pass; their outcomes decide between Closed and Open.
    HalfOpen = 2,
    /// Manually forced open: every call is rejected until `reset`.
    ForcedOpen = 3,
    /// Manually disabled: every call passes and nothing is recorded until `reset`.
    Disabled = 4,
    /// Manually set to record outcomes (for stats and metrics) but never trip.
    MetricsOnly = 5,
}

impl State {
    /// A lowercase name, as used in tracing events and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Closed,
            1 => Self::Open,
            2 => Self::HalfOpen,
            3 => Self::ForcedOpen,
            4 => Self::Disabled,
            _ => Self::MetricsOnly,
        }
    }

    /// Whether calls in this state pass without consulting the machine (the lock-free
    /// fast path of the service).
    pub(crate) const fn admits_all(self) -> bool {
        matches!(self, Self::Closed | Self::Disabled | Self::MetricsOnly)
    }
}

/// A state change, given to the transition callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// When entering [`State::Open`]: how long it stays open.
    pub open_for: Option<Duration>,
}

/// Proof of admission: which generation admitted the call and how to account for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) generation: u32,
    pub(crate) probe: bool,
    pub(crate) record: bool,
}

/// The mirror's flag for [`Machine::clean`], above the state's bits.
const CLEAN: u64 = 0x80;

/// The answer to "may this call pass?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Yes(Ticket),
    No { retry_after: Option<Duration> },
}

#[derive(Debug, Clone)]
enum Window {
    Count(CountWindow),
    Time(TimeWindow),
    Consecutive(Consecutive),
}

/// The pure breaker state machine.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    settings: Settings,
    state: State,
    generation: u32,
    window: Window,
    // Open: when it turns half-open.
    open_until: Duration,
    // HalfOpen: when it gives up on unfinished probes, and the probe accounting.
    half_open_deadline: Option<Duration>,
    probes_admitted: u32,
    probes_done: u32,
    probe_failures: u32,
    probe_slow: u32,
    // Consecutive trips (for the growing open duration) and when Closed was last entered.
    trips: u32,
    closed_since: Duration,
    rng: SeededRng,
}

impl Machine {
    /// A closed machine; `settings` must have been validated.
    pub(crate) fn new(settings: Settings) -> Self {
        let window = match settings.model {
            FailureModel::Count { size } => Window::Count(CountWindow::new(size)),
            FailureModel::Time {
                buckets,
                bucket_width,
            } => Window::Time(TimeWindow::new(buckets, bucket_width)),
            FailureModel::Consecutive { .. } => Window::Consecutive(Consecutive::default()),
        };
        let rng = SeededRng::new(settings.seed);
        Self {
            settings,
            state: State::Closed,
            generation: 0,
            window,
            open_until: Duration::ZERO,
            half_open_deadline: None,
            probes_admitted: 0,
            probes_done: 0,
            probe_failures: 0,
            probe_slow: 0,
            trips: 0,
            closed_since: Duration::ZERO,
            rng,
        }
    }

    /// The state, generation and [`Machine::clean`] flag packed for the service's
    /// lock-free mirror.
    pub(crate) fn packed(&self) -> u64 {
        let clean = if self.clean() { CLEAN } else { 0 };
        (u64::from(self.generation) << 8) | clean | self.state as u64
    }

    pub(crate) fn unpack(packed: u64) -> (State, u32) {
        (
            State::from_u8(packed as u8 & !(CLEAN as u8)),
            (packed >> 8) as u32,
        )
    }

    /// Whether recording a fast success would leave this machine exactly as it is, so the
    /// service may skip the lock for one. True when the machine records without tripping
    /// on it (Closed, MetricsOnly) and its window cannot change: a count window full of
    /// fast successes (writing one more into a ring of identical slots only rotates it,
    /// and a rotation of identical slots is the same ring), or a consecutive model whose
    /// current run is one fast success. A time window is never clean: a success adds to
    /// the current bucket's count.
    pub(crate) fn clean(&self) -> bool {
        if !matches!(self.state, State::Closed | State::MetricsOnly) {
            return false;
        }
        let stats = match &self.window {
            Window::Count(w) => {
                let stats = w.stats();
                if stats.calls != w.size() as u64 {
                    return false;
                }
                stats
            }
            Window::Consecutive(c) => c.stats(),
            Window::Time(_) => return false,
        };
        stats.failures == 0 && stats.slow == 0 && stats.calls > 0
    }

    /// Whether a fast success admitted in generation `generation` may skip the lock,
    /// given the mirror's `packed` word (see [`Machine::clean`]).
    #[inline]
    pub(crate) fn success_is_noop(packed: u64, generation: u32) -> bool {
        packed & CLEAN != 0 && (packed >> 8) as u32 == generation
    }

    /// When an open breaker turns half-open.
    pub(crate) fn open_until(&self) -> Duration {
        self.open_until
    }

    /// The stored state (time-driven changes happen in [`Machine::tick`]).
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Half-open probes admitted and not yet finished (0 outside half-open).
    pub(crate) fn probes_in_flight(&self) -> u32 {
        if self.state == State::HalfOpen {
            self.probes_admitted.saturating_sub(self.probes_done)
        } else {
            0
        }
    }

    /// Consecutive trips counted for the open-duration growth.
    pub(crate) fn trips(&self) -> u32 {
        self.trips
    }

    /// Applies the changes that time alone causes: Open → HalfOpen when the open duration
    /// elapsed, HalfOpen → Open when the maximum half-open time passed.
    pub(crate) fn tick(&mut self, now: Duration) -> Option<Transition> {
        match self.state {
            State::Open if now >= self.open_until => {
                let t = self.enter(State::HalfOpen, now);
                self.half_open_deadline =
                    self.settings.max_half_open.map(|d| now.saturating_add(d));
                Some(t)
            }
            State::HalfOpen if self.half_open_deadline.is_some_and(|d| now >= d) => {
                Some(self.trip(now))
            }
            _ => None,
        }
    }

    /// Decides whether one call may pass at `now`.
    pub(crate) fn acquire(&mut self, now: Duration) -> (Admit, Option<Transition>) {
        let transition = self.tick(now);
        let ticket = |probe, record| Ticket {
            generation: self.generation,
            probe,
            record,
        };
        let admit = match self.state {
            State::Closed | State::MetricsOnly => Admit::Yes(ticket(false, true)),
            State::Disabled => Admit::Yes(ticket(false, false)),
            State::ForcedOpen => Admit::No { retry_after: None },
            State::Open => Admit::No {
                retry_after: Some(self.open_until.saturating_sub(now)),
            },
            State::HalfOpen if self.probes_admitted < self.settings.permitted_probes => {
                // Exactly `permitted_probes` tickets exist per half-open generation: this
                // count only goes down when a probe is cancelled (dropped or ignored).
                self.probes_admitted += 1;
                Admit::Yes(ticket(true, true))
            }
            // All probes are out: the earliest a slot can free is unknown, the latest is the
            // half-open deadline.
            State::HalfOpen => Admit::No {
                retry_after: self.half_open_deadline.map(|d| d.saturating_sub(now)),
            },
        };
        (admit, transition)
    }

    /// Records a finished call. `clock` is read only if the model or a transition needs the
    /// time (a count window without trips never reads it).
    pub(crate) fn complete(
        &mut self,
        ticket: Ticket,
        failed: bool,
        slow: bool,
        clock: &mut impl FnMut() -> Duration,
    ) -> Option<Transition> {
        if !ticket.record || ticket.generation != self.generation {
            return None; // Stale: admitted in a state that has since been left.
        }
        match self.state {
            State::Closed | State::MetricsOnly => {
                let stats = match &mut self.window {
                    Window::Count(w) => {
                        w.record(failed, slow);
                        w.stats()
                    }
                    Window::Time(w) => {
                        w.record(clock(), failed, slow);
                        w.stats_stale()
                    }
                    Window::Consecutive(c) => {
                        c.record(failed, slow);
                        c.stats()
                    }
                };
                (self.state == State::Closed && self.should_trip(&stats))
                    .then(|| self.trip(clock()))
            }
            State::HalfOpen if ticket.probe => {
                self.probes_done += 1;
                self.probe_failures += u32::from(failed);
                self.probe_slow += u32::from(slow);
                let n = f64::from(self.settings.permitted_probes);
                // Rates over all permitted probes: once the failures alone reach the
                // threshold, the remaining probes cannot change the verdict, so reopen now.
                let fail_limit = match self.settings.model {
                    FailureModel::Consecutive { .. } => self.probe_failures > 0,
                    _ => f64::from(self.probe_failures) / n >= self.settings.failure_rate,
                };
                let slow_limit = self
                    .settings
                    .slow_call
                    .is_some_and(|(_, rate)| f64::from(self.probe_slow) / n >= rate);
                if fail_limit || slow_limit {
                    Some(self.trip(clock()))
                } else if self.probes_done >= self.settings.permitted_probes {
                    Some(self.enter(State::Closed, clock()))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// A call admitted with `ticket` will never complete (its future was dropped, or its
    /// outcome was ignored): give a probe's slot back so another caller may probe.
    pub(crate) fn cancel(&mut self, ticket: Ticket) {
        if ticket.probe && ticket.generation == self.generation && self.state == State::HalfOpen {
            self.probes_admitted -= 1;
        }
    }

    /// Moves to a manual state, or back to Closed with `State::Closed` (a reset, which also
    /// forgets the trip count). Entering `Open` or `HalfOpen` by hand is a trip / probe
    /// phase like any other.
    pub(crate) fn set(&mut self, to: State, now: Duration) -> Option<Transition> {
        if to == self.state && to != State::Closed {
            return None;
        }
        match to {
            State::Open => Some(self.trip(now)),
            State::HalfOpen => {
                let t = self.enter(State::HalfOpen, now);
                self.half_open_deadline =
                    self.settings.max_half_open.map(|d| now.saturating_add(d));
                Some(t)
            }
            State::Closed => {
                self.trips = 0;
                let from = self.state;
                let t = self.enter(State::Closed, now);
                (from != State::Closed).then_some(t)
            }
            _ => Some(self.enter(to, now)),
        }
    }

    /// The window's totals as of `now` (in half-open: the probes so far).
    pub(crate) fn stats(&mut self, now: Duration) -> WindowStats {
        if self.state == State::HalfOpen {
            return WindowStats {
                calls: u64::from(self.probes_done),
                failures: u64::from(self.probe_failures),
                slow: u64::from(self.probe_slow),
            };
        }
        match &mut self.window {
            Window::Count(w) => w.stats(),
            Window::Time(w) => w.stats(now),
            Window::Consecutive(c) => c.stats(),
        }
    }

    /// When the breaker turns half-open, if it is open.
    pub(crate) fn retry_after(&self, now: Duration) -> Option<Duration> {
        (self.state == State::Open).then(|| self.open_until.saturating_sub(now))
    }

    fn should_trip(&self, stats: &WindowStats) -> bool {
        match self.settings.model {
            FailureModel::Consecutive { failures } => stats.failures >= failures,
            _ => {
                // `count / calls >= rate`, multiplied out (a division costs more than the
                // rest of the record path).
                let calls = stats.calls as f64;
                stats.calls >= self.settings.minimum_calls
                    && (stats.failures as f64 >= self.settings.failure_rate * calls
                        || self
                            .settings
                            .slow_call
                            .is_some_and(|(_, rate)| stats.slow as f64 >= rate * calls))
            }
        }
    }

    /// Enters Open, for a duration that grows with consecutive trips if configured.
    fn trip(&mut self, now: Duration) -> Transition {
        let base = self.settings.open_duration;
        let open_for = match self.settings.backoff {
            None => base,
            Some(b) => {
                // A healthy stretch in Closed forgives earlier trips.
                if self.state == State::Closed
                    && now.saturating_sub(self.closed_since) >= b.reset_after
                {
                    self.trips = 0;
                }
                let exp = self.trips.min(63) as i32;
                let grown = base.as_secs_f64() * b.multiplier.powi(exp);
                let capped = grown.min(b.max.as_secs_f64());
                let factor = b.jitter.mul_add(-self.next_unit(), 1.0);
                // Saturating: a cap of `Duration::MAX` must not overflow the conversion.
                palisade_core::time::secs_f64(capped * factor).unwrap_or(b.max)
            }
        };
        self.trips = self.trips.saturating_add(1);
        self.open_until = now.saturating_add(open_for);
        let mut t = self.enter(State::Open, now);
        t.open_for = Some(open_for);
        t
    }

    fn enter(&mut self, to: State, now: Duration) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation = self.generation.wrapping_add(1);
        self.probes_admitted = 0;
        self.probes_done = 0;
        self.probe_failures = 0;
        self.probe_slow = 0;
        self.half_open_deadline = None;
        match &mut self.window {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
            Window::Consecutive(c) => c.clear(),
        }
        if to == State::Closed {
            self.closed_since = now;
        }
        Transition {
            from,
            to,
            open_for: None,
        }
    }

    /// A uniform value in `[0, 1)` for jitter, from core's seedable source.
    fn next_unit(&mut self) -> f64 {
        self.rng.next_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OpenBackoff;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn admit(m: &mut Machine, now: Duration) -> Ticket {
        match m.acquire(now).0 {
            Admit::Yes(t) => t,
            Admit::No { .. } => panic!("expected admission in {:?}", m.state()),
        }
    }

    fn run(m: &mut Machine, now: Duration, failed: bool) -> Option<Transition> {
        let t = admit(m, now);
        m.complete(t, failed, false, &mut || now)
    }

    fn count_settings(size: usize, min: u64) -> Settings {
        Settings {
            model: FailureModel::count(size),
            minimum_calls: min,
            open_duration: secs(10),
            max_half_open: None,
            ..Settings::default()
        }
    }

    #[test]
    fn window_really_slides() {
        let mut m = Machine::new(count_settings(100, 100));
        for _ in 0..200 {
            assert_eq!(run(&mut m, secs(0), false), None);
        }
        for i in 0..60 {
            let t = run(&mut m, secs(0), true);
            // The 50th failure makes 50 of the last 100 fail: rate 0.5 reaches the threshold.
            if i == 49 {
                assert_eq!(t.map(|t| t.to), Some(State::Open));
                break;
            }
            assert_eq!(t, None, "tripped early at failure {i}");
        }
        assert_eq!(m.state(), State::Open);
    }

    #[test]
    fn old_failures_slide_out() {
        let mut m = Machine::new(count_settings(100, 100));
        // 49 failures first, then 100 successes: at no point do 50 of the last 100 fail.
        for _ in 0..49 {
            assert_eq!(run(&mut m, secs(0), true), None);
        }
        for _ in 0..100 {
            assert_eq!(run(&mut m, secs(0), false), None);
        }
        // The earlier failures are gone: 49 new ones still don't trip.
        for _ in 0..49 {
            assert_eq!(run(&mut m, secs(0), true), None);
        }
        assert_eq!(m.stats(secs(0)).failures, 49);
        assert_eq!(m.state(), State::Closed);
    }

    #[test]
    fn minimum_calls_gate() {
        let mut m = Machine::new(count_settings(100, 5));
        for _ in 0..4 {
            assert_eq!(run(&mut m, secs(0), true), None);
        }
        assert_eq!(run(&mut m, secs(0), true).map(|t| t.to), Some(State::Open));
    }

    #[test]
    fn open_rejects_then_half_open_then_closes() {
        let mut m = Machine::new(Settings {
            permitted_probes: 2,
            ..count_settings(4, 4)
        });
        for _ in 0..4 {
            run(&mut m, secs(0), true);
        }
        assert_eq!(m.state(), State::Open);
        assert_eq!(
            m.acquire(secs(3)).0,
            Admit::No {
                retry_after: Some(secs(7))
            }
        );
        let (a, t) = m.acquire(secs(10));
        assert!(matches!(a, Admit::Yes(Ticket { probe: true, .. })));
        assert_eq!(
            t.map(|t| (t.from, t.to)),
            Some((State::Open, State::HalfOpen))
        );
        let p1 = match a {
            Admit::Yes(t) => t,
            Admit::No { .. } => unreachable!(),
        };
        let p2 = admit(&mut m, secs(10));
        // Only two probes.
        assert!(matches!(
            m.acquire(secs(10)).0,
            Admit::No { retry_after: None }
        ));
        assert_eq!(m.complete(p1, false, false, &mut || secs(11)), None);
        let t = m.complete(p2, false, false, &mut || secs(11));
        assert_eq!(t.map(|t| t.to), Some(State::Closed));
    }

    #[test]
    fn failed_probe_reopens_at_once() {
        let mut m = Machine::new(Settings {
            permitted_probes: 2,
            ..count_settings(2, 2)
        });
        run(&mut m, secs(0), true);
        run(&mut m, secs(0), true);
        let p1 = admit(&mut m, secs(10));
        let p2 = admit(&mut m, secs(10));
        // 1 of 2 probes failed: rate 0.5 ≥ 0.5 whatever the other does.
        let t = m.complete(p1, true, false, &mut || secs(12)).unwrap();
        assert_eq!(
            (t.from, t.to, t.open_for),
            (State::HalfOpen, State::Open, Some(secs(10)))
        );
        // The other probe is stale now.
        assert_eq!(m.complete(p2, false, false, &mut || secs(12)), None);
        assert_eq!(m.retry_after(secs(12)), Some(secs(10)));
    }

    #[test]
    fn cancelled_probe_frees_its_slot() {
        let mut m = Machine::new(count_settings(1, 1));
        run(&mut m, secs(0), true);
        let p = admit(&mut m, secs(10));
        assert!(matches!(m.acquire(secs(10)).0, Admit::No { .. }));
        m.cancel(p);
        let p = admit(&mut m, secs(10));
        assert_eq!(
            m.complete(p, false, false, &mut || secs(10)).map(|t| t.to),
            Some(State::Closed)
        );
    }

    #[test]
    fn max_half_open_reopens() {
        let mut m = Machine::new(Settings {
            max_half_open: Some(secs(5)),
            ..count_settings(1, 1)
        });
        run(&mut m, secs(0), true);
        let _stuck = admit(&mut m, secs(10));
        assert!(
            matches!(m.acquire(secs(14)).0, Admit::No { retry_after: Some(d) } if d == secs(1))
        );
        let (a, t) = m.acquire(secs(15));
        assert_eq!(t.map(|t| t.to), Some(State::Open));
        assert_eq!(
            a,
            Admit::No {
                retry_after: Some(secs(10))
            }
        );
    }

    #[test]
    fn slow_calls_trip() {
        let mut m = Machine::new(Settings {
            slow_call: Some((secs(1), 0.8)),
            failure_rate: 1.0,
            ..count_settings(10, 10)
        });
        for i in 0..10 {
            let t = admit(&mut m, secs(0));
            // Successful but slow: 8 of 10 slow trips it.
            let tr = m.complete(t, false, i >= 2, &mut || secs(0));
            assert_eq!(tr.is_some(), i == 9);
        }
        assert_eq!(m.state(), State::Open);
    }

    #[test]
    fn consecutive_model() {
        let mut m = Machine::new(Settings {
            model: FailureModel::consecutive(3),
            ..count_settings(1, 1)
        });
        run(&mut m, secs(0), true);
        run(&mut m, secs(0), true);
        run(&mut m, secs(0), false);
        run(&mut m, secs(0), true);
        run(&mut m, secs(0), true);
        assert_eq!(m.state(), State::Closed);
        assert_eq!(run(&mut m, secs(0), true).map(|t| t.to), Some(State::Open));
    }

    #[test]
    fn open_duration_grows_caps_and_resets() {
        let mut m = Machine::new(Settings {
            backoff: Some(OpenBackoff::exponential(2.0, secs(35)).reset_after(secs(100))),
            ..count_settings(1, 1)
        });
        let mut now = secs(0);
        let mut durations = Vec::new();
        for _ in 0..4 {
            let t = run(&mut m, now, true).unwrap();
            durations.push(t.open_for.unwrap());
            now += t.open_for.unwrap();
            // Half-open probe fails: a consecutive trip.
            let t = run(&mut m, now, true).unwrap();
            durations.push(t.open_for.unwrap());
            now += t.open_for.unwrap();
            // Probe succeeds: closed again, briefly.
            run(&mut m, now, false);
            assert_eq!(m.state(), State::Closed);
        }
        assert_eq!(&durations[..4], &[secs(10), secs(20), secs(35), secs(35)]);
        // Healthy for 100 s: back to the base duration.
        now += secs(100);
        assert_eq!(run(&mut m, now, true).unwrap().open_for, Some(secs(10)));
        assert_eq!(m.trips(), 1);
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut m = Machine::new(Settings {
            backoff: Some(OpenBackoff::exponential(1.0, secs(10)).jitter(0.5)),
            ..count_settings(1, 1)
        });
        let mut seen = std::collections::HashSet::new();
        let mut now = secs(0);
        for _ in 0..20 {
            let d = run(&mut m, now, true).unwrap().open_for.unwrap();
            assert!(d >= secs(5) && d <= secs(10), "{d:?}");
            seen.insert(d);
            now += d;
            m.set(State::Closed, now);
        }
        assert!(seen.len() > 1, "jitter varies");
    }

    #[test]
    fn manual_states() {
        let mut m = Machine::new(count_settings(1, 1));
        m.set(State::ForcedOpen, secs(0));
        assert_eq!(m.acquire(secs(1000)).0, Admit::No { retry_after: None });
        m.set(State::Disabled, secs(0));
        let t = admit(&mut m, secs(0));
        assert!(!t.record);
        assert_eq!(m.complete(t, true, false, &mut || secs(0)), None);
        m.set(State::MetricsOnly, secs(0));
        for _ in 0..5 {
            assert_eq!(run(&mut m, secs(0), true), None);
        }
        assert_eq!(m.stats(secs(0)).failures, 1);
        assert_eq!(m.state(), State::MetricsOnly);
        let t = m.set(State::Closed, secs(0)).unwrap();
        assert_eq!((t.from, t.to), (State::MetricsOnly, State::Closed));
        assert_eq!(m.stats(secs(0)), WindowStats::default());
    }

    #[test]
    fn stale_tickets_are_not_recorded() {
        let mut m = Machine::new(count_settings(2, 2));
        let slow_call = admit(&mut m, secs(0));
        run(&mut m, secs(0), true);
        run(&mut m, secs(0), true);
        let p = admit(&mut m, secs(10));
        // The old Closed-generation call finishing in half-open changes nothing.
        assert_eq!(m.complete(slow_call, true, false, &mut || secs(10)), None);
        assert_eq!(m.state(), State::HalfOpen);
        assert_eq!(
            m.complete(p, false, false, &mut || secs(10)).map(|t| t.to),
            Some(State::Closed)
        );
    }

    #[test]
    fn packing_round_trips() {
        let mut m = Machine::new(count_settings(1, 1));
        run(&mut m, secs(0), true);
        let (s, g) = Machine::unpack(m.packed());
        assert_eq!((s, g), (State::Open, 1));
        // The clean flag does not leak into the state.
        let mut m = Machine::new(count_settings(2, 1));
        run(&mut m, secs(0), false);
        assert!(!m.clean(), "not full yet");
        run(&mut m, secs(0), false);
        assert!(m.clean());
        assert_eq!(Machine::unpack(m.packed()), (State::Closed, 0));
        assert!(Machine::success_is_noop(m.packed(), 0));
        assert!(
            !Machine::success_is_noop(m.packed(), 1),
            "another generation"
        );
        run(&mut m, secs(0), true);
        assert!(!m.clean() && !Machine::success_is_noop(m.packed(), 0));
    }
}

/// Property test: a closed machine over a count window trips at exactly the first call
/// where a naive recomputation over the last `size` outcomes meets the rule.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// One step of a random run: an outcome (failed, slow) or a manual state change.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Outcome(bool, bool),
        Advance(u64),
        Set(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (proptest::bool::weighted(0.25), proptest::bool::weighted(0.1)).prop_map(|(f, s)| Step::Outcome(f, s)),
            1 => (0u64..20).prop_map(Step::Advance),
            1 => (0u8..6).prop_map(Step::Set),
        ]
    }

    /// Runs `step` on `m` at `*now`; what it changed, as an observable trace.
    fn apply(m: &mut Machine, now: &mut Duration, step: Step) -> String {
        match step {
            Step::Outcome(failed, slow) => match m.acquire(*now) {
                (Admit::Yes(t), tr) => {
                    let done = m.complete(t, failed, slow, &mut || *now);
                    format!("{tr:?} {done:?} {:?}", m.stats(*now))
                }
                (no, tr) => format!("{tr:?} {no:?}"),
            },
            Step::Advance(secs) => {
                *now += Duration::from_secs(secs);
                format!("{:?}", m.tick(*now))
            }
            Step::Set(to) => format!("{:?}", m.set(State::from_u8(to), *now)),
        }
    }

    proptest! {
        /// The lock-free fast path is exact: whenever the mirror says a fast success is a
        /// no-op, a machine that records it and one that skips it behave the same from then
        /// on, whatever follows.
        #[test]
        fn skipping_a_clean_success_changes_nothing(
            count in proptest::bool::ANY,
            size in 1usize..12,
            min in 1u64..12,
            prefix in proptest::collection::vec(step(), 0..80),
            suffix in proptest::collection::vec(step(), 0..80),
        ) {
            let model = if count { FailureModel::count(size) } else { FailureModel::consecutive(size as u64) };
            let mut m = Machine::new(Settings {
                model,
                minimum_calls: min,
                failure_rate: 0.5,
                slow_call: Some((Duration::from_secs(1), 0.5)),
                open_duration: Duration::from_secs(10),
                max_half_open: None,
                ..Settings::default()
            });
            let mut now = Duration::ZERO;
            for s in prefix {
                apply(&mut m, &mut now, s);
                if Machine::success_is_noop(m.packed(), Machine::unpack(m.packed()).1) {
                    let (mut recorded, mut skipped) = (m.clone(), m.clone());
                    let Admit::Yes(t) = recorded.acquire(now).0 else {
                        prop_assert!(false, "a clean machine admits");
                        unreachable!()
                    };
                    prop_assert_eq!(recorded.complete(t, false, false, &mut || now), None);
                    prop_assert_eq!(recorded.packed(), skipped.packed());
                    let (mut n1, mut n2) = (now, now);
                    for s in &suffix {
                        prop_assert_eq!(apply(&mut recorded, &mut n1, *s), apply(&mut skipped, &mut n2, *s));
                        prop_assert_eq!(recorded.packed(), skipped.packed());
                    }
                }
            }
        }

        #[test]
        fn trips_exactly_when_the_reference_says(
            size in 1usize..30,
            min in 1u64..30,
            rate_pct in 1u32..=100,
            outcomes in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let rate = f64::from(rate_pct) / 100.0;
            let mut m = Machine::new(Settings {
                model: FailureModel::count(size),
                minimum_calls: min,
                failure_rate: rate,
                ..Settings::default()
            });
            for (i, &failed) in outcomes.iter().enumerate() {
                let Admit::Yes(t) = m.acquire(Duration::ZERO).0 else {
                    prop_assert!(false, "closed machine rejected");
                    unreachable!()
                };
                let tripped = m.complete(t, failed, false, &mut || Duration::ZERO).is_some();
                let last = &outcomes[(i + 1).saturating_sub(size)..=i];
                let calls = last.len() as u64;
                let failures = last.iter().filter(|f| **f).count() as u64;
                let expect = calls >= min && failures as f64 >= rate * calls as f64;
                prop_assert_eq!(tripped, expect, "at call {}", i);
                if tripped {
                    break;
                }
            }
        }
    }
}
