//! Keys that hash once, when they are made.
//!
//! A proxy's tables hold every transaction of the last 32 seconds (Timer J keeps a
//! completed non-INVITE server transaction that long over UDP), so they grow to
//! hundreds of thousands of entries under load. When such a table grows, every key is
//! hashed again; with keys made of strings on the heap that means a cache miss or three
//! per entry, and the message that triggers the growth waited tens of milliseconds in
//! the benchmark. A key that carries its hash makes that pass a walk over the table's
//! own memory, and makes each lookup one comparison of integers before the strings.
//!
//! The hash is SipHash with a key drawn once per process (std's `RandomState`), so a
//! peer cannot choose branches or Call-IDs that collide.

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::OnceLock;

/// The hash a key carries: keyed, the same for equal values within this process.
pub fn prehash(value: &impl Hash) -> u64 {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    SEED.get_or_init(RandomState::new).hash_one(value)
}

/// The [`BuildHasher`] for maps keyed by prehashed keys ([`crate::ServerKey`],
/// [`crate::ClientKey`], or a caller's own key whose `Hash` writes one [`prehash`]).
pub type Prehashed = BuildHasherDefault<PrehashedHasher>;

/// Passes a prehashed key's hash through. Keys that write bytes instead get a simple
/// multiplicative mix: correct, but without the flooding resistance of [`prehash`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(29) ^ n;
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn equal_values_hash_alike_and_maps_find_them() {
        assert_eq!(prehash(&("a", 1)), prehash(&("a", 1)));
        assert_ne!(prehash(&("a", 1)), prehash(&("a", 2)));
        #[derive(PartialEq, Eq)]
        struct Key(u64, &'static str);
        impl Hash for Key {
            fn hash<H: Hasher>(&self, state: &mut H) {
                state.write_u64(self.0);
            }
        }
        let mut map: HashMap<Key, u32, Prehashed> = HashMap::default();
        for (i, s) in ["x", "y", "z"].into_iter().enumerate() {
            map.insert(Key(prehash(&s), s), i as u32);
        }
        assert_eq!(map.get(&Key(prehash(&"y"), "y")), Some(&1));
        // Byte-writing keys still work, if without the keyed hash.
        let mut plain: HashMap<String, u32, Prehashed> = HashMap::default();
        plain.insert("one".to_owned(), 1);
        assert_eq!(plain.get("one"), Some(&1));
    }
}
