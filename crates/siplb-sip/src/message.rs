//! The lossless message: the received bytes plus an index of where each part lies.
//!
//! Nothing is copied or normalised at parse time: header fields keep their order,
//! spelling, compact forms and folding, and typed views are parsed on demand from the
//! indexed slices. Serialising an unedited message is handing back its bytes.

use std::ops::Range;

use bytes::Bytes;
use bytestring::ByteString;
use memchr::{memchr, memchr_iter};

use crate::error::ErrorKind;
use crate::framing::Limits;
use crate::header_name::HeaderName;
use crate::method::{CSeq, Method};
use crate::name_addr::{NameAddr, NameAddrError};
use crate::text::Params;
use crate::text::{
    is_lws, is_token_bytes, is_token_char, list_elements, parse_u32, trim, trim_bytes,
};
use crate::uri::{Host, Uri, UriError, is_absolute_uri};
use crate::via::{Via, ViaError, ViaId};

/// A byte range inside a message buffer. Offsets are `u32` because messages are
/// bounded far below 4 GiB by [`Limits`], and the index stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        // Limits keep messages far below u32::MAX, so these never saturate.
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    pub(crate) fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartLine {
    Request { method: Span, uri: Span },
    Response { code: u16, reason: Span },
}

/// Where one header field lies: its name, its value (trimmed, possibly spanning folded
/// lines) and its whole line(s) including the line terminator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderField {
    pub(crate) name: HeaderName,
    pub(crate) name_span: Span,
    pub(crate) value: Span,
    pub(crate) line: Span,
}

/// One header field as seen by a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: HeaderName,
    /// The name as written (`v`, `VIA`, `Via`...).
    pub raw_name: &'a [u8],
    /// The value without surrounding whitespace; folded lines stay as received.
    pub value: &'a [u8],
}

/// A parsed SIP request or response over its original bytes. Two messages are equal
/// when their bytes are, and their index reads them the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub(crate) buf: Bytes,
    pub(crate) start: StartLine,
    /// The start line including its terminator.
    pub(crate) start_line: Span,
    pub(crate) headers: Vec<HeaderField>,
    /// Index of the first field of each recognised name (`NO_FIELD` when absent), so
    /// the lookups a proxy makes on every message need no scan.
    pub(crate) first: [u16; HeaderName::COUNT],
    /// Offset of the empty line that ends the head.
    pub(crate) head_end: u32,
    pub(crate) body: Span,
    /// The top Via hop as validation parsed it: a proxy reads it three or four times
    /// per message (transaction key, routing, `received`/`rport`), and parsing it was
    /// the largest single cost of a relayed message.
    pub(crate) top_via: Option<TopVia>,
    /// What else a proxy reads several times per message and validation parses anyway:
    /// `None` where validation did not run (a message kept inside a parse error).
    pub(crate) known: Option<Known>,
    /// Whether a line of the head ends in a bare LF, as the head's parse saw it.
    pub(crate) bare_lf: bool,
    /// The head (start line and fields) as text, when all of it is UTF-8: checked
    /// once, so that a field read as text is a slice of it. A proxy reads about a
    /// hundred fields and parts of them per call, and a check of each was 4% of its
    /// instructions (docs/BENCHMARKS-HISTORY.md, issue 19's eighth round).
    pub(crate) text: Option<ByteString>,
}

/// Fields validation parsed, as offsets into the message buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Known {
    /// `None` when validation did not read the From (a response's), else its tag.
    from_tag: Option<Option<Span>>,
    to_tag: Option<Span>,
    cseq: u32,
    cseq_method: Span,
    vias: usize,
}

/// A parsed Via hop as offsets into the message buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopVia {
    pub(crate) transport: Span,
    pub(crate) host: TopHost,
    pub(crate) host_text: Span,
    pub(crate) port: Option<u16>,
    pub(crate) params: Span,
    pub(crate) branch: Option<Span>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopHost {
    Domain(Span),
    V4(std::net::Ipv4Addr),
    V6(std::net::Ipv6Addr),
}

