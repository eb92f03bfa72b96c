//! Messages from hostile or broken peers, at the limits of what siplb's parser takes.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::script::HostileKind;
use crate::sip::Proto;
use crate::world::{PROXY, SINK};

/// The bytes of one hostile message, sent from `from`. `n` numbers it, so that each
/// has its own Call-ID and branch.
pub(crate) fn message(
    kind: &HostileKind,
    proto: Proto,
    from: SocketAddr,
    n: usize,
    max_size: usize,
) -> Bytes {
    match kind {
        HostileKind::ManyHeaders(extra) => {
            let extra = usize::from(*extra % 300);
            let headers: String = (0..extra).map(|i| format!("X-H{i}: v\r\n")).collect();
            invite(proto, from, n, "VM_h", &headers, "")
        }
        HostileKind::NearMaxSize(short) => {
            // Exactly `target` bytes, within what siplb accepts.
            let target = max_size.saturating_sub(usize::from(*short % 600));
            let ct = "Content-Type: text/plain\r\n";
            let mut pad = target.saturating_sub(invite(proto, from, n, "VM_s", ct, "").len());
            loop {
                let m = invite(proto, from, n, "VM_s", ct, &"a".repeat(pad));
                if m.len() <= target || pad == 0 {
                    break m;
                }
                pad -= (m.len() - target).min(pad);
            }
        }
        HostileKind::BareLf => {
            let text = String::from_utf8_lossy(&invite(proto, from, n, "VM_lf", "", ""))
                .replace("\r\n", "\n");
            Bytes::from(text)
        }
        HostileKind::ManyVias(count) => {
            let vias: String = (0..usize::from(*count % 200))
                .map(|i| {
                    format!(
                        "Via: SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bKv{i}\r\n",
                        i % 250
                    )
                })
                .collect();
            let text = String::from_utf8_lossy(&invite(proto, from, n, "VM_v", "", "")).replacen(
                "Max-Forwards",
                &format!("{vias}Max-Forwards"),
                1,
            );
            Bytes::from(text)
        }
        HostileKind::Flipped(flips) => {
            let mut data = invite(proto, from, n, "VM_f", "", "").to_vec();
            let len = data.len();
            for (at, b) in flips.iter().take(16) {
                data[usize::from(*at) % len] = *b;
            }
            Bytes::from(data)
        }
        HostileKind::Truncated(at) => {
            let data = invite(proto, from, n, "VM_t", "", crate::sip::SDP);
            let cut = usize::from(*at) % data.len();
            data.slice(..cut)
        }
        HostileKind::Garbage(bytes) => {
            Bytes::from(bytes.iter().take(2000).copied().collect::<Vec<u8>>())
        }
        HostileKind::ForeignOptions => {
            let mut s = String::new();
            let _ = write!(
                s,
                "OPTIONS sip:192.0.2.99:5060 SIP/2.0\r\nVia: SIP/2.0/{} {from};branch=z9hG4bKho{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:x@{from}>;tag=h{n}\r\nTo: <sip:192.0.2.99>\r\nCall-ID: hostile-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                proto.via()
            );
            Bytes::from(s)
        }
        HostileKind::BadCSeq => {
            let text = String::from_utf8_lossy(&invite(proto, from, n, "VM_c", "", "")).replacen(
                "CSeq: 1 INVITE",
                "CSeq: one INVITE",
                1,
            );
            Bytes::from(text)
        }
        HostileKind::Relay {
            method,
            to_tag,
            own_route,
            own_spelling,
            sink_route,
            sink_uri,
            tcp_route,
        } => {
            let method = ["INVITE", "OPTIONS", "MESSAGE", "REGISTER", "BYE", "ACK"]
                [usize::from(*method % 6)];
            let uri = if *sink_uri {
                format!("sip:VM_r@{SINK}")
            } else {
                format!("sip:VM_r@{PROXY}")
            };
            let mut routes = String::new();
            if *own_route {
                let ip = PROXY.ip();
                let me = match own_spelling % 4 {
                    0 => PROXY.to_string(),
                    1 => format!("{ip}:0"),
                    2 => ip.to_string(),
                    _ => format!("{ip}:0{}", PROXY.port()),
                };
                let _ = write!(routes, "Route: <sip:{me};lr>\r\n");
            }
            if *sink_route {
                let t = if *tcp_route { ";transport=tcp" } else { "" };
                let _ = write!(routes, "Route: <sip:{SINK}{t};lr>\r\n");
            }
            let to_tag = if *to_tag { ";tag=stolen" } else { "" };
            let mut s = String::new();
            let _ = write!(
                s,
                "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{} {from};branch=z9hG4bKr{n};rport\r\nMax-Forwards: 70\r\n{routes}From: <sip:x@{from}>;tag=h{n}\r\nTo: <{uri}>{to_tag}\r\nCall-ID: hostile-{n}\r\nCSeq: 1 {method}\r\nContact: <sip:x@{from}>\r\nContent-Length: 9\r\n\r\nFLUSHALL\n",
                proto.via()
            );
            Bytes::from(s)
        }
        HostileKind::OddTransport => {
            let text = String::from_utf8_lossy(&invite(proto, from, n, "VM_o", "", "")).replacen(
                &format!("sip:VM_o@{PROXY}"),
                &format!("sip:VM_o@{PROXY};transport=sctp"),
                1,
            );
            Bytes::from(text)
        }
    }
}

/// The final a hostile message must get (of this code, when given); none for
/// input too broken to be answered or that may be.
pub(crate) fn expected_reply(kind: &HostileKind) -> Option<Option<u16>> {
    match kind {
        HostileKind::ForeignOptions => Some(Some(405)),
        HostileKind::BadCSeq | HostileKind::BareLf => Some(Some(400)),
        // Past the parser's 256 fields a message is not indexed, so not answered.
        HostileKind::ManyHeaders(n) if 8 + usize::from(*n % 300) > 256 => None,
        HostileKind::ManyHeaders(_) | HostileKind::NearMaxSize(_) | HostileKind::OddTransport => {
            Some(None)
        }
        HostileKind::ManyVias(n) if *n % 200 > 70 => Some(Some(400)),
        HostileKind::ManyVias(_) => Some(None),
        HostileKind::Flipped(_) | HostileKind::Truncated(_) | HostileKind::Garbage(_) => None,
        // An ACK gets nothing; anything else an answer (a new call, 403, 405, 481).
        HostileKind::Relay { method, .. } if method % 6 == 5 => None,
        // Not siplb's keep-alive: another host's.
        HostileKind::Relay {
            method,
            to_tag: false,
            sink_uri: true,
            ..
        } if method % 6 == 1 => Some(Some(405)),
        HostileKind::Relay { .. } => Some(None),
    }
}

fn invite(
    proto: Proto,
    from: SocketAddr,
    n: usize,
    user: &str,
    headers: &str,
    body: &str,
) -> Bytes {
    let mut s = String::with_capacity(512 + headers.len() + body.len());
    let _ = write!(
        s,
        "INVITE sip:{user}@{PROXY} SIP/2.0\r\nVia: SIP/2.0/{} {from};branch=z9hG4bKh{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:x@{from}>;tag=h{n}\r\nTo: <sip:{user}@{PROXY}>\r\nCall-ID: hostile-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{from}>\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        proto.via(),
        body.len()
    );
    Bytes::from(s)
}
