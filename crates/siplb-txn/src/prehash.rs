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

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::OnceLock;

/// The hash a key carries: keyed, the same for equal values within this process.
pub fn prehash(value: &impl Hash) -> u64 {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    let mut hasher = Gathered::new(SEED.get_or_init(RandomState::new).build_hasher());
    value.hash(&mut hasher);
    hasher.finish()
}

/// Room for the parts of a typical key (branch, host, method; Call-ID and tag).
const ROOM: usize = 128;

/// Gathers a value's small writes (a string and its end mark, a port, a method) into
/// one before handing them to SipHash, whose input is one stream: the hash is the
/// same, but each write to it costs some 60 instructions of its own whatever its
/// length, and a key made of four strings wrote eight times.
struct Gathered<H> {
    inner: H,
    buffer: [u8; ROOM],
    len: usize,
}

impl<H: Hasher + Clone> Gathered<H> {
    fn new(inner: H) -> Gathered<H> {
        Gathered {
            inner,
            buffer: [0; ROOM],
            len: 0,
        }
    }

    fn flush(&mut self) {
        self.inner.write(&self.buffer[..self.len]);
        self.len = 0;
    }
}

impl<H: Hasher + Clone> Hasher for Gathered<H> {
    fn write(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > ROOM {
            self.flush();
            if bytes.len() > ROOM {
                self.inner.write(bytes);
                return;
            }
        }
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn finish(&self) -> u64 {
        let mut inner = self.inner.clone();
        inner.write(&self.buffer[..self.len]);
        inner.finish()
    }
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

    #[test]
    fn gathered_writes_hash_as_the_writes_one_by_one() {
        let long = "z9hG4bK".repeat(40);
        let values: [(&str, &str, Option<u16>, &str); 5] = [
            ("", "", None, ""),
            ("z9hG4bK776asdhds", "pc33.atlanta.com", Some(5060), "INVITE"),
            (&long, "h", Some(1), "BYE"),
            ("b", &long[..ROOM - 3], None, "ACK"),
            (&long[..ROOM], &long[..ROOM + 1], Some(65535), &long),
        ];
        let seed = RandomState::new();
        for value in values {
            let one_by_one = seed.hash_one(value);
            let mut gathered = Gathered::new(seed.build_hasher());
            value.hash(&mut gathered);
            assert_eq!(gathered.finish(), one_by_one, "{value:?}");
        }
    }
}
