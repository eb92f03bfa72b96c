//! Parse errors, typed so that the transport layer can choose between answering
//! (400, 505) and dropping.

use std::fmt;

use crate::header_name::HeaderName;
use crate::message::Message;

/// What was wrong with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("message head is incomplete")]
    Incomplete,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("malformed status code")]
    StatusCode,
    #[error("malformed Request-URI")]
    RequestUri,
    #[error("malformed header line")]
    HeaderLine,
    #[error("header value is not UTF-8")]
    Encoding,
    #[error("missing {0} header")]
    Missing(HeaderName),
    #[error("more than one {0} header")]
    Duplicate(HeaderName),
    #[error("malformed {0} header")]
    Malformed(HeaderName),
    #[error("CSeq method does not match the request method")]
    CSeqMethod,
    #[error("Content-Length is larger than the body received")]
    BodyTruncated,
}

/// A message that could not be accepted.
///
/// When the head could be read, the error keeps the message as far as it was parsed,
/// so that a request can still be answered (its Via, Call-ID, From, To and CSeq are
/// copied into the reply) while a response or unreadable input is dropped.
#[derive(Clone, Debug)]
pub struct ParseError {
    kind: ErrorKind,
    partial: Option<Box<Message>>,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        ParseError {
            kind,
            partial: None,
        }
    }

    pub(crate) fn with_message(kind: ErrorKind, message: Message) -> Self {
        ParseError {
            kind,
            partial: Some(Box::new(message)),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message as far as it was parsed, when its head was readable.
    pub fn message(&self) -> Option<&Message> {
        self.partial.as_deref()
    }

    /// The reply a request deserves (`400 Bad Request`, or `505 Version Not Supported`),
    /// or `None` when no reply can be routed: a response, unreadable input, or a
    /// request whose top Via is unusable. A request of another SIP version carries
    /// Vias of that version too, so its 505 goes back to the source address instead.
    pub fn reply_status(&self) -> Option<(u16, &'static str)> {
        let msg = self.message()?;
        if !msg.is_request() {
            return None;
        }
        match self.kind {
            ErrorKind::Version => Some((505, "Version Not Supported")),
            _ if msg.top_via().is_err() => None,
            _ => Some((400, "Bad Request")),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for ParseError {}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderName::Other => f.write_str("unknown"),
            h => f.write_str(h.as_str()),
        }
    }
}
