//! The one keyed store: per-key state with an exact cap on live keys and state-aware
//! eviction, behind keyed rate limits, per-key breakers and keyed concurrency limits.
//!
//! A [`KeyedStore`] is a sharded map (one short mutex per shard, keys hashed by a
//! [`KeyHasher`] with a random per-store seed, computed once per operation: the same hash picks the shard and finds the entry
//! in it). Each entry says how it may be evicted ([`StoreEntry::eviction`]):
//!
//! - [`Eviction::Idle`]: dropping it changes no decision (a full rate bucket, an unused
//!   limit, a long-idle closed breaker): swept first, all at once;
//! - [`Eviction::Rank`]: it may go if room is needed, lowest rank first (closest to idle,
//!   least recently used; an open breaker ranks above every closed one);
//! - [`Eviction::Pinned`]: never (permits in flight, waiters queued).
//!
//! A new key arriving at a full shard sweeps it: the idle entries go, then, if that freed
//! less than an eighth of the shard, ranked ones up to an eighth (amortized: one sweep per
//! eighth of the cap). If only pinned entries are left, the new key is refused
//! ([`StoreFull`]) before anything runs for it. The cap is exact: the shards' caps add up to
//! `max_keys`.
//!
//! # Example
//!
//! ```
//! use palisade_core::keyed::{Eviction, KeyedStore, StoreEntry};
//! use std::num::NonZeroUsize;
//!
//! struct Hits(u64);
//! impl StoreEntry for Hits {
//!     fn eviction(&self, _now: u64) -> Eviction {
//!         Eviction::Rank(self.0) // the least used goes first
//!     }
//! }
//!
//! let store: KeyedStore<&str, Hits> = KeyedStore::new(NonZeroUsize::new(2).unwrap());
//! let bump = |e: Option<&mut Hits>| match e {
//!     Some(h) => { h.0 += 1; (h.0, None) }
//!     None => (1, Some(Hits(1))),
//! };
//! assert_eq!(store.update("a", 0, bump), Ok(1));
//! assert_eq!(store.update("a", 0, bump), Ok(2));
//! assert_eq!(store.update("b", 0, bump), Ok(1));
//! assert_eq!(store.update("c", 0, bump), Ok(1)); // full: "b" (1 hit) made room
//! assert_eq!(store.len(), 2);
//! assert!(store.get(&"a", |h| h.0).is_some() && store.get(&"b", |h| h.0).is_none());
//! ```

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroUsize;

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

/// The hasher of keyed state that may come from untrusted input (tenant ids, client
/// addresses, URIs): [foldhash](https://docs.rs/foldhash), keyed with a random seed per
/// table drawn from the operating system's entropy (through std's `RandomState`).
///
/// # Hash-flood resistance, and its limit
///
/// Without the seed, an attacker cannot choose keys that collide: every table hashes
/// differently, and the seed never leaves the process. foldhash is not a keyed PRF like
/// SipHash, though: an attacker able to *observe* a table's hashes (or to time its
/// operations precisely over many requests) could in principle learn enough to build
/// colliding keys for that one table. That is the trade hashbrown's own default hasher
/// makes; it costs a few instructions per key where SipHash-1-3 costs about 80 (a `u64`
/// key), which on the keyed policies' hot paths is a third of the whole call.
#[derive(Clone, Debug)]
pub struct KeyHasher(foldhash::fast::SeedableRandomState);

impl KeyHasher {
    /// A hasher with a fresh random seed.
    pub fn new() -> Self {
        // The OS-random SipHash keys of a fresh `RandomState`, folded into one word: the
        // per-table seed (foldhash's shared seed mixes in address-space randomness).
        let mut sip = RandomState::new().build_hasher();
        sip.write_u64(0x7061_6c69_7361_6465);
        Self(foldhash::fast::SeedableRandomState::with_seed(
            sip.finish(),
            foldhash::SharedSeed::global_random(),
        ))
    }
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// One shard: entries found by a hash computed once, outside the table (std's `HashMap`
/// would hash the key a second time to find it).
type Shard<K, V> = HashTable<(K, V)>;

/// How an entry may be evicted; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Eviction {
    /// Dropping it changes no decision.
    Idle,
    /// It may be dropped for room, lowest rank first.
    Rank(u64),
    /// It must stay.
    Pinned,
}

