//! The keyed map of calls in flight, bounded, with waiter counts.
//!
//! Each entry holds a `Weak` to its [`Flight`] (type-erased, so one layer serves any
//! service) and the number of waiters attached. The map never keeps a call alive: waiters
//! do. An entry is removed when its call completes (by the waiter that completed it), or
//! when its last waiter leaves; both under the map lock, so a joiner never finds an entry
//! whose waiters are all gone.

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use palisade_core::observe::{Counter, Gauge, Histogram};

use crate::flight::Flight;

struct Entry {
    flight: Weak<dyn Any + Send + Sync>,
    waiters: usize,
}

/// What a keyed call does.
pub(crate) enum Lookup<F, T> {
    /// Join the call in flight.
    Join(Arc<Flight<F, T>>, usize),
    /// No call in flight for the key: lead this new one.
    Lead(Arc<Flight<F, T>>),
    /// Over the key bound (or the key's call is of another type): call uncoalesced.
    Bypass,
}

pub(crate) struct Registry<K> {
    map: Mutex<HashMap<K, Entry>>,
    max_keys: usize,
    pub(crate) name: Arc<str>,
    led: AtomicU64,
    joined: AtomicU64,
    bypassed: AtomicU64,
    led_counter: Counter,
    joined_counter: Counter,
    bypassed_counter: Counter,
    keys_gauge: Gauge,
    waiters_histogram: Histogram,
}

fn same<T: ?Sized, U: ?Sized>(weak: &Weak<T>, arc: *const U) -> bool {
    std::ptr::addr_eq(weak.as_ptr(), arc)
}

impl<K: Hash + Eq> Registry<K> {
    pub(crate) fn new(max_keys: usize, name: Arc<str>) -> Self {
        let counter = |decision| {
            Counter::register(
                "palisade_decisions_total",
                "coalesce",
                &name,
                &[("decision", decision)],
            )
        };
        Self {
            map: Mutex::new(HashMap::new()),
            max_keys,
            led: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
            led_counter: counter("led"),
            joined_counter: counter("joined"),
            bypassed_counter: counter("bypassed"),
            keys_gauge: Gauge::register("palisade_in_flight", "coalesce", &name, &[]),
            waiters_histogram: Histogram::register(
                "palisade_coalesce_waiters",
                "coalesce",
                &name,
                &[],
            ),
            name,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins `key`'s call if one is in flight, else registers a new (not yet started)
    /// one for the caller to lead; one lock, one hash.
    pub(crate) fn join_or_lead<F, T>(&self, key: &K) -> Lookup<F, T>
    where
        K: Clone,
        F: Send + 'static,
        T: Send + 'static,
    {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(key) {
            match entry
                .flight
                .upgrade()
                .map(|any| any.downcast::<Flight<F, T>>())
            {
                Some(Ok(flight)) => {
                    if let Some(slot) = flight.join() {
                        entry.waiters += 1;
                        drop(map);
                        self.joined.fetch_add(1, Relaxed);
                        self.joined_counter.increment(1);
                        tracing::trace!(target: "palisade::coalesce", name = %self.name, slot, "joined a call in flight");
                        return Lookup::Join(flight, slot);
                    }
                    // Completed a moment ago, its entry not yet retired: replace it below
                    // (its completer then finds another call's entry and leaves it).
                }
                // Another service type under the same layer and key.
                Some(Err(_)) => {
                    drop(map);
                    self.bypass();
                    return Lookup::Bypass;
                }
                // Every waiter gone: entries are removed before that, but be safe.
                None => {}
            }
            map.remove(key);
        }
        if map.len() >= self.max_keys {
            drop(map);
            self.bypass();
            return Lookup::Bypass;
        }
        let flight = Flight::<F, T>::pending();
        let weak: Weak<dyn Any + Send + Sync> = Arc::downgrade(&flight) as _;
        map.insert(
            key.clone(),
            Entry {
                flight: weak,
                waiters: 1,
            },
        );
        self.keys_gauge.set(map.len() as f64);
        drop(map);
        self.led.fetch_add(1, Relaxed);
        self.led_counter.increment(1);
        Lookup::Lead(flight)
    }

    fn bypass(&self) {
        self.bypassed.fetch_add(1, Relaxed);
        self.bypassed_counter.increment(1);
        tracing::debug!(target: "palisade::coalesce", name = %self.name, "calling uncoalesced (key bound reached, or another service type under this key)");
    }

    /// The call for `key` completed: forget it, so the next request starts a new one.
    pub(crate) fn finish<U: ?Sized>(&self, key: &K, flight: *const U) {
        let mut map = self.lock();
        // One hash: remove, and put back in the rare case it is another call's entry.
        if let Some((k, entry)) = map.remove_entry(key) {
            if same(&entry.flight, flight) {
                self.keys_gauge.set(map.len() as f64);
                drop(map);
                self.waiters_histogram.record(entry.waiters as f64);
            } else {
                map.insert(k, entry);
            }
        }
    }

    /// A waiter of `key`'s call leaves before it completed; true if it was the last.
    pub(crate) fn leave<U: ?Sized>(&self, key: &K, flight: *const U) -> bool {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(key).filter(|e| same(&e.flight, flight)) else {
            // Already completed (removed by its completer): nothing to cancel.
            return false;
        };
        entry.waiters -= 1;
        if entry.waiters == 0 {
            map.remove(key);
            self.keys_gauge.set(map.len() as f64);
            true
        } else {
            false
        }
    }

    pub(crate) fn waiters(&self, key: &K) -> usize {
        self.lock().get(key).map_or(0, |e| e.waiters)
    }

    pub(crate) fn keys(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (
            self.led.load(Relaxed),
            self.joined.load(Relaxed),
            self.bypassed.load(Relaxed),
        )
    }
}
