//! The shared half of a breaker: the machine behind a short mutex, a lock-free mirror of
//! its state for the fast path, and the observation hooks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use palisade_core::observe::{Counter, Gauge};
use palisade_core::stripe::Lane;
use tokio::time::Instant;

use crate::config::Settings;
use crate::machine::{Admit, Machine, State, Ticket, Transition};

pub(crate) type OnTransition = Arc<dyn Fn(&Transition) + Send + Sync>;

/// What every breaker built from one configuration shares (per-key breakers build one
/// `Core` per key from the same template).
#[derive(Clone)]
pub(crate) struct Template {
    pub(crate) settings: Settings,
    pub(crate) name: Arc<str>,
    pub(crate) not_ready_when_open: bool,
    pub(crate) on_transition: Option<OnTransition>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("settings", &self.settings)
            .field("name", &self.name)
            .field("not_ready_when_open", &self.not_ready_when_open)
            .field("on_transition", &self.on_transition.is_some())
            .finish()
    }
}

/// One breaker's state, shared by the layer, its services, their clones and the handle.
pub(crate) struct Core {
    // The machine's state and generation, republished under the lock after every change,
    // so that Closed / Disabled / MetricsOnly admit with one atomic load and no lock.
    mirror: AtomicU64,
    // When Open: `open_until` in nanoseconds since `origin`, published with the mirror, so
    // rejections while open need no lock either.
    open_until: AtomicU64,
    machine: Mutex<Machine>,
    // Tasks parked in a not-ready `poll_ready`, woken on every state change (and when a
    // probe slot is handed back), not only by their timers.
    parked: Mutex<Vec<Waker>>,
    origin: Instant,
    pub(crate) slow_after: Option<Duration>,
    pub(crate) not_ready_when_open: bool,
    name: Arc<str>,
    on_transition: Option<OnTransition>,
    state_gauge: Gauge,
    admitted: Counter,
    rejected: Counter,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (state, generation) = Machine::unpack(self.mirror.load(Ordering::Relaxed));
        f.debug_struct("Core")
            .field("name", &self.name)
            .field("state", &state)
            .field("generation", &generation)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The instance name (for metrics and tracing).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn new(t: &Template) -> Self {
        let machine = Machine::new(t.settings.clone());
        let policy = "circuit_breaker";
        let state_gauge = Gauge::register("palisade_state", policy, &t.name, &[]);
        state_gauge.set(0.0);
        Self {
            mirror: AtomicU64::new(machine.packed()),
            open_until: AtomicU64::new(0),
            machine: Mutex::new(machine),
            parked: Mutex::new(Vec::new()),
            origin: Instant::now(),
            slow_after: t.settings.slow_call.map(|(d, _)| d),
            not_ready_when_open: t.not_ready_when_open,
            name: t.name.clone(),
            on_transition: t.on_transition.clone(),
            state_gauge,
            admitted: Counter::register(
                "palisade_decisions_total",
                policy,
                &t.name,
                &[("decision", "admitted")],
            ),
            rejected: Counter::register(
                "palisade_decisions_total",
                policy,
                &t.name,
                &[("decision", "rejected")],
            ),
        }
    }

    /// The state as last published (no lock; time-driven changes not applied yet).
    pub(crate) fn published_state(&self) -> State {
        Machine::unpack(self.mirror.load(Ordering::Acquire)).0
    }

    /// Time since this breaker was built, on tokio's clock.
    pub(crate) fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // The machine is never left half-updated by a panic (no user code runs under the
        // lock), so a poisoned lock is still consistent.
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May one call pass? `Err(retry_after)` if not.
    #[inline]
    pub(crate) fn acquire(&self) -> Result<Ticket, Option<Duration>> {
        let (state, generation) = Machine::unpack(self.mirror.load(Ordering::Acquire));
        if state.admits_all() {
            self.admitted.increment(1);
            return Ok(Ticket {
                generation,
                probe: false,
                record: state != State::Disabled,
            });
        }
        match state {
            // Forced open never admits: no clock, no lock.
            State::ForcedOpen => return self.reject(None),
            State::Open => {
                // Still inside the open duration: reject without the lock. `open_until` is
                // stored before the mirror (Release) and read after it (Acquire), so it
                // belongs to this Open generation or a later one; a stale read only sends
                // the call to the slow path, which decides under the lock.
                let until = Duration::from_nanos(self.open_until.load(Ordering::Acquire));
                let now = self.now();
                if now < until {
                    return self.reject(Some(until - now));
                }
            }
            _ => {}
        }
        self.acquire_slow()
    }

    fn reject(&self, retry_after: Option<Duration>) -> Result<Ticket, Option<Duration>> {
        self.rejected.increment(1);
        tracing::trace!(target: "palisade::breaker", name = %self.name, ?retry_after, "call rejected: circuit open");
        Err(retry_after)
    }

    #[cold]
    fn acquire_slow(&self) -> Result<Ticket, Option<Duration>> {
        let now = self.now();
        let (admit, transition) = {
            let mut m = self.lock();
            let r = m.acquire(now);
            self.publish(&m);
            r
        };
        self.observe(transition);
        match admit {
            Admit::Yes(t) => {
                self.admitted.increment(1);
                Ok(t)
            }
            Admit::No { retry_after } => self.reject(retry_after),
        }
    }

