//! Seedable randomness: one small, lock-free pseudo-random source for policies that must be
//! reproducible (fault injection, sampling, jitter).
//!
//! [`SeededRng`] is SplitMix64 over an atomic counter: each draw is one relaxed
//! `fetch_add` and a few multiplies, shared by every clone of a policy without a lock. One
//! thread drawing from one seed always sees the same sequence; concurrent callers share the
//! sequence between them (each draw is still handed out exactly once). It is not
//! cryptographic.
//!
//! # Example
//!
//! ```
//! use palisade_core::rand::SeededRng;
//!
//! let a = SeededRng::new(42);
//! let b = SeededRng::new(42);
//! assert_eq!(a.next_u64(), b.next_u64());
//! let u = a.next_f64();
//! assert!((0.0..1.0).contains(&u));
//! assert!(!a.chance(0.0) && a.chance(1.0));
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A seedable, lock-free pseudo-random source; see the [module docs](self).
#[derive(Debug)]
pub struct SeededRng {
    state: AtomicU64,
}

impl SeededRng {
    /// A source whose sequence is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// Restarts the sequence from `seed`.
    pub fn reseed(&self, seed: u64) {
        self.state.store(seed, Relaxed);
    }

    /// The next uniformly distributed `u64`.
    pub fn next_u64(&self) -> u64 {
        // SplitMix64: advance by GAMMA, then mix (Steele, Lea and Flood 2014).
        let mut z = self.state.fetch_add(GAMMA, Relaxed).wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next uniformly distributed number in `[0, 1)`, with 53 bits of precision.
    pub fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (clamped to `[0, 1]`; NaN is 0). Draws nothing when the
    /// answer is certain, so a zero rate costs no randomness.
    pub fn chance(&self, p: f64) -> bool {
        if p >= 1.0 {
            true
        } else if p > 0.0 {
            self.next_f64() < p
        } else {
            false
        }
    }
}

impl Clone for SeededRng {
    /// A source that continues from where this one is now, independently.
    fn clone(&self) -> Self {
        Self::new(self.state.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::SeededRng;

    #[test]
    fn same_seed_same_sequence_and_reseed_restarts() {
        let a = SeededRng::new(7);
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        a.reseed(7);
        let again: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(first, again);
        assert_ne!(first[0], SeededRng::new(8).next_u64());
    }

    #[test]
    fn uniform_mean_is_near_one_half() {
        let rng = SeededRng::new(1);
        let n = 100_000;
        let mean = (0..n).map(|_| rng.next_f64()).sum::<f64>() / f64::from(n);
        // The mean of n uniforms has sd 1/sqrt(12 n) ~ 0.0009: 5 sd either side.
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    }
}