impl Message {
    /// The message exactly as received (or as produced by an edit).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The message bytes as a cheaply cloneable buffer.
    pub fn to_bytes(&self) -> Bytes {
        self.buf.clone()
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    fn slice(&self, span: Span) -> &[u8] {
        &self.buf[span.range()]
    }

    fn str_of(&self, span: Span) -> Option<&str> {
        match &self.text {
            // A span that cuts a character in two is not text, as below (an empty one
            // is, wherever it lies).
            Some(_) if span.start == span.end => Some(""),
            Some(head) if span.end as usize <= head.len() => head.get(span.range()),
            _ => std::str::from_utf8(self.slice(span)).ok(),
        }
    }

    /// The request method, `None` for a response.
    pub fn method(&self) -> Option<Method<'_>> {
        match self.start {
            StartLine::Request { method, .. } => self.str_of(method).map(Method::parse),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written, `None` for a response.
    pub fn request_uri_text(&self) -> Option<&str> {
        match self.start {
            StartLine::Request { uri, .. } => self.str_of(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI when it is a SIP or SIPS URI.
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        self.request_uri_text().and_then(|u| Uri::parse(u).ok())
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Response { reason, .. } => Some(self.slice(reason)),
            StartLine::Request { .. } => None,
        }
    }

    /// All header fields in their original order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'_>> + '_ {
        self.headers.iter().map(|h| self.view(h))
    }

    fn view(&self, h: &HeaderField) -> Header<'_> {
        Header {
            name: h.name,
            raw_name: self.slice(h.name_span),
            value: self.slice(h.value),
        }
    }

    /// Values of every field with this name, in order.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| self.slice(h.value))
    }

    pub(crate) fn first_field(&self, name: HeaderName) -> Option<&HeaderField> {
        if name == HeaderName::Other {
            return None;
        }
        self.headers.get(usize::from(self.first[name as usize]))
    }

