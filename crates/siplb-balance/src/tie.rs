//! Randomness for the `s` flag, injected so that tests and models can replay it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Picks one of several destinations tied for the best availability (flag `s`), and
/// draws whether a destination that asked for fewer calls (RFC 7339) is spared one.
///
/// Called when at least two destinations tie, with the number of ties (the tied
/// destinations are numbered in table order), and with 100 when the winner asked for a
/// reduction. A result out of range is reduced modulo `ties` rather than trusted. Any
/// `FnMut(usize) -> usize` is a tie-breaker.
pub trait TieBreaker {
    /// Returns an index in `0..ties`.
    fn pick(&mut self, ties: usize) -> usize;
}

impl<F: FnMut(usize) -> usize> TieBreaker for F {
    fn pick(&mut self, ties: usize) -> usize {
        self(ties)
    }
}

/// A small, fast, non-cryptographic generator (SplitMix64), good enough to spread ties.
///
/// Keep one per worker thread; it is not shared.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with a fixed seed, for reproducible runs.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the standard library's per-process random hasher keys, which
    /// avoids a dependency on an RNG crate for what is only tie spreading.
    pub fn from_entropy() -> Self {
        Self::new(RandomState::new().build_hasher().finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Default for SplitMix64 {
    fn default() -> Self {
        Self::from_entropy()
    }
}

impl TieBreaker for SplitMix64 {
    /// Multiply-shift instead of `%`: no division, and the bias is below 2^-32 for any
    /// realistic number of ties.
    fn pick(&mut self, ties: usize) -> usize {
        ((u128::from(self.next_u64()) * ties as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::{SplitMix64, TieBreaker};

    #[test]
    fn picks_in_range_and_spreads() {
        let mut rng = SplitMix64::new(42);
        let mut seen = [0u32; 3];
        for _ in 0..3000 {
            let i = rng.pick(3);
            assert!(i < 3);
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn seeded_is_reproducible_and_entropy_differs() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        let (mut c, mut d) = (SplitMix64::from_entropy(), SplitMix64::from_entropy());
        assert_ne!(c.next_u64(), d.next_u64());
    }

    #[test]
    fn closures_are_tie_breakers() {
        let mut last = |n: usize| n - 1;
        assert_eq!(last.pick(4), 3);
    }
}
