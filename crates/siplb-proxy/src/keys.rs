//! How a call is found: its Call-ID and the caller's From tag.

use siplb_txn::prehash;

/// Identifies a call. Carries its hash, like the transaction keys (see
/// `siplb_txn::prehash`), so that growing a large table reads no string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CallKey {
    hash: u64,
    call_id: Box<str>,
    caller_tag: Box<str>,
}

impl CallKey {
    pub(crate) fn new(call_id: &str, caller_tag: &str) -> CallKey {
        CallKey {
            hash: prehash(&(call_id, caller_tag)),
            call_id: call_id.into(),
            caller_tag: caller_tag.into(),
        }
    }

    pub(crate) fn call_id(&self) -> &str {
        &self.call_id
    }

    pub(crate) fn caller_tag(&self) -> &str {
        &self.caller_tag
    }
}

impl std::hash::Hash for CallKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}