    /// The first value of a recognised header.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.first_field(name).map(|h| self.slice(h.value))
    }

    /// The first value of a header given by name (case-insensitive; compact forms of
    /// recognised headers match too).
    pub fn header_by_name(&self, name: &str) -> Option<&[u8]> {
        let known = HeaderName::from_bytes(name.as_bytes());
        self.headers
            .iter()
            .find(|h| {
                if known == HeaderName::Other {
                    h.name == HeaderName::Other
                        && self
                            .slice(h.name_span)
                            .eq_ignore_ascii_case(name.as_bytes())
                } else {
                    h.name == known
                }
            })
            .map(|h| self.slice(h.value))
    }

    /// The first value of a recognised header as text (`None` when absent or not
    /// UTF-8).
    pub fn header_text(&self, name: HeaderName) -> Option<&str> {
        self.first_field(name).and_then(|h| self.str_of(h.value))
    }

    /// Elements of every field with this name, split on list commas: `(field index,
    /// element span)`, the span trimmed of surrounding whitespace.
    pub(crate) fn list_spans(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<(usize, Span), ()>> + '_ {
        self.headers
            .iter()
            .enumerate()
            .filter(move |(_, h)| h.name == name)
            .flat_map(move |(i, h)| {
                let base = h.value.start as usize;
                let value = self.slice(h.value);
                list_elements(value).map(move |e| {
                    let (s, e) = e?;
                    let part = &value[s..e];
                    let lead = part.iter().take_while(|&&b| is_lws(b)).count();
                    let trimmed = trim_bytes(part).len();
                    Ok((i, Span::new(base + s + lead, base + s + lead + trimmed)))
                })
            })
    }

    fn list_str(&self, span: Result<(usize, Span), ()>) -> Option<&str> {
        span.ok().and_then(|(_, s)| self.str_of(s))
    }

    /// The text of Via hop `n` (0 is the top), as received.
    pub fn via_hop(&self, n: usize) -> Option<&str> {
        self.list_spans(HeaderName::Via)
            .nth(n)
            .and_then(|s| self.list_str(s))
    }

    /// Every Via hop, top first, including hops that share one header line.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ViaError>> + '_ {
        self.list_spans(HeaderName::Via).map(move |s| {
            let hop = self.list_str(s).ok_or(ViaError::Protocol)?;
            Via::parse(hop)
        })
    }

    /// The topmost Via hop.
    pub fn top_via(&self) -> Result<Via<'_>, ViaError> {
        if let Some(via) = self.top_via.and_then(|t| self.cached_via(t)) {
            return Ok(via);
        }
        self.vias().next().unwrap_or(Err(ViaError::Protocol))
    }

    /// The branch and sent-by of the topmost Via hop, as [`Message::top_via`] gives
    /// them. Transaction keys read only these, on every message (eight times per
    /// call), and building the whole hop from validation's spans cost three times as
    /// much as reading them.
    pub fn top_via_id(&self) -> Result<ViaId<'_>, ViaError> {
        // With the head all text, every span of the hop lies on character boundaries,
        // so each part reads as `cached_via` reads it.
        if let (Some(t), Some(_)) = (self.top_via, &self.text) {
            let part = |span: Span| self.str_of(span).ok_or(ViaError::Protocol);
            return Ok(ViaId {
                branch: t.branch.map(part).transpose()?,
                host_text: part(t.host_text)?,
                port: t.port,
            });
        }
        self.top_via().map(|via| ViaId::from(&via))
    }

    /// The parameters of the topmost Via hop as bytes, from its first `;` (`None`
    /// when validation did not keep them): for a quick look before any parsing.
    pub fn top_via_params_bytes(&self) -> Option<&[u8]> {
        self.top_via.map(|t| self.slice(t.params))
    }

    fn cached_via(&self, t: TopVia) -> Option<Via<'_>> {
        // One UTF-8 check of the hop, from its transport to the end of its parameters
        // (or of its host), rather than one per part: a proxy asks for the top Via
        // a dozen times per call.
        let start = t.transport.start;
        let text = self.str_of(Span {
            start,
            end: t.host_text.end.max(t.params.end),
        })?;
        let part = |span: Span| -> Option<&str> {
            if span.start == span.end {
                return Some("");
            }
            let from = span.start.checked_sub(start)? as usize;
            text.get(from..from + span.end.checked_sub(span.start)? as usize)
        };
        Some(Via::from_parts(
            part(t.transport)?,
            match t.host {
                TopHost::Domain(span) => Host::Domain(part(span)?),
                TopHost::V4(ip) => Host::V4(ip),
                TopHost::V6(ip) => Host::V6(ip),
            },
            part(t.host_text)?,
            t.port,
            Params::new(part(t.params)?),
            match t.branch {
                Some(span) => Some(part(span)?),
                None => None,
            },
        ))
    }

    /// Where `text`, a slice of this message's buffer, lies in it.
    fn span_in(&self, text: &str) -> Option<Span> {
        if text.is_empty() {
            return Some(Span::default());
        }
        let start = (text.as_ptr() as usize).checked_sub(self.buf.as_ptr() as usize)?;
        let end = start.checked_add(text.len())?;
        (end <= self.buf.len()).then(|| Span::new(start, end))
    }

    pub(crate) fn to_cached(&self, via: &Via<'_>) -> Option<TopVia> {
        Some(TopVia {
            transport: self.span_in(via.transport)?,
            host: match via.host {
                Host::Domain(d) => TopHost::Domain(self.span_in(d)?),
                Host::V4(ip) => TopHost::V4(ip),
                Host::V6(ip) => TopHost::V6(ip),
            },
            host_text: self.span_in(via.host_text)?,
            port: via.port,
            params: self.span_in(via.params.as_str())?,
            branch: match via.branch() {
                Some(b) => Some(self.span_in(b)?),
                None => None,
            },
        })
    }

    fn addresses(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<NameAddr<'_>, NameAddrError>> + '_ {
        self.list_spans(name).map(move |s| {
            let v = self.list_str(s).ok_or(NameAddrError::Quote)?;
            NameAddr::parse(v)
        })
    }

    /// Route entries, top first.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, NameAddrError>> + '_ {
        self.addresses(HeaderName::Route)
    }

    /// Record-Route entries, top first.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, NameAddrError>> + '_ {
        self.addresses(HeaderName::RecordRoute)
    }

    /// Contact entries (`Contact: *` yields an error, as it is no address).
    pub fn contacts(&self) -> impl Iterator<Item = Result<NameAddr<'_>, NameAddrError>> + '_ {
        self.addresses(HeaderName::Contact)
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header_text(HeaderName::CallId).map(trim)
    }

    pub fn cseq(&self) -> Option<CSeq<'_>> {
        if let Some(k) = self.known {
            return Some(CSeq {
                seq: k.cseq,
                method: Method::parse(self.str_of(k.cseq_method)?),
            });
        }
        self.header_text(HeaderName::CSeq).and_then(CSeq::parse)
    }

    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.header_text(HeaderName::From)
            .and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.header_text(HeaderName::To)
            .and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn from_tag(&self) -> Option<&str> {
        match self.known.and_then(|k| k.from_tag) {
            Some(tag) => tag.and_then(|t| self.str_of(t)),
            None => self.from().and_then(|a| a.tag()),
        }
    }

    pub fn to_tag(&self) -> Option<&str> {
        match self.known {
            Some(k) => k.to_tag.and_then(|t| self.str_of(t)),
            None => self.to().and_then(|a| a.tag()),
        }
    }

    /// How many Via hops the message carries.
    pub fn via_count(&self) -> usize {
        match self.known {
            Some(k) => k.vias,
            None => self.vias().count(),
        }
    }

    pub fn max_forwards(&self) -> Option<u32> {
        self.header(HeaderName::MaxForwards)
            .and_then(|v| parse_u32(trim_bytes(v)))
    }

    pub fn content_length(&self) -> Option<u32> {
        self.header(HeaderName::ContentLength)
            .and_then(|v| parse_u32(trim_bytes(v)))
    }

    pub fn body(&self) -> &[u8] {
        self.slice(self.body)
    }

    /// The body as a cheaply cloneable buffer.
    pub fn body_bytes(&self) -> Bytes {
        self.buf.slice(self.body.range())
    }

    /// True when a line of the head ends in a bare LF. The parser takes such lines,
    /// as RFC 3261 section 7.5's robustness asks, but many user agents drop the whole
    /// message: a proxy should not pass one on unchanged.
    pub fn has_bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// How many header fields the head holds.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Checks what a stateful proxy relies on: one well-formed Call-ID, CSeq, From and
    /// To, parseable Via hops, and sane Max-Forwards and Content-Length values.
    pub(crate) fn validate(&mut self) -> Result<(), ErrorKind> {
        let mut counts = [0u8; 6];
        for h in &self.headers {
            if let Some(i) = SINGLE.iter().position(|&n| n == h.name) {
                counts[i] = counts[i].saturating_add(1);
                if counts[i] > 1 {
                    return Err(ErrorKind::Duplicate(h.name));
                }
            }
        }
        if !self.headers.iter().any(|h| h.name == HeaderName::Via) {
            return Err(ErrorKind::Missing(HeaderName::Via));
        }
        // A response's hops below the top one are only counted: a proxy sends a response
        // on along its server transaction, not by them (RFC 3261 section 16.7), and
        // passes them on as they came, to the client that wrote them and checks them.
        // A request's are all parsed, since siplb answers requests itself and forwards
        // them to its destinations.
        let is_request = self.is_request();
        let mut top_via = None;
        let mut vias = 0;
        for (i, hop) in self.list_spans(HeaderName::Via).enumerate() {
            if i == 0 || is_request {
                let via = self
                    .list_str(hop)
                    .ok_or(ViaError::Protocol)
                    .and_then(Via::parse)
                    .map_err(|_| ErrorKind::Malformed(HeaderName::Via))?;
                if i == 0 {
                    top_via = self.to_cached(&via);
                }
            } else if hop.is_err() {
                return Err(ErrorKind::Malformed(HeaderName::Via));
            }
            vias += 1;
        }
        self.top_via = top_via;
        for name in [
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::From,
            HeaderName::To,
        ] {
            if self.header(name).is_none() {
                return Err(ErrorKind::Missing(name));
            }
        }
        let call_id = self
            .header_text(HeaderName::CallId)
            .ok_or(ErrorKind::Encoding)?;
        let call_id = trim(call_id);
        if call_id.is_empty() || call_id.bytes().any(is_lws) {
            return Err(ErrorKind::Malformed(HeaderName::CallId));
        }
        let cseq = self
            .header_text(HeaderName::CSeq)
            .ok_or(ErrorKind::Encoding)?;
        let (seq, cseq_method) = CSeq::parts(cseq).ok_or(ErrorKind::Malformed(HeaderName::CSeq))?;
        if let Some(method) = self.method()
            && method != Method::parse(cseq_method)
        {
            return Err(ErrorKind::CSeqMethod);
        }
        // A tag whose span cannot be taken (not a slice of the buffer) gives `None`,
        // which leaves `known` unset, and the readers parse again.
        let tag_of = |name| {
            let v = self.header_text(name).ok_or(ErrorKind::Encoding)?;
            let addr = NameAddr::parse(v).map_err(|_| ErrorKind::Malformed(name))?;
            Ok(addr.tag().map_or(Some(None), |t| self.span_in(t).map(Some)))
        };
        // A response's From is not read: it is the request's, which the transaction the
        // response belongs to already knows, and it is passed on as it came, like the
        // Via hops below the top one.
        let from_tag = if is_request {
            tag_of(HeaderName::From)?.map(Some)
        } else {
            Some(None)
        };
        let to_tag = tag_of(HeaderName::To)?;
        let known = match (from_tag, to_tag, self.span_in(cseq_method)) {
            (Some(from_tag), Some(to_tag), Some(cseq_method)) => Some(Known {
                from_tag,
                to_tag,
                cseq: seq,
                cseq_method,
                vias,
            }),
            _ => None,
        };
        if let Some(v) = self.header(HeaderName::MaxForwards)
            && parse_u32(trim_bytes(v)).is_none_or(|n| n > 255)
        {
            return Err(ErrorKind::Malformed(HeaderName::MaxForwards));
        }
        if let Some(v) = self.header(HeaderName::ContentLength)
            && parse_u32(trim_bytes(v)).is_none()
        {
            return Err(ErrorKind::Malformed(HeaderName::ContentLength));
        }
        self.known = known;
        Ok(())
    }
}

