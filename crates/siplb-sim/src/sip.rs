//! What the simulated user agents need of SIP: transports, hops named by URIs, and
//! requests written out as text.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use siplb_sip::{Message, Uri};

/// The transport of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub(crate) fn via(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }

    /// `;transport=tcp` for TCP, nothing for UDP, as a URI parameter.
    pub(crate) fn uri_param(self) -> &'static str {
        match self {
            Proto::Udp => "",
            Proto::Tcp => ";transport=tcp",
        }
    }
}

/// Where a URI sends a request: its IP literal and port (5060 by default), over the
/// transport its `transport` parameter names.
pub(crate) fn hop(uri: &str) -> Option<(Proto, SocketAddr)> {
    let uri = Uri::parse(uri).ok()?;
    let ip: IpAddr = uri.host.ip()?;
    let proto = match uri.param("transport").flatten() {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Proto::Tcp,
        _ => Proto::Udp,
    };
    Some((proto, SocketAddr::new(ip, uri.port.unwrap_or(5060))))
}

/// The URIs of the Record-Route fields of `msg`, top first.
pub(crate) fn record_routes(msg: &Message) -> Vec<String> {
    msg.record_routes()
        .filter_map(Result::ok)
        .map(|r| r.uri_text.to_owned())
        .collect()
}

/// The URI of the first Contact, if any.
pub(crate) fn contact(msg: &Message) -> Option<String> {
    msg.contacts()
        .next()
        .and_then(Result::ok)
        .map(|c| c.uri_text.to_owned())
}

/// The URI inside a From or To value.
pub(crate) fn uri_of(value: Option<siplb_sip::NameAddr<'_>>) -> String {
    value.map(|v| v.uri_text.to_owned()).unwrap_or_default()
}

/// A request as a user agent writes one.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) uri: &'a str,
    pub(crate) via: String,
    pub(crate) routes: &'a [String],
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) call_id: &'a str,
    pub(crate) cseq: u32,
    pub(crate) contact: Option<String>,
    pub(crate) body: &'a str,
}

impl Request<'_> {
    pub(crate) fn write(&self) -> Bytes {
        let mut out = String::with_capacity(512 + self.body.len());
        let _ = write!(
            out,
            "{m} {u} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n",
            m = self.method,
            u = self.uri,
            via = self.via
        );
        for r in self.routes {
            let _ = write!(out, "Route: <{r}>\r\n");
        }
        let _ = write!(
            out,
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n",
            self.from, self.to, self.call_id, self.cseq, self.method
        );
        if let Some(c) = &self.contact {
            let _ = write!(out, "Contact: <{c}>\r\n");
        }
        if !self.body.is_empty() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        let _ = write!(
            out,
            "Content-Length: {}\r\n\r\n{}",
            self.body.len(),
            self.body
        );
        Bytes::from(out)
    }
}

pub(crate) fn via(proto: Proto, me: SocketAddr, branch: &str) -> String {
    format!("SIP/2.0/{} {me};branch={branch};rport", proto.via())
}

pub(crate) const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";

/// The top Via branch of a message.
pub(crate) fn branch(msg: &Message) -> String {
    msg.top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
        .unwrap_or_default()
}

pub(crate) fn cseq(msg: &Message) -> (u32, String) {
    msg.cseq()
        .map(|c| (c.seq, c.method.as_str().to_owned()))
        .unwrap_or((0, String::new()))
}

/// A header's value read straight off the bytes (for replies that copy a field too
/// broken to parse).
pub(crate) fn raw_header(data: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.split('\n').find_map(|line| {
        let (n, v) = line.trim_end_matches('\r').split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The status code of a response, read straight off its first line.
pub(crate) fn raw_status(data: &[u8]) -> Option<u16> {
    let digits = data.get(8..11).filter(|_| data.starts_with(b"SIP/2.0 "))?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The first line and the Call-ID, for traces.
pub(crate) fn first_line(data: &[u8]) -> String {
    let end = data
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(data.len())
        .min(100);
    let line = String::from_utf8_lossy(&data[..end]);
    let call_id = data
        .windows(9)
        .position(|w| w.eq_ignore_ascii_case(b"Call-ID: "))
        .map(|i| {
            let rest = &data[i + 9..];
            let e = rest
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(rest.len())
                .min(40);
            String::from_utf8_lossy(&rest[..e]).into_owned()
        })
        .unwrap_or_default();
    let cseq = data
        .windows(6)
        .position(|w| w.eq_ignore_ascii_case(b"CSeq: "))
        .map(|i| {
            let rest = &data[i + 6..];
            let e = rest
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(rest.len())
                .min(20);
            String::from_utf8_lossy(&rest[..e]).into_owned()
        })
        .unwrap_or_default();
    if std::env::var_os("SIPLB_SIM_TRACE_FULL").is_some() {
        return format!(
            "{line} [{call_id} {cseq}]\n{}",
            String::from_utf8_lossy(data)
        );
    }
    format!("{line} [{call_id} {cseq}]")
}

/// True when the head of `data` has a line ending in a bare LF: real user agents
/// drop such messages.
pub(crate) fn has_bare_lf(data: &[u8]) -> bool {
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    data[..head_end]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
}

/// `data` with `params` appended to its first Via field (a destination adding its
/// overload feedback to the Via of the request it answers).
pub(crate) fn with_top_via_params(data: &Bytes, params: &str) -> Bytes {
    let text = String::from_utf8_lossy(data);
    let Some(start) = text.find("\r\nVia:") else {
        return data.clone();
    };
    let Some(end) = text[start + 2..].find("\r\n").map(|e| start + 2 + e) else {
        return data.clone();
    };
    let mut out = String::with_capacity(text.len() + params.len());
    out.push_str(&text[..end]);
    out.push_str(params);
    out.push_str(&text[end..]);
    Bytes::from(out)
}
