//! How a call is found: its Call-ID and the caller's From tag.

use std::sync::Arc;

use siplb_txn::prehash;

/// Identifies a call. Carries its hash, like the transaction keys (see
/// `siplb_txn::prehash`), so that growing a large table reads no string.
///
/// Both strings live in one shared allocation: the call and the table that finds it
/// hold the same key, and every call up pays for it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CallKey {
    hash: u64,
    /// The Call-ID, then the caller's tag.
    text: Arc<str>,
    /// Where the tag starts in `text`.
    split: u32,
}

impl CallKey {
    pub(crate) fn new(call_id: &str, caller_tag: &str) -> CallKey {
        let mut text = String::with_capacity(call_id.len() + caller_tag.len());
        text.push_str(call_id);
        text.push_str(caller_tag);
        CallKey {
            hash: prehash(&(call_id, caller_tag)),
            text: text.into(),
            // Messages are far below 4 GiB (`max_message_size`).
            split: u32::try_from(call_id.len()).unwrap_or(u32::MAX),
        }
    }

    fn split(&self) -> usize {
        usize::try_from(self.split).unwrap_or(usize::MAX)
    }

    pub(crate) fn call_id(&self) -> &str {
        self.text.get(..self.split()).unwrap_or_default()
    }

    pub(crate) fn caller_tag(&self) -> &str {
        self.text.get(self.split()..).unwrap_or_default()
    }
}

impl std::hash::Hash for CallKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
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