/// The head of `buf`, the bytes before `head_end`, as text when it is UTF-8.
pub(crate) fn head_text(buf: &Bytes, head_end: usize) -> Option<ByteString> {
    ByteString::try_from(buf.slice(..head_end.min(buf.len()))).ok()
}

/// The fields a message may carry once at most.
pub(crate) const SINGLE: [HeaderName; 6] = [
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::From,
    HeaderName::To,
    HeaderName::MaxForwards,
    HeaderName::ContentLength,
];

/// The structural part of a message head: start line and header index.
pub(crate) const NO_FIELD: u16 = u16::MAX;

pub(crate) struct Head {
    pub(crate) start: StartLine,
    pub(crate) start_line: Span,
    pub(crate) headers: Vec<HeaderField>,
    pub(crate) first: [u16; HeaderName::COUNT],
    /// Offset of the empty line ending the head.
    pub(crate) blank_line: usize,
    /// Length of the head including that empty line.
    pub(crate) head_len: usize,
    /// A request line that did not parse, while the rest of the head did: the head is
    /// kept so the request can still be answered with 400 or 505.
    pub(crate) start_error: Option<ErrorKind>,
    pub(crate) bare_lf: bool,
}

/// Parses the head at the start of `buf[..bound]`, up to and including the empty line
/// that ends it; `Incomplete` when there is none before `bound`.
pub(crate) fn parse_head(buf: &[u8], bound: usize, limits: &Limits) -> Result<Head, ErrorKind> {
    let head = &buf[..bound];
    // One vectorised search over the whole head yields every line end: a search per
    // line cost more in setting up than in searching, on lines of 20 to 60 bytes.
    let mut newlines = memchr_iter(b'\n', head);
    let mut pos = 0;
    let mut bare_lf = false;
    let mut next_line = || -> Result<(usize, usize, usize), ErrorKind> {
        let start = pos;
        let nl = newlines.next().ok_or(ErrorKind::Incomplete)?;
        pos = nl + 1;
        if nl - start > limits.max_line_len {
            return Err(ErrorKind::LineTooLong(limits.max_line_len));
        }
        let end = if nl > start && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            bare_lf = true;
            nl
        };
        Ok((start, end, nl + 1))
    };

    let (ls, le, lnext) = next_line()?;
    let (start, start_error) = match parse_start_line(buf, ls, le) {
        Ok(start) => (start, None),
        Err(kind) => (request_line_fallback(buf, ls, le).ok_or(kind)?, Some(kind)),
    };
    let start_line = Span::new(ls, lnext);

    let mut headers: Vec<HeaderField> = Vec::with_capacity(16);
    let mut first = [NO_FIELD; HeaderName::COUNT];
    loop {
        let (s, e, next) = next_line()?;
        if s == e {
            return Ok(Head {
                start,
                start_line,
                headers,
                first,
                blank_line: s,
                head_len: next,
                start_error,
                bare_lf,
            });
        }
        if matches!(buf[s], b' ' | b'\t') {
            // A folded continuation of the previous field.
            let last = headers.last_mut().ok_or(ErrorKind::HeaderLine)?;
            let lead = buf[s..e].iter().take_while(|&&b| is_lws(b)).count();
            let content_len = trim_bytes(&buf[s..e]).len();
            if content_len > 0 {
                let value_start = if last.value.start == last.value.end {
                    s + lead
                } else {
                    last.value.start as usize
                };
                last.value = Span::new(value_start, s + lead + content_len);
            }
            last.line = Span::new(last.line.start as usize, next);
            continue;
        }
        if headers.len() >= limits.max_headers || headers.len() >= usize::from(NO_FIELD) {
            return Err(ErrorKind::TooManyHeaders(limits.max_headers));
        }
        // `[LWS] token [LWS] ":"`, read in one pass: the name is checked as it is
        // found, where a search for the colon and a check of what precedes it read
        // the name twice.
        let line = &buf[..e];
        let skip_lws = |mut i: usize| {
            while line.get(i).is_some_and(|&b| is_lws(b)) {
                i += 1;
            }
            i
        };
        let name_start = skip_lws(s);
        let mut name_end = name_start;
        while line.get(name_end).copied().is_some_and(is_token_char) {
            name_end += 1;
        }
        let colon = skip_lws(name_end);
        if name_end == name_start || line.get(colon) != Some(&b':') {
            return Err(ErrorKind::HeaderLine);
        }
        let name = &buf[name_start..name_end];
        let value_start = skip_lws(colon + 1);
        let mut value_end = e;
        while value_end > value_start && is_lws(buf[value_end - 1]) {
            value_end -= 1;
        }
        let name_kind = HeaderName::from_bytes(name);
        if name_kind != HeaderName::Other && first[name_kind as usize] == NO_FIELD {
            first[name_kind as usize] = u16::try_from(headers.len()).unwrap_or(NO_FIELD);
        }
        headers.push(HeaderField {
            name: name_kind,
            name_span: Span::new(name_start, name_end),
            value: Span::new(value_start, value_end),
            line: Span::new(s, next),
        });
    }
}

