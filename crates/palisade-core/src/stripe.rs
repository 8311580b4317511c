//! Striped state: counters and reference counts split over cache lines, so threads on
//! different cores sharing one policy do not write the same line on every call.
//!
//! A policy shared by every clone of its service (a concurrency limit, a breaker, a retry
//! budget) is one `Arc`; every call that writes to it, even just to clone that `Arc` into
//! its response future, moves one cache line between the cores calling it. Two threads on
//! one shared limit then run slower than one. This module splits such state by thread:
//!
//! - [`index`]: this thread's stripe number, handed out round-robin the first time a
//!   thread asks (long-lived runtime workers get distinct stripes, up to the count).
//! - [`Striped`]: one value per stripe, each on its own cache line. A thread writes its
//!   own slot and reads (or steals from) the others; whether the sum is exact or an
//!   approximation, and its bound, is the user's to state.
//! - [`Lanes`] and [`Lane`]: one shared value reached through per-stripe `Arc`s. A
//!   response future holds its thread's [`Lane`] instead of the shared `Arc`, so the
//!   reference count it bumps and drops is its stripe's, not everyone's. The lanes are
//!   allocated once, when the policy is built; cloning [`Lanes`] (a service clone) or a
//!   [`Lane`] (a call) never allocates. Per-key state keeps one lone [`Lane`]; code that
//!   serves both picks through [`PickLane`].
//!
//! The stripe count is [`stripes`]: the machine's parallelism rounded up to a power of
//! two, at most [`MAX_STRIPES`]. State that cannot be split (a limit of one permit) or
//! that exists per key (where memory matters more) uses one stripe.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use palisade_core::stripe::{self, Lanes, Striped};
//!
//! // A counter every thread bumps on its own line; reading sums the lines.
//! let hits: Striped<AtomicU64> = Striped::new(stripe::stripes(), |_| AtomicU64::new(0));
//! hits.mine().fetch_add(1, Ordering::Relaxed);
//! let total: u64 = hits.iter().map(|h| h.load(Ordering::Relaxed)).sum();
//! assert_eq!(total, 1);
//!
//! // One shared value; a call clones its thread's lane, not the shared `Arc`.
//! let shared = Lanes::new(String::from("policy state"), stripe::stripes());
//! let lane = shared.lane().clone();
//! assert_eq!(&*lane, "policy state");
//! ```

use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The most stripes any state is split over.
pub const MAX_STRIPES: usize = 16;

/// The stripe count for state shared by every thread: the machine's parallelism rounded up
/// to a power of two, at least 1 and at most [`MAX_STRIPES`]. Read once per process.
pub fn stripes() -> usize {
    static STRIPES: OnceLock<usize> = OnceLock::new();
    *STRIPES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .next_power_of_two()
            .min(MAX_STRIPES)
    })
}

/// This thread's stripe number: assigned round-robin on the thread's first call and fixed
/// for its life. Unbounded: [`Striped`] and [`Lanes`] reduce it to their own count.
#[inline]
pub fn index() -> usize {
    thread_local! {
        // usize::MAX: not assigned yet (a const initialiser keeps the read one TLS load).
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        let index = i.get();
        if index != usize::MAX {
            return index;
        }
        let assigned = next_index();
        i.set(assigned);
        assigned
    })
}

#[cold]
fn next_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Below usize::MAX, which means "unassigned" (reached only after 2^64 threads).
    NEXT.fetch_add(1, Ordering::Relaxed) % (usize::MAX / 2)
}

/// The largest power of two `≤ n` (1 for 0), capped at `max` (a power of two, such as
/// [`stripes`]): a stripe count for state of `n` units that each stripe must hold at
/// least one of.
pub fn stripes_for(n: usize, max: usize) -> usize {
    let below = if n == 0 {
        1
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    };
    below.min(max.max(1))
}

/// A value on a cache line of its own (128 bytes: two 64-byte lines, since x86's adjacent
/// line prefetcher pairs them and some ARM cores have 128-byte lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

// === impl Striped ===

/// One `T` per stripe, each on its own cache line; see the [module docs](self).
pub struct Striped<T> {
    slots: Box<[CachePadded<T>]>,
    mask: usize,
}

