//! The Via hop a proxy puts on top of what it sends on, written from its parts: where
//! its branch lies is known from the writing, and keys the client transaction without
//! a parse of the hop (docs/BENCHMARKS-HISTORY.md, issue 19's thirteenth and
//! eighteenth rounds).

use std::fmt;
use std::net::SocketAddr;

use crate::message::Span;

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
/// branch lies: a client transaction is keyed by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnVia {
    text: String,
    branch: Span,
}

impl OwnVia {
    /// The hop for `transport` (a token: `UDP`, `TCP`, `TLS`), sent by `sent_by`,
    /// with `branch` (a token) and then the texts of `params`, in order, each of them
    /// parameters written `;name[=value]` as a Via's may be. These come from the
    /// proxy's own code, not from a message: a debug build checks that the hop parses
    /// to the same sent-by and branch.
    pub fn new(transport: &str, sent_by: &SentBy, branch: &str, params: &[&str]) -> OwnVia {
        let more: usize = params.iter().map(|p| p.len()).sum();
        let mut text = String::with_capacity(24 + sent_by.text.len() + branch.len() + more);
        for part in ["SIP/2.0/", transport, " ", &sent_by.text, ";branch="] {
            text.push_str(part);
        }
        let branch_start = text.len();
        text.push_str(branch);
        let branch = Span::new(branch_start, text.len());
        for p in params {
            text.push_str(p);
        }
        let via = OwnVia { text, branch };
        debug_assert!(via.parses_to_its_parts(sent_by), "{via:?}");
        via
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The branch parameter's value.
    pub fn branch(&self) -> &str {
        self.text.get(self.branch.range()).unwrap_or_default()
    }

    /// True when parsing the text finds `sent_by` and the branch where it was written.
    fn parses_to_its_parts(&self, sent_by: &SentBy) -> bool {
        let Ok(via) = crate::Via::parse(&self.text) else {
            return false;
        };
        let branch_at = via
            .branch()
            .map(|b| b.as_ptr() as usize - self.text.as_ptr() as usize);
        via.host.ip() == Some(sent_by.addr.ip())
            && via.port == Some(sent_by.addr.port())
            && via.host_text == &sent_by.text[..sent_by.host_len]
            && branch_at == Some(self.branch.start as usize)
            && via.branch() == Some(self.branch())
    }
}

impl fmt::Display for OwnVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_parts_are_where_a_parse_finds_them() {
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
            assert!(via.parses_to_its_parts(&sent_by), "{via:?}");
            assert_eq!(via.branch(), "z9hG4bKabc");
            assert!(via.as_str().starts_with(&format!("SIP/2.0/{transport} ")));
        }
    }
}
