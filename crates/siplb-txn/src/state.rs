//! Transaction states of RFC 3261 figures 5 to 8, plus RFC 6026's Accepted.

/// Where a transaction stands. Each machine uses a subset: INVITE client
/// Calling/Proceeding/Completed; non-INVITE client Trying/Proceeding/Completed; INVITE
/// server Proceeding/Completed/Confirmed/Accepted; non-INVITE server
/// Trying/Proceeding/Completed. All end in Terminated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}