impl<T> Striped<T> {
    /// `stripes` slots (rounded up to a power of two, at least 1), slot `i` made by
    /// `make(i)`.
    pub fn new(stripes: usize, mut make: impl FnMut(usize) -> T) -> Self {
        let n = stripes.max(1).next_power_of_two();
        Self {
            slots: (0..n).map(|i| CachePadded(make(i))).collect(),
            mask: n - 1,
        }
    }

    /// How many slots.
    #[inline]
    pub fn len(&self) -> usize {
        self.mask + 1
    }

    /// Always false: there is at least one slot.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slot of stripe `index` (any number: reduced to the slot count).
    #[inline]
    pub fn get(&self, index: usize) -> &T {
        &self.slots[index & self.mask]
    }

    /// This thread's slot.
    #[inline]
    pub fn mine(&self) -> &T {
        self.get(index())
    }

    /// Every slot, in stripe order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|s| &s.0)
    }

    /// Every slot, starting at stripe `index` and wrapping around: a thread looking for
    /// something to take visits its own slot first, then the others'.
    #[inline]
    pub fn starting_at(&self, index: usize) -> impl Iterator<Item = &T> {
        let start = index & self.mask;
        (0..self.len()).map(move |i| self.get(start + i))
    }
}

impl<T: fmt::Debug> fmt::Debug for Striped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

// === impl Lanes ===

/// One shared `T` reached through per-stripe [`Lane`]s; see the [module docs](self).
///
/// Cloning it (as every service clone does) clones one `Arc` and allocates nothing; it
/// dereferences to the shared `T` in two loads, as an `Arc<Arc<T>>` would.
pub struct Lanes<T> {
    inner: Arc<LanesInner<T>>,
}

struct LanesInner<T> {
    shared: Arc<T>,
    /// `stripes - 1`.
    mask: usize,
    /// Lane `i` for `i < stripes`; the rest repeat them (`lanes[i] = lanes[i & mask]`), so
    /// that picking one needs no bounds check.
    lanes: [Lane<T>; MAX_STRIPES],
}

impl<T> Lanes<T> {
    /// `value` shared over `stripes` lanes (rounded up to a power of two, at least 1, at
    /// most [`MAX_STRIPES`]).
    pub fn new(value: T, stripes: usize) -> Self {
        Self::from_arc(Arc::new(value), stripes)
    }

    /// An existing `Arc` shared over `stripes` lanes.
    pub fn from_arc(shared: Arc<T>, stripes: usize) -> Self {
        let n = stripes.clamp(1, MAX_STRIPES).next_power_of_two();
        let distinct: Vec<Lane<T>> = (0..n)
            .map(|_| Lane(Arc::new(CachePadded(Arc::clone(&shared)))))
            .collect();
        Self {
            inner: Arc::new(LanesInner {
                shared,
                mask: n - 1,
                lanes: std::array::from_fn(|i| distinct[i % n].clone()),
            }),
        }
    }

    /// This thread's lane, to clone into a call's future.
    #[inline]
    pub fn lane(&self) -> &Lane<T> {
        self.lane_at(index())
    }

    /// The lane of stripe `index` (any number: reduced to the lane count).
    #[inline]
    pub fn lane_at(&self, index: usize) -> &Lane<T> {
        &self.inner.lanes[index & self.inner.mask & (MAX_STRIPES - 1)]
    }

    /// How many distinct lanes.
    pub fn stripes(&self) -> usize {
        self.inner.mask + 1
    }

    /// The shared value's `Arc` (for handles, which are off the call path).
    pub fn shared(&self) -> &Arc<T> {
        &self.inner.shared
    }
}

impl<T> Clone for Lanes<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Deref for Lanes<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.inner.shared
    }
}

impl<T: fmt::Debug> fmt::Debug for Lanes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// === impl PickLane ===

/// Where a call picks its lane: a policy's [`Lanes`] (its thread's), or a lone [`Lane`]
/// (per-key state, which keeps one lane rather than a set).
pub trait PickLane<T>: Deref<Target = T> {
    /// The lane of stripe `index` (any number).
    fn lane_at(&self, index: usize) -> &Lane<T>;
}