/// Per-key state kept in a [`KeyedStore`].
pub trait StoreEntry {
    /// How this entry may be evicted at `now` (in whatever unit the store's user passes to
    /// [`KeyedStore::update`], e.g. nanoseconds since its origin).
    fn eviction(&self, now: u64) -> Eviction;
}

/// A new key was refused: its shard is full of pinned entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreFull;

impl fmt::Display for StoreFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("keyed store full: every live key is in use")
    }
}

impl std::error::Error for StoreFull {}

/// A sharded, capped map of per-key state; see the [module docs](self).
pub struct KeyedStore<K, V> {
    hasher: KeyHasher,
    shards: Box<[Mutex<Shard<K, V>>]>,
    /// Each shard's cap; they add up to `max_keys` exactly.
    caps: Box<[usize]>,
    /// The shard count minus one: the count is a power of two, so a mask picks the shard
    /// (a `%` was an integer division on every operation).
    shard_mask: usize,
    max_keys: usize,
}

impl<K, V> KeyedStore<K, V> {
    /// A store of at most `max_keys` live keys. Small caps use one shard; from 4,096 keys
    /// on, 16 shards spread contention (their caps still add up to `max_keys`).
    pub fn new(max_keys: NonZeroUsize) -> Self {
        let max = max_keys.get();
        let count = if max >= 4096 { 16 } else { 1 };
        let caps: Box<[usize]> = (0..count)
            .map(|i| max / count + usize::from(i < max % count))
            .collect();
        let shards = (0..count).map(|_| Mutex::new(HashTable::new())).collect();
        debug_assert!(count.is_power_of_two());
        Self {
            hasher: KeyHasher::new(),
            shards,
            caps,
            shard_mask: count - 1,
            max_keys: max,
        }
    }
}

impl<K: Hash + Eq, V: StoreEntry> KeyedStore<K, V> {
    /// The key's hash and its shard. The table's bucket index and tag come from the hash's
    /// low and top bits; the shard is picked from bits in between, so every bucket of a
    /// shard stays usable.
    #[inline]
    fn locate(&self, key: &K) -> (u64, usize) {
        let hash = self.hasher.hash_one(key);
        (hash, ((hash >> 32) as usize) & self.shard_mask)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard<K, V>> {
        // Callers' closures run under the lock; a panic in one leaves the map itself
        // consistent (entries are replaced whole), so the shard stays usable after it.
        // parking_lot's mutex: no poison to ignore, and none of std's panic-count checks at
        // each lock and unlock (every keyed decision takes this lock).
        self.shards[index].lock()
    }

    /// Runs `f` on `key`'s entry under its shard's lock: `Some(entry)` if the key is live,
    /// `None` if not. `f` returns its result and, optionally, an entry to store for the key
    /// (inserted, or replacing the live one). For a new key at a full shard, room is made
    /// first (see the [module docs](self)); if none can be, `f` is not run.
    ///
    /// # Errors
    ///
    /// [`StoreFull`] when a new key finds its shard full of pinned entries.
    pub fn update<R>(
        &self,
        key: K,
        now: u64,
        f: impl FnOnce(Option<&mut V>) -> (R, Option<V>),
    ) -> Result<R, StoreFull> {
        let (hash, index) = self.locate(&key);
        let cap = self.caps[index];
        let mut map = self.lock(index);
        if let Some((_, entry)) = map.find_mut(hash, |(k, _)| *k == key) {
            let (r, replace) = f(Some(entry));
            if let Some(v) = replace {
                *entry = v;
            }
            return Ok(r);
        }
        if map.len() >= cap {
            sweep(&mut map, now, cap);
            if map.len() >= cap {
                return Err(StoreFull);
            }
        }
        let (r, insert) = f(None);
        if let Some(v) = insert {
            let hasher = &self.hasher;
            map.insert_unique(hash, (key, v), |(k, _)| hasher.hash_one(k));
        }
        Ok(r)
    }

    /// Reads `key`'s entry, if it is live.
    pub fn get<R>(&self, key: &K, f: impl FnOnce(&V) -> R) -> Option<R> {
        let (hash, index) = self.locate(key);
        self.lock(index)
            .find(hash, |(k, _)| k == key)
            .map(|(_, v)| f(v))
    }

    /// Live keys now.
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).len()).sum()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries the maps have room for (their allocated size), to check memory stays bounded.
    pub fn capacity(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).capacity())
            .sum()
    }

    /// The most live keys the store holds.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
}

