//! The state one limit shares across every service and clone: a FIFO semaphore, the target
//! limit, and the bookkeeping that lets the limit shrink without revoking calls in flight.
//!
//! # Invariant
//!
//! `held + available - debt == limit`, where `held` is the permits out in [`Permit`]s,
//! `available` the semaphore's free permits, and `debt` the permits to retire as they come
//! back after a shrink. Growing pays debt off first, then adds permits; shrinking forgets
//! free permits first, then books the rest as debt. A returning [`Permit`] pays one unit of
//! debt if there is any, and otherwise goes back to the semaphore.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::semaphore::{Enqueued, FastSemaphore, Waiter};
use crate::criticality::Criticality;
use palisade_core::observe::{Counter, Gauge, Histogram};
use palisade_core::stripe::{self, Lane, Lanes, PickLane};

use super::layer::InvalidConcurrencyLimit;

pub(crate) struct Shared {
    semaphore: FastSemaphore,
    /// The target limit.
    limit: AtomicUsize,
    /// Permits to retire on return (see the module's invariant).
    debt: AtomicUsize,
    /// Calls waiting for a permit now (in `poll_ready` or in the queue).
    queued: AtomicUsize,
    /// Serialises resizes (never taken on the call path).
    resize: Mutex<()>,
    pub(crate) name: Arc<str>,
    pub(crate) rejected: Counter,
    pub(crate) timed_out: Counter,
    /// By-class limits only: waiters evicted by a higher class, and newcomers shed.
    evicted: Counter,
    shed: Counter,
    limit_gauge: Gauge,
    /// `palisade_in_flight`, `palisade_queued`, `palisade_queue_wait_seconds` (no-ops
    /// without the `metrics` feature).
    in_flight_gauge: Gauge,
    queued_gauge: Gauge,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    queue_wait: Histogram,
}

/// How the services of one limit hold it: the shared state behind one [`Lane`] per stripe,
/// so the permits of calls on different cores count references on different cache lines
/// (see [`palisade_core::stripe`]).
pub(crate) type SharedLanes = Lanes<Shared>;

impl Shared {
    /// A limit whose waiters are served first come first served, shared by every thread
    /// (striped over the machine's cores).
    pub(crate) fn new(limit: usize, name: Arc<str>) -> SharedLanes {
        Lanes::new(
            Self::with(FastSemaphore::new(limit), limit, name),
            stripe::stripes(),
        )
    }

    /// A limit whose waiters are served by [`Criticality`] (see [`Shared::enqueue_class`]).
    pub(crate) fn by_class(limit: usize, name: Arc<str>) -> SharedLanes {
        Lanes::new(Self::by_class_state(limit, name, None), stripe::stripes())
    }

    /// One key's limit: one stripe and one lone lane (per-key state is many and small; a
    /// key hot on many cores at once is the rare case).
    pub(crate) fn for_key(limit: usize, name: Arc<str>, by_class: bool) -> Lane<Self> {
        let state = if by_class {
            Self::by_class_state(limit, name, Some(1))
        } else {
            Self::with(FastSemaphore::striped(limit, 1), limit, name)
        };
        Lane::new(state)
    }

    fn by_class_state(limit: usize, name: Arc<str>, stripes: Option<usize>) -> Self {
        let decision = |d| {
            Counter::register(
                "palisade_decisions_total",
                "concurrency_limit",
                &name,
                &[("decision", d)],
            )
        };
        let semaphore = match stripes {
            Some(n) => FastSemaphore::by_class_striped(limit, n),
            None => FastSemaphore::by_class(limit),
        };
        Self {
            evicted: decision("evicted"),
            shed: decision("shed"),
            ..Self::with(semaphore, limit, Arc::clone(&name))
        }
    }

