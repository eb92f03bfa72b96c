//! Why a message could not be keyed or fed to a transaction.

use crate::state::State;

/// Why no transaction key could be derived from a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("expected a request")]
    NotARequest,
    #[error("expected a response")]
    NotAResponse,
    #[error("the top Via is missing or malformed")]
    Via,
    #[error("the top Via has no branch")]
    NoBranch,
    #[error("CSeq is missing or malformed")]
    CSeq,
    #[error("Call-ID or Request-URI is missing (RFC 2543 matching needs them)")]
    Incomplete,
    /// ACK never starts a transaction: for a non-2xx it belongs to the INVITE's, for a
    /// 2xx it is end to end (RFC 3261 section 17).
    #[error("ACK does not start a transaction")]
    Ack,
    #[error("the request is not a CANCEL")]
    NotCancel,
}

/// Why a transaction refused an input. Refusals change nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("the message does not belong to this transaction")]
    Unmatched,
    #[error("expected a request")]
    NotARequest,
    #[error("expected a response")]
    NotAResponse,
    #[error("the response does not start with a SIP/2.0 status line")]
    StatusLine,
    /// The TU sent a response the machine has no transition for, e.g. a second final.
    #[error("cannot send a {status} response in state {state:?}")]
    WrongState { status: u16, state: State },
}
