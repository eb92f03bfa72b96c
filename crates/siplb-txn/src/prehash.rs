//! Keys that hash once, when they are made.
//!
//! A proxy's tables hold every transaction of the last 32 seconds (Timer J keeps a
//! completed non-INVITE server transaction that long over UDP), so they grow to
//! hundreds of thousands of entries under load. When such a table grows, every key is
//! hashed again; with keys made of strings on the heap that means a cache miss or three
//! per entry, and the message that triggers the growth waited tens of milliseconds in
//! the benchmark. A key that carries its hash makes that pass read no string, and
//! makes each lookup one comparison of integers before the strings.
//!
//! The hash is SipHash with a key drawn once per process (std's `RandomState`), so a
//! peer cannot choose branches or Call-IDs that collide.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::OnceLock;

/// The hash a key carries: keyed, the same for equal values within this process.
pub fn prehash(value: &impl Hash) -> u64 {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    SEED.get_or_init(RandomState::new).hash_one(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_hash_alike() {
        assert_eq!(prehash(&("a", 1)), prehash(&("a", 1)));
        assert_ne!(prehash(&("a", 1)), prehash(&("a", 2)));
        // The parts of a tuple stay apart: the same text split elsewhere differs.
        assert_ne!(prehash(&("ab", "c")), prehash(&("a", "bc")));
    }
}