    fn with(semaphore: FastSemaphore, limit: usize, name: Arc<str>) -> Self {
        let limit_gauge = Gauge::register("palisade_limit", "concurrency_limit", &name, &[]);
        limit_gauge.set(limit as f64);
        Self {
            semaphore,
            limit: AtomicUsize::new(limit),
            debt: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            resize: Mutex::new(()),
            rejected: Counter::register(
                "palisade_decisions_total",
                "concurrency_limit",
                &name,
                &[("decision", "rejected")],
            ),
            timed_out: Counter::register(
                "palisade_decisions_total",
                "concurrency_limit",
                &name,
                &[("decision", "timed_out")],
            ),
            evicted: Counter::noop(),
            shed: Counter::noop(),
            limit_gauge,
            in_flight_gauge: Gauge::register("palisade_in_flight", "concurrency_limit", &name, &[]),
            queued_gauge: Gauge::register("palisade_queued", "concurrency_limit", &name, &[]),
            queue_wait: Histogram::register(
                "palisade_queue_wait_seconds",
                "concurrency_limit",
                &name,
                &[],
            ),
            name,
        }
    }

    /// Takes a permit if one is free, without waiting and without allocating.
    #[inline]
    pub(crate) fn try_acquire(lanes: &impl PickLane<Self>) -> Option<Permit> {
        // One stripe for both: the semaphore's counter and the lane the permit holds.
        let home = stripe::index();
        if !lanes.semaphore.try_acquire_at(home) {
            return None;
        }
        Some(Self::permit(lanes.lane_at(home).clone()))
    }

    /// Wraps a unit of the limit this call now holds.
    fn permit(shared: Lane<Self>) -> Permit {
        // The permit's lifetime is tracked by `Permit` from here on (see its Drop).
        shared.in_flight_gauge.increment(1.0);
        Permit { shared }
    }

    /// Counts and traces a call the limit turned away at once: `rejected` (FIFO), or `shed`
    /// (by class).
    pub(crate) fn turned_away(&self, class: Option<Criticality>) {
        match class {
            None => {
                self.rejected.increment(1);
                tracing::debug!(target: "palisade::limit", name = %self.name, "concurrency limit full: rejected");
            }
            Some(class) => {
                self.shed.increment(1);
                tracing::debug!(target: "palisade::limit", name = %self.name, ?class, "concurrency limit full: shed");
            }
        }
    }

    /// A by-class limit: a permit if one is free, else a place in `class`'s queue (at most
    /// `max_queued` wait in all; a full queue evicts the newest waiter of a lower class,
    /// which then fails), or `None`: the queue is full of this class or higher.
    pub(crate) fn enqueue_class(
        lanes: &impl PickLane<Self>,
        class: Criticality,
        max_queued: usize,
    ) -> Option<Place> {
        let this = &**lanes;
        match this.semaphore.enqueue(class as usize, max_queued) {
            Enqueued::Admitted => Some(Place::Admitted(Self::permit(
                lanes.lane_at(stripe::index()).clone(),
            ))),
            Enqueued::Full => None,
            Enqueued::Queued { waiter, evicted } => {
                if evicted {
                    this.evicted.increment(1);
                    tracing::debug!(target: "palisade::limit", name = %this.name, ?class, "concurrency limit full: evicted a lower-criticality waiter");
                }
                this.queued_gauge.increment(1.0);
                Some(Place::ByClass(ClassSlot {
                    shared: lanes.lane_at(stripe::index()).clone(),
                    waiter,
                    holds_permit: false,
                }))
            }
        }
    }

