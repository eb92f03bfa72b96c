//! What the core tells the persistence layer about calls that hold load, so they can
//! be restored after a restart (and what it takes back to restore one).

use std::time::Duration;

use crate::addr::Peer;

/// A call that holds load, as it should be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedCall {
    pub call_id: String,
    pub caller_tag: String,
    pub callee_tag: Option<String>,
    pub destination_id: u32,
    /// The resources held, `;`-separated.
    pub resources: String,
    pub caller: Peer,
    pub callee: Peer,
    /// How long the call has been up (the driver turns it into a wall-clock time).
    pub age: Duration,
    /// How long until the dialog timeout ends it.
    pub expires_in: Duration,
}

/// A change to the stored calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialogChange {
    /// The call was answered (or changed): store it.
    Upsert(PersistedCall),
    /// The call ended: forget it. (Call-ID, caller tag.)
    Delete { call_id: String, caller_tag: String },
}

/// Why a stored call could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("resources: {0}")]
    Resources(siplb_balance::ResourceListError),
    #[error("{0}")]
    Table(siplb_balance::AttachError),
}
