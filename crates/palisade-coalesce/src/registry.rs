//! The layer's shared state: its counts and metrics, and its table of calls in flight.
//!
//! The table is typed by the inner service's future and response ([`Flights`]), which the
//! layer does not know when it is built; it is made by the first keyed call and erased
//! here. One layer coalesces one kind of call: a service of another future type built
//! from the same layer calls uncoalesced (counted as bypassed).

use std::any::Any;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use palisade_core::observe::{Counter, Gauge, Histogram};

use crate::flight::{Flights, ShareFn};

/// Counts and metrics shared by the layer and its table.
pub(crate) struct Stats {
    pub(crate) name: Arc<str>,
    bypassed: AtomicU64,
    pub(crate) led_counter: Counter,
    pub(crate) joined_counter: Counter,
    bypassed_counter: Counter,
    pub(crate) unshared_counter: Counter,
    pub(crate) keys_gauge: Gauge,
    pub(crate) waiters_histogram: Histogram,
}

impl Stats {
    pub(crate) fn bypass(&self) {
        self.bypassed.fetch_add(1, Relaxed);
        self.bypassed_counter.increment(1);
        tracing::debug!(target: "palisade::coalesce", name = %self.name, "calling uncoalesced (key bound reached, or another service type under this layer)");
    }
}

/// A typed table, seen through the layer (which knows only the key type).
trait Erased<K>: Send + Sync {
    fn counts(&self) -> (usize, u64, u64, u64);
    fn waiters(&self, key: &K) -> usize;
}

/// The typed table twice: to find it by type (a boxed `Arc<Flights<..>>`, one type check
/// per call), and to read it through the handle.
struct Typed<K> {
    any: Box<dyn Any + Send + Sync>,
    erased: Arc<dyn Erased<K>>,
}

impl<K, F, T> Erased<K> for Flights<K, F, T>
where
    K: Hash + Eq + Send + 'static,
    F: Send + 'static,
    T: Send + 'static,
{
    fn counts(&self) -> (usize, u64, u64, u64) {
        Flights::counts(self)
    }

    fn waiters(&self, key: &K) -> usize {
        Flights::waiters(self, key)
    }
}

pub(crate) struct Registry<K> {
    max_keys: usize,
    pub(crate) stats: Arc<Stats>,
    flights: OnceLock<Typed<K>>,
}

impl<K> Registry<K> {
    pub(crate) fn new(max_keys: usize, name: Arc<str>) -> Self {
        let counter = |decision| {
            Counter::register(
                "palisade_decisions_total",
                "coalesce",
                &name,
                &[("decision", decision)],
            )
        };
        let stats = Stats {
            bypassed: AtomicU64::new(0),
            led_counter: counter("led"),
            joined_counter: counter("joined"),
            bypassed_counter: counter("bypassed"),
            unshared_counter: counter("unshared"),
            keys_gauge: Gauge::register("palisade_in_flight", "coalesce", &name, &[]),
            waiters_histogram: Histogram::register(
                "palisade_coalesce_waiters",
                "coalesce",
                &name,
                &[],
            ),
            name,
        };
        Self {
            max_keys,
            stats: Arc::new(stats),
            flights: OnceLock::new(),
        }
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.stats.name
    }

    /// The table of calls of future type `F` with output `T`: made by the first keyed
    /// call (with the layer's share rule, from `share`); `None` (and counted as a bypass)
    /// if this layer already serves another type.
    pub(crate) fn flights<F, T>(
        &self,
        share: impl FnOnce() -> Option<ShareFn<T>>,
    ) -> Option<Arc<Flights<K, F, T>>>
    where
        K: Hash + Eq + Send + 'static,
        F: Send + 'static,
        T: Send + 'static,
    {
        let typed = self.flights.get_or_init(|| {
            let flights = Arc::new(Flights::<K, F, T>::new(
                self.max_keys,
                Arc::clone(&self.stats),
                share(),
            ));
            Typed {
                any: Box::new(Arc::clone(&flights)),
                erased: flights,
            }
        });
        let flights = typed.any.downcast_ref::<Arc<Flights<K, F, T>>>().cloned();
        if flights.is_none() {
            self.stats.bypass();
        }
        flights
    }

    /// Keys in flight, calls led, requests joined, calls not shared, requests bypassed.
    pub(crate) fn counts(&self) -> (usize, u64, u64, u64, u64) {
        let (keys, led, joined, unshared) = self
            .flights
            .get()
            .map_or((0, 0, 0, 0), |t| t.erased.counts());
        (
            keys,
            led,
            joined,
            unshared,
            self.stats.bypassed.load(Relaxed),
        )
    }

    pub(crate) fn waiters(&self, key: &K) -> usize {
        self.flights.get().map_or(0, |t| t.erased.waiters(key))
    }
}