    /// Claims a place among the waiters: always if `max_queued` is `None`, else only if
    /// fewer than `max_queued` wait now. The place is held until the slot is dropped.
    pub(crate) fn enqueue(
        lanes: &impl PickLane<Self>,
        max_queued: Option<usize>,
    ) -> Option<QueueSlot> {
        let this = &**lanes;
        let claimed = match max_queued {
            None => {
                this.queued.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(max) => this
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                    (q < max).then_some(q + 1)
                })
                .is_ok(),
        };
        claimed.then(|| {
            this.queued_gauge.increment(1.0);
            QueueSlot {
                shared: lanes.lane_at(stripe::index()).clone(),
            }
        })
    }

    /// Waits in `slot` for a permit, first come first served; at most `max_wait` if given.
    ///
    /// Returns a boxed future: this is the contended path of the queue mode, where each
    /// waiting call owns its wait. The slot (and so the queued count) lives exactly as long
    /// as the wait.
    pub(crate) fn acquire(place: impl Into<Place>, max_wait: Option<Duration>) -> Acquire {
        match place.into() {
            Place::Admitted(permit) => Box::pin(std::future::ready(Ok(permit))),
            Place::Fifo(slot) => Box::pin(async move {
                Self::wait_for(slot, max_wait)
                    .await
                    .ok_or(Refused::TimedOut)
            }),
            Place::ByClass(slot) => Box::pin(Self::wait_class(slot, max_wait)),
        }
    }

    /// Waits in a class queue for a permit: granted, evicted, or out of time.
    async fn wait_class(
        mut slot: ClassSlot,
        max_wait: Option<Duration>,
    ) -> Result<Permit, Refused> {
        let shared = slot.shared.clone();
        #[cfg(feature = "metrics")]
        let waited_from = tokio::time::Instant::now();
        let settled = {
            let waiter = &slot.waiter;
            let granted = poll_fn(|cx| shared.semaphore.poll_class(waiter, cx));
            match max_wait {
                Some(wait) => tokio::time::timeout(wait, granted).await.ok(),
                None => Some(granted.await),
            }
        };
        #[cfg(feature = "metrics")]
        shared
            .queue_wait
            .record(waited_from.elapsed().as_secs_f64());
        let granted = match settled {
            Some(granted) => granted,
            // Out of time: leave the queue, unless a permit came at the last moment.
            None => shared.semaphore.leave(&slot.waiter),
        };
        if granted {
            // The permit is ours now: the slot must not give it back when it drops.
            slot.holds_permit = true;
            drop(slot);
            return Ok(Self::permit(shared));
        }
        Err(if settled.is_some() {
            Refused::Evicted
        } else {
            Refused::TimedOut
        })
    }

    /// The wait of [`Shared::acquire`], unboxed, for a caller that keeps one allocation
    /// for all its waits (the wait mode's [`ReusableBoxFuture`](tokio_util::sync::ReusableBoxFuture)).
    pub(crate) async fn wait_for(slot: QueueSlot, max_wait: Option<Duration>) -> Option<Permit> {
        let shared = slot.shared.clone();
        // The wait is timed only when metrics are on: no clock read otherwise.
        #[cfg(feature = "metrics")]
        let waited_from = tokio::time::Instant::now();
        let acquired = match max_wait {
            Some(wait) => tokio::time::timeout(wait, shared.semaphore.acquire())
                .await
                .is_ok(),
            None => {
                shared.semaphore.acquire().await;
                true
            }
        };
        drop(slot);
        #[cfg(feature = "metrics")]
        shared
            .queue_wait
            .record(waited_from.elapsed().as_secs_f64());
        // Not `then_some`: that would build (and drop, releasing) a Permit on timeout.
        if acquired {
            shared.in_flight_gauge.increment(1.0);
            Some(Permit { shared })
        } else {
            None
        }
    }

    fn release(&self) {
        // Pay one unit of debt if a shrink left any; otherwise the permit goes back.
        let paid = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if !paid {
            self.semaphore.release(1);
        }
    }

    fn set_limit(&self, new: usize) -> Result<(), InvalidConcurrencyLimit> {
        InvalidConcurrencyLimit::check_limit(new)?;
        let _resizing = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.limit.swap(new, Ordering::AcqRel);
        if new > old {
            // Growing: pay off debt first (those permits are out and now may stay out),
            // then hand out fresh permits, which wakes waiters in order.
            let grow = new - old;
            let mut paid = 0;
            let _ = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    paid = d.min(grow);
                    Some(d - paid)
                });
            if grow > paid {
                self.semaphore.release(grow - paid);
            }
        } else if new < old {
            // Shrinking: retire free permits now, book the rest as debt paid on return.
            let shrink = old - new;
            let forgotten = self.semaphore.forget(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
            // A permit returned between the two steps went back to the semaphore instead
            // of paying debt; retire it now so the new limit holds for new calls at once.
            self.settle_debt();
        }
        self.limit_gauge.set(new as f64);
        tracing::info!(target: "palisade::limit", name = %self.name, old, new, "concurrency limit resized");
        Ok(())
    }

    /// Converts free permits into paid debt while both exist.
    fn settle_debt(&self) {
        let debt = self.debt.load(Ordering::Acquire);
        if debt == 0 {
            return;
        }
        let forgotten = self.semaphore.forget(debt);
        let mut excess = 0;
        let _ = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                excess = forgotten.saturating_sub(d);
                Some(d.saturating_sub(forgotten))
            });
        // Returns paid some of that debt meanwhile: give back what was over-retired.
        if excess > 0 {
            self.semaphore.release(excess);
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        let limit = self.limit.load(Ordering::Acquire);
        let debt = self.debt.load(Ordering::Acquire);
        (limit + debt).saturating_sub(self.semaphore.available())
    }
}

