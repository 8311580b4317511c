//! The calls in flight of one inner future type: a table of slots, one per shared call,
//! each driven by whichever of its waiters polls.
//!
//! A [`Flights`] table is keyed by the key's hash (computed once per request and kept by
//! its waiter, so no later step hashes again). A slot holds the key, the call (the inner
//! future, boxed: it must stay pinned while shared), the waiters' count and their wakers.
//! The slot *is* the map entry: there is no separate shared state per call, and the box
//! of a finished call is kept (emptied) for the next one, so a request with no duplicate
//! in flight allocates nothing once the table has warmed up.
//!
//! A waiter that polls takes the future out under the table lock, polls it unlocked, and
//! puts it back. A lone waiter polls with its own waker; with company, the slot's
//! [`Fanout`] waker is used, which wakes every waiter. A waiter that finds the future
//! taken (another is polling it now) registers its waker and waits. When the future
//! completes its output is stored, every other waiter is woken, and each takes a clone
//! (the last takes the value itself).
//!
//! A slot is *running* until its call completes (or is lost to a panic); only running
//! slots are found by new requests and counted as keys in flight. A retired slot stays
//! until its last waiter took its share, so a new call for the same key may run beside it
//! (each waiter finds its own slot by its id).
//!
//! # Release paths
//!
//! - completion or error: the output replaces the future, which is dropped at once
//!   (outside the lock);
//! - every waiter gone: the last to leave removes the slot and drops the future. This must
//!   be explicit: the future's own registrations (timers, sockets) may hold the fan-out
//!   waker, so waiting for the last reference would leak a stalled call;
//! - a waiter leaving while others wait: it forgets its waker and wakes the others, since
//!   the wake it may have taken was meant to drive the call.
//!
//! Wakers are never called under the table lock (a waker may be another slot's fan-out,
//! when a call waits on a call of the same layer); the fan-out wakes under its own lock
//! only, which no table code takes while waking.

use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use hashbrown::HashTable;
use palisade_core::keyed::KeyHasher;
use palisade_core::BoxError;

use crate::error::CoalescedError;
use crate::registry::Stats;

/// The inner future's home: boxed so it stays pinned while it moves between waiters, and
/// an `Option` so the box outlives the future and is reused by the next call.
pub(crate) type CallBox<F> = Pin<Box<Option<F>>>;

/// Emptied boxes kept for reuse, at most (and at most `max_keys`).
const SPARE_BOXES: usize = 64;

/// Where a waiter's slot is: its key's hash, the call's id and the waiter's place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    hash: u64,
    id: u64,
    place: usize,
}

/// What a keyed request does.
pub(crate) enum Lookup<F> {
    /// Join the call in flight.
    Join(Ticket),
    /// No call in flight for the key: lead this new one, in this (empty) box.
    Lead(Ticket, CallBox<F>),
    /// Over the key bound: call uncoalesced.
    Bypass,
}

/// The layer's share rule, for a table whose layer has one
/// ([`share_if`](crate::CoalesceBuilder::share_if)).
pub(crate) type ShareFn<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// Where a slot's call is.
enum Call<F, T> {
    /// Running; `None` while a waiter has it out to poll (the leader, from the call until
    /// its first poll).
    Running(Option<CallBox<F>>),
    /// Completed: each waiter gets a clone of the value or the shared error.
    Done(Result<T, Arc<BoxError>>),
    /// Completed with a value the share rule refused: it is kept for the leader (`Some`,
    /// while the leader waits), and every other waiter makes its own call.
    Refused(Option<T>),
    /// Lost: polling it panicked, or its leader's call to the inner service did.
    Gone,
}

/// The wakers of a slot's waiters: inline while the leader is alone, shared once a
/// follower joins (the contended path may allocate; the lone one does not).
enum Wakers {
    Lone(Option<Waker>),
    Shared(Arc<Fanout>),
}

/// Wakers to call once the table lock is released.
#[must_use]
enum Wakeup {
    None,
    One(Waker),
    All(Arc<Fanout>, Option<usize>),
}

impl Wakeup {
    fn run(self) {
        match self {
            Self::None => {}
            Self::One(w) => w.wake(),
            Self::All(fanout, except) => fanout.wake_all(except),
        }
    }
}

