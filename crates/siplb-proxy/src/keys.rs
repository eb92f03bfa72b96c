//! How a call is found: its Call-ID and the caller's From tag.

use siplb_txn::prehash;

use crate::call::{Call, Pair};
use crate::id_table::IdTable;
use crate::slab::{Id, Slab};

/// Identifies a call. Carries its hash, like the transaction keys (see
/// `siplb_txn::prehash`), so that growing a large table reads no string.
///
/// Both strings live in one allocation, which only the call holds: the
/// [`CallIndex`] that finds it keeps the call's id alone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CallKey {
    hash: u64,
    /// The Call-ID, then the caller's tag.
    text: Pair,
}

impl CallKey {
    pub(crate) fn new(call_id: &str, caller_tag: &str) -> CallKey {
        CallKey {
            hash: CallKey::hash_of(call_id, caller_tag),
            text: Pair::new(&[call_id, caller_tag]),
        }
    }

    fn hash_of(call_id: &str, caller_tag: &str) -> u64 {
        prehash(&(call_id, caller_tag))
    }

    pub(crate) fn call_id(&self) -> &str {
        self.text.first()
    }

    pub(crate) fn caller_tag(&self) -> &str {
        self.text.second()
    }

    fn is(&self, call_id: &str, caller_tag: &str) -> bool {
        self.call_id() == call_id && self.caller_tag() == caller_tag
    }
}

/// The calls by key: their ids alone (see `id_table`), compared against the keys the
/// calls hold; a lookup borrows the message's strings and allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct CallIndex {
    ids: IdTable,
}

impl CallIndex {
    pub(crate) fn find(&self, calls: &Slab<Call>, call_id: &str, caller_tag: &str) -> Option<Id> {
        let hash = CallKey::hash_of(call_id, caller_tag);
        self.ids.find(hash, |id| {
            calls.get(id).is_some_and(|c| c.key.is(call_id, caller_tag))
        })
    }

    /// Indexes call `id`, which is in `calls` (as is every call indexed).
    pub(crate) fn insert(&mut self, calls: &Slab<Call>, id: Id) {
        if let Some(call) = calls.get(id) {
            self.ids.insert(call.key.hash, id, |i| rehash(calls, i));
        }
    }

    pub(crate) fn remove(&mut self, key: &CallKey, id: Id) {
        self.ids.remove(key.hash, id);
    }

    pub(crate) fn shrink(&mut self, calls: &Slab<Call>) {
        self.ids.shrink(|i| rehash(calls, i));
    }
}

fn rehash(calls: &Slab<Call>, id: Id) -> u64 {
    calls.get(id).map_or(0, |c| c.key.hash)
}

#[cfg(test)]
mod tests {
    use super::CallKey;

    #[test]
    fn the_two_parts_read_back_and_tell_keys_apart() {
        let key = CallKey::new("a@b", "t1");
        assert_eq!((key.call_id(), key.caller_tag()), ("a@b", "t1"));
        assert_eq!(key, CallKey::new("a@b", "t1"));
        // The same text split elsewhere is another call.
        assert_ne!(CallKey::new("a@bt", "1"), key);
        assert_eq!(CallKey::new("", "").call_id(), "");
    }
}