    /// Records a finished call admitted with `ticket`.
    pub(crate) fn complete(&self, ticket: Ticket, failed: bool, elapsed: Option<Duration>) {
        if !ticket.record {
            return;
        }
        let slow = matches!((self.slow_after, elapsed), (Some(s), Some(e)) if e > s);
        // The closed path without the lock: a fast success recorded into a window that it
        // cannot change (full of fast successes, same generation) is skipped. This is
        // exact, not an approximation (`Machine::clean`); it linearizes before whatever
        // change next clears the flag, which is published under the lock.
        if !failed
            && !slow
            && Machine::success_is_noop(self.mirror.load(Ordering::Acquire), ticket.generation)
        {
            return;
        }
        let transition = {
            let mut m = self.lock();
            let t = m.complete(ticket, failed, slow, &mut || self.now());
            // A transition, or the window turning clean or not, changes the mirror.
            if t.is_some() || m.packed() != self.mirror.load(Ordering::Relaxed) {
                self.publish(&m);
            }
            t
        };
        self.observe(transition);
    }

    /// A call admitted with `ticket` will not be recorded (dropped, or ignored).
    pub(crate) fn cancel(&self, ticket: Ticket) {
        if ticket.probe {
            self.lock().cancel(ticket);
            // A probe slot is free again: a parked caller may take it.
            self.unpark();
        }
    }

    /// Parks `waker` until the next state change. The caller must check the state again
    /// *after* parking: a change published between its first check and this call has
    /// already woken everyone parked, but that check sees it.
    pub(crate) fn park(&self, waker: &Waker) {
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        if !parked.iter().any(|w| w.will_wake(waker)) {
            parked.push(waker.clone());
        }
    }

    /// Wakes every parked task (after the new state is published).
    fn unpark(&self) {
        let wakers =
            std::mem::take(&mut *self.parked.lock().unwrap_or_else(PoisonError::into_inner));
        for w in wakers {
            w.wake();
        }
    }

    /// Runs `f` on the machine at the current time, then publishes and observes.
    pub(crate) fn with_machine<R>(
        &self,
        f: impl FnOnce(&mut Machine, Duration) -> (R, Option<Transition>),
    ) -> R {
        let now = self.now();
        let (r, t) = {
            let mut m = self.lock();
            let r = f(&mut m, now);
            self.publish(&m);
            r
        };
        self.observe(t);
        r
    }

    fn publish(&self, m: &Machine) {
        let until = u64::try_from(m.open_until().as_nanos()).unwrap_or(u64::MAX);
        self.open_until.store(until, Ordering::Release);
        self.mirror.store(m.packed(), Ordering::Release);
    }

    /// Tracing, metrics and the callback, outside the lock.
    fn observe(&self, t: Option<Transition>) {
        let Some(t) = t else { return };
        // The new state is published (under the machine's lock, before this): wake the
        // callers parked in `poll_ready` so they see it.
        self.unpark();
        let (from, to) = (t.from.as_str(), t.to.as_str());
        match t.to {
            State::Open | State::ForcedOpen => tracing::warn!(
                target: "palisade::breaker", name = %self.name, from, to, open_for = ?t.open_for,
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                target: "palisade::breaker", name = %self.name, from, to,
                "circuit breaker transition"
            ),
        }
        self.state_gauge.set(f64::from(t.to as u8));
        // Registered here rather than at build time: transitions are rare, and this avoids
        // 36 from × to handles per breaker.
        Counter::register(
            "palisade_transitions_total",
            "circuit_breaker",
            &self.name,
            &[("from", from), ("to", to)],
        )
        .increment(1);
        if let Some(cb) = &self.on_transition {
            cb(&t);
        }
    }
}

/// An admitted call's ticket, tied to the breaker: dropping it unrecorded gives a probe
/// slot back.
pub(crate) struct Guard {
    // `None` once the outcome is handed over (the drop then has nothing to give back). The
    // admitting thread's lane, so the reference it counts is that stripe's alone.
    core: Option<Lane<Core>>,
    ticket: Ticket,
    start: Option<Instant>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub(crate) fn new(core: Lane<Core>, ticket: Ticket) -> Self {
        Self {
            core: Some(core),
            ticket,
            start: None,
        }
    }

    /// Whether this admission is a half-open probe (a scarce slot).
    pub(crate) fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    /// Starts the call's clock (only if slow calls are measured).
    pub(crate) fn start(&mut self) {
        let measured = self.core.as_ref().is_some_and(|c| c.slow_after.is_some());
        if measured && self.ticket.record {
            self.start = Some(Instant::now());
        }
    }

    /// Records the outcome: `Some(failed)`, or `None` for an ignored outcome.
    pub(crate) fn finish(mut self, failed: Option<bool>) {
        // Taken, so the drop that follows does nothing.
        let Some(core) = self.core.take() else { return };
        match failed {
            Some(failed) => {
                let elapsed = self.start.map(|s| s.elapsed());
                core.complete(self.ticket, failed, elapsed);
            }
            None => core.cancel(self.ticket),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A call dropped before completing is not recorded (no outcome is known); only
        // a probe's slot is handed back. Never panics: `cancel` only takes the lock.
        if let Some(core) = &self.core {
            core.cancel(self.ticket);
        }
    }
}
