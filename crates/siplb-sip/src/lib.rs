//! Lossless, zero-copy SIP messages for a proxy.
//!
//! A proxy relays far more than it reads, so a [`Message`] is the received bytes
//! plus an index: start line, header fields in their original order (never merged,
//! renamed or reordered), and body. Typed views ([`Via`], [`NameAddr`], [`Uri`],
//! [`CSeq`]...) are parsed on demand from borrowed slices. Edits ([`Editor`]) record
//! splices and write the result in one pass, so every byte a proxy does not touch
//! leaves as it arrived.
//!
//! Framing ([`parse_datagram`], [`StreamDecoder`]) is separate from parsing and
//! bounded by [`Limits`]. Errors ([`ParseError`]) keep the partially read message so
//! the caller can tell a request worth a `400` from input to drop.
//!
//! No I/O happens here: the crate is driven by bytes in and bytes out, which is what
//! makes it cheap to test and to fuzz.

mod edit;
mod error;
mod framing;
mod header_name;
mod message;
mod method;
mod name_addr;
mod own_via;
mod response;
mod text;
mod uri;
mod via;

pub use edit::{EditError, Editor, FinishError};
pub use error::{ErrorKind, ParseError};
pub use framing::{Datagram, Frame, Limits, StreamDecoder, parse_datagram};
pub use header_name::HeaderName;
pub use message::{Header, Message};
pub use method::{CSeq, Method};
pub use name_addr::{NameAddr, NameAddrError};
pub use own_via::{OwnVia, SentBy};
pub use response::{build_response, build_response_with_top_via};
pub use text::{ParamIter, Params};
pub use uri::{Host, Scheme, Uri, UriError};
pub use via::{Via, ViaError, ViaId};

impl Message {
    /// Parses one complete message (as from a datagram) with default limits.
    pub fn parse(data: impl Into<bytes::Bytes>) -> Result<Message, ParseError> {
        match parse_datagram(data.into(), &Limits::default())? {
            Datagram::Message(m) => Ok(m),
            Datagram::KeepAlive => Err(ParseError::new(ErrorKind::Incomplete)),
        }
    }
}
