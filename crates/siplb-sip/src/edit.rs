//! Edits a proxy makes to a message it relays, leaving every other byte as received.
//!
//! Each edit records a splice over the original buffer; [`Editor::finish`] writes the
//! result in one pass, so a message costs one copy however many edits it gets.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ParseError;
use crate::framing::{Datagram, Limits, parse_datagram};
use crate::header_name::HeaderName;
use crate::message::{Message, Span};
use crate::own_via::OwnVia;
use crate::text::{parse_u32, trim_bytes};
use crate::via::Via;

/// Why an edit could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    #[error("the message has no {0} header to remove")]
    NothingToRemove(HeaderName),
    #[error("Max-Forwards is 0")]
    TooManyHops,
    #[error("the message is not a request")]
    NotARequest,
    #[error("two edits touch the same bytes")]
    Overlap,
    #[error("malformed {0} header")]
    Malformed(HeaderName),
    #[error("the message has no Via hop {0}")]
    NoSuchVia(usize),
}

#[derive(Debug)]
pub(crate) struct Splice {
    pub(crate) at: Range<usize>,
    /// Where the replacement text lies in the editor's arena.
    pub(crate) text: Range<usize>,
}

/// Collects edits to one message.
#[derive(Debug)]
pub struct Editor<'m> {
    msg: &'m Message,
    splices: Vec<Splice>,
    /// Replacement texts, back to back: one buffer instead of one per edit.
    arena: Vec<u8>,
}

impl Message {
    /// Starts editing a copy of this message.
    pub fn edit(&self) -> Editor<'_> {
        Editor {
            msg: self,
            splices: Vec::with_capacity(4),
            arena: Vec::with_capacity(256),
        }
    }
}

impl<'m> Editor<'m> {
    fn splice(&mut self, at: Range<usize>, text: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(text);
        self.splices.push(Splice {
            at,
            text: start..self.arena.len(),
        });
    }

    fn splice_decimal(&mut self, at: Range<usize>, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.splice(at, &digits[i..]);
    }

    fn insert_header(&mut self, at: usize, name: &str, value: &str) {
        let start = self.arena.len();
        self.arena.extend_from_slice(name.as_bytes());
        self.arena.extend_from_slice(b": ");
        self.arena.extend_from_slice(value.as_bytes());
        self.arena.extend_from_slice(b"\r\n");
        self.splices.push(Splice {
            at: at..at,
            text: start..self.arena.len(),
        });
    }

    fn after_start_line(&self) -> usize {
        self.msg.start_line.end as usize
    }