impl<T> PickLane<T> for Lanes<T> {
    #[inline]
    fn lane_at(&self, index: usize) -> &Lane<T> {
        Lanes::lane_at(self, index)
    }
}

impl<T> PickLane<T> for Lane<T> {
    #[inline]
    fn lane_at(&self, _index: usize) -> &Lane<T> {
        self
    }
}

// === impl Lane ===

/// One stripe's reference to a [`Lanes`] value: what a call's future holds. Cloning and
/// dropping it touch only this stripe's reference count (on its own cache line).
pub struct Lane<T>(Arc<CachePadded<Arc<T>>>);

impl<T> Lane<T> {
    /// A lone lane for `value` (per-key state: one lane, no stripes).
    pub fn new(value: T) -> Self {
        Self(Arc::new(CachePadded(Arc::new(value))))
    }

    /// The shared value's `Arc`.
    pub fn shared(&self) -> &Arc<T> {
        &self.0 .0
    }
}

impl<T> Clone for Lane<T> {
    #[inline]
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Deref for Lane<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0 .0
    }
}

impl<T: fmt::Debug> fmt::Debug for Lane<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn stripe_counts_are_powers_of_two_within_the_cap() {
        let n = stripes();
        assert!(n.is_power_of_two() && n <= MAX_STRIPES);
        assert_eq!(stripes_for(0, 16), 1);
        assert_eq!(stripes_for(1, 16), 1);
        assert_eq!(stripes_for(3, 16), 2);
        assert_eq!(stripes_for(1024, 16), 16);
        assert_eq!(stripes_for(1024, 4), 4);
        assert_eq!(Striped::new(3, |_| 0u8).len(), 4);
        assert_eq!(Striped::new(0, |_| 0u8).len(), 1);
    }

    #[test]
    fn a_thread_keeps_its_index_and_threads_get_different_ones() {
        let mine = index();
        assert_eq!(index(), mine);
        let others: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(index).join().expect("thread"))
            .collect();
        assert!(!others.contains(&mine));
        // Round-robin: threads started one after another get distinct numbers.
        let mut sorted = others.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), others.len());
    }

    #[test]
    fn slots_are_on_separate_lines_and_reduce_any_index() {
        let s = Striped::new(4, |i| AtomicU64::new(i as u64));
        let a = std::ptr::from_ref(s.get(0)) as usize;
        let b = std::ptr::from_ref(s.get(1)) as usize;
        assert!(b - a >= 128 && a.is_multiple_of(128));
        assert_eq!(s.get(5).load(Ordering::Relaxed), 1);
        let order: Vec<u64> = s
            .starting_at(2)
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        assert_eq!(order, [2, 3, 0, 1]);
    }

    #[test]
    fn lanes_share_one_value_and_count_references_per_lane() {
        let lanes = Lanes::new(AtomicU64::new(0), 2);
        let count = |i: usize| Arc::strong_count(&lanes.lane_at(i).0);
        let (before0, before1) = (count(0), count(1));
        let (a, b) = (lanes.lane_at(0).clone(), lanes.lane_at(1).clone());
        assert_eq!((count(0), count(1)), (before0 + 1, before1 + 1));
        a.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(1, Ordering::Relaxed);
        assert_eq!(lanes.load(Ordering::Relaxed), 2);
        assert!(Arc::ptr_eq(a.shared(), b.shared()));
        // A call's clone bumps its lane's count, not the shared value's (held once by
        // `Lanes` and once per lane).
        assert_eq!(lanes.stripes(), 2);
        assert_eq!(Arc::strong_count(lanes.shared()), 3);
        assert!(Arc::ptr_eq(&lanes.lane_at(2).0, &lanes.lane_at(0).0));
        assert!(!Arc::ptr_eq(&lanes.lane_at(1).0, &lanes.lane_at(0).0));
        let lanes2 = lanes.clone();
        drop((a, b, lanes));
        assert_eq!(lanes2.lane().load(Ordering::Relaxed), 2);
    }
}
