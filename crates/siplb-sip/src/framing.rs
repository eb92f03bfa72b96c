//! Finding message boundaries: one message per UDP datagram, or a byte stream (TCP)
//! carrying messages back to back with CRLF keep-alives between them.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;

use crate::error::{ErrorKind, ParseError};
use crate::header_name::HeaderName;
use crate::message::{Message, Span, parse_head};
use crate::text::{parse_u32, trim_bytes};

/// Bounds on what a peer may make siplb buffer or index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whole message, head and body.
    pub max_message_size: usize,
    pub max_headers: usize,
    /// One physical line of the head.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 65_535,
            max_headers: 256,
            max_line_len: 8_192,
        }
    }
}

/// What one datagram held.
#[derive(Clone, Debug)]
pub enum Datagram {
    /// Only whitespace: a NAT keep-alive (RFC 5626 section 3.5.1), to be ignored.
    KeepAlive,
    Message(Message),
}

/// What the next frame of a stream is.
#[derive(Clone, Debug)]
pub enum Frame {
    /// A CRLF CRLF ping (RFC 5626 section 3.5.1): answer with a single CRLF.
    Ping,
    Message(Message),
}

/// Offset just past the empty line ending the head in `buf`, scanning from `from`
/// (a line start). Lines may end in CRLF or a bare LF.
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    while pos < buf.len() {
        let nl = memchr(b'\n', &buf[pos..])? + pos;
        let line = &buf[pos..nl];
        if line.is_empty() || line == b"\r" {
            return Some(nl + 1);
        }
        pos = nl + 1;
    }
    None
}

/// Length of the leading CR/LF run (RFC 3261 section 7.5: ignored before a start line).
fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Parses the message in one datagram.
///
/// A Content-Length shorter than the datagram ends the message there (the rest is
/// ignored, RFC 3261 section 18.3); a longer one is an error; without one, the body
/// runs to the end of the datagram.
pub fn parse_datagram(data: Bytes, limits: &Limits) -> Result<Datagram, ParseError> {
    if data.len() > limits.max_message_size {
        return Err(ParseError::new(ErrorKind::TooLarge(
            limits.max_message_size,
        )));
    }
    if data
        .iter()
        .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
    {
        return Ok(Datagram::KeepAlive);
    }
    let data = data.slice(leading_crlf(&data)..);
    let head = parse_head(&data, data.len(), limits).map_err(ParseError::new)?;
    let head_len = head.head_len;
    let available = data.len() - head_len;
    let declared = declared_length(&data, &head.headers);
    let (body_len, truncated) = match declared {
        Some(Ok(n)) if n > available => (available, true),
        Some(Ok(n)) => (n, false),
        Some(Err(())) | None => (available, false),
    };
    let start_error = head.start_error;
    let mut msg = build(data.slice(..head_len + body_len), head, head_len);
    if let Some(kind) = start_error {
        return Err(ParseError::with_message(kind, msg));
    }
    if truncated {
        return Err(ParseError::with_message(ErrorKind::BodyTruncated, msg));
    }
    msg.validate()
        .map_err(|kind| ParseError::with_message(kind, msg.clone()))?;
    Ok(Datagram::Message(msg))
}

/// Reassembles messages from a byte stream.
///
/// After an error the stream has lost its framing: the caller should answer if it
/// can and then close the connection.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: BytesMut,
    limits: Limits,
    /// How far the search for the end of the current head has got.
    scanned: usize,
    /// Head length and total length of the message being received, once known.
    pending: Option<(usize, usize)>,
}

impl StreamDecoder {
    pub fn new(limits: Limits) -> Self {
        StreamDecoder {
            buf: BytesMut::with_capacity(4096),
            limits,
            scanned: 0,
            pending: None,
        }
    }

