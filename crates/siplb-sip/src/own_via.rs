//! The Via hop a proxy puts on top of what it sends on, written from its parts. Where
//! each part lies is known from the writing, so the edited message is indexed without
//! parsing the hop again (`reindex`): that parse was about 2% of a relayed call's
//! instructions (docs/BENCHMARKS-HISTORY.md, issue 19's thirteenth round).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::message::{Span, TopHost, TopVia};

/// A proxy's `host:port` as its Via hops carry it, written once per listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentBy {
    text: String,
    addr: SocketAddr,
    /// Where the host ends in `text` (after the `]` of an IPv6 address).
    host_len: usize,
}

impl SentBy {
    pub fn new(addr: SocketAddr) -> SentBy {
        let text = match addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let host_len = text.rfind(':').unwrap_or(text.len());
        SentBy {
            text,
            addr,
            host_len,
        }
    }

    /// `host:port`, an IPv6 host in brackets.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<SentBy> for String {
    fn from(sent_by: SentBy) -> String {
        sent_by.text
    }
}

/// A Via hop `SIP/2.0/<transport> <host:port>;branch=<branch><params>`, with where its
/// parts lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnVia {
    text: String,
    layout: ViaLayout,
}

/// Where an [`OwnVia`]'s parts lie in its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ViaLayout {
    transport: Span,
    ip: IpAddr,
    host_text: Span,
    port: u16,
    params: Span,
    branch: Span,
}

impl OwnVia {
    /// The hop for `transport` (a token: `UDP`, `TCP`, `TLS`), sent by `sent_by`,
    /// with `branch` (a token) and then the texts of `params`, in order, each of them
    /// parameters written `;name[=value]` as a Via's may be. These come from the proxy's own code, not from a message:
    /// a debug build checks that the hop parses to the same parts.
    pub fn new(transport: &str, sent_by: &SentBy, branch: &str, params: &[&str]) -> OwnVia {
        let more: usize = params.iter().map(|p| p.len()).sum();
        let mut text = String::with_capacity(24 + sent_by.text.len() + branch.len() + more);
        text.push_str("SIP/2.0/");
        let transport_span = append(&mut text, transport);
        text.push(' ');
        let host_start = text.len();
        text.push_str(&sent_by.text);
        let host_text = Span::new(host_start, host_start + sent_by.host_len);
        let params_start = text.len();
        text.push_str(";branch=");
        let branch_span = append(&mut text, branch);
        for p in params {
            text.push_str(p);
        }
        let layout = ViaLayout {
            transport: transport_span,
            ip: sent_by.addr.ip(),
            host_text,
            port: sent_by.addr.port(),
            params: Span::new(params_start, text.len()),
            branch: branch_span,
        };
        let via = OwnVia { text, layout };
        debug_assert!(via.parses_to_its_layout(), "{via:?}");
        via
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn layout(&self) -> ViaLayout {
        self.layout
    }

    /// True when parsing the text finds the parts where the layout says they are.
    fn parses_to_its_layout(&self) -> bool {
        let Ok(via) = crate::Via::parse(&self.text) else {
            return false;
        };
        let at = |s: &str| {
            let start = s.as_ptr() as usize - self.text.as_ptr() as usize;
            Span::new(start, start + s.len())
        };
        let l = self.layout;
        at(via.transport) == l.transport
            && at(via.host_text) == l.host_text
            && via.host.ip() == Some(l.ip)
            && via.port == Some(l.port)
            && at(via.params.as_str()) == l.params
            && via.branch().map(at) == Some(l.branch)
    }
}

impl fmt::Display for OwnVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Appends `part` to `text`; where it landed.
fn append(text: &mut String, part: &str) -> Span {
    let start = text.len();
    text.push_str(part);
    Span::new(start, text.len())
}

impl ViaLayout {
    /// The parsed top hop of a message where this hop's text starts at `at`.
    pub(crate) fn top_via(&self, at: usize) -> TopVia {
        let moved = |s: Span| Span::new(at + s.start as usize, at + s.end as usize);
        TopVia {
            transport: moved(self.transport),
            host: match self.ip {
                IpAddr::V4(ip) => TopHost::V4(ip),
                IpAddr::V6(ip) => TopHost::V6(ip),
            },
            host_text: moved(self.host_text),
            port: Some(self.port),
            params: moved(self.params),
            branch: Some(moved(self.branch)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_layout_is_where_a_parse_finds_the_parts() {
        for (transport, addr, params) in [
            (
                "UDP",
                "127.0.0.1:5060",
                &[";rport", ";oc;oc-algo=\"loss\""][..],
            ),
            ("TCP", "[2001:db8::1]:5070", &[]),
            ("TLS", "[::1]:5061", &[";rport"]),
        ] {
            let sent_by = SentBy::new(addr.parse().unwrap());
            assert_eq!(sent_by.as_str(), addr);
            let via = OwnVia::new(transport, &sent_by, "z9hG4bKabc", params);
            assert!(via.parses_to_its_layout(), "{via:?}");
            assert!(via.as_str().starts_with(&format!("SIP/2.0/{transport} ")));
        }
    }
}