/// Frees room in a full shard: every idle entry, then, if that freed less than an eighth
/// of the cap, the lowest-ranked entries up to an eighth. Pinned entries stay.
fn sweep<K, V: StoreEntry>(map: &mut Shard<K, V>, now: u64, cap: usize) {
    map.retain(|(_, v)| v.eviction(now) != Eviction::Idle);
    let target = cap - (cap / 8).max(1);
    if map.len() <= target {
        return;
    }
    // The k-th smallest rank splits "evict" from "keep". This Vec is the only allocation,
    // once per sweep, so amortized over cap/8 inserts.
    let mut ranks: Vec<u64> = map
        .iter()
        .filter_map(|(_, v)| match v.eviction(now) {
            Eviction::Rank(r) => Some(r),
            _ => None,
        })
        .collect();
    let excess = (map.len() - target).min(ranks.len());
    if excess == 0 {
        return;
    }
    let (_, &mut threshold, _) = ranks.select_nth_unstable(excess - 1);
    let mut to_drop = excess;
    map.retain(|(_, v)| match v.eviction(now) {
        Eviction::Rank(r) if to_drop > 0 && r <= threshold => {
            to_drop -= 1;
            false
        }
        _ => true,
    });
}

impl<K, V> fmt::Debug for KeyedStore<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedStore")
            .field("shards", &self.shards.len())
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(Eviction);
    impl StoreEntry for E {
        fn eviction(&self, _: u64) -> Eviction {
            self.0
        }
    }

    #[test]
    fn each_key_hasher_has_its_own_seed() {
        // Tables hash differently, so keys colliding in one do not collide in another.
        let (a, b) = (KeyHasher::new(), KeyHasher::new());
        let differ = (0..64u64)
            .filter(|k| a.hash_one(k) != b.hash_one(k))
            .count();
        assert_eq!(differ, 64);
        let c = a.clone();
        assert!((0..64u64).all(|k| a.hash_one(k) == c.hash_one(k)));
    }

    fn put(store: &KeyedStore<u64, E>, key: u64, e: Eviction) -> Result<(), StoreFull> {
        store.update(key, 0, |_| ((), Some(E(e))))
    }

    #[test]
    fn the_cap_is_exact_for_any_size() {
        for max in [1, 7, 4095, 4096, 4097, 10_000, 100_003] {
            let store: KeyedStore<u64, E> = KeyedStore::new(NonZeroUsize::new(max).unwrap());
            assert_eq!(store.caps.iter().sum::<usize>(), max);
            assert_eq!(store.max_keys(), max);
        }
        let store: KeyedStore<u64, E> = KeyedStore::new(NonZeroUsize::new(5000).unwrap());
        for k in 0..200_000 {
            put(&store, k, Eviction::Rank(k)).unwrap();
            assert!(store.len() <= 5000);
        }
    }

    #[test]
    fn idle_first_then_lowest_rank_never_pinned() {
        let store: KeyedStore<u64, E> = KeyedStore::new(NonZeroUsize::new(8).unwrap());
        for k in 0..4 {
            put(&store, k, Eviction::Pinned).unwrap();
        }
        put(&store, 4, Eviction::Idle).unwrap();
        for k in 5..8 {
            put(&store, k, Eviction::Rank(k)).unwrap();
        }
        // Full: the idle one goes, and since that is an eighth, nothing else.
        put(&store, 8, Eviction::Rank(100)).unwrap();
        assert!(store.get(&4, |_| ()).is_none());
        assert_eq!(store.len(), 8);
        // Full again, nothing idle: the lowest rank (5) goes.
        put(&store, 9, Eviction::Rank(100)).unwrap();
        assert!(store.get(&5, |_| ()).is_none() && store.get(&6, |_| ()).is_some());
        // Only pinned entries left: a new key is refused without running anything.
        let pinned: KeyedStore<u64, E> = KeyedStore::new(NonZeroUsize::new(2).unwrap());
        put(&pinned, 0, Eviction::Pinned).unwrap();
        put(&pinned, 1, Eviction::Pinned).unwrap();
        let mut ran = false;
        let r = pinned.update(2, 0, |_| {
            ran = true;
            ((), None)
        });
        assert_eq!(r, Err(StoreFull));
        assert!(!ran);
        // A live key is always served.
        assert!(pinned.update(1, 0, |e| (e.is_some(), None)).unwrap());
    }
}