    /// Appends bytes read from the connection.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when part of a message has arrived and the rest has not: what a
    /// connection that stalls mid-message shows (line ends alone are keep-alives).
    pub fn mid_message(&self) -> bool {
        self.buf.iter().any(|&b| b != b'\r' && b != b'\n')
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self) -> Result<Option<Frame>, ParseError> {
        if self.pending.is_none() {
            if self.scanned == 0 {
                let crlf = leading_crlf(&self.buf);
                if self.buf[..crlf].windows(4).any(|w| w == b"\r\n\r\n") {
                    let ping_end = self.buf[..crlf]
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(crlf, |p| p + 4);
                    self.buf.advance(ping_end);
                    return Ok(Some(Frame::Ping));
                }
                if crlf == self.buf.len() {
                    // CRLFs alone so far: pongs, or a ping still arriving. Keep the last
                    // three bytes, which may be the start of a CRLF CRLF cut by the read.
                    if crlf > 3 {
                        self.buf.advance(crlf - 3);
                    }
                    return Ok(None);
                }
                self.buf.advance(crlf);
            }
            let from = self.scanned;
            match find_head_end(&self.buf, from) {
                None => {
                    if self.buf.len() > self.limits.max_message_size {
                        return Err(ParseError::new(ErrorKind::TooLarge(
                            self.limits.max_message_size,
                        )));
                    }
                    // Resume at the start of the last, possibly partial, line.
                    self.scanned = self.buf[..self.buf.len()]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1);
                    return Ok(None);
                }
                Some(head_len) => {
                    let head =
                        parse_head(&self.buf, head_len, &self.limits).map_err(ParseError::new)?;
                    let body_len = match declared_length(&self.buf, &head.headers) {
                        Some(Ok(n)) => n,
                        // RFC 3261 section 18.3: streams must carry Content-Length.
                        Some(Err(())) | None => {
                            let msg = build(self.buf.split_to(head_len).freeze(), head, head_len);
                            let kind = match msg.header(HeaderName::ContentLength) {
                                Some(_) => ErrorKind::Malformed(HeaderName::ContentLength),
                                None => ErrorKind::Missing(HeaderName::ContentLength),
                            };
                            return Err(ParseError::with_message(kind, msg));
                        }
                    };
                    let total = head_len.saturating_add(body_len);
                    if total > self.limits.max_message_size {
                        return Err(ParseError::new(ErrorKind::TooLarge(
                            self.limits.max_message_size,
                        )));
                    }
                    self.pending = Some((head_len, total));
                }
            }
        }
        let Some((head_len, total)) = self.pending else {
            return Ok(None);
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        self.pending = None;
        self.scanned = 0;
        let data = self.buf.split_to(total).freeze();
        let head = parse_head(&data, head_len, &self.limits).map_err(ParseError::new)?;
        let start_error = head.start_error;
        let mut msg = build(data, head, head_len);
        if let Some(kind) = start_error {
            return Err(ParseError::with_message(kind, msg));
        }
        msg.validate()
            .map_err(|kind| ParseError::with_message(kind, msg.clone()))?;
        Ok(Some(Frame::Message(msg)))
    }
}

/// The Content-Length value when there is exactly one readable; `Some(Err)` when one
/// is present but unreadable or duplicated with a different value.
pub(crate) fn declared_length(
    buf: &[u8],
    headers: &[crate::message::HeaderField],
) -> Option<Result<usize, ()>> {
    let mut found: Option<Result<usize, ()>> = None;
    for h in headers
        .iter()
        .filter(|h| h.name == HeaderName::ContentLength)
    {
        let v = parse_u32(trim_bytes(&buf[h.value.range()]))
            .map(|n| n as usize)
            .ok_or(());
        found = match found {
            None => Some(v),
            Some(prev) if prev == v => Some(v),
            Some(_) => Some(Err(())),
        };
    }
    found
}

fn build(buf: Bytes, head: crate::message::Head, head_len: usize) -> Message {
    let body = Span::new(head_len, buf.len());
    let text = crate::message::head_text(&buf, head.blank_line);
    Message {
        start: head.start,
        start_line: head.start_line,
        headers: head.headers,
        first: head.first,
        head_end: u32::try_from(head.blank_line).unwrap_or(u32::MAX),
        body,
        buf,
        top_via: None,
        known: None,
        bare_lf: head.bare_lf,
        text,
    }
}