impl Shared {
    /// Calls waiting for a permit now.
    pub(crate) fn queued_now(&self) -> usize {
        self.queued.load(Ordering::Acquire) + self.semaphore.class_queued()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

/// One unit of the limit, held by a call in flight (opaque: it lives in the response
/// future). Dropping it releases the unit.
pub struct Permit {
    /// This call's stripe's lane: dropping the permit counts down that lane's reference,
    /// not one every core shares.
    shared: Lane<Shared>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.in_flight_gauge.decrement(1.0);
        self.shared.release();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

/// A boxed wait for a permit (the contended path of queue mode).
pub(crate) type Acquire =
    Pin<Box<dyn Future<Output = Result<Permit, Refused>> + Send + Sync + 'static>>;

/// Why a wait for a permit ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The wait (capped by the deadline) ran out.
    TimedOut,
    /// A higher-criticality newcomer took the place (by-class limits).
    Evicted,
}

/// Where a call that may wait stands: admitted at once, or waiting in a queue.
pub(crate) enum Place {
    Admitted(Permit),
    Fifo(QueueSlot),
    ByClass(ClassSlot),
}

impl From<QueueSlot> for Place {
    fn from(slot: QueueSlot) -> Self {
        Self::Fifo(slot)
    }
}

/// A place in a class queue. Dropped while waiting, it leaves the queue, and gives back a
/// permit granted meanwhile that nobody took.
pub(crate) struct ClassSlot {
    shared: Lane<Shared>,
    waiter: Arc<Waiter>,
    /// Set once the wait has turned the grant into a [`Permit`].
    holds_permit: bool,
}

impl Drop for ClassSlot {
    fn drop(&mut self) {
        self.shared.queued_gauge.decrement(1.0);
        if !self.holds_permit && self.shared.semaphore.leave(&self.waiter) {
            // Granted, never used: pass it on (or pay a shrink's debt), as a Permit would.
            self.shared.release();
        }
    }
}

/// Counts a waiter as queued for exactly as long as it lives, however its wait ends.
pub(crate) struct QueueSlot {
    shared: Lane<Shared>,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.shared.queued_gauge.decrement(1.0);
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A handle on one limit: read its live state, change it at run time.
///
/// Cheap to clone; every clone refers to the same limit as the layer it came from.
#[derive(Clone, Debug)]
pub struct LimitHandle {
    pub(crate) shared: SharedLanes,
}

impl LimitHandle {
    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Acquire)
    }

    /// Changes the limit. Growing admits waiters at once, in order; shrinking never revokes
    /// calls in flight, it retires their permits as they return.
    ///
    /// # Errors
    ///
    /// [`InvalidConcurrencyLimit`] if `limit` is 0 or larger than the semaphore can hold.
    pub fn set_limit(&self, limit: usize) -> Result<(), InvalidConcurrencyLimit> {
        self.shared.set_limit(limit)
    }

    /// Permits held now: by calls in flight, and by services that reserved one in
    /// `poll_ready` for their next call.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Calls waiting for a permit now.
    pub fn queued(&self) -> usize {
        self.shared.queued_now()
    }

    /// Calls of `class` waiting now (always 0 unless the queue serves
    /// [by criticality](crate::concurrency::ConcurrencyLimitBuilder::criticality)).
    pub fn queued_by(&self, class: Criticality) -> usize {
        self.shared.semaphore.queued_in(class as usize)
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.shared.semaphore.available()
    }
}