struct Slot<K, F, T> {
    hash: u64,
    id: u64,
    key: K,
    call: Call<F, T>,
    /// Waiters attached and not yet served: the last one served moves the value out.
    waiters: usize,
    /// Places handed out so far (the leader is place 0), for the waiters histogram.
    attached: usize,
    /// Whether the leader (place 0) still waits: a refused value is kept for it.
    leader_waits: bool,
    wakers: Wakers,
}

impl<K, F, T> Slot<K, F, T> {
    fn running(&self) -> bool {
        matches!(self.call, Call::Running(_))
    }

    fn register(&mut self, place: usize, waker: &Waker) {
        match &mut self.wakers {
            Wakers::Lone(cell) => match cell {
                Some(w) if w.will_wake(waker) => {}
                _ => *cell = Some(waker.clone()),
            },
            Wakers::Shared(fanout) => fanout.register(place, waker),
        }
    }

    fn forget(&mut self, place: usize) {
        match &mut self.wakers {
            Wakers::Lone(cell) => *cell = None,
            Wakers::Shared(fanout) => fanout.forget(place),
        }
    }

    /// Every registered waiter but `except` is to be woken; each re-registers when it
    /// polls.
    fn wake_all(&mut self, except: Option<usize>) -> Wakeup {
        match &mut self.wakers {
            Wakers::Lone(cell) if except != Some(0) => {
                cell.take().map_or(Wakeup::None, Wakeup::One)
            }
            Wakers::Lone(_) => Wakeup::None,
            Wakers::Shared(fanout) => Wakeup::All(Arc::clone(fanout), except),
        }
    }

    /// The call completed or was lost: new requests no longer find it.
    fn retire(&mut self, stats: &Stats, in_flight: &mut usize) {
        *in_flight = in_flight.saturating_sub(1);
        stats.keys_gauge.set(*in_flight as f64);
        stats.waiters_histogram.record(self.attached as f64);
    }

    /// One waiter's share of the output: a clone, or the value itself for the last.
    fn take(&mut self, place: usize) -> Result<T, BoxError>
    where
        T: Clone,
    {
        self.waiters = self.waiters.saturating_sub(1);
        if place == 0 {
            self.leader_waits = false;
        }
        if let Call::Refused(kept) = &mut self.call {
            // Kept for the leader only; every other waiter makes its own call.
            return match kept.take_if(|_| place == 0) {
                Some(v) => Ok(v),
                None => Err(Box::new(Unshared { _priv: () })),
            };
        }
        match &self.call {
            Call::Done(Ok(v)) if self.waiters > 0 => Ok(v.clone()),
            Call::Done(Err(e)) => Err(CoalescedError::shared(Arc::clone(e))),
            Call::Done(Ok(_)) => match std::mem::replace(&mut self.call, Call::Gone) {
                Call::Done(Ok(v)) => Ok(v),
                _ => Err(CoalescedError::cancelled()),
            },
            Call::Running(_) | Call::Gone | Call::Refused(_) => Err(CoalescedError::cancelled()),
        }
    }
}

/// A waiter's answer when the share rule refused the shared value: it makes its own call.
#[derive(Debug)]
pub(crate) struct Unshared {
    _priv: (),
}

impl std::fmt::Display for Unshared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the shared response was not shareable")
    }
}

impl std::error::Error for Unshared {}

struct Table<K, F, T> {
    slots: HashTable<Slot<K, F, T>>,
    /// Running slots: the keys in flight.
    in_flight: usize,
    next_id: u64,
    led: u64,
    joined: u64,
    unshared: u64,
    spare: Vec<CallBox<F>>,
}

/// `ticket`'s slot, found by its hash and id (no key compared, no hashing).
fn find<'a, K, F, T>(
    slots: &'a mut HashTable<Slot<K, F, T>>,
    ticket: &Ticket,
) -> Option<&'a mut Slot<K, F, T>> {
    slots.find_mut(ticket.hash, |s| s.id == ticket.id)
}

impl<K, F, T> Table<K, F, T> {
    /// Removes `ticket`'s slot (its last waiter is done with it); what it held is
    /// returned to be dropped outside the lock.
    fn remove(&mut self, ticket: &Ticket) -> Option<Slot<K, F, T>> {
        let entry = self
            .slots
            .find_entry(ticket.hash, |s| s.id == ticket.id)
            .ok()?;
        Some(entry.remove().0)
    }

    fn recycle(&mut self, boxed: CallBox<F>, max_keys: usize) {
        if boxed.as_ref().get_ref().is_none() && self.spare.len() < SPARE_BOXES.min(max_keys) {
            self.spare.push(boxed);
        }
    }
}