pub(crate) fn parse_start_line(buf: &[u8], s: usize, e: usize) -> Result<StartLine, ErrorKind> {
    let line = &buf[s..e];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr(b' ', line).ok_or(ErrorKind::StartLine)?;
        check_version(&line[..sp])?;
        let rest = &line[sp + 1..];
        let code_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if code_len != 3 || rest.get(3).is_some_and(|&b| b != b' ') {
            return Err(ErrorKind::StatusCode);
        }
        let code = parse_u32(&rest[..3])
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..700).contains(c))
            .ok_or(ErrorKind::StatusCode)?;
        let reason_start = (s + sp + 1 + 4).min(e);
        return Ok(StartLine::Response {
            code,
            reason: Span::new(reason_start, e),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces.
    let sp1 = memchr(b' ', line).ok_or(ErrorKind::StartLine)?;
    let sp2 = memchr(b' ', &line[sp1 + 1..]).ok_or(ErrorKind::StartLine)? + sp1 + 1;
    let method = &line[..sp1];
    let uri = &line[sp1 + 1..sp2];
    let version = &line[sp2 + 1..];
    if !is_token_bytes(method) {
        return Err(ErrorKind::StartLine);
    }
    if uri.is_empty() || version.is_empty() || version.contains(&b' ') {
        return Err(ErrorKind::StartLine);
    }
    check_version(version)?;
    let uri_str = std::str::from_utf8(uri).map_err(|_| ErrorKind::RequestUri)?;
    match Uri::parse(uri_str) {
        // A Request-URI must not carry URI headers (RFC 3261 section 19.1.1).
        Ok(u) if u.headers.is_some() => return Err(ErrorKind::RequestUri),
        Ok(_) => {}
        Err(UriError::Scheme) if is_absolute_uri(uri_str) => {}
        Err(_) => return Err(ErrorKind::RequestUri),
    }
    Ok(StartLine::Request {
        method: Span::new(s, s + sp1),
        uri: Span::new(s + sp1 + 1, s + sp2),
    })
}

/// Best-effort split of a malformed request line into method and URI, so that the
/// request can be answered; `None` when it does not even start like a request.
fn request_line_fallback(buf: &[u8], s: usize, e: usize) -> Option<StartLine> {
    let line = &buf[s..e];
    let sp1 = memchr(b' ', line)?;
    if !is_token_bytes(&line[..sp1]) {
        return None;
    }
    let last_sp = memchr::memrchr(b' ', line)?;
    let uri_end = if last_sp > sp1 { last_sp } else { line.len() };
    Some(StartLine::Request {
        method: Span::new(s, s + sp1),
        uri: Span::new(s + sp1 + 1, s + uri_end),
    })
}

fn check_version(v: &[u8]) -> Result<(), ErrorKind> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        Ok(())
    } else if v.len() > 4 && v[..4].eq_ignore_ascii_case(b"SIP/") {
        Err(ErrorKind::Version)
    } else {
        Err(ErrorKind::StartLine)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A header line is `[LWS] token [LWS] ":" value`: its name and value are what
    /// lies between, whatever the spacing; anything else in front of the colon
    /// refuses the message.
    #[test]
    fn header_lines_give_their_name_and_value_or_refuse() {
        let limits = Limits::default();
        let head = |line: &str| {
            let text = format!("OPTIONS sip:a@b SIP/2.0\r\n{line}\r\n\r\n");
            parse_head(text.as_bytes(), text.len(), &limits).map(|h| {
                let f = h.headers[0];
                let at = |s: Span| text[s.range()].to_owned();
                (at(f.name_span), at(f.value), f.name)
            })
        };
        for (line, name, value) in [
            ("Via: SIP/2.0/UDP h", "Via", "SIP/2.0/UDP h"),
            ("via:x", "via", "x"),
            ("Call-ID \t:  c1  ", "Call-ID", "c1"),
            ("X-Empty:", "X-Empty", ""),
            ("X-Spaces:   ", "X-Spaces", ""),
            ("Subject: a: b", "Subject", "a: b"),
        ] {
            let (n, v, _) = head(line).unwrap();
            assert_eq!((n.as_str(), v.as_str()), (name, value), "{line:?}");
        }
        assert_eq!(head("l: 0").unwrap().2, HeaderName::ContentLength);
        for bad in [": x", "Fo o: x", "Fo@o: x", "NoColon", "Via\u{e9}: x"] {
            assert_eq!(head(bad).unwrap_err(), ErrorKind::HeaderLine, "{bad:?}");
        }
    }

    /// The readers a proxy calls on every message take validation's spans rather
    /// than parsing again; standard and extension methods alike.
    #[test]
    fn validation_keeps_tags_cseq_and_hops() {
        for method in ["INVITE", "BYE", "FOO"] {
            let text = format!(
                "{method} sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                 From: <sip:x@y>;tag=f1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\n\
                 CSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n"
            );
            let m = Message::parse(Bytes::from(text)).unwrap();
            let known = m.known.unwrap();
            assert_eq!(known.vias, 1);
            assert!(known.to_tag.is_none());
            assert_eq!(m.from_tag(), Some("f1"));
            assert_eq!(m.cseq().unwrap().method.as_str(), method);
            assert!(m.top_via.is_some_and(|t| t.branch.is_some()));
            assert_eq!(m.top_via(), m.vias().next().unwrap());
            assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
        }
    }

    /// A response's lower hops are the client's to check and are only counted; a
    /// request's are all checked, and a malformed one is refused.
    #[test]
    fn lower_via_hops_are_parsed_in_requests_only() {
        let lower = "Via: SIP/2.0/UDP caller;branch=z9hG4bKc, not a via\r\n\
                     Via: SIP/2.0/UDP\r\n";
        let response = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP lb;branch=z9hG4bK1\r\n{lower}\
             From: <sip:x@y>;tag=f1\r\nTo: <sip:a@b>;tag=t1\r\nCall-ID: c\r\n\
             CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let m = Message::parse(Bytes::from(response)).unwrap();
        assert_eq!(m.via_count(), 4);
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(m.via_hop(2), Some("not a via"));
        assert_eq!(m.to_tag(), Some("t1"));

        let request = format!(
            "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP lb;branch=z9hG4bK1\r\n{lower}\
             From: <sip:x@y>;tag=f1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\n\
             CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let err = Message::parse(Bytes::from(request)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Malformed(HeaderName::Via));

        // The top hop of a response is parsed, and an unterminated quote in a lower
        // one still breaks the header apart.
        for vias in [
            "Via: SIP/2.0/UDP\r\n",
            "Via: SIP/2.0/UDP lb;branch=z9hG4bK1, SIP/2.0/UDP c;x=\"open\r\n",
        ] {
            let response = format!(
                "SIP/2.0 200 OK\r\n{vias}From: <sip:x@y>;tag=f1\r\nTo: <sip:a@b>;tag=t1\r\n\
                 Call-ID: c\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            let err = Message::parse(Bytes::from(response)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Malformed(HeaderName::Via), "{vias}");
        }
    }

    /// A response's From is left to the reader that asks for it; a request's is
    /// checked, and a malformed one refused.
    #[test]
    fn the_from_is_checked_in_requests_only() {
        let response = |from: &str| {
            format!(
                "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP lb;branch=z9hG4bK1\r\n\
                 From: {from}\r\nTo: <sip:a@b>;tag=t1\r\nCall-ID: c\r\n\
                 CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let m = Message::parse(Bytes::from(response("<sip:x@y>;tag=f1"))).unwrap();
        assert!(m.known.is_some_and(|k| k.from_tag.is_none()));
        assert_eq!(m.from_tag(), Some("f1"));
        assert_eq!(m.to_tag(), Some("t1"));
        let m = Message::parse(Bytes::from(response("<sip:x@y;tag=f1"))).unwrap();
        assert_eq!(m.from_tag(), None);

        let request = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                       From: <sip:x@y;tag=f1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\n\
                       CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
        let err = Message::parse(Bytes::from(request)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Malformed(HeaderName::From));
    }

    fn message_with_subject(subject: &[u8]) -> Message {
        let mut text = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            From: <sip:x@y>;tag=f1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nSubject: "
            .to_vec();
        text.extend_from_slice(subject);
        text.extend_from_slice(b"\r\nCSeq: 7 INVITE\r\nContent-Length: 2\r\n\r\n\xff\xfe");
        Message::parse(Bytes::from(text)).unwrap()
    }

    /// Every span reads the same through the head checked once as through a check of
    /// its own, including spans that cut a character in two (neither is text).
    fn assert_reads_as_checked_alone(m: &Message) {
        let end = m.head_end as usize;
        for start in 0..end {
            for stop in start..=end.min(start + 12) {
                let span = Span::new(start, stop);
                assert_eq!(
                    m.str_of(span),
                    std::str::from_utf8(m.slice(span)).ok(),
                    "{start}..{stop}"
                );
            }
        }
        for h in &m.headers {
            assert_eq!(
                m.str_of(h.value),
                std::str::from_utf8(m.slice(h.value)).ok()
            );
        }
    }

    #[test]
    fn a_utf8_head_is_checked_once_and_read_as_before() {
        // Two- and three-byte characters; the body after the head is not text.
        let m = message_with_subject("Grüße €".as_bytes());
        assert!(m.text.is_some());
        assert_eq!(m.header_text(HeaderName::Subject), Some("Grüße €"));
        assert_eq!(m.call_id(), Some("c"));
        assert_reads_as_checked_alone(&m);
    }

    #[test]
    fn a_head_that_is_not_utf8_reads_field_by_field() {
        // Latin-1 "é": that field is not text, the others still are.
        let m = message_with_subject(b"caf\xe9");
        assert!(m.text.is_none());
        assert_eq!(m.header_text(HeaderName::Subject), None);
        assert_eq!(m.call_id(), Some("c"));
        assert_eq!(m.from_tag(), Some("f1"));
        assert_reads_as_checked_alone(&m);
    }
}