    fn first_line_of(&self, name: HeaderName) -> Option<Span> {
        self.msg
            .headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.line)
    }

    /// Adds a Via hop on top (`value` is the hop, e.g. `SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK...`).
    pub fn push_via(&mut self, value: &str) -> &mut Self {
        self.push_via_field(value)
    }

    /// Adds the proxy's own Via hop on top, as [`Editor::push_via`] does.
    pub fn push_own_via(&mut self, via: &OwnVia) -> &mut Self {
        self.push_via_field(via.as_str())
    }

    fn push_via_field(&mut self, value: &str) -> &mut Self {
        let at = self
            .first_line_of(HeaderName::Via)
            .map_or_else(|| self.after_start_line(), |l| l.start as usize);
        self.insert_header(at, HeaderName::Via.as_str(), value);
        self
    }

    /// Removes the topmost `n` elements of a list header: whole lines for the fields
    /// they fill, and for a field they fill only in part, its elements up to the next
    /// one kept. One splice per field, so removing several never overlaps.
    fn remove_top_elements(&mut self, name: HeaderName, n: usize) -> Result<(), EditError> {
        if n == 0 {
            return Ok(());
        }
        let mut taken: Vec<(usize, Span)> = Vec::with_capacity(n + 1);
        for element in self.msg.list_spans(name).take(n + 1) {
            taken.push(element.map_err(|()| EditError::Malformed(name))?);
        }
        if taken.len() < n {
            return Err(EditError::NothingToRemove(name));
        }
        let kept = taken.get(n).copied();
        let mut i = 0;
        while i < n {
            let (field, first) = taken[i];
            while i < n && taken[i].0 == field {
                i += 1;
            }
            match kept {
                Some((same, next)) if same == field => {
                    self.splice(first.start as usize..next.start as usize, b"");
                }
                _ => {
                    let line = self.msg.headers[field].line;
                    self.splice(line.range(), b"");
                }
            }
        }
        Ok(())
    }

    /// Replaces Via hop `n` (0 is the top) with `hop`, leaving the other hops of its
    /// field as they are.
    pub fn replace_via(&mut self, n: usize, hop: &str) -> Result<&mut Self, EditError> {
        let (_, span) = self
            .msg
            .list_spans(HeaderName::Via)
            .nth(n)
            .ok_or(EditError::NoSuchVia(n))?
            .map_err(|()| EditError::Malformed(HeaderName::Via))?;
        self.splice(span.range(), hop.as_bytes());
        Ok(self)
    }

    fn remove_top_element(&mut self, name: HeaderName) -> Result<(), EditError> {
        self.remove_top_elements(name, 1)
    }

    /// Removes the topmost Via hop (a response on its way back through siplb).
    pub fn remove_top_via(&mut self) -> Result<&mut Self, EditError> {
        self.remove_top_element(HeaderName::Via)?;
        Ok(self)
    }

    /// Removes the topmost Route entry (loose routing, RFC 3261 section 16.4).
    pub fn pop_route(&mut self) -> Result<&mut Self, EditError> {
        self.remove_top_element(HeaderName::Route)?;
        Ok(self)
    }

    /// Removes the topmost `n` Route entries at once (siplb's own, when it
    /// record-routed twice). Calling [`Editor::pop_route`] twice would remove the same
    /// entry twice.
    pub fn pop_routes(&mut self, n: usize) -> Result<&mut Self, EditError> {
        self.remove_top_elements(HeaderName::Route, n)?;
        Ok(self)
    }

    /// Adds a Record-Route entry on top (`value` like `<sip:192.0.2.1;lr>`).
    pub fn push_record_route(&mut self, value: &str) -> &mut Self {
        let at = self
            .first_line_of(HeaderName::RecordRoute)
            .map_or_else(|| self.after_start_line(), |l| l.start as usize);
        self.insert_header(at, HeaderName::RecordRoute.as_str(), value);
        self
    }

    /// Replaces the Request-URI.
    pub fn set_request_uri(&mut self, uri: &str) -> Result<&mut Self, EditError> {
        match self.msg.start {
            crate::message::StartLine::Request { uri: span, .. } => {
                self.splice(span.range(), uri.as_bytes());
                Ok(self)
            }
            crate::message::StartLine::Response { .. } => Err(EditError::NotARequest),
        }
    }

    /// Decrements Max-Forwards, adding `Max-Forwards: 70` when absent (RFC 3261
    /// section 16.6 step 3). Returns the new value; `TooManyHops` at 0 (answer 483).
    pub fn decrement_max_forwards(&mut self) -> Result<u32, EditError> {
        let field = self
            .msg
            .headers
            .iter()
            .find(|h| h.name == HeaderName::MaxForwards);
        match field {
            None => {
                let at = self.after_start_line();
                self.insert_header(at, HeaderName::MaxForwards.as_str(), "70");
                Ok(70)
            }
            Some(h) => {
                let n = parse_u32(trim_bytes(&self.msg.as_bytes()[h.value.range()]))
                    .ok_or(EditError::Malformed(HeaderName::MaxForwards))?;
                let n = n.checked_sub(1).ok_or(EditError::TooManyHops)?;
                let range = h.value.range();
                self.splice_decimal(range, n as usize);
                Ok(n)
            }
        }
    }

    /// Replaces the body and sets Content-Length to match (adding it when absent).
    pub fn set_body(&mut self, body: &[u8]) -> &mut Self {
        match self
            .msg
            .headers
            .iter()
            .find(|h| h.name == HeaderName::ContentLength)
        {
            Some(h) => {
                let range = h.value.range();
                self.splice_decimal(range, body.len());
            }
            None => {
                let at = self.msg.head_end as usize;
                let len = body.len().to_string();
                self.insert_header(at, HeaderName::ContentLength.as_str(), &len);
            }
        }
        self.splice(self.msg.body.range(), body);
        self
    }

    /// Appends a header field at the end of the head.
    pub fn append_header(&mut self, name: &str, value: &str) -> &mut Self {
        let at = self.msg.head_end as usize;
        self.insert_header(at, name, value);
        self
    }

    /// Removes every field with this name.
    pub fn remove_headers(&mut self, name: HeaderName) -> &mut Self {
        let lines: Vec<_> = self
            .msg
            .headers
            .iter()
            .filter(|h| h.name == name)
            .map(|h| h.line.range())
            .collect();
        for l in lines {
            self.splice(l, b"");
        }
        self
    }

    /// Records where a request really came from in its top Via (RFC 3261 section
    /// 18.2.1 `received`, RFC 3581 `rport`), so responses can reach a caller behind NAT.
    /// Only that hop's parameters are rewritten; nothing changes when the sent-by
    /// already matches and no `rport` was asked for.
    pub fn set_via_received(&mut self, ip: IpAddr, port: u16) -> Result<&mut Self, EditError> {
        let (_, span) = self
            .msg
            .list_spans(HeaderName::Via)
            .next()
            .ok_or(EditError::NothingToRemove(HeaderName::Via))?
            .map_err(|()| EditError::Malformed(HeaderName::Via))?;
        let hop_text = std::str::from_utf8(&self.msg.as_bytes()[span.range()])
            .map_err(|_| EditError::Malformed(HeaderName::Via))?;
        let hop = Via::parse(hop_text).map_err(|_| EditError::Malformed(HeaderName::Via))?;
        let wants_rport = hop.rport().is_some();
        if hop.host.ip() == Some(ip) && !wants_rport {
            return Ok(self);
        }
        let mut out = hop.text_without_params(hop_text, |name| {
            name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport")
        });
        let _ = write!(out, ";received={ip}");
        if wants_rport {
            let _ = write!(out, ";rport={port}");
        }
        self.splice(span.range(), out.as_bytes());
        Ok(self)
    }

    /// Writes the edited message.
    pub fn finish(mut self) -> Result<Bytes, EditError> {
        self.write()
    }

    /// Writes the edited message, leaving the splices sorted as written.
    fn write(&mut self) -> Result<Bytes, EditError> {
        // Stable: edits made at one spot come out in the order they were made.
        self.splices.sort_by_key(|s| (s.at.start, s.at.end));
        let src = self.msg.as_bytes();
        let mut len = src.len();
        let mut prev_end = 0;
        for s in &self.splices {
            if s.at.start < prev_end {
                return Err(EditError::Overlap);
            }
            prev_end = s.at.end;
            len = len - s.at.len() + s.text.len();
        }
        let mut out = BytesMut::with_capacity(len);
        let mut pos = 0;
        for s in &self.splices {
            out.put_slice(&src[pos..s.at.start]);
            out.put_slice(&self.arena[s.text.clone()]);
            pos = s.at.end;
        }
        out.put_slice(&src[pos..]);
        Ok(out.freeze())
    }

    /// Writes the edited message and parses it, for callers that go on reading it. A
    /// proxy relaying a request it validated sends [`Editor::finish`]'s bytes instead:
    /// the edits keep such a message valid, which the property test
    /// `relay_edits_keep_a_message_valid` (`tests/properties.rs`) holds.
    pub fn finish_message(mut self, limits: &Limits) -> Result<Message, FinishError> {
        let bytes = self.write().map_err(FinishError::Edit)?;
        match parse_datagram(bytes, limits).map_err(FinishError::Parse)? {
            Datagram::Message(m) => Ok(m),
            Datagram::KeepAlive => Err(FinishError::Edit(EditError::Overlap)),
        }
    }
}

/// An edit that failed, or whose result no longer parses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    #[error(transparent)]
    Edit(EditError),
    #[error("edited message does not parse: {0}")]
    Parse(ParseError),
}