/// The calls in flight of one inner future type; see the [module docs](self).
pub(crate) struct Flights<K, F, T> {
    /// Keys may come from untrusted input (HTTP URIs): seeded per table.
    hasher: KeyHasher,
    max_keys: usize,
    stats: Arc<Stats>,
    share: Option<ShareFn<T>>,
    table: parking_lot::Mutex<Table<K, F, T>>,
}

impl<K, F, T> Flights<K, F, T> {
    pub(crate) fn new(max_keys: usize, stats: Arc<Stats>, share: Option<ShareFn<T>>) -> Self {
        Self {
            hasher: KeyHasher::new(),
            max_keys,
            stats,
            share,
            table: parking_lot::Mutex::new(Table {
                slots: HashTable::new(),
                in_flight: 0,
                next_id: 0,
                led: 0,
                joined: 0,
                unshared: 0,
                spare: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Table<K, F, T>> {
        // parking_lot's mutex, not std's: every keyed call takes this lock twice, and std's
        // poison bookkeeping (a panic-count check at each lock and unlock) was 7 % of the
        // uncontended call's instructions. Nothing is lost: the table is consistent between
        // statements, so a panic under the lock (a user's `Eq` on keys) left it usable, and
        // poison was ignored anyway.
        self.table.lock()
    }

    /// Keys in flight, calls led, requests joined, and calls whose value was not shared.
    pub(crate) fn counts(&self) -> (usize, u64, u64, u64) {
        let table = self.lock();
        (table.in_flight, table.led, table.joined, table.unshared)
    }

    /// The waiter `ticket` leaves before it was served. `checked_out` is the call of a
    /// leader that never polled it: handed to the others, or, if the leader's call to the
    /// inner service never returned (it panicked), the call is lost and they are failed.
    /// The last waiter to leave drops the call (outside the lock).
    pub(crate) fn leave(&self, ticket: &Ticket, checked_out: Option<CallBox<F>>) {
        let mut guard = self.lock();
        let table = &mut *guard;
        let Some(slot) = find(&mut table.slots, ticket) else {
            return;
        };
        let mut wake = Wakeup::None;
        let mut dropped = None;
        let mut dropped_value = None;
        if let (Some(boxed), Call::Running(home @ None)) = (checked_out, &mut slot.call) {
            if boxed.as_ref().get_ref().is_some() {
                *home = Some(boxed);
            } else {
                slot.call = Call::Gone;
                slot.retire(&self.stats, &mut table.in_flight);
                dropped = Some(boxed);
            }
        }
        slot.forget(ticket.place);
        slot.waiters = slot.waiters.saturating_sub(1);
        if ticket.place == 0 {
            // A refused value kept for the leader goes with it.
            slot.leader_waits = false;
            if let Call::Refused(kept) = &mut slot.call {
                dropped_value = kept.take();
            }
        }
        let emptied = if slot.waiters == 0 {
            if slot.running() {
                slot.retire(&self.stats, &mut table.in_flight);
            }
            table.remove(ticket)
        } else {
            // The wake we may have consumed was meant to drive the call: pass it on.
            wake = slot.wake_all(None);
            None
        };
        drop(guard);
        wake.run();
        drop(dropped);
        drop(dropped_value);
        drop(emptied);
    }
}

impl<K: Hash + Eq, F, T> Flights<K, F, T> {
    /// Waiters of `key`'s running call (0 if none).
    pub(crate) fn waiters(&self, key: &K) -> usize {
        let hash = self.hasher.hash_one(key);
        self.lock()
            .slots
            .find(hash, |s| s.running() && s.key == *key)
            .map_or(0, |s| s.waiters)
    }

    /// Joins `key`'s call if one is running, else registers a new (not yet started) one
    /// for the caller to lead: one hash, one lock. Inlined into the service's `call`, so
    /// the ticket and box reach the response future in registers (returned through
    /// memory, their 8-byte stores read back as 16-byte loads stalled the CPU).
    #[inline]
    pub(crate) fn join_or_lead(&self, key: K) -> Lookup<F> {
        let hash = self.hasher.hash_one(&key);
        let mut guard = self.lock();
        let table = &mut *guard;
        if let Some(slot) = table.slots.find_mut(hash, |s| s.running() && s.key == key) {
            let place = slot.attached;
            slot.attached += 1;
            slot.waiters += 1;
            if let Wakers::Lone(cell) = &mut slot.wakers {
                // The first follower: from now on the waiters share a fan-out waker.
                let fanout = Fanout::default();
                if let Some(w) = cell.take() {
                    fanout.register(0, &w);
                }
                slot.wakers = Wakers::Shared(Arc::new(fanout));
            }
            let id = slot.id;
            table.joined += 1;
            drop(guard);
            self.stats.joined_counter.increment(1);
            tracing::trace!(target: "palisade::coalesce", name = %self.stats.name, place, "joined a call in flight");
            return Lookup::Join(Ticket { hash, id, place });
        }
        if table.in_flight >= self.max_keys {
            drop(guard);
            self.stats.bypass();
            return Lookup::Bypass;
        }
        let id = table.next_id;
        table.next_id = table.next_id.wrapping_add(1);
        let slot = Slot {
            hash,
            id,
            key,
            call: Call::Running(None),
            waiters: 1,
            attached: 1,
            leader_waits: true,
            wakers: Wakers::Lone(None),
        };
        table.slots.insert_unique(hash, slot, |s| s.hash);
        table.in_flight += 1;
        table.led += 1;
        let spare = table.spare.pop();
        self.stats.keys_gauge.set(table.in_flight as f64);
        drop(guard);
        self.stats.led_counter.increment(1);
        let boxed = spare.unwrap_or_else(|| Box::pin(None));
        Lookup::Lead(Ticket { hash, id, place: 0 }, boxed)
    }
}

impl<K, F, T, E> Flights<K, F, T>
where
    K: Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Clone + Send + 'static,
    E: Into<BoxError>,
{
    /// Polls the shared call for the waiter `ticket`: ready with its share of the output.
    ///
    /// A leader that still holds its call checked out (`checked_out`: it has not polled
    /// it yet) polls it without taking the lock first, with its own waker.
    pub(crate) fn poll(
        self: &Arc<Self>,
        ticket: &Ticket,
        checked_out: &mut Option<CallBox<F>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, BoxError>> {
        let (mut boxed, fanout) = if let Some(boxed) = checked_out.take() {
            // Nobody else can poll it: it is ours until we put it back below.
            (boxed, None)
        } else {
            let mut guard = self.lock();
            let table = &mut *guard;
            let Some(slot) = find(&mut table.slots, ticket) else {
                return Poll::Ready(Err(CoalescedError::cancelled()));
            };
            match &mut slot.call {
                Call::Done(_) | Call::Refused(_) | Call::Gone => {
                    // Served (a lost call's waiters get `cancelled`); the last one served
                    // removes the slot.
                    let mine = slot.take(ticket.place);
                    let emptied = if slot.waiters == 0 {
                        table.remove(ticket)
                    } else {
                        None
                    };
                    drop(guard);
                    drop(emptied);
                    return Poll::Ready(mine);
                }
                Call::Running(home) => {
                    let boxed = home.take();
                    // Registered before polling, so a wake during the poll reaches us.
                    slot.register(ticket.place, cx.waker());
                    let Some(boxed) = boxed else {
                        // Another waiter is polling it now; it, or the call's wake, will
                        // wake us.
                        return Poll::Pending;
                    };
                    let fanout = match &slot.wakers {
                        Wakers::Shared(f) if slot.waiters > 1 => Some(Arc::clone(f)),
                        _ => None,
                    };
                    (boxed, fanout)
                }
            }
        };

        // Poll unlocked: the call may wake its waker (and so lock the fan-out) from inside.
        // Alone, our own waker will do; otherwise the fan-out, which wakes everyone.
        let shared;
        let waker = match fanout {
            Some(fanout) => {
                shared = Waker::from(fanout);
                &shared
            }
            None => cx.waker(),
        };
        let mut guard = PollGuard {
            flights: self,
            ticket,
            armed: true,
        };
        let polled = match boxed.as_mut().as_pin_mut() {
            Some(fut) => fut.poll(&mut Context::from_waker(waker)),
            None => {
                // A box is always filled while its call runs; an empty one is a call
                // lost (never made): leave as its unpolled leader would.
                guard.armed = false;
                self.leave(ticket, Some(boxed));
                return Poll::Ready(Err(CoalescedError::cancelled()));
            }
        };
        guard.armed = false;

        let out = match polled {
            Poll::Pending => {
                let mut table = self.lock();
                if let Some(slot) = find(&mut table.slots, ticket) {
                    // Registered now (if not before), so whoever polls it next can wake us.
                    slot.register(ticket.place, cx.waker());
                    slot.call = Call::Running(Some(boxed));
                }
                return Poll::Pending;
            }
            Poll::Ready(out) => out,
        };
        // The completed future is dropped outside the lock; its box is kept for reuse.
        boxed.set(None);

        let mut guard = self.lock();
        let table = &mut *guard;
        table.recycle(boxed, self.max_keys);
        // One probe: the entry found is the one removed if we are alone.
        let Ok(mut entry) = table.slots.find_entry(ticket.hash, |s| s.id == ticket.id) else {
            return Poll::Ready(out.map_err(|e| CoalescedError::shared(Arc::new(e.into()))));
        };
        let slot = entry.get_mut();
        slot.retire(&self.stats, &mut table.in_flight);
        slot.waiters = slot.waiters.saturating_sub(1);
        if slot.waiters == 0 {
            // Alone: nobody to share with, the value is ours without a clone.
            let (emptied, _) = entry.remove();
            drop(guard);
            drop(emptied);
            return Poll::Ready(out.map_err(|e| CoalescedError::shared(Arc::new(e.into()))));
        }
        if ticket.place == 0 {
            slot.leader_waits = false;
        }
        if let (Ok(v), Some(share)) = (&out, &self.share) {
            if !share(v) {
                // Not shareable (an HTTP body over the buffering cap): one waiter gets it
                // whole, the leader if it still waits (its request was the one made);
                // every other waiter makes its own call.
                table.unshared += 1;
                self.stats.unshared_counter.increment(1);
                let (kept, mine) = match out {
                    Ok(v) if slot.leader_waits => {
                        (Some(v), Err(Box::new(Unshared { _priv: () }) as BoxError))
                    }
                    other => (
                        None,
                        other.map_err(|e| CoalescedError::shared(Arc::new(e.into()))),
                    ),
                };
                slot.call = Call::Refused(kept);
                let wake = slot.wake_all(Some(ticket.place));
                drop(guard);
                wake.run();
                return Poll::Ready(mine);
            }
        }
        let (stored, mine) = match out {
            Ok(v) => (Ok(v.clone()), Ok(v)),
            Err(e) => {
                let shared = Arc::new(e.into());
                (
                    Err(Arc::clone(&shared)),
                    Err(CoalescedError::shared(shared)),
                )
            }
        };
        slot.call = Call::Done(stored);
        let wake = slot.wake_all(Some(ticket.place));
        drop(guard);
        wake.run();
        Poll::Ready(mine)
    }
}

/// The wakers of a contended call, and the waker it is polled with: waking it wakes
/// every waiter, so any of them can drive the call.
#[derive(Default)]
pub(crate) struct Fanout {
    wakers: Mutex<Vec<Option<Waker>>>,
}

impl Fanout {
    fn lock(&self) -> MutexGuard<'_, Vec<Option<Waker>>> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, place: usize, waker: &Waker) {
        let mut wakers = self.lock();
        if wakers.len() <= place {
            wakers.resize_with(place + 1, || None);
        }
        match &mut wakers[place] {
            Some(w) if w.will_wake(waker) => {}
            cell => *cell = Some(waker.clone()),
        }
    }

    fn forget(&self, place: usize) {
        if let Some(cell) = self.lock().get_mut(place) {
            *cell = None;
        }
    }

    fn wake_all(&self, except: Option<usize>) {
        // Under this lock only: a woken waker may be another call's fan-out, never this
        // one (a call does not wait on itself).
        for (place, cell) in self.lock().iter_mut().enumerate() {
            if except != Some(place) {
                if let Some(w) = cell.take() {
                    w.wake();
                }
            }
        }
    }
}

impl Wake for Fanout {
    fn wake(self: Arc<Self>) {
        self.wake_all(None);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all(None);
    }
}

/// Marks the call lost if polling it panics, so the other waiters are not left waiting
/// for a future that no longer exists.
struct PollGuard<'a, K, F, T> {
    flights: &'a Flights<K, F, T>,
    ticket: &'a Ticket,
    armed: bool,
}

impl<K, F, T> Drop for PollGuard<'_, K, F, T> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut guard = self.flights.lock();
        let table = &mut *guard;
        let wake = match find(&mut table.slots, self.ticket) {
            Some(slot) => {
                slot.call = Call::Gone;
                slot.retire(&self.flights.stats, &mut table.in_flight);
                slot.wake_all(None)
            }
            None => Wakeup::None,
        };
        drop(guard);
        wake.run();
    }
}
